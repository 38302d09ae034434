//! The upstream connector: hyper-util's `HttpConnector` wrapped so that each
//! upstream knows how many connections it has open (idle ≈ open − in flight)
//! and what the last connect error was, for the health report.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

/// Connection figures of one upstream, shared by all of its worker pools.
#[derive(Debug, Default)]
pub struct ConnectionState {
    open: AtomicUsize,
    opened: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<ConnectFailure>>,
}

/// The last failed connect attempt.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectFailure {
    pub endpoint: String,
    pub error: String,
    /// Seconds since the Unix epoch.
    pub at_unix: u64,
}

impl ConnectionState {
    /// Upstream connections open now (pooled idle ones included).
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Connections opened since the upstream was built.
    pub fn opened(&self) -> u64 {
        self.opened.load(Relaxed)
    }

    /// Connect attempts that failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Relaxed)
    }

    /// The last connect failure, if any.
    pub fn last_error(&self) -> Option<ConnectFailure> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn failure(&self, uri: &Uri, error: &(dyn std::error::Error + 'static)) {
        self.failed.fetch_add(1, Relaxed);
        let text = super::error::error_chain(error);
        let failure = ConnectFailure {
            endpoint: uri.authority().map(ToString::to_string).unwrap_or_default(),
            error: text,
            at_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(failure);
    }
}

/// `HttpConnector` that counts what it opens.
#[derive(Clone)]
pub(crate) struct CountingConnector {
    inner: HttpConnector,
    state: Arc<ConnectionState>,
}

impl CountingConnector {
    pub fn new(inner: HttpConnector, state: Arc<ConnectionState>) -> Self {
        Self { inner, state }
    }
}

/// hyper-util does not name its connect error type; boxing keeps its source
/// chain, which `UpstreamError::from_client` walks to classify failures.
type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ConnectFuture = Pin<Box<dyn Future<Output = Result<Counted, BoxError>> + Send>>;

impl Service<Uri> for CountingConnector {
    type Response = Counted;
    type Error = BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri.clone());
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            match connecting.await {
                Ok(io) => {
                    state.open.fetch_add(1, Relaxed);
                    state.opened.fetch_add(1, Relaxed);
                    Ok(Counted { io, state })
                }
                Err(error) => {
                    state.failure(&uri, &error);
                    Err(error.into())
                }
            }
        })
    }
}

/// A connection that is counted as open until dropped.
pub(crate) struct Counted {
    io: TokioIo<TcpStream>,
    state: Arc<ConnectionState>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.state.open.fetch_sub(1, Relaxed);
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl hyper::rt::Read for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
