//! ragd-store: storage backends. `EmbeddedStore` implements `VectorStore` on Qdrant's engine running
//! in-process (qdrant-edge); `RedbCatalog` implements `Catalog` in a local redb file. Only this crate
//! knows Qdrant's types.

mod catalog;
mod embedded;

pub use catalog::RedbCatalog;
pub use embedded::EmbeddedStore;
mod keys;
pub use keys::KeyFile;
