//! Hybrid fusion: one ranking from the dense (cosine) and the lexical (BM25) candidates.
//!
//! Methods (`search.fusion`):
//! - `rrf`: weighted reciprocal rank fusion with Qdrant's formula (`rrf_score`), summed — uses
//!   ranks only, so a ranking's confidence (a far-ahead first hit, a flat tail) is thrown away.
//! - `relative`: each side's scores scaled to 0..1 over its candidates (min–max), then a weighted sum.
//!   Uses how far apart the candidates are, not only their order.
//! - `dbsf`: distribution-based score fusion: each side's scores standardised by the mean and
//!   standard deviation of its candidates (mean ± 3σ mapped to 0..1, clipped), then a weighted sum.
//!   A side whose scores barely spread (no candidate stands out) contributes little to the order.
//!
//! docs/retrieval.md gives the measurements behind the default.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::store::Rankings;
use crate::types::ChunkHit;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FusionMethod {
    Rrf,
    #[default]
    Relative,
    Dbsf,
}

/// How to fuse: the method and each side's weight (`rrf_k` for `rrf` only).
#[derive(Debug, Clone, Copy)]
pub struct Fusion {
    pub method: FusionMethod,
    pub dense_weight: f32,
    pub lexical_weight: f32,
    pub rrf_k: usize,
}

/// The fused ranking, best first, at most `limit` long; each hit's `score` is its fused score.
/// A chunk found by both sides appears once (with the dense side's payload). Ties keep the order of
/// first appearance, dense before lexical, so the result is deterministic.
pub fn fuse(r: Rankings, f: &Fusion, limit: usize) -> Vec<ChunkHit> {
    let dense = side_scores(&r.dense, f, f.dense_weight);
    let lexical = side_scores(&r.lexical, f, f.lexical_weight);
    let mut fused: Vec<(f32, ChunkHit)> = Vec::with_capacity(r.dense.len() + r.lexical.len());
    let mut at: HashMap<String, usize> = HashMap::with_capacity(fused.capacity());
    for (hits, scores) in [(r.dense, dense), (r.lexical, lexical)] {
        for (hit, s) in hits.into_iter().zip(scores) {
            match at.get(&hit.chunk_id) {
                Some(&i) => fused[i].0 += s,
                None => {
                    at.insert(hit.chunk_id.clone(), fused.len());
                    fused.push((s, hit));
                }
            }
        }
    }
    // Stable: equal scores keep first-appearance order.
    fused.sort_by(|a, b| b.0.total_cmp(&a.0));
    fused.truncate(limit);
    fused
        .into_iter()
        .map(|(s, mut h)| {
            h.score = s;
            h
        })
        .collect()
}

/// Weighted reciprocal rank fusion as Qdrant (server and qdrant-edge) computes it: a point at
/// 0-based position `pos` of a ranking with weight `w` scores `1 / ((pos + 1) / w + k - 1)`; a
/// weight of 0 silences the ranking. The one formula of every RRF in ragd.
pub fn rrf_score(pos: usize, weight: f32, k: usize) -> f32 {
    if weight <= 0.0 { 0.0 } else { 1.0 / ((pos + 1) as f32 / weight + k as f32 - 1.0) }
}

/// `xs` scaled to 0..1 over their range (all 1 when they are equal): the `relative` fusion's
/// normalisation, and the builtin reranker's.
pub fn min_max(xs: &[f32]) -> Vec<f32> {
    let (lo, hi) = xs.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    xs.iter().map(|&x| if hi > lo { (x - lo) / (hi - lo) } else { 1.0 }).collect()
}

/// Each candidate's contribution from one side, in the side's order.
fn side_scores(hits: &[ChunkHit], f: &Fusion, weight: f32) -> Vec<f32> {
    if hits.is_empty() || weight <= 0.0 {
        return vec![0.0; hits.len()];
    }
    match f.method {
        FusionMethod::Rrf => (0..hits.len()).map(|pos| rrf_score(pos, weight, f.rrf_k)).collect(),
        FusionMethod::Relative => min_max(&hits.iter().map(|h| h.score).collect::<Vec<_>>()).into_iter().map(|s| weight * s).collect(),
        FusionMethod::Dbsf => {
            let n = hits.len() as f32;
            let mean = hits.iter().map(|h| h.score).sum::<f32>() / n;
            let var = hits.iter().map(|h| (h.score - mean).powi(2)).sum::<f32>() / n;
            let sd = var.sqrt();
            if sd <= f32::EPSILON {
                return vec![weight * 0.5; hits.len()];
            }
            let (lo, hi) = (mean - 3.0 * sd, mean + 3.0 * sd);
            hits.iter().map(|h| weight * ((h.score - lo) / (hi - lo)).clamp(0.0, 1.0)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32) -> ChunkHit {
        crate::types::test_hit(id, score, "")
    }

    fn ids(v: &[ChunkHit]) -> Vec<&str> {
        v.iter().map(|h| h.chunk_id.as_str()).collect()
    }

    fn fusion(method: FusionMethod) -> Fusion {
        Fusion { method, dense_weight: 1.0, lexical_weight: 1.0, rrf_k: 60 }
    }

    #[test]
    fn a_chunk_both_sides_find_comes_first_and_once() {
        for m in [FusionMethod::Rrf, FusionMethod::Relative, FusionMethod::Dbsf] {
            let r = Rankings {
                dense: vec![hit("a", 0.9), hit("b", 0.8), hit("c", 0.7)],
                lexical: vec![hit("b", 12.0), hit("d", 11.0), hit("e", 3.0)],
            };
            let out = fuse(r, &fusion(m), 10);
            assert_eq!(out[0].chunk_id, "b", "{m:?}: {:?}", ids(&out));
            assert_eq!(out.len(), 5, "{m:?}");
        }
    }

    #[test]
    fn scores_decide_where_ranks_cannot() {
        // Dense: `a` far ahead of a flat tail; lexical: a flat list. Rank fusion cannot tell `a`
        // from the lexical leader; score fusion can.
        let r = Rankings {
            dense: vec![hit("a", 0.80), hit("b", 0.41), hit("c", 0.40), hit("d", 0.39)],
            lexical: vec![hit("x", 5.02), hit("y", 5.01), hit("z", 5.00), hit("w", 4.99)],
        };
        for m in [FusionMethod::Relative, FusionMethod::Dbsf] {
            assert_eq!(fuse(r.clone(), &fusion(m), 3)[0].chunk_id, "a", "{m:?}");
        }
    }

    #[test]
    fn one_side_alone_keeps_its_order_and_weights_matter() {
        let r = Rankings { dense: vec![], lexical: vec![hit("x", 3.0), hit("y", 2.0), hit("z", 1.0)] };
        for m in [FusionMethod::Rrf, FusionMethod::Relative, FusionMethod::Dbsf] {
            assert_eq!(ids(&fuse(r.clone(), &fusion(m), 2)), ["x", "y"], "{m:?}");
        }
        let r = Rankings { dense: vec![hit("a", 0.9), hit("b", 0.5)], lexical: vec![hit("x", 9.0), hit("y", 5.0)] };
        let f = Fusion { lexical_weight: 0.0, ..fusion(FusionMethod::Relative) };
        assert_eq!(ids(&fuse(r, &f, 4))[..2], ["a", "b"]);
    }
}
