//! Bodies stream through in both directions without being held whole.

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use weir_tests::upstream::pattern_byte;
use weir_tests::{TestProxy, TestUpstream, config_head};

const TOTAL: usize = 64 * 1024 * 1024;

fn resident_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn proxy(upstream: &TestUpstream) -> TestProxy {
    TestProxy::start(&format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\n",
        config_head(),
        upstream.addr
    ))
}

#[tokio::test]
async fn large_download_streams_with_bounded_memory() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy(&upstream);
    let before = resident_kib();
    let response = weir_tests::client()
        .request(
            Request::get(proxy.url(&format!("/big/{TOTAL}")))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let (mut offset, mut peak) = (0usize, before);
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            for (i, byte) in data.iter().enumerate() {
                assert_eq!(*byte, pattern_byte(offset + i), "byte {}", offset + i);
            }
            offset += data.len();
            if offset % (8 << 20) < data.len() {
                peak = peak.max(resident_kib());
            }
        }
    }
    assert_eq!(offset, TOTAL);
    // Upstream, proxy and client share this process: all three together
    // must stay far below the body's size.
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 32,
        "resident memory grew {growth_mib} MiB for a {} MiB body",
        TOTAL >> 20
    );
}

#[tokio::test]
async fn large_upload_streams_with_bounded_memory() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy(&upstream);
    let before = resident_kib();
    const CHUNK: usize = 64 * 1024;
    let chunks = futures_util::stream::iter(0..TOTAL / CHUNK).map(|i| {
        let start = i * CHUNK;
        Ok::<_, std::convert::Infallible>(Frame::data(
            (start..start + CHUNK).map(pattern_byte).collect::<Bytes>(),
        ))
    });
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(proxy.url("/count"))
        .body(StreamBody::new(chunks))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let peak = resident_kib();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    let expected_sum = (0..TOTAL).fold(0u64, |s, i| s.wrapping_add(u64::from(pattern_byte(i))));
    assert_eq!(
        String::from_utf8_lossy(&text),
        format!("{TOTAL}:{expected_sum}")
    );
    let growth_mib = peak.saturating_sub(before) / 1024;
    assert!(
        growth_mib < 32,
        "resident memory grew {growth_mib} MiB for a {} MiB body",
        TOTAL >> 20
    );
}

#[tokio::test]
async fn echo_streams_both_ways_on_one_request() {
    let upstream = TestUpstream::start("u").await;
    let proxy = proxy(&upstream);
    let payload: Vec<u8> = (0..3 * 1024 * 1024).map(pattern_byte).collect();
    let request = Request::post(proxy.url("/echo"))
        .body(http_body_util::Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let reply = weir_tests::send(&weir_tests::client(), request)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert!(reply.body == payload, "echoed body differs");
}
