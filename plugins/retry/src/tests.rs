//! Native tests of the retry policy on the SDK's fake host.

use core::time::Duration;

use weir_sdk::ErrorClass;
use weir_sdk::testing::{Harness, Outcome, TestRequest};

use super::Retry;

fn no_budget_limit(extra: &str) -> String {
    format!(r#"{{"budget_min_per_second":1000{extra}}}"#)
}

#[test]
fn retries_gateway_errors_with_full_jitter_up_to_max_attempts() {
    let cfg = no_budget_limit(r#","backoff_base":"100ms","backoff_max":"150ms""#);
    let mut h = Harness::<Retry>::new(&cfg).unwrap();
    let run = h.run(
        TestRequest::get("/"),
        &[
            Outcome::status(503),
            Outcome::status(502),
            Outcome::status(503),
        ],
    );
    assert_eq!(run.attempts.len(), 3);
    assert_eq!(run.status(), Some(503));
    assert!(
        run.delays[0] <= Duration::from_millis(100),
        "{:?}",
        run.delays
    );
    assert!(
        run.delays[1] <= Duration::from_millis(150),
        "{:?}",
        run.delays
    );
    assert_eq!(h.metric("retry_retries_total"), Some(2.0));
    assert_eq!(h.metric("retry_attempts_exhausted_total"), Some(1.0));
    // Jitter: delays of many retries spread over [0, base].
    let delays: Vec<_> = (0..200)
        .map(|_| {
            h.run(
                TestRequest::get("/"),
                &[Outcome::status(503), Outcome::status(200)],
            )
        })
        .map(|r| r.delays[0].as_millis())
        .collect();
    let mean = delays.iter().sum::<u128>() as f64 / 200.0;
    assert!((35.0..65.0).contains(&mean), "mean {mean}");
    assert_eq!(h.metric("retry_recovered_total"), Some(200.0));
}

#[test]
fn does_not_retry_what_it_is_not_told_to() {
    let mut h = Harness::<Retry>::new(&no_budget_limit("")).unwrap();
    for o in [
        Outcome::status(500),
        Outcome::status(429),
        Outcome::status(404),
    ] {
        assert_eq!(h.run(TestRequest::get("/"), &[o]).attempts.len(), 1);
    }
    let cfg = no_budget_limit(r#","retry_on":["5xx","429","timeout"],"retry_statuses":[409]"#);
    let mut h = Harness::<Retry>::new(&cfg).unwrap();
    for o in [
        Outcome::status(500),
        Outcome::status(429),
        Outcome::status(409),
        Outcome::error(ErrorClass::Timeout).reached(),
    ] {
        assert_eq!(h.run(TestRequest::get("/"), &[o]).attempts.len(), 2);
    }
    assert_eq!(
        h.run(TestRequest::get("/"), &[Outcome::error(ErrorClass::Reset)])
            .attempts
            .len(),
        1
    );
}

#[test]
fn no_retry_of_non_idempotent_requests_that_reached_the_upstream() {
    let mut h = Harness::<Retry>::new(&no_budget_limit("")).unwrap();
    let post = || TestRequest::post("/orders");
    assert_eq!(h.run(post(), &[Outcome::status(503)]).attempts.len(), 1);
    let reset = Outcome::error(ErrorClass::Reset).reached();
    assert_eq!(h.run(post(), &[reset]).attempts.len(), 1);
    assert_eq!(h.metric("retry_skipped_unsafe_total"), Some(2.0));
    // Nothing was sent: safe for any method.
    let refused = Outcome::error(ErrorClass::ConnectRefused);
    assert_eq!(h.run(post(), &[refused]).attempts.len(), 2);
    // An Idempotency-Key makes it safe.
    let keyed = post().header("Idempotency-Key", "abc");
    assert_eq!(h.run(keyed, &[Outcome::status(503)]).attempts.len(), 2);
    // And so does the route saying so.
    let mut h = Harness::<Retry>::new(&no_budget_limit(r#","idempotent_only":false"#)).unwrap();
    assert_eq!(h.run(post(), &[Outcome::status(503)]).attempts.len(), 2);
}

#[test]
fn never_a_body_that_outgrew_the_replay_buffer() {
    let mut h = Harness::<Retry>::new(&no_budget_limit("")).unwrap();
    let req = TestRequest::new("PUT", "/blob").unreplayable_body();
    let run = h.run(req, &[Outcome::error(ErrorClass::ConnectRefused)]);
    assert_eq!(run.attempts.len(), 1);
}

#[test]
fn the_budget_caps_retries_during_an_outage() {
    let cfg =
        r#"{"budget_ratio":0.1,"budget_min_per_second":0,"budget_window":"10s","max_attempts":2}"#;
    let mut h = Harness::<Retry>::new(cfg).unwrap();
    let mut retried = 0;
    for _ in 0..200 {
        let run = h.run(
            TestRequest::get("/"),
            &[Outcome::status(503), Outcome::status(503)],
        );
        retried += run.attempts.len() - 1;
        h.advance(Duration::from_millis(10));
    }
    // 10 % of 200 requests, give or take the first ones.
    assert!((18..=20).contains(&retried), "{retried}");
    assert!(h.metric("retry_budget_exhausted_total").unwrap() >= 180.0);
    assert_eq!(
        h.status_json()["skipped"]["budget"].as_u64(),
        Some(200 - retried as u64)
    );
    // The window slides: after it, the budget is back.
    h.advance(Duration::from_secs(11));
    for _ in 0..10 {
        h.run(TestRequest::get("/"), &[Outcome::status(200)]);
    }
    assert_eq!(
        h.run(TestRequest::get("/"), &[Outcome::status(503)])
            .attempts
            .len(),
        2
    );
}

#[test]
fn retry_after_is_honoured_up_to_a_cap() {
    let cfg = no_budget_limit(r#","retry_on":["429"],"retry_after_max":"3s""#);
    let mut h = Harness::<Retry>::new(&cfg).unwrap();
    let limited = |s: &str| Outcome::status(429).header("retry-after", s);
    let run = h.run(TestRequest::get("/"), &[limited("2")]);
    assert_eq!(run.delays, [Duration::from_secs(2)]);
    let run = h.run(TestRequest::get("/"), &[limited("60")]);
    assert_eq!(run.attempts.len(), 1);
    assert_eq!(h.status_json()["skipped"]["retry_after_too_long"], 1);
}

#[test]
fn retry_after_as_an_http_date_counts_from_the_wall_clock() {
    let cfg = no_budget_limit(r#","retry_on":["429"],"retry_after_max":"3s""#);
    let mut h = Harness::<Retry>::new(&cfg).unwrap();
    // Answered in no time, so the clock at `on_response` is where it started.
    let limited = |s: &str| {
        Outcome::status(429)
            .header("retry-after", s)
            .latency(Duration::ZERO)
    };
    // The fake host's wall clock starts at 1970-01-01 00:00:01.
    let run = h.run(
        TestRequest::get("/"),
        &[limited("Thu, 01 Jan 1970 00:00:03 GMT")],
    );
    assert_eq!(run.delays, [Duration::from_secs(2)]);
    // A date already past: retry at once.
    let run = h.run(
        TestRequest::get("/"),
        &[limited("Thu, 01 Jan 1970 00:00:00 GMT")],
    );
    assert_eq!(run.delays, [Duration::ZERO]);
    // Beyond the cap: not retried, counted.
    let run = h.run(
        TestRequest::get("/"),
        &[limited("Thu, 01 Jan 1970 00:01:00 GMT")],
    );
    assert_eq!(run.attempts.len(), 1);
    assert_eq!(h.status_json()["skipped"]["retry_after_too_long"], 1);
    // Neither a number nor a date: as if absent (the plugin's own backoff).
    let run = h.run(TestRequest::get("/"), &[limited("soon")]);
    assert_eq!(run.attempts.len(), 2);
}

#[test]
fn per_try_timeout_covers_every_attempt_and_retries_go_elsewhere() {
    let cfg = no_budget_limit(r#","per_try_timeout":"200ms","retry_on":["timeout"]"#);
    let mut h = Harness::<Retry>::new(&cfg).unwrap();
    h.set_endpoints(Harness::<Retry>::endpoints(3));
    let slow = Outcome::status(200).latency(Duration::from_secs(1));
    let run = h.run(TestRequest::get("/"), &[slow.clone(), slow.clone(), slow]);
    assert_eq!(run.attempts.len(), 3);
    assert!(
        run.attempts
            .iter()
            .all(|a| a.timeout == Some(Duration::from_millis(200)))
    );
    assert_eq!(run.error, Some(ErrorClass::Timeout));
    let mut eps: Vec<_> = run.attempts.iter().map(|a| a.endpoint.unwrap()).collect();
    eps.sort_unstable();
    assert_eq!(eps, [0, 1, 2]);
}

#[test]
fn rejects_bad_settings() {
    for (cfg, needle) in [
        (r#"{"max_attempts":0}"#, "max_attempts"),
        (r#"{"max_attempts":17}"#, "max_attempts"),
        (r#"{"retry_on":["sometimes"]}"#, "unknown retry_on"),
        (r#"{"retry_statuses":[99]}"#, "not an HTTP status"),
        (
            r#"{"backoff_base":"1s","backoff_max":"10ms"}"#,
            "backoff_base",
        ),
        (r#"{"budget_ratio":-1}"#, "budget_ratio"),
        (r#"{"per_try_timeout":0}"#, "per_try_timeout"),
        (r#"{"retries":3}"#, "unknown field"),
    ] {
        let e = Harness::<Retry>::new(cfg).unwrap_err();
        assert!(e.contains(needle), "{cfg}: {e}");
    }
}

#[test]
fn the_budget_window_survives_a_hot_reload() {
    // No free retries: the budget is only what traffic earns (20 % of it).
    let cfg = r#"{"budget_min_per_second":0,"budget_ratio":0.2,"backoff_base":"1ms","backoff_max":"1ms"}"#;
    let mut old = Harness::<Retry>::new(cfg).unwrap();
    for _ in 0..10 {
        old.run(TestRequest::get("/"), &[Outcome::status(200)]);
    }
    let earned = old.status_json()["budget"]["available"].as_f64().unwrap();
    assert!(earned >= 1.0, "{earned}");
    let snap = old.snapshot();
    let mut new = Harness::<Retry>::new(cfg).unwrap();
    assert_eq!(new.status_json()["budget"]["available"].as_f64(), Some(0.0));
    new.restore(&snap).unwrap();
    assert_eq!(
        new.status_json()["budget"]["available"].as_f64(),
        Some(earned),
        "the earned budget carried over"
    );
    assert!(
        new.restore(b"garbage")
            .unwrap_err()
            .contains("bad snapshot")
    );
}
