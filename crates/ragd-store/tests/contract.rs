//! The `VectorStore` contract, run against both backends: the embedded store always, the Qdrant
//! cluster store when `RAGD_TEST_QDRANT_URLS` names a running Qdrant (comma-separated gRPC URLs, e.g.
//! the loopback cluster of `deploy/loopback/cluster.sh`). Without it, that half says "skipped: …".

use std::sync::Arc;

use ragd_core::chunk::Chunk;
use ragd_core::ids::point_id;
use ragd_core::settings::QdrantSettings;
use ragd_core::store::{ChunkPoint, StoreQuery, VectorStore};
use ragd_core::types::{OneOrMany, SearchFilter};
use ragd_core::Error;
use ragd_store::{EmbeddedStore, QdrantStore};
use serde_json::{Value, json};

const COLLECTION: &str = "t1.contract";

/// Four-dimensional unit-ish vectors, one direction per document, so dense search has one answer.
fn vector(doc: &str, index: u32) -> Vec<f32> {
    let base = match doc {
        "a" => [1.0, 0.0, 0.0, 0.0],
        "b" => [0.0, 1.0, 0.0, 0.0],
        _ => [0.0, 0.0, 1.0, 0.0],
    };
    let mut v = base.to_vec();
    v[3] = index as f32 * 0.1;
    v
}

fn point(doc: &str, index: u32, text: &str, lang: &str) -> ChunkPoint {
    let meta = json!({"lang": lang, "year": 2020 + index});
    ChunkPoint {
        id: point_id(COLLECTION, doc, index),
        doc_id: doc.to_owned(),
        title: Some(format!("Title {doc}")),
        metadata: meta.as_object().cloned().unwrap_or_default(),
        chunk: Chunk {
            index,
            text: text.to_owned(),
            heading_path: vec!["Top".into(), format!("Part {index}")],
            char_start: index as usize * 100,
            char_end: index as usize * 100 + text.chars().count(),
            page: Some(index + 1),
            slide: Some(index + 2),
            sheet: Some(format!("Sheet {index}")),
            ocr: index == 1,
        },
        dense: vector(doc, index),
    }
}

fn corpus() -> Vec<ChunkPoint> {
    vec![
        point("a", 0, "the lighthouse keeper climbs the spiral stairs", "en"),
        point("a", 1, "a storm rolls over the harbour at night", "en"),
        point("a", 2, "fishing boats return before the gale", "fr"),
        point("b", 0, "sourdough bread needs a lively starter", "en"),
        point("b", 1, "the oven must be hot; bake until crust is dark, then marzipan", "fr"),
        point("c", 0, "glaciers carve valleys over thousands of years", "en"),
    ]
}

fn query(dense: Option<Vec<f32>>, text: Option<&str>, filter: Option<SearchFilter>, limit: usize) -> StoreQuery {
    StoreQuery { dense, text: text.map(str::to_owned), filter, limit, candidates: 20, rrf_k: 60, weights: (1.0, 1.5) }
}

fn ids(hits: &[ragd_core::types::ChunkHit]) -> Vec<(String, u32)> {
    hits.iter().map(|h| (h.doc_id.clone(), h.chunk_index)).collect()
}

async fn contract(store: Arc<dyn VectorStore>) {
    store.ready().await.expect("ready");
    // Missing collection: a stable not-found, for searches and writes alike.
    let missing = store.search("t1.nothing-here", query(Some(vector("a", 0)), None, None, 3)).await;
    assert!(matches!(missing, Err(Error::NotFound { code: "collection_not_found", .. })), "{missing:?}");

    store.create_collection(COLLECTION, 4).await.expect("create");
    store.create_collection(COLLECTION, 4).await.expect("create is idempotent");
    store.upsert(COLLECTION, corpus()).await.expect("upsert");
    assert_eq!(store.count(COLLECTION, None).await.unwrap(), 6);
    assert_eq!(store.count(COLLECTION, Some("a")).await.unwrap(), 3);

    // Stored vectors, in the order asked, `None` for an id that does not exist (a cosine store
    // may keep them normalised: compared by direction).
    let asked = vec![point_id(COLLECTION, "b", 1), point_id(COLLECTION, "zz", 0), point_id(COLLECTION, "a", 2)];
    let got = store.vectors(COLLECTION, asked).await.expect("vectors");
    assert_eq!(got.len(), 3);
    assert!(got[1].is_none(), "{got:?}");
    for (v, want) in [(&got[0], vector("b", 1)), (&got[2], vector("a", 2))] {
        let v = v.as_ref().expect("a stored vector");
        let dot: f32 = v.iter().zip(&want).map(|(x, y)| x * y).sum();
        let norms = v.iter().map(|x| x * x).sum::<f32>().sqrt() * want.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((dot / norms - 1.0).abs() < 1e-4, "{v:?} vs {want:?}");
    }

    // Same ids overwrite: no duplicates, new text.
    let mut again = corpus();
    again[5].chunk.text = "glaciers carve fjords over thousands of years".into();
    store.upsert(COLLECTION, again).await.expect("upsert again");
    assert_eq!(store.count(COLLECTION, None).await.unwrap(), 6);

    // Dense: the nearest chunk first, cosine score, full payload back.
    let hits = store.search(COLLECTION, query(Some(vector("b", 1)), None, None, 2)).await.unwrap();
    assert_eq!(ids(&hits)[0], ("b".into(), 1));
    assert!((hits[0].score - 1.0).abs() < 1e-4, "cosine of a vector with itself: {}", hits[0].score);
    let h = &hits[0];
    assert_eq!(h.chunk_id, point_id(COLLECTION, "b", 1).to_string());
    assert_eq!(h.title.as_deref(), Some("Title b"));
    assert_eq!(h.heading_path, vec!["Top".to_owned(), "Part 1".to_owned()]);
    assert_eq!((h.offsets.char_start, h.offsets.page), (100, Some(2)));
    // Slide, sheet and the OCR mark come back as they were stored.
    assert_eq!((h.offsets.slide, h.offsets.sheet.as_deref(), h.offsets.ocr), (Some(3), Some("Sheet 1"), true));
    assert_eq!(h.metadata.get("lang"), Some(&Value::from("fr")));
    assert_eq!(h.metadata.get("year"), Some(&Value::from(2021)));

    // Lexical: BM25 finds the one chunk with a rare word; the overwritten text is what is indexed.
    let hits = store.search(COLLECTION, query(None, Some("marzipan"), None, 3)).await.unwrap();
    assert_eq!(ids(&hits), vec![("b".into(), 1)]);
    let hits = store.search(COLLECTION, query(None, Some("fjords"), None, 3)).await.unwrap();
    assert_eq!(ids(&hits), vec![("c".into(), 0)]);
    assert!(store.search(COLLECTION, query(None, Some("glacier carve valleys"), None, 3)).await.unwrap().iter().all(|h| h.doc_id == "c"));
    // Only stopwords: nothing to match.
    assert!(store.search(COLLECTION, query(None, Some("the of a"), None, 3)).await.unwrap().is_empty());

    // Hybrid: both rankings agree on `c`, which comes first; fused scores are RRF scores.
    let hits = store.search(COLLECTION, query(Some(vector("c", 0)), Some("fjords glaciers"), None, 3)).await.unwrap();
    assert_eq!(ids(&hits)[0], ("c".into(), 0));
    let best = 1.0 / (1.0 / 1.0 + 59.0) + 1.0 / (1.0 / 1.5 + 59.0);
    assert!((hits[0].score - best).abs() < 1e-6, "rrf score {} vs {best}", hits[0].score);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

    // Filters: by document, by metadata value and by a list of values.
    let only_a = SearchFilter { doc_id: Some(OneOrMany::One("a".into())), ..Default::default() };
    let hits = store.search(COLLECTION, query(Some(vector("b", 0)), None, Some(only_a), 10)).await.unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.doc_id == "a"));
    let mut fr = SearchFilter::default();
    fr.metadata.insert("lang".into(), Value::from("fr"));
    let hits = store.search(COLLECTION, query(Some(vector("a", 0)), Some("boats oven"), Some(fr), 10)).await.unwrap();
    let mut got = ids(&hits);
    got.sort();
    assert_eq!(got, vec![("a".into(), 2), ("b".into(), 1)]);
    let mut years = SearchFilter::default();
    years.metadata.insert("year".into(), json!([2020]));
    let hits = store.search(COLLECTION, query(Some(vector("a", 0)), None, Some(years), 10)).await.unwrap();
    assert_eq!(hits.len(), 3, "chunk 0 of a, b and c");
    let mut bad = SearchFilter::default();
    bad.metadata.insert("lang.x".into(), Value::from("fr"));
    let refused = store.search(COLLECTION, query(Some(vector("a", 0)), None, Some(bad), 10)).await;
    assert!(matches!(refused, Err(Error::InvalidInput { code: "invalid_filter", .. })), "{refused:?}");

    // Retrieve: in the order asked, missing ids skipped.
    let asked = vec![point_id(COLLECTION, "c", 0), point_id(COLLECTION, "zzz", 0), point_id(COLLECTION, "a", 1)];
    let got = store.retrieve(COLLECTION, asked).await.unwrap();
    assert_eq!(ids(&got), vec![("c".into(), 0), ("a".into(), 1)]);

    // Deleting a document's tail, then a whole document.
    store.delete_document_chunks(COLLECTION, "a", 1).await.unwrap();
    assert_eq!(store.count(COLLECTION, Some("a")).await.unwrap(), 1);
    store.delete_document_chunks(COLLECTION, "b", 0).await.unwrap();
    assert_eq!(store.count(COLLECTION, Some("b")).await.unwrap(), 0);
    assert_eq!(store.count(COLLECTION, None).await.unwrap(), 2);
    assert!(store.search(COLLECTION, query(None, Some("marzipan"), None, 3)).await.unwrap().is_empty());

    store.optimize(COLLECTION).await.expect("optimize");
    assert_eq!(store.count(COLLECTION, None).await.unwrap(), 2);

    store.drop_collection(COLLECTION).await.expect("drop");
    let gone = store.count(COLLECTION, None).await;
    assert!(matches!(gone, Err(Error::NotFound { code: "collection_not_found", .. })), "{gone:?}");
    store.drop_collection(COLLECTION).await.expect("drop is idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    contract(Arc::new(store)).await;
}

/// The settings a test run uses for Qdrant, or `None` (and a loud skip) without a server.
pub fn qdrant_settings() -> Option<QdrantSettings> {
    let urls = std::env::var("RAGD_TEST_QDRANT_URLS").ok().filter(|u| !u.trim().is_empty())?;
    Some(QdrantSettings {
        urls: urls.split(',').map(|u| u.trim().to_owned()).collect(),
        // A unique prefix per run: runs never see each other's collections.
        collection_prefix: format!("ragdtest_{}_", uuid::Uuid::new_v4().simple()),
        replication_factor: std::env::var("RAGD_TEST_QDRANT_REPLICAS").ok().and_then(|r| r.parse().ok()).unwrap_or(1),
        write_consistency_factor: 1,
        ..QdrantSettings::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_store_keeps_the_contract() {
    let Some(settings) = qdrant_settings() else {
        eprintln!("skipped: RAGD_TEST_QDRANT_URLS not set (no Qdrant server package exists for this machine; deploy/loopback/cluster.sh runs one from QDRANT_BIN)");
        return;
    };
    let store = QdrantStore::connect(&settings).unwrap();
    contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_store_fails_over_to_a_node_that_answers_and_says_unavailable_when_none_does() {
    // A port nobody listens on, first: every call must fail over to the real node. Without a server,
    // only the all-down half runs.
    let dead = "http://127.0.0.1:9".to_owned();
    let all_down = QdrantSettings { urls: vec![dead.clone()], timeout_ms: 500, connect_timeout_ms: 200, ..QdrantSettings::default() };
    let store = QdrantStore::connect(&all_down).unwrap();
    let started = std::time::Instant::now();
    let r = store.count(COLLECTION, None).await;
    assert!(matches!(r, Err(Error::Unavailable { dependency: "vector_store", .. })), "{r:?}");
    assert!(store.ready().await.is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "deadlines bound a dead node: {:?}", started.elapsed());
    let Some(mut settings) = qdrant_settings() else {
        eprintln!("skipped (failover to a live node): RAGD_TEST_QDRANT_URLS not set");
        return;
    };
    settings.urls.insert(0, dead);
    let store = QdrantStore::connect(&settings).unwrap();
    store.ready().await.expect("a live node answers");
    store.create_collection(COLLECTION, 4).await.unwrap();
    store.upsert(COLLECTION, corpus()).await.unwrap();
    assert_eq!(store.count(COLLECTION, None).await.unwrap(), 6);
    store.drop_collection(COLLECTION).await.unwrap();
}
