//! HTTP/1.1 to upstreams, driven by the request's own task. A request is
//! written and its response read by the futures and bodies the request
//! path already polls: no task per connection, no channel between the
//! request and the connection, and the response body is sliced from the
//! connection's read buffer. The request body keeps being written while
//! the response arrives (an upstream may answer early), from whichever of
//! the two is polled.
//!
//! Heads are parsed with `httparse`; framing and the chunked coding follow
//! RFC 9112 strictly, since upstream bytes are not trusted more than a
//! client's.

mod chunked;
mod head;
mod write;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::upstream_error::{ErrorClass, tls_class};
pub(crate) use head::connection_has_token;
use head::{BodyLength, ResponseFraming};
pub(crate) use write::Writer;

/// Room made in the read buffer before a read, at first.
const READ_CHUNK: usize = 8 * 1024;
/// Reads grow up to this while they keep filling the room they are given
/// (a large body), and shrink back when they do not.
const MAX_READ: usize = 256 * 1024;

/// Why an HTTP/1.1 exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream connection failed while writing the request")]
    Write(#[source] io::Error),
    #[error("upstream connection failed while reading the response")]
    Read(#[source] io::Error),
    #[error("the upstream closed the connection before answering")]
    ClosedBeforeResponse,
    #[error("the upstream closed the connection in the middle of the response head")]
    IncompleteHead,
    #[error("the upstream closed the connection before the response body ended")]
    IncompleteBody,
    #[error("response head too large")]
    HeadTooLarge,
    #[error("invalid response head: {0}")]
    BadHead(httparse::Error),
    #[error("invalid response status {0}")]
    BadStatus(u16),
    #[error("invalid response header field")]
    BadField,
    #[error("invalid Content-Length")]
    BadLength,
    #[error("invalid chunked response body: {}", .0.0)]
    BadChunk(crate::framing::ChunkError),
    #[error("the request body does not match its Content-Length")]
    RequestLength,
    #[error("the request body failed")]
    RequestBody(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// The upstream's bytes were not valid HTTP/1.1.
    pub fn is_protocol(&self) -> bool {
        matches!(
            self,
            Self::HeadTooLarge
                | Self::BadHead(_)
                | Self::BadStatus(_)
                | Self::BadField
                | Self::BadLength
                | Self::BadChunk(_)
        )
    }

    /// The I/O error underneath, if there is one.
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            Self::Write(error) | Self::Read(error) => Some(error),
            _ => None,
        }
    }

    /// The failure as retry and breaker policies see it.
    pub fn class(&self) -> ErrorClass {
        if let Some(class) = self.io().and_then(|e| tls_class(e)) {
            return class;
        }
        match self.io().map(io::Error::kind) {
            Some(io::ErrorKind::TimedOut) => ErrorClass::Timeout,
            _ if self.is_protocol() || matches!(self, Self::RequestLength) => ErrorClass::Protocol,
            _ => ErrorClass::Reset,
        }
    }
}

/// One connection to an upstream endpoint and its buffers.
pub(crate) struct Connection<IO> {
    io: IO,
    read_buf: BytesMut,
    /// The room to make for the next read.
    read_size: usize,
    /// The request head (and chunk sizes) being written; kept between
    /// exchanges so that it is allocated once per connection.
    write_buf: Vec<u8>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Connection<IO> {
    /// Boxed once, for the connection's life: exchanges, bodies and the
    /// idle list then move a pointer, not the buffers.
    pub fn new(io: IO) -> Box<Self> {
        Box::new(Self {
            io,
            read_buf: BytesMut::new(),
            read_size: READ_CHUNK,
            write_buf: Vec::new(),
        })
    }

    /// Whether an idle connection can carry another exchange: the upstream
    /// has neither closed it nor sent anything unasked. Looks without
    /// waiting (a read that would block means all is well).
    pub fn is_reusable(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        self.read_buf.reserve(READ_CHUNK);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(
            poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.read_buf),
            Poll::Pending
        )
    }

    /// Starts an exchange: the head of `request` written into this
    /// connection's buffer, ready to be sent by [`Exchange`]. `host` is
    /// sent as `Host` when the request has none.
    pub fn start<B: RequestBody>(
        mut self: Box<Self>,
        request: Request<B>,
        host: &str,
    ) -> Result<Exchange<IO, B>, (Box<Self>, Error)> {
        let (parts, body) = request.into_parts();
        let length = if body.is_end_stream() {
            BodyLength::Empty
        } else {
            match body.size_hint().exact() {
                Some(length) => BodyLength::Known(length),
                None => BodyLength::Unknown,
            }
        };
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        self.write_buf.clear();
        match head::encode_request(
            &parts.method,
            target,
            &parts.headers,
            host,
            length,
            &mut self.write_buf,
        ) {
            Ok(framing) => Ok(Exchange {
                conn: Some(self),
                writer: Some(Writer::new(body, framing)),
                head_request: parts.method == http::Method::HEAD,
                write_error: None,
            }),
            Err(error) => Err((self, error)),
        }
    }

    /// Reads more bytes into the read buffer; `Ok(0)` at the end. The
    /// room made is at least what is waiting (a large head is read, and
    /// parsed again, a logarithmic number of times) and adapts to how much
    /// each read brings, as hyper's reads do.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
            self.read_buf
                .reserve(self.read_size.max(self.read_buf.len()));
        }
        let room = self.read_buf.capacity() - self.read_buf.len();
        let read = ready!(poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read_buf
        ))?;
        if read == room {
            self.read_size = (self.read_size * 2).min(MAX_READ);
        } else if read < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(READ_CHUNK);
        }
        Poll::Ready(Ok(read))
    }

    /// Lets go of a large read buffer before the connection idles.
    fn shrink(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > 4 * READ_CHUNK {
            self.read_buf = BytesMut::new();
            self.read_size = READ_CHUNK;
        }
    }
}

/// What a request body must be to be written to an upstream.
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

/// A failed exchange, with what can be reused of it.
pub(crate) struct Failure<B> {
    pub error: Error,
    /// Set when nothing reached the upstream.
    pub unsent: Option<Unsent<B>>,
}

/// A request nothing of which reached the upstream: its encoded head and
/// its untouched body, ready to go out on another connection.
pub(crate) struct Unsent<B> {
    head: Vec<u8>,
    writer: Writer<B>,
    head_request: bool,
}

impl<B> Unsent<B> {
    /// The same exchange on `conn`.
    pub fn resume<IO>(self, mut conn: Box<Connection<IO>>) -> Exchange<IO, B> {
        conn.write_buf = self.head;
        Exchange {
            conn: Some(conn),
            writer: Some(self.writer),
            head_request: self.head_request,
            write_error: None,
        }
    }
}

/// One request sent and its response head awaited.
pub(crate) struct Exchange<IO, B> {
    conn: Option<Box<Connection<IO>>>,
    writer: Option<Writer<B>>,
    head_request: bool,
    /// Writing failed; the response may still have arrived (an upstream
    /// that answers early and closes), so it is read before giving up.
    write_error: Option<Error>,
}

impl<IO, B> Future for Exchange<IO, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    B: RequestBody,
{
    type Output = Result<Response<ResponseBody<IO, B>>, Failure<B>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(Err(failure(Error::ClosedBeforeResponse, None)));
        };
        if let Some(writer) = this.writer.as_mut() {
            match writer.poll_write(&mut conn.io, &mut conn.write_buf, cx) {
                Poll::Ready(Ok(())) => this.writer = None,
                Poll::Ready(Err(error @ Error::Write(_))) => {
                    if writer.is_untouched()
                        && let Some(writer) = this.writer.take()
                    {
                        let unsent = Unsent {
                            head: std::mem::take(&mut conn.write_buf),
                            writer,
                            head_request: this.head_request,
                        };
                        return Poll::Ready(Err(failure(error, Some(unsent))));
                    }
                    // Written in part: the answer may be there all the same.
                    this.writer = None;
                    this.write_error = Some(error);
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(failure(error, None))),
                Poll::Pending => {}
            }
        }
        loop {
            let parsed = head::parse_response(&mut conn.read_buf, this.head_request)
                .map_err(|error| failure(error, None))?;
            if let Some(head) = parsed {
                if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    // 100 Continue and the like: the final answer follows.
                    continue;
                }
                let Some(conn) = this.conn.take() else {
                    return Poll::Ready(Err(failure(Error::ClosedBeforeResponse, None)));
                };
                let request_sent = this.writer.is_none() && this.write_error.is_none();
                return Poll::Ready(Ok(ResponseBody::response(
                    head,
                    conn,
                    this.writer.take(),
                    request_sent,
                )));
            }
            match conn.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    let error = this
                        .write_error
                        .take()
                        .unwrap_or(if conn.read_buf.is_empty() {
                            Error::ClosedBeforeResponse
                        } else {
                            Error::IncompleteHead
                        });
                    return Poll::Ready(Err(failure(error, None)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    let error = this.write_error.take().unwrap_or(Error::Read(error));
                    return Poll::Ready(Err(failure(error, None)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn failure<B>(error: Error, unsent: Option<Unsent<B>>) -> Failure<B> {
    Failure { error, unsent }
}

/// The body of an upstream response, read from its connection as the
/// client's side asks for it. The request body, if still being written,
/// is written from here too.
pub(crate) struct ResponseBody<IO, B> {
    conn: Option<Box<Connection<IO>>>,
    /// Boxed: the request body is itself a proxy body that may hold this
    /// type, and the writer is rarely still busy.
    writer: Option<Box<Writer<B>>>,
    framing: Framing,
    keep_alive: bool,
    /// The whole request reached the upstream.
    request_sent: bool,
}

enum Framing {
    Length(u64),
    /// Boxed: the decoder is several times the size of the other states,
    /// and the body is moved through the request path by value.
    Chunked(Box<chunked::Decoder>),
    UntilClose,
    /// Nothing more to read.
    Done,
    /// The connection switched protocols; it is taken with
    /// [`ResponseBody::take_upgraded`].
    Switched,
}

impl<IO, B> ResponseBody<IO, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    B: RequestBody,
{
    fn response(
        head: head::ResponseHead,
        conn: Box<Connection<IO>>,
        writer: Option<Writer<B>>,
        request_sent: bool,
    ) -> Response<Self> {
        let framing = match head.framing {
            _ if head.status == StatusCode::SWITCHING_PROTOCOLS => Framing::Switched,
            ResponseFraming::Empty | ResponseFraming::Length(0) => Framing::Done,
            ResponseFraming::Length(length) => Framing::Length(length),
            ResponseFraming::Chunked => Framing::Chunked(Box::default()),
            ResponseFraming::UntilClose => Framing::UntilClose,
        };
        let body = Self {
            conn: Some(conn),
            writer: writer.map(Box::new),
            framing,
            keep_alive: head.keep_alive,
            request_sent,
        };
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        response
    }

    /// The connection, if the exchange is over and it can carry another.
    pub fn take_reusable(&mut self) -> Option<Box<Connection<IO>>> {
        let over = matches!(self.framing, Framing::Done) && self.writer.is_none();
        if over && self.keep_alive && self.request_sent {
            let mut conn = self.conn.take()?;
            conn.shrink();
            Some(conn)
        } else {
            None
        }
    }

    /// The connection after a protocol switch (101), with any bytes the
    /// upstream sent after the switch.
    pub fn take_upgraded(&mut self) -> Option<Upgraded<IO>> {
        if !matches!(self.framing, Framing::Switched) {
            return None;
        }
        let conn = self.conn.take()?;
        let Connection { io, read_buf, .. } = *conn;
        Some(Upgraded {
            io,
            read_buf: read_buf.freeze(),
        })
    }

    /// Keeps writing the request body, if it is still going. A failure
    /// ends the writing, not the response.
    fn poll_request(&mut self, cx: &mut Context<'_>) {
        let (Some(writer), Some(conn)) = (self.writer.as_mut(), self.conn.as_mut()) else {
            return;
        };
        match writer.poll_write(&mut conn.io, &mut conn.write_buf, cx) {
            Poll::Ready(Ok(())) => {
                self.writer = None;
                self.request_sent = true;
            }
            Poll::Ready(Err(error)) => {
                tracing::debug!(%error, "request body not fully written");
                self.writer = None;
                self.request_sent = false;
            }
            Poll::Pending => {}
        }
    }
}

impl<IO, B> Body for ResponseBody<IO, B>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    B: RequestBody,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if this.writer.is_some() {
            this.poll_request(cx);
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.framing {
                Framing::Done | Framing::Switched => return Poll::Ready(None),
                Framing::Length(left) if !conn.read_buf.is_empty() => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(conn.read_buf.len());
                    *left -= take as u64;
                    if *left == 0 {
                        this.framing = Framing::Done;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(
                        conn.read_buf.split_to(take).freeze(),
                    ))));
                }
                Framing::Chunked(decoder) => match decoder.decode(&mut conn.read_buf) {
                    Ok(Some(chunked::Decoded::Data(data))) => {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Some(chunked::Decoded::Trailers(trailers))) => {
                        // Trailers end the body: the server may not ask again.
                        this.framing = Framing::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Some(chunked::Decoded::End)) => {
                        this.framing = Framing::Done;
                        return Poll::Ready(None);
                    }
                    Ok(None) => {}
                    Err(error) => return Poll::Ready(Some(Err(this.fail(error)))),
                },
                Framing::UntilClose if !conn.read_buf.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(conn.read_buf.split().freeze()))));
                }
                Framing::Length(_) | Framing::UntilClose => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if matches!(this.framing, Framing::UntilClose) => {
                    this.framing = Framing::Done;
                    this.keep_alive = false;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(this.fail(Error::IncompleteBody)))),
                Ok(_) => {}
                Err(error) => return Poll::Ready(Some(Err(this.fail(Error::Read(error))))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Switched)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done | Framing::Switched => SizeHint::with_exact(0),
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Chunked(_) | Framing::UntilClose => SizeHint::default(),
        }
    }
}

impl<IO, B> ResponseBody<IO, B> {
    /// The body broke: the connection is closed (dropped) with it.
    fn fail(&mut self, error: Error) -> Error {
        self.conn = None;
        self.writer = None;
        self.framing = Framing::Done;
        error
    }
}

/// An upstream connection after a protocol switch: what the upstream sent
/// past its 101 response is read first.
pub struct Upgraded<IO> {
    io: IO,
    read_buf: Bytes,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Upgraded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read_buf.is_empty() {
            let take = this.read_buf.len().min(buf.remaining());
            buf.put_slice(&this.read_buf.split_to(take));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Upgraded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
