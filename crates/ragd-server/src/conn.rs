//! Connections on the API listener: at most `limits.max_connections` at once, and a client that
//! has not sent a request's headers within `limits.header_read_timeout_ms` is disconnected, so
//! slow or idle sockets cannot pile up until the process runs out of file descriptors.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// The listener's limits, from `limits.*`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

impl ConnLimits {
    pub fn from_settings(s: &ragd_core::settings::Settings) -> Self {
        let mut max_connections = s.limits.max_connections.max(1);
        // Past the process's descriptor limit, accepting fails for everyone (and files cannot be
        // opened): keep the cap under it, with room for the data files.
        if let Some(fds) = open_files_limit() {
            let room = fds.saturating_sub(256).max(16) as usize;
            if room < max_connections {
                tracing::warn!(max_connections, open_files_limit = fds, "limits.max_connections lowered to {room} to stay under the open files limit");
                max_connections = room;
            }
        }
        ConnLimits { max_connections, header_read_timeout: Duration::from_millis(s.limits.header_read_timeout_ms.max(1)) }
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` elsewhere or unlimited.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A hyper connection builder with the header-read timeout (it needs a timer to take effect).
pub(crate) fn builder(limits: ConnLimits) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    b.http2().timer(TokioTimer::new());
    b
}

/// Serves plain HTTP on `listener` until `shutdown` resolves, then lets the open connections
/// finish their requests (graceful) and returns once they have.
///
/// At `max_connections`, no further connection is accepted until one closes: newcomers wait in
/// the kernel's backlog instead of costing a task and a descriptor each.
pub(crate) async fn serve_http(listener: TcpListener, app: Router, limits: ConnLimits, shutdown: impl Future<Output = ()> + Send + 'static) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(io::Error::other)?,
            _ = &mut shutdown => break,
        };
        let (stream, _addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = permit;
            // hyper's header timer only runs once bytes arrive: a socket that sends nothing would
            // hold its slot for ever (measured). Wait for the first byte within the same timeout.
            // (`readable()` may report a fresh socket ready with nothing to read: peek a byte.)
            let mut first = [0u8; 1];
            if !matches!(tokio::time::timeout(limits.header_read_timeout, stream.peek(&mut first)).await, Ok(Ok(1..))) {
                return;
            }
            // HTTP/1 only, as before (axum was built without HTTP/2), so no protocol detection
            // reads ahead of hyper's header timer.
            let builder = builder(limits).http1_only();
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection task holds one slot: all slots back means all connections are closed.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
    Ok(())
}

/// TLS: the same cap for axum-server, which accepts before asking the acceptor. A connection over
/// the cap is closed at once.
#[derive(Clone)]
pub(crate) struct CappedAcceptor<A> {
    pub inner: A,
    pub slots: Arc<Semaphore>,
}

impl<A, S> axum_server::accept::Accept<tokio::net::TcpStream, S> for CappedAcceptor<A>
where
    A: axum_server::accept::Accept<Held<tokio::net::TcpStream>, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Pin<Box<dyn Future<Output = io::Result<(A::Stream, A::Service)>> + Send>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Box::pin(self.inner.accept(Held { inner: stream, _slot: slot }, service)),
            Err(_) => Box::pin(std::future::ready(Err(io::Error::other("limits.max_connections reached")))),
        }
    }
}

/// A stream that holds a connection slot until it is dropped.
pub(crate) struct Held<T> {
    inner: T,
    _slot: OwnedSemaphorePermit,
}

impl<T: AsyncRead + Unpin> AsyncRead for Held<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Held<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
