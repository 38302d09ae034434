//! One client connection: HTTP/1.1 or HTTP/2 (prior knowledge) chosen by the
//! first bytes, read through the strict intake, an idle timeout, and
//! graceful close when the proxy drains; and the count of open connections
//! that shutdown waits on.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, Ordering::Relaxed,
};
use std::task::Poll;
use std::time::Duration;

use futures_util::task::AtomicWaker;
use http::HeaderValue;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::intake::{Intake, IntakeReport, IntakeSettings, head::HeadLimits};
use super::peer::Peer;
use super::{Shared, handler};
use crate::config::Config;
use crate::telemetry::metrics::{ListenerMetrics, Metrics};

/// Counts open client connections so that shutdown can wait for them.
#[derive(Default)]
pub(crate) struct Connections {
    active: AtomicUsize,
    closed: Notify,
}

pub(crate) struct OpenConnection<'a> {
    connections: &'a Connections,
    metrics: &'a Metrics,
}

impl Connections {
    pub fn open<'a>(&'a self, metrics: &'a Metrics) -> OpenConnection<'a> {
        self.active.fetch_add(1, Ordering::AcqRel);
        metrics.open_connections.fetch_add(1, Ordering::Relaxed);
        metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            connections: self,
            metrics,
        }
    }

    /// Client connections open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Waits until no connection is open, or until `limit` passes. Returns
    /// whether every connection closed.
    pub(super) async fn wait_closed(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let closed = self.closed.notified();
            if self.active() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                return self.active() == 0;
            }
        }
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.metrics
            .open_connections
            .fetch_sub(1, Ordering::Relaxed);
        if self.connections.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections.closed.notify_waiters();
        }
    }
}

/// What every connection on one worker shares.
pub(crate) struct WorkerContext {
    pub shared: Arc<Shared>,
    builder: auto::Builder<TokioExecutor>,
    idle_timeout: Duration,
    intake: IntakeSettings,
}

impl WorkerContext {
    /// How long a TLS handshake may take: as long as a request head.
    pub fn handshake_timeout(&self) -> Duration {
        self.intake.header_read
    }

    pub fn new(shared: Arc<Shared>, config: &Config) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .keep_alive(true)
            // The intake times a slow request head and the connection's
            // watcher an idle one; hyper's own timer would be re-armed for
            // every request.
            .header_read_timeout(None)
            .max_buf_size(config.limits.max_header_bytes.max(8192))
            .max_headers(config.limits.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(
                u32::try_from(config.limits.max_header_bytes).unwrap_or(u32::MAX),
            );
        Self {
            shared,
            builder,
            idle_timeout: config.timeouts.idle,
            intake: IntakeSettings {
                limits: HeadLimits {
                    max_request_line: config.limits.max_request_line_bytes,
                    max_head: config.limits.max_header_bytes,
                    max_headers: config.limits.max_headers,
                },
                header_read: config.timeouts.header_read,
                body_idle: config.timeouts.body_idle,
            },
        }
    }
}

/// Requests in flight on one connection and when the last one finished.
struct Activity {
    epoch: Instant,
    in_flight: AtomicU32,
    last_done_millis: AtomicU64,
}

struct InFlight<'a>(&'a Activity);

impl Activity {
    fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self)
    }

    /// When the connection became idle, if it is idle now.
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Relaxed) == 0)
            .then(|| self.epoch + Duration::from_millis(self.last_done_millis.load(Relaxed)))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let millis = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_done_millis.store(millis, Relaxed);
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// What one connection's requests share.
struct ConnectionState {
    ctx: Arc<WorkerContext>,
    peer: Peer,
    activity: Activity,
}

/// What a connection's listener serves.
#[derive(Debug, Clone)]
pub(crate) enum ListenerKind {
    Plain,
    /// TLS, after the handshake, with what it told.
    Tls(Arc<crate::tls::ConnectionTls>),
    /// Plain, answering every request with a redirect to HTTPS on this port.
    RedirectToHttps(u16),
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve<S>(
    stream: S,
    addr: SocketAddr,
    ctx: Arc<WorkerContext>,
    listener: Arc<ListenerMetrics>,
    kind: ListenerKind,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = Arc::clone(&ctx.shared);
    let _open = shared.connections.open(&shared.metrics);
    let intake = Arc::new(IntakeReport::default());
    let state = Arc::new(ConnectionState {
        ctx: Arc::clone(&ctx),
        peer: Peer {
            addr,
            ip_header: HeaderValue::from_str(&addr.ip().to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            listener,
            intake: Arc::clone(&intake),
            redirect_https: match &kind {
                ListenerKind::RedirectToHttps(port) => Some(*port),
                _ => None,
            },
            tls: match kind {
                ListenerKind::Tls(tls) => Some(tls),
                _ => None,
            },
        },
        activity: Activity {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_done_millis: AtomicU64::new(0),
        },
    });
    let service = {
        let state = Arc::clone(&state);
        service_fn(move |request: hyper::Request<Incoming>| {
            let state = Arc::clone(&state);
            async move {
                let _in_flight = state.activity.begin();
                Ok::<_, Infallible>(handler::handle(request, &state.peer, &state.ctx.shared).await)
            }
        })
    };
    let peer = addr;
    let connection = ctx.builder.serve_connection_with_upgrades(
        TokioIo::new(Intake::new(stream, ctx.intake, intake)),
        service,
    );
    tokio::pin!(connection);
    // Draining and idleness are watched by a task of their own, which
    // raises `shutdown` once: this task, woken several times per request,
    // then checks one flag instead of polling a timer and the drain token
    // each time.
    let shutdown = Arc::new(Shutdown::default());
    let watcher = AbortOnDropHandle::new(tokio::spawn(watch(
        Arc::clone(&state),
        Arc::clone(&shutdown),
    )));
    let mut draining = false;
    let result = std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                return Poll::Ready(result);
            }
            if draining {
                return Poll::Pending;
            }
            shutdown.waker.register(cx.waker());
            if !shutdown.raised.load(Relaxed) {
                return Poll::Pending;
            }
            draining = true;
            connection.as_mut().graceful_shutdown();
        }
    })
    .await;
    drop(watcher);
    if let Err(error) = result {
        note_connection_error(&shared, peer, error.as_ref());
    }
}

/// Raised when a connection should close gracefully.
#[derive(Default)]
struct Shutdown {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Shutdown {
    fn raise(&self) {
        self.raised.store(true, Relaxed);
        self.waker.wake();
    }
}

/// Raises `shutdown` when the proxy drains, or when the connection has had
/// no request in flight for the idle timeout.
async fn watch(state: Arc<ConnectionState>, shutdown: Arc<Shutdown>) {
    let ctx = &state.ctx;
    let idle = tokio::time::sleep(ctx.idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            () = ctx.shared.drain.cancelled() => break,
            () = idle.as_mut() => match state.activity.idle_since() {
                Some(since) if since + ctx.idle_timeout <= Instant::now() => break,
                Some(since) => idle.as_mut().reset(since + ctx.idle_timeout),
                None => idle.as_mut().reset(Instant::now() + ctx.idle_timeout),
            },
        }
    }
    shutdown.raise();
}

fn note_connection_error(
    shared: &Shared,
    peer: SocketAddr,
    error: &(dyn std::error::Error + Send + Sync + 'static),
) {
    match error.downcast_ref::<hyper::Error>() {
        Some(e) if e.is_parse() || e.is_parse_too_large() => {
            shared.metrics.bad_requests.fetch_add(1, Relaxed);
            tracing::debug!(%peer, error = %e, "malformed request");
        }
        _ => tracing::debug!(%peer, %error, "client connection ended with an error"),
    }
}
