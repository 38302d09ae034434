//! Exchanges over an in-memory pipe, the test playing the upstream byte by
//! byte: what goes on the wire, how responses are delimited, when the
//! connection can be reused.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
use tokio::sync::mpsc;

use super::*;

type Test<B> = Result<Response<ResponseBody<DuplexStream, B>>, Failure<B>>;

fn request<B>(method: Method, body: B) -> Request<B> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = http::Uri::from_static("/path?q=1");
    request
}

fn pipe() -> (Box<Connection<DuplexStream>>, DuplexStream) {
    let (client, server) = duplex(64 * 1024);
    (Connection::new(client), server)
}

async fn send<B: RequestBody>(conn: Box<Connection<DuplexStream>>, request: Request<B>) -> Test<B> {
    match conn.start(request, "up.test:80") {
        Ok(exchange) => exchange.await,
        Err((_, error)) => Err(Failure {
            error,
            unsent: None,
        }),
    }
}

/// Reads from the upstream's side until `needle` has arrived; all read.
async fn read_until(server: &mut DuplexStream, needle: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = server.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}; got {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

async fn collect<B: RequestBody>(
    mut body: ResponseBody<DuplexStream, B>,
) -> (
    Result<Bytes, Error>,
    Option<HeaderMap>,
    ResponseBody<DuplexStream, B>,
) {
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(bytes) => data.extend_from_slice(&bytes),
                Err(frame) => trailers = frame.into_trailers().ok(),
            },
            Err(error) => return (Err(error), trailers, body),
        }
    }
    (Ok(Bytes::from(data)), trailers, body)
}

/// A request body fed by the test, one frame at a time.
struct Fed(mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|data| data.map(|d| Ok(Frame::data(d))))
    }
}

#[tokio::test]
async fn a_get_goes_out_in_one_piece_and_the_connection_is_reused() {
    let (conn, mut server) = pipe();
    let upstream = tokio::spawn(async move {
        let head = read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-up: 1\r\n\r\nhello")
            .await
            .unwrap();
        let second = read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        (head, second, server)
    });
    let response = send(conn, request(Method::GET, Empty::<Bytes>::new()))
        .await
        .ok()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-up"], "1");
    let (data, _, mut body) = collect(response.into_body()).await;
    assert_eq!(data.unwrap(), "hello");
    let mut conn = body.take_reusable().expect("reusable after a whole body");
    assert!(conn.is_reusable());
    let response = send(conn, request(Method::GET, Empty::<Bytes>::new()))
        .await
        .ok()
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.body().is_end_stream());
    let (head, second, _server) = upstream.await.unwrap();
    assert_eq!(head, b"GET /path?q=1 HTTP/1.1\r\nhost: up.test:80\r\n\r\n");
    assert_eq!(second, head);
}

#[tokio::test]
async fn a_small_body_goes_with_its_head_and_a_streamed_one_is_chunked() {
    let (conn, mut server) = pipe();
    let upstream = tokio::spawn(async move {
        let first = read_until(&mut server, b"payload").await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let second = read_until(&mut server, b"0\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        (first, second)
    });
    let full = Full::new(Bytes::from_static(b"payload"));
    let response = send(conn, request(Method::POST, full)).await.ok().unwrap();
    let mut body = response.into_body();
    assert!(body.is_end_stream());
    let conn = body.take_reusable().expect("reusable");

    let (feed, fed) = mpsc::channel(4);
    let sending = tokio::spawn(send(conn, request(Method::PUT, Fed(fed))));
    feed.send(Bytes::from_static(b"abc")).await.unwrap();
    feed.send(Bytes::from_static(b"0123456789")).await.unwrap();
    drop(feed);
    let response = sending.await.unwrap().ok().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (first, second) = upstream.await.unwrap();
    assert_eq!(
        first,
        b"POST /path?q=1 HTTP/1.1\r\nhost: up.test:80\r\ncontent-length: 7\r\n\r\npayload"
    );
    assert_eq!(
        second,
        b"PUT /path?q=1 HTTP/1.1\r\nhost: up.test:80\r\ntransfer-encoding: chunked\r\n\r\n\
          3\r\nabc\r\na\r\n0123456789\r\n0\r\n\r\n"
    );
}

#[tokio::test]
async fn chunked_responses_pass_their_data_and_trailers_and_keep_the_connection() {
    let (conn, mut server) = pipe();
    tokio::spawn(async move {
        read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nwiki\r\n")
            .await
            .unwrap();
        server
            .write_all(b"5\r\npedia\r\n0\r\nx-sum: 9\r\n\r\n")
            .await
            .unwrap();
        server
    });
    let response = send(conn, request(Method::GET, Empty::<Bytes>::new()))
        .await
        .ok()
        .unwrap();
    let (data, trailers, mut body) = collect(response.into_body()).await;
    assert_eq!(data.unwrap(), "wikipedia");
    assert_eq!(trailers.unwrap()["x-sum"], "9");
    assert!(body.take_reusable().is_some());
}

#[tokio::test]
async fn a_body_delimited_by_close_ends_there_and_the_connection_with_it() {
    let (conn, mut server) = pipe();
    tokio::spawn(async move {
        read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil ")
            .await
            .unwrap();
        server.write_all(b"the end").await.unwrap();
    });
    let response = send(conn, request(Method::GET, Empty::<Bytes>::new()))
        .await
        .ok()
        .unwrap();
    let (data, _, mut body) = collect(response.into_body()).await;
    assert_eq!(data.unwrap(), "until the end");
    assert!(body.take_reusable().is_none());
}

#[tokio::test]
async fn a_short_body_is_an_error_not_an_end() {
    let (conn, mut server) = pipe();
    tokio::spawn(async move {
        read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
            .await
            .unwrap();
    });
    let response = send(conn, request(Method::GET, Empty::<Bytes>::new()))
        .await
        .ok()
        .unwrap();
    let (data, _, mut body) = collect(response.into_body()).await;
    assert!(matches!(data, Err(Error::IncompleteBody)));
    assert!(body.take_reusable().is_none());
}

#[tokio::test]
async fn an_upstream_that_closes_without_answering_is_told_apart_from_a_bad_answer() {
    let (conn, mut server) = pipe();
    tokio::spawn(async move {
        read_until(&mut server, b"\r\n\r\n").await;
    });
    let failed = send(conn, request(Method::GET, Empty::<Bytes>::new()))
        .await
        .err()
        .unwrap();
    assert!(matches!(failed.error, Error::ClosedBeforeResponse));
    assert_eq!(failed.error.class(), ErrorClass::Reset);

    let (conn, mut server) = pipe();
    tokio::spawn(async move {
        read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n")
            .await
            .unwrap();
    });
    let failed = send(conn, request(Method::GET, Empty::<Bytes>::new()))
        .await
        .err()
        .unwrap();
    assert!(matches!(failed.error, Error::BadLength));
    assert_eq!(failed.error.class(), ErrorClass::Protocol);
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_or_wrote_to_is_not_reused() {
    let (mut conn, server) = pipe();
    assert!(conn.is_reusable());
    drop(server);
    assert!(!conn.is_reusable());

    let (mut conn, mut server) = pipe();
    server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
    assert!(!conn.is_reusable());
}

#[tokio::test]
async fn a_request_that_could_not_be_written_comes_back_unsent() {
    let (conn, server) = pipe();
    drop(server);
    let failed = send(conn, request(Method::GET, Empty::<Bytes>::new()))
        .await
        .err()
        .unwrap();
    let unsent = failed.unsent.expect("nothing was written");
    let (conn, mut server) = pipe();
    let upstream = tokio::spawn(async move {
        let head = read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        head
    });
    let response = unsent.resume(conn).await.ok().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        upstream.await.unwrap(),
        b"GET /path?q=1 HTTP/1.1\r\nhost: up.test:80\r\n\r\n"
    );
}

#[tokio::test]
async fn an_early_answer_arrives_while_the_body_is_still_being_sent() {
    let (conn, mut server) = pipe();
    let (feed, fed) = mpsc::channel(4);
    tokio::spawn(async move {
        read_until(&mut server, b"first").await;
        server
            .write_all(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 4\r\n\r\nbig!")
            .await
            .unwrap();
        server
    });
    feed.send(Bytes::from_static(b"first")).await.unwrap();
    let response = send(conn, request(Method::POST, Fed(fed)))
        .await
        .ok()
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (data, _, mut body) = collect(response.into_body()).await;
    assert_eq!(data.unwrap(), "big!");
    // The request never ended: the connection cannot carry another.
    assert!(body.take_reusable().is_none());
    drop(feed);
}

#[tokio::test]
async fn interim_answers_are_skipped_and_a_switch_hands_over_the_connection() {
    let (conn, mut server) = pipe();
    tokio::spawn(async move {
        read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            )
            .await
            .unwrap();
        server
    });
    let response = send(conn, request(Method::GET, Empty::<Bytes>::new()))
        .await
        .ok()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(collect(response.into_body()).await.0.unwrap(), "ok");

    let (conn, mut server) = pipe();
    let upstream = tokio::spawn(async move {
        read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\nearly")
            .await
            .unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        got
    });
    let response = send(conn, request(Method::GET, Empty::<Bytes>::new()))
        .await
        .ok()
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut body = response.into_body();
    assert!(body.is_end_stream());
    assert!(body.take_reusable().is_none());
    let mut upgraded = body.take_upgraded().expect("switched");
    let mut early = [0u8; 5];
    upgraded.read_exact(&mut early).await.unwrap();
    assert_eq!(&early, b"early");
    upgraded.write_all(b"pong").await.unwrap();
    assert_eq!(&upstream.await.unwrap(), b"pong");
}

#[tokio::test]
async fn a_head_request_reads_no_body_whatever_the_length_says() {
    let (conn, mut server) = pipe();
    tokio::spawn(async move {
        read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
            .await
            .unwrap();
        server
    });
    let response = send(conn, request(Method::HEAD, Empty::<Bytes>::new()))
        .await
        .ok()
        .unwrap();
    assert_eq!(response.headers()["content-length"], "100");
    let mut body = response.into_body();
    assert!(body.is_end_stream());
    assert!(body.take_reusable().is_some());
}

#[tokio::test]
async fn a_large_body_arrives_whole_in_growing_reads_and_its_buffer_is_let_go() {
    let (conn, mut server) = pipe();
    let size = 3 * MAX_READ;
    tokio::spawn(async move {
        read_until(&mut server, b"\r\n\r\n").await;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
        server.write_all(head.as_bytes()).await.unwrap();
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        server.write_all(&body).await.unwrap();
        server
    });
    let response = send(conn, request(Method::GET, Empty::<Bytes>::new()))
        .await
        .ok()
        .unwrap();
    let mut body = response.into_body();
    let mut data = Vec::new();
    let mut largest_read_size = 0;
    while let Some(frame) = body.frame().await {
        data.extend_from_slice(&frame.unwrap().into_data().unwrap());
        if let Some(conn) = body.conn.as_ref() {
            largest_read_size = largest_read_size.max(conn.read_size);
        }
    }
    assert_eq!(data.len(), size);
    assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    assert!(
        largest_read_size > READ_CHUNK,
        "reads grew: {largest_read_size}"
    );
    let conn = body.take_reusable().expect("reusable");
    assert!(conn.read_buf.capacity() <= 4 * READ_CHUNK);
}

#[tokio::test]
async fn an_absolute_target_is_written_in_origin_form() {
    let (conn, mut server) = pipe();
    let upstream = tokio::spawn(async move {
        let head = read_until(&mut server, b"\r\n\r\n").await;
        server
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        head
    });
    let mut absolute = request(Method::GET, Empty::<Bytes>::new());
    *absolute.uri_mut() = http::Uri::from_static("https://site.test/a/b?c=d");
    let response = send(conn, absolute).await.ok().unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        upstream.await.unwrap(),
        b"GET /a/b?c=d HTTP/1.1\r\nhost: up.test:80\r\n\r\n"
    );
}
