//! sluice-kafka: the Kafka wire protocol (the Kafka protocol guide) served over the sluice
//! log, so existing Kafka clients work with nothing changed but the bootstrap address.
//!
//! Framing: every request and response is a 4-byte big-endian length, then the message.
//! Requests are decoded with the `kafka-protocol` crate (header version derived from the
//! API key); one handler per API key lives in [`handlers`]. An unsupported API or version
//! gets the protocol's UNSUPPORTED_VERSION error in its response (ApiVersions answers with
//! version 0, as Kafka does); only an API key or version the codec cannot encode closes
//! the connection. A malformed frame (bad length, undecodable header or body) closes that
//! connection only, with the reason logged.
//!
//! Served: ApiVersions, Metadata, Produce, ListOffsets, Fetch, InitProducerId, the
//! consumer-group APIs (FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups; see
//! [`coordinator`]) and topic administration (CreateTopics, DeleteTopics,
//! CreatePartitions, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs). The exact
//! versions are in [`handlers::supported`].

pub mod coordinator;
pub mod idempotence;
pub mod handlers;
pub mod sasl;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
use std::collections::BTreeMap;
use std::sync::Mutex;

use coordinator::Group;
use sluice_log::{Log, OffsetStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest accepted request frame, bytes (a bigger length prefix closes the connection).
pub const MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Listener settings (the `[kafka]` config table).
pub struct KafkaOptions {
    /// Host and port clients are told to connect to (Metadata, FindCoordinator).
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Partitions of topics created on first use (Kafka's `num.partitions`).
    pub auto_create_partitions: u32,
    /// Create unknown topics on Metadata requests that allow it (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// How long a new group waits for more members before its first generation, ms
    /// (Kafka's `group.initial.rebalance.delay.ms`, KIP-134).
    pub group_initial_rebalance_delay_ms: i64,
    /// Topics that DeleteTopics must refuse (configured, dead-letter and internal topics).
    pub protected_topics: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// Topics that Produce must refuse with TOPIC_AUTHORIZATION_FAILED: the output topics
    /// of pipelines, which only their pipeline writes (exactly-once output relies on it).
    pub read_only_topics: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// How produced records of a topic are checked (topics configured with a schema), or
    /// `None`: records of other topics are opaque bytes. A record that fails its check is
    /// still stored (offsets stay as the producer was told) and is also written, with the
    /// reason, to the topic's dead-letter topic.
    pub record_check: RecordChecks,
    /// Connection limits and timeouts of the listener.
    pub limits: ListenerLimits,
    /// SASL authentication, and role-based authorization of every request; `None`: the
    /// listener is open to anyone who can reach it.
    pub sasl: Option<sasl::KafkaSasl>,
    /// TLS: every connection starts with a TLS handshake (`SSL`, or `SASL_SSL` with
    /// [`KafkaOptions::sasl`]); `None`: plain TCP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Called for each topic or group a deleting or altering request names (for the audit
    /// topic), after it is answered, refused ones too.
    pub on_admin: Box<dyn Fn(AdminEvent) + Send + Sync>,
}

/// A deletion or alteration made (or refused) over the Kafka protocol.
#[derive(Debug, Clone)]
pub struct AdminEvent {
    /// `topic_delete`, `topic_alter` (configs, partitions) or `group_delete`.
    pub action: &'static str,
    pub target: String,
    /// The authenticated user; `None` without authentication.
    pub user: Option<String>,
    /// The client's address (`/ip`).
    pub host: String,
    /// The request's API name, as `DeleteTopics`.
    pub api: &'static str,
    /// Refused for lack of permission or outside the user's limits.
    pub refused: bool,
}

/// Limits of the Kafka listener and the state clients create, so that no client can
/// exhaust the server.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Close a connection with no request for this long, ms (Kafka's
    /// `connections.max.idle.ms`; 0: never).
    pub connections_max_idle_ms: u64,
    /// A request frame must arrive whole within this long of its first byte, ms (0: no
    /// limit). Slow senders (slowloris) are disconnected.
    pub request_read_timeout_ms: u64,
    /// Most open connections (Kafka's `max.connections`; 0: no cap).
    pub max_connections: usize,
    /// Most open connections from one address (Kafka's `max.connections.per.ip`; 0: no cap).
    pub max_connections_per_ip: usize,
    /// Most bytes of request frames held at once across all connections. A frame is
    /// buffered as its bytes arrive, and reading waits while the bound is reached, so
    /// memory for requests never exceeds it (raised to at least [`MAX_FRAME_BYTES`] plus
    /// [`SMALL_REQUEST_RESERVE_BYTES`]). Frames over 1 MiB together may not take the last
    /// 32 MiB, which stay for small requests ([`SMALL_REQUEST_RESERVE_BYTES`]).
    pub max_inflight_request_bytes: usize,
    /// An idempotent producer's state on a partition is dropped this long after its last
    /// append, ms (Kafka's `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
    /// Most idempotent-producer states (producer × partition) kept; the least recently
    /// used are dropped beyond it.
    pub max_producer_states: usize,
    /// Bytes per second each client id may produce (Kafka's `producer_byte_rate` quota;
    /// 0: unlimited). Over it, responses carry `throttle_time_ms` and the connection is
    /// not read for that long.
    pub producer_byte_rate: u64,
    /// Bytes per second each client id may fetch (Kafka's `consumer_byte_rate`; 0: unlimited).
    pub consumer_byte_rate: u64,
}

impl ListenerLimits {
    /// `max_inflight_request_bytes`, raised so that one largest frame fits beside the
    /// small-request reserve.
    pub fn request_memory_bound(&self) -> usize {
        self.max_inflight_request_bytes.clamp(MAX_FRAME_BYTES + SMALL_REQUEST_RESERVE_BYTES, tokio::sync::Semaphore::MAX_PERMITS)
    }
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            connections_max_idle_ms: 600_000,
            request_read_timeout_ms: 30_000,
            max_connections: 65_536,
            max_connections_per_ip: 0,
            max_inflight_request_bytes: 256 << 20,
            producer_id_expiration_ms: idempotence::DEFAULT_EXPIRATION_MS,
            max_producer_states: idempotence::DEFAULT_MAX_ENTRIES,
            producer_byte_rate: 0,
            consumer_byte_rate: 0,
        }
    }
}

/// What [`KafkaServer::group_view`] shows of a group.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub generation: i32,
    pub members: Vec<MemberView>,
}

/// One member of a [`GroupView`]; `assignment` is (topic, partitions) for consumer groups.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub client_host: String,
    pub assignment: Vec<(String, Vec<i32>)>,
}

pub use sluice_core::schema::RecordCheck;

/// For a topic, how its produced records are checked, if at all.
pub type RecordChecks = Box<dyn Fn(&str) -> Option<RecordCheck> + Send + Sync>;

/// The Kafka protocol server over a log.
pub struct KafkaServer {
    pub log: Arc<Log>,
    pub options: KafkaOptions,
    /// Committed offsets, shared with the HTTP groups API.
    pub offsets: Arc<OffsetStore>,
    /// Consumer groups by name (membership is in memory; offsets are in `offsets`).
    pub groups: Mutex<BTreeMap<String, Group>>,
    /// Woken whenever a group changes, for JoinGroup and SyncGroup waiting on a rebalance.
    pub group_changed: tokio::sync::Notify,
    /// Next id handed out by InitProducerId.
    pub next_producer_id: std::sync::atomic::AtomicI64,
    /// Sequence state of idempotent producers.
    pub producers: Mutex<idempotence::Producers>,
    /// Woken whenever a partition's high watermark moves (Fetch long polls wait on it).
    pub log_changed: Arc<tokio::sync::Notify>,
    /// Bytes of request frames that may still be buffered (see
    /// [`ListenerLimits::max_inflight_request_bytes`]).
    request_memory: Arc<tokio::sync::Semaphore>,
    /// The part of the request memory large frames may take (all but
    /// [`SMALL_REQUEST_RESERVE_BYTES`]), so that large frames stuck half-sent cannot starve
    /// the small requests of well-behaved clients.
    large_request_memory: Arc<tokio::sync::Semaphore>,
    caps: sluice_core::net::ConnectionCaps,
    produce_quota: sluice_core::quota::RateQuota,
    fetch_quota: sluice_core::quota::RateQuota,
}

impl KafkaServer {
    pub fn new(log: Arc<Log>, offsets: Arc<OffsetStore>, options: KafkaOptions) -> KafkaServer {
        let log_changed = Arc::new(tokio::sync::Notify::new());
        let notify = log_changed.clone();
        log.on_change(move || notify.notify_waiters());
        let memory = options.limits.request_memory_bound();
        let producers = idempotence::Producers::new(options.limits.producer_id_expiration_ms, options.limits.max_producer_states);
        KafkaServer {
            request_memory: Arc::new(tokio::sync::Semaphore::new(memory)),
            large_request_memory: Arc::new(tokio::sync::Semaphore::new(memory - SMALL_REQUEST_RESERVE_BYTES)),
            caps: sluice_core::net::ConnectionCaps::new(options.limits.max_connections, options.limits.max_connections_per_ip),
            produce_quota: sluice_core::quota::RateQuota::new(options.limits.producer_byte_rate),
            fetch_quota: sluice_core::quota::RateQuota::new(options.limits.consumer_byte_rate),
            log_changed,
            log,
            options,
            offsets,
            groups: Mutex::new(BTreeMap::new()),
            group_changed: tokio::sync::Notify::new(),
            next_producer_id: std::sync::atomic::AtomicI64::new(sluice_core::time::now_ms()),
            producers: Mutex::new(producers),
        }
    }

    /// Runs `f` on a group (created empty if new) and wakes anyone waiting on groups.
    pub fn with_group<T>(&self, name: &str, f: impl FnOnce(&mut Group) -> T) -> T {
        self.poll_group(name, |g| (true, f(g)))
    }

    /// Groups that have members now.
    pub fn active_groups(&self) -> Vec<String> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|(_, g)| !g.members.is_empty()).map(|(n, _)| n.clone()).collect()
    }

    /// A snapshot of a group the coordinator knows: state, protocol, generation, members.
    pub fn group_view(&self, name: &str) -> Option<GroupView> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let g = groups.get(name)?;
        let consumer = g.protocol_type.as_deref() == Some("consumer");
        Some(GroupView {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            generation: g.generation,
            members: g
                .members
                .values()
                .map(|m| MemberView {
                    member_id: m.id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    assignment: if consumer { coordinator::consumer_assignment(&m.assignment) } else { Vec::new() },
                })
                .collect(),
        })
    }

    /// Runs `f` on a group without waking waiters; `f` returns whether it changed the
    /// group (then waiters are woken) and a value.
    pub fn poll_group<T>(&self, name: &str, f: impl FnOnce(&mut Group) -> (bool, T)) -> T {
        let (changed, out) = {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            f(groups.entry(name.to_string()).or_default())
        };
        if changed {
            self.group_changed.notify_waiters();
        }
        out
    }
}

/// Errors that end one connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("no request for {0} ms (kafka.connections_max_idle_ms)")]
    Idle(u64),
    #[error("a request frame did not arrive whole within {0} ms of its first byte (kafka.request_read_timeout_ms)")]
    SlowRequest(u64),
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

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl KafkaServer {
    /// Accepts connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        // Session expiry and rebalance deadlines; ends with this task.
        let ticker = tokio::spawn(handlers::groups::tick(self.clone()));
        let _stop_ticker = AbortOnDrop(ticker);
        let mut backoff = sluice_core::net::AcceptBackoff::default();
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    backoff.accepted();
                    let Some(slot) = self.caps.admit_counted("kafka", peer) else { continue }; // dropping the stream closes it
                    let server = self.clone();
                    tokio::spawn(async move {
                        let served = match server.options.tls.clone() {
                            None => server.connection(stream, peer).await,
                            Some(tls) => {
                                let _ = stream.set_nodelay(true);
                                // The handshake must finish within the request read timeout.
                                match sluice_core::net::within(server.options.limits.request_read_timeout_ms, tls.accept(stream)).await {
                                    Ok(Ok(s)) => server.connection(s, peer).await,
                                    Ok(Err(e)) => Err(ConnectionError::Decode(format!("TLS handshake failed (a client without TLS?): {e}"))),
                                    Err(_) => Err(ConnectionError::SlowRequest(server.options.limits.request_read_timeout_ms)),
                                }
                            }
                        };
                        match served {
                            Err(e @ (ConnectionError::Idle(_) | ConnectionError::SlowRequest(_))) => {
                                let reason = if matches!(e, ConnectionError::Idle(_)) { "idle" } else { "slow_request" };
                                metrics::counter!(sluice_core::telemetry::LISTENER_TIMEOUTS_TOTAL, "listener" => "kafka", "reason" => reason).increment(1);
                                tracing::debug!(%peer, reason = %e, "kafka connection closed");
                            }
                            Err(e) => tracing::info!(%peer, reason = %e, "kafka connection closed"),
                            Ok(()) => {}
                        }
                        drop(slot);
                    });
                }
                Err(e) => tokio::time::sleep(backoff.after_error("kafka", &e)).await,
            }
        }
    }

    /// Records `bytes` against a client id's quota; returns its throttle time.
    pub fn quota_use(&self, quota: handlers::Quota, client_id: &str, bytes: u64) -> std::time::Duration {
        let (q, label) = match quota {
            handlers::Quota::Produce => (&self.produce_quota, "produce"),
            handlers::Quota::Fetch => (&self.fetch_quota, "fetch"),
        };
        let throttle = q.record(client_id, bytes, std::time::Instant::now());
        if !throttle.is_zero() {
            metrics::histogram!(sluice_core::telemetry::QUOTA_THROTTLE_SECONDS, "quota" => label).record(throttle.as_secs_f64());
        }
        throttle
    }

    /// Open connections of the listener now.
    pub fn open_connections(&self) -> usize {
        self.caps.open()
    }

    /// Bytes of request frames held now, and the bound (`max_inflight_request_bytes`).
    pub fn request_memory(&self) -> (usize, usize) {
        let bound = self.options.limits.request_memory_bound();
        (bound.saturating_sub(self.request_memory.available_permits()), bound)
    }

    /// Idempotent-producer states held now.
    pub fn producer_states(&self) -> usize {
        self.producers.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Reads one request frame: waits up to `connections_max_idle_ms` for its first byte,
    /// then up to `request_read_timeout_ms` for the rest. The frame is buffered as its bytes
    /// arrive (never the declared length up front): its buffer doubles from 64 KiB when
    /// full, taking each growth from the listener's request memory; the permits are
    /// returned with the frame and released when the request is answered. `Ok(None)`: the
    /// peer closed the connection between requests.
    async fn read_frame(&self, reader: &mut (impl AsyncReadExt + Unpin)) -> Result<Option<(Bytes, FrameMemory)>, ConnectionError> {
        let limits = &self.options.limits;
        let mut len = [0u8; 4];
        let first = sluice_core::net::within(limits.connections_max_idle_ms, reader.read(&mut len[..1]));
        match first.await {
            Err(_) => return Err(ConnectionError::Idle(limits.connections_max_idle_ms)),
            Ok(Ok(0)) => return Ok(None),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
        let rest = async {
            reader.read_exact(&mut len[1..]).await?;
            let declared = i32::from_be_bytes(len);
            if declared < 0 || declared as usize > MAX_FRAME_BYTES {
                return Err(ConnectionError::FrameLength(declared as i64));
            }
            let declared = declared as usize;
            // The buffer grows only when full, doubling from 64 KiB up to the declared size;
            // each growth first takes its bytes from the request memory, so the permits held
            // always cover the buffer's capacity, which is at most twice what has arrived.
            let mut frame: Vec<u8> = Vec::new();
            let mut permit = self.request_memory.clone().acquire_many_owned(0).await.map_err(closed)?;
            let mut large = self.large_request_memory.clone().acquire_many_owned(0).await.map_err(closed)?;
            while frame.len() < declared {
                if frame.len() == frame.capacity() {
                    let new_capacity = (frame.capacity() * 2).max(FRAME_CHUNK_BYTES).min(declared);
                    let grow = (new_capacity - frame.capacity()) as u32;
                    if declared > LARGE_FRAME_BYTES {
                        large.merge(self.large_request_memory.clone().acquire_many_owned(grow).await.map_err(closed)?);
                    }
                    permit.merge(self.request_memory.clone().acquire_many_owned(grow).await.map_err(closed)?);
                    frame.reserve_exact(new_capacity - frame.len());
                }
                let room = (frame.capacity() - frame.len()).min(declared - frame.len());
                if (&mut *reader).take(room as u64).read_buf(&mut frame).await? == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
                }
            }
            Ok((Bytes::from(frame), FrameMemory { _all: permit, _large: large }))
        };
        match sluice_core::net::within(limits.request_read_timeout_ms, rest).await {
            Ok(r) => r.map(Some),
            Err(_) => Err(ConnectionError::SlowRequest(limits.request_read_timeout_ms)),
        }
    }

    /// Serves one connection. Requests are read and started in order; a Produce does its
    /// writes in order and then waits for durability on another task, so the next requests
    /// can be read meanwhile and pipelined produce requests share one fdatasync (group
    /// commit). Responses are written in request order, as the protocol requires.
    async fn connection<S: Connection>(self: Arc<Self>, stream: S, peer: SocketAddr) -> Result<(), ConnectionError> {
        stream.nodelay()?;
        let mut auth = match &self.options.sasl {
            Some(sasl) => sasl::ConnAuth::from_certificate(sasl, stream.peer_principal(), peer),
            None => sasl::ConnAuth::default(),
        };
        let (mut reader, writer) = tokio::io::split(stream);
        let (tx, rx) = tokio::sync::mpsc::channel::<Pending>(MAX_IN_FLIGHT);
        let writer = tokio::spawn(write_replies(writer, rx));
        let result = async {
            loop {
                let Some((mut buf, memory)) = self.read_frame(&mut reader).await? else { return Ok(()) };
                let request_bytes = buf.len() + 4;
                let header = decode_header(&mut buf).map_err(ConnectionError::Decode)?;
                let read_at = std::time::Instant::now();
                let correlation_id = header.correlation_id;
                let api = ApiKey::try_from(header.request_api_key).ok();
                let grant = match (&self.options.sasl, api) {
                    (None, _) | (Some(_), Some(ApiKey::ApiVersions)) => None,
                    (Some(sasl), Some(key @ (ApiKey::SaslHandshake | ApiKey::SaslAuthenticate))) => {
                        let version = header.request_api_version;
                        let (body, close) = self.sasl_request(sasl, &mut auth, key, version, buf, peer).await?;
                        let header_version = key.response_header_version(version);
                        let reply = handlers::Reply::Ready(Some(body));
                        if tx.send(Pending { correlation_id, header_version, reply, api, read_at, _memory: memory }).await.is_err() {
                            return Ok(());
                        }
                        if close {
                            // The answer goes out now; the close waits, as Kafka's
                            // `connection.failed.authentication.delay.ms` (KIP-306), so the
                            // client reads the error before the connection drops.
                            tokio::time::sleep(std::time::Duration::from_millis(sasl::FAILED_AUTHENTICATION_DELAY_MS)).await;
                            return Ok(());
                        }
                        continue;
                    }
                    (Some(sasl), _) => match &auth.principal {
                        Some((user, _)) => match (sasl.principal)(user) {
                            Some(grant) => Some(grant),
                            None => return Err(ConnectionError::Decode(format!("user {user:?} was removed: closing its connection"))),
                        },
                        None => {
                            return Err(ConnectionError::Decode(format!(
                                "{api:?} before SASL authentication: this listener needs security.protocol=SASL_PLAINTEXT and a sasl.mechanism ({})",
                                sluice_auth::sasl::MECHANISMS.join(", ")
                            )))
                        }
                    },
                };
                let user = grant.as_ref().and_then(|_| auth.principal.as_ref()).map(|(u, _)| u.clone());
                let (reply, header_version, mute) = self.clone().handle(header, buf, peer, request_bytes, user, grant).await?;
                if tx.send(Pending { correlation_id, header_version, reply, api, read_at, _memory: memory }).await.is_err() {
                    return Ok(()); // the writer stopped: its error is reported below
                }
                if !mute.is_zero() {
                    // Over a quota: the response goes out now; the next request waits (KIP-219).
                    tokio::time::sleep(mute).await;
                }
            }
        }
        .await;
        // Replies already due are still sent before the connection closes.
        drop(tx);
        let written = writer.await.map_err(|e| ConnectionError::Decode(format!("response writer failed: {e}")))?;
        result.and(written)
    }

    /// Decodes and starts one request; returns its reply and response header version.
    async fn handle(self: Arc<Self>, header: RequestHeader, mut body: Bytes, peer: SocketAddr, request_bytes: usize, user: Option<String>, grant: Option<(sluice_auth::Role, sluice_auth::Limits)>) -> Result<(handlers::Reply, i16, std::time::Duration), ConnectionError> {
        let api_key = ApiKey::try_from(header.request_api_key).map_err(|_| ConnectionError::Decode(format!("unknown API key {}", header.request_api_key)))?;
        let version = header.request_api_version;
        let supported = handlers::supported(api_key);
        if supported.is_none_or(|(lo, hi)| version < lo || version > hi) {
            let (body, header_version) = handlers::unsupported(api_key, version)?;
            return Ok((handlers::Reply::Ready(Some(body)), header_version, std::time::Duration::ZERO));
        }
        let request = decode_body(api_key, &mut body, version).map_err(ConnectionError::Decode)?;
        if body.has_remaining() {
            tracing::debug!(?api_key, version, left = body.remaining(), "request had trailing bytes");
        }
        let caller = handlers::Caller { client_id: header.client_id.as_deref().unwrap_or("").to_string(), host: format!("/{}", peer.ip()), request_bytes, user, grant };
        let (reply, mute) = handlers::handle(self, request, version, caller).await?;
        Ok((reply, api_key.response_header_version(version), mute))
    }
}

/// A client connection: plain TCP or TLS over TCP.
pub trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {
    /// Turns Nagle's algorithm off on the socket (responses go out at once).
    fn nodelay(&self) -> std::io::Result<()>;
    /// The user the client's certificate names (mutual TLS), or why it names none; `None`:
    /// no client certificate.
    fn peer_principal(&self) -> Option<Result<sluice_auth::cert::CertPrincipal, String>> {
        None
    }
}

impl Connection for TcpStream {
    fn nodelay(&self) -> std::io::Result<()> {
        self.set_nodelay(true)
    }
}

impl Connection for tokio_rustls::server::TlsStream<TcpStream> {
    fn nodelay(&self) -> std::io::Result<()> {
        Ok(()) // set before the handshake
    }

    fn peer_principal(&self) -> Option<Result<sluice_auth::cert::CertPrincipal, String>> {
        self.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|der| sluice_auth::cert::principal(der))
    }
}

/// Most requests of one connection in flight at once (read but not yet answered).
const MAX_IN_FLIGHT: usize = 64;

/// A request read and started, waiting for its turn to be answered.
struct Pending {
    correlation_id: i32,
    header_version: i16,
    reply: handlers::Reply,
    api: Option<ApiKey>,
    read_at: std::time::Instant,
    /// The request frame's share of the listener's request memory, held until answered.
    _memory: FrameMemory,
}

/// A frame's permits from the listener's request memory (and, for a large frame, from the
/// part large frames may use); released when dropped.
struct FrameMemory {
    _all: tokio::sync::OwnedSemaphorePermit,
    _large: tokio::sync::OwnedSemaphorePermit,
}

/// Frames larger than this (bytes) are "large": together they may hold all of the request
/// memory but [`SMALL_REQUEST_RESERVE_BYTES`].
pub const LARGE_FRAME_BYTES: usize = 1 << 20;
/// Request memory kept for frames of at most [`LARGE_FRAME_BYTES`], bytes.
pub const SMALL_REQUEST_RESERVE_BYTES: usize = 32 << 20;

/// A request frame's buffer starts at this many bytes (or the frame's size, if smaller) and
/// doubles when full; each growth is taken from the listener's request memory first.
const FRAME_CHUNK_BYTES: usize = 64 * 1024;

fn closed(_: tokio::sync::AcquireError) -> ConnectionError {
    ConnectionError::Decode("the listener is shutting down".into())
}

/// Writes replies in request order until the reader is done and every reply is sent.
async fn write_replies(mut writer: impl tokio::io::AsyncWrite + Unpin, mut replies: tokio::sync::mpsc::Receiver<Pending>) -> Result<(), ConnectionError> {
    use sluice_core::telemetry as t;
    while let Some(Pending { correlation_id, header_version, reply, api, read_at, _memory }) = replies.recv().await {
        let api = api.map(|k| format!("{k:?}")).unwrap_or_else(|| "unknown".into());
        let body = match reply {
            handlers::Reply::Ready(body) => body,
            handlers::Reply::Later(task) => task.await.map_err(|e| ConnectionError::Decode(format!("handler failed: {e}")))??,
        };
        metrics::counter!(t::KAFKA_REQUESTS_TOTAL, "api" => api.clone()).increment(1);
        let Some(body) = body else {
            metrics::histogram!(t::KAFKA_REQUEST_DURATION_SECONDS, "api" => api.clone()).record(read_at.elapsed().as_secs_f64());
            continue;
        };
        let mut out = BytesMut::with_capacity(body.len() + 16);
        out.put_i32(0);
        let rh = ResponseHeader::default().with_correlation_id(correlation_id);
        rh.encode(&mut out, header_version).map_err(|e| ConnectionError::Decode(e.to_string()))?;
        out.extend_from_slice(&body);
        let n = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&n.to_be_bytes());
        writer.write_all(&out).await?;
        metrics::histogram!(t::KAFKA_REQUEST_DURATION_SECONDS, "api" => api).record(read_at.elapsed().as_secs_f64());
    }
    Ok(())
}
