//! Fixed-window request limits, kept in this process's memory, keyed by account or client IP.
//! Each decision carries what the `RateLimit-*` headers report.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked keys, windows that have ended are dropped.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset_secs: u64,
}

#[derive(Clone, Default)]
pub struct RateLimiter {
    // A std mutex: each check is a map lookup and an increment, never held across an await.
    windows: Arc<Mutex<HashMap<String, (Instant, u32)>>>,
}

impl RateLimiter {
    pub fn check(&self, key: &str, limit: u32) -> Decision {
        self.check_at(key, limit, Instant::now())
    }

    fn check_at(&self, key: &str, limit: u32, now: Instant) -> Decision {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() > PRUNE_ABOVE {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let entry = windows.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        let allowed = entry.1 < limit;
        if allowed {
            entry.1 += 1;
        }
        let reset = WINDOW.saturating_sub(now.duration_since(entry.0));
        Decision {
            allowed,
            limit,
            remaining: limit.saturating_sub(entry.1),
            reset_secs: reset.as_secs().max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_key_and_resets_after_the_window() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..3 {
            let d = rl.check_at("a", 3, t0);
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i);
        }
        let d = rl.check_at("a", 3, t0 + Duration::from_secs(10));
        assert_eq!((d.allowed, d.remaining, d.reset_secs), (false, 0, 50));
        assert!(rl.check_at("b", 3, t0).allowed, "keys are independent");
        assert!(
            rl.check_at("a", 3, t0 + WINDOW).allowed,
            "a new window starts"
        );
    }
}
