//! The one body type that flows through the proxy in both directions: a
//! streamed body from a peer, or a small body the proxy made itself. An enum
//! rather than a boxed trait object, so the request path allocates nothing
//! for it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::cache_store::TeeBody;
use crate::fault::ClientFault;
use crate::plugin::EndToken;
use crate::upstream::pool::{BodyError, PooledBody};

/// Where a streamed request body records that the client broke it, so the
/// request path can tell a failed upstream exchange caused by the client
/// from one caused by the upstream.
pub type ClientBodyFault = Arc<ClientBodyState>;

/// How the client's side of a streamed request body is doing.
#[derive(Debug, Default)]
pub struct ClientBodyState {
    fault: OnceLock<ClientFault>,
    /// The body was last polled and had nothing: the exchange is waiting for
    /// the client, not for the upstream.
    waiting: AtomicBool,
}

impl ClientBodyState {
    /// The client's fault that broke the body, if one did.
    pub fn get(&self) -> Option<&ClientFault> {
        self.fault.get()
    }
}

/// Whether the exchange is waiting for more of the client's body.
pub fn waiting_on_client(state: &ClientBodyState) -> bool {
    state.waiting.load(Ordering::Relaxed)
}

pin_project_lite::pin_project! {
    /// A request or response body.
    #[project = WeirBodyProj]
    pub enum WeirBody {
        /// Streamed from the upstream, never buffered whole; its connection
        /// goes back to the pool at its end.
        Upstream { #[pin] body: PooledBody<WeirBody> },
        /// Streamed from the client; an error of it is the client's fault,
        /// recorded in `fault`.
        Client { #[pin] body: Incoming, fault: ClientBodyFault },
        /// Made by the proxy (local answers, replayed request bodies).
        Full { #[pin] body: Full<Bytes> },
        /// An upstream body also being copied into the cache store.
        Tee { body: Pin<Box<TeeBody<WeirBody>>> },
    }
}

impl WeirBody {
    /// A body with exactly these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full {
            body: Full::new(bytes.into()),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// The client's request body, streamed; its failure lands in the
    /// returned cell.
    pub fn from_client(body: Incoming) -> (Self, ClientBodyFault) {
        let fault = ClientBodyFault::default();
        (
            Self::Client {
                body,
                fault: Arc::clone(&fault),
            },
            fault,
        )
    }
}

impl From<PooledBody<WeirBody>> for WeirBody {
    fn from(body: PooledBody<WeirBody>) -> Self {
        Self::Upstream { body }
    }
}

impl std::fmt::Debug for WeirBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Upstream { .. } => f.write_str("WeirBody::Upstream"),
            Self::Client { .. } => f.write_str("WeirBody::Client"),
            Self::Full { .. } => f.write_str("WeirBody::Full"),
            Self::Tee { .. } => f.write_str("WeirBody::Tee"),
        }
    }
}

impl Body for WeirBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            WeirBodyProj::Upstream { body } => body.poll_frame(cx),
            WeirBodyProj::Client { body, fault } => {
                let polled = body.poll_frame(cx);
                fault.waiting.store(polled.is_pending(), Ordering::Relaxed);
                if let Poll::Ready(Some(Err(error))) = &polled {
                    let _ = fault.fault.set(ClientFault::from_body_error(error));
                }
                polled.map_err(BodyError::from)
            }
            WeirBodyProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
            WeirBodyProj::Tee { body } => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream { body } => body.is_end_stream(),
            Self::Client { body, .. } => body.is_end_stream(),
            Self::Full { body } => body.is_end_stream(),
            Self::Tee { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream { body } => body.size_hint(),
            Self::Client { body, .. } => body.size_hint(),
            Self::Full { body } => body.size_hint(),
            Self::Tee { body } => body.size_hint(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body on its way to the client. It holds the plugin chain's
    /// [`EndToken`] (if the route has plugins) until the body has been sent,
    /// so `on_end` runs after the last byte, or flagged cancelled if the
    /// client went away or the upstream's body failed first.
    pub struct ResponseBody {
        #[pin]
        inner: WeirBody,
        end: EndOnDrop,
    }
}

/// Runs the chain's `on_end`s when dropped; flags them cancelled unless the
/// body finished.
#[derive(Debug)]
struct EndOnDrop {
    token: Option<EndToken>,
    finished: bool,
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Some(mut token) = self.token.take()
            && !self.finished
        {
            token.mark_cancelled();
        }
    }
}

impl ResponseBody {
    /// A body with no chain to end.
    pub fn new(inner: WeirBody) -> Self {
        Self {
            inner,
            end: EndOnDrop {
                token: None,
                finished: false,
            },
        }
    }

    /// A body that ends the chain when it is done.
    /// A body with nothing in it (HEAD, 204, 304) is never polled: it counts
    /// as finished once hyper takes the response.
    pub fn with_end(inner: WeirBody, token: EndToken) -> Self {
        let finished = inner.is_end_stream();
        Self {
            inner,
            end: EndOnDrop {
                token: Some(token),
                finished,
            },
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        match &polled {
            // The server stops polling once the body says it has ended, so
            // the last frame is the end too (a `None` may never be asked for).
            Poll::Ready(Some(Ok(_))) if inner.is_end_stream() => {
                this.end.finished = true;
                this.end.token = None;
            }
            Poll::Ready(None) => {
                this.end.finished = true;
                this.end.token = None;
            }
            Poll::Ready(Some(Err(_))) => {
                this.end.token = this.end.token.take().map(|mut t| {
                    t.mark_cancelled();
                    t
                })
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
