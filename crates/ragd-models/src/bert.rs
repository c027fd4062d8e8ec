//! A BERT encoder for CPU inference on packed (unpadded) token batches, written for throughput on few cores.
//!
//! Why not candle's `BertModel`: on this 2-core machine it spent about 2.3x the CPU time of PyTorch on the same
//! passages — per-op allocations (page faults), many small multithreaded GEMMs in attention, a scalar `erf` — while
//! a plain GEMM through `matrixmultiply` runs as fast as PyTorch's. The workspace forbids `unsafe`, so the GEMMs go
//! through ndarray's safe `general_mat_mul`.
//!
//! Padding is never computed: the tokens of all texts in a batch are packed into one `(tokens, hidden)` matrix
//! for the row-local work (projections, feed-forward, layer norms), and attention runs per text over that text's
//! own tokens only. This gives exactly what a padded batch with an attention mask gives (masked keys get zero
//! weight, padded queries are dropped by mean pooling), without the wasted arithmetic.
//!
//! Parallelism is coarse: row blocks for the projections, (text, head) pairs for attention, each task running a
//! single-threaded GEMM. Three hand-offs per layer instead of one per GEMM keeps both cores busy.

use std::path::Path;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, Slice};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

/// The subset of Hugging Face's BertConfig this encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_act() -> String {
    "gelu".into()
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// Weights are stored transposed, `(in, out)`, so a projection is `x · w + b` with row-major operands.
struct Layer {
    /// Query, key and value projections side by side: one GEMM instead of three.
    qkv_w: Array2<f32>,
    qkv_b: Vec<f32>,
    attn_out_w: Array2<f32>,
    attn_out_b: Vec<f32>,
    ln_attn: LayerNorm,
    inter_w: Array2<f32>,
    inter_b: Vec<f32>,
    out_w: Array2<f32>,
    out_b: Vec<f32>,
    ln_out: LayerNorm,
}

pub(crate) struct Bert {
    cfg: BertConfig,
    eps: f32,
    word: Array2<f32>,
    position: Array2<f32>,
    /// Row 0 of the token-type table: every text is a single segment.
    token_type0: Vec<f32>,
    ln_emb: LayerNorm,
    layers: Vec<Layer>,
}

/// Activation buffers kept between batches, so steady-state inference allocates (and page-faults) almost nothing.
#[derive(Default)]
pub(crate) struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    attn: Vec<f32>,
    inter: Vec<f32>,
}

/// Reads tensors by name from a safetensors buffer, with an optional `bert.` prefix.
struct Weights<'a> {
    st: SafeTensors<'a>,
    prefix: &'static str,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let full = format!("{}{name}", self.prefix);
        let t = self.st.tensor(&full).map_err(|e| format!("tensor {full}: {e}"))?;
        if t.dtype() != Dtype::F32 {
            return Err(format!("tensor {full} is {:?}, expected F32", t.dtype()));
        }
        if t.shape() != shape {
            return Err(format!("tensor {full} has shape {:?}, expected {shape:?}", t.shape()));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Array2<f32>, String> {
        let v = self.get(name, &[rows, cols])?;
        Array2::from_shape_vec((rows, cols), v).map_err(|e| e.to_string())
    }

    /// A torch `Linear` weight `(out, in)`, returned as `(in, out)` in standard layout.
    fn linear_t(&self, name: &str, out: usize, inp: usize) -> Result<Array2<f32>, String> {
        Ok(self
            .matrix(name, out, inp)?
            .reversed_axes()
            .as_standard_layout()
            .into_owned())
    }

    fn layer_norm(&self, name: &str, n: usize) -> Result<LayerNorm, String> {
        Ok(LayerNorm {
            gamma: self.get(&format!("{name}.weight"), &[n])?,
            beta: self.get(&format!("{name}.bias"), &[n])?,
        })
    }
}

impl Bert {
    pub(crate) fn load(cfg: BertConfig, safetensors: &[u8], source: &Path) -> Result<Bert, String> {
        if cfg.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act `{}` is not supported (only exact `gelu`)",
                cfg.hidden_act
            ));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err("hidden_size must be a multiple of num_attention_heads".into());
        }
        let st = SafeTensors::deserialize(safetensors).map_err(|e| format!("{}: {e}", source.display()))?;
        let prefix = if st.names().iter().any(|n| n.starts_with("bert.")) {
            "bert."
        } else {
            ""
        };
        let w = Weights { st, prefix };
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let token_types =
            w.st.tensor(&format!("{prefix}embeddings.token_type_embeddings.weight"))
                .map_err(|e| e.to_string())?;
        let n_types = token_types.shape().first().copied().unwrap_or(0);
        let token_type = w.matrix("embeddings.token_type_embeddings.weight", n_types, h)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let q = w.linear_t(&format!("{p}.attention.self.query.weight"), h, h)?;
            let k = w.linear_t(&format!("{p}.attention.self.key.weight"), h, h)?;
            let v = w.linear_t(&format!("{p}.attention.self.value.weight"), h, h)?;
            let qkv_w = ndarray::concatenate(Axis(1), &[q.view(), k.view(), v.view()]).map_err(|e| e.to_string())?;
            let mut qkv_b = w.get(&format!("{p}.attention.self.query.bias"), &[h])?;
            qkv_b.extend(w.get(&format!("{p}.attention.self.key.bias"), &[h])?);
            qkv_b.extend(w.get(&format!("{p}.attention.self.value.bias"), &[h])?);
            layers.push(Layer {
                qkv_w: qkv_w.as_standard_layout().into_owned(),
                qkv_b,
                attn_out_w: w.linear_t(&format!("{p}.attention.output.dense.weight"), h, h)?,
                attn_out_b: w.get(&format!("{p}.attention.output.dense.bias"), &[h])?,
                ln_attn: w.layer_norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                inter_w: w.linear_t(&format!("{p}.intermediate.dense.weight"), i, h)?,
                inter_b: w.get(&format!("{p}.intermediate.dense.bias"), &[i])?,
                out_w: w.linear_t(&format!("{p}.output.dense.weight"), h, i)?,
                out_b: w.get(&format!("{p}.output.dense.bias"), &[h])?,
                ln_out: w.layer_norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        Ok(Bert {
            eps: cfg.layer_norm_eps as f32,
            word: w.matrix("embeddings.word_embeddings.weight", cfg.vocab_size, h)?,
            position: w.matrix("embeddings.position_embeddings.weight", cfg.max_position_embeddings, h)?,
            token_type0: token_type.row(0).to_vec(),
            ln_emb: w.layer_norm("embeddings.LayerNorm", h)?,
            layers,
            cfg,
        })
    }

    pub(crate) fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    /// Mean-pooled, L2-normalised embeddings of already tokenised texts (with `[CLS]`/`[SEP]`), one per text.
    /// Runs its parallel parts on the current rayon pool.
    pub(crate) fn embed(&self, seqs: &[&[u32]], scratch: &mut Scratch) -> Result<Vec<Vec<f32>>, String> {
        let h = self.cfg.hidden_size;
        let inter = self.cfg.intermediate_size;
        for s in seqs {
            if s.is_empty() || s.len() > self.cfg.max_position_embeddings {
                return Err(format!(
                    "sequence of {} tokens (1..={} allowed)",
                    s.len(),
                    self.cfg.max_position_embeddings
                ));
            }
            if let Some(bad) = s.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
                return Err(format!("token id {bad} outside the vocabulary"));
            }
        }
        let mut spans = Vec::with_capacity(seqs.len());
        let mut total = 0;
        for s in seqs {
            spans.push((total, s.len()));
            total += s.len();
        }
        if total == 0 {
            return Ok(Vec::new());
        }
        // `resize` only grows: after the largest batch has been seen, no more allocation happens.
        for (buf, width) in [
            (&mut scratch.x, h),
            (&mut scratch.qkv, 3 * h),
            (&mut scratch.ctx, h),
            (&mut scratch.attn, h),
            (&mut scratch.inter, inter),
        ] {
            if buf.len() < total * width {
                buf.resize(total * width, 0.0);
            }
        }
        let block = row_block(total);

        // Embeddings: word + position + token type 0, then LayerNorm; row-local.
        {
            let tokens: Vec<(u32, usize)> = seqs
                .iter()
                .flat_map(|s| s.iter().enumerate().map(|(p, &id)| (id, p)))
                .collect();
            scratch.x[..total * h]
                .par_chunks_mut(block * h)
                .zip(tokens.par_chunks(block))
                .for_each(|(xs, toks)| {
                    for (row, &(id, pos)) in xs.chunks_exact_mut(h).zip(toks) {
                        let word = self.word.row(id as usize);
                        let posv = self.position.row(pos);
                        for (j, out) in row.iter_mut().enumerate() {
                            *out = word[j] + posv[j] + self.token_type0[j];
                        }
                        layer_norm(row, &self.ln_emb, self.eps);
                    }
                });
        }

        for layer in &self.layers {
            self.layer(layer, total, &spans, block, scratch);
        }

        // Mean pooling over each text's tokens (all real: nothing was padded), then L2 normalisation.
        let x = &scratch.x[..total * h];
        Ok(spans
            .iter()
            .map(|&(off, len)| {
                let mut v = vec![0f32; h];
                for row in x[off * h..(off + len) * h].chunks_exact(h) {
                    v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                }
                let inv_len = 1.0 / len as f32;
                v.iter_mut().for_each(|a| *a *= inv_len);
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|a| *a /= norm);
                v
            })
            .collect())
    }

    fn layer(&self, layer: &Layer, total: usize, spans: &[(usize, usize)], block: usize, scratch: &mut Scratch) {
        let h = self.cfg.hidden_size;
        let inter = self.cfg.intermediate_size;
        let heads = self.cfg.num_attention_heads;
        let dh = h / heads;
        let Scratch {
            x,
            qkv,
            ctx,
            attn,
            inter: inter_buf,
        } = scratch;

        // 1. Q, K and V for every token in one GEMM per row block.
        {
            let xs = &x[..total * h];
            qkv[..total * 3 * h]
                .par_chunks_mut(block * 3 * h)
                .zip(xs.par_chunks(block * h))
                .for_each(|(out, xin)| {
                    let rows = xin.len() / h;
                    let xin = ArrayView2::from_shape((rows, h), xin).expect("row block shape");
                    let mut out = ArrayViewMut2::from_shape((rows, 3 * h), out).expect("row block shape");
                    linear(&xin, &layer.qkv_w, &layer.qkv_b, &mut out);
                });
        }

        // 2. Attention, one task per (text, head), over that text's tokens only.
        {
            let qkv = ArrayView2::from_shape((total, 3 * h), &qkv[..total * 3 * h]).expect("qkv shape");
            let mut tasks = Vec::with_capacity(spans.len() * heads);
            let mut rest = ArrayViewMut2::from_shape((total, h), &mut ctx[..total * h]).expect("ctx shape");
            for &(off, len) in spans {
                let (mut text, tail) = rest.split_at(Axis(0), len);
                rest = tail;
                for head in 0..heads {
                    let (this, others) = text.split_at(Axis(1), dh);
                    text = others;
                    tasks.push((off, len, head, this));
                }
            }
            let scale = 1.0 / (dh as f32).sqrt();
            tasks
                .into_par_iter()
                .for_each_init(Vec::new, |scores: &mut Vec<f32>, (off, len, head, mut out)| {
                    // (ndarray's `s!` macro cannot be used: it expands to an `allow(unsafe_code)` the workspace forbids.)
                    let text = qkv.slice_axis(Axis(0), Slice::from(off..off + len));
                    let cols = |start: usize| text.slice_axis(Axis(1), Slice::from(start..start + dh));
                    let (q, k, v) = (cols(head * dh), cols(h + head * dh), cols(2 * h + head * dh));
                    scores.resize(len * len, 0.0);
                    let mut sc = ArrayViewMut2::from_shape((len, len), &mut scores[..len * len]).expect("scores shape");
                    general_mat_mul(scale, &q, &k.t(), 0.0, &mut sc);
                    for row in scores[..len * len].chunks_exact_mut(len) {
                        softmax(row);
                    }
                    let p = ArrayView2::from_shape((len, len), &scores[..len * len]).expect("scores shape");
                    general_mat_mul(1.0, &p, &v, 0.0, &mut out);
                });
        }

        // 3. Everything else is row-local: output projection, residual, LayerNorm, feed-forward, residual, LayerNorm.
        let ctx = &ctx[..total * h];
        x[..total * h]
            .par_chunks_mut(block * h)
            .zip(ctx.par_chunks(block * h))
            .zip(attn[..total * h].par_chunks_mut(block * h))
            .zip(inter_buf[..total * inter].par_chunks_mut(block * inter))
            .for_each(|(((xb, cb), ab), ib)| {
                let rows = xb.len() / h;
                {
                    let cv = ArrayView2::from_shape((rows, h), cb).expect("block shape");
                    let mut av = ArrayViewMut2::from_shape((rows, h), &mut *ab).expect("block shape");
                    linear(&cv, &layer.attn_out_w, &layer.attn_out_b, &mut av);
                }
                for (arow, xrow) in ab.chunks_exact_mut(h).zip(xb.chunks_exact(h)) {
                    arow.iter_mut().zip(xrow).for_each(|(a, x)| *a += x);
                    layer_norm(arow, &layer.ln_attn, self.eps);
                }
                {
                    let av = ArrayView2::from_shape((rows, h), &*ab).expect("block shape");
                    let mut iv = ArrayViewMut2::from_shape((rows, inter), &mut *ib).expect("block shape");
                    linear(&av, &layer.inter_w, &layer.inter_b, &mut iv);
                }
                ib.iter_mut().for_each(|v| *v = gelu(*v));
                {
                    let iv = ArrayView2::from_shape((rows, inter), &*ib).expect("block shape");
                    let mut xv = ArrayViewMut2::from_shape((rows, h), &mut *xb).expect("block shape");
                    linear(&iv, &layer.out_w, &layer.out_b, &mut xv);
                }
                for (xrow, arow) in xb.chunks_exact_mut(h).zip(ab.chunks_exact(h)) {
                    xrow.iter_mut().zip(arow).for_each(|(x, a)| *x += a);
                    layer_norm(xrow, &layer.ln_out, self.eps);
                }
            });
    }
}

/// Rows per parallel task: a few tasks per thread for balance, yet tall enough that the GEMM stays efficient.
fn row_block(total: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    total.div_ceil(threads * 2).max(32)
}

/// `out = x · w + b`; `b` is written first and the GEMM accumulates onto it, saving a pass.
fn linear(x: &ArrayView2<f32>, w: &Array2<f32>, b: &[f32], out: &mut ArrayViewMut2<f32>) {
    for mut row in out.rows_mut() {
        row.as_slice_mut().expect("contiguous row").copy_from_slice(b);
    }
    general_mat_mul(1.0, x, w, 1.0, out);
}

/// Sum with eight independent accumulators, so the compiler can vectorise it (f32 addition is not associative).
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

fn layer_norm(row: &mut [f32], ln: &LayerNorm, eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let mut sq = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
    for c in chunks {
        for i in 0..8 {
            let d = c[i] - mean;
            sq[i] += d * d;
        }
    }
    let var = (sq.iter().sum::<f32>() + rest) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(&ln.gamma).zip(&ln.beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let inv = 1.0 / sum(row);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `e^x` to about 1 ulp, branch-free so loops over it vectorise (std's `exp` is a libm call per element).
/// Cephes' expf: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial for e^r, and 2^n built from its bits.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Round x·log2(e) to the nearest integer by adding 1.5·2^23: the integer lands in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    let n_int = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    y * f32::from_bits(((n_int + 127) << 23) as u32)
}

/// Exact (erf) GELU as BERT uses it: 0.5·x·(1 + erf(x/√2)).
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf to about 4e-7 absolute, as a rational function (Eigen's `generic_fast_erf_float`), which vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_6e-3;
    p = p * x2 + -1.609_603_3e-2;
    p *= x;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_474e-2;
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
    }

    #[test]
    fn erf_is_accurate_enough_for_gelu() {
        // Reference erf from a series/continued fraction in f64 would be overkill; use known values.
        for (x, want) in [
            (0.0f32, 0.0f64),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (2.0, 0.995_322_265_0),
            (-1.5, -0.966_105_146_5),
            (3.5, 0.999_999_256_9),
            (6.0, 1.0),
        ] {
            assert!((erf(x) as f64 - want).abs() < 1e-6, "erf({x}) = {} want {want}", erf(x));
        }
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut r = vec![1.0, 2.0, 3.0, -50.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((r[2] - 0.665_240_9).abs() < 1e-6);
    }
}
