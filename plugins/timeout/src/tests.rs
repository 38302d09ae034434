//! Native tests of the timeout policy on the SDK's fake host.

use core::time::Duration;

use weir_sdk::ErrorClass;
use weir_sdk::testing::{Harness, Outcome, TestRequest};

use super::Timeout;

#[test]
fn passes_the_budget_upstream_and_sets_per_try() {
    let mut h = Harness::<Timeout>::new(r#"{"deadline":"2s","per_try":"500ms"}"#).unwrap();
    let run = h.run(TestRequest::get("/"), &[Outcome::status(200)]);
    assert_eq!(run.status(), Some(200));
    assert_eq!(run.attempts[0].timeout, Some(Duration::from_millis(500)));
    assert_eq!(run.attempts[0].header("x-weir-budget-ms"), Some("500"));
    assert_eq!(h.status_json()["in_flight"], 0);
}

#[test]
fn a_slow_attempt_becomes_504_with_proxy_status() {
    let mut h = Harness::<Timeout>::new(r#"{"deadline":"1s","per_try":"300ms"}"#).unwrap();
    let slow = Outcome::status(200).latency(Duration::from_secs(2));
    let run = h.run(TestRequest::get("/"), &[slow]);
    assert_eq!(run.status(), Some(504));
    assert!(run.local);
    assert!(
        run.header("proxy-status")
            .unwrap()
            .contains("http_response_timeout")
    );
    assert_eq!(h.metric("timeout_per_try_exceeded_total"), Some(1.0));
}

#[test]
fn the_deadline_caps_attempts_and_answers_when_spent() {
    let mut h = Harness::<Timeout>::new(r#"{"deadline":"1s","header":"x-deadline"}"#).unwrap();
    let mut f = h.start(TestRequest::get("/"));
    h.on_request(&mut f);
    assert_eq!(f.header("x-deadline"), Some("1000"));
    // A retry from an inner layer after the deadline is spent: local 504.
    h.advance(Duration::from_millis(1200));
    f.attempt = 2;
    let r = h.on_request(&mut f);
    assert_eq!(r.answer().map(|a| a.status), Some(504));
    assert_eq!(h.metric("timeout_deadline_exceeded_total"), Some(1.0));
    let mut out = Outcome::error(ErrorClass::Timeout);
    assert!(matches!(
        h.on_response(&mut f, &mut out),
        weir_sdk::testing::ResponseResult::Replace(a) if a.status == 504
    ));
    h.on_end(f, Some(504), None, false);
    assert_eq!(h.status_json()["deadline_exceeded"], 2);
}

#[test]
fn rejects_bad_settings() {
    let e = Harness::<Timeout>::new(r#"{"per_try":"0s"}"#).unwrap_err();
    assert!(e.contains("positive"), "{e}");
    let e = Harness::<Timeout>::new(r#"{"header":"bad header"}"#).unwrap_err();
    assert!(e.contains("header"), "{e}");
    let e = Harness::<Timeout>::new(r#"{"deadline":"soon"}"#).unwrap_err();
    assert!(e.contains("invalid"), "{e}");
    let e = Harness::<Timeout>::new(r#"{"dedline":"1s"}"#).unwrap_err();
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn decimal_writes_without_allocating() {
    let mut buf = [0u8; 20];
    assert_eq!(super::decimal(0, &mut buf), "0");
    assert_eq!(super::decimal(1500, &mut buf), "1500");
    assert_eq!(super::decimal(u64::MAX, &mut buf), "18446744073709551615");
}

#[test]
fn the_exceeded_counts_survive_a_hot_swap() {
    let cfg = r#"{"deadline":"1s","per_try":"300ms"}"#;
    let mut old = Harness::<Timeout>::new(cfg).unwrap();
    let slow = Outcome::status(200).latency(Duration::from_secs(2));
    old.run(TestRequest::get("/"), &[slow]);
    let before = old.status_json();
    assert_eq!(before["per_try_exceeded"], 1, "{before}");
    let mut new = Harness::<Timeout>::new(cfg).unwrap();
    new.restore(&old.snapshot()).unwrap();
    assert_eq!(new.status_json(), before);
    assert!(new.restore(b"short").unwrap_err().contains("expected 16"));
}
