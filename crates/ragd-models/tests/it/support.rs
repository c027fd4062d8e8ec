//! Shared test helpers: where the models are and one built-in embedder for the whole test binary.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ragd_models::{BuiltinEmbedder, BuiltinOptions, check_models, default_models_dir, minilm_dir};

/// `RAGD_MODELS_DIR`, else the default cache, the same place `ragd models fetch` installs to.
pub fn models_dir() -> PathBuf {
    std::env::var_os("RAGD_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(default_models_dir)
}

/// The models are a precondition of the test suite (the project's test script fetches them first), so their
/// absence fails loudly instead of skipping: a skipped equivalence test would hide a broken setup.
pub fn require_models() -> PathBuf {
    let dir = models_dir();
    let missing: Vec<String> = check_models(&dir)
        .into_iter()
        .filter(|m| m.model == "all-MiniLM-L6-v2")
        .map(|m| m.to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "the built-in model is not installed in {} (set RAGD_MODELS_DIR to change it); run `ragd models fetch` \
         (or `cargo run -p ragd-models --example fetch`) first:\n{}",
        dir.display(),
        missing.join("\n")
    );
    dir
}

/// One embedder shared by every test, so the 90 MB of weights are read once.
pub fn embedder() -> Arc<BuiltinEmbedder> {
    static EMBEDDER: OnceLock<Arc<BuiltinEmbedder>> = OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let dir = minilm_dir(&require_models());
            Arc::new(BuiltinEmbedder::load(&dir, BuiltinOptions::default()).expect("load the built-in embedder"))
        })
        .clone()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}
