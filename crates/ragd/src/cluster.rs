//! `ragd cluster import`: moves collections of an embedded data folder (a stopped server's, or one
//! restored from a snapshot with `ragd snapshot restore`) into the Qdrant cluster the configuration
//! names (`store.backend = "qdrant"`). Chunks keep their ids, payloads and dense vectors (nothing
//! is re-embedded), documents keep their records; then both sides are counted and must agree.
//! Jobs and idempotency keys are not moved (they describe the old server's past).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ragd_core::catalog::Catalog;
use ragd_core::settings::{Settings, StoreBackend};
use ragd_core::embed::EmbedKind;
use ragd_core::store::{StoreQuery, VectorStore};
use ragd_store::{EmbeddedStore, QdrantCatalog, QdrantStore, RedbCatalog};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Copy collections from an embedded data folder into the cluster.
    Import(ImportArgs),
    /// Take Qdrant's full snapshot on every node of the cluster (vectors, catalog and keys).
    Snapshot {
        /// How long a node may take.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
}

#[derive(Args)]
pub struct ImportArgs {
    /// The embedded data folder to read (its server must be stopped; a restored snapshot works).
    #[arg(long)]
    from: PathBuf,
    /// Collections to move, by stored name (`<tenant>.<name>` for other tenants); all when absent.
    #[arg(long = "collection")]
    collections: Vec<String>,
    /// Overwrite a collection that already exists in the cluster (its points by id; its documents).
    #[arg(long)]
    replace: bool,
    /// After copying, run these queries (one per line) on both sides in dense, lexical and hybrid
    /// mode and compare the top 10: exit 1 unless they agree (same chunks with the same scores).
    #[arg(long)]
    verify_queries: Option<PathBuf>,
}

const PAGE: usize = 256;

pub async fn run(command: ClusterCommand, settings: Settings) -> anyhow::Result<ExitCode> {
    if settings.store.backend != StoreBackend::Qdrant {
        bail!("the configuration's store.backend is `embedded`: set store.backend = \"qdrant\" and store.qdrant.urls to use a cluster");
    }
    let args = match command {
        ClusterCommand::Import(args) => args,
        ClusterCommand::Snapshot { timeout_secs } => return snapshot(&settings, timeout_secs).await,
    };
    let src_catalog = RedbCatalog::open(&args.from.join("catalog.redb"))
        .map_err(|e| anyhow::anyhow!("{e} (is a server still using {}?)", args.from.display()))?;
    let src_store = EmbeddedStore::open(&args.from.join("collections"))?;
    let dst_store = QdrantStore::connect(&settings.store.qdrant)?;
    let dst_catalog = QdrantCatalog::open(dst_store.clone()).await.context("opening the cluster's catalog")?;
    let dst: Arc<dyn VectorStore> = Arc::new(dst_store);

    let mut records = src_catalog.list_collections().await?;
    if !args.collections.is_empty() {
        for wanted in &args.collections {
            if !records.iter().any(|r| &r.name == wanted) {
                bail!("{} has no collection `{wanted}`", args.from.display());
            }
        }
        records.retain(|r| args.collections.contains(&r.name));
    }
    let mut ok = true;
    for record in records {
        let name = record.name.clone();
        if dst_catalog.get_collection(&name).await?.is_some() && !args.replace {
            bail!("the cluster already has collection `{name}` (add --replace to overwrite it)");
        }
        let started = std::time::Instant::now();
        dst.create_collection(&name, record.dimensions).await?;
        // Chunks first, documents after: as in ingestion, a recorded document has its chunks.
        let mut from = None;
        let mut chunks = 0u64;
        loop {
            let (points, next) = src_store.export(&name, from, PAGE).await?;
            chunks += points.len() as u64;
            if !points.is_empty() {
                dst.upsert(&name, points).await?;
            }
            match next {
                Some(n) => from = Some(n),
                None => break,
            }
        }
        let mut after: Option<String> = None;
        let mut documents = 0u64;
        loop {
            let page = src_catalog.list_documents(&name, after.as_deref(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            documents += page.len() as u64;
            dst_catalog.put_documents(&name, page).await?;
        }
        if dst_catalog.get_collection(&name).await?.is_some() {
            dst_catalog.put_collection(record).await?;
        } else {
            dst_catalog.create_collection(record).await?;
        }
        let (src_chunks, dst_chunks) = (src_store.count(&name, None).await?, dst.count(&name, None).await?);
        let (src_docs, dst_docs) = (src_catalog.count_documents(&name).await?, dst_catalog.count_documents(&name).await?);
        let agree = src_chunks == dst_chunks && src_docs == dst_docs && chunks == src_chunks && documents == src_docs;
        ok &= agree;
        if let Some(file) = &args.verify_queries {
            ok &= verify(&settings, file, &name, &src_store, dst.as_ref()).await?;
        }
        println!(
            "{name}: {documents} documents, {chunks} chunks copied in {:.1} s; cluster holds {dst_docs} documents, {dst_chunks} chunks — {}",
            started.elapsed().as_secs_f64(),
            if agree { "OK" } else { "MISMATCH" }
        );
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `ragd cluster snapshot`: every node's full snapshot; exit 1 unless every node made one. With 3
/// copies on 3 nodes each node's snapshot alone holds every collection.
async fn snapshot(settings: &Settings, timeout_secs: u64) -> anyhow::Result<ExitCode> {
    let store = QdrantStore::connect(&settings.store.qdrant)?;
    let mut ok = true;
    for (node, r) in store.snapshot_nodes(std::time::Duration::from_secs(timeout_secs)).await {
        match r {
            Ok((name, size)) => println!("{node}: snapshot {name} ({:.1} MB) in the node's snapshots folder (GET /snapshots/{name} on its REST port)", size as f64 / 1e6),
            Err(e) => {
                ok = false;
                println!("{node}: FAILED: {e}");
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Runs every query on both stores in each mode; true when every top 10 agrees: the same chunks
/// with the same scores (to 1e-4: the engines sum floats in different orders). Chunks that tie may
/// come in another order, so results are compared as sets, their scores as sorted lists.
async fn verify(settings: &Settings, file: &std::path::Path, collection: &str, src: &dyn VectorStore, dst: &dyn VectorStore) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let queries: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let (embedder, _) = crate::app::embedder(settings).await?;
    let vectors = embedder.embed(queries.iter().map(|q| q.to_string()).collect(), EmbedKind::Query).await?;
    let s = &settings.search;
    let mut same = [0usize; 3];
    let mut ties = [0usize; 3];
    let mut worst = 0f32;
    for (q, v) in queries.iter().zip(vectors) {
        for (m, (dense, lexical)) in [(true, false), (false, true), (true, true)].into_iter().enumerate() {
            let query = StoreQuery {
                dense: dense.then(|| v.clone()),
                text: lexical.then(|| q.to_string()),
                filter: None,
                limit: 10,
                candidates: s.candidates,
                rrf_k: s.rrf_k,
                weights: (s.dense_weight, s.lexical_weight),
            };
            let (a, b) = (src.search(collection, query.clone()).await?, dst.search(collection, query).await?);
            let ids = |h: &[ragd_core::types::ChunkHit]| {
                let mut v: Vec<String> = h.iter().map(|x| x.chunk_id.clone()).collect();
                v.sort();
                v
            };
            let scores = |h: &[ragd_core::types::ChunkHit]| {
                let mut v: Vec<f32> = h.iter().map(|x| x.score).collect();
                v.sort_by(|x, y| y.total_cmp(x));
                v
            };
            let diff = scores(&a).iter().zip(scores(&b)).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            if ids(&a) == ids(&b) && diff <= 1e-4 {
                worst = worst.max(diff);
                same[m] += 1;
            } else if candidates_differ_only_in_ties(src, dst, collection, q, &v, s.candidates).await? {
                // The lists differ because the engines order equal-scored chunks differently
                // (msmarco has duplicate passages; BM25 ties): the same results up to ties.
                ties[m] += 1;
            } else {
                worst = worst.max(diff);
                eprintln!("  differs ({}): {q:?}", ["dense", "lexical", "hybrid"][m]);
            }
        }
    }
    let n = queries.len();
    println!(
        "{collection}: top 10 identical for {}/{n} dense, {}/{n} lexical, {}/{n} hybrid queries; equal up to the order of equal-scored \
         chunks for {}, {}, {} more (largest score difference otherwise {worst:.2e})",
        same[0], same[1], same[2], ties[0], ties[1], ties[2]
    );
    Ok((0..3).all(|m| same[m] + ties[m] == n))
}

/// Equal as two engines compute the same score (float sums in another order).
fn close(x: f32, y: f32) -> bool {
    (x - y).abs() <= 1e-5 * x.abs().max(1.0)
}

/// True when both stores return the same dense and the same lexical candidates (the lists hybrid
/// fuses), scores equal, except that candidates with equal scores may come in another order. RRF
/// scores positions, so a swapped tie moves a fused score by up to 1/60 − 1/61 ≈ 2.7e-4 per ranking
/// (k = 60, at the top) and may change which chunk takes the tenth place: that is tie-breaking, not
/// a difference in content.
async fn candidates_differ_only_in_ties(
    src: &dyn VectorStore,
    dst: &dyn VectorStore,
    collection: &str,
    q: &str,
    v: &[f32],
    candidates: usize,
) -> anyhow::Result<bool> {
    for (dense, text) in [(Some(v.to_vec()), None), (None, Some(q.to_owned()))] {
        let query = StoreQuery { dense, text, filter: None, limit: candidates, candidates, rrf_k: 60, weights: (1.0, 1.0) };
        let (a, b) = (src.search(collection, query.clone()).await?, dst.search(collection, query).await?);
        if a.len() != b.len() {
            eprintln!("  hybrid {q:?}: {} vs {} candidates", a.len(), b.len());
            return Ok(false);
        }
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if !close(x.score, y.score) {
                eprintln!("  hybrid {q:?}: candidate {i} scores {} vs {}", x.score, y.score);
                return Ok(false);
            }
        }
        // Scores agree place by place; now every chunk must have the same score on both sides, or be
        // missing from one only in the group of equal scores the list was cut in.
        for (one, other) in [(&a, &b), (&b, &a)] {
            let cut = one.last().map(|z| z.score).unwrap_or(0.0);
            for z in one.iter() {
                let ok = match other.iter().find(|o| o.chunk_id == z.chunk_id) {
                    Some(o) => close(o.score, z.score),
                    None => close(z.score, cut),
                };
                if !ok {
                    eprintln!("  hybrid {q:?}: chunk {} (score {}) is not on the other side with that score", z.chunk_id, z.score);
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}
