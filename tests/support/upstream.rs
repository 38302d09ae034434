//! Upstream servers for the tests, each on its own ephemeral loopback port:
//! a controllable HTTP server (HTTP/1.1 and h2c), and raw TCP peers that
//! refuse, hang, reset or speak garbage, and a WebSocket echo server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, hyper::Error>;

/// A controllable HTTP upstream. Paths:
/// - `/status/N` answers status N; `/slow/MS` answers after MS milliseconds;
/// - `/headers` answers the request's headers as JSON;
/// - `/echo` streams the request body back; `/count` answers `LEN:SUM` of it;
/// - `/big/N` streams N bytes; anything else answers the server's name;
/// - `/cacheable/SECONDS/BYTES` answers BYTES pattern bytes with
///   `Cache-Control: max-age=SECONDS` and an `ETag` (304 to a matching
///   `If-None-Match`).
///
/// Every answer carries `x-upstream: NAME`.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: String,
    connections: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl TestUpstream {
    pub async fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
    }

    /// Starts on a given address (e.g. `127.0.0.2:PORT` for DNS tests,
    /// where endpoints differ by IP and share a port).
    pub async fn start_on(name: &str, address: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(serve(
            listener,
            name.to_owned(),
            [
                Arc::clone(&connections),
                Arc::clone(&closed),
                Arc::clone(&requests),
                Arc::clone(&bytes),
            ],
        ));
        Ok(Self {
            addr,
            name: name.to_owned(),
            connections,
            closed,
            requests,
            bytes,
            task,
        })
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections that have ended (closed by the peer, or after an error).
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Bytes received so far, over every connection.
    pub fn bytes_received(&self) -> usize {
        self.bytes.load(Ordering::SeqCst)
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves until aborted; counts connections opened and ended, requests
/// and bytes received, in that order.
async fn serve(listener: TcpListener, name: String, counters: [Arc<AtomicUsize>; 4]) {
    let [connections, closed, requests, bytes] = counters;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let name = name.clone();
        let requests = Arc::clone(&requests);
        let bytes = Arc::clone(&bytes);
        let closed = Arc::clone(&closed);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                requests.fetch_add(1, Ordering::SeqCst);
                let name = name.clone();
                async move { Ok::<_, Infallible>(answer(request, &name).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(Counted { stream, bytes }), service)
                .await;
            closed.fetch_add(1, Ordering::SeqCst);
        });
    }
}

/// A stream that counts the bytes read from it.
struct Counted {
    stream: tokio::net::TcpStream,
    bytes: Arc<AtomicUsize>,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        self.bytes
            .fetch_add(buf.filled().len() - before, Ordering::SeqCst);
        polled
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

async fn answer(request: Request<Incoming>, name: &str) -> Response<Body> {
    let path = request.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (head, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut response = match head {
        "status" => {
            let status = arg
                .parse()
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            let mut r = Response::new(full(format!("status {status}")));
            *r.status_mut() = status;
            r
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(100))).await;
            Response::new(full(format!("slow {name}")))
        }
        "headers" => {
            let mut map = serde_json::Map::new();
            for (key, value) in request.headers() {
                let entry = map
                    .entry(key.as_str())
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let serde_json::Value::Array(list) = entry {
                    list.push(serde_json::Value::String(
                        value.to_str().unwrap_or("").to_owned(),
                    ));
                }
            }
            map.insert("_version".into(), format!("{:?}", request.version()).into());
            Response::new(full(serde_json::Value::Object(map).to_string()))
        }
        "echo" => Response::new(request.into_body().boxed()),
        "count" => {
            let mut body = request.into_body();
            let (mut len, mut sum) = (0u64, 0u64);
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    len += data.len() as u64;
                    sum = data.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
                }
            }
            Response::new(full(format!("{len}:{sum}")))
        }
        "cacheable" => {
            let mut args = arg.split('/');
            let max_age: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
            let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
            let etag = "\"e1\"";
            let fresh = request
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v == etag);
            let mut r = if fresh {
                let mut r = Response::new(full(Bytes::new()));
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                r
            } else {
                Response::new(pattern_body(size))
            };
            let headers = r.headers_mut();
            headers.insert(
                "cache-control",
                format!("max-age={max_age}").parse().unwrap(),
            );
            headers.insert("etag", etag.parse().unwrap());
            if !fresh {
                headers.insert("content-length", size.to_string().parse().unwrap());
            }
            r
        }
        "big" => {
            let total: usize = arg.parse().unwrap_or(0);
            Response::new(pattern_body(total))
        }
        _ => Response::new(full(name.to_owned())),
    };
    response
        .headers_mut()
        .insert("x-upstream", name.parse().unwrap());
    response
}

/// The byte at `offset` of the test pattern.
pub fn pattern_byte(offset: usize) -> u8 {
    (offset % 251) as u8
}

/// `total` bytes of the test pattern, streamed in 64 KiB chunks.
fn pattern_body(total: usize) -> Body {
    const CHUNK: usize = 64 * 1024;
    let chunks = (0..total.div_ceil(CHUNK)).map(move |i| {
        let start = i * CHUNK;
        let end = (start + CHUNK).min(total);
        Ok::<_, hyper::Error>(Frame::data(
            (start..end).map(pattern_byte).collect::<Bytes>(),
        ))
    });
    BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks)))
}

/// An address on which nothing listens: connecting is refused.
pub fn refused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A raw TCP peer that misbehaves in one way after reading the request.
pub struct RawPeer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// How a [`RawPeer`] misbehaves.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// Reads the request and never answers.
    Hang,
    /// Reads the request and resets the connection.
    Reset,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Answers `200 ok` as if keeping the connection alive, then closes it
    /// 50 ms later, as an upstream whose keep-alive timeout is short does.
    AnswerThenClose,
    /// Answers every request on the connection with exactly these bytes,
    /// and closes the connection after the first if `then_close`.
    Say {
        bytes: &'static [u8],
        then_close: bool,
    },
}

impl RawPeer {
    pub async fn start(how: Misbehaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                match how {
                    Misbehaviour::Hang => held.push(stream),
                    Misbehaviour::Reset => {
                        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                        drop(stream);
                    }
                    Misbehaviour::Garbage => {
                        let _ = stream.write_all(b"THIS IS NOT HTTP\r\n\r\n").await;
                        let _ = stream.shutdown().await;
                    }
                    Misbehaviour::Say { bytes, then_close } => {
                        tokio::spawn(async move {
                            while stream.write_all(bytes).await.is_ok() && !then_close {
                                if !matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                                    break;
                                }
                            }
                        });
                    }
                    Misbehaviour::AnswerThenClose => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            drop(stream);
                        });
                    }
                }
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener whose accept queue is full, so new connections are never
/// established: connecting to it times out.
pub struct Unaccepting {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<std::net::TcpStream>,
}

impl Unaccepting {
    pub fn start() -> Self {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        // Fill the queue: once connects start timing out, it is full.
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(stream) => fillers.push(stream),
                Err(_) => break,
            }
        }
        Self {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }
}

/// A WebSocket server that echoes every message.
pub struct WebSocketEcho {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl WebSocketEcho {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(message)) = socket.next().await {
                        if message.is_close() {
                            break;
                        }
                        if socket.send(message).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for WebSocketEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}
