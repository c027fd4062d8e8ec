//! The query-embedding cache: a repeated query skips the embedder. Behind a trait so a cache shared
//! through Redis can replace the in-process one; a cache that fails is bypassed, never fatal.
//!
//! `LocalCache` keeps two generations of entries: lookups promote from the old one, and when the new
//! one is full the old is dropped. That is LRU to within a factor of two, in O(1), with no list to
//! maintain on every hit.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

#[async_trait]
pub trait VectorCache: Send + Sync {
    /// `Err` when the cache cannot answer (it is then bypassed and the response says `cache`).
    async fn get(&self, key: &str) -> Result<Option<Vec<f32>>, String>;
    async fn put(&self, key: &str, vector: Vec<f32>) -> Result<(), String>;
}

pub struct LocalCache {
    half: usize,
    state: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    new: HashMap<String, Vec<f32>>,
    old: HashMap<String, Vec<f32>>,
}

impl LocalCache {
    /// Holds up to `capacity` entries (at least the last `capacity / 2` used).
    pub fn new(capacity: usize) -> LocalCache {
        LocalCache { half: (capacity / 2).max(1), state: Mutex::new(Generations::default()) }
    }

    fn insert(&self, g: &mut Generations, key: String, v: Vec<f32>) {
        if g.new.len() >= self.half {
            g.old = std::mem::take(&mut g.new);
        }
        g.new.insert(key, v);
    }
}

#[async_trait]
impl VectorCache for LocalCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<f32>>, String> {
        let mut g = self.state.lock().map_err(|_| "cache lock poisoned".to_owned())?;
        if let Some(v) = g.new.get(key) {
            return Ok(Some(v.clone()));
        }
        match g.old.remove(key) {
            Some(v) => {
                self.insert(&mut g, key.to_owned(), v.clone());
                Ok(Some(v))
            }
            None => Ok(None),
        }
    }

    async fn put(&self, key: &str, vector: Vec<f32>) -> Result<(), String> {
        let mut g = self.state.lock().map_err(|_| "cache lock poisoned".to_owned())?;
        self.insert(&mut g, key.to_owned(), vector);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recently_used_entries_survive_and_memory_is_bounded() {
        let c = LocalCache::new(4);
        for k in ["a", "b"] {
            c.put(k, vec![1.0]).await.unwrap();
        }
        // `a` is used, so it moves into the new generation and outlives `b`.
        c.put("c", vec![3.0]).await.unwrap();
        assert!(c.get("a").await.unwrap().is_some());
        c.put("d", vec![4.0]).await.unwrap();
        c.put("e", vec![5.0]).await.unwrap();
        assert!(c.get("b").await.unwrap().is_none());
        assert_eq!(c.get("e").await.unwrap(), Some(vec![5.0]));
        let g = c.state.lock().unwrap();
        assert!(g.new.len() + g.old.len() <= 4);
    }
}
