//! Throughput of the built-in embedder on 256 msmarco-like passages (about 60 words each), in batches of 32:
//! `cargo run --release -p ragd-models --example bench -- [MODEL_DIR] [--dump FILE]`.
//! `--dump` writes the passages as JSON so the same texts can be timed with sentence-transformers.

use std::path::PathBuf;
use std::time::Instant;

use ragd_core::embed::{EmbedKind, Embedder};
use ragd_models::{BuiltinEmbedder, BuiltinOptions, default_models_dir, minilm_dir};

const SENTENCES: &[&str] = &[
    "The Manhattan Project was a research and development undertaking during World War II that produced the first nuclear weapons.",
    "Photosynthesis is the process by which green plants use sunlight to synthesize foods from carbon dioxide and water.",
    "The average salary for a registered nurse in the United States is about $75,000 per year, depending on the state.",
    "To reset your router, press and hold the reset button for 30 seconds, then wait for the lights to stabilise.",
    "Symptoms of the flu include fever, cough, sore throat, runny nose, body aches, headache and fatigue.",
    "The Great Wall of China stretches more than 13,000 miles and was built over many centuries by several dynasties.",
    "A mortgage is a loan used to buy a home, repaid in monthly instalments of principal and interest over many years.",
    "Mitochondria are membrane-bound organelles that generate most of the chemical energy needed to power a cell.",
    "In 1969, Apollo 11 landed on the Moon and Neil Armstrong became the first person to walk on its surface.",
    "Vitamin D helps the body absorb calcium and is produced in the skin in response to sunlight.",
    "The stock market is where shares of publicly held companies are issued, bought and sold.",
    "Baking soda is a base that reacts with acids such as vinegar or buttermilk to release carbon dioxide gas.",
];

/// Deterministic passages of 2 to 6 sentences (roughly 40 to 120 tokens), like MS MARCO's.
fn passages(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let k = 2 + (i * 7) % 5;
            (0..k)
                .map(|j| SENTENCES[(i * 5 + j * 3) % SENTENCES.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// CPU seconds this process has used (user + system), from /proc: on a shared machine, wall time depends on the
/// neighbours, CPU time much less.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th fields overall.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    if f.len() > 12 { (f[11] + f[12]) / 100.0 } else { 0.0 }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = minilm_dir(&default_models_dir());
    let mut dump = None;
    while let Some(a) = args.next() {
        if a == "--dump" {
            dump = args.next().map(PathBuf::from);
        } else {
            dir = PathBuf::from(a);
        }
    }
    let texts = passages(256);
    if let Some(path) = dump {
        std::fs::write(path, serde_json::to_vec(&texts).unwrap()).unwrap();
    }
    let t = Instant::now();
    let e = BuiltinEmbedder::load(&dir, BuiltinOptions::default()).expect("load");
    println!("load: {:.2?}", t.elapsed());
    let counter = e.token_counter();
    let tokens: usize = texts.iter().map(|t| counter.count_tokens(t) + 2).sum();
    println!(
        "256 passages, mean {:.1} tokens with [CLS]/[SEP]",
        tokens as f64 / 256.0
    );
    e.embed(texts[..32].to_vec(), EmbedKind::Passage).await.unwrap(); // warm-up
    let query = vec!["how do I reset my router?".to_string()];
    let t = Instant::now();
    for _ in 0..20 {
        e.embed(query.clone(), EmbedKind::Query).await.unwrap();
    }
    println!("one short query: {:.1} ms", t.elapsed().as_secs_f64() * 1000.0 / 20.0);
    let t = Instant::now();
    for _ in 0..5 {
        e.embed(texts[..32].to_vec(), EmbedKind::Passage).await.unwrap();
    }
    println!(
        "one call of 32 passages: {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0 / 5.0
    );
    for round in 0..3 {
        let (t, cpu) = (Instant::now(), cpu_seconds());
        e.embed(texts.clone(), EmbedKind::Passage).await.unwrap();
        let s = t.elapsed().as_secs_f64();
        let c = cpu_seconds() - cpu;
        println!(
            "round {round}: one call of 256: {s:.2}s, {:.1} texts/s, {c:.1} CPU-s",
            256.0 / s
        );
    }
    let e = std::sync::Arc::new(e);
    let t = Instant::now();
    let calls: Vec<_> = texts
        .chunks(32)
        .map(|c| {
            let e = e.clone();
            let c = c.to_vec();
            tokio::spawn(async move { e.embed(c, EmbedKind::Passage).await.unwrap() })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    let s = t.elapsed().as_secs_f64();
    println!("8 concurrent calls of 32: {:.2}s, {:.1} texts/s", s, 256.0 / s);
}
