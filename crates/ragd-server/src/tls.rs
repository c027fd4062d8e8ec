//! HTTPS on the API listener: rustls (ring), HTTP/1.1 and HTTP/2 by ALPN. The certificate and key
//! files are checked every `reload_check`; when either changed (a renewal), the new pair is loaded
//! for new connections without a restart. A pair that fails to load is logged and the old one kept.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub reload_check: Duration,
}

type Stamp = Option<(u64, u64, Option<SystemTime>)>;

fn stamp(files: &TlsFiles) -> [Stamp; 2] {
    [&files.cert, &files.key].map(|p| std::fs::metadata(p).ok().map(|m| (m.ino(), m.len(), m.modified().ok())))
}

/// Loads the pair once (an error here is a start-up error).
pub async fn load(files: &TlsFiles) -> std::io::Result<RustlsConfig> {
    RustlsConfig::from_pem_file(&files.cert, &files.key).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("loading TLS certificate {} and key {}: {e}", files.cert.display(), files.key.display()))
    })
}

/// Whether the pair loads (for a clear error before the server says it is listening).
pub async fn check(files: &TlsFiles) -> std::io::Result<()> {
    load(files).await.map(|_| ())
}

pub async fn serve(listener: TcpListener, app: Router, files: TlsFiles, limits: crate::conn::ConnLimits, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let config = load(&files).await?;
    let handle = Handle::new();
    let watcher = {
        let (config, files) = (config.clone(), files.clone());
        tokio::spawn(async move {
            let mut seen = stamp(&files);
            loop {
                tokio::time::sleep(files.reload_check).await;
                let now = stamp(&files);
                if now == seen {
                    continue;
                }
                // Give a renewal writing both files a moment to finish the second one.
                tokio::time::sleep(Duration::from_millis(100)).await;
                match config.reload_from_pem_file(&files.cert, &files.key).await {
                    Ok(()) => {
                        tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate");
                        seen = stamp(&files);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, cert = %files.cert.display(), "the changed TLS files do not load; still serving the previous certificate");
                        seen = now;
                    }
                }
            }
        })
    };
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            // No deadline here: the caller bounds the drain with `shutdown_grace_secs`.
            handle.graceful_shutdown(None);
        });
    }
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut server = axum_server::from_tcp_rustls(listener.into_std()?, config)
        .handle(handle)
        .map(|inner| crate::conn::CappedAcceptor { inner, slots });
    *server.http_builder() = crate::conn::builder(limits);
    let result = server.serve(app.into_make_service()).await;
    watcher.abort();
    result
}
