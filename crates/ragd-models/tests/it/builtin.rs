//! The built-in embedder against sentence-transformers' output, under concurrency, and with over-long texts.

use ragd_core::embed::{EmbedKind, Embedder};
use ragd_models::{BUILTIN_DIMENSIONS, BUILTIN_MODEL_ID, BuiltinEmbedder, BuiltinOptions};
use serde::Deserialize;

use crate::support::{cosine, embedder};

#[derive(Deserialize)]
struct Fixture {
    max_seq_length: usize,
    dimensions: usize,
    items: Vec<FixtureItem>,
}

#[derive(Deserialize)]
struct FixtureItem {
    text: String,
    tokens_untruncated: usize,
    embedding: Vec<f32>,
}

fn fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/minilm_reference.json");
    serde_json::from_slice(&std::fs::read(path).expect("read the fixture")).expect("parse the fixture")
}

#[test]
fn reference_fixture_is_not_trivial() {
    let f = fixture();
    assert_eq!(f.dimensions, BUILTIN_DIMENSIONS);
    assert_eq!(f.max_seq_length, 256);
    assert!(f.items.len() >= 8, "only {} texts", f.items.len());
    for (i, a) in f.items.iter().enumerate() {
        assert_eq!(a.embedding.len(), BUILTIN_DIMENSIONS);
        for b in &f.items[i + 1..] {
            assert_ne!(a.text, b.text);
            // Distinct texts must give clearly distinct references, or equivalence would prove little.
            assert!(
                cosine(&a.embedding, &b.embedding) < 0.99,
                "{:?} and {:?} embed alike",
                a.text,
                b.text
            );
        }
    }
    assert!(
        f.items.iter().any(|i| i.tokens_untruncated > 256),
        "no text exercises truncation"
    );
    assert!(f.items.iter().any(|i| !i.text.is_ascii()), "no non-ASCII text");
}

#[tokio::test]
async fn matches_sentence_transformers() {
    let f = fixture();
    let e = embedder();
    assert_eq!(e.model_id(), BUILTIN_MODEL_ID);
    assert_eq!(e.dimensions(), BUILTIN_DIMENSIONS);
    let texts: Vec<String> = f.items.iter().map(|i| i.text.clone()).collect();
    let got = e.embed(texts, EmbedKind::Passage).await.unwrap();
    assert_eq!(got.len(), f.items.len());
    let mut worst = 1f32;
    for (item, v) in f.items.iter().zip(&got) {
        assert_eq!(v.len(), BUILTIN_DIMENSIONS);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{:?}: norm {norm}", item.text);
        let c = cosine(v, &item.embedding);
        worst = worst.min(c);
        assert!(c >= 0.999, "{:?}: cosine to sentence-transformers {c}", item.text);
    }
    eprintln!("lowest cosine to sentence-transformers: {worst}");
    // One at a time too: a lone text is padded differently from the batch above, and a forward pass of a few
    // tokens multiplies by int8 weights (grouped scales) instead of f32 ones.
    let mut worst_alone = 1f32;
    for item in &f.items {
        let v = e
            .embed(vec![item.text.clone()], EmbedKind::Query)
            .await
            .unwrap()
            .remove(0);
        let c = cosine(&v, &item.embedding);
        worst_alone = worst_alone.min(c);
        assert!(c >= 0.999, "{:?} alone: cosine {c}", item.text);
    }
    eprintln!("lowest cosine to sentence-transformers, one text at a time: {worst_alone}");
}

#[test]
fn token_counter_matches_the_reference_tokenizer() {
    let counter = embedder().token_counter();
    for item in fixture().items {
        assert_eq!(
            counter.count_tokens(&item.text),
            item.tokens_untruncated,
            "{:?}",
            item.text
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_get_their_own_vectors() {
    let e = embedder();
    let sizes = [1usize, 3, 5, 8, 13, 21, 34, 2];
    let requests: Vec<Vec<String>> = sizes
        .iter()
        .enumerate()
        .map(|(r, &n)| {
            (0..n)
                .map(|i| {
                    format!(
                        "request {r} text {i}: {}",
                        "lorem ipsum dolor sit amet ".repeat((r * 7 + i * 3) % 12)
                    )
                })
                .collect()
        })
        .collect();
    let mut sequential = Vec::new();
    for texts in &requests {
        sequential.push(e.embed(texts.clone(), EmbedKind::Passage).await.unwrap());
    }
    let tasks: Vec<_> = requests
        .iter()
        .enumerate()
        .map(|(r, texts)| {
            let e = e.clone();
            let texts = texts.clone();
            // Alternate kinds so the query fast lane is mixed in as well.
            let kind = if r % 2 == 0 {
                EmbedKind::Passage
            } else {
                EmbedKind::Query
            };
            tokio::spawn(async move { e.embed(texts, kind).await })
        })
        .collect();
    let concurrent: Vec<Vec<Vec<f32>>> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    let all_seq: Vec<&Vec<f32>> = sequential.iter().flatten().collect();
    for (r, (seq, conc)) in sequential.iter().zip(&concurrent).enumerate() {
        assert_eq!(seq.len(), conc.len(), "request {r}");
        for (i, (a, b)) in seq.iter().zip(conc).enumerate() {
            // Batch shapes differ, so summation order may too, and a forward pass of a few tokens multiplies by
            // int8 weights (the big batches by f32 ones): equal up to that noise, and nearest to its own.
            let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(diff < 5e-3, "request {r} text {i}: max difference {diff}");
            assert!(cosine(a, b) > 0.9995, "request {r} text {i}: cosine {}", cosine(a, b));
            let best = all_seq
                .iter()
                .enumerate()
                .max_by(|x, y| cosine(x.1, b).total_cmp(&cosine(y.1, b)))
                .map(|(k, _)| k)
                .unwrap();
            let own = sizes[..r].iter().sum::<usize>() + i;
            assert_eq!(best, own, "request {r} text {i} got another text's vector");
        }
    }
}

#[tokio::test]
async fn over_long_text_is_truncated_not_rejected() {
    let e = embedder();
    let words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "retrieval",
        "vector",
        "chunk",
        "token",
    ];
    let text: String = (0..1000).map(|i| words[i % words.len()]).collect::<Vec<_>>().join(" ");
    assert!(e.token_counter().count_tokens(&text) > 256);
    let v = e.embed(vec![text, "short".into()], EmbedKind::Passage).await.unwrap();
    assert_eq!(v.len(), 2);
    assert!(
        v.iter()
            .all(|v| v.len() == BUILTIN_DIMENSIONS && v.iter().all(|x| x.is_finite()))
    );
}

#[tokio::test]
async fn empty_request_needs_no_model_work() {
    assert!(embedder().embed(Vec::new(), EmbedKind::Query).await.unwrap().is_empty());
    assert!(embedder().ready().await.is_ok());
}

#[test]
fn missing_model_file_names_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    let err = BuiltinEmbedder::load(dir.path(), BuiltinOptions::default())
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.contains("ragd models fetch"), "{err}");
}
