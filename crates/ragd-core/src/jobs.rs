//! Ingestion workers: take acknowledged jobs off the queue and run chunk → embed → upsert → commit,
//! batch by batch, so a job interrupted by a crash resumes where its last durable batch ended.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};

use crate::chunk::chunk_document;
use crate::embed::EmbedKind;
use crate::metrics::Stage;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ids::point_id;
use crate::queue::{JobQueue, Popped};
use crate::store::ChunkPoint;
use crate::types::*;

/// How many times an unavailable embedder is retried inside a job before the job fails.
const EMBED_ATTEMPTS: u32 = 6;
/// Texts embedded per call inside a job (a heartbeat follows each).
const EMBED_PART: usize = 256;

pub(crate) fn spawn_workers(engine: Arc<Engine>, rx: mpsc::UnboundedReceiver<String>) {
    let rx = Arc::new(Mutex::new(rx));
    for worker in 0..engine.settings.ingest.workers {
        let engine = engine.clone();
        let rx = rx.clone();
        tokio::spawn(async move {
            loop {
                let Some(job_id) = rx.lock().await.recv().await else { return };
                // Each job runs in its own task, so the reaper can stop a hung one and a panic is
                // contained: either way the worker survives and the job is retried (bounded).
                let task = {
                    let (engine, job_id) = (engine.clone(), job_id.clone());
                    tokio::spawn(async move { run_job(&engine, &job_id).await })
                };
                engine.active_jobs.lock().expect("active jobs").insert(job_id.clone(), (std::time::Instant::now(), task.abort_handle()));
                let outcome = task.await;
                engine.active_jobs.lock().expect("active jobs").remove(&job_id);
                match outcome {
                    Ok(Ok(())) => release(&engine, &job_id, true).await,
                    Ok(Err(e)) => {
                        tracing::error!(worker, job = %job_id, error = %e, "job bookkeeping failed");
                        // Left unacknowledged: the shared queue hands it out again once it is silent.
                        // A job the catalog does not show may be on a copy that has not caught up
                        // yet (reads go to one copy); an entry older than `job_stale_secs` that
                        // still names no job names none: it is dropped.
                        let stale = Duration::from_secs(engine.settings.ingest.job_stale_secs);
                        let unknown = matches!(&e, Error::NotFound { code: "job_not_found", .. });
                        let old = engine.deliveries.lock().expect("deliveries").get(&job_id).and_then(|d| d.age()).is_some_and(|a| a > stale);
                        release(&engine, &job_id, unknown && old).await;
                    }
                    Err(e) => {
                        let why = if e.is_panic() { "its worker crashed (a bug: see the log)" } else { "it stopped making progress and was stopped" };
                        tracing::error!(worker, job = %job_id, "job interrupted: {why}; it will be retried");
                        // Retried from its last durable batch; `run_job` fails it once the attempts run out.
                        let _ = engine.queue.send(job_id.clone());
                        continue;
                    }
                }
                let _ = engine.finished.send(job_id);
            }
        });
    }
    if let Some(queue) = engine.shared_queue.clone() {
        spawn_feeder(engine.clone(), queue.clone());
        spawn_claim_keeper(engine.clone(), queue);
    }
    spawn_reaper(engine);
}

/// Cluster mode: takes a job from the shared queue whenever one of this replica's workers is idle,
/// so jobs spread over the replicas that have room, and hands it to the workers.
fn spawn_feeder(engine: Arc<Engine>, queue: Arc<dyn JobQueue>) {
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            let Ok(permit) = engine.idle_workers.clone().acquire_owned().await else { return };
            match queue.pop(Duration::from_secs(2)).await {
                Ok(Popped::Job(delivery)) => {
                    warned = false;
                    let id = delivery.job_id.clone();
                    let held = engine.deliveries.lock().expect("deliveries").get(&id).cloned();
                    match held {
                        // Already running here (claimed back, or offered twice): one run is enough.
                        Some(running) => {
                            if running.token != delivery.token {
                                if let Err(e) = queue.ack(&delivery).await {
                                    tracing::debug!(job = %id, error = %e, "could not drop a duplicate queue entry");
                                }
                            }
                            drop(permit);
                        }
                        None => {
                            permit.forget();
                            engine.deliveries.lock().expect("deliveries").insert(id.clone(), delivery);
                            let _ = engine.queue.send(id);
                        }
                    }
                }
                Ok(Popped::Nothing) => warned = false,
                Ok(Popped::Reset) => {
                    tracing::warn!("the shared job queue was empty of history (Redis restarted?): offering the unfinished jobs again");
                    if let Err(e) = engine.offer_unfinished().await {
                        tracing::error!(error = %e, "could not list unfinished jobs for the shared queue");
                    }
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "shared job queue unreachable: jobs accepted here run here until it answers");
                        warned = true;
                    }
                    drop(permit);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

/// Cluster mode, every third of `ingest.job_stale_secs`: renews this replica's claim on every job it
/// holds (so a long first batch is not taken over while it runs; the local reaper handles a hung
/// one), and offers again any unfinished job that nobody holds and that has not moved for twice
/// that time (its push was lost: a crash between acknowledgement and queueing, or a local run on
/// a replica that died).
fn spawn_claim_keeper(engine: Arc<Engine>, queue: Arc<dyn JobQueue>) {
    let stale = Duration::from_secs(engine.settings.ingest.job_stale_secs.max(1));
    tokio::spawn(async move {
        let mut rounds = 0u64;
        loop {
            tokio::time::sleep(stale / 3).await;
            let held: Vec<_> = engine.deliveries.lock().expect("deliveries").values().cloned().collect();
            for d in &held {
                if let Err(e) = queue.touch(d).await {
                    tracing::debug!(job = %d.job_id, error = %e, "could not renew the job's claim");
                }
            }
            rounds += 1;
            if rounds % 30 == 0 {
                if let Err(e) = queue.forget_idle_consumers(Duration::from_secs(86_400)).await {
                    tracing::debug!(error = %e, "could not tidy the queue's consumers");
                }
            }
            if rounds % 3 != 0 {
                continue;
            }
            let (Ok(queued), Ok(jobs)) = (queue.job_ids().await, engine.catalog.unfinished_jobs().await) else { continue };
            let now = chrono::Utc::now();
            for job in jobs {
                let idle = chrono::DateTime::parse_from_rfc3339(&job.updated_at)
                    .map(|t| (now - t.with_timezone(&chrono::Utc)).to_std().unwrap_or_default())
                    .unwrap_or_default();
                let local = engine.active_jobs.lock().expect("active jobs").contains_key(&job.id);
                if !local && !queued.contains(&job.id) && idle >= stale * 2 {
                    tracing::warn!(job = %job.id, idle_s = idle.as_secs(), "unfinished job held by no one: offering it again");
                    if let Err(e) = queue.push(&job.id).await {
                        tracing::warn!(job = %job.id, error = %e, "could not offer the job again");
                    }
                }
            }
        }
    });
}

/// A job of this worker ended: acknowledged in the shared queue when it is finished (`done`), and
/// the worker counts as idle again.
async fn release(engine: &Engine, job_id: &str, done: bool) {
    let delivery = engine.deliveries.lock().expect("deliveries").remove(job_id);
    if let Some(d) = delivery {
        if let (true, Some(q)) = (done, &engine.shared_queue) {
            if let Err(e) = q.ack(&d).await {
                tracing::warn!(job = %job_id, error = %e, "could not acknowledge the job in the shared queue (it will be re-checked and skipped)");
            }
        }
        engine.idle_workers.add_permits(1);
    }
}

/// Every few seconds: a running job whose worker has not reported progress for `ingest.job_stale_secs`
/// is stopped (its task aborted); the worker loop then retries it.
fn spawn_reaper(engine: Arc<Engine>) {
    let stale = Duration::from_secs(engine.settings.ingest.job_stale_secs);
    let every = (stale / 10).clamp(Duration::from_millis(100), Duration::from_secs(10));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let active = engine.active_jobs.lock().expect("active jobs");
            for (id, (beat, abort)) in active.iter() {
                if beat.elapsed() >= stale {
                    tracing::warn!(job = %id, silent_s = beat.elapsed().as_secs(), "job made no progress: stopping it for a retry");
                    abort.abort();
                }
            }
        }
    });
}

/// Marks every document the job has not ingested yet as failed, with why.
fn fail_pending(job: &mut JobRecord, why: &str) {
    for d in job.documents.iter_mut().filter(|d| d.status == DocOutcome::Pending) {
        d.status = DocOutcome::Failed;
        d.error = Some(why.to_owned());
    }
}

/// A sign of life from a running job (after each durable batch).
fn heartbeat(engine: &Engine, job_id: &str) {
    if let Some(entry) = engine.active_jobs.lock().expect("active jobs").get_mut(job_id) {
        entry.0 = std::time::Instant::now();
    }
    // Cluster mode: tell the other replicas this job's worker is alive.
    let delivery = engine.deliveries.lock().expect("deliveries").get(job_id).cloned();
    if let (Some(q), Some(d)) = (engine.shared_queue.clone(), delivery) {
        tokio::spawn(async move {
            if let Err(e) = q.touch(&d).await {
                tracing::debug!(job = %d.job_id, error = %e, "could not renew the job's claim in the shared queue");
            }
        });
    }
}

async fn run_job(engine: &Engine, job_id: &str) -> Result<()> {
    let Some(mut job) = engine.catalog.get_job(job_id).await? else { return Err(Error::job_not_found(job_id)) };
    if job.status.is_finished() {
        // Finished by an earlier run (cluster mode: offered twice, or the queue entry outlived a
        // crash): saving it again drops a payload whose removal that run may not have completed.
        engine.catalog.update_job(&job).await?;
        return Ok(());
    }
    let started = std::time::Instant::now();
    let max = engine.settings.ingest.max_stalled_attempts;
    if job.stalled_attempts >= max {
        job.status = JobStatus::Failed;
        job.updated_at = now_rfc3339();
        job.error = Some(JobError {
            code: "job_attempts_exhausted".into(),
            message: format!(
                "the job was started {max} times in a row without making progress (its worker died, hung or took the \
                 server down each time); {} of {} documents were ingested before that",
                job.progress.done, job.progress.total
            ),
        });
        fail_pending(&mut job, "not ingested: the job's attempts ran out");
        engine.catalog.update_job(&job).await?;
        engine.metrics.observe_job(true, 0.0);
        tracing::error!(job = %job.id, attempts = job.attempts, "job failed: attempts exhausted");
        return Ok(());
    }
    job.status = JobStatus::Running;
    job.attempts += 1;
    // Counted as stalled until a batch commits (which resets it, durably with the batch).
    job.stalled_attempts += 1;
    job.updated_at = now_rfc3339();
    engine.catalog.update_job(&job).await?;
    tracing::info!(job = %job.id, collection = %job.collection, documents = job.progress.total, attempt = job.attempts, "job started");

    let outcome = ingest(engine, &mut job).await;
    job.updated_at = now_rfc3339();
    match outcome {
        Ok(()) => {
            let failed = job.documents.iter().filter(|d| d.status == DocOutcome::Failed).count();
            job.status = if failed == job.documents.len() && failed > 0 { JobStatus::Failed } else { JobStatus::Done };
            if job.status == JobStatus::Failed {
                job.error = Some(JobError { code: "documents_failed".into(), message: "every document of the job failed".into() });
            }
        }
        Err(e) => {
            tracing::warn!(job = %job.id, error = %e, "job failed");
            job.status = JobStatus::Failed;
            let message = match &e {
                Error::Internal(_) => "internal error while ingesting; see the server log".to_owned(),
                other => other.to_string(),
            };
            job.error = Some(JobError { code: e.code().into(), message });
            fail_pending(&mut job, "not ingested: the job failed");
        }
    }
    // Another run of the same job (cluster mode: offered twice) may have finished it meanwhile; its
    // outcome stands.
    if let Some(current) = engine.catalog.get_job(&job.id).await? {
        if current.status.is_finished() {
            tracing::info!(job = %job.id, status = current.status.as_str(), "job already finished by another run");
            return Ok(());
        }
    }
    engine.catalog.update_job(&job).await?;
    // From the acknowledgement (the job's creation), across restarts, to its end.
    let since_ack = chrono::DateTime::parse_from_rfc3339(&job.created_at)
        .map(|c| (chrono::Utc::now() - c.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1e3)
        .unwrap_or_else(|_| started.elapsed().as_secs_f64());
    engine.metrics.observe_job(job.status == JobStatus::Failed, since_ack.max(0.0));
    tracing::info!(job = %job.id, status = job.status.as_str(), elapsed_ms = started.elapsed().as_millis() as u64, "job finished");
    Ok(())
}

async fn ingest(engine: &Engine, job: &mut JobRecord) -> Result<()> {
    let record = engine.collection(&job.collection).await?;
    engine.check_embedder(&record)?;
    let payload = engine
        .catalog
        .job_payload(&job.id)
        .await?
        .ok_or_else(|| Error::internal(format!("job {} has no stored documents", job.id)))?;
    // Documents a previous attempt already made durable are skipped (a set: linear in the job).
    let pending: std::collections::HashSet<&str> =
        job.documents.iter().filter(|j| j.status == DocOutcome::Pending).map(|j| j.id.as_str()).collect();
    let todo: Vec<PendingDocument> = payload.into_iter().filter(|d| pending.contains(d.id.as_str())).collect();
    drop(pending);
    // A job stored before the limits existed (or under larger ones) is held to today's: refused at
    // once with the limit's code, never worked on (and so never retried after a crash it caused).
    let max_text = engine.settings.ingest.max_document_text_bytes;
    if let Some(d) = todo.iter().find(|d| d.parsed.text.len() as u64 > max_text) {
        return Err(Error::limit(
            "document_too_large",
            format!("document `{}` has more than {max_text} bytes of text (ingest.max_document_text_bytes)", d.id),
        ));
    }
    let batch_size = engine.settings.ingest.batch_documents;
    let mut todo = todo.into_iter().peekable();
    while todo.peek().is_some() {
        let batch: Vec<PendingDocument> = todo.by_ref().take(batch_size).collect();
        ingest_batch(engine, &record, job, batch).await?;
    }
    Ok(())
}

async fn ingest_batch(engine: &Engine, record: &CollectionRecord, job: &mut JobRecord, batch: Vec<PendingDocument>) -> Result<()> {
    // Skip documents whose content is already stored unchanged.
    let mut changed = Vec::with_capacity(batch.len());
    let mut outcomes: Vec<(String, DocOutcome, Option<u32>)> = Vec::new();
    for doc in batch {
        match engine.catalog.get_document(&record.name, &doc.id).await? {
            Some(existing) if existing.content_hash == doc.content_hash => {
                outcomes.push((doc.id.clone(), DocOutcome::Unchanged, Some(existing.chunks)))
            }
            _ => changed.push(doc),
        }
    }

    // Chunk (CPU work, off the async threads).
    let tokens = engine.tokens.clone();
    let chunking = record.chunking.clone();
    let t = std::time::Instant::now();
    let chunked = tokio::task::spawn_blocking(move || {
        changed
            .into_iter()
            .map(|doc| {
                let chunks = chunk_document(&doc.parsed, &chunking, tokens.as_ref());
                (doc, chunks)
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(Error::internal)?;
    engine.metrics.observe_stage(Stage::Chunk, t.elapsed().as_secs_f64());
    // Before anything of the batch is embedded: a document cut into more chunks than allowed fails
    // the job at once with that code (a finished job is never resumed).
    let max_chunks = engine.settings.ingest.max_chunks_per_document;
    if let Some((doc, chunks)) = chunked.iter().find(|(_, c)| c.len() as u64 > u64::from(max_chunks)) {
        return Err(Error::limit(
            "too_many_chunks",
            format!(
                "document `{}` makes {} chunks, more than {max_chunks} (ingest.max_chunks_per_document)",
                doc.id,
                chunks.len()
            ),
        ));
    }

    // Embed every chunk of the batch in one call: the embedder batches across it.
    let texts: Vec<String> = chunked
        .iter()
        .flat_map(|(doc, chunks)| chunks.iter().map(|c| crate::store::context_text(doc.title.as_deref(), &c.heading_path, &c.text)))
        .collect();
    // In parts, with a heartbeat after each: a large batch is progress too, not a hung job.
    let mut vectors = Vec::with_capacity(texts.len());
    for part in texts.chunks(EMBED_PART) {
        let t = std::time::Instant::now();
        vectors.extend(embed_with_retry(engine, part.to_vec()).await?);
        engine.metrics.observe_stage(Stage::Embed, t.elapsed().as_secs_f64());
        heartbeat(engine, &job.id);
    }

    let mut vectors = vectors.into_iter();
    let mut points = Vec::new();
    let mut records = Vec::new();
    let now = now_rfc3339();
    for (doc, chunks) in chunked {
        let n = chunks.len() as u32;
        for chunk in chunks {
            let dense = vectors.next().ok_or_else(|| Error::internal("embedder returned too few vectors"))?;
            // Text read by OCR is marked in the chunk's metadata too (beside `offsets.ocr`), so a
            // filter can find or leave out OCR'd text: `{"metadata": {"ocr": true}}`.
            let mut metadata = doc.metadata.clone();
            if chunk.ocr {
                metadata.insert("ocr".into(), serde_json::Value::Bool(true));
            }
            points.push(ChunkPoint {
                id: point_id(&record.name, &doc.id, chunk.index),
                doc_id: doc.id.clone(),
                title: doc.title.clone(),
                metadata,
                chunk,
                dense,
            });
        }
        outcomes.push((doc.id.clone(), DocOutcome::Ingested, Some(n)));
        records.push(DocumentRecord {
            id: doc.id,
            title: doc.title,
            metadata: doc.metadata,
            chunks: n,
            content_hash: doc.content_hash,
            ingested_at: now.clone(),
            source: doc.source,
        });
    }

    // Write phase, serialised per collection with deletes, drops and the store's optimizers. Waiting
    // here (behind an optimisation of a large collection, say) is not a stall: keep the heartbeat.
    let acquire = engine.lock_writes(&record.name);
    tokio::pin!(acquire);
    let _guard = loop {
        tokio::select! {
            guard = &mut acquire => break guard,
            _ = tokio::time::sleep(Duration::from_secs(5)) => heartbeat(engine, &job.id),
        }
    };
    if engine.catalog.get_collection(&record.name).await?.is_none() {
        return Err(Error::collection_not_found(&record.name));
    }
    if !points.is_empty() {
        let t = std::time::Instant::now();
        engine.store.upsert(&record.name, points).await?;
        engine.metrics.observe_stage(Stage::Upsert, t.elapsed().as_secs_f64());
    }
    // New content may have fewer chunks than the old: drop the tail.
    for r in &records {
        engine.store.delete_document_chunks(&record.name, &r.id, r.chunks).await?;
    }
    engine.written(&record.name);
    for (id, status, chunks) in outcomes {
        if let Some(d) = job.documents.iter_mut().find(|d| d.id == id) {
            d.status = status;
            d.chunks = chunks;
        }
    }
    job.progress.done = job.documents.iter().filter(|d| d.status != DocOutcome::Pending).count() as u32;
    job.updated_at = now_rfc3339();
    job.stalled_attempts = 0;
    engine.catalog.commit_documents(&record.name, records, job).await?;
    heartbeat(engine, &job.id);
    Ok(())
}

async fn embed_with_retry(engine: &Engine, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match engine.embedder.embed(texts.clone(), EmbedKind::Passage).await {
            Ok(v) if v.len() == texts.len() => return Ok(v),
            Ok(v) => return Err(Error::internal(format!("embedder returned {} vectors for {} texts", v.len(), texts.len()))),
            Err(e @ Error::Unavailable { .. }) if attempt < EMBED_ATTEMPTS => {
                // An open breaker or a server's Retry-After says how long to wait; else back off.
                let wait = match &e {
                    Error::Unavailable { retry_after: Some(r), .. } => (*r).min(Duration::from_secs(30)),
                    _ => delay,
                };
                tracing::warn!(attempt, wait_ms = wait.as_millis() as u64, error = %e, "embedder unavailable; retrying");
                tokio::time::sleep(wait).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
