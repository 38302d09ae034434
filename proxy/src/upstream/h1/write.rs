//! Writing one request to an upstream connection: its head, then its body
//! in the framing the head announced, with as few writes as the socket
//! allows (head, data and chunk delimiters go out in one vectored write).

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::Body;
use tokio::io::AsyncWrite;

use super::head::RequestFraming;
use super::{Error, RequestBody};

/// Ends a chunk's data.
const CRLF: &[u8] = b"\r\n";
/// Ends a chunk's data and the body, without trailers.
const CRLF_LAST_CHUNK: &[u8] = b"\r\n0\r\n\r\n";
/// Ends a chunked body without trailers.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A request being written. What is queued goes out in order: the
/// connection's write buffer from `buf_at` (the head, or a chunk's size
/// line or trailers), then `data`, then `tail`.
pub(crate) struct Writer<B> {
    body: Option<B>,
    framing: RequestFraming,
    buf_at: usize,
    data: Bytes,
    tail: &'static [u8],
    /// Some byte was accepted by the connection.
    sent_any: bool,
    flushed: bool,
}

impl<B: RequestBody> Writer<B> {
    pub(super) fn new(body: B, framing: RequestFraming) -> Self {
        Self {
            body: (framing != RequestFraming::Empty).then_some(body),
            framing,
            buf_at: 0,
            data: Bytes::new(),
            tail: &[],
            sent_any: false,
            flushed: false,
        }
    }

    /// Nothing of the request has reached the connection yet.
    pub(super) fn is_untouched(&self) -> bool {
        !self.sent_any
    }

    /// Writes what it can; ready when the whole request is written and
    /// flushed. A body frame that is ready is queued before writing, so a
    /// small body goes out with the head in one write.
    pub(super) fn poll_write<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        buf: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        let mut body_pending = false;
        loop {
            if !body_pending
                && self.data.is_empty()
                && self.tail.is_empty()
                && let Some(body) = self.body.as_mut()
            {
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(None) => self.end(buf)?,
                    Poll::Ready(Some(Err(error))) => {
                        self.body = None;
                        return Poll::Ready(Err(Error::RequestBody(error.into())));
                    }
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => self.queue_data(data, buf)?,
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                self.end_with_trailers(&trailers, buf)?;
                            }
                        }
                    },
                    Poll::Pending => body_pending = true,
                }
                continue;
            }
            if self.buf_at < buf.len() || !self.data.is_empty() || !self.tail.is_empty() {
                ready!(self.poll_drain(io, buf, cx))?;
                continue;
            }
            // Everything queued is written: flushed (a no-op on plain TCP;
            // TLS may hold a record back) while waiting for the body, or at
            // its end.
            if !self.flushed {
                ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(Error::Write)?;
                self.flushed = true;
            }
            return if self.body.is_none() {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
    }

    /// Room at the end of the write buffer: emptied first if all of it
    /// has been written.
    fn buf_for_more<'b>(&mut self, buf: &'b mut Vec<u8>) -> &'b mut Vec<u8> {
        if self.buf_at == buf.len() {
            buf.clear();
            self.buf_at = 0;
        }
        buf
    }

    fn queue_data(&mut self, data: Bytes, buf: &mut Vec<u8>) -> Result<(), Error> {
        let ended = self.body.as_ref().is_some_and(Body::is_end_stream);
        match &mut self.framing {
            RequestFraming::Length(left) => {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or(Error::RequestLength)?;
                self.data = data;
                if ended {
                    self.end(buf)?;
                }
            }
            RequestFraming::Chunked if data.is_empty() => {
                if ended {
                    self.end(buf)?;
                }
            }
            RequestFraming::Chunked => {
                let buf = self.buf_for_more(buf);
                let mut size = [0u8; 16];
                buf.extend_from_slice(hex(data.len(), &mut size));
                buf.extend_from_slice(CRLF);
                self.data = data;
                if ended {
                    self.body = None;
                    self.tail = CRLF_LAST_CHUNK;
                } else {
                    self.tail = CRLF;
                }
            }
            RequestFraming::Empty => self.body = None,
        }
        Ok(())
    }

    /// The body ended: the chunked coding's last chunk, or a check that
    /// the declared length was all sent.
    fn end(&mut self, buf: &mut Vec<u8>) -> Result<(), Error> {
        self.body = None;
        match self.framing {
            RequestFraming::Length(0) | RequestFraming::Empty => Ok(()),
            RequestFraming::Length(_) => Err(Error::RequestLength),
            RequestFraming::Chunked => {
                self.buf_for_more(buf).extend_from_slice(LAST_CHUNK);
                Ok(())
            }
        }
    }

    fn end_with_trailers(&mut self, trailers: &HeaderMap, buf: &mut Vec<u8>) -> Result<(), Error> {
        if self.framing != RequestFraming::Chunked {
            // Trailers need the chunked coding; with a length they are dropped.
            return self.end(buf);
        }
        self.body = None;
        let buf = self.buf_for_more(buf);
        buf.extend_from_slice(b"0\r\n");
        for (name, value) in trailers {
            buf.extend_from_slice(name.as_str().as_bytes());
            buf.extend_from_slice(b": ");
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(CRLF);
        }
        buf.extend_from_slice(CRLF);
        Ok(())
    }

    /// Writes everything queued.
    fn poll_drain<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        buf: &mut [u8],
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        loop {
            let queued = [&buf[self.buf_at..], &self.data[..], self.tail];
            if queued.iter().all(|part| part.is_empty()) {
                return Poll::Ready(Ok(()));
            }
            let slices = queued.map(IoSlice::new);
            let written = ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))
                .map_err(Error::Write)?;
            if written == 0 {
                return Poll::Ready(Err(Error::Write(std::io::ErrorKind::WriteZero.into())));
            }
            self.sent_any = true;
            self.flushed = false;
            self.advance(written, buf.len());
        }
    }

    fn advance(&mut self, mut written: usize, buf_len: usize) {
        let from_buf = written.min(buf_len - self.buf_at);
        self.buf_at += from_buf;
        written -= from_buf;
        let from_data = written.min(self.data.len());
        self.data.advance(from_data);
        written -= from_data;
        self.tail = &self.tail[written.min(self.tail.len())..];
    }
}

/// `n` in lower-case hex, written into the end of `out`.
fn hex(mut n: usize, out: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &out[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_hex() {
        for n in [0usize, 9, 10, 255, 4096, usize::MAX] {
            assert_eq!(hex(n, &mut [0; 16]), format!("{n:x}").as_bytes());
        }
    }
}
