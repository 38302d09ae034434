//! One worker's keep-alive connections to an upstream's endpoints. An
//! HTTP/1.1 connection ([`super::h1`], driven by the request's own task) is
//! taken from its endpoint's idle list for one exchange and given back when
//! the response body has been read to its end (or was empty); an HTTP/2
//! connection (hyper's, on a task of its own) is shared by all of the
//! worker's requests to the endpoint. A pool belongs to one worker, so its
//! locks are never contended, and nothing is spawned per request: the
//! connection goes back to the list from the body itself.
//!
//! Generic over the request body so that this module needs nothing of the
//! proxy's body type (which holds this module's [`PooledBody`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower_service::Service;

use super::connector::{Counted, CountingConnector};
pub use super::h1::RequestBody;
use super::h1::{self, Connection};
use crate::upstream_error::{ErrorClass, UpstreamError, error_chain};

/// A boxed error of a response body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// How a pool keeps its connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    /// Speak HTTP/2 (one shared connection per endpoint) instead of HTTP/1.1.
    pub h2: bool,
    /// The connections use TLS (HTTP/2's `:scheme` is then `https`).
    pub tls: bool,
    /// An idle connection unused this long is closed.
    pub idle_timeout: Duration,
    /// Idle HTTP/1.1 connections kept per endpoint; more are closed.
    pub max_idle: usize,
}

/// Endpoint ids are small unique numbers: they are their own hash.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8) | u64::from(byte);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id);
    }
}

type ById<T> = HashMap<u32, T, BuildHasherDefault<IdHasher>>;

/// A connection being opened.
type Connecting<'a, T> = Pin<Box<dyn Future<Output = Result<T, UpstreamError>> + Send + 'a>>;

/// Idleness is measured in the reaper's ticks, a quarter of the idle
/// timeout each: a connection is closed after 5 ticks idle, between 1 and
/// 1.25 times the timeout, and giving one back reads a counter instead of
/// the clock.
const TICKS_PER_TIMEOUT: u32 = 4;
const IDLE_TICKS: u64 = TICKS_PER_TIMEOUT as u64 + 1;

struct Idle {
    conn: Box<Connection<Counted>>,
    since_tick: u64,
}

struct Shared<B> {
    sender: http2::SendRequest<B>,
    last_used_tick: u64,
}

/// One worker's connections to one upstream.
pub(crate) struct WorkerPool<B> {
    connector: CountingConnector,
    settings: PoolSettings,
    /// Idle HTTP/1.1 connections per endpoint id, the most recent last.
    idle: Mutex<ById<Vec<Idle>>>,
    /// The HTTP/2 connection per endpoint id.
    shared: Mutex<ById<Shared<B>>>,
    reaper_started: AtomicBool,
    /// The reaper's ticks so far.
    ticks: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B: RequestBody> WorkerPool<B> {
    pub fn new(connector: CountingConnector, settings: PoolSettings) -> Self {
        Self {
            connector,
            settings,
            idle: Mutex::default(),
            shared: Mutex::default(),
            reaper_started: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
        }
    }

    /// Sends `request` to the endpoint over a pooled connection, or a new
    /// one. A request that a reused connection closed before writing (the
    /// upstream hung up while it idled) is sent again on another: it never
    /// reached the upstream. HTTP/1.1 writes the URI's path and query
    /// (origin form) whatever form it came in; for HTTP/2 it is made
    /// absolute (scheme and authority are pseudo-headers).
    pub async fn send(
        self: &Arc<Self>,
        endpoint: u32,
        authority: &Authority,
        mut request: Request<B>,
    ) -> Result<Response<PooledBody<B>>, UpstreamError> {
        if !self.settings.h2 {
            return self.send_h1(endpoint, authority, request).await;
        }
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(if self.settings.tls {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        parts.authority = Some(authority.clone());
        parts.path_and_query = Some(path);
        *request.uri_mut() = Uri::from_parts(parts).map_err(|e| {
            UpstreamError::new(
                ErrorClass::Protocol,
                false,
                format!("cannot build upstream URI: {e}"),
            )
        })?;
        *request.version_mut() = http::Version::HTTP_2;
        self.send_h2(endpoint, authority, request).await
    }

    async fn send_h1(
        self: &Arc<Self>,
        endpoint: u32,
        authority: &Authority,
        request: Request<B>,
    ) -> Result<Response<PooledBody<B>>, UpstreamError> {
        let (conn, mut reused) = self.idle_or_new(endpoint, authority).await?;
        let mut exchange = conn
            .start(request, authority.as_str())
            .map_err(|(_, error)| h1_failure(&error, false))?;
        loop {
            match exchange.await {
                Ok(response) => {
                    let lease = Lease {
                        pool: Arc::clone(self),
                        endpoint,
                    };
                    return Ok(response.map(|body| PooledBody {
                        inner: Inner::H1 {
                            body,
                            lease: Some(lease),
                        },
                    }));
                }
                Err(h1::Failure {
                    unsent: Some(unsent),
                    ..
                }) if reused => {
                    let (conn, again) = self.idle_or_new(endpoint, authority).await?;
                    reused = again;
                    exchange = unsent.resume(conn);
                }
                Err(failure) => {
                    return Err(h1_failure(&failure.error, failure.unsent.is_none()));
                }
            }
        }
    }

    /// An idle HTTP/1.1 connection to the endpoint (and `true`), else a new
    /// one (and `false`).
    async fn idle_or_new(
        &self,
        endpoint: u32,
        authority: &Authority,
    ) -> Result<(Box<Connection<Counted>>, bool), UpstreamError> {
        match self.take_idle(endpoint) {
            Some(conn) => Ok((conn, true)),
            None => Ok((self.connect_h1(authority).await?, false)),
        }
    }

    async fn send_h2(
        self: &Arc<Self>,
        endpoint: u32,
        authority: &Authority,
        mut request: Request<B>,
    ) -> Result<Response<PooledBody<B>>, UpstreamError> {
        loop {
            let (mut sender, reused) = match self.take_shared(endpoint) {
                Some(sender) => (sender, true),
                None => (self.connect_h2(endpoint, authority).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    return Ok(response.map(|body| PooledBody {
                        inner: Inner::H2(body),
                    }));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => {
                        lock(&self.shared).remove(&endpoint);
                        request = unsent;
                    }
                    _ => return Err(UpstreamError::from_exchange(error.error())),
                },
            }
        }
    }

    /// The most recently used idle connection that can take a request.
    fn take_idle(&self, endpoint: u32) -> Option<Box<Connection<Counted>>> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(&endpoint)?;
        // One the upstream closed (or wrote to, unasked) is dropped.
        std::iter::from_fn(|| list.pop())
            .find_map(|mut entry| entry.conn.is_reusable().then_some(entry.conn))
    }

    fn take_shared(&self, endpoint: u32) -> Option<http2::SendRequest<B>> {
        let mut shared = lock(&self.shared);
        let entry = shared.get_mut(&endpoint)?;
        if entry.sender.is_closed() {
            shared.remove(&endpoint);
            return None;
        }
        entry.last_used_tick = self.ticks.load(Relaxed);
        Some(entry.sender.clone())
    }

    async fn connect(&self, authority: &Authority) -> Result<Counted, UpstreamError> {
        let uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| UpstreamError::from_connect(&e))?;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| UpstreamError::from_connect(e.as_ref()))?;
        connector
            .call(uri)
            .await
            .map(TokioIo::into_inner)
            .map_err(|e| UpstreamError::from_connect(e.as_ref()))
    }

    /// Boxed, like [`WorkerPool::connect_h2`]: connecting is rare and its
    /// future is larger than the rest of an exchange's, which would
    /// otherwise carry (and copy) it on every request.
    fn connect_h1<'a>(
        &'a self,
        authority: &'a Authority,
    ) -> Connecting<'a, Box<Connection<Counted>>> {
        Box::pin(async move { Ok(Connection::new(self.connect(authority).await?)) })
    }

    fn connect_h2<'a>(
        self: &'a Arc<Self>,
        endpoint: u32,
        authority: &'a Authority,
    ) -> Connecting<'a, http2::SendRequest<B>> {
        Box::pin(async move {
            let io = self.connect(authority).await?;
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| UpstreamError::from_exchange(&e))?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "upstream connection ended with an error");
                }
            });
            lock(&self.shared).insert(
                endpoint,
                Shared {
                    sender: sender.clone(),
                    last_used_tick: self.ticks.load(Relaxed),
                },
            );
            self.start_reaper();
            Ok(sender)
        })
    }

    /// Takes back a connection whose exchange is over, unless the
    /// endpoint has as many idle ones as it may keep.
    fn keep_idle(self: &Arc<Self>, endpoint: u32, conn: Box<Connection<Counted>>) {
        let surplus = {
            let mut idle = lock(&self.idle);
            let list = idle.entry(endpoint).or_default();
            if list.len() < self.settings.max_idle {
                list.push(Idle {
                    conn,
                    since_tick: self.ticks.load(Relaxed),
                });
                None
            } else {
                Some(conn)
            }
        };
        // Closing the connection is not done under the lock.
        drop(surplus);
        self.start_reaper();
    }

    /// Closes idle connections past the idle timeout, checking every
    /// quarter of it, from a task of the worker's runtime that ends with
    /// the pool.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper_started.load(Relaxed) || self.reaper_started.swap(true, Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reaper_started.store(false, Relaxed);
            return;
        };
        let pool: Weak<Self> = Arc::downgrade(self);
        let every = (self.settings.idle_timeout / TICKS_PER_TIMEOUT).max(Duration::from_millis(10));
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let now = pool.ticks.fetch_add(1, Relaxed) + 1;
                pool.close_stale(now);
            }
        });
    }

    fn close_stale(&self, now_tick: u64) {
        let stale = |since: u64| now_tick.saturating_sub(since) >= IDLE_TICKS;
        let mut closed = Vec::new();
        {
            let mut idle = lock(&self.idle);
            for list in idle.values_mut() {
                closed.extend(list.extract_if(.., |entry| {
                    stale(entry.since_tick) || !entry.conn.is_reusable()
                }));
            }
            idle.retain(|_, list| !list.is_empty());
        }
        drop(closed);
        lock(&self.shared)
            .retain(|_, entry| !stale(entry.last_used_tick) && !entry.sender.is_closed());
    }
}

/// Classifies a failed HTTP/1.1 exchange; `reached` tells whether any of
/// the request may have reached the upstream.
fn h1_failure(error: &h1::Error, reached: bool) -> UpstreamError {
    UpstreamError::new(error.class(), reached, error_chain(error))
}

/// An upstream response body that gives its HTTP/1.1 connection back to the
/// pool once read to its end (or dropped at its end); dropped earlier, the
/// connection is closed, since unread bytes would be taken for the next
/// response.
pub struct PooledBody<B: RequestBody> {
    inner: Inner<B>,
}

enum Inner<B: RequestBody> {
    H1 {
        body: h1::ResponseBody<Counted, B>,
        lease: Option<Lease<B>>,
    },
    H2(Incoming),
}

struct Lease<B: RequestBody> {
    pool: Arc<WorkerPool<B>>,
    endpoint: u32,
}

/// A connection to an upstream after a protocol switch.
pub(crate) type Upgraded = h1::Upgraded<Counted>;

impl<B: RequestBody> PooledBody<B> {
    fn give_back(&mut self) {
        if let Inner::H1 { body, lease } = &mut self.inner
            && let Some(lease) = lease.take()
            && let Some(conn) = body.take_reusable()
        {
            lease.pool.keep_idle(lease.endpoint, conn);
        }
    }

    /// The upstream's side of a protocol switch (a 101 response).
    pub(crate) fn take_upgraded(&mut self) -> Option<Upgraded> {
        match &mut self.inner {
            Inner::H1 { body, .. } => body.take_upgraded(),
            Inner::H2(_) => None,
        }
    }
}

impl<B: RequestBody> Drop for PooledBody<B> {
    fn drop(&mut self) {
        if self.is_end_stream() {
            self.give_back();
        }
    }
}

impl<B: RequestBody> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match &mut this.inner {
            Inner::H1 { body, .. } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => this.give_back(),
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => this.give_back(),
                    _ => {}
                }
                polled.map_err(BodyError::from)
            }
            Inner::H2(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::H1 { body, .. } => body.is_end_stream(),
            Inner::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::H1 { body, .. } => body.size_hint(),
            Inner::H2(body) => body.size_hint(),
        }
    }
}
