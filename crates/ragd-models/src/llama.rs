//! The built-in generator: Gemma 3 270M (Q4_K_M GGUF) run in-process by llama.cpp.
//!
//! llama.cpp contexts must not be created in parallel, and a decode blocks its thread for
//! milliseconds to seconds, so generation runs on dedicated worker threads, each with one context
//! created up front, one after the other. Requests queue for the next free worker. Each piece of
//! text is sent as soon as it is decoded; a closed receiver stops the generation at the next token.
//!
//! The model is a base (not instruction-tuned) model: the prompt is completion-style (instructions,
//! passages, `Question: …`, `Answer:`), and stop sequences end the answer cleanly.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, mpsc as std_mpsc};
use std::thread;

use async_trait::async_trait;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use ragd_core::error::{Error, Result};
use ragd_core::generate::{FinishReason, GenerationRequest, Generated, Generator, StopScanner, completion_prompt, completion_stops};
use tokio::sync::{mpsc, oneshot};

/// Tokens decoded together while reading the prompt.
const PROMPT_BATCH: usize = 512;
/// Recent tokens the repetition penalty looks at (small base models loop without one).
const PENALTY_LAST_N: i32 = 64;
const PENALTY_REPEAT: f32 = 1.1;

#[derive(Debug, Clone)]
pub struct BuiltinGeneratorOptions {
    /// Context size of each worker (prompt + answer), in tokens.
    pub context_tokens: usize,
    /// Threads each decode uses; 0 = the number of cores.
    pub threads: usize,
    /// Generations run at once (one llama.cpp context each).
    pub workers: usize,
}

impl Default for BuiltinGeneratorOptions {
    fn default() -> Self {
        BuiltinGeneratorOptions { context_tokens: 4096, threads: 0, workers: 1 }
    }
}

struct Job {
    req: GenerationRequest,
    pieces: mpsc::Sender<String>,
    done: oneshot::Sender<Result<Generated>>,
}

pub struct BuiltinGenerator {
    id: String,
    model: Arc<LlamaModel>,
    context_tokens: usize,
    jobs: Mutex<std_mpsc::Sender<Job>>,
}

fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut b = LlamaBackend::init().map_err(|e| e.to_string())?;
            // llama.cpp prints every tensor it loads to stderr; ragd logs through tracing instead.
            b.void_logs();
            Ok(b)
        })
        .as_ref()
        .map_err(|e| Error::internal(format!("llama.cpp backend: {e}")))
}

impl BuiltinGenerator {
    /// Loads the GGUF and starts the workers (blocking: call from a blocking thread or at start-up).
    pub fn load(gguf: &Path, options: BuiltinGeneratorOptions) -> Result<BuiltinGenerator> {
        if !gguf.is_file() {
            return Err(Error::unavailable(
                "generator",
                format!("the built-in generator's model {} is missing; run `ragd models fetch`", gguf.display()),
            ));
        }
        let backend = backend()?;
        let model = LlamaModel::load_from_file(backend, gguf, &LlamaModelParams::default())
            .map_err(|e| Error::internal(format!("cannot load {}: {e}", gguf.display())))?;
        let model = Arc::new(model);
        let context_tokens = options.context_tokens.clamp(512, model.n_ctx_train() as usize);
        let threads = if options.threads == 0 { thread::available_parallelism().map(|n| n.get()).unwrap_or(2) } else { options.threads };
        let (tx, rx) = std_mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..options.workers.max(1) {
            // Contexts are created one at a time: each worker reports before the next starts.
            let (ready_tx, ready_rx) = std_mpsc::channel();
            let (model, rx) = (model.clone(), rx.clone());
            thread::Builder::new()
                .name(format!("ragd-llm-{i}"))
                .spawn(move || worker(model, context_tokens, threads, rx, ready_tx))
                .map_err(|e| Error::internal(format!("cannot start a generation thread: {e}")))?;
            ready_rx
                .recv()
                .map_err(|_| Error::internal("a generation thread died while starting"))?
                .map_err(|e| Error::internal(format!("cannot create a llama.cpp context: {e}")))?;
        }
        let name = gguf.file_stem().and_then(|s| s.to_str()).unwrap_or("gguf");
        let id = format!("builtin:{}", name.trim_end_matches("-q4_k_m").trim_end_matches("-Q4_K_M"));
        tracing::info!(model = %gguf.display(), context_tokens, threads, workers = options.workers.max(1), "built-in generator ready");
        Ok(BuiltinGenerator { id, model, context_tokens, jobs: Mutex::new(tx) })
    }
}

#[async_trait]
impl Generator for BuiltinGenerator {
    fn id(&self) -> &str {
        &self.id
    }
    fn context_tokens(&self) -> usize {
        self.context_tokens
    }
    fn count_tokens(&self, text: &str) -> usize {
        self.model.vocab().tokenize(text.as_bytes(), false, false).len()
    }
    async fn generate(&self, req: GenerationRequest, pieces: mpsc::Sender<String>) -> Result<Generated> {
        let (done, result) = oneshot::channel();
        self.jobs
            .lock()
            .expect("jobs lock")
            .send(Job { req, pieces, done })
            .map_err(|_| Error::unavailable("generator", "the built-in generator's threads have stopped"))?;
        result.await.map_err(|_| Error::unavailable("generator", "the built-in generator stopped during generation"))?
    }
}

fn worker(
    model: Arc<LlamaModel>,
    context_tokens: usize,
    threads: usize,
    jobs: Arc<Mutex<std_mpsc::Receiver<Job>>>,
    ready: std_mpsc::Sender<std::result::Result<(), String>>,
) {
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(context_tokens as u32))
        .with_n_batch(PROMPT_BATCH as u32)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    let mut ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    loop {
        let job = {
            let rx = jobs.lock().expect("jobs lock");
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return, // the generator was dropped
            }
        };
        if job.done.is_closed() || job.pieces.is_closed() {
            continue; // the caller went away while the job waited
        }
        let result = generate_one(&model, &mut ctx, &job.req, &job.pieces);
        let _ = job.done.send(result);
    }
}

fn generate_one(model: &LlamaModel, ctx: &mut LlamaContext<'_>, req: &GenerationRequest, pieces: &mpsc::Sender<String>) -> Result<Generated> {
    let vocab = model.vocab();
    let prompt = completion_prompt(req);
    let tokens = vocab.tokenize(prompt.as_bytes(), true, false);
    let n_ctx = ctx.n_ctx() as usize;
    if tokens.len() + 1 >= n_ctx {
        return Err(Error::invalid(
            "prompt_too_long",
            format!("the prompt takes {} tokens; the built-in generator's context holds {n_ctx}", tokens.len()),
        ));
    }
    ctx.clear_kv_cache();
    let decode_err = |e: llama_cpp_2::DecodeError| Error::internal(format!("llama.cpp decode: {e}"));
    let mut batch = LlamaBatch::new(PROMPT_BATCH, 1);
    let last = tokens.len() - 1;
    for (c, chunk) in tokens.chunks(PROMPT_BATCH).enumerate() {
        batch.clear();
        for (j, &t) in chunk.iter().enumerate() {
            let pos = c * PROMPT_BATCH + j;
            batch.add(t, pos as i32, &[0], pos == last).map_err(Error::internal)?;
        }
        ctx.decode(&mut batch).map_err(decode_err)?;
        if pieces.is_closed() {
            return Ok(Generated { text: String::new(), prompt_tokens: tokens.len(), completion_tokens: 0, finish: FinishReason::Cancelled });
        }
    }

    let mut sampler = if req.temperature <= 0.0 {
        LlamaSampler::chain_simple([LlamaSampler::penalties(model.n_vocab(), PENALTY_LAST_N, PENALTY_REPEAT, 0.0, 0.0), LlamaSampler::greedy()])
    } else {
        LlamaSampler::chain_simple([
            LlamaSampler::penalties(model.n_vocab(), PENALTY_LAST_N, PENALTY_REPEAT, 0.0, 0.0),
            LlamaSampler::top_k(40),
            LlamaSampler::top_p(0.95, 1),
            LlamaSampler::temp(req.temperature),
            LlamaSampler::dist(rand_seed()),
        ])
    };
    let mut scanner = StopScanner::new(&completion_stops(req));
    let mut pending: Vec<u8> = Vec::new();
    let mut pos = tokens.len();
    let mut completion_tokens = 0;
    let mut finish = FinishReason::Length;
    let mut logits_at = batch.n_tokens() - 1;
    while completion_tokens < req.max_tokens && pos < n_ctx {
        let token = sampler.sample(ctx, logits_at);
        if vocab.is_eog(token) {
            finish = FinishReason::Stop;
            break;
        }
        completion_tokens += 1;
        pending.extend_from_slice(&vocab.token_to_piece(token, false, None));
        // Send only whole UTF-8 characters; a character split over tokens waits for its end.
        let (valid, invalid) = match std::str::from_utf8(&pending) {
            Ok(s) => (s.len(), 0),
            // Bytes that can never become a character are replaced (U+FFFD), not held forever.
            Err(e) => (e.valid_up_to(), e.error_len().unwrap_or(0)),
        };
        if valid + invalid > 0 {
            let text = String::from_utf8_lossy(&pending[..valid + invalid]).into_owned();
            pending.drain(..valid + invalid);
            let (out, stopped) = scanner.push(&text);
            if !out.is_empty() && pieces.blocking_send(out).is_err() {
                finish = FinishReason::Cancelled;
                break;
            }
            if stopped {
                finish = FinishReason::Stop;
                break;
            }
        }
        if pieces.is_closed() {
            finish = FinishReason::Cancelled;
            break;
        }
        batch.clear();
        batch.add(token, pos as i32, &[0], true).map_err(Error::internal)?;
        ctx.decode(&mut batch).map_err(decode_err)?;
        logits_at = 0;
        pos += 1;
    }
    if !pending.is_empty() && finish != FinishReason::Cancelled {
        let (out, _) = scanner.push(&String::from_utf8_lossy(&pending));
        if !out.is_empty() {
            let _ = pieces.blocking_send(out);
        }
    }
    let (rest, text) = scanner.finish();
    if !rest.is_empty() && finish != FinishReason::Cancelled {
        let _ = pieces.blocking_send(rest);
    }
    Ok(Generated { text, prompt_tokens: tokens.len(), completion_tokens, finish })
}

fn rand_seed() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(42)
}
