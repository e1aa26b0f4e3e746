//! Rate quotas, as Kafka's client quotas (KIP-13, and KIP-219 for how throttling is
//! signalled): a client may use `rate` units per second (bytes for produce and fetch,
//! requests for HTTP ingest) on average, with a burst of one second's worth.
//!
//! [`RateQuota`] is a token bucket per client (a Kafka client id or an address): each use
//! takes its units, possibly going into debt; a client in debt is told to wait until the
//! debt is repaid at `rate` (Kafka's `throttle_time_ms`, or HTTP's `Retry-After`). The
//! use is still served, as Kafka serves a request and then delays the client. The table
//! of clients is bounded: clients whose bucket is full again are forgotten when it grows
//! past [`MAX_CLIENTS`] (and all are, if that frees too little). Pure: time is passed in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most clients tracked at once; beyond it, clients with a full bucket are dropped (their
/// state is the same as a new client's).
pub const MAX_CLIENTS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Units available now; negative is debt.
    tokens: f64,
    at: Instant,
}

/// A per-client rate quota of `rate` units per second (0: unlimited).
#[derive(Debug)]
pub struct RateQuota {
    rate: f64,
    clients: Mutex<HashMap<String, Bucket>>,
}

impl RateQuota {
    pub fn new(rate_per_s: u64) -> RateQuota {
        RateQuota { rate: rate_per_s as f64, clients: Mutex::new(HashMap::new()) }
    }

    /// Whether a quota is set.
    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Records `units` used by `client` at `now`; returns how long the client must wait
    /// before its next use (zero within its quota).
    pub fn record(&self, client: &str, units: u64, now: Instant) -> Duration {
        if !self.enabled() {
            return Duration::ZERO;
        }
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let rate = self.rate;
        let b = bucket(&mut clients, client, rate, now);
        b.tokens = refill(b, rate, now) - units as f64;
        b.at = now;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }

    /// Takes `units` for `client` at `now` if its bucket holds them; otherwise takes
    /// nothing and says how long until it will (HTTP's refuse-and-retry-later, where
    /// [`RateQuota::record`] serves and then delays, as Kafka does).
    pub fn try_take(&self, client: &str, units: u64, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let rate = self.rate;
        let b = bucket(&mut clients, client, rate, now);
        let tokens = refill(b, rate, now);
        b.tokens = tokens;
        b.at = now;
        if tokens >= units as f64 {
            b.tokens -= units as f64;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((units as f64 - tokens) / rate))
        }
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The bucket of `client`, new (full) if it has none. Before adding a client to a full
/// table, clients whose bucket is full again are dropped; if that frees too little (many
/// clients in debt at once), the table starts over rather than being scanned again for
/// every new client.
fn bucket<'a>(clients: &'a mut HashMap<String, Bucket>, client: &str, rate: f64, now: Instant) -> &'a mut Bucket {
    if clients.len() >= MAX_CLIENTS && !clients.contains_key(client) {
        clients.retain(|_, b| refill(b, rate, now) < rate);
        if clients.len() > MAX_CLIENTS * 9 / 10 {
            clients.clear();
        }
    }
    clients.entry(client.to_string()).or_insert(Bucket { tokens: rate, at: now })
}

/// A bucket's tokens at `now`: refilled at `rate` per second since its last use, up to one
/// second's worth.
fn refill(b: &Bucket, rate: f64, now: Instant) -> f64 {
    (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_the_rate_nothing_waits_and_debt_is_repaid_at_the_rate() {
        let q = RateQuota::new(1_000);
        let t0 = Instant::now();
        assert_eq!(q.record("a", 1_000, t0), Duration::ZERO, "one second's burst");
        assert_eq!(q.record("a", 500, t0), Duration::from_millis(500), "500 units of debt at 1000/s");
        assert_eq!(q.record("b", 500, t0), Duration::ZERO, "clients are independent");
        // 0.5 s later the debt is repaid; 0.25 s more refills 250.
        assert_eq!(q.record("a", 250, t0 + Duration::from_millis(750)), Duration::ZERO);
        // Steady use at the rate never waits.
        let q = RateQuota::new(100);
        for i in 0..100u64 {
            assert_eq!(q.record("c", 10, t0 + Duration::from_millis(100 * i)), Duration::ZERO);
        }
    }

    #[test]
    fn try_take_refuses_without_charging() {
        let q = RateQuota::new(10);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(q.try_take("a", 1, t0), Ok(()));
        }
        assert_eq!(q.try_take("a", 1, t0), Err(Duration::from_millis(100)));
        assert_eq!(q.try_take("a", 1, t0), Err(Duration::from_millis(100)), "a refusal costs nothing");
        assert_eq!(q.try_take("a", 1, t0 + Duration::from_millis(100)), Ok(()));
    }

    #[test]
    fn no_rate_means_unlimited_and_untracked() {
        let q = RateQuota::new(0);
        assert_eq!(q.record("a", u64::MAX, Instant::now()), Duration::ZERO);
        assert_eq!(q.clients(), 0);
    }

    #[test]
    fn the_client_table_is_bounded() {
        let q = RateQuota::new(10);
        let t0 = Instant::now();
        for i in 0..MAX_CLIENTS {
            q.record(&format!("c{i}"), 1, t0);
        }
        assert_eq!(q.clients(), MAX_CLIENTS);
        // A second later every bucket is full again: those clients are forgotten.
        q.record("late", 1, t0 + Duration::from_secs(1));
        assert_eq!(q.clients(), 1);
        // All in debt at once: the table starts over instead of growing.
        for i in 0..MAX_CLIENTS + 5 {
            q.record(&format!("d{i}"), 100, t0 + Duration::from_secs(2));
            assert!(q.clients() <= MAX_CLIENTS);
        }
    }
}
