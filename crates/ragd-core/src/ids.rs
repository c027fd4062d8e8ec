//! Deterministic identifiers: a chunk's point id is a function of (collection, document id, chunk index),
//! so a retried or replayed ingest overwrites instead of duplicating.

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Namespace for ragd's v5 point ids (a fixed random UUID; changing it would orphan every stored point).
const POINT_NAMESPACE: Uuid = Uuid::from_u128(0x6a1c_3f0e_9b7d_4c52_8e21_d4a0_5f3b_7c19);

pub fn point_id(collection: &str, doc_id: &str, chunk_index: u32) -> Uuid {
    let mut name = Vec::with_capacity(collection.len() + doc_id.len() + 12);
    name.extend_from_slice(collection.as_bytes());
    name.push(0);
    name.extend_from_slice(doc_id.as_bytes());
    name.push(0);
    name.extend_from_slice(chunk_index.to_string().as_bytes());
    Uuid::new_v5(&POINT_NAMESPACE, &name)
}

/// Hex SHA-256 of the given parts, each length-prefixed so that ("ab","c") and ("a","bc") differ.
pub fn content_hash(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_stable_and_distinct() {
        assert_eq!(point_id("c", "d", 0), point_id("c", "d", 0));
        assert_ne!(point_id("c", "d", 0), point_id("c", "d", 1));
        assert_ne!(point_id("c", "d1", 0), point_id("c", "d", 10));
        assert_ne!(point_id("a", "bc", 0), point_id("ab", "c", 0));
    }

    #[test]
    fn content_hash_separates_parts() {
        assert_ne!(content_hash(&[b"ab", b"c"]), content_hash(&[b"a", b"bc"]));
        assert_eq!(content_hash(&[b"x"]).len(), 64);
    }
}
