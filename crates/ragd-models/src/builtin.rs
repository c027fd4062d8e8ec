//! The built-in embedder: all-MiniLM-L6-v2 on the CPU (f32; int8 weights for a query's few tokens; see `bert`), with sentence-transformers' exact semantics and
//! a dedicated worker thread that batches concurrent requests together.
//!
//! Semantics, matching `SentenceTransformer("all-MiniLM-L6-v2").encode(texts, normalize_embeddings=True)`:
//! truncation to 256 tokens including `[CLS]`/`[SEP]` (the shipped tokenizer.json says 128, which is the
//! tokenizer's setting, not the model's `max_seq_length`), mean pooling over the real tokens, L2 normalisation.
//! sentence-transformers pads each batch to its longest text and masks the padding; the encoder here packs the
//! tokens and never computes padding at all, which yields the same vectors with less work (see `bert`).
//!
//! Threading: `embed()` only sends a message and awaits a oneshot, so async runtime threads never run the model.
//! The worker thread owns the model and a private rayon pool (the encoder and the tokenizer both use rayon),
//! sized to the machine's cores so inference does not oversubscribe the CPU.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use async_trait::async_trait;
use ragd_core::embed::{EmbedKind, Embedder, TokenCounter};
use ragd_core::{Error, Result};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};
use tokio::sync::oneshot;

use crate::bert::{Bert, BertConfig, Scratch};

/// Model id recorded with collections.
pub const BUILTIN_MODEL_ID: &str = "builtin:all-MiniLM-L6-v2";
/// Vector length of all-MiniLM-L6-v2.
pub const BUILTIN_DIMENSIONS: usize = 384;
/// sentence-transformers' `max_seq_length` for this model (sentence_bert_config.json), special tokens included.
pub const MAX_TOKENS: usize = 256;

/// Tuning for [`BuiltinEmbedder`].
#[derive(Debug, Clone)]
pub struct BuiltinOptions {
    /// Most texts in one forward pass (sentence-transformers' default, 32). Larger batches barely speed things up
    /// and make a query that arrives behind them wait longer.
    pub max_batch: usize,
    /// Threads of the inference pool; `None` = available cores.
    pub threads: Option<usize>,
}

impl Default for BuiltinOptions {
    fn default() -> Self {
        BuiltinOptions {
            max_batch: 32,
            threads: None,
        }
    }
}

/// all-MiniLM-L6-v2 embedder; cheap to share behind an `Arc`, all clones of the handle feed one worker.
pub struct BuiltinEmbedder {
    jobs: mpsc::Sender<Job>,
    alive: Arc<AtomicBool>,
    /// Tokenizer without truncation or padding, for counting.
    counting_tokenizer: Arc<Tokenizer>,
}

struct Job {
    texts: Vec<String>,
    kind: EmbedKind,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>>>,
}

/// How long the worker keeps its activation buffers without work. Reusing them avoids page-faulting fresh memory
/// for every batch during ingestion; freeing them keeps an idle server small.
const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// Files the model folder must hold.
const REQUIRED_FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];

fn load_error(message: String) -> Error {
    Error::unavailable("embedder", message)
}

impl BuiltinEmbedder {
    /// Loads the model from a folder with config.json, model.safetensors and tokenizer.json, and starts the worker.
    /// Blocking (reads ~90 MB); call it from `spawn_blocking` or before the runtime starts.
    pub fn load(dir: &Path, opts: BuiltinOptions) -> Result<Self> {
        for f in REQUIRED_FILES {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(load_error(format!(
                    "built-in embedder file {} is missing; run `ragd models fetch` to install all-MiniLM-L6-v2",
                    p.display()
                )));
            }
        }
        let model = Model::load(dir)?;
        let mut counting = model.tokenizer.clone();
        counting
            .with_truncation(None)
            .map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
        counting.with_padding(None);

        let threads = opts
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ragd-embed-{i}"))
            .build()
            .map_err(|e| Error::internal(format!("cannot start the embedder's thread pool: {e}")))?;
        let (tx, rx) = mpsc::channel::<Job>();
        let alive = Arc::new(AtomicBool::new(true));
        let worker = Worker {
            model,
            scratch: Scratch::default(),
            max_batch: opts.max_batch.max(1),
            pool,
            alive: alive.clone(),
        };
        std::thread::Builder::new()
            .name("ragd-embedder".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| Error::internal(format!("cannot start the embedder thread: {e}")))?;
        Ok(BuiltinEmbedder {
            jobs: tx,
            alive,
            counting_tokenizer: Arc::new(counting),
        })
    }

    /// Counts tokens as the model's tokenizer does, without `[CLS]`/`[SEP]` and without truncation, so the
    /// chunker can keep chunks within [`MAX_TOKENS`] (minus 2 for the special tokens).
    pub fn token_counter(&self) -> Arc<dyn TokenCounter> {
        Arc::new(BuiltinTokenCounter {
            tokenizer: self.counting_tokenizer.clone(),
        })
    }
}

#[async_trait]
impl Embedder for BuiltinEmbedder {
    fn model_id(&self) -> &str {
        BUILTIN_MODEL_ID
    }

    fn dimensions(&self) -> usize {
        BUILTIN_DIMENSIONS
    }

    async fn embed(&self, texts: Vec<String>, kind: EmbedKind) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::unavailable("embedder", "the built-in embedder's worker thread has stopped");
        self.jobs.send(Job { texts, kind, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    async fn ready(&self) -> Result<()> {
        if self.alive.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::unavailable(
                "embedder",
                "the built-in embedder's worker thread has stopped",
            ))
        }
    }
}

struct BuiltinTokenCounter {
    tokenizer: Arc<Tokenizer>,
}

impl TokenCounter for BuiltinTokenCounter {
    fn count_tokens(&self, text: &str) -> usize {
        // encode_fast skips offsets, which counting does not need. A text the tokenizer rejects cannot be embedded
        // either; counting it by characters keeps the chunker going and the embed call reports the problem.
        match self.tokenizer.encode_fast(text, false) {
            Ok(enc) => enc.len(),
            Err(_) => text.chars().count(),
        }
    }
}

/// Weights and the truncating tokenizer; owned by the worker thread.
struct Model {
    bert: Bert,
    tokenizer: Tokenizer,
}

impl Model {
    fn load(dir: &Path) -> Result<Model> {
        let path = |f: &str| -> PathBuf { dir.join(f) };
        let config: BertConfig = serde_json::from_slice(
            &std::fs::read(path("config.json")).map_err(|e| load_error(format!("cannot read config.json: {e}")))?,
        )
        .map_err(|e| load_error(format!("{} is not a BERT config: {e}", path("config.json").display())))?;
        let mut tokenizer = Tokenizer::from_file(path("tokenizer.json"))
            .map_err(|e| load_error(format!("cannot load {}: {e}", path("tokenizer.json").display())))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
        // No padding: the encoder packs each batch's tokens without any (see `bert`), which computes exactly what
        // padding to the longest text plus an attention mask computes.
        tokenizer.with_padding(None);

        // Read into memory once rather than memory-mapped: mapping needs `unsafe`, which the workspace forbids.
        // The weights are converted into their own buffers, so these bytes are freed right after loading.
        let weights = path("model.safetensors");
        let bytes =
            std::fs::read(&weights).map_err(|e| load_error(format!("cannot read {}: {e}", weights.display())))?;
        let bert = Bert::load(config, &bytes, &weights)
            .map_err(|e| load_error(format!("{} does not hold a usable BERT model: {e}", weights.display())))?;
        if bert.hidden_size() != BUILTIN_DIMENSIONS {
            return Err(load_error(format!(
                "{} has hidden size {}, expected {BUILTIN_DIMENSIONS} for all-MiniLM-L6-v2",
                dir.display(),
                bert.hidden_size()
            )));
        }
        Ok(Model { bert, tokenizer })
    }

    fn tokenize(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self
            .tokenizer
            .encode_batch_fast(inputs, true)
            .map_err(|e| Error::invalid("invalid_request", format!("cannot tokenise text: {e}")))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }
}

/// A request being served: its tokenised texts in the order they will be batched, and the answers so far.
struct Pending {
    kind: EmbedKind,
    tokens: Vec<Vec<u32>>,
    /// Text indices, longest first, so each batch holds texts of similar length (as sentence-transformers
    /// does to cut padding; with packed batches it mainly evens out the attention work across batches).
    order: Vec<usize>,
    next: usize,
    out: Vec<Vec<f32>>,
    done: usize,
    /// Taken when the answer (or an error) is sent.
    reply: Option<oneshot::Sender<Result<Vec<Vec<f32>>>>>,
}

struct Worker {
    model: Model,
    scratch: Scratch,
    max_batch: usize,
    pool: rayon::ThreadPool,
    alive: Arc<AtomicBool>,
}

/// Marks the embedder dead however the worker exits, panics included, so `ready()` tells the truth.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Worker {
    /// The receiver stays outside `Worker` so `&Worker` can cross into the rayon pool (a Receiver is not Sync).
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let _guard = AliveGuard(self.alive.clone());
        let mut queue: VecDeque<Pending> = VecDeque::new();
        loop {
            // Block only when there is nothing to do; otherwise pick up whatever arrived during the last batch.
            if queue.is_empty() {
                let job = match rx.recv_timeout(IDLE_RELEASE) {
                    Ok(job) => Ok(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // Idle: give back the activation buffers (up to ~130 MB after a batch of long texts).
                        self.scratch = Scratch::default();
                        rx.recv().map_err(|_| ())
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
                };
                match job {
                    Ok(job) => self.admit(job, &mut queue),
                    Err(()) => return, // every BuiltinEmbedder handle is gone
                }
            }
            while let Ok(job) = rx.try_recv() {
                self.admit(job, &mut queue);
            }
            self.run_batch(&mut queue);
        }
    }

    fn admit(&self, job: Job, queue: &mut VecDeque<Pending>) {
        let tokens = match self.pool.install(|| self.model.tokenize(&job.texts)) {
            Ok(t) => t,
            Err(e) => {
                let _ = job.reply.send(Err(e));
                return;
            }
        };
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(tokens[i].len()));
        let n = tokens.len();
        let pending = Pending {
            kind: job.kind,
            tokens,
            order,
            next: 0,
            out: vec![Vec::new(); n],
            done: 0,
            reply: Some(job.reply),
        };
        // Queries are short and a user waits on each; they jump ahead of bulk ingestion.
        if pending.kind == EmbedKind::Query {
            let at = queue
                .iter()
                .position(|p| p.kind != EmbedKind::Query)
                .unwrap_or(queue.len());
            queue.insert(at, pending);
        } else {
            queue.push_back(pending);
        }
    }

    /// Takes up to `max_batch` texts from the front of the queue (spanning requests), runs them, hands out answers.
    fn run_batch(&mut self, queue: &mut VecDeque<Pending>) {
        // A caller that went away (timeout, disconnect) no longer needs its vectors; skip the work.
        queue.retain(|p| p.reply.as_ref().is_some_and(|r| !r.is_closed()));
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(self.max_batch); // (queue slot, text index)
        for (slot, p) in queue.iter_mut().enumerate() {
            while p.next < p.order.len() && picks.len() < self.max_batch {
                picks.push((slot, p.order[p.next]));
                p.next += 1;
            }
            if picks.len() == self.max_batch {
                break;
            }
        }
        if picks.is_empty() {
            return;
        }
        let batch: Vec<&[u32]> = picks
            .iter()
            .map(|&(slot, i)| queue[slot].tokens[i].as_slice())
            .collect();
        let (model, scratch, pool) = (&self.model, &mut self.scratch, &self.pool);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.install(|| model.bert.embed(&batch, scratch))
        }));
        let result = match result {
            Ok(Ok(vectors)) => Ok(vectors),
            Ok(Err(e)) => Err(format!("inference failed: {e}")),
            // A panic in the maths must fail this batch's requests, not take the worker down with it. The scratch
            // buffers may be half-written, which is harmless: every batch overwrites what it reads.
            Err(_) => Err("inference panicked".to_string()),
        };
        match result {
            Ok(vectors) => {
                for (&(slot, i), v) in picks.iter().zip(vectors) {
                    let p = &mut queue[slot];
                    p.out[i] = v;
                    p.done += 1;
                }
            }
            Err(message) => {
                tracing::error!(%message, "built-in embedder batch failed");
                for &(slot, _) in &picks {
                    // The whole request fails: a partial answer is useless to the caller.
                    let p = &mut queue[slot];
                    if let Some(reply) = p.reply.take() {
                        let _ = reply.send(Err(Error::internal(format!("built-in embedder: {message}"))));
                    }
                    p.next = p.order.len();
                    p.done = p.order.len();
                }
            }
        }
        // Answer and drop finished requests; an abandoned caller (dropped future) just ignores the send error.
        queue.retain_mut(|p| {
            if p.done < p.order.len() {
                return true;
            }
            if let Some(reply) = p.reply.take() {
                let _ = reply.send(Ok(std::mem::take(&mut p.out)));
            }
            false
        });
    }
}
