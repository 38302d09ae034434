//! The upstream connector: hyper-util's `HttpConnector`, then a TLS
//! handshake for upstreams that use TLS, wrapped so that each upstream knows
//! how many connections it has open (idle ≈ open − in flight) and what the
//! last connect error was, for the health report.

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
use tokio_rustls::client::TlsStream;
use tower_service::Service;

use crate::tls::UpstreamTls;

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
        let text = crate::upstream_error::error_chain(error);
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

/// `HttpConnector` (and TLS where the upstream uses it) that counts what it
/// opens.
#[derive(Clone)]
pub(crate) struct CountingConnector {
    inner: HttpConnector,
    state: Arc<ConnectionState>,
    tls: Option<Arc<UpstreamTls>>,
}

impl CountingConnector {
    pub fn new(
        inner: HttpConnector,
        state: Arc<ConnectionState>,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Self {
        Self { inner, state, tls }
    }
}

/// hyper-util does not name its connect error type; boxing keeps its source
/// chain, which `UpstreamError::from_connect` walks to classify failures.
type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ConnectFuture = Pin<Box<dyn Future<Output = Result<TokioIo<Counted>, BoxError>> + Send>>;

/// Answers with the connection in hyper's I/O adapter, as hyper-util's
/// client (health checks) and hyper's HTTP/2 handshake want it; the proxy's
/// own HTTP/1.1 client takes the [`Counted`] connection out of it.
impl Service<Uri> for CountingConnector {
    type Response = TokioIo<Counted>;
    type Error = BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri.clone());
        let state = Arc::clone(&self.state);
        let tls = self.tls.clone();
        Box::pin(async move {
            let connected = match connecting.await {
                Ok(tcp) => match tls {
                    None => Ok(Io::Plain(tcp.into_inner())),
                    Some(tls) => {
                        let host = uri.host().unwrap_or_default();
                        tls.connect(tcp.into_inner(), host)
                            .await
                            .map(|stream| Io::Tls(Box::new(stream)))
                            .map_err(BoxError::from)
                    }
                },
                Err(error) => Err(BoxError::from(error)),
            };
            match connected {
                Ok(io) => {
                    state.open.fetch_add(1, Relaxed);
                    state.opened.fetch_add(1, Relaxed);
                    Ok(TokioIo::new(Counted { io, state }))
                }
                Err(error) => {
                    state.failure(&uri, error.as_ref());
                    Err(error)
                }
            }
        })
    }
}

/// A connection to an endpoint: plain TCP or TLS over it (boxed: the TLS
/// state is large, and plain connections should not carry its size).
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection that is counted as open until dropped.
pub(crate) struct Counted {
    io: Io,
    state: Arc<ConnectionState>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.state.open.fetch_sub(1, Relaxed);
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        match &self.io {
            Io::Plain(tcp) => tcp.connected(),
            Io::Tls(tls) => {
                let (tcp, session) = tls.get_ref();
                let connected = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

/// Calls `$method` on whichever stream the connection is.
macro_rules! on_io {
    ($self:ident, $io:ident => $call:expr) => {
        match &mut $self.io {
            Io::Plain($io) => $call,
            Io::Tls($io) => {
                let $io = &mut **$io;
                $call
            }
        }
    };
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        on_io!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        on_io!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_io!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_io!(self, io => Pin::new(io).poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(io) => io.is_write_vectored(),
            Io::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        on_io!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }
}
