//! The WebSocket producer. Readings go out as NDJSON frames to
//! `ws://<server>/v1/topics/<topic>/ws`; each frame's ack (see `sluice_gateway::http`)
//! confirms its readings are durable. At most `window` frames are unacknowledged at once.
//! If the connection drops, the producer reconnects (for up to `retry_secs`) and resends
//! every unacknowledged reading: delivery is at-least-once, and the heart-rate job counts
//! a resent reading once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use indicatif::ProgressBar;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::{event_json, Reading, ReplayError};

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Server base URL, `http://host:port` (or `ws://`).
    pub server: String,
    pub topic: String,
    /// Real time × `speed`; 0 sends as fast as acks allow.
    pub speed: f64,
    /// Readings per frame at most.
    pub frame_records: usize,
    /// Unacknowledged frames at most.
    pub window: usize,
    /// How long to keep trying to (re)connect, seconds.
    pub retry_secs: u64,
    /// An API token, sent as `Authorization: Bearer` (servers with `[auth] enabled`).
    pub token: Option<String>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            server: "http://127.0.0.1:8080".into(),
            topic: "heartbeat-raw-topic".into(),
            speed: 1.0,
            frame_records: 500,
            window: 8,
            retry_secs: 30,
            token: None,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplayStats {
    pub readings: usize,
    /// Readings acknowledged as stored (accepted).
    pub accepted: usize,
    /// Readings the server rejected (kept in its dead-letter topic).
    pub rejected: usize,
    /// Reconnects after a lost connection (unacknowledged frames were sent again).
    pub reconnects: usize,
    /// JSON bytes sent (first sends and resends).
    pub bytes_sent: u64,
    /// Time from sending each frame to its ack, µs.
    pub ack_latency_us: Vec<u64>,
    pub elapsed: Duration,
}

/// The WebSocket URL of a topic on a server.
pub fn ws_url(server: &str, topic: &str) -> String {
    let base = server.trim_end_matches('/');
    let base = base.strip_prefix("http://").map(|r| format!("ws://{r}")).unwrap_or_else(|| {
        base.strip_prefix("https://").map(|r| format!("wss://{r}")).unwrap_or_else(|| base.to_string())
    });
    format!("{base}/v1/topics/{topic}/ws")
}

/// Replays one player's readings; returns once every reading is acknowledged.
pub async fn replay(player_id: &str, readings: &[Reading], opts: &ReplayOptions, progress: &ProgressBar) -> Result<ReplayStats, ReplayError> {
    let url = ws_url(&opts.server, &opts.topic);
    let events: Vec<String> = readings.iter().map(|r| event_json(player_id, r)).collect();
    let n = events.len();
    let start = Instant::now();
    let t0 = readings.first().map_or(0, |r| r.time_ms);
    let due = |i: usize| -> Duration {
        if opts.speed <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(((readings[i].time_ms - t0) as f64 / 1000.0 / opts.speed).max(0.0))
        }
    };
    let mut stats = ReplayStats { readings: n, ..ReplayStats::default() };
    let mut acked = 0usize;
    let mut connections = 0usize;
    progress.inc_length(n as u64);
    while acked < n {
        let (ws, _) = connect(&url, opts.token.as_deref(), opts.retry_secs, connections == 0, acked).await?;
        stats.reconnects += connections.min(1);
        connections += 1;
        let (mut tx, mut rx) = ws.split();
        let mut next = acked;
        let mut inflight: VecDeque<(usize, usize, Instant)> = VecDeque::new();
        let lost = loop {
            // Send every frame that is due while the window has room.
            while inflight.len() < opts.window && next < n && start.elapsed() >= due(next) {
                let mut end = next + 1;
                while end < n && end - next < opts.frame_records && start.elapsed() >= due(end) {
                    end += 1;
                }
                let frame = events[next..end].join("\n");
                stats.bytes_sent += frame.len() as u64;
                if tx.send(Message::Text(frame.into())).await.is_err() {
                    break;
                }
                inflight.push_back((next, end, Instant::now()));
                next = end;
            }
            if acked == n {
                let _ = tx.send(Message::Close(None)).await;
                break false;
            }
            let wait = if next < n && inflight.len() < opts.window { due(next).saturating_sub(start.elapsed()) } else { Duration::from_secs(3600) };
            let msg = tokio::select! {
                m = rx.next() => m,
                _ = tokio::time::sleep(wait) => continue,
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break true,
                Some(Ok(_)) => continue,
            };
            let ack: Value = serde_json::from_str(&text).map_err(|e| ReplayError::Refused(format!("unreadable ack {text:?}: {e}")))?;
            if let Some(err) = ack.get("error") {
                return Err(ReplayError::Refused(err.to_string()));
            }
            let Some((_, end, sent_at)) = inflight.pop_front() else {
                return Err(ReplayError::Refused(format!("ack without a frame in flight: {text}")));
            };
            stats.accepted += ack["accepted"].as_u64().unwrap_or(0) as usize;
            stats.rejected += ack["rejected"].as_u64().unwrap_or(0) as usize;
            stats.ack_latency_us.push(sent_at.elapsed().as_micros() as u64);
            progress.inc((end - acked) as u64);
            acked = end;
        };
        if lost {
            tracing::warn!(url, acked, "connection lost; reconnecting to resend unacknowledged readings");
        }
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, token: Option<&str>, retry_secs: u64, first: bool, acked: usize) -> Result<(Ws, ()), ReplayError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let deadline = Instant::now() + Duration::from_secs(retry_secs);
    loop {
        let mut request = url.into_client_request().map_err(|e| ReplayError::Connect { url: url.into(), reason: e.to_string() })?;
        if let Some(t) = token {
            let v = format!("Bearer {t}").parse().map_err(|_| ReplayError::Connect { url: url.into(), reason: "the token is not a valid header value".into() })?;
            request.headers_mut().insert("authorization", v);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => return Ok((ws, ())),
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(if first {
                        ReplayError::Connect { url: url.into(), reason: e.to_string() }
                    } else {
                        ReplayError::Lost { url: url.into(), retry_secs, acked }
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls() {
        assert_eq!(ws_url("http://127.0.0.1:8080/", "t"), "ws://127.0.0.1:8080/v1/topics/t/ws");
        assert_eq!(ws_url("ws://h:1", "t"), "ws://h:1/v1/topics/t/ws");
    }
}
