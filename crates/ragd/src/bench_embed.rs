//! `ragd bench embed`: the built-in embedder alone, in this process, on texts from a file: texts/s,
//! tokens/s, CPU seconds, and the latency of one short query. The peer side
//! (`bench/st_throughput.py`) reads the same file, so `bench/embed.sh` can put the two side by side.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use ragd_core::embed::{EmbedKind, Embedder};
use ragd_models::{BuiltinEmbedder, BuiltinOptions, minilm_dir};
use serde_json::json;

#[derive(Args)]
pub struct EmbedBenchArgs {
    /// Texts to embed: one per line, either plain text or a JSON object with `text` (and optional
    /// `title`, prepended as beir_reference.py does), e.g. a BEIR corpus.jsonl.
    #[arg(long)]
    pub texts: PathBuf,
    /// At most this many texts (0 = all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Texts per call to the embedder (its worker also caps a forward pass at 32).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Threads of the inference pool (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Model cache (default: the setting `models_dir`).
    #[arg(long)]
    pub models: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// Reads `path` as [`EmbedBenchArgs::texts`] describes.
pub fn read_texts(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let raw = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut texts = Vec::new();
    for (n, line) in raw.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('{') {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?;
            let text = v["text"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("{}:{}: no string field `text`", path.display(), n + 1))?;
            let title = v["title"].as_str().unwrap_or("");
            texts.push(format!("{title} {text}").trim().to_owned());
        } else {
            texts.push(line.to_owned());
        }
    }
    Ok(texts)
}

/// CPU seconds this process has used (user + system), from /proc: on a shared machine wall time depends on the
/// neighbours, CPU time much less.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    if f.len() > 12 { (f[11] + f[12]) / 100.0 } else { 0.0 }
}

pub async fn run(a: EmbedBenchArgs, models_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let mut texts = read_texts(&a.texts)?;
    if a.limit > 0 {
        texts.truncate(a.limit);
    }
    anyhow::ensure!(!texts.is_empty(), "{}: no texts", a.texts.display());
    let dir = minilm_dir(&a.models.unwrap_or(models_dir));
    let opts = BuiltinOptions { threads: (a.threads > 0).then_some(a.threads), ..BuiltinOptions::default() };
    let embedder = tokio::task::spawn_blocking(move || BuiltinEmbedder::load(&dir, opts)).await??;
    let counter = embedder.token_counter();
    // Tokens as the model sees them: [CLS] and [SEP] added, truncated to its 256.
    let tokens: usize = texts
        .iter()
        .map(|t| (counter.count_tokens(t) + 2).min(ragd_models::builtin::MAX_TOKENS))
        .sum();
    let batch = a.batch.max(1);

    // Warm-up: the first batches grow the worker's buffers and fault in the weights.
    embedder.embed(texts.iter().take(batch).cloned().collect(), EmbedKind::Passage).await?;
    let query = vec!["how do i reset my router".to_owned()];
    embedder.embed(query.clone(), EmbedKind::Query).await?;

    let (t, cpu) = (Instant::now(), cpu_seconds());
    let mut dims = 0;
    for part in texts.chunks(batch) {
        let v = embedder.embed(part.to_vec(), EmbedKind::Passage).await?;
        anyhow::ensure!(v.len() == part.len(), "the embedder returned {} vectors for {} texts", v.len(), part.len());
        dims = v[0].len();
    }
    let (secs, cpu_s) = (t.elapsed().as_secs_f64(), cpu_seconds() - cpu);

    let runs = 50;
    let t = Instant::now();
    for _ in 0..runs {
        embedder.embed(query.clone(), EmbedKind::Query).await?;
    }
    let query_ms = t.elapsed().as_secs_f64() * 1000.0 / runs as f64;

    let report = json!({
        "embedder": ragd_models::BUILTIN_MODEL_ID,
        "texts": texts.len(),
        "mean_tokens": (tokens as f64 / texts.len() as f64 * 10.0).round() / 10.0,
        "dimensions": dims,
        "seconds": (secs * 100.0).round() / 100.0,
        "cpu_seconds": (cpu_s * 100.0).round() / 100.0,
        "texts_per_second": (texts.len() as f64 / secs * 10.0).round() / 10.0,
        "tokens_per_second": (tokens as f64 / secs).round(),
        "one_query_ms": (query_ms * 100.0).round() / 100.0,
        "batch": batch,
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "{} texts ({} tokens on average) in {:.2} s ({:.2} CPU-s): {} texts/s, {} tokens/s; one short query {:.2} ms",
            report["texts"], report["mean_tokens"], secs, cpu_s, report["texts_per_second"], report["tokens_per_second"], query_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}
