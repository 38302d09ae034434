//! The one body type that flows through the proxy in both directions: a
//! streamed body from a peer, or a small body the proxy made itself. An enum
//! rather than a boxed trait object, so the request path allocates nothing
//! for it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::plugin::EndToken;

pin_project_lite::pin_project! {
    /// A request or response body.
    #[project = WeirBodyProj]
    pub enum WeirBody {
        /// Streamed from the client or the upstream, never buffered whole.
        Streaming { #[pin] body: Incoming },
        /// Made by the proxy (local answers, replayed request bodies).
        Full { #[pin] body: Full<Bytes> },
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
}

impl From<Incoming> for WeirBody {
    fn from(body: Incoming) -> Self {
        Self::Streaming { body }
    }
}

impl std::fmt::Debug for WeirBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Streaming { .. } => f.write_str("WeirBody::Streaming"),
            Self::Full { .. } => f.write_str("WeirBody::Full"),
        }
    }
}

impl Body for WeirBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            WeirBodyProj::Streaming { body } => body.poll_frame(cx),
            WeirBodyProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Streaming { body } => body.is_end_stream(),
            Self::Full { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Streaming { body } => body.size_hint(),
            Self::Full { body } => body.size_hint(),
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
    pub fn with_end(inner: WeirBody, token: EndToken) -> Self {
        Self {
            inner,
            end: EndOnDrop {
                token: Some(token),
                finished: false,
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
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
