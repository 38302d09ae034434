#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

fn settings() -> IntakeSettings {
    IntakeSettings {
        limits: HeadLimits {
            max_request_line: 8192,
            max_head: 65536,
            max_headers: 100,
        },
        header_read: Duration::from_secs(10),
        body_idle: Duration::from_secs(60),
    }
}

fn intake() -> (DuplexStream, Intake<DuplexStream>, Arc<IntakeReport>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let report = Arc::new(IntakeReport::default());
    (
        client,
        Intake::new(server, settings(), Arc::clone(&report)),
        report,
    )
}

/// What hyper would read once the client wrote `input` in `pieces` and
/// closed its side.
async fn through(
    input: &[u8],
    pieces: usize,
) -> (Vec<u8>, Option<io::ErrorKind>, Arc<IntakeReport>) {
    through_waiting(input, pieces, Duration::from_millis(200)).await
}

/// As [`through`]; `wait` is how long a silent intake is given (it stays
/// silent for good after a refusal).
async fn through_waiting(
    input: &[u8],
    pieces: usize,
    wait: Duration,
) -> (Vec<u8>, Option<io::ErrorKind>, Arc<IntakeReport>) {
    let (mut client, mut intake, report) = intake();
    let size = input.len().div_ceil(pieces.max(1)).max(1);
    for piece in input.chunks(size) {
        client.write_all(piece).await.unwrap();
    }
    drop(client);
    let mut seen = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let read = tokio::time::timeout(wait, intake.read(&mut buf)).await;
        match read {
            Err(_) => return (seen, None, report),
            Ok(Ok(0)) => return (seen, None, report),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (seen, Some(e.kind()), report),
        }
    }
}

fn marker_status(seen: &[u8], report: &IntakeReport) -> Option<http::StatusCode> {
    let text = String::from_utf8_lossy(seen);
    let start = text.find("GET /.weir/intake-refused/")?;
    let path_end = text[start + 4..].find(' ')? + start + 4;
    report
        .take_refusal(&text[start + 4..path_end])
        .map(|r| r.status)
}

#[tokio::test]
async fn good_pipelined_requests_pass_whole_in_any_pieces() {
    let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\nGET /last HTTP/1.1\r\nHost: a\r\n\r\n";
    for pieces in [1, 2, 3, 7, 50, input.len()] {
        let (seen, error, _) = through(input, pieces).await;
        assert_eq!(error, None);
        assert_eq!(seen, input, "in {pieces} pieces");
    }
}

#[tokio::test]
async fn a_bad_head_after_good_ones_becomes_a_marker_and_nothing_after_passes() {
    let good = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    let mut input = good.clone();
    input.extend_from_slice(
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    for pieces in [1, 3, input.len()] {
        let (seen, _, report) = through(&input, pieces).await;
        assert!(seen.starts_with(&good));
        assert_eq!(
            marker_status(&seen[good.len()..], &report),
            Some(http::StatusCode::BAD_REQUEST)
        );
        assert!(!String::from_utf8_lossy(&seen).contains("smuggled"));
    }
}

#[tokio::test]
async fn a_malformed_first_chunk_holds_the_head_back() {
    let input = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n";
    let (seen, _, report) = through(input, 1).await;
    assert!(
        seen.starts_with(b"GET /.weir/intake-refused/"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    assert_eq!(
        marker_status(&seen, &report),
        Some(http::StatusCode::BAD_REQUEST)
    );
}

#[tokio::test]
async fn a_chunk_error_in_a_body_already_here_refuses_the_whole_request() {
    let input = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let (seen, error, report) = through(input, 1).await;
    assert_eq!(error, None);
    assert_eq!(
        marker_status(&seen, &report),
        Some(http::StatusCode::BAD_REQUEST)
    );
}

#[tokio::test]
async fn a_chunk_error_after_the_head_went_through_is_a_body_error() {
    let (mut client, mut intake, _) = intake();
    let head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    client.write_all(head).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 1024];
    while seen.len() < head.len() {
        let n = intake.read(&mut buf).await.unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(seen, head);
    client
        .write_all(b"zz\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let error = intake.read(&mut buf).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn http2_prior_knowledge_passes_through() {
    let mut input = head::H2_PREFACE.to_vec();
    input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0, b'\n', b'\n', 0xff]);
    for pieces in [1, 5, input.len()] {
        let (seen, error, _) = through(&input, pieces).await;
        assert_eq!(error, None);
        assert_eq!(seen, input);
    }
}

#[tokio::test]
async fn an_upgrade_request_passes_the_bytes_after_it() {
    let input = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello\n\n";
    let (seen, error, _) = through(input, 3).await;
    assert_eq!(error, None);
    assert_eq!(seen, input);
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_gets_408_and_a_silent_connection_closes() {
    let (mut client, mut intake, report) = intake();
    client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = intake.read(&mut buf).await.unwrap();
    assert_eq!(
        marker_status(&buf[..n], &report),
        Some(http::StatusCode::REQUEST_TIMEOUT)
    );

    let (_client, mut intake, _) = self::intake();
    assert_eq!(
        intake.read(&mut buf).await.unwrap(),
        0,
        "nothing sent: a quiet close"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_is_a_timed_out_body_error() {
    let (mut client, mut intake, _) = intake();
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 1024];
    let error = loop {
        match intake.read(&mut buf).await {
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(seen.ends_with(b"abc"));
}

#[tokio::test]
async fn a_forged_marker_path_is_not_a_refusal() {
    let report = IntakeReport::default();
    assert_eq!(
        report.take_refusal("/.weir/intake-refused/0000000000000000"),
        None
    );
    let marker = report.refuse(head::Refusal {
        status: http::StatusCode::BAD_REQUEST,
        reason: "test",
    });
    assert_eq!(
        report.take_refusal("/.weir/intake-refused/0000000000000000"),
        None
    );
    assert!(report.take_refusal(&marker).is_some());
    assert!(report.take_refusal(&marker).is_none(), "taken once");
}

/// What hyper saw, with the marker's random token blanked so runs compare.
fn normalised(seen: &[u8]) -> String {
    let text = String::from_utf8_lossy(seen).into_owned();
    match text.find("/.weir/intake-refused/") {
        Some(at) => format!("{}<marker>", &text[..at]),
        None => text,
    }
}

const PIPELINE: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\nGET /last HTTP/1.1\r\nHost: a\r\n\r\n";

const NOISE: &[&str] = &[
    "\r",
    "\n",
    "\r\n",
    " ",
    "\t",
    ":",
    "0",
    "z",
    "\0",
    "Host: b\r\n",
    "Content-Length: 2\r\n",
    "Transfer-Encoding: chunked\r\n",
    "\r\n\r\n",
    "GET / HTTP/1.1\r\n",
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// A mutated pipeline, cut into arbitrary pieces: the intake never
    /// panics, passes the same bytes however the input is cut, passes only
    /// a prefix of the input (then perhaps a marker), and every head it
    /// passes obeys the rules.
    #[test]
    fn what_passes_does_not_depend_on_how_bytes_arrive(
        edits in proptest::collection::vec((0usize..400, 0usize..NOISE.len(), proptest::prelude::any::<bool>()), 0..4),
        pieces in 2usize..40,
    ) {
        let mut input = PIPELINE.as_bytes().to_vec();
        for (at, what, insert) in edits {
            let at = at % (input.len() + 1);
            if insert || at == input.len() {
                input.splice(at..at, NOISE[what].bytes());
            } else {
                input.remove(at);
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let wait = Duration::from_millis(5);
        let (whole, _, _) = runtime.block_on(through_waiting(&input, 1, wait));
        let (cut, _, _) = runtime.block_on(through_waiting(&input, pieces, wait));
        let whole = normalised(&whole);
        proptest::prop_assert_eq!(&whole, &normalised(&cut));
        let passed = whole.strip_suffix("GET <marker>").unwrap_or(&whole);
        proptest::prop_assert!(input.starts_with(passed.as_bytes()));
        // Every head that passed is one the rules accept.
        let mut rest = passed.as_bytes();
        while !rest.is_empty() {
            let rest_trimmed = rest.strip_prefix(b"\r\n").unwrap_or(rest);
            let Ok(head::Partial::Complete(end)) =
                head::find_end(rest_trimmed, &mut head::Scan::default(), &settings().limits)
            else {
                break;
            };
            let accepted = head::check(&rest_trimmed[..end], &settings().limits);
            proptest::prop_assert!(accepted.is_ok(), "{:?}", String::from_utf8_lossy(&rest_trimmed[..end]));
            rest = &rest_trimmed[end..];
            match accepted.map(|h| h.framing) {
                Ok(head::Framing::Length(n)) => rest = &rest[usize::try_from(n).unwrap().min(rest.len())..],
                Ok(head::Framing::Chunked) => {
                    let mut scanner = crate::framing::ChunkScanner::new(65536);
                    match scanner.advance(rest) {
                        Ok(crate::framing::Step::Ended(used)) => rest = &rest[used..],
                        _ => break,
                    }
                }
                _ => {}
            }
        }
    }
}
