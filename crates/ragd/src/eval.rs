//! `ragd eval`: scores lexical, dense and hybrid retrieval (and hybrid with the reranker) with
//! nDCG@10, Recall@10, MRR@10 and Hit@3, side by side, on either
//! - a BEIR-format dataset (corpus.jsonl, queries.jsonl, qrels/test.tsv), documents judged — the same
//!   definitions as `shared/bench/beir_reference.py`, so the numbers compare; or
//! - a question set in qa-dev's format (questions.jsonl + docs/), passages judged: a passage is
//!   relevant when it belongs to the question's document and holds one of its expected answers (the
//!   "answer-bearing passage"); unanswerable questions are left out.
//!
//! In-process on a temporary data folder unless `--server` is given. Also reports ingest throughput
//! and search latency; `--per-query` lists where the modes disagree, `--runs FILE` writes every
//! query's ranked candidates per mode (JSON lines) for analysis outside ragd.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
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
/// Candidates written per query and mode by `--runs`.
const RUN_DEPTH: usize = 100;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub command: Option<EvalCommand>,
    /// BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/test.tsv), or a question set in
    /// qa-dev's format (questions.jsonl + docs/), scored by its answer-bearing passages.
    #[arg(long)]
    dataset: Option<PathBuf>,
    /// Print the scores as JSON.
    #[arg(long)]
    json: bool,
    /// List every query with the rank of its first relevant result in each mode ('-' = not in the
    /// top 10), marking the queries where the modes disagree.
    #[arg(long)]
    per_query: bool,
    /// Write each query's ranked candidates (chunk, document, score, text) per mode as JSON lines.
    #[arg(long, value_name = "FILE")]
    runs: Option<PathBuf>,
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

/// What is judged: whole documents (BEIR qrels) or passages (qa-dev's answer-bearing chunks).
#[derive(Clone, Copy, PartialEq)]
enum Unit {
    Document,
    Chunk,
}

struct Dataset {
    unit: Unit,
    /// BEIR: JSON documents; qa-dev: files.
    corpus: Vec<Value>,
    files: Vec<PathBuf>,
    queries: Vec<(String, String)>,
    qrels: HashMap<String, HashMap<String, i64>>,
    /// qa-dev: each question's document (file name) and expected answers, judged once ingested.
    answers: HashMap<String, (String, Vec<String>)>,
}

/// The modes scored, in the order shown: name, search mode, rerank.
const MODES: [(&str, SearchMode, bool); 4] =
    [("lexical", SearchMode::Lexical, false), ("dense", SearchMode::Dense, false), ("hybrid", SearchMode::Hybrid, false), ("rerank", SearchMode::Hybrid, true)];

/// One search hit as the evaluation sees it.
struct Hit {
    chunk_id: String,
    doc_id: String,
    score: f64,
    text: String,
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

    async fn submit_files(&self, collection: &str, files: &[PathBuf]) -> anyhow::Result<String> {
        match self {
            Backend::Local(engine, _) => {
                let mut docs = Vec::new();
                for f in files {
                    let name = file_name(f);
                    docs.push(NewDocument {
                        id: Some(name.clone()),
                        title: None,
                        metadata: Default::default(),
                        body: DocumentBody::File { filename: Some(name), content_type: None, bytes: std::fs::read(f)? },
                    });
                }
                Ok(engine.submit(collection, docs, None).await?.id)
            }
            Backend::Remote(_) => bail!("a question set is evaluated in-process only (drop --server)"),
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

    /// Ranked chunks, best first.
    async fn search(&self, collection: &str, query: &str, mode: SearchMode, rerank: bool, top_k: usize) -> anyhow::Result<Vec<Hit>> {
        Ok(match self {
            Backend::Local(engine, _) => engine
                .search(collection, SearchRequest { query: query.to_owned(), top_k: Some(top_k), mode, filter: None, rerank: Some(rerank), ..Default::default() })
                .await?
                .results
                .into_iter()
                .map(|h| Hit { chunk_id: h.chunk_id, doc_id: h.doc_id, score: h.score.into(), text: h.text })
                .collect(),
            Backend::Remote(c) => {
                let mode = serde_json::to_value(mode)?.as_str().unwrap_or("hybrid").to_owned();
                let v = c.search(collection, query, top_k, &mode, Some(rerank)).await?;
                v["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| Hit {
                        chunk_id: r["chunk_id"].as_str().unwrap_or_default().to_owned(),
                        doc_id: r["doc_id"].as_str().unwrap_or_default().to_owned(),
                        score: r["score"].as_f64().unwrap_or(0.0),
                        text: r["text"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            }
        })
    }

    /// Every chunk of the collection (qa-dev judging: which passages hold the answer).
    async fn all_chunks(&self, collection: &str) -> anyhow::Result<Vec<(String, String, String)>> {
        let Backend::Local(engine, _) = self else { bail!("in-process only") };
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (docs, next) = engine.list_documents(collection, after.as_deref(), 100).await?;
            for d in docs {
                let mut from = 0;
                loop {
                    let (chunks, total) = engine.document_chunks(collection, &d.id, from, 200).await?;
                    let n = chunks.len() as u32;
                    out.extend(chunks.into_iter().map(|c| (c.chunk_id, c.doc_id, c.text)));
                    from += n;
                    if n == 0 || from >= total {
                        break;
                    }
                }
            }
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok(out)
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

fn file_name(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("document").to_owned()
}

fn load(dir: &Path) -> anyhow::Result<Dataset> {
    if dir.join("questions.jsonl").is_file() {
        return load_questions(dir);
    }
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
    Ok(Dataset { unit: Unit::Document, corpus, files: Vec::new(), queries, qrels, answers: HashMap::new() })
}

/// A qa-dev-format set: the answerable questions, judged once the documents are chunked.
fn load_questions(dir: &Path) -> anyhow::Result<Dataset> {
    let text = std::fs::read_to_string(dir.join("questions.jsonl")).context("reading questions.jsonl")?;
    let mut queries = Vec::new();
    let mut answers = HashMap::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let v: Value = serde_json::from_str(line).with_context(|| format!("questions.jsonl line {}", i + 1))?;
        let (Some(q), Some(doc)) = (v["q"].as_str(), v["doc"].as_str()) else { continue };
        let expect: Vec<String> = v["expect"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
        let id = format!("q{:02}", i + 1);
        queries.push((id.clone(), q.to_owned()));
        answers.insert(id, (doc.to_owned(), expect));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("docs"))
        .with_context(|| format!("reading {}", dir.join("docs").display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(Dataset { unit: Unit::Chunk, corpus: Vec::new(), files, queries, qrels: HashMap::new(), answers })
}

/// qa-dev judging: a chunk is relevant to a question when it is in the question's document and
/// holds one of the expected answers (compared as qa-dev's check.py compares).
fn judge_chunks(data: &mut Dataset, chunks: &[(String, String, String)]) {
    for (qid, (doc, expect)) in &data.answers {
        let stem = Path::new(doc).file_stem().and_then(|s| s.to_str()).unwrap_or(doc).to_lowercase();
        let rels = data.qrels.entry(qid.clone()).or_default();
        for (chunk_id, doc_id, text) in chunks {
            if doc_id.to_lowercase().contains(&stem) && expect.iter().any(|e| crate::eval_answers::contains(&crate::eval_answers::norm(text), e)) {
                rels.insert(chunk_id.clone(), 1);
            }
        }
    }
}

/// nDCG@k, Recall@k, MRR@k and Hit@3 of one ranking, the first three exactly as beir_reference.py
/// computes them.
fn metrics(ranked: &[String], rels: &HashMap<String, i64>) -> [f64; 4] {
    let gain = |g: i64| 2f64.powi(g as i32) - 1.0;
    let dcg: f64 = ranked.iter().take(K).enumerate().map(|(i, d)| gain(*rels.get(d).unwrap_or(&0)) / ((i + 2) as f64).log2()).sum();
    let mut ideal: Vec<i64> = rels.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal.iter().take(K).enumerate().map(|(i, g)| gain(*g) / ((i + 2) as f64).log2()).sum();
    let relevant: HashSet<&String> = rels.iter().filter(|(_, g)| **g > 0).map(|(d, _)| d).collect();
    let hits = ranked.iter().take(K).filter(|d| relevant.contains(d)).count();
    let recall = if relevant.is_empty() { 0.0 } else { hits as f64 / relevant.len() as f64 };
    let first = ranked.iter().take(K).position(|d| relevant.contains(d));
    let mrr = first.map(|i| 1.0 / (i + 1) as f64).unwrap_or(0.0);
    let hit3 = if first.is_some_and(|i| i < 3) { 1.0 } else { 0.0 };
    [if idcg > 0.0 { dcg / idcg } else { 0.0 }, recall, mrr, hit3]
}

/// The judged units of a ranking: documents (best chunk first, each once) or chunks.
fn ranked_units(hits: &[Hit], unit: Unit) -> Vec<String> {
    match unit {
        Unit::Chunk => hits.iter().take(K).map(|h| h.chunk_id.clone()).collect(),
        Unit::Document => {
            let mut seen = HashSet::new();
            hits.iter().filter(|h| seen.insert(h.doc_id.clone())).take(K).map(|h| h.doc_id.clone()).collect()
        }
    }
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
    let mut data = load(&dataset)?;
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

    let units = if data.unit == Unit::Document { data.corpus.len() } else { data.files.len() };
    eprintln!("ingesting {units} {}…", if data.unit == Unit::Document { "passages" } else { "documents" });
    let started = Instant::now();
    let mut jobs = Vec::new();
    if data.unit == Unit::Document {
        for batch in data.corpus.chunks(args.batch.max(1)) {
            jobs.push(backend.submit(&collection, batch.to_vec()).await?);
        }
    } else {
        jobs.push(backend.submit_files(&collection, &data.files).await?);
    }
    for j in &jobs {
        backend.wait(j).await?;
    }
    let ingest_s = started.elapsed().as_secs_f64();
    let passages_per_s = units as f64 / ingest_s;
    if data.unit == Unit::Chunk {
        let chunks = backend.all_chunks(&collection).await?;
        judge_chunks(&mut data, &chunks);
        let unjudged: Vec<String> = data.queries.iter().filter(|(q, _)| data.qrels.get(q).is_none_or(HashMap::is_empty)).map(|(q, _)| q.clone()).collect();
        if !unjudged.is_empty() {
            eprintln!("note: no passage holds an expected answer for {} (left out): {}", unjudged.len(), unjudged.join(", "));
            data.queries.retain(|(q, _)| !unjudged.contains(q));
        }
    }
    eprintln!("ingested in {ingest_s:.1} s ({passages_per_s:.1} {}/s); running {} queries × {} modes…", if data.unit == Unit::Document { "passages" } else { "documents" }, data.queries.len(), MODES.len());

    let mut runs = match &args.runs {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)),
        None => None,
    };
    let depth = if data.unit == Unit::Document { CANDIDATE_CHUNKS } else { K };
    let mut out = serde_json::Map::new();
    let mut latencies = serde_json::Map::new();
    // Per query: the rank (1-based) of its first relevant unit in each mode.
    let mut firsts: Vec<Vec<Option<usize>>> = vec![Vec::new(); data.queries.len()];
    for (name, mode, rerank) in MODES {
        let mut sums = [0.0; 4];
        let mut times = Vec::with_capacity(data.queries.len());
        for (i, (qid, text)) in data.queries.iter().enumerate() {
            let t = Instant::now();
            let hits = backend.search(&collection, text, mode, rerank, depth).await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            let ranked = ranked_units(&hits, data.unit);
            let rels = &data.qrels[qid];
            let m = metrics(&ranked, rels);
            for (s, v) in sums.iter_mut().zip(m) {
                *s += v;
            }
            firsts[i].push(ranked.iter().position(|u| rels.get(u).is_some_and(|g| *g > 0)).map(|p| p + 1));
            if let Some(w) = runs.as_mut() {
                let deep = if rerank || mode == SearchMode::Hybrid { hits } else { backend.search(&collection, text, mode, false, RUN_DEPTH).await? };
                let line = json!({"qid": qid, "query": text, "mode": name, "relevant": rels,
                    "hits": deep.iter().map(|h| json!({"chunk_id": h.chunk_id, "doc_id": h.doc_id, "score": h.score, "text": h.text})).collect::<Vec<_>>()});
                writeln!(w, "{line}")?;
            }
        }
        let q = data.queries.len() as f64;
        out.insert(
            name.into(),
            json!({"ndcg@10": round4(sums[0] / q), "recall@10": round4(sums[1] / q), "mrr@10": round4(sums[2] / q), "hit@3": round4(sums[3] / q), "queries": data.queries.len()}),
        );
        times.sort_by(f64::total_cmp);
        latencies.insert(name.into(), json!({"p50_ms": round4(percentile(&times, 50.0)), "p95_ms": round4(percentile(&times, 95.0))}));
    }
    if let Some(mut w) = runs {
        w.flush()?;
    }
    backend.cleanup(&collection).await;
    out.insert(
        "timings".into(),
        json!({"passages": units, "ingest_seconds": round4(ingest_s), "passages_per_second": round4(passages_per_s), "search_latency": latencies}),
    );
    out.insert("judged".into(), json!(if data.unit == Unit::Document { "documents" } else { "answer-bearing passages" }));
    if args.per_query {
        let per: Vec<Value> = data
            .queries
            .iter()
            .zip(&firsts)
            .map(|((qid, text), f)| {
                let mut v = json!({"qid": qid, "query": text});
                for ((name, _, _), r) in MODES.iter().zip(f) {
                    v[*name] = json!(r);
                }
                v
            })
            .collect();
        out.insert("per_query".into(), json!(per));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    } else {
        if args.per_query {
            let rank = |r: &Option<usize>| r.map(|r| r.to_string()).unwrap_or_else(|| "-".into());
            println!("{:<10} {}  query (first relevant rank per mode; * = modes disagree on the top 3)", "qid", MODES.iter().map(|m| format!("{:>7}", m.0)).collect::<String>());
            for ((qid, text), f) in data.queries.iter().zip(&firsts) {
                let top3: HashSet<bool> = f.iter().map(|r| r.is_some_and(|r| r <= 3)).collect();
                let mark = if top3.len() > 1 { "*" } else { " " };
                let short: String = text.chars().take(70).collect();
                println!("{qid:<10} {}{mark} {short}", f.iter().map(|r| format!("{:>7}", rank(r))).collect::<String>());
            }
        }
        println!("judged: {}", out["judged"].as_str().unwrap_or_default());
        println!("{:<8} {:>8} {:>10} {:>8} {:>7}", "mode", "nDCG@10", "Recall@10", "MRR@10", "Hit@3");
        for (mode, _, _) in MODES {
            let v = &out[mode];
            let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
            println!("{:<8} {:>8.4} {:>10.4} {:>8.4} {:>7.4}", mode, f("ndcg@10"), f("recall@10"), f("mrr@10"), f("hit@3"));
        }
        println!("ingest: {passages_per_s:.1} {}/s; search latency in {}", if data.unit == Unit::Document { "passages" } else { "documents" }, serde_json::to_string(&out["timings"]["search_latency"])?);
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
        let [n, r, m, h] = metrics(&perfect, &rels);
        assert!((n - 1.0).abs() < 1e-12 && (r - 1.0).abs() < 1e-12 && (m - 1.0).abs() < 1e-12 && h == 1.0);
        let late = vec!["x".to_string(), "b".to_string()];
        let [n, r, m, h] = metrics(&late, &rels);
        assert_eq!(h, 1.0, "second place is within the top 3");
        // dcg = 1/log2(3); idcg = 3/1 + 1/log2(3)
        let expect = (1.0 / 3f64.log2()) / (3.0 + 1.0 / 3f64.log2());
        assert!((n - expect).abs() < 1e-12, "{n} vs {expect}");
        assert!((r - 0.5).abs() < 1e-12);
        assert!((m - 0.5).abs() < 1e-12);
    }
}
