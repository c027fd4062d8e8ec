//! `ragd bench generator`: the built-in generator alone, on a typical RAG prompt (about 1,000 tokens
//! of passages, laid out exactly as `/query` lays them out): prompt (prefill) tokens/s, generation
//! tokens/s, time to first token, peak resident memory. `--prompt-out` writes the prompt text so a
//! peer (llama.cpp's own server, see bench/generator.py) can be given the very same input.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use ragd_core::answer::build_request;
use ragd_core::generate::{Generator, completion_prompt};
use ragd_core::types::{ChunkHit, Offsets};
use ragd_models::{BuiltinGenerator, BuiltinGeneratorOptions};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Args)]
pub struct GeneratorBenchArgs {
    /// Folder of .md/.txt files the passages are cut from.
    #[arg(long, default_value = "docs")]
    pub passages_from: PathBuf,
    /// Tokens of passages in the prompt (approximately).
    #[arg(long, default_value_t = 1000)]
    pub prompt_tokens: usize,
    /// Longest answer, in tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Measured runs (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Threads per decode (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Write the exact prompt text here (for the peer).
    #[arg(long)]
    pub prompt_out: Option<PathBuf>,
    /// Model cache (default: the setting `models_dir`).
    #[arg(long)]
    pub models: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub async fn run(args: GeneratorBenchArgs, models_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let models = args.models.clone().unwrap_or(models_dir);
    let path = ragd_models::gemma_path(&models);
    let opts = BuiltinGeneratorOptions { threads: args.threads, ..BuiltinGeneratorOptions::default() };
    let t = Instant::now();
    let generator = tokio::task::spawn_blocking(move || BuiltinGenerator::load(&path, opts)).await??;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;

    // Passages: paragraphs of the given folder, until about `prompt_tokens` tokens.
    let mut paragraphs = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.passages_from)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "md" || e == "txt")) {
        let text = std::fs::read_to_string(f)?;
        for p in text.split("\n\n").map(str::trim).filter(|p| p.len() > 200) {
            paragraphs.push((f.file_name().unwrap_or_default().to_string_lossy().into_owned(), p.to_owned()));
        }
    }
    let mut hits = Vec::new();
    let mut tokens = 0;
    for (i, (doc, text)) in paragraphs.into_iter().enumerate() {
        if tokens >= args.prompt_tokens {
            break;
        }
        tokens += generator.count_tokens(&text);
        hits.push(ChunkHit {
            doc_id: doc.clone(),
            chunk_id: format!("{doc}-{i}"),
            chunk_index: i as u32,
            score: 1.0,
            title: Some(doc),
            text: text.clone(),
            metadata: Default::default(),
            heading_path: vec![],
            offsets: Offsets { char_start: 0, char_end: text.chars().count(), ..Offsets::default() },
        });
    }
    anyhow::ensure!(!hits.is_empty(), "no paragraphs found in {}", args.passages_from.display());
    let question = "How does ragd keep an acknowledged document safe when the server is killed?";
    let (request, used) = build_request(&generator, question, &[], &hits, args.max_tokens, 0.0);
    let mut request = request.ok_or_else(|| anyhow::anyhow!("the prompt does not fit the context"))?;
    // Measure a fixed amount of generation: no early stop at the model's end of answer is possible
    // here, but stop sequences would cut runs short at different points; drop them.
    request.stop.clear();
    let prompt_text = completion_prompt(&request);
    if let Some(out) = &args.prompt_out {
        std::fs::write(out, &prompt_text)?;
    }

    let mut rows = Vec::new();
    for run in 0..=args.runs {
        let (tx, mut rx) = mpsc::channel::<String>(1024);
        let start = Instant::now();
        let g = &generator;
        let req = request.clone();
        let fut = g.generate(req, tx);
        tokio::pin!(fut);
        let mut first: Option<f64> = None;
        let out = loop {
            tokio::select! {
                Some(_) = rx.recv() => { first.get_or_insert_with(|| start.elapsed().as_secs_f64()); }
                r = &mut fut => break r?,
            }
        };
        let total = start.elapsed().as_secs_f64();
        let ttft = first.unwrap_or(total);
        if run == 0 {
            continue; // warm-up
        }
        rows.push((out.prompt_tokens, out.completion_tokens, ttft, total));
    }
    let n = rows.len() as f64;
    let prompt_tokens = rows[0].0;
    let mean = |f: &dyn Fn(&(usize, usize, f64, f64)) -> f64| rows.iter().map(f).sum::<f64>() / n;
    let ttft_ms = mean(&|r| r.2) * 1e3;
    let prefill_tps = mean(&|r| r.0 as f64 / r.2);
    let gen_tps = mean(&|r| (r.1.saturating_sub(1)) as f64 / (r.3 - r.2).max(1e-9));
    let completion = mean(&|r| r.1 as f64);
    let peak = peak_rss_mb();
    let report = json!({
        "generator": generator.id(),
        "passages": used.len(),
        "prompt_tokens": prompt_tokens,
        "completion_tokens_mean": completion,
        "runs": rows.len(),
        "load_ms": (load_ms * 10.0).round() / 10.0,
        "ttft_ms": (ttft_ms * 10.0).round() / 10.0,
        "prompt_tokens_per_s": prefill_tps.round(),
        "generation_tokens_per_s": (gen_tps * 10.0).round() / 10.0,
        "peak_rss_mb": peak.round(),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{}: {} passages, {prompt_tokens} prompt tokens, {completion:.0} generated (mean of {} runs)\n  time to first token {ttft_ms:.0} ms\n  prompt {prefill_tps:.0} tokens/s\n  generation {gen_tps:.1} tokens/s\n  peak RSS {peak:.0} MB (load {load_ms:.0} ms)",
            generator.id(),
            used.len(),
            rows.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
