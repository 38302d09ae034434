//! One worker's keep-alive connections to an upstream's endpoints, on
//! hyper's connection API. An HTTP/1.1 connection is taken from its
//! endpoint's idle list for one exchange and given back when the response
//! body has been read to its end (or was empty); an HTTP/2 connection is
//! shared by all of the worker's requests to the endpoint. A pool belongs to
//! one worker, so its locks are never contended, and nothing is spawned per
//! request: the connection goes back to the list from the body itself.
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
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::connector::CountingConnector;
use crate::upstream_error::{ErrorClass, UpstreamError};

/// What a request body must be for hyper's client connections.
pub trait RequestBody:
    Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

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

struct Idle<B> {
    sender: http1::SendRequest<B>,
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
    idle: Mutex<ById<Vec<Idle<B>>>>,
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
    /// reached the upstream. Its URI is put in the form the protocol wants:
    /// origin form for HTTP/1.1, absolute (scheme and authority are
    /// pseudo-headers) for HTTP/2.
    pub async fn send(
        self: &Arc<Self>,
        endpoint: u32,
        authority: &Authority,
        mut request: Request<B>,
    ) -> Result<Response<PooledBody<B>>, UpstreamError> {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        if self.settings.h2 {
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
        } else {
            *request.uri_mut() = Uri::from(path);
            *request.version_mut() = http::Version::HTTP_11;
            self.send_h1(endpoint, authority, request).await
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        endpoint: u32,
        authority: &Authority,
        mut request: Request<B>,
    ) -> Result<Response<PooledBody<B>>, UpstreamError> {
        loop {
            let (mut sender, reused) = match self.take_idle(endpoint) {
                Some(sender) => (sender, true),
                None => (self.connect_h1(authority).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    // After a protocol switch the connection is the tunnel's.
                    let lease =
                        (response.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
                            sender,
                            pool: Arc::clone(self),
                            endpoint,
                        });
                    return Ok(response.map(|body| PooledBody { body, lease }));
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(UpstreamError::from_exchange(error.error())),
                },
            }
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
                Ok(response) => return Ok(response.map(|body| PooledBody { body, lease: None })),
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
    fn take_idle(&self, endpoint: u32) -> Option<http1::SendRequest<B>> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(&endpoint)?;
        // One that is not ready has been closed by the upstream: dropped.
        std::iter::from_fn(|| list.pop())
            .find_map(|entry| entry.sender.is_ready().then_some(entry.sender))
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

    async fn connect(
        &self,
        authority: &Authority,
    ) -> Result<super::connector::Counted, UpstreamError> {
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
            .map_err(|e| UpstreamError::from_connect(e.as_ref()))
    }

    /// Boxed, like [`WorkerPool::connect_h2`]: connecting is rare and its
    /// future is larger than the rest of an exchange's, which would
    /// otherwise carry (and copy) it on every request.
    fn connect_h1<'a>(&'a self, authority: &'a Authority) -> Connecting<'a, http1::SendRequest<B>> {
        Box::pin(async move {
            let io = self.connect(authority).await?;
            let (sender, connection) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| UpstreamError::from_exchange(&e))?;
            tokio::spawn(async move {
                if let Err(error) = connection.with_upgrades().await {
                    tracing::debug!(%error, "upstream connection ended with an error");
                }
            });
            Ok(sender)
        })
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
                .handshake(io)
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

    /// Takes back a connection whose exchange is over. One still busy
    /// (the request body is still being written) is taken back once it is
    /// ready, off the request path; one that closed is let go.
    fn give_back(self: &Arc<Self>, endpoint: u32, mut sender: http1::SendRequest<B>) {
        if sender.is_ready() {
            self.keep_idle(endpoint, sender);
        } else if !sender.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let pool = Arc::downgrade(self);
            runtime.spawn(async move {
                if sender.ready().await.is_ok()
                    && let Some(pool) = pool.upgrade()
                {
                    pool.keep_idle(endpoint, sender);
                }
            });
        }
    }

    fn keep_idle(self: &Arc<Self>, endpoint: u32, sender: http1::SendRequest<B>) {
        let surplus = {
            let mut idle = lock(&self.idle);
            let list = idle.entry(endpoint).or_default();
            if list.len() < self.settings.max_idle {
                list.push(Idle {
                    sender,
                    since_tick: self.ticks.load(Relaxed),
                });
                None
            } else {
                Some(sender)
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
                    stale(entry.since_tick) || entry.sender.is_closed()
                }));
            }
            idle.retain(|_, list| !list.is_empty());
        }
        drop(closed);
        lock(&self.shared)
            .retain(|_, entry| !stale(entry.last_used_tick) && !entry.sender.is_closed());
    }
}

/// An upstream response body that gives its HTTP/1.1 connection back to the
/// pool once read to its end (or dropped at its end); dropped earlier, the
/// connection is closed, since unread bytes would be taken for the next
/// response.
pub struct PooledBody<B: RequestBody> {
    body: Incoming,
    lease: Option<Lease<B>>,
}

struct Lease<B: RequestBody> {
    sender: http1::SendRequest<B>,
    pool: Arc<WorkerPool<B>>,
    endpoint: u32,
}

impl<B: RequestBody> PooledBody<B> {
    fn give_back(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.pool.give_back(lease.endpoint, lease.sender);
        }
    }
}

impl<B: RequestBody> Drop for PooledBody<B> {
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

impl<B: RequestBody> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
