//! `ragd bench search|query|ingest`: load against a running server, the way users measure it.
//!
//! Two models. Open (`--rate R`): requests start at a constant arrival rate whatever the server does,
//! and each latency runs from the request's *scheduled* start, so a stall that delays later sends
//! is counted in full (no coordinated omission). Closed (`--vus N --think T`): N virtual users each
//! send, wait for the answer, think (or keep a pace: one request per interval), and send again; with
//! a pace, latencies are recorded with HdrHistogram's correction for the requests a stalled user did
//! not send (with only a think time there is no intended schedule to correct against, as in k6). Percentiles come from an
//! HDR histogram (3 significant digits); errors are counted by status; `--threshold` turns the run
//! into a pass/fail check (exit code 1).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::ServerArgs;

#[derive(Args, Clone)]
pub struct LoadArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[arg(long, short, default_value = "bench")]
    pub collection: String,
    /// Open model: requests per second, at a constant arrival rate.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Closed model (when no --rate): virtual users.
    #[arg(long, default_value_t = 10)]
    pub vus: usize,
    /// Closed model: each user's pause between an answer and its next request (e.g. 200ms).
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub think: Duration,
    /// Closed model: each user starts one request per this interval (sleeping what its answer
    /// left of it), e.g. 222ms for 4.5 requests/s per user; overrides --think. Users start spread
    /// over one interval, so their requests do not arrive in bursts.
    #[arg(long, default_value = "0ms", value_parser = parse_duration)]
    pub pace: Duration,
    /// How long to measure (e.g. 30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before measuring starts (not counted).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Open model: at most this many requests in flight; a request due beyond it is dropped (and counted).
    #[arg(long, default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Fail (exit 1) unless this holds: `p50|p90|p95|p99|max|mean <|<= N(us|ms|s)`, `errors < N%`,
    /// `rps > N`. Repeatable.
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Clone)]
pub struct QueryLoadArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Queries, one per line, or a BEIR `queries.jsonl` (its `text` fields); used in turn, so
    /// requests carry distinct queries. Default: a small built-in list.
    #[arg(long)]
    pub queries: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Search mode: hybrid, dense, lexical.
    #[arg(long, default_value = "hybrid")]
    pub mode: String,
    /// `query` only: ask for server-sent events and also time the first token.
    #[arg(long)]
    pub stream: bool,
}

#[derive(Args, Clone)]
pub struct IngestLoadArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Documents: a BEIR `corpus.jsonl` (`_id`, `title`, `text`) or a text file (one document per line).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Documents per request.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.trim().parse().map_err(|_| format!("`{s}` is not a duration (e.g. 250ms, 30s, 2m)"))?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: use us, ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What one request did.
struct Sample {
    /// HTTP status, or 0 when no answer came (connection refused, reset, timeout).
    status: u16,
    /// Streamed answers: until the first token.
    first_token: Option<Duration>,
    /// Ingest: documents acknowledged and the job to wait for.
    documents: usize,
    job: Option<String>,
}

impl Sample {
    /// A request with this status and nothing else to report (0: no answer came).
    fn status(status: u16) -> Sample {
        Sample { status, first_token: None, documents: 0, job: None }
    }
}

/// Makes request number `i`; `None` when there is nothing left to send (ingest: the corpus is in).
type Work = Arc<dyn Fn(u64) -> BoxFuture<'static, Option<Sample>> + Send + Sync>;

struct Recorder {
    latency: Histogram<u64>,
    first_token: Histogram<u64>,
    status: BTreeMap<String, u64>,
    documents: usize,
    jobs: Vec<String>,
}

impl Recorder {
    fn new() -> Recorder {
        let h = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds");
        Recorder { latency: h(), first_token: h(), status: BTreeMap::new(), documents: 0, jobs: Vec::new() }
    }

    fn record(&mut self, latency: Duration, expected_interval: Option<Duration>, s: Sample) {
        let us = latency.as_micros().clamp(1, 3_600_000_000) as u64;
        match expected_interval {
            Some(i) => self.latency.record_correct(us, i.as_micros().max(1) as u64).ok(),
            None => self.latency.record(us).ok(),
        };
        if let Some(t) = s.first_token {
            let _ = self.first_token.record(t.as_micros().clamp(1, 3_600_000_000) as u64);
        }
        let key = if s.status == 0 { "no_answer".to_owned() } else { s.status.to_string() };
        *self.status.entry(key).or_default() += 1;
        self.documents += s.documents;
        self.jobs.extend(s.job);
    }
}

/// Runs `work` under the chosen model and returns the measurements of the measured window.
async fn drive(args: &LoadArgs, work: Work, stop: Arc<AtomicUsize>) -> (Recorder, Duration, u64) {
    let rec = Arc::new(Mutex::new(Recorder::new()));
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let dropped = Arc::new(AtomicU64::new(0));
    match args.rate {
        Some(rate) => {
            let in_flight = Arc::new(AtomicUsize::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            let mut i: u64 = 0;
            loop {
                let scheduled = start + Duration::from_secs_f64(i as f64 / rate);
                if scheduled >= end || stop.load(Ordering::Relaxed) > 0 {
                    break;
                }
                tokio::time::sleep_until(scheduled).await;
                while tasks.try_join_next().is_some() {}
                if in_flight.load(Ordering::Relaxed) >= args.max_in_flight {
                    if scheduled >= measure_from {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (work, rec, in_flight) = (work.clone(), rec.clone(), in_flight.clone());
                tasks.spawn(async move {
                    let sample = work(i).await;
                    // From the scheduled start: time spent waiting to be sent is latency too.
                    let latency = scheduled.elapsed();
                    if let (Some(sample), true) = (sample, scheduled >= measure_from) {
                        rec.lock().await.record(latency, None, sample);
                    }
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
                i += 1;
            }
            while tasks.join_next().await.is_some() {}
        }
        None => {
            let mut tasks = tokio::task::JoinSet::new();
            for vu in 0..args.vus.max(1) {
                let (work, rec, stop) = (work.clone(), rec.clone(), stop.clone());
                let (think, pace) = (args.think, args.pace);
                // Users start spread over one pace (or think) interval: started together and kept
                // on an absolute pace, they would arrive as one burst per interval forever.
                let spread = if pace.is_zero() { think } else { pace };
                let offset = spread.mul_f64(vu as f64 / args.vus.max(1) as f64);
                tasks.spawn(async move {
                    tokio::time::sleep(offset).await;
                    let mut k: u64 = 0;
                    while Instant::now() < end && stop.load(Ordering::Relaxed) == 0 {
                        let t = Instant::now();
                        let Some(sample) = work((vu as u64) << 32 | k).await else { break };
                        let latency = t.elapsed();
                        // The interval the user meant to keep: a slower answer hid requests it
                        // would have sent meanwhile, which the histogram adds back.
                        let interval = (!pace.is_zero()).then_some(pace);
                        if t >= measure_from {
                            rec.lock().await.record(latency, interval, sample);
                        }
                        k += 1;
                        if !pace.is_zero() {
                            tokio::time::sleep_until(t + pace).await;
                        } else if !think.is_zero() {
                            tokio::time::sleep(think).await;
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let measured = Instant::now().saturating_duration_since(measure_from).min(args.duration.max(Duration::from_millis(1)));
    let rec = Arc::try_unwrap(rec).ok().expect("every request finished").into_inner();
    (rec, measured, dropped.load(Ordering::Relaxed))
}

fn http(args: &ServerArgs) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(k) = &args.api_key {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {k}").parse().context("the API key is not a valid header value")?);
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(4096)
        .build()?)
}

const BUILTIN_QUERIES: &[&str] = &[
    "how do I rotate keys", "what is the refund policy", "where are backups stored", "how long are logs kept",
    "who approves a new vendor", "what happens when a job fails", "how is data encrypted at rest",
    "what are the support hours", "how do I reset a password", "which regions are supported",
];

fn load_queries(path: Option<&PathBuf>) -> anyhow::Result<Vec<String>> {
    let Some(path) = path else { return Ok(BUILTIN_QUERIES.iter().map(|s| s.to_string()).collect()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let queries: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            if jsonl {
                serde_json::from_str::<Value>(l).ok().and_then(|v| v.get("text").and_then(Value::as_str).map(str::to_owned)).unwrap_or_default()
            } else {
                l.trim().to_owned()
            }
        })
        .filter(|q| !q.is_empty())
        .collect();
    if queries.is_empty() {
        bail!("{} holds no queries", path.display());
    }
    Ok(queries)
}

fn load_corpus(path: &PathBuf) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let mut docs = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        if jsonl {
            let v: Value = serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))?;
            let id = v.get("_id").or_else(|| v.get("id")).and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| format!("doc-{i}"));
            let title = v.get("title").and_then(Value::as_str).filter(|t| !t.is_empty());
            docs.push(json!({"id": id, "title": title, "text": v.get("text").and_then(Value::as_str).unwrap_or_default()}));
        } else {
            docs.push(json!({"id": format!("line-{i}"), "text": line}));
        }
    }
    Ok(docs)
}

/// An answer's status; a streamed one is read to its end (and its first token timed).
async fn finish(resp: Result<reqwest::Response, reqwest::Error>, started: Instant, stream: bool) -> Sample {
    let mut s = Sample::status(0);
    let Ok(resp) = resp else { return s };
    s.status = resp.status().as_u16();
    if stream && resp.status().is_success() {
        let mut first = None;
        let read = crate::client::read_sse(resp, |e| {
            if first.is_none() && e.event == "token" {
                first = Some(started.elapsed());
            }
            if e.event == "error" {
                return Ok(false);
            }
            Ok(e.event != "done")
        })
        .await;
        s.first_token = first;
        if read.is_err() {
            s.status = 0;
        }
    } else if resp.bytes().await.is_err() {
        s.status = 0;
    }
    s
}

pub async fn search(a: QueryLoadArgs) -> anyhow::Result<ExitCode> {
    queries_run("search", a).await
}

pub async fn query(a: QueryLoadArgs) -> anyhow::Result<ExitCode> {
    queries_run(if a.stream { "query (streamed)" } else { "query" }, a).await
}

async fn queries_run(scenario: &'static str, a: QueryLoadArgs) -> anyhow::Result<ExitCode> {
    let queries = Arc::new(load_queries(a.queries.as_ref())?);
    let client = http(&a.load.server)?;
    let base = a.load.server.server.trim_end_matches('/').to_owned();
    let is_search = scenario == "search";
    let url = format!("{base}/api/v1/collections/{}/{}", a.load.collection, if is_search { "search" } else { "query" });
    let (top_k, mode, stream) = (a.top_k, a.mode.clone(), a.stream);
    // Distinct queries: each request takes the next one (by request number, spread over users).
    let next = Arc::new(AtomicU64::new(0));
    let work: Work = Arc::new(move |_i| {
        let n = next.fetch_add(1, Ordering::Relaxed) as usize;
        let q = queries[n % queries.len()].clone();
        let body = if is_search { json!({"query": q, "top_k": top_k, "mode": mode}) } else { json!({"question": q, "stream": stream}) };
        let r = client.post(&url).json(&body);
        Box::pin(async move {
            let t = Instant::now();
            Some(finish(r.send().await, t, stream).await)
        })
    });
    let stop = Arc::new(AtomicUsize::new(0));
    let (rec, measured, dropped) = drive(&a.load, work, stop).await;
    report(scenario, &a.load, rec, measured, dropped, None)
}

pub async fn ingest(a: IngestLoadArgs) -> anyhow::Result<ExitCode> {
    let docs = load_corpus(&a.corpus)?;
    let total = docs.len();
    let batches: Arc<Vec<Value>> = Arc::new(docs.chunks(a.batch.max(1)).map(|c| Value::Array(c.to_vec())).collect());
    let client = http(&a.load.server)?;
    let base = a.load.server.server.trim_end_matches('/').to_owned();
    let cli = crate::client::Client::new(&a.load.server)?;
    cli.ensure_collection(&a.load.collection).await?;
    let url = format!("{base}/api/v1/collections/{}/documents", a.load.collection);
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicUsize::new(0));
    let stop_w = stop.clone();
    let started = Instant::now();
    let work: Work = Arc::new(move |_i| {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let Some(batch) = batches.get(n).cloned() else {
            // The corpus is in: no more requests.
            stop_w.store(1, Ordering::Relaxed);
            return Box::pin(async { None }) as BoxFuture<'static, Option<Sample>>;
        };
        let count = batch.as_array().map_or(0, Vec::len);
        let r = client.post(&url).header("Idempotency-Key", format!("bench-{n}")).json(&json!({"documents": batch}));
        Box::pin(async move {
            let Ok(resp) = r.send().await else { return Some(Sample::status(0)) };
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let job = body.get("job_id").and_then(Value::as_str).map(str::to_owned);
            let documents = if (200..300).contains(&status) { count } else { 0 };
            Some(Sample { status, first_token: None, documents, job })
        })
    });
    let (mut rec, measured, dropped) = drive(&a.load, work, stop).await;
    // Acknowledged is not ingested: wait for every job, then count documents per second end to end.
    let mut failed_jobs = 0;
    for id in &rec.jobs {
        loop {
            let job = cli.job(id).await?;
            match job["status"].as_str() {
                Some("done") => break,
                Some("failed") => {
                    failed_jobs += 1;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    let elapsed = started.elapsed();
    let ingest = json!({
        "corpus_documents": total,
        "documents_acknowledged": rec.documents,
        "jobs": rec.jobs.len(),
        "jobs_failed": failed_jobs,
        "seconds_to_all_jobs_done": round(elapsed.as_secs_f64(), 2),
        "documents_per_s": round(rec.documents as f64 / elapsed.as_secs_f64().max(1e-9), 1),
    });
    rec.jobs.clear();
    report("ingest", &a.load, rec, measured, dropped, Some(ingest))
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| round(us as f64 / 1000.0, 3);
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p95": ms(h.value_at_quantile(0.95)),
        "p99": ms(h.value_at_quantile(0.99)),
        "max": ms(h.max()),
        "mean": round(h.mean() / 1000.0, 3),
    })
}

fn report(scenario: &str, a: &LoadArgs, rec: Recorder, measured: Duration, dropped: u64, ingest: Option<Value>) -> anyhow::Result<ExitCode> {
    let requests: u64 = rec.status.values().sum();
    let ok: u64 = rec.status.iter().filter(|(k, _)| k.starts_with('2')).map(|(_, v)| *v).sum();
    let errors = if requests == 0 { 0.0 } else { (requests - ok) as f64 / requests as f64 };
    let rps = requests as f64 / measured.as_secs_f64().max(1e-9);
    let latency = percentiles(&rec.latency);
    let mut result = json!({
        "scenario": scenario,
        "model": if a.rate.is_some() { "open" } else { "closed" },
        "rate": a.rate,
        "vus": if a.rate.is_some() { None } else { Some(a.vus) },
        "think_ms": if a.rate.is_some() || !a.pace.is_zero() { None } else { Some(a.think.as_secs_f64() * 1000.0) },
        "pace_ms": if a.rate.is_some() || a.pace.is_zero() { None } else { Some(a.pace.as_secs_f64() * 1000.0) },
        "duration_s": round(measured.as_secs_f64(), 2),
        "requests": requests,
        "rps": round(rps, 1),
        "latency_ms": latency,
        "status": rec.status,
        "errors": errors,
        "dropped": dropped,
    });
    if !rec.first_token.is_empty() {
        result["first_token_ms"] = percentiles(&rec.first_token);
    }
    if let Some(i) = ingest {
        result["ingest"] = i;
    }
    let mut failed = false;
    let mut checks = Vec::new();
    for t in &a.thresholds {
        let (ok, value) = check_threshold(t, &result).with_context(|| format!("--threshold {t}"))?;
        failed |= !ok;
        checks.push(json!({"threshold": t, "ok": ok, "value": value}));
    }
    result["thresholds"] = Value::Array(checks);

    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print_text(&result);
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn print_text(r: &Value) {
    let model = match r["model"].as_str() {
        Some("open") => format!("open model, {} req/s", r["rate"]),
        _ if r["pace_ms"].is_number() => format!("closed model, {} users, one request per {} ms each", r["vus"], r["pace_ms"]),
        _ => format!("closed model, {} users, think {} ms", r["vus"], r["think_ms"]),
    };
    println!("ragd bench {} — {model}, {} s measured", r["scenario"].as_str().unwrap_or(""), r["duration_s"]);
    println!("  requests {}  ({} /s)  errors {:.3}%  dropped {}", r["requests"], r["rps"], r["errors"].as_f64().unwrap_or(0.0) * 100.0, r["dropped"]);
    let statuses: Vec<String> = r["status"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k}: {v}")).collect()).unwrap_or_default();
    println!("  status   {}", statuses.join("  "));
    for (name, key) in [("latency", "latency_ms"), ("1st token", "first_token_ms")] {
        if let Some(p) = r.get(key).filter(|p| p.is_object()) {
            println!("  {name:<9} p50 {} ms  p90 {} ms  p95 {} ms  p99 {} ms  max {} ms  mean {} ms", p["p50"], p["p90"], p["p95"], p["p99"], p["max"], p["mean"]);
        }
    }
    if let Some(i) = r.get("ingest") {
        println!(
            "  ingest   {} documents acknowledged in {} jobs ({} failed); all done after {} s: {} documents/s",
            i["documents_acknowledged"], i["jobs"], i["jobs_failed"], i["seconds_to_all_jobs_done"], i["documents_per_s"]
        );
    }
    for t in r["thresholds"].as_array().into_iter().flatten() {
        let mark = if t["ok"].as_bool() == Some(true) { "✓" } else { "✗" };
        println!("  {mark} {} (was {})", t["threshold"].as_str().unwrap_or(""), t["value"]);
    }
}

/// `p95<10ms`, `p99<=20ms`, `max<1s`, `mean<5ms`, `errors<0.1%`, `rps>200`: whether it holds, and the value.
pub fn check_threshold(expr: &str, result: &Value) -> anyhow::Result<(bool, f64)> {
    let expr: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let (at, op) = ["<=", ">=", "<", ">"].iter().find_map(|op| expr.find(op).map(|i| (i, *op))).context("use <, <=, > or >=")?;
    let (metric, bound) = (&expr[..at], &expr[at + op.len()..]);
    let value = match metric {
        "p50" | "p90" | "p95" | "p99" | "max" | "mean" => result["latency_ms"][metric].as_f64().unwrap_or(f64::INFINITY),
        "errors" => result["errors"].as_f64().unwrap_or(1.0),
        "rps" => result["rps"].as_f64().unwrap_or(0.0),
        other => bail!("unknown metric `{other}` (p50, p90, p95, p99, max, mean, errors, rps)"),
    };
    let limit = if metric == "errors" {
        bound.strip_suffix('%').map(|p| p.parse::<f64>().map(|x| x / 100.0)).unwrap_or_else(|| bound.parse::<f64>()).context("errors take a fraction or a percentage")?
    } else if metric == "rps" {
        bound.parse::<f64>().context("rps takes a number")?
    } else {
        parse_duration(bound).map_err(anyhow::Error::msg)?.as_secs_f64() * 1000.0
    };
    let ok = match op {
        "<" => value < limit,
        "<=" => value <= limit,
        ">" => value > limit,
        _ => value >= limit,
    };
    Ok((ok, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_thresholds_parse_and_compare() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("fast").is_err());
        let r = json!({"latency_ms": {"p95": 6.2, "max": 40.0}, "errors": 0.0005, "rps": 220.0});
        assert_eq!(check_threshold("p95<6.77ms", &r).unwrap(), (true, 6.2));
        assert_eq!(check_threshold("p95 < 6ms", &r).unwrap().0, false);
        assert!(check_threshold("max<=0.04s", &r).unwrap().0);
        assert!(check_threshold("errors<0.1%", &r).unwrap().0);
        assert!(!check_threshold("errors<0.01%", &r).unwrap().0);
        assert!(check_threshold("rps>=220", &r).unwrap().0);
        assert!(check_threshold("p42<1ms", &r).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_open_model_counts_a_stall_from_each_requests_scheduled_start() {
        // 100 req/s for 1 s against a server that takes 1 ms, except one stall of 200 ms that
        // also holds every request scheduled during it (one connection): those are late.
        let gate = Arc::new(tokio::sync::Mutex::new(()));
        let work: Work = Arc::new(move |i| {
            let gate = gate.clone();
            Box::pin(async move {
                let _one_at_a_time = gate.lock().await;
                tokio::time::sleep(Duration::from_millis(if i == 10 { 200 } else { 1 })).await;
                Some(Sample::status(200))
            })
        });
        let args = LoadArgs {
            server: ServerArgs { server: String::new(), api_key: None },
            collection: String::new(),
            rate: Some(100.0),
            vus: 1,
            think: Duration::ZERO,
            pace: Duration::ZERO,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            max_in_flight: 1000,
            thresholds: vec![],
            json: false,
        };
        let (rec, _, dropped) = drive(&args, work, Arc::new(AtomicUsize::new(0))).await;
        assert_eq!((rec.latency.len(), dropped), (100, 0));
        // About 20 requests were due during the stall; each is timed from its own scheduled start,
        // so p50 stays at 1 ms but p90 is about 110 ms (timing from the actual send would hide it).
        assert!(rec.latency.value_at_quantile(0.5) < 5_000, "p50 {} us", rec.latency.value_at_quantile(0.5));
        assert!(rec.latency.value_at_quantile(0.9) > 50_000, "p90 {} us", rec.latency.value_at_quantile(0.9));
        assert!(rec.latency.max() >= 200_000);
    }
}
