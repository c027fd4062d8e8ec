//! The `Embedder` trait: turns texts into dense vectors. The built-in model and HTTP providers implement it.

use async_trait::async_trait;

use crate::error::Result;

/// Whether a text is a stored passage or a user's query. Symmetric models (all-MiniLM-L6-v2) ignore it;
/// instruction-tuned providers may prefix differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedKind {
    Passage,
    Query,
}

#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// A stable name of the model, recorded with each collection (`builtin:all-MiniLM-L6-v2`).
    fn model_id(&self) -> &str;
    /// Length of every vector this embedder returns.
    fn dimensions(&self) -> usize;
    /// One L2-normalised vector per input text, in input order.
    async fn embed(&self, texts: Vec<String>, kind: EmbedKind) -> Result<Vec<Vec<f32>>>;
    /// Cheap liveness probe for `/health/ready`.
    async fn ready(&self) -> Result<()> {
        Ok(())
    }
    /// The circuit breaker in front of this embedder, if any.
    fn breaker_status(&self) -> Option<crate::breaker::BreakerStatus> {
        None
    }
}

/// Counts tokens the way the embedder will see them, so chunks fit its context.
pub trait TokenCounter: Send + Sync + 'static {
    fn count_tokens(&self, text: &str) -> usize;
}

/// Fallback when no tokenizer is at hand (HTTP embedders): about four characters a token for English.
pub struct ApproxTokenCounter;

impl TokenCounter for ApproxTokenCounter {
    fn count_tokens(&self, text: &str) -> usize {
        text.chars().count().div_ceil(4)
    }
}
