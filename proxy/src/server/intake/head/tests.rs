use super::*;

const LIMITS: HeadLimits = HeadLimits {
    max_request_line: 8192,
    max_head: 65536,
    max_headers: 100,
};

fn verdict(head: &str) -> Result<Head, StatusCode> {
    let bytes = head.as_bytes();
    match find_end(bytes, &mut Scan::default(), &LIMITS).map_err(|r| r.status)? {
        Partial::NeedMore => panic!("incomplete head in test: {head:?}"),
        Partial::Complete(end) => {
            assert_eq!(end, bytes.len(), "head must end where the test says");
            check(bytes, &LIMITS).map_err(|r| r.status)
        }
    }
}

fn refused(head: &str) -> StatusCode {
    match verdict(head) {
        Ok(h) => panic!("accepted: {head:?} as {h:?}"),
        Err(status) => status,
    }
}

#[test]
fn plain_heads_pass() {
    let h = verdict("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::Empty);
    let h = verdict("POST /x?y=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::Length(5));
    let h = verdict("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::Chunked);
    let h = verdict("GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(h.framing, Framing::Empty);
    let h = verdict("GET http://a:80/x HTTP/1.1\r\nHost: a:80\r\n\r\n").unwrap();
    assert!(!h.upgrade);
    let h = verdict("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert!(h.upgrade);
    verdict("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    verdict("GET / HTTP/1.1\r\nHost: a\r\nX-Obs: caf\u{e9}\r\nX-Tab: a\tb\r\n\r\n").unwrap();
    verdict("GET / HTTP/1.1\r\nHost:a\r\nX-Empty:\r\n\r\n").unwrap();
}

#[test]
fn framing_ambiguity_is_refused() {
    for head in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 \r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n",
    ] {
        assert_eq!(refused(head), StatusCode::BAD_REQUEST, "{head:?}");
    }
    for head in [
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
    ] {
        assert_eq!(refused(head), StatusCode::NOT_IMPLEMENTED, "{head:?}");
    }
}

#[test]
fn syntax_breaches_are_refused() {
    for head in [
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n",
        "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x01b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x7fb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nBad{Name}: 1\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / http/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1x\r\nHost: a\r\n\r\n",
        "GET x HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert_eq!(refused(head), StatusCode::BAD_REQUEST, "{head:?}");
    }
}

#[test]
fn host_rules() {
    for head in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET http://internal.example/x HTTP/1.1\r\nHost: public.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: \r\n\r\n",
    ] {
        assert_eq!(refused(head), StatusCode::BAD_REQUEST, "{head:?}");
    }
    verdict("GET http://A.example/x HTTP/1.1\r\nHost: a.EXAMPLE\r\n\r\n").unwrap();
    verdict("GET http://a.example/x HTTP/1.0\r\n\r\n").unwrap();
}

#[test]
fn versions() {
    // HTTP/0.9 has no head to end: refused at its request line.
    assert_eq!(
        find_end(b"GET /\r\n", &mut Scan::default(), &LIMITS)
            .unwrap_err()
            .status,
        StatusCode::HTTP_VERSION_NOT_SUPPORTED
    );
    assert_eq!(
        refused("GET /\r\n\r\n"),
        StatusCode::HTTP_VERSION_NOT_SUPPORTED
    );
    assert_eq!(
        refused("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
        StatusCode::HTTP_VERSION_NOT_SUPPORTED
    );
    assert_eq!(
        refused("GET / HTTP/1.2\r\nHost: a\r\n\r\n"),
        StatusCode::HTTP_VERSION_NOT_SUPPORTED
    );
    assert_eq!(
        refused("GET / HTTP/0.9\r\nHost: a\r\n\r\n"),
        StatusCode::HTTP_VERSION_NOT_SUPPORTED
    );
    assert_eq!(
        refused("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
        StatusCode::NOT_IMPLEMENTED
    );
}

#[test]
fn bare_lf_is_refused_as_soon_as_seen() {
    for head in [
        "GET / HTTP/1.1\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\n",
        "\n",
    ] {
        let err = find_end(head.as_bytes(), &mut Scan::default(), &LIMITS).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST, "{head:?}");
    }
}

#[test]
fn sizes_are_bounded() {
    let line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    assert_eq!(refused(&line), StatusCode::URI_TOO_LONG);
    // Refused before the line ends, too.
    let partial = format!("GET /{}", "a".repeat(9000));
    assert_eq!(
        find_end(partial.as_bytes(), &mut Scan::default(), &LIMITS)
            .unwrap_err()
            .status,
        StatusCode::URI_TOO_LONG
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(70_000)
    );
    assert_eq!(refused(&big), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(refused(&many), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[test]
fn a_trickled_head_is_found_once_complete() {
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\nNEXT";
    let mut scan = Scan::default();
    for end in 1..head.len() - 4 {
        assert_eq!(
            find_end(&head[..end], &mut scan, &LIMITS),
            Ok(Partial::NeedMore)
        );
    }
    assert_eq!(
        find_end(&head[..], &mut scan, &LIMITS),
        Ok(Partial::Complete(head.len() - 4))
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never panic the scanner or the checker, and whatever
    /// the checker accepts keeps the invariants hyper and the upstream rely
    /// on.
    #[test]
    fn arbitrary_heads_never_panic_and_accepted_ones_are_clean(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)
    ) {
        fuzz_one(&bytes);
    }

    /// Valid heads mutated a few bytes at a time, to reach deep into the rules.
    #[test]
    fn mutated_heads_never_panic_and_accepted_ones_are_clean(
        base in 0usize..SEEDS.len(),
        edits in proptest::collection::vec((0usize..256, 0usize..INTERESTING.len(), 0u8..3), 1..6)
    ) {
        let mut bytes = SEEDS[base].as_bytes().to_vec();
        for (at, what, how) in edits {
            let at = at % (bytes.len() + 1);
            let insert = INTERESTING[what].as_bytes();
            match how {
                0 => { bytes.splice(at..at, insert.iter().copied()); }
                1 if at < bytes.len() => { bytes.remove(at); }
                _ => {
                    let end = (at + insert.len()).min(bytes.len());
                    bytes.splice(at..end, insert.iter().copied());
                }
            }
        }
        fuzz_one(&bytes);
    }
}

const SEEDS: &[&str] = &[
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
    "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET http://a/x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: ws\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
];

const INTERESTING: &[&str] = &[
    "\r",
    "\n",
    "\r\n",
    " ",
    "\t",
    ":",
    ",",
    "\0",
    "\x7f",
    "\u{e9}",
    "0",
    "9",
    "-",
    "+",
    "Host: b\r\n",
    "Content-Length: 7\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Transfer-Encoding: gzip, chunked\r\n",
    "chunked",
    "Chunked",
    "HTTP/1.0",
    "HTTP/2.0",
    "http://c",
    " \r\n",
    "\r\n\r\n",
    "x",
];

fn fuzz_one(bytes: &[u8]) {
    let Ok(Partial::Complete(end)) = find_end(bytes, &mut Scan::default(), &LIMITS) else {
        return;
    };
    let head = &bytes[..end];
    let Ok(accepted) = check(head, &LIMITS) else {
        return;
    };
    // No bare LF, no CR outside a CRLF.
    for (i, b) in head.iter().enumerate() {
        if *b == b'\n' {
            assert!(i > 0 && head[i - 1] == b'\r', "bare LF accepted: {head:?}");
        }
        if *b == b'\r' {
            assert_eq!(head.get(i + 1), Some(&b'\n'), "lone CR accepted: {head:?}");
        }
    }
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let lines: Vec<&str> = text.split("\r\n").collect();
    let count = |name: &str| lines.iter().filter(|l| l.starts_with(name)).count();
    assert!(count("host:") <= 1, "two hosts accepted: {text:?}");
    assert!(
        count("content-length:") <= 1,
        "two lengths accepted: {text:?}"
    );
    assert!(
        count("content-length:") == 0 || count("transfer-encoding:") == 0,
        "length and chunked accepted: {text:?}"
    );
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| !l.starts_with(' ') && !l.starts_with('\t')),
        "folding accepted: {text:?}"
    );
    assert!(
        lines[0].ends_with(" http/1.1") || lines[0].ends_with(" http/1.0"),
        "odd version accepted: {text:?}"
    );
    if accepted.framing == Framing::Chunked {
        let chunked = lines
            .iter()
            .filter_map(|l| l.strip_prefix("transfer-encoding:"))
            .filter(|v| v.trim_start_matches(' ') == "chunked")
            .count();
        assert_eq!(
            chunked, 1,
            "chunked framing without one clean chunked field: {text:?}"
        );
    }
}
