//! Failed-login throttling per client address, for the dashboard login and Kafka SASL.
//!
//! After [`MAX_FAILURES`] failed logins in a row from one address, logins from it are
//! refused for [`LOCKOUT_MS`] without checking the password (OWASP's Authentication Cheat
//! Sheet: limit failed attempts). A success clears the address's count. Pure: the caller
//! passes the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failed logins in a row from one address before it is locked out.
pub const MAX_FAILURES: u32 = 10;
/// How long a locked-out address waits, ms.
pub const LOCKOUT_MS: i64 = 60_000;
/// Addresses tracked at most (the oldest entries are dropped beyond it).
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// Locked out until this instant (epoch ms); 0: not locked.
    until_ms: i64,
    last_ms: i64,
}

/// Failed logins by address.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl LoginThrottle {
    /// `Err(ms to wait)` while `ip` is locked out at `now_ms`.
    pub fn check(&self, ip: IpAddr, now_ms: i64) -> Result<(), i64> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(&ip) {
            Some(e) if e.until_ms > now_ms => Err(e.until_ms - now_ms),
            _ => Ok(()),
        }
    }

    /// Records a login's outcome.
    pub fn record(&self, ip: IpAddr, ok: bool, now_ms: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            entries.remove(&ip);
            return;
        }
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&ip) {
            entries.retain(|_, e| e.until_ms > now_ms || now_ms - e.last_ms < LOCKOUT_MS);
            if entries.len() >= MAX_TRACKED {
                if let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.last_ms).map(|(k, _)| *k) {
                    entries.remove(&oldest);
                }
            }
        }
        let e = entries.entry(ip).or_insert(Entry { failures: 0, until_ms: 0, last_ms: now_ms });
        if e.until_ms != 0 && e.until_ms <= now_ms {
            *e = Entry { failures: 0, until_ms: 0, last_ms: now_ms };
        }
        e.failures += 1;
        e.last_ms = now_ms;
        if e.failures >= MAX_FAILURES {
            e.until_ms = now_ms + LOCKOUT_MS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_locked_out_after_repeated_failures_and_then_freed() {
        let t = LoginThrottle::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for i in 0..MAX_FAILURES {
            assert_eq!(t.check(a, 1000), Ok(()), "attempt {i}");
            t.record(a, false, 1000);
        }
        assert_eq!(t.check(a, 1000), Err(LOCKOUT_MS));
        assert_eq!(t.check(b, 1000), Ok(()), "other addresses are not affected");
        assert_eq!(t.check(a, 1000 + LOCKOUT_MS), Ok(()), "the lockout ends");
        t.record(a, false, 1000 + LOCKOUT_MS);
        assert_eq!(t.check(a, 1000 + LOCKOUT_MS), Ok(()), "the count starts again after a lockout");
        for _ in 0..MAX_FAILURES - 1 {
            t.record(b, false, 5000);
        }
        t.record(b, true, 5000);
        t.record(b, false, 5000);
        assert_eq!(t.check(b, 5000), Ok(()), "a success clears the count");
    }
}
