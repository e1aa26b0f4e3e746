//! sluice-kafka: the Kafka wire protocol (the Kafka protocol guide) served over the sluice
//! log, so existing Kafka clients work with nothing changed but the bootstrap address.
//!
//! Framing: every request and response is a 4-byte big-endian length, then the message.
//! Requests are decoded with the `kafka-protocol` crate (header version derived from the
//! API key); one handler per API key lives in [`handlers`]. An unsupported API or version
//! gets the protocol's UNSUPPORTED_VERSION error in its response (ApiVersions answers with
//! version 0, as Kafka does), never a dropped connection. A malformed frame (bad length,
//! undecodable header) closes that connection only, with the reason logged.
//!
//! Supported so far (this is the first step of the Kafka-protocol issue): ApiVersions,
//! Metadata, Produce, ListOffsets, Fetch and InitProducerId (ids only: no sequence
//! checking yet). That is enough for producers and for consumers that assign partitions
//! themselves; consumer groups come next.

pub mod handlers;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
use sluice_log::Log;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest accepted request frame, bytes (a bigger length prefix closes the connection).
pub const MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// What the Kafka listener needs.
pub struct KafkaServer {
    pub log: Arc<Log>,
    /// Host and port clients are told to connect to (Metadata).
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Partitions of topics created on first use (Kafka's `num.partitions`).
    pub auto_create_partitions: u32,
    pub auto_create_topics: bool,
    /// Next id handed out by InitProducerId.
    pub next_producer_id: std::sync::atomic::AtomicI64,
}

/// Errors that end one connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame length {0} is outside 0..={MAX_FRAME_BYTES}")]
    FrameLength(i64),
    #[error("cannot decode the request: {0}")]
    Decode(String),
}

/// Smallest possible request header: api_key (2), api_version (2), correlation_id (4).
const MIN_HEADER_BYTES: usize = 8;

/// Decodes a request frame's header. Frames too short for a header are refused, and a
/// panic inside the third-party decoder (seen on malformed input) is contained and
/// reported as a decode error.
pub fn decode_header(frame: &mut Bytes) -> Result<RequestHeader, String> {
    if frame.len() < MIN_HEADER_BYTES {
        return Err(format!("frame of {} bytes is shorter than a request header", frame.len()));
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_request_header_from_buffer(frame)))
        .map_err(|_| "the request header decoder panicked on malformed input".to_string())?
        .map_err(|e| e.to_string())
}

/// Decodes a request body for an API and version, containing decoder panics like
/// [`decode_header`].
pub fn decode_body(api_key: ApiKey, body: &mut Bytes, version: i16) -> Result<RequestKind, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| RequestKind::decode(api_key, body, version)))
        .map_err(|_| format!("the {api_key:?} v{version} decoder panicked on malformed input"))?
        .map_err(|e| e.to_string())
}

impl KafkaServer {
    /// Accepts connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let server = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = server.connection(stream, peer).await {
                            tracing::info!(%peer, reason = %e, "kafka connection closed");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "kafka accept failed"),
            }
        }
    }

    async fn connection(self: Arc<Self>, mut stream: TcpStream, _peer: SocketAddr) -> Result<(), ConnectionError> {
        stream.set_nodelay(true)?;
        loop {
            let len = match stream.read_i32().await {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if len < 0 || len as usize > MAX_FRAME_BYTES {
                return Err(ConnectionError::FrameLength(len as i64));
            }
            let mut frame = vec![0u8; len as usize];
            stream.read_exact(&mut frame).await?;
            let mut buf = Bytes::from(frame);
            let header = decode_header(&mut buf).map_err(ConnectionError::Decode)?;
            let response = self.clone().handle(header.clone(), buf).await?;
            if let Some((body, response_header_version)) = response {
                let mut out = BytesMut::new();
                out.put_i32(0);
                let rh = ResponseHeader::default().with_correlation_id(header.correlation_id);
                rh.encode(&mut out, response_header_version).map_err(|e| ConnectionError::Decode(e.to_string()))?;
                out.extend_from_slice(&body);
                let n = (out.len() - 4) as i32;
                out[..4].copy_from_slice(&n.to_be_bytes());
                stream.write_all(&out).await?;
            }
        }
    }

    /// Decodes and handles one request; `None` when no response is due (acks=0).
    async fn handle(self: Arc<Self>, header: RequestHeader, mut body: Bytes) -> Result<Option<(BytesMut, i16)>, ConnectionError> {
        let api_key = ApiKey::try_from(header.request_api_key).map_err(|_| ConnectionError::Decode(format!("unknown API key {}", header.request_api_key)))?;
        let version = header.request_api_version;
        let supported = handlers::supported(api_key);
        if supported.is_none_or(|(lo, hi)| version < lo || version > hi) {
            let out = handlers::unsupported(api_key, version)?;
            return Ok(Some(out));
        }
        let request = decode_body(api_key, &mut body, version).map_err(ConnectionError::Decode)?;
        if body.has_remaining() {
            tracing::debug!(?api_key, version, left = body.remaining(), "request had trailing bytes");
        }
        let server = self.clone();
        let response = tokio::task::spawn_blocking(move || handlers::handle(&server, request, version))
            .await
            .map_err(|e| ConnectionError::Decode(format!("handler failed: {e}")))??;
        Ok(response.map(|r| (r, api_key.response_header_version(version))))
    }
}
