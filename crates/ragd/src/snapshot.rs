//! `ragd snapshot`: make a snapshot of a running server's data folder (and download it), list them, and
//! restore one into a new data folder (offline; then `ragd serve --data` that folder).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use futures::StreamExt;
use ragd_core::catalog::Catalog;
use ragd_core::store::VectorStore;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::ServerArgs;
use crate::client::Client;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a running server's data folder (catalog, vectors, keys) while it keeps serving; the
    /// archive stays in the server's `<data>/snapshots/`, and `--out` downloads it too.
    Create {
        /// Download the archive to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The server's snapshots.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Unpack a snapshot into a new data folder and check it against the snapshot's manifest.
    Restore {
        /// The archive (`ragd snapshot create --out`, or a file from `<data>/snapshots/`).
        archive: PathBuf,
        /// The data folder to create; must not hold a catalog yet.
        #[arg(long)]
        data: PathBuf,
    },
}

pub async fn run(command: SnapshotCommand) -> anyhow::Result<ExitCode> {
    match command {
        SnapshotCommand::Create { out, server } => create(&server, out.as_deref()).await,
        SnapshotCommand::List { json, server } => list(&server, json).await,
        SnapshotCommand::Restore { archive, data } => restore(&archive, &data).await,
    }
}

async fn create(server: &ServerArgs, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    let started = client.send(client.req(reqwest::Method::POST, "/api/v1/snapshots")).await?.1;
    let name = started["name"].as_str().context("the server's answer names no snapshot")?.to_owned();
    eprintln!("snapshot {name}: copying (writes wait meanwhile; searches go on)");
    let t = Instant::now();
    let ready = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let listed = client.send(client.req(reqwest::Method::GET, "/api/v1/snapshots")).await?.1;
        let this = listed["snapshots"].as_array().and_then(|all| all.iter().find(|s| s["name"] == name.as_str())).cloned();
        match this.as_ref().and_then(|s| s["status"].as_str()) {
            Some("ready") => break this.unwrap_or(Value::Null),
            Some("failed") => bail!("snapshot {name} failed: {}", this.as_ref().and_then(|s| s["error"].as_str()).unwrap_or("no reason given")),
            Some(_) => {}
            None => bail!("snapshot {name} disappeared from the server's list (was the server restarted?)"),
        }
    };
    let size = ready["size_bytes"].as_u64().unwrap_or(0);
    let collections = ready["collections"].as_array().cloned().unwrap_or_default();
    let documents: u64 = collections.iter().filter_map(|c| c["documents"].as_u64()).sum();
    println!(
        "snapshot {name}: {} collection(s), {documents} document(s), {:.1} MB, in {:.1} s",
        collections.len(),
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    match out {
        Some(path) => {
            download(&client, &name, path).await?;
            println!("saved to {}", path.display());
        }
        None => println!("kept by the server in <data>/snapshots/{name}.tar; download it with `ragd snapshot create --out FILE` next time, or GET /api/v1/snapshots/{name}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams the archive into `<path>.partial`, then renames it: a file with the final name is whole.
async fn download(client: &Client, name: &str, path: &Path) -> anyhow::Result<()> {
    let resp = client.req(reqwest::Method::GET, &format!("/api/v1/snapshots/{name}")).send().await?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!("downloading snapshot {name}: HTTP {status}: {}", resp.text().await.unwrap_or_default());
    }
    let partial = path.with_extension("partial");
    let mut file = tokio::fs::File::create(&partial).await.with_context(|| format!("creating {}", partial.display()))?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk.context("the download broke off")?).await?;
    }
    file.sync_all().await?;
    tokio::fs::rename(&partial, path).await.with_context(|| format!("renaming {}", partial.display()))?;
    Ok(())
}

async fn list(server: &ServerArgs, json: bool) -> anyhow::Result<ExitCode> {
    let client = Client::new(server)?;
    let listed = client.send(client.req(reqwest::Method::GET, "/api/v1/snapshots")).await?.1;
    if json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(ExitCode::SUCCESS);
    }
    let all = listed["snapshots"].as_array().cloned().unwrap_or_default();
    if all.is_empty() {
        println!("no snapshots");
    }
    for s in all {
        let documents: u64 = s["collections"].as_array().map(|c| c.iter().filter_map(|c| c["documents"].as_u64()).sum()).unwrap_or(0);
        println!(
            "{}  {:<8}  {}  {:>9.1} MB  {documents} document(s){}",
            s["name"].as_str().unwrap_or("?"),
            s["status"].as_str().unwrap_or("?"),
            s["created_at"].as_str().unwrap_or("?"),
            s["size_bytes"].as_u64().unwrap_or(0) as f64 / 1e6,
            s["error"].as_str().map(|e| format!("  ({e})")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Unpacks, then opens the restored catalog and store and compares every collection's documents and
/// chunks with the manifest: a restore that does not match says so and exits 1.
async fn restore(archive: &Path, data: &Path) -> anyhow::Result<ExitCode> {
    let (a, d) = (archive.to_owned(), data.to_owned());
    let manifest = tokio::task::spawn_blocking(move || ragd_core::snapshot::unpack(&a, &d)).await??;
    let catalog = ragd_store::RedbCatalog::open(&data.join("catalog.redb"))?;
    let store = ragd_store::EmbeddedStore::open(&data.join("collections"))?;
    let mut problems = Vec::new();
    for c in &manifest.collections {
        let documents = catalog.count_documents(&c.name).await?;
        let chunks = store.count(&c.name, None).await?;
        if (documents, chunks) != (c.documents, c.chunks) {
            problems.push(format!(
                "{}: {documents} documents and {chunks} chunks restored, the snapshot says {} and {}",
                c.name, c.documents, c.chunks
            ));
        }
    }
    let unfinished = catalog.unfinished_jobs().await?.len();
    for p in &problems {
        eprintln!("error: {p}");
    }
    if !problems.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    let documents: u64 = manifest.collections.iter().map(|c| c.documents).sum();
    let chunks: u64 = manifest.collections.iter().map(|c| c.chunks).sum();
    println!(
        "restored {} ({}) into {}: {} collection(s), {documents} document(s), {chunks} chunk(s), all as the snapshot lists them{}",
        manifest.name,
        manifest.created_at,
        data.display(),
        manifest.collections.len(),
        if unfinished > 0 { format!("; {unfinished} unfinished job(s) resume when a server starts on it") } else { String::new() }
    );
    println!("start it with: ragd serve --data {}", data.display());
    Ok(ExitCode::SUCCESS)
}
