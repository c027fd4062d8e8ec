//! A BERT encoder for CPU inference on packed (unpadded) token batches, written for throughput on few cores.
//!
//! Why not candle's `BertModel`: on the 2-core development machine it used about 2.5x the CPU time of PyTorch for
//! the same passages (per-op allocations and page faults, hundreds of tiny multithreaded GEMMs in attention, a
//! scalar `erf`), while a plain GEMM through `matrixmultiply` runs about as fast as PyTorch's. The workspace
//! forbids `unsafe`, so the GEMMs go through ndarray's safe `general_mat_mul`.
//!
//! Padding is never computed: the tokens of all texts in a batch are packed into one `(tokens, hidden)` matrix
//! for the row-local work (projections, feed-forward, layer norms), and attention runs per text over that text's
//! own tokens only. This gives exactly what a padded batch with an attention mask gives (masked keys get zero
//! weight, padded positions are left out of mean pooling), without the wasted arithmetic.
//!
//! Parallelism is coarse: each projection is split into a few single-threaded GEMMs (by rows or by columns, see
//! `par_linear`), attention into (text, head) tasks.
//!
//! Queries (a handful of tokens) take another path: `linear_few_rows` over int8 copies of the weights, laid out
//! for streaming (see `Blocked`): for so few rows a GEMM would spend its time packing; this pass reads each weight
//! once for all the rows. It is the server's main cost per uncached search (docs/benchmarks.md has the profile).
//!
//! Measured with `bench/embed.sh` (release build, `ROUNDS=2`, same texts, alternating with the peer:
//! sentence-transformers 6.2.0 / torch 2.15.0 on 2 threads; 2-core AMD EPYC VM with AVX-512), 2026-11-28:
//! - 5,000 short sentences (25.6 tokens): 256.7 / 267.6 texts/s vs 189.8 / 184.8 (1.35× / 1.45× per round),
//!   36–37 vs 52–53 CPU-seconds;
//! - 640 chunks of 200 words (254 tokens): 24.1 / 24.6 texts/s vs 23.1 / 22.2 (1.04× / 1.11×), 51 vs 55–57
//!   CPU-seconds. Both sides are GEMM-bound here at about the same rate (perf: 74 % in matrixmultiply's FMA
//!   kernel, 12 % packing, 4.5 % softmax before its max was vectorised);
//! - one short query alone: 2.6–2.9 ms vs 10–13 ms. The same query took 9–10 ms with bfloat16 weights read row
//!   piece by row piece, and 8–12 ms with the f32 weights before that (an earlier, slower VM).

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

/// A projection `x · w + b`. The weight is stored transposed, `(in, out)`, so both operands are row-major, twice:
/// in f32 for the GEMMs of batches, and in int8 for the few-rows path of queries (see `linear_few_rows`).
struct Linear {
    w: Array2<f32>,
    /// `w` quantised to int8 with a scale per column and group of rows, for the few-rows path (see `Blocked`).
    q: Blocked,
    b: Vec<f32>,
}

impl Linear {
    fn new(w: Array2<f32>, b: Vec<f32>) -> Linear {
        let w = w.as_standard_layout().into_owned();
        let q = Blocked::new(&w);
        Linear { w, q, b }
    }
}

struct Layer {
    /// Query, key and value projections side by side: one GEMM instead of three.
    qkv: Linear,
    attn_out: Linear,
    ln_attn: LayerNorm,
    inter: Linear,
    out: Linear,
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
/// About 15 KB per token: ~130 MB for a batch of 32 texts of 256 tokens.
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
                qkv: Linear::new(qkv_w, qkv_b),
                attn_out: Linear::new(
                    w.linear_t(&format!("{p}.attention.output.dense.weight"), h, h)?,
                    w.get(&format!("{p}.attention.output.dense.bias"), &[h])?,
                ),
                ln_attn: w.layer_norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                inter: Linear::new(
                    w.linear_t(&format!("{p}.intermediate.dense.weight"), i, h)?,
                    w.get(&format!("{p}.intermediate.dense.bias"), &[i])?,
                ),
                out: Linear::new(
                    w.linear_t(&format!("{p}.output.dense.weight"), h, i)?,
                    w.get(&format!("{p}.output.dense.bias"), &[h])?,
                ),
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
        let (x, qkv, ctx, attn, inter_buf) = (
            &mut x[..total * h],
            &mut qkv[..total * 3 * h],
            &mut ctx[..total * h],
            &mut attn[..total * h],
            &mut inter_buf[..total * inter],
        );

        // Q, K and V for every token in one GEMM.
        par_linear(x, &layer.qkv, qkv, total);

        // Attention, one task per (text, head), over that text's tokens only.
        {
            let qkv = ArrayView2::from_shape((total, 3 * h), &*qkv).expect("qkv shape");
            let mut tasks = Vec::with_capacity(spans.len() * heads);
            let mut rest = ArrayViewMut2::from_shape((total, h), &mut *ctx).expect("ctx shape");
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

        // Output projection, residual, LayerNorm: `attn` becomes the attention block's output.
        par_linear(ctx, &layer.attn_out, attn, total);
        residual_layer_norm(attn, x, &layer.ln_attn, self.eps, h, block);

        // Feed-forward, residual, LayerNorm: `x` becomes the layer's output.
        par_linear(attn, &layer.inter, inter_buf, total);
        inter_buf
            .par_chunks_mut(block * inter)
            .for_each(|c| c.iter_mut().for_each(|v| *v = gelu(*v)));
        par_linear(inter_buf, &layer.out, x, total);
        residual_layer_norm(x, attn, &layer.ln_out, self.eps, h, block);
    }
}

/// Rows per parallel task of the elementwise passes.
fn row_block(total: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    total.div_ceil(threads * 2).max(32)
}

/// `rows = layer_norm(rows + residual)`, row by row.
fn residual_layer_norm(rows: &mut [f32], residual: &[f32], ln: &LayerNorm, eps: f32, h: usize, block: usize) {
    rows.par_chunks_mut(block * h)
        .zip(residual.par_chunks(block * h))
        .for_each(|(rb, res)| {
            for (row, r) in rb.chunks_exact_mut(h).zip(res.chunks_exact(h)) {
                row.iter_mut().zip(r).for_each(|(a, b)| *a += b);
                layer_norm(row, ln, eps);
            }
        });
}

/// `out = x · w + b` split over the pool. Every GEMM task packs (copies) its whole share of `w` and of `x`; splitting
/// the rows makes each task pack all of `w`, splitting the columns makes each pack all of `x`. So few rows
/// (queries, small batches) split by columns and many rows by rows, whichever copies less.
fn par_linear(x: &[f32], lin: &Linear, out: &mut [f32], rows: usize) {
    let (w, b) = (&lin.w, &lin.b[..]);
    let (k, n) = w.dim();
    let threads = rayon::current_num_threads().max(1);
    // Two tasks per thread, so a thread slowed by another process does not hold the others up.
    let tasks = threads * 2;
    let x = ArrayView2::from_shape((rows, k), x).expect("linear input shape");
    let mut out = ArrayViewMut2::from_shape((rows, n), out).expect("linear output shape");
    if rows <= FEW_ROWS {
        // Columns split into tasks of whole blocks.
        let width = if threads == 1 { n } else { n.div_ceil(tasks).next_multiple_of(BLOCK) };
        column_parts(&mut out, width).into_par_iter().for_each(|(start, mut part)| {
            let end = start + part.ncols();
            linear_few_rows(&x, &lin.q, start / BLOCK..end.div_ceil(BLOCK), &b[start..end], &mut part);
        });
    } else if threads == 1 {
        linear(&x, &w.view(), b, &mut out);
    } else if rows <= n {
        // Extra copying: (tasks - 1)·rows·k when splitting columns, (tasks - 1)·k·n when splitting rows.
        let width = n.div_ceil(tasks).next_multiple_of(8);
        column_parts(&mut out, width).into_par_iter().for_each(|(start, mut part)| {
            let end = start + part.ncols();
            let ws = w.slice_axis(Axis(1), Slice::from(start..end));
            linear(&x, &ws, &b[start..end], &mut part);
        });
    } else {
        let height = rows.div_ceil(tasks);
        let xs: Vec<_> = x.axis_chunks_iter(Axis(0), height).collect();
        let outs: Vec<_> = out.axis_chunks_iter_mut(Axis(0), height).collect();
        xs.into_par_iter()
            .zip(outs)
            .for_each(|(xb, mut ob)| linear(&xb, &w.view(), b, &mut ob));
    }
}

/// `out` cut into column slices of `width` (the last may be narrower), each with its first column's index.
fn column_parts<'a>(out: &'a mut ArrayViewMut2<'_, f32>, width: usize) -> Vec<(usize, ArrayViewMut2<'a, f32>)> {
    out.axis_chunks_iter_mut(Axis(1), width).enumerate().map(|(i, part)| (i * width, part)).collect()
}

/// Up to this many rows (a query is ~10 tokens; concurrent queries are batched), `linear_few_rows` beats the packed
/// GEMM. Measured (`ragd bench embed --batch 2|4` on short sentences): at ~50 rows the streaming int8 pass embedded
/// 109 texts/s against the GEMM's 99, at ~100 rows 112 against 124; 64 sits between the two.
const FEW_ROWS: usize = 64;

/// Columns per block of a [`Blocked`] weight: 64 int8 weights are one cache line, 64 f32 sums eight AVX registers.
const BLOCK: usize = 64;

/// Rows sharing one scale per column in a [`Blocked`] weight. One scale per whole column was too coarse: a
/// one-word query's vector fell to cosine 0.9985 from sentence-transformers' (the tests ask for 0.999).
const GROUP: usize = 32;

/// A `(in, out)` weight quantised to int8, symmetric, with one scale per column and group of [`GROUP`] rows
/// (`w[k][j] ≈ q[k][j] · scale[k / GROUP][j]`), laid out in blocks of [`BLOCK`] columns, each block's rows one
/// after another, so that a task multiplying by a range of columns reads one contiguous stretch of memory from
/// start to end (the hardware prefetcher keeps up), where the row-major f32 weight would make it read short pieces
/// of every row, four times the bytes.
struct Blocked {
    /// `blocks × in × BLOCK`; the last block is padded with zeros.
    q: Vec<i8>,
    /// `blocks × groups × BLOCK`, padding columns 1.
    scale: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl Blocked {
    fn new(w: &Array2<f32>) -> Blocked {
        let (k, n) = w.dim();
        let (blocks, groups) = (n.div_ceil(BLOCK), k.div_ceil(GROUP));
        let at = |blk: usize, g: usize, j: usize| (blk * groups + g) * BLOCK + j;
        let mut scale = vec![0f32; blocks * groups * BLOCK];
        for ((r, c), &v) in w.indexed_iter() {
            let s = &mut scale[at(c / BLOCK, r / GROUP, c % BLOCK)];
            *s = s.max(v.abs());
        }
        scale.iter_mut().for_each(|s| *s = if *s > 0.0 { *s / 127.0 } else { 1.0 });
        let mut q = vec![0i8; blocks * k * BLOCK];
        for ((r, c), &v) in w.indexed_iter() {
            let (blk, j) = (c / BLOCK, c % BLOCK);
            q[(blk * k + r) * BLOCK + j] = (v / scale[at(blk, r / GROUP, j)]).round().clamp(-127.0, 127.0) as i8;
        }
        Blocked { q, scale, rows: k, cols: n }
    }

    /// Row `r` of block `blk`, dequantised to f32 (vectorises to sign extensions, conversions and multiplies).
    #[inline(always)]
    fn row(&self, blk: usize, r: usize) -> [f32; BLOCK] {
        let at = (blk * self.rows + r) * BLOCK;
        let q: &[i8; BLOCK] = self.q[at..at + BLOCK].try_into().expect("a whole block row");
        let s_at = (blk * self.rows.div_ceil(GROUP) + r / GROUP) * BLOCK;
        let s: &[f32; BLOCK] = self.scale[s_at..s_at + BLOCK].try_into().expect("a whole block of scales");
        std::array::from_fn(|j| q[j] as f32 * s[j])
    }
}

/// `out = x · w[:, blocks] + b` for a handful of rows (a query's tokens), with the int8 weight `w`.
///
/// A GEMM copies ("packs") all of `w` before multiplying, which for a few rows costs more than the multiplication;
/// this streams the weights once instead. Streaming them is then what a query costs: perf showed most of the time
/// stalled on weight loads when they were f32 (42 MB per forward pass, more than this machine's caches) read row
/// piece by row piece. Here they are int8 (10.6 MB, plus 1.3 MB of scales) read front to back, each group of four
/// rows dequantised to f32 once and used for every row of `x`, the sums of a block (rows × 64 floats) kept in L1.
/// The vectors stay within the cosine bound the tests check against sentence-transformers.
fn linear_few_rows(
    x: &ArrayView2<f32>,
    w: &Blocked,
    blocks: std::ops::Range<usize>,
    b: &[f32],
    out: &mut ArrayViewMut2<f32>,
) {
    let k = x.ncols();
    debug_assert_eq!(k, w.rows);
    let xs: Vec<&[f32]> = x.rows().into_iter().map(|r| r.to_slice().expect("contiguous input row")).collect();
    let mut outs: Vec<&mut [f32]> = out
        .rows_mut()
        .into_iter()
        .map(|r| r.into_slice().expect("contiguous row"))
        .collect();
    let mut acc = vec![[0f32; BLOCK]; xs.len()];
    let first = blocks.start;
    for blk in blocks {
        acc.iter_mut().for_each(|a| *a = [0.0; BLOCK]);
        let mut kk = 0;
        while kk + 4 <= k {
            let (w0, w1, w2, w3) = (w.row(blk, kk), w.row(blk, kk + 1), w.row(blk, kk + 2), w.row(blk, kk + 3));
            for (a, xr) in acc.iter_mut().zip(&xs) {
                let (a0, a1, a2, a3) = (xr[kk], xr[kk + 1], xr[kk + 2], xr[kk + 3]);
                for j in 0..BLOCK {
                    a[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j];
                }
            }
            kk += 4;
        }
        for kk in kk..k {
            let w0 = w.row(blk, kk);
            for (a, xr) in acc.iter_mut().zip(&xs) {
                for j in 0..BLOCK {
                    a[j] += xr[kk] * w0[j];
                }
            }
        }
        // This block's columns within `out` (the last block of the matrix may be partial).
        let lo = (blk - first) * BLOCK;
        let width = BLOCK.min(w.cols - blk * BLOCK);
        for (o, a) in outs.iter_mut().zip(&acc) {
            for ((o, a), b) in o[lo..lo + width].iter_mut().zip(a).zip(&b[lo..lo + width]) {
                *o = a + b;
            }
        }
    }
}

/// `out = x · w + b`; `b` is written first and the GEMM accumulates onto it, saving a pass.
fn linear(x: &ArrayView2<f32>, w: &ArrayView2<f32>, b: &[f32], out: &mut ArrayViewMut2<f32>) {
    for mut row in out.rows_mut() {
        // Rows of a column slice are still contiguous (unit column stride).
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

/// Largest element, with eight independent lanes so it vectorises (a fold with `f32::max` stays scalar: one
/// dependent compare per element, which made the max the slowest part of softmax on 254-token texts).
fn max(xs: &[f32]) -> f32 {
    let pick = |a: f32, b: f32| if b > a { b } else { a };
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = pick(acc[i], c[i]);
        }
    }
    acc.iter().chain(rest).fold(f32::NEG_INFINITY, |m, &v| pick(m, v))
}

/// In place; the exponentials and their sum in one pass.
fn softmax(row: &mut [f32]) {
    let max = max(row);
    let mut acc = [0f32; 8];
    let mut chunks = row.chunks_exact_mut(8);
    for c in &mut chunks {
        for i in 0..8 {
            c[i] = exp(c[i] - max);
            acc[i] += c[i];
        }
    }
    let mut total = acc.iter().sum::<f32>();
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        total += *v;
    }
    let inv = 1.0 / total;
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
    fn few_rows_path_equals_the_gemm_path() {
        // Deterministic pseudo-random values; 39 inner rows exercise the remainder after the groups of four.
        let val = |i: usize| ((i * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0;
        let x = Array2::from_shape_fn((5, 39), |(r, c)| val(r * 39 + c));
        // The GEMM on the dequantised weights, against the few-rows path on the last block of them (columns
        // 64..100 of 100: a partial block).
        let w = Array2::from_shape_fn((39, 100), |(r, c)| val(7 + r * 100 + c));
        let b: Vec<f32> = (0..100).map(|i| val(3 * i)).collect();
        let q = Blocked::new(&w);
        let deq = Array2::from_shape_fn((39, 100), |(r, c)| q.row(c / BLOCK, r)[c % BLOCK]);
        let mut a = Array2::zeros((5, 100));
        let mut c = Array2::zeros((5, 36));
        linear(&x.view(), &deq.view(), &b, &mut a.view_mut());
        linear_few_rows(&x.view(), &q, 1..2, &b[64..100], &mut c.view_mut());
        for r in 0..5 {
            for j in 0..36 {
                let (p, q) = (a[[r, j + 64]], c[[r, j]]);
                assert!((p - q).abs() < 1e-5, "{p} vs {q}");
            }
        }
        // Quantisation error stays within half a step of the group's scale for that column.
        let groups = 39usize.div_ceil(GROUP);
        for ((r, c), &v) in w.indexed_iter() {
            let step = q.scale[((c / BLOCK) * groups + r / GROUP) * BLOCK + c % BLOCK];
            assert!((deq[[r, c]] - v).abs() <= step / 2.0 + 1e-7, "{v} -> {}", deq[[r, c]]);
        }
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut r = vec![1.0, 2.0, 3.0, -50.0];
        softmax(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((r[2] - 0.665_240_9).abs() < 1e-6);
        // Longer than one lane group, largest element in the remainder, then in a lane.
        for at in [18, 5] {
            let mut long: Vec<f32> = (0..19).map(|i| (i as f32 * 0.37).sin()).collect();
            long[at] = 4.0;
            assert_eq!(max(&long), 4.0);
            let expect: Vec<f32> = long.iter().map(|v| (v - 4.0).exp()).collect();
            let total: f32 = expect.iter().sum();
            softmax(&mut long);
            for (got, e) in long.iter().zip(&expect) {
                assert!((got - e / total).abs() < 1e-6, "{got} vs {}", e / total);
            }
        }
    }
}
