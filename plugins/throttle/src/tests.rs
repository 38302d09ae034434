//! Native tests of the throttle policy on the SDK's fake host.

use core::time::Duration;

use weir_sdk::testing::{Harness, Outcome, RequestResult, TestRequest};

use super::Throttle;

fn get() -> TestRequest {
    TestRequest::get("/")
}

#[test]
fn token_bucket_allows_burst_then_429_with_retry_after() {
    let mut h = Harness::<Throttle>::new(r#"{"rate":2,"burst":3}"#).unwrap();
    for _ in 0..3 {
        assert_eq!(h.run(get(), &[]).status(), Some(200));
    }
    let run = h.run(get(), &[]);
    assert_eq!(run.status(), Some(429));
    assert_eq!(run.header("retry-after"), Some("1"));
    assert!(
        run.header("proxy-status")
            .unwrap()
            .contains("http_request_denied")
    );
    // Two tokens a second: after 500 ms one is back.
    h.advance(Duration::from_millis(500));
    assert_eq!(h.run(get(), &[]).status(), Some(200));
    assert_eq!(h.run(get(), &[]).status(), Some(429));
    assert_eq!(h.metric("throttle_rejected_rate_total"), Some(2.0));
    assert_eq!(h.metric("throttle_allowed_total"), Some(4.0));
}

#[test]
fn keys_from_a_header_are_limited_separately() {
    let cfg = r#"{"rate":1,"burst":1,"key":"header:x-api-key"}"#;
    let mut h = Harness::<Throttle>::new(cfg).unwrap();
    let with = |k: &str| TestRequest::get("/").header("X-Api-Key", k);
    assert_eq!(h.run(with("a"), &[]).status(), Some(200));
    assert_eq!(h.run(with("a"), &[]).status(), Some(429));
    assert_eq!(h.run(with("b"), &[]).status(), Some(200));
    // No header: the shared "" key.
    assert_eq!(h.run(get(), &[]).status(), Some(200));
    assert_eq!(h.run(get(), &[]).status(), Some(429));
    assert_eq!(h.status_json()["keys"], 3);
}

#[test]
fn keys_by_client_address() {
    let mut h = Harness::<Throttle>::new(r#"{"rate":1,"key":"client"}"#).unwrap();
    let from = |ip: &str| TestRequest::get("/").client(ip);
    assert_eq!(h.run(from("192.0.2.1"), &[]).status(), Some(200));
    assert_eq!(h.run(from("192.0.2.1"), &[]).status(), Some(429));
    assert_eq!(h.run(from("192.0.2.2"), &[]).status(), Some(200));
}

#[test]
fn the_key_table_stays_bounded() {
    let cfg = r#"{"rate":1,"burst":1,"key":"header:k","max_keys":4}"#;
    let mut h = Harness::<Throttle>::new(cfg).unwrap();
    for i in 0..50 {
        let req = TestRequest::get("/").header("k", &format!("{i}"));
        assert_eq!(h.run(req, &[]).status(), Some(200));
    }
    assert!(h.status_json()["keys"].as_u64().unwrap() <= 4);
}

#[test]
fn concurrency_is_released_in_on_end_even_when_cancelled() {
    let mut h = Harness::<Throttle>::new(r#"{"max_concurrent":2}"#).unwrap();
    let mut a = h.start(get());
    let mut b = h.start(get());
    let mut c = h.start(get());
    assert!(matches!(
        h.on_request(&mut a),
        RequestResult::Continue { .. }
    ));
    assert!(matches!(
        h.on_request(&mut b),
        RequestResult::Continue { .. }
    ));
    let third = h.on_request(&mut c);
    let answer = third.answer().unwrap();
    assert_eq!(answer.status, 503);
    assert!(
        answer
            .header("proxy-status")
            .unwrap()
            .contains("concurrency")
    );
    h.on_end(c, Some(503), None, false);
    assert_eq!(h.status_json()["in_flight"], 2);
    // The client of `a` goes away: on_end with the cancelled flag frees its slot.
    h.on_end(a, None, None, true);
    assert_eq!(h.status_json()["in_flight"], 1);
    let mut d = h.start(get());
    assert!(matches!(
        h.on_request(&mut d),
        RequestResult::Continue { .. }
    ));
    h.on_end(b, Some(200), None, false);
    h.on_end(d, Some(200), None, false);
    assert_eq!(h.status_json()["in_flight"], 0);
    assert_eq!(h.metric("throttle_in_flight"), Some(0.0));
}

#[test]
fn a_retry_inside_does_not_take_a_second_slot() {
    let mut h = Harness::<Throttle>::new(r#"{"max_concurrent":1}"#).unwrap();
    let mut f = h.start(get());
    assert!(matches!(
        h.on_request(&mut f),
        RequestResult::Continue { .. }
    ));
    f.attempt = 2;
    assert!(matches!(
        h.on_request(&mut f),
        RequestResult::Continue { .. }
    ));
    h.on_end(f, Some(200), None, false);
    assert_eq!(h.status_json()["in_flight"], 0);
}

#[test]
fn global_mode_counts_through_shared_counters() {
    let cfg = r#"{"rate":3,"global":true,"global_window":"1s","name":"api","max_concurrent":5}"#;
    let mut h = Harness::<Throttle>::new(cfg).unwrap();
    assert_eq!(h.run(get(), &[]).status(), Some(200));
    // Another proxy sharing the store used one more of this window's three.
    h.set_counter("api:rate:", 2);
    assert_eq!(h.run(get(), &[]).status(), Some(200));
    let run = h.run(get(), &[]);
    assert_eq!(run.status(), Some(429));
    assert_eq!(run.header("retry-after"), Some("1"));
    // The window expires in the store.
    h.advance(Duration::from_secs(1));
    assert_eq!(h.run(get(), &[]).status(), Some(200));
    // In-flight went up and down again through the shared counter.
    assert_eq!(h.counter("api:inflight:"), Some(0));
    h.set_counter("api:inflight:", 5);
    assert_eq!(h.run(get(), &[]).status(), Some(503));
    assert_eq!(h.counter("api:inflight:"), Some(5));
}

#[test]
fn rejects_bad_settings() {
    for (cfg, needle) in [
        (r#"{}"#, "set rate"),
        (r#"{"rate":-1}"#, "positive"),
        (r#"{"rate":1,"burst":0.5}"#, "burst"),
        (r#"{"max_concurrent":0}"#, "max_concurrent"),
        (r#"{"rate":1,"key":"cookie:x"}"#, "key"),
        (r#"{"rate":1,"max_keys":0}"#, "max_keys"),
        (
            r#"{"rate":1,"global":true,"global_window":0}"#,
            "global_window",
        ),
    ] {
        let e = Harness::<Throttle>::new(cfg).unwrap_err();
        assert!(e.contains(needle), "{cfg}: {e}");
    }
}

#[test]
fn status_reports_live_state() {
    let mut h = Harness::<Throttle>::new(r#"{"rate":1,"max_concurrent":3}"#).unwrap();
    h.run(get(), &[Outcome::status(200)]);
    h.run(get(), &[]);
    let s = h.status_json();
    assert_eq!(s["mode"], "local");
    assert_eq!(s["allowed"], 1);
    assert_eq!(s["rejected"]["rate"], 1);
}

#[test]
fn buckets_survive_a_hot_reload() {
    let cfg = r#"{"rate":1,"burst":2,"key":"header:x-api-key"}"#;
    let with = |k: &str| TestRequest::get("/").header("X-Api-Key", k);
    let mut old = Harness::<Throttle>::new(cfg).unwrap();
    assert_eq!(old.run(with("a"), &[]).status(), Some(200));
    assert_eq!(old.run(with("a"), &[]).status(), Some(200));
    assert_eq!(old.run(with("a"), &[]).status(), Some(429));
    let snap = old.snapshot();
    let mut new = Harness::<Throttle>::new(cfg).unwrap();
    new.restore(&snap).unwrap();
    // Key "a" spent its burst before the swap: still limited after it.
    assert_eq!(new.run(with("a"), &[]).status(), Some(429));
    // Others start full, as before.
    assert_eq!(new.run(with("b"), &[]).status(), Some(200));
    assert!(
        new.restore(b"garbage")
            .unwrap_err()
            .contains("bad snapshot")
    );
}
