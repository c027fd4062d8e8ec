//! ragd's Prometheus metrics: one registry per engine, names prefixed `ragd_` (see API.md).
//!
//! Labels never carry raw user input: routes are templates, statuses are classes, stages,
//! dependencies and states are fixed words; collection names are validated identifiers whose number
//! is bounded by the collections that exist; generator labels are configured ids.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// The stages of ragd's two paths, each timed by `ragd_stage_duration_seconds{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Parse,
    Chunk,
    Embed,
    Upsert,
    Search,
    Rerank,
    Generate,
    /// From a question's arrival to the first piece of its answer.
    Ttft,
    /// The vector store's optimizers on one collection after its writes settled (off the request path).
    Optimize,
    /// Making a snapshot of the data folder (copy under the write gate, then packing).
    Snapshot,
}

impl Stage {
    pub const ALL: [Stage; 10] = [
        Stage::Parse,
        Stage::Chunk,
        Stage::Embed,
        Stage::Upsert,
        Stage::Search,
        Stage::Rerank,
        Stage::Generate,
        Stage::Ttft,
        Stage::Optimize,
        Stage::Snapshot,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Chunk => "chunk",
            Stage::Embed => "embed",
            Stage::Upsert => "upsert",
            Stage::Search => "search",
            Stage::Rerank => "rerank",
            Stage::Generate => "generate",
            Stage::Ttft => "ttft",
            Stage::Optimize => "optimize",
            Stage::Snapshot => "snapshot",
        }
    }
}

#[derive(Clone, Debug)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// Request and stage latencies: 0.25 ms to 2 minutes.
const LATENCY: &[f64] =
    &[0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
/// Job durations: 10 ms to 2 hours.
const JOB: &[f64] = &[0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 7200.0];

pub struct Metrics {
    registry: Registry,
    http_requests: Family<Labels, Counter>,
    http_duration: Family<Labels, Histogram, Buckets>,
    pub http_in_flight: Gauge,
    stage: Family<Labels, Histogram, Buckets>,
    jobs: Family<Labels, Gauge>,
    job_duration: Family<Labels, Histogram, Buckets>,
    tokens: Family<Labels, Counter>,
    collection_documents: Family<Labels, Gauge>,
    collection_chunks: Family<Labels, Gauge>,
    degraded: Family<Labels, Counter>,
    pub ready: Gauge,
    breaker_state: Family<Labels, Gauge>,
    breaker_transitions: Family<Labels, Counter>,
    breaker_rejections: Family<Labels, Counter>,
    ratelimit: Family<Labels, Counter>,
    ratelimit_fallback: Counter,
    shed: Family<Labels, Counter>,
    cache: Family<Labels, Counter>,
    mcp_tools: Family<Labels, Counter>,
    totals: Totals,
}

/// Service-wide counts since start, for `GET /api/v1/status` (and so the dashboard): the same
/// events as the labelled series, summed.
#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    degraded: AtomicU64,
    rate_limited: AtomicU64,
    shed: AtomicU64,
    cache_hits: AtomicU64,
    cache_lookups: AtomicU64,
    jobs_done: AtomicU64,
    jobs_failed: AtomicU64,
}

/// A snapshot of `Totals`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub requests: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub degraded_responses: u64,
    pub rate_limited: u64,
    pub shed: u64,
    pub cache_hits: u64,
    pub cache_lookups: u64,
    pub jobs_done: u64,
    pub jobs_failed: u64,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("ragd");
        let http_requests = Family::<Labels, Counter>::default();
        let http_duration = Family::new_with_constructor(Buckets(LATENCY));
        let http_in_flight = Gauge::default();
        let stage = Family::new_with_constructor(Buckets(LATENCY));
        let jobs = Family::<Labels, Gauge>::default();
        let job_duration = Family::new_with_constructor(Buckets(JOB));
        let tokens = Family::<Labels, Counter>::default();
        let collection_documents = Family::<Labels, Gauge>::default();
        let collection_chunks = Family::<Labels, Gauge>::default();
        let degraded = Family::<Labels, Counter>::default();
        let ready = Gauge::default();
        let build_info = Family::<Labels, Gauge>::default();
        let breaker_state = Family::<Labels, Gauge>::default();
        let breaker_transitions = Family::<Labels, Counter>::default();
        let breaker_rejections = Family::<Labels, Counter>::default();
        let ratelimit = Family::<Labels, Counter>::default();
        let ratelimit_fallback = Counter::default();
        let shed = Family::<Labels, Counter>::default();
        let cache = Family::<Labels, Counter>::default();
        let mcp_tools = Family::<Labels, Counter>::default();
        build_info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())]).set(1);

        registry.register("http_requests", "HTTP requests by route template, method and status class", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency to the response head (streams: to the first byte)", http_duration.clone());
        registry.register("http_requests_in_flight", "HTTP requests being handled", http_in_flight.clone());
        registry.register("stage_duration_seconds", "Latency of each stage of ingestion and answering", stage.clone());
        registry.register("jobs", "Unfinished ingestion jobs by state (queued, running)", jobs.clone());
        registry.register("job_duration_seconds", "Ingestion job duration from acknowledgement to its end, by final state", job_duration.clone());
        registry.register("tokens", "Generator tokens by direction (prompt, completion) and generator", tokens.clone());
        registry.register("collection_documents", "Documents per collection", collection_documents.clone());
        registry.register("collection_chunks", "Chunks per collection", collection_chunks.clone());
        registry.register("degraded", "Responses served without a dependency, by dependency", degraded.clone());
        registry.register("ready", "1 when every dependency is ready", ready.clone());
        registry.register("build_info", "ragd's version", build_info);
        registry.register("breaker_state", "Circuit breaker state per dependency: 0 closed, 1 open, 2 half-open", breaker_state.clone());
        registry.register("breaker_transitions", "Circuit breaker transitions per dependency, by the state entered", breaker_transitions.clone());
        registry.register("breaker_rejections", "Calls refused by an open (or full half-open) circuit breaker", breaker_rejections.clone());
        registry.register("ratelimit_decisions", "Rate-limit decisions by route class (query, ingest, admin) and decision (allowed, limited)", ratelimit.clone());
        registry.register(
            "ratelimit_fallback_decisions",
            "Rate-limit decisions this replica made alone because the shared limiter (Redis) did not answer: limits are per replica meanwhile",
            ratelimit_fallback.clone(),
        );
        registry.register("mcp_tool_calls", "MCP tool calls by tool and outcome (ok, tool_error, invalid)", mcp_tools.clone());
        registry.register("cache_requests", "Cache lookups by cache (query_embedding) and result (hit, miss, error)", cache.clone());
        registry.register("requests_shed", "Requests refused at the edge before any work, by reason (overloaded, timeout)", shed.clone());

        let m = Metrics {
            registry,
            http_requests,
            http_duration,
            http_in_flight,
            stage,
            jobs,
            job_duration,
            tokens,
            collection_documents,
            collection_chunks,
            degraded,
            ready,
            breaker_state,
            breaker_transitions,
            breaker_rejections,
            ratelimit,
            ratelimit_fallback,
            shed,
            cache,
            mcp_tools,
            totals: Totals::default(),
        };
        // Series that exist from the start, so dashboards and rates see zeros rather than gaps.
        for s in Stage::ALL {
            let _ = m.stage.get_or_create(&vec![("stage", s.as_str().to_owned())]);
        }
        for result in ["hit", "miss"] {
            let _ = m.cache.get_or_create(&vec![("cache", "query_embedding".to_owned()), ("result", result.to_owned())]);
        }
        for class in ["query", "ingest", "admin"] {
            for decision in ["allowed", "limited"] {
                let _ = m.ratelimit.get_or_create(&vec![("route_class", class.to_owned()), ("decision", decision.to_owned())]);
            }
        }
        for d in ["embedder", "generator"] {
            let _ = m.degraded.get_or_create(&vec![("dependency", d.to_owned())]);
        }
        Arc::new(m)
    }

    pub fn observe_stage(&self, stage: Stage, seconds: f64) {
        self.stage.get_or_create(&vec![("stage", stage.as_str().to_owned())]).observe(seconds);
    }

    /// One finished HTTP request: `route` is the matched template (never the raw path).
    pub fn observe_http(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let labels = vec![("route", route.to_owned()), ("method", method.to_owned()), ("status", class.to_owned())];
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration.get_or_create(&labels).observe(seconds);
        self.totals.requests.fetch_add(1, Relaxed);
        match class {
            "4xx" => self.totals.client_errors.fetch_add(1, Relaxed),
            "5xx" => self.totals.server_errors.fetch_add(1, Relaxed),
            _ => 0,
        };
    }

    /// Service-wide totals since start.
    pub fn summary(&self) -> Summary {
        let t = &self.totals;
        Summary {
            requests: t.requests.load(Relaxed),
            client_errors: t.client_errors.load(Relaxed),
            server_errors: t.server_errors.load(Relaxed),
            degraded_responses: t.degraded.load(Relaxed),
            rate_limited: t.rate_limited.load(Relaxed),
            shed: t.shed.load(Relaxed),
            cache_hits: t.cache_hits.load(Relaxed),
            cache_lookups: t.cache_lookups.load(Relaxed),
            jobs_done: t.jobs_done.load(Relaxed),
            jobs_failed: t.jobs_failed.load(Relaxed),
        }
    }

    /// One rate-limit decision; `route_class` is one of the fixed classes.
    pub fn count_ratelimit(&self, route_class: &'static str, allowed: bool) {
        let decision = if allowed { "allowed" } else { "limited" };
        self.ratelimit.get_or_create(&vec![("route_class", route_class.to_owned()), ("decision", decision.to_owned())]).inc();
        if !allowed {
            self.totals.rate_limited.fetch_add(1, Relaxed);
        }
    }

    /// One rate-limit decision made by the local fallback (the shared limiter did not answer).
    pub fn count_ratelimit_fallback(&self) {
        self.ratelimit_fallback.inc();
    }

    /// One cache lookup: `result` is `hit`, `miss` or `error`.
    pub fn count_cache(&self, cache: &'static str, result: &'static str) {
        self.cache.get_or_create(&vec![("cache", cache.to_owned()), ("result", result.to_owned())]).inc();
        self.totals.cache_lookups.fetch_add(1, Relaxed);
        if result == "hit" {
            self.totals.cache_hits.fetch_add(1, Relaxed);
        }
    }

    /// An MCP tool call: `tool` is one of the server's tools (`unknown` otherwise), `outcome` `ok`,
    /// `tool_error` (a ragd error returned as the tool's result) or `invalid` (a JSON-RPC error).
    pub fn count_mcp_tool(&self, tool: &'static str, outcome: &'static str) {
        self.mcp_tools.get_or_create(&vec![("tool", tool.to_owned()), ("outcome", outcome.to_owned())]).inc();
    }

    /// A request refused before any work (`overloaded`, `timeout`).
    pub fn count_shed(&self, reason: &'static str) {
        self.shed.get_or_create(&vec![("reason", reason.to_owned())]).inc();
        self.totals.shed.fetch_add(1, Relaxed);
    }

    pub fn observe_job(&self, failed: bool, seconds: f64) {
        let state = if failed { "failed" } else { "done" };
        self.job_duration.get_or_create(&vec![("state", state.to_owned())]).observe(seconds);
        let total = if failed { &self.totals.jobs_failed } else { &self.totals.jobs_done };
        total.fetch_add(1, Relaxed);
    }

    pub fn count_tokens(&self, generator: &str, prompt: usize, completion: usize) {
        self.tokens.get_or_create(&vec![("direction", "prompt".to_owned()), ("generator", generator.to_owned())]).inc_by(prompt as u64);
        self.tokens.get_or_create(&vec![("direction", "completion".to_owned()), ("generator", generator.to_owned())]).inc_by(completion as u64);
    }

    pub fn count_degraded(&self, dependencies: &[String]) {
        if !dependencies.is_empty() {
            self.totals.degraded.fetch_add(1, Relaxed);
        }
        for d in dependencies {
            // Only the fixed dependency words are labels.
            if matches!(d.as_str(), "embedder" | "generator" | "cache" | "reranker") {
                self.degraded.get_or_create(&vec![("dependency", d.clone())]).inc();
            }
        }
    }

    /// Unfinished jobs by state (finished ones are counted by `ragd_job_duration_seconds_count{state}`).
    pub fn set_jobs(&self, by_state: &BTreeMap<&'static str, u64>) {
        for state in ["queued", "running"] {
            self.jobs.get_or_create(&vec![("state", state.to_owned())]).set(by_state.get(state).copied().unwrap_or(0) as i64);
        }
    }

    /// Replaces the per-collection gauges (collections that are gone disappear).
    pub fn set_collections(&self, counts: &[(String, u64, u64)]) {
        self.collection_documents.clear();
        self.collection_chunks.clear();
        for (name, documents, chunks) in counts {
            self.collection_documents.get_or_create(&vec![("collection", name.clone())]).set(*documents as i64);
            self.collection_chunks.get_or_create(&vec![("collection", name.clone())]).set(*chunks as i64);
        }
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl crate::breaker::BreakerObserver for Metrics {
    fn registered(&self, dependency: &str) {
        let dep = vec![("dependency", dependency.to_owned())];
        self.breaker_state.get_or_create(&dep).set(0);
        let _ = self.breaker_rejections.get_or_create(&dep);
        for to in ["open", "half_open", "closed"] {
            let _ = self.breaker_transitions.get_or_create(&vec![("dependency", dependency.to_owned()), ("to", to.to_owned())]);
        }
    }
    fn transition(&self, dependency: &str, to: crate::breaker::State) {
        self.breaker_state.get_or_create(&vec![("dependency", dependency.to_owned())]).set(to.gauge());
        self.breaker_transitions.get_or_create(&vec![("dependency", dependency.to_owned()), ("to", to.as_str().to_owned())]).inc();
    }
    fn rejected(&self, dependency: &str) {
        self.breaker_rejections.get_or_create(&vec![("dependency", dependency.to_owned())]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_api_names() {
        let m = Metrics::new();
        m.observe_stage(Stage::Search, 0.002);
        m.observe_http("/api/v1/collections/{name}/search", "POST", 200, 0.003);
        m.count_tokens("builtin:gemma-3-270m", 100, 7);
        m.count_degraded(&["generator".into(), "not-a-dependency".into()]);
        let text = m.encode();
        for needle in [
            "ragd_stage_duration_seconds_count{stage=\"search\"} 1",
            "ragd_stage_duration_seconds_count{stage=\"generate\"} 0",
            "ragd_http_requests_total{route=\"/api/v1/collections/{name}/search\",method=\"POST\",status=\"2xx\"} 1",
            "ragd_tokens_total{direction=\"completion\",generator=\"builtin:gemma-3-270m\"} 7",
            "ragd_degraded_total{dependency=\"generator\"} 1",
            "ragd_build_info{version=",
            "# TYPE ragd_http_request_duration_seconds histogram",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
        }
        assert!(!text.contains("not-a-dependency"), "labels are fixed words");
    }
}
