//! `ragd bench store`: how the embedded store's search latency grows with the number of chunks, on
//! synthetic data (random unit vectors, text drawn from a Zipf-like vocabulary) — no embedder, so
//! sizes far beyond a real ingest are reachable. Dense, lexical and hybrid searches are timed at each
//! size with an HDR histogram.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use hdrhistogram::Histogram;
use ragd_core::chunk::Chunk;
use ragd_core::store::{ChunkPoint, StoreQuery, VectorStore};
use serde_json::{Value, json};

#[derive(Args)]
pub struct StoreBenchArgs {
    /// Sizes to measure at, in chunks, ascending (the store grows from one to the next).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub sizes: Vec<usize>,
    /// Searches per mode and size.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Vector dimensions (all-MiniLM-L6-v2: 384).
    #[arg(long, default_value_t = 384)]
    pub dimensions: usize,
    /// Where the store lives (default: a temporary folder, removed afterwards).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// After loading each size, run the store's optimizers (HNSW index) before searching.
    #[arg(long)]
    pub optimize: bool,
    #[arg(long)]
    pub json: bool,
}

/// xorshift64*: reproducible synthetic data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn vector(&mut self, dims: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dims).map(|_| self.unit() * 2.0 - 1.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
        v.into_iter().map(|x| x / norm).collect()
    }
    /// A word of a 20,000-word vocabulary, frequent ones far more often (roughly Zipf).
    fn word(&mut self) -> String {
        let u = self.unit().max(1e-6);
        format!("w{}", (20_000f32.powf(u) as u32).saturating_sub(1))
    }
    fn text(&mut self, words: usize) -> String {
        (0..words).map(|_| self.word()).collect::<Vec<_>>().join(" ")
    }
}

pub async fn run(a: StoreBenchArgs) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let root = a.data.clone().unwrap_or_else(|| tmp.path().to_owned());
    let store = ragd_store::EmbeddedStore::open(&root)?;
    let collection = "bench";
    store.create_collection(collection, a.dimensions).await?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut rows = Vec::new();
    let mut have = 0usize;
    for &size in &a.sizes {
        let t = Instant::now();
        let added = size.saturating_sub(have);
        while have < size {
            let batch: Vec<ChunkPoint> = (have..size.min(have + 1000))
                .map(|i| {
                    let doc_id = format!("d{i}");
                    let text = rng.text(40);
                    let chars = text.chars().count();
                    ChunkPoint {
                        id: ragd_core::ids::point_id(collection, &doc_id, 0),
                        doc_id,
                        title: None,
                        metadata: Default::default(),
                        chunk: Chunk { index: 0, text, heading_path: vec![], char_start: 0, char_end: chars, page: None, slide: None, sheet: None, ocr: false },
                        dense: rng.vector(a.dimensions),
                    }
                })
                .collect();
            have += batch.len();
            store.upsert(collection, batch).await?;
        }
        let load_s = t.elapsed().as_secs_f64();
        let mut row = json!({"chunks": size, "added_per_s": (added as f64 / load_s.max(1e-9)).round()});
        if a.optimize {
            let t = Instant::now();
            store.optimize(collection).await?;
            row["optimize_s"] = json!((t.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        }
        for mode in ["dense", "lexical", "hybrid"] {
            let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
            for _ in 0..a.queries {
                let query = StoreQuery {
                    dense: (mode != "lexical").then(|| rng.vector(a.dimensions)),
                    text: (mode != "dense").then(|| rng.text(3)),
                    filter: None,
                    limit: a.top_k,
                    candidates: 100,
                    rrf_k: 60,
                    weights: (1.0, 1.5),
                };
                let t = Instant::now();
                store.search(collection, query).await?;
                h.record(t.elapsed().as_micros().max(1) as u64)?;
            }
            let ms = |q: f64| (h.value_at_quantile(q) as f64 / 10.0).round() / 100.0;
            row[mode] = json!({"p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99)});
        }
        if !a.json {
            let m = |mode: &str| format!("{} / {} / {}", row[mode]["p50_ms"], row[mode]["p95_ms"], row[mode]["p99_ms"]);
            let optimized = row.get("optimize_s").map(|s| format!(", optimized in {s} s")).unwrap_or_default();
            println!(
                "{:>9} chunks (+{}/s{optimized}): dense {:<20} lexical {:<20} hybrid {}  (p50 / p95 / p99 ms)",
                size,
                row["added_per_s"],
                m("dense"),
                m("lexical"),
                m("hybrid")
            );
        }
        rows.push(row);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&Value::Array(rows))?);
    }
    Ok(ExitCode::SUCCESS)
}
