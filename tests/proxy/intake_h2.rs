//! HTTP/2 (h2c) requests the proxy must refuse, sent as raw frames (a
//! conforming client library will not send them): the stream is reset with
//! `PROTOCOL_ERROR` (or answered 400 for Weir's own `host` rules) and the
//! upstream receives nothing.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_tests::{TestUpstream, config_head};

use super::plugins::proxy_with;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PROTOCOL_ERROR: u32 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK header block of literal fields, never indexed or Huffman-coded.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        out.push(u8::try_from(name.len()).unwrap());
        out.extend_from_slice(name.as_bytes());
        out.push(u8::try_from(value.len()).unwrap());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// How the proxy ended stream 1.
#[derive(Debug, PartialEq)]
enum Verdict {
    Reset(u32),
    GoAway(u32),
    /// A response; the first byte of its header block (0x8c is `:status 400`).
    Response(u8),
    Nothing,
}

async fn exchange(addr: std::net::SocketAddr, frames: &[Vec<u8>]) -> Verdict {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for f in frames {
        out.extend_from_slice(f);
    }
    stream.write_all(&out).await.unwrap();
    let read = async {
        loop {
            let mut head = [0u8; 9];
            if stream.read_exact(&mut head).await.is_err() {
                return Verdict::Nothing;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).await.is_err() {
                return Verdict::Nothing;
            }
            match head[3] {
                RST_STREAM if id == 1 => {
                    return Verdict::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap()));
                }
                GOAWAY => {
                    let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                    if code != 0 {
                        return Verdict::GoAway(code);
                    }
                }
                HEADERS if id == 1 => return Verdict::Response(payload[0]),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or(Verdict::Nothing)
}

fn request(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut fields = vec![
        (":method".to_owned(), "GET".to_owned()),
        (":scheme".to_owned(), "http".to_owned()),
        (":path".to_owned(), "/".to_owned()),
        (":authority".to_owned(), "h2.test".to_owned()),
    ];
    fields.extend(
        extra
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    fields
}

fn headers_frame(fields: &[(String, String)], flags: u8) -> Vec<u8> {
    let refs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    frame(HEADERS, END_HEADERS | flags, 1, &block(&refs))
}

#[tokio::test]
async fn malformed_h2_requests_are_reset_and_never_reach_the_upstream() {
    let upstream = TestUpstream::start("u").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n",
        config_head(),
        upstream.addr
    );
    let proxy = proxy_with(&[], &config);

    // A good request first: h2c works and answers 200 (0x88).
    let good = exchange(proxy.addr, &[headers_frame(&request(&[]), END_STREAM)]).await;
    assert_eq!(good, Verdict::Response(0x88));
    let after_good = upstream.bytes_received();
    assert!(after_good > 0);

    let without = |name: &str| -> Vec<(String, String)> {
        request(&[])
            .into_iter()
            .filter(|(n, _)| n != name)
            .collect()
    };
    let mut pseudo_late = request(&[("x-a", "1")]);
    pseudo_late.push((":foo".to_owned(), "bar".to_owned()));
    let mut path_after_field = without(":path");
    path_after_field.push(("x-a".to_owned(), "1".to_owned()));
    path_after_field.push((":path".to_owned(), "/".to_owned()));
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("connection", request(&[("connection", "keep-alive")])),
        ("keep-alive", request(&[("keep-alive", "timeout=5")])),
        (
            "proxy-connection",
            request(&[("proxy-connection", "keep-alive")]),
        ),
        (
            "transfer-encoding",
            request(&[("transfer-encoding", "chunked")]),
        ),
        ("upgrade", request(&[("upgrade", "websocket")])),
        ("te other than trailers", request(&[("te", "gzip")])),
        ("no :path", without(":path")),
        ("no :method", without(":method")),
        ("an unknown pseudo-header", pseudo_late),
        ("a pseudo-header after a field", path_after_field),
        ("an upper-case name", request(&[("X-Upper", "1")])),
    ];
    for (name, fields) in &cases {
        let verdict = exchange(proxy.addr, &[headers_frame(fields, END_STREAM)]).await;
        assert!(
            matches!(
                verdict,
                Verdict::Reset(PROTOCOL_ERROR) | Verdict::GoAway(PROTOCOL_ERROR)
            ),
            "{name}: {verdict:?}"
        );
        assert_eq!(
            upstream.bytes_received(),
            after_good,
            "{name}: reached the upstream"
        );
    }

    // Weir's own rules: one host, the same as :authority.
    for (name, fields) in [
        (
            "host differs from :authority",
            request(&[("host", "other.test")]),
        ),
        (
            "two hosts",
            request(&[("host", "h2.test"), ("host", "h2.test")]),
        ),
    ] {
        let verdict = exchange(proxy.addr, &[headers_frame(&fields, END_STREAM)]).await;
        assert_eq!(verdict, Verdict::Response(0x8c), "{name}: 400 expected");
        assert_eq!(
            upstream.bytes_received(),
            after_good,
            "{name}: reached the upstream"
        );
    }

    // A content-length the DATA disagrees with, arriving with the head.
    let fields = {
        let mut f = request(&[("content-length", "5")]);
        f[0].1 = "POST".to_owned();
        f
    };
    let verdict = exchange(
        proxy.addr,
        &[
            headers_frame(&fields, 0),
            frame(DATA, END_STREAM, 1, b"abcdefgh"),
        ],
    )
    .await;
    assert!(
        matches!(
            verdict,
            Verdict::Reset(PROTOCOL_ERROR) | Verdict::GoAway(PROTOCOL_ERROR)
        ),
        "content-length mismatch: {verdict:?}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        upstream.bytes_received(),
        after_good,
        "content-length mismatch: reached the upstream"
    );
}
