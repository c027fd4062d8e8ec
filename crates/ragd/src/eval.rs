//! `ragd eval`: ingests a BEIR-format dataset (corpus.jsonl, queries.jsonl, qrels/test.tsv) and scores
//! lexical, dense and hybrid retrieval with nDCG@10, Recall@10 and MRR@10 — the same definitions as
//! `shared/bench/beir_reference.py`, so the numbers compare. In-process on a temporary data folder
//! unless `--server` is given. Also reports ingest throughput and search latency.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use ragd_core::engine::{DocumentBody, Engine, NewCollection, NewDocument, SearchRequest};
use ragd_core::settings::Settings;
use ragd_core::types::SearchMode;
use serde_json::{Value, json};

use crate::client::Client;

const K: usize = 10;
/// Chunks fetched per query before collapsing to documents (a document can have several chunks).
const CANDIDATE_CHUNKS: usize = 50;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: Option<EvalCommand>,
    /// BEIR-format folder.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Print the scores as JSON.
    #[arg(long)]
    json: bool,
    /// Evaluate against a running server instead of in-process.
    #[arg(long)]
    server: Option<String>,
    #[arg(long, env = "RAGD_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Documents per ingest request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Score answers on a question set in qa-dev's format (questions.jsonl + docs/), in-process.
    Answers(crate::eval_answers::AnswersArgs),
}

struct Dataset {
    corpus: Vec<Value>,
    queries: Vec<(String, String)>,
    qrels: HashMap<String, HashMap<String, i64>>,
}

enum Backend {
    // The TempDir is held so the data folder outlives the engine using it.
    Local(Arc<Engine>, #[allow(dead_code)] tempfile::TempDir),
    Remote(Client),
}

impl Backend {
    async fn submit(&self, collection: &str, docs: Vec<Value>) -> anyhow::Result<String> {
        match self {
            Backend::Local(engine, _) => {
                let docs = docs
                    .into_iter()
                    .map(|d| NewDocument {
                        id: d["id"].as_str().map(str::to_owned),
                        title: d["title"].as_str().map(str::to_owned),
                        metadata: Default::default(),
                        body: DocumentBody::Text(d["text"].as_str().unwrap_or_default().to_owned()),
                    })
                    .collect();
                Ok(engine.submit(collection, docs, None).await?.id)
            }
            Backend::Remote(c) => {
                let v = c.upload_json(collection, docs, &format!("eval-{}", uuid_like())).await?;
                Ok(v["job_id"].as_str().unwrap_or_default().to_owned())
            }
        }
    }

    async fn wait(&self, job: &str) -> anyhow::Result<()> {
        loop {
            let (status, error) = match self {
                Backend::Local(engine, _) => {
                    let j = engine.wait_job(job, Duration::from_secs(600)).await?;
                    (j.status.as_str().to_owned(), j.error.map(|e| e.message))
                }
                Backend::Remote(c) => {
                    let j = c.job(job).await?;
                    (j["status"].as_str().unwrap_or("").to_owned(), j.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
                }
            };
            match status.as_str() {
                "done" => return Ok(()),
                "failed" => bail!("ingest job {job} failed: {}", error.unwrap_or_default()),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn search(&self, collection: &str, query: &str, mode: SearchMode) -> anyhow::Result<Vec<String>> {
        let hits: Vec<String> = match self {
            Backend::Local(engine, _) => engine
                .search(collection, SearchRequest { query: query.to_owned(), top_k: Some(CANDIDATE_CHUNKS), mode, filter: None })
                .await?
                .results
                .into_iter()
                .map(|h| h.doc_id)
                .collect(),
            Backend::Remote(c) => {
                let mode = serde_json::to_value(mode)?.as_str().unwrap_or("hybrid").to_owned();
                let v = c.search(collection, query, CANDIDATE_CHUNKS, &mode).await?;
                v["results"].as_array().into_iter().flatten().filter_map(|r| r["doc_id"].as_str().map(str::to_owned)).collect()
            }
        };
        // Collapse chunks to documents, best rank first.
        let mut seen = HashSet::new();
        Ok(hits.into_iter().filter(|d| seen.insert(d.clone())).take(K).collect())
    }

    /// Drops the evaluation collection. In-process this also closes its shard while the temporary
    /// folder still exists (a shard flushes when closed).
    async fn cleanup(&self, collection: &str) {
        let result = match self {
            Backend::Local(engine, _) => engine.delete_collection(collection).await.map_err(anyhow::Error::from),
            Backend::Remote(c) => c.delete_collection(collection).await,
        };
        if let Err(e) = result {
            eprintln!("warning: could not delete the evaluation collection `{collection}`: {e:#}");
        }
    }
}

fn uuid_like() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0))
}

fn load(dir: &Path) -> anyhow::Result<Dataset> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).with_context(|| format!("reading {}", dir.join(name).display()));
    let corpus = read("corpus.jsonl")?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)?;
            let id = v["_id"].as_str().map(str::to_owned).or_else(|| v["_id"].as_i64().map(|n| n.to_string())).context("corpus line without _id")?;
            let mut doc = json!({"id": id, "text": v["text"].as_str().unwrap_or_default()});
            if let Some(t) = v["title"].as_str().filter(|t| !t.is_empty()) {
                doc["title"] = json!(t);
            }
            Ok(doc)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut qrels: HashMap<String, HashMap<String, i64>> = HashMap::new();
    for (i, line) in read("qrels/test.tsv")?.lines().enumerate() {
        let parts: Vec<&str> = line.split('\t').collect();
        if parts.len() < 3 {
            continue;
        }
        let Ok(score) = parts[parts.len() - 1].trim().parse::<i64>() else {
            if i == 0 {
                continue; // header
            }
            bail!("qrels line {}: bad score", i + 1);
        };
        qrels.entry(parts[0].to_owned()).or_default().insert(parts[1].to_owned(), score);
    }
    let queries = read("queries.jsonl")?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|q| Some((q["_id"].as_str()?.to_owned(), q["text"].as_str()?.to_owned())))
        .filter(|(id, _)| qrels.contains_key(id))
        .collect();
    Ok(Dataset { corpus, queries, qrels })
}

/// nDCG@k, Recall@k and MRR@k of one ranking, exactly as beir_reference.py computes them.
fn metrics(ranked: &[String], rels: &HashMap<String, i64>) -> (f64, f64, f64) {
    let gain = |g: i64| 2f64.powi(g as i32) - 1.0;
    let dcg: f64 = ranked.iter().take(K).enumerate().map(|(i, d)| gain(*rels.get(d).unwrap_or(&0)) / ((i + 2) as f64).log2()).sum();
    let mut ideal: Vec<i64> = rels.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal.iter().take(K).enumerate().map(|(i, g)| gain(*g) / ((i + 2) as f64).log2()).sum();
    let relevant: HashSet<&String> = rels.iter().filter(|(_, g)| **g > 0).map(|(d, _)| d).collect();
    let hits = ranked.iter().take(K).filter(|d| relevant.contains(d)).count();
    let recall = if relevant.is_empty() { 0.0 } else { hits as f64 / relevant.len() as f64 };
    let mrr = ranked.iter().take(K).position(|d| relevant.contains(d)).map(|i| 1.0 / (i + 1) as f64).unwrap_or(0.0);
    (if idcg > 0.0 { dcg / idcg } else { 0.0 }, recall, mrr)
}

fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub async fn run(args: EvalArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    if let Some(EvalCommand::Answers(a)) = args.command {
        return crate::eval_answers::run(a, settings).await;
    }
    let Some(dataset) = args.dataset.clone() else { bail!("--dataset is required (or `ragd eval answers --dataset DIR`)") };
    let data = load(&dataset)?;
    if data.queries.is_empty() {
        bail!("no judged queries in {}", dataset.display());
    }
    let backend = match &args.server {
        Some(url) => Backend::Remote(Client::new(&crate::ServerArgs { server: url.clone(), api_key: args.api_key.clone() })?),
        None => {
            let tmp = tempfile::tempdir()?;
            let mut s = settings.clone();
            s.data_dir = tmp.path().to_owned();
            Backend::Local(crate::app::engine(s, false).await?, tmp)
        }
    };
    let collection = format!("eval-{}", &uuid_like()[..8.min(uuid_like().len())]);
    match &backend {
        Backend::Local(engine, _) => {
            engine.create_collection(NewCollection { name: collection.clone(), ..Default::default() }, "default").await?;
        }
        Backend::Remote(c) => c.ensure_collection(&collection).await?,
    }

    eprintln!("ingesting {} passages…", data.corpus.len());
    let started = Instant::now();
    let mut jobs = Vec::new();
    for batch in data.corpus.chunks(args.batch.max(1)) {
        jobs.push(backend.submit(&collection, batch.to_vec()).await?);
    }
    for j in &jobs {
        backend.wait(j).await?;
    }
    let ingest_s = started.elapsed().as_secs_f64();
    let passages_per_s = data.corpus.len() as f64 / ingest_s;
    eprintln!("ingested in {ingest_s:.1} s ({passages_per_s:.1} passages/s); running {} queries × 3 modes…", data.queries.len());

    let mut out = serde_json::Map::new();
    let mut latencies = serde_json::Map::new();
    for (name, mode) in [("lexical", SearchMode::Lexical), ("dense", SearchMode::Dense), ("hybrid", SearchMode::Hybrid)] {
        let (mut n, mut r, mut m) = (0.0, 0.0, 0.0);
        let mut times = Vec::with_capacity(data.queries.len());
        for (qid, text) in &data.queries {
            let t = Instant::now();
            let ranked = backend.search(&collection, text, mode).await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            let (a, b, c) = metrics(&ranked, &data.qrels[qid]);
            n += a;
            r += b;
            m += c;
        }
        let q = data.queries.len() as f64;
        out.insert(name.into(), json!({"ndcg@10": round4(n / q), "recall@10": round4(r / q), "mrr@10": round4(m / q), "queries": data.queries.len()}));
        times.sort_by(f64::total_cmp);
        latencies.insert(name.into(), json!({"p50_ms": round4(percentile(&times, 50.0)), "p95_ms": round4(percentile(&times, 95.0))}));
    }
    backend.cleanup(&collection).await;
    out.insert(
        "timings".into(),
        json!({"passages": data.corpus.len(), "ingest_seconds": round4(ingest_s), "passages_per_second": round4(passages_per_s), "search_latency": latencies}),
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    } else {
        println!("{:<8} {:>8} {:>10} {:>8}", "mode", "nDCG@10", "Recall@10", "MRR@10");
        for mode in ["lexical", "dense", "hybrid"] {
            let v = &out[mode];
            println!("{:<8} {:>8.4} {:>10.4} {:>8.4}", mode, v["ndcg@10"].as_f64().unwrap_or(0.0), v["recall@10"].as_f64().unwrap_or(0.0), v["mrr@10"].as_f64().unwrap_or(0.0));
        }
        println!("ingest: {passages_per_s:.1} passages/s; search latency in {}", serde_json::to_string(&out["timings"]["search_latency"])?);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_match_the_reference_definitions() {
        let rels: HashMap<String, i64> = [("a".to_string(), 2), ("b".to_string(), 1), ("z".to_string(), 0)].into();
        let perfect = vec!["a".to_string(), "b".to_string()];
        let (n, r, m) = metrics(&perfect, &rels);
        assert!((n - 1.0).abs() < 1e-12 && (r - 1.0).abs() < 1e-12 && (m - 1.0).abs() < 1e-12);
        let late = vec!["x".to_string(), "b".to_string()];
        let (n, r, m) = metrics(&late, &rels);
        // dcg = 1/log2(3); idcg = 3/1 + 1/log2(3)
        let expect = (1.0 / 3f64.log2()) / (3.0 + 1.0 / 3f64.log2());
        assert!((n - expect).abs() < 1e-12, "{n} vs {expect}");
        assert!((r - 0.5).abs() < 1e-12);
        assert!((m - 0.5).abs() < 1e-12);
    }
}
