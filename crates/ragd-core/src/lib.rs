//! ragd-core: the data types, the traits every backend implements (`Embedder`, `VectorStore`, `Catalog`)
//! and the `Engine` that runs the path of a document (parse → chunk → embed → upsert) and of a query.
//! It knows neither HTTP nor Qdrant.

pub mod answer;
pub mod auth;
pub mod breaker;
pub mod cache;
pub mod catalog;
pub mod chunk;
pub mod embed;
pub mod egress;
pub mod engine;
pub mod error;
pub mod fusion;
pub mod generate;
pub mod ids;
pub mod jobs;
pub mod metrics;
pub mod parse;
pub mod queue;
pub mod ratelimit;
pub mod rerank;
pub mod resilience;
pub mod settings;
pub mod snapshot;
pub mod store;
pub mod types;

pub use error::{Error, Result};
