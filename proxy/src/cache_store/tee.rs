//! [`TeeBody`]: streams a response body to the client and copies its frames
//! (by reference count, not by byte) aside; the response is stored when the
//! body ends cleanly.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame, SizeHint};

use super::StoreDirective;

/// What is being collected.
struct Collect {
    directive: StoreDirective,
    chunks: Vec<Bytes>,
    len: u64,
    /// `Content-Length`, if the response declared one: a shorter body is not stored.
    expected: Option<u64>,
}

impl Collect {
    fn finish(self) {
        if self.expected.is_some_and(|n| n != self.len) {
            return;
        }
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.into_iter().next().unwrap_or_default(),
            _ => {
                let mut all = BytesMut::with_capacity(usize::try_from(self.len).unwrap_or(0));
                for c in &self.chunks {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        };
        let key = String::from_utf8_lossy(self.directive.key()).into_owned();
        if self.directive.store_full(body) {
            tracing::debug!(target: "weir::cache", key, "response stored");
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that is also being stored (see [`StoreDirective::tee`]).
    pub struct TeeBody<B> {
        #[pin]
        inner: B,
        collect: Option<Collect>,
    }
}

impl<B> std::fmt::Debug for TeeBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeBody")
            .field("storing", &self.collect.is_some())
            .finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes>> TeeBody<B> {
    pub(super) fn new(inner: B, directive: StoreDirective) -> Self {
        let expected = directive
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut collect = Some(Collect {
            directive,
            chunks: Vec::new(),
            len: 0,
            expected,
        });
        // An empty body may never be polled (hyper checks `is_end_stream`).
        if inner.is_end_stream()
            && let Some(c) = collect.take()
        {
            c.finish();
        }
        Self { inner, collect }
    }

    /// Whether the body is still being stored (not finished, not abandoned).
    pub fn is_storing(&self) -> bool {
        self.collect.is_some()
    }
}

impl<B: Body<Data = Bytes>> Body for TeeBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(data), Some(c)) = (f.data_ref(), this.collect.as_mut()) {
                    c.len += data.len() as u64;
                    if c.len > c.directive.max_bytes {
                        // Too large: stop collecting; the lock is released here.
                        *this.collect = None;
                    } else if !data.is_empty() {
                        c.chunks.push(data.clone());
                    }
                }
                if this.inner.is_end_stream()
                    && let Some(c) = this.collect.take()
                {
                    c.finish();
                }
            }
            Some(Err(_)) => *this.collect = None,
            None => {
                if let Some(c) = this.collect.take() {
                    c.finish();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
