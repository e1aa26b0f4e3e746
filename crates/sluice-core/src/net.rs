//! Decisions shared by the listeners (HTTP and Kafka), kept free of I/O so they can be
//! tested alone: what to do when `accept` fails, and whether a new connection is within
//! the connection caps.
//!
//! - [`AcceptBackoff`]: a failed `accept(2)` either is about one connection (the peer
//!   reset it before it was accepted: retry at once) or about the process (out of file
//!   descriptors, `EMFILE`/`ENFILE`, or of memory, `ENOBUFS`/`ENOMEM`: retrying at once
//!   spins a core, so wait, doubling from 5 ms to 1 s, as hyper 0.14 and Go's net/http
//!   do). Its warnings are rate-limited to one per interval, with a count of the ones
//!   left out, so a listener at its descriptor limit cannot fill the disk with logs.
//! - [`ConnectionCaps`]: the number of open connections per listener and per source
//!   address (Kafka's `max.connections` and `max.connections.per.ip`). A connection over
//!   either cap is closed as soon as it is accepted.
//! - [`within`]: the time limit every listener timeout uses (0: none).
//!
//! [`AcceptBackoff::after_error`] and [`ConnectionCaps::admit_counted`] are the listeners'
//! edge: they apply those decisions and log and count the outcome, once for both listeners.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// First wait after a resource error, ms.
const FIRST_BACKOFF_MS: u64 = 5;
/// Longest wait between retries of a failing accept, ms.
const MAX_BACKOFF_MS: u64 = 1000;
/// At most one warning per this interval, ms.
const WARN_INTERVAL_MS: u64 = 10_000;

/// What a listener does after `accept` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptDecision {
    /// Wait this long before the next `accept` (zero: retry at once).
    pub wait: Duration,
    /// Log a warning now, saying this many earlier failures were not logged.
    pub warn: Option<u64>,
}

/// The state of one listener's accept retries.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    backoff_ms: u64,
    last_warn: Option<Instant>,
    suppressed: u64,
}

impl AcceptBackoff {
    /// Decides what to do after `accept` failed with an error of `kind` (raw OS error
    /// `os_error`, if any) at `now`.
    pub fn failed(&mut self, kind: ErrorKind, os_error: Option<i32>, now: Instant) -> AcceptDecision {
        let per_connection = matches!(kind, ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused | ErrorKind::Interrupted | ErrorKind::WouldBlock);
        let wait = if per_connection && !is_resource_error(os_error) {
            Duration::ZERO
        } else {
            self.backoff_ms = (self.backoff_ms * 2).clamp(FIRST_BACKOFF_MS, MAX_BACKOFF_MS);
            Duration::from_millis(self.backoff_ms)
        };
        let due = self.last_warn.is_none_or(|t| now.duration_since(t) >= Duration::from_millis(WARN_INTERVAL_MS));
        let warn = if due {
            self.last_warn = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        };
        AcceptDecision { wait, warn }
    }

    /// A connection was accepted: the next failure starts from the shortest wait again.
    pub fn accepted(&mut self) {
        self.backoff_ms = 0;
    }

    /// After `accept` on `listener` (`http`, `kafka`) failed with `e`: counts it, warns
    /// (rate-limited) and returns how long to wait before accepting again.
    pub fn after_error(&mut self, listener: &'static str, e: &std::io::Error) -> Duration {
        let d = self.failed(e.kind(), e.raw_os_error(), Instant::now());
        if let Some(left_out) = d.warn {
            tracing::warn!(listener, error = %e, left_out, retry_in_ms = d.wait.as_millis() as u64, "accept failed (raise the open-file limit, `ulimit -n`, if it says too many open files)");
        }
        metrics::counter!(crate::telemetry::LISTENER_ACCEPT_ERRORS_TOTAL, "listener" => listener).increment(1);
        d.wait
    }
}

/// Runs `f` with a time limit of `ms` (0: none); `Err` when the time ran out first.
pub async fn within<F: std::future::Future>(ms: u64, f: F) -> Result<F::Output, tokio::time::error::Elapsed> {
    if ms == 0 {
        Ok(f.await)
    } else {
        tokio::time::timeout(Duration::from_millis(ms), f).await
    }
}

/// `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM` (Linux numbers): the process or system is out of
/// descriptors or memory.
fn is_resource_error(os_error: Option<i32>) -> bool {
    matches!(os_error, Some(24) | Some(23) | Some(105) | Some(12))
}

/// Caps on open connections of one listener: in total and per source address (0 means
/// no cap). Cloning shares the counts.
#[derive(Debug, Clone)]
pub struct ConnectionCaps {
    inner: Arc<Caps>,
}

#[derive(Debug)]
struct Caps {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapExceeded {
    #[error("the listener has its maximum of {0} open connections")]
    Total(usize),
    #[error("{ip} already has its maximum of {max} open connections")]
    PerIp { ip: IpAddr, max: usize },
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionSlot {
    caps: Arc<Caps>,
    ip: IpAddr,
}

impl ConnectionCaps {
    pub fn new(max_total: usize, max_per_ip: usize) -> ConnectionCaps {
        ConnectionCaps { inner: Arc::new(Caps { max_total, max_per_ip, counts: Mutex::new((0, HashMap::new())) }) }
    }

    /// Admits a connection from `ip`, or says which cap it exceeds.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionSlot, CapExceeded> {
        let caps = &self.inner;
        let mut counts = caps.counts.lock().unwrap_or_else(|p| p.into_inner());
        if caps.max_total > 0 && counts.0 >= caps.max_total {
            return Err(CapExceeded::Total(caps.max_total));
        }
        let n = counts.1.entry(ip).or_insert(0);
        if caps.max_per_ip > 0 && *n >= caps.max_per_ip {
            return Err(CapExceeded::PerIp { ip, max: caps.max_per_ip });
        }
        *n += 1;
        counts.0 += 1;
        Ok(ConnectionSlot { caps: self.inner.clone(), ip })
    }

    /// [`ConnectionCaps::admit`] for a connection just accepted by `listener` (`http`,
    /// `kafka`) from `peer`; a refusal is counted and logged, and the caller drops the socket.
    pub fn admit_counted(&self, listener: &'static str, peer: std::net::SocketAddr) -> Option<ConnectionSlot> {
        match self.admit(peer.ip()) {
            Ok(slot) => Some(slot),
            Err(e) => {
                metrics::counter!(crate::telemetry::LISTENER_REFUSED_CONNECTIONS_TOTAL, "listener" => listener).increment(1);
                tracing::debug!(listener, %peer, reason = %e, "connection refused");
                None
            }
        }
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.inner.counts.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.caps.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.0 = counts.0.saturating_sub(1);
        if let Some(n) = counts.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.1.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_descriptors_backs_off_and_warns_rarely() {
        let mut b = AcceptBackoff::default();
        let t0 = Instant::now();
        let waits: Vec<u64> = (0..10).map(|i| b.failed(ErrorKind::Other, Some(24), t0 + Duration::from_millis(i)).wait.as_millis() as u64).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        // The first failure warns; the next nine within 10 s do not; the next one says nine were left out.
        let mut b = AcceptBackoff::default();
        assert_eq!(b.failed(ErrorKind::Other, Some(24), t0).warn, Some(0));
        for i in 1..10 {
            assert_eq!(b.failed(ErrorKind::Other, Some(24), t0 + Duration::from_secs(i)).warn, None);
        }
        assert_eq!(b.failed(ErrorKind::Other, Some(24), t0 + Duration::from_secs(10)).warn, Some(9));
        b.accepted();
        assert_eq!(b.failed(ErrorKind::Other, Some(23), t0 + Duration::from_secs(11)).wait, Duration::from_millis(5));
    }

    #[test]
    fn a_reset_peer_is_retried_at_once() {
        let mut b = AcceptBackoff::default();
        assert_eq!(b.failed(ErrorKind::ConnectionAborted, Some(103), Instant::now()).wait, Duration::ZERO);
    }

    #[test]
    fn caps_count_per_listener_and_per_address() {
        let caps = ConnectionCaps::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = caps.admit(a).unwrap();
        let _a2 = caps.admit(a).unwrap();
        assert_eq!(caps.admit(a).unwrap_err(), CapExceeded::PerIp { ip: a, max: 2 });
        let _b1 = caps.admit(b).unwrap();
        assert_eq!(caps.admit(b).unwrap_err(), CapExceeded::Total(3));
        drop(a1);
        assert_eq!(caps.open(), 2);
        assert!(caps.admit(b).is_ok());
        assert_eq!(ConnectionCaps::new(0, 0).admit(a).map(|_| ()), Ok(()));
    }
}
