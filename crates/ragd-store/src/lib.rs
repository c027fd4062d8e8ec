//! ragd-store: storage backends. `EmbeddedStore` implements `VectorStore` on Qdrant's engine running
//! in-process (qdrant-edge); `QdrantStore` implements it on a Qdrant server or cluster over gRPC
//! (qdrant-client); `RedisCache` and `RedisGcra` share the query cache and the rate limits
//! of cluster replicas through Redis; `RedbCatalog` implements `Catalog` in a local redb file. Only this crate knows
//! Qdrant's types.

mod catalog;
mod embedded;
mod filter;
mod keys;
mod qdrant;
mod qdrant_catalog;
mod shared;

pub use catalog::RedbCatalog;
pub use embedded::EmbeddedStore;
pub use keys::KeyFile;
pub use qdrant::QdrantStore;
pub use qdrant_catalog::QdrantCatalog;
pub use shared::{RedisCache, RedisConversations, RedisGcra, RedisLink, RedisQueue};
