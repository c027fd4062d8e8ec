//! Rate limits: the generic cell rate algorithm (GCRA) behind a trait, so a limiter shared through
//! Redis can replace the in-memory one when several replicas serve the same keys.
//!
//! A quota of `requests` per `period` with a `burst` spaces requests `period / requests` apart (the
//! emission interval T) and tolerates up to `burst` of them at once. Each key keeps one instant, its
//! theoretical arrival time (TAT). A request at `now` conforms when `TAT - now <= (burst - 1) * T`;
//! it then moves TAT to `max(TAT, now) + T`. Unlike fixed windows, there is no boundary to game: a
//! burst of 150 against 100 per minute (burst 100) lets exactly 100 through, then one more every 0.6 s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

/// Requests per period, with how many may come at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub requests: u32,
    pub period: Duration,
    /// At most this many in a burst (defaults to `requests`).
    pub burst: u32,
}

impl Quota {
    pub fn per_period(requests: u32, period: Duration) -> Quota {
        Quota { requests, period, burst: requests }
    }
    /// The spacing between conforming requests at the sustained rate.
    pub fn interval(&self) -> Duration {
        self.period / self.requests.max(1)
    }
}

/// The answer for one request, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests that would still conform right now (after this one).
    pub remaining: u32,
    /// Until the key's allowance is whole again.
    pub reset: Duration,
    /// When refused: until the next request would conform.
    pub retry_after: Duration,
    /// `false` when the shared limiter was unreachable and a local one decided instead.
    pub shared: bool,
}

#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request of `key` against `quota` and says whether it may go on.
    async fn check(&self, key: &str, quota: &Quota) -> Decision;
    /// The key's allowance as it stands, without counting a request (for a caller to see its own):
    /// `remaining` requests would conform right now; `allowed` says whether the next one would.
    async fn peek(&self, key: &str, quota: &Quota) -> Decision;
    /// For a limiter shared through another service: whether that service answers (`None`: the
    /// limiter is in-process and always ready). Readiness reports it; it is never critical.
    async fn ready(&self) -> Option<Result<(), String>> {
        None
    }
}

/// GCRA's decision for a key whose theoretical arrival time is `ahead` of now (zero when it is in
/// the past), and the distance ahead after this request. A shared limiter keeps the state
/// elsewhere and decides with the same function, so both agree to the nanosecond.
pub fn gcra(quota: &Quota, ahead: Duration, count: bool) -> (Decision, Duration) {
    let t = quota.interval();
    let tolerance = t * quota.burst.saturating_sub(1);
    if ahead > tolerance {
        let retry_after = ahead - tolerance;
        return (Decision { allowed: false, limit: quota.requests, remaining: 0, reset: ahead, retry_after, shared: true }, ahead);
    }
    // Counting: the request takes one interval. Peeking: the allowance as it stands.
    let used = if count { ahead + t } else { ahead };
    let full = t * quota.burst;
    let remaining = u32::try_from(full.saturating_sub(used).as_nanos() / t.as_nanos().max(1)).unwrap_or(u32::MAX);
    (Decision { allowed: true, limit: quota.requests, remaining, reset: used, retry_after: Duration::ZERO, shared: true }, used)
}

/// GCRA in this process's memory. Keys whose allowance is whole again are forgotten, so memory
/// follows the number of recently active callers.
#[derive(Default)]
pub struct LocalGcra {
    state: Mutex<HashMap<String, Instant>>,
}

const SWEEP_ABOVE: usize = 10_000;

impl LocalGcra {
    pub fn new() -> LocalGcra {
        LocalGcra::default()
    }

    /// The decision at `now` (tests drive time by hand).
    pub fn check_at(&self, key: &str, quota: &Quota, now: Instant) -> Decision {
        self.decide(key, quota, now, true)
    }

    /// The decision at `now` without counting the request.
    pub fn peek_at(&self, key: &str, quota: &Quota, now: Instant) -> Decision {
        self.decide(key, quota, now, false)
    }

    fn decide(&self, key: &str, quota: &Quota, now: Instant, count: bool) -> Decision {
        let mut state = self.state.lock().expect("rate limit state");
        if state.len() > SWEEP_ABOVE {
            state.retain(|_, tat| *tat > now);
        }
        let tat = state.get(key).copied().unwrap_or(now).max(now);
        let (decision, ahead) = gcra(quota, tat - now, count);
        if decision.allowed && count {
            state.insert(key.to_owned(), now + ahead);
        }
        decision
    }
}

#[async_trait]
impl RateLimiter for LocalGcra {
    async fn check(&self, key: &str, quota: &Quota) -> Decision {
        self.check_at(key, quota, Instant::now())
    }
    async fn peek(&self, key: &str, quota: &Quota) -> Decision {
        self.peek_at(key, quota, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_minute(n: u32) -> Quota {
        Quota::per_period(n, Duration::from_secs(60))
    }

    #[test]
    fn a_burst_of_150_against_100_per_minute_lets_exactly_100_through() {
        let gcra = LocalGcra::new();
        let q = per_minute(100);
        let now = Instant::now();
        let decisions: Vec<Decision> = (0..150).map(|_| gcra.check_at("k", &q, now)).collect();
        assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 100);
        assert!(decisions[..100].iter().all(|d| d.allowed));
        // Remaining counts down 99, 98, ..., 0.
        for (i, d) in decisions[..100].iter().enumerate() {
            assert_eq!(d.remaining, 99 - i as u32, "request {i}");
        }
        let refused = decisions[100];
        assert_eq!(refused.retry_after, Duration::from_millis(600));
        assert_eq!(refused.reset, Duration::from_secs(60));
    }

    #[test]
    fn one_more_conforms_per_interval_and_the_allowance_refills() {
        let gcra = LocalGcra::new();
        let q = per_minute(100);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(gcra.check_at("k", &q, t0).allowed);
        }
        assert!(!gcra.check_at("k", &q, t0 + Duration::from_millis(599)).allowed);
        let d = gcra.check_at("k", &q, t0 + Duration::from_millis(600));
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert!(!gcra.check_at("k", &q, t0 + Duration::from_millis(700)).allowed);
        // A minute of quiet: the whole burst again.
        let later = t0 + Duration::from_secs(121);
        assert_eq!(gcra.check_at("k", &q, later).remaining, 99);
    }

    #[test]
    fn peeking_counts_nothing_and_reports_what_would_conform() {
        let gcra = LocalGcra::new();
        let q = per_minute(100);
        let t0 = Instant::now();
        assert_eq!(gcra.peek_at("k", &q, t0).remaining, 100);
        for _ in 0..40 {
            gcra.check_at("k", &q, t0);
        }
        for _ in 0..5 {
            let d = gcra.peek_at("k", &q, t0);
            assert!(d.allowed);
            assert_eq!(d.remaining, 60);
        }
        for _ in 0..60 {
            assert!(gcra.check_at("k", &q, t0).allowed);
        }
        let d = gcra.peek_at("k", &q, t0);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.retry_after, Duration::from_millis(600));
    }

    #[test]
    fn keys_are_independent_and_refusals_cost_nothing() {
        let gcra = LocalGcra::new();
        let q = Quota { requests: 2, period: Duration::from_secs(10), burst: 2 };
        let t0 = Instant::now();
        assert!(gcra.check_at("a", &q, t0).allowed);
        assert!(gcra.check_at("a", &q, t0).allowed);
        for _ in 0..10 {
            assert!(!gcra.check_at("a", &q, t0).allowed);
        }
        assert!(gcra.check_at("b", &q, t0).allowed);
        // Refused requests did not push the next conforming time further out.
        assert!(gcra.check_at("a", &q, t0 + Duration::from_secs(5)).allowed);
    }
}
