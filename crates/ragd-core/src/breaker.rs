//! A circuit breaker with resilience4j's semantics.
//!
//! - **Closed**: calls pass; outcomes go into a sliding window, count-based (the last N calls) or
//!   time-based (the calls of the last N seconds). Once the window holds at least `minimum_calls`,
//!   a failure rate or a slow-call rate at or over its threshold opens the breaker.
//! - **Open**: calls are rejected at once until `wait_in_open` has passed; the next call then moves
//!   the breaker to half-open.
//! - **Half-open**: at most `half_open_calls` probe calls are let through. When they have all ended,
//!   the breaker closes (rates under the thresholds) or opens again. A probe that has not ended within
//!   `half_open_deadline` counts as a failure, so a hung probe cannot hold the breaker half-open.
//!
//! Time comes from `tokio::time`, so tests drive every transition with paused time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    /// The last `window_size` calls.
    Count,
    /// The calls of the last `window_size` seconds.
    Time,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub window: WindowKind,
    pub window_size: u32,
    pub minimum_calls: u32,
    /// Failure rate (0-1) at or over which the breaker opens.
    pub failure_rate: f64,
    /// Slow-call rate (0-1) at or over which the breaker opens; 1.0 with no slow calls never trips.
    pub slow_call_rate: f64,
    /// A call longer than this is slow (it may still succeed).
    pub slow_call_ms: u64,
    pub wait_in_open_ms: u64,
    pub half_open_calls: u32,
    /// A probe that has not ended after this long counts as failed.
    pub half_open_deadline_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: WindowKind::Count,
            window_size: 20,
            minimum_calls: 10,
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call_ms: 60_000,
            wait_in_open_ms: 10_000,
            half_open_calls: 2,
            half_open_deadline_ms: 10_000,
        }
    }
}

impl BreakerConfig {
    pub fn problems(&self, key: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.window_size == 0 || self.minimum_calls == 0 || self.half_open_calls == 0 {
            p.push(format!("{key}: window_size, minimum_calls and half_open_calls must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.failure_rate) || !(0.0..=1.0).contains(&self.slow_call_rate) {
            p.push(format!("{key}: failure_rate and slow_call_rate are between 0 and 1"));
        }
        if self.wait_in_open_ms == 0 || self.half_open_deadline_ms == 0 || self.slow_call_ms == 0 {
            p.push(format!("{key}: wait_in_open_ms, half_open_deadline_ms and slow_call_ms must be at least 1"));
        }
        p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
    /// The value of `ragd_breaker_state`.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
        }
    }
}

/// What a breaker reports as it works (metrics); called with the breaker's lock released.
pub trait BreakerObserver: Send + Sync + 'static {
    /// A breaker was created (closed).
    fn registered(&self, dependency: &str);
    fn transition(&self, dependency: &str, to: State);
    fn rejected(&self, dependency: &str);
}

pub struct NoObserver;
impl BreakerObserver for NoObserver {
    fn registered(&self, _: &str) {}
    fn transition(&self, _: &str, _: State) {}
    fn rejected(&self, _: &str) {}
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    at: Instant,
    failed: bool,
    slow: bool,
}

struct Inner {
    state: State,
    opened_at: Instant,
    /// Closed: the sliding window.
    window: VecDeque<Outcome>,
    /// Half-open: probes handed out (by ticket) and not yet ended, with their start.
    probes_in_flight: Vec<(u64, Instant)>,
    probes_given: u32,
    probe_results: Vec<Outcome>,
    /// Bumped on every transition: permits from an earlier state are ignored when they end.
    epoch: u64,
    next_ticket: u64,
    transitions: u64,
    rejections: u64,
}

pub struct Breaker {
    name: String,
    cfg: BreakerConfig,
    inner: Mutex<Inner>,
    observer: Arc<dyn BreakerObserver>,
}

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// How long until the breaker lets a probe through.
    pub retry_after: Duration,
}

/// A call let through. End it with [`Breaker::record`]; dropped unrecorded (a cancelled call), it
/// releases its half-open slot without counting.
pub struct Permit {
    breaker: Arc<Breaker>,
    epoch: u64,
    ticket: Option<u64>,
    started: Instant,
    recorded: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.release(self.epoch, self.ticket);
        }
    }
}

/// A snapshot for `/health/ready`, `/api/v1/status` and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerStatus {
    pub state: State,
    pub calls_in_window: usize,
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    pub transitions: u64,
    pub rejections: u64,
    /// While open: milliseconds until a probe is let through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl Breaker {
    pub fn new(name: impl Into<String>, cfg: BreakerConfig) -> Arc<Breaker> {
        Breaker::with_observer(name, cfg, Arc::new(NoObserver))
    }

    pub fn with_observer(name: impl Into<String>, cfg: BreakerConfig, observer: Arc<dyn BreakerObserver>) -> Arc<Breaker> {
        let b = Arc::new(Breaker {
            name: name.into(),
            cfg,
            inner: Mutex::new(Inner {
                state: State::Closed,
                opened_at: Instant::now(),
                window: VecDeque::new(),
                probes_in_flight: Vec::new(),
                probes_given: 0,
                probe_results: Vec::new(),
                epoch: 0,
                next_ticket: 0,
                transitions: 0,
                rejections: 0,
            }),
            observer,
        });
        b.observer.registered(&b.name);
        b
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn wait(&self) -> Duration {
        Duration::from_millis(self.cfg.wait_in_open_ms)
    }

    /// Asks to make a call.
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Rejected> {
        let now = Instant::now();
        let mut changed = None;
        let result = {
            let mut inner = self.inner.lock().expect("breaker lock");
            self.expire_probes(&mut inner, now, &mut changed);
            if inner.state == State::Open && now >= inner.opened_at + self.wait() {
                self.set_state(&mut inner, State::HalfOpen, now, &mut changed);
            }
            match inner.state {
                State::Closed => Ok(Permit { breaker: self.clone(), epoch: inner.epoch, ticket: None, started: now, recorded: false }),
                State::HalfOpen if inner.probes_given < self.cfg.half_open_calls => {
                    inner.probes_given += 1;
                    let ticket = inner.next_ticket;
                    inner.next_ticket += 1;
                    inner.probes_in_flight.push((ticket, now));
                    Ok(Permit { breaker: self.clone(), epoch: inner.epoch, ticket: Some(ticket), started: now, recorded: false })
                }
                State::HalfOpen => {
                    inner.rejections += 1;
                    // The probes will end (or expire) within their deadline.
                    Err(Rejected { retry_after: Duration::from_millis(self.cfg.half_open_deadline_ms) })
                }
                State::Open => {
                    inner.rejections += 1;
                    Err(Rejected { retry_after: (inner.opened_at + self.wait()).saturating_duration_since(now) })
                }
            }
        };
        if let Some(s) = changed {
            self.observer.transition(&self.name, s);
        }
        if result.is_err() {
            self.observer.rejected(&self.name);
        }
        result
    }

    /// Ends a call: `failed` for an error that says the dependency is unwell (not for bad input).
    pub fn record(&self, mut permit: Permit, failed: bool) {
        permit.recorded = true;
        let now = Instant::now();
        let slow = now.duration_since(permit.started) >= Duration::from_millis(self.cfg.slow_call_ms);
        let outcome = Outcome { at: now, failed, slow };
        let mut changed = None;
        {
            let mut inner = self.inner.lock().expect("breaker lock");
            if permit.epoch != inner.epoch {
                return; // the breaker changed state since; this call no longer counts
            }
            match (inner.state, permit.ticket) {
                (State::Closed, _) => {
                    inner.window.push_back(outcome);
                    self.trim(&mut inner, now);
                    if self.trips(&inner.window.iter().copied().collect::<Vec<_>>(), self.cfg.minimum_calls as usize) {
                        self.set_state(&mut inner, State::Open, now, &mut changed);
                    }
                }
                (State::HalfOpen, Some(ticket)) => {
                    let before = inner.probes_in_flight.len();
                    inner.probes_in_flight.retain(|(t, _)| *t != ticket);
                    // A probe that outlived its deadline was already counted as failed.
                    if inner.probes_in_flight.len() < before {
                        inner.probe_results.push(outcome);
                        self.settle_half_open(&mut inner, now, &mut changed);
                    }
                }
                _ => {}
            }
        }
        if let Some(s) = changed {
            self.observer.transition(&self.name, s);
        }
    }

    fn release(&self, epoch: u64, ticket: Option<u64>) {
        let mut inner = self.inner.lock().expect("breaker lock");
        if let (true, Some(ticket)) = (epoch == inner.epoch, ticket) {
            // A cancelled probe gives its slot back.
            let before = inner.probes_in_flight.len();
            inner.probes_in_flight.retain(|(t, _)| *t != ticket);
            if inner.probes_in_flight.len() < before {
                inner.probes_given -= 1;
            }
        }
    }

    fn expire_probes(&self, inner: &mut Inner, now: Instant, changed: &mut Option<State>) {
        if inner.state != State::HalfOpen {
            return;
        }
        let deadline = Duration::from_millis(self.cfg.half_open_deadline_ms);
        let expired: Vec<u64> = inner.probes_in_flight.iter().filter(|(_, s)| now.duration_since(*s) >= deadline).map(|(t, _)| *t).collect();
        if expired.is_empty() {
            return;
        }
        inner.probes_in_flight.retain(|(t, _)| !expired.contains(t));
        for _ in expired {
            inner.probe_results.push(Outcome { at: now, failed: true, slow: true });
        }
        self.settle_half_open(inner, now, changed);
    }

    fn settle_half_open(&self, inner: &mut Inner, now: Instant, changed: &mut Option<State>) {
        if (inner.probe_results.len() as u32) < self.cfg.half_open_calls {
            return;
        }
        let results = inner.probe_results.clone();
        let to = if self.trips(&results, 1) { State::Open } else { State::Closed };
        self.set_state(inner, to, now, changed);
    }

    fn trips(&self, outcomes: &[Outcome], minimum: usize) -> bool {
        let n = outcomes.len();
        if n == 0 || n < minimum {
            return false;
        }
        let failures = outcomes.iter().filter(|o| o.failed).count() as f64 / n as f64;
        let slow = outcomes.iter().filter(|o| o.slow).count() as f64 / n as f64;
        failures >= self.cfg.failure_rate || (slow >= self.cfg.slow_call_rate && slow > 0.0)
    }

    fn trim(&self, inner: &mut Inner, now: Instant) {
        match self.cfg.window {
            WindowKind::Count => {
                while inner.window.len() > self.cfg.window_size as usize {
                    inner.window.pop_front();
                }
            }
            WindowKind::Time => {
                let span = Duration::from_secs(u64::from(self.cfg.window_size));
                while inner.window.front().is_some_and(|o| now.duration_since(o.at) > span) {
                    inner.window.pop_front();
                }
            }
        }
    }

    fn set_state(&self, inner: &mut Inner, to: State, now: Instant, changed: &mut Option<State>) {
        if inner.state == to {
            return;
        }
        tracing::warn!(dependency = %self.name, from = inner.state.as_str(), to = to.as_str(), "circuit breaker");
        inner.state = to;
        inner.epoch += 1;
        inner.transitions += 1;
        inner.window.clear();
        inner.probes_in_flight.clear();
        inner.probes_given = 0;
        inner.probe_results.clear();
        if to == State::Open {
            inner.opened_at = now;
        }
        *changed = Some(to);
    }

    pub fn status(&self) -> BreakerStatus {
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("breaker lock");
        self.trim(&mut inner, now);
        let n = inner.window.len();
        let rate = |f: fn(&Outcome) -> bool| if n == 0 { 0.0 } else { inner.window.iter().filter(|o| f(o)).count() as f64 / n as f64 };
        let retry_after_ms =
            (inner.state == State::Open).then(|| (inner.opened_at + self.wait()).saturating_duration_since(now).as_millis() as u64);
        BreakerStatus {
            state: inner.state,
            calls_in_window: n,
            failure_rate: rate(|o| o.failed),
            slow_call_rate: rate(|o| o.slow),
            transitions: inner.transitions,
            rejections: inner.rejections,
            retry_after_ms,
        }
    }

    pub fn state(&self) -> State {
        self.inner.lock().expect("breaker lock").state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            window: WindowKind::Count,
            window_size: 4,
            minimum_calls: 4,
            failure_rate: 0.5,
            slow_call_rate: 1.0,
            slow_call_ms: 1_000,
            wait_in_open_ms: 5_000,
            half_open_calls: 2,
            half_open_deadline_ms: 3_000,
        }
    }

    fn call(b: &Arc<Breaker>, failed: bool) {
        let p = b.try_acquire().expect("let through");
        b.record(p, failed);
    }

    fn open(b: &Arc<Breaker>) {
        for _ in 0..4 {
            call(b, true);
        }
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_stays_closed_below_the_minimum_number_of_calls() {
        let b = Breaker::new("t", cfg());
        for _ in 0..3 {
            call(&b, true);
        }
        assert_eq!(b.state(), State::Closed, "3 failures of 3 calls, but 4 are needed to judge");
    }

    #[tokio::test(start_paused = true)]
    async fn closed_opens_at_the_failure_rate_threshold() {
        let b = Breaker::new("t", cfg());
        call(&b, false);
        call(&b, false);
        call(&b, true);
        assert_eq!(b.state(), State::Closed);
        call(&b, true); // 2 of 4 = 50%
        assert_eq!(b.state(), State::Open);
        let s = b.status();
        assert_eq!(s.retry_after_ms, Some(5_000));
    }

    #[tokio::test(start_paused = true)]
    async fn the_count_window_forgets_old_calls() {
        let b = Breaker::new("t", cfg());
        call(&b, true);
        for _ in 0..4 {
            call(&b, false);
        }
        call(&b, true); // window: ok ok ok fail → 25%
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_window_forgets_old_calls() {
        let b = Breaker::new("t", BreakerConfig { window: WindowKind::Time, window_size: 10, ..cfg() });
        call(&b, true);
        call(&b, true);
        tokio::time::advance(Duration::from_secs(11)).await;
        call(&b, true);
        call(&b, false);
        call(&b, false);
        assert_eq!(b.status().calls_in_window, 3);
        assert_eq!(b.state(), State::Closed, "the two old failures left the window");
        call(&b, true); // 2 of 4 within 10 s
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_opens_at_the_slow_call_rate_threshold() {
        let b = Breaker::new("t", BreakerConfig { slow_call_rate: 0.75, ..cfg() });
        for i in 0..4 {
            let p = b.try_acquire().unwrap();
            if i > 0 {
                tokio::time::advance(Duration::from_millis(1_500)).await;
            }
            b.record(p, false); // successful but slow
        }
        assert_eq!(b.state(), State::Open, "3 of 4 calls were slow");
    }

    #[tokio::test(start_paused = true)]
    async fn open_rejects_until_the_wait_is_over_then_half_opens() {
        let b = Breaker::new("t", cfg());
        open(&b);
        let r = b.try_acquire().err().expect("rejected");
        assert_eq!(r.retry_after, Duration::from_secs(5));
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(b.try_acquire().is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        let p = b.try_acquire().expect("a probe");
        assert_eq!(b.state(), State::HalfOpen);
        drop(p);
        assert_eq!(b.status().rejections, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_only_the_probes_through_and_closes_when_they_succeed() {
        let b = Breaker::new("t", cfg());
        open(&b);
        tokio::time::advance(Duration::from_secs(5)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err(), "only half_open_calls probes");
        b.record(p1, false);
        assert_eq!(b.state(), State::HalfOpen);
        b.record(p2, false);
        assert_eq!(b.state(), State::Closed);
        call(&b, false);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_reopens_when_the_probes_fail() {
        let b = Breaker::new("t", cfg());
        open(&b);
        tokio::time::advance(Duration::from_secs(5)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        b.record(p1, true);
        b.record(p2, false); // 1 of 2 = 50% ≥ threshold
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.status().retry_after_ms, Some(5_000), "a fresh wait");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_probe_counts_as_failed_after_its_deadline() {
        let b = Breaker::new("t", cfg());
        open(&b);
        tokio::time::advance(Duration::from_secs(5)).await;
        let hung1 = b.try_acquire().unwrap();
        let hung2 = b.try_acquire().unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        // The next caller finds the probes expired: they failed, the breaker is open again.
        assert!(b.try_acquire().is_err());
        assert_eq!(b.state(), State::Open);
        // When the hung calls finally end, they no longer count.
        b.record(hung1, false);
        b.record(hung2, false);
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_ends_after_its_deadline_is_not_counted_twice() {
        let b = Breaker::new("t", BreakerConfig { half_open_calls: 3, ..cfg() });
        open(&b);
        tokio::time::advance(Duration::from_secs(5)).await;
        let late = b.try_acquire().unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        let p2 = b.try_acquire().unwrap(); // `late` expires here: one failed result of three
        b.record(late, false); // already counted: ignored
        assert_eq!(b.state(), State::HalfOpen, "two probes are still due");
        let p3 = b.try_acquire().unwrap();
        b.record(p2, false);
        b.record(p3, false);
        assert_eq!(b.state(), State::Closed, "1 failure of 3 probes is under 50%");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_gives_its_slot_back() {
        let b = Breaker::new("t", cfg());
        open(&b);
        tokio::time::advance(Duration::from_secs(5)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        drop(p2); // the client went away
        let p3 = b.try_acquire().expect("the slot is free again");
        b.record(p1, false);
        b.record(p3, false);
        assert_eq!(b.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_from_before_a_transition_do_not_count() {
        let b = Breaker::new("t", cfg());
        let old = b.try_acquire().unwrap();
        open(&b);
        b.record(old, true);
        tokio::time::advance(Duration::from_secs(5)).await;
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        b.record(p1, false);
        b.record(p2, false);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.status().transitions, 3, "closed→open→half-open→closed");
    }
}
