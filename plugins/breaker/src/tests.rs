//! Native tests of the breaker on the SDK's fake host: the three ways to
//! trip, half-open probe limits and re-open, endpoint scope with passive
//! ejection, and state across a hot reload.

use core::time::Duration;

use weir_sdk::ErrorClass;
use weir_sdk::testing::{Harness, Outcome, RequestResult, TestRequest};

use super::CircuitBreaker;

type H = Harness<CircuitBreaker>;

fn get() -> TestRequest {
    TestRequest::get("/")
}

fn fail(h: &mut H, n: usize) {
    for _ in 0..n {
        h.run(get(), &[Outcome::status(503)]);
    }
}

#[test]
fn consecutive_failures_open_it_and_it_answers_503() {
    let mut h = H::new(r#"{"failure_threshold":3,"open_timeout":"10s"}"#).unwrap();
    fail(&mut h, 2);
    h.run(get(), &[Outcome::status(200)]);
    fail(&mut h, 2);
    assert_eq!(h.status_json()["state"], "closed");
    h.run(get(), &[Outcome::error(ErrorClass::ConnectRefused)]);
    assert_eq!(h.status_json()["state"], "open");
    assert_eq!(h.metric("breaker_opened_total"), Some(1.0));
    h.advance(Duration::from_millis(2500));
    let run = h.run(get(), &[]);
    assert_eq!(run.status(), Some(503));
    assert!(run.local && run.attempts.is_empty());
    assert_eq!(run.header("retry-after"), Some("8"));
    assert!(
        run.header("proxy-status")
            .unwrap()
            .contains("destination_unavailable")
    );
    assert_eq!(h.metric("breaker_rejected_total"), Some(1.0));
    assert_eq!(h.metric("breaker_state"), Some(1.0));
}

#[test]
fn half_open_admits_a_limited_number_of_probes() {
    let cfg = r#"{"failure_threshold":1,"open_timeout":"5s","half_open_max_probes":2,"success_threshold":2}"#;
    let mut h = H::new(cfg).unwrap();
    fail(&mut h, 1);
    h.advance(Duration::from_secs(5));
    let (mut a, mut b, mut c) = (h.start(get()), h.start(get()), h.start(get()));
    assert!(matches!(
        h.on_request(&mut a),
        RequestResult::Continue { .. }
    ));
    assert!(matches!(
        h.on_request(&mut b),
        RequestResult::Continue { .. }
    ));
    assert_eq!(h.status_json()["state"], "half_open");
    // A third request while two probes are out is refused.
    assert_eq!(h.on_request(&mut c).answer().map(|x| x.status), Some(503));
    h.on_end(c, Some(503), None, false);
    assert_eq!(h.status_json()["half_open"]["probes_in_flight"], 2);
    // Probe a succeeds; b's client goes away: its slot comes back.
    h.on_response(&mut a, &mut Outcome::status(200));
    h.on_end(a, Some(200), None, false);
    h.on_end(b, None, None, true);
    assert_eq!(h.status_json()["half_open"]["probes_in_flight"], 0);
    assert_eq!(h.status_json()["state"], "half_open");
    // The second success closes it.
    assert_eq!(h.run(get(), &[Outcome::status(200)]).status(), Some(200));
    assert_eq!(h.status_json()["state"], "closed");
    assert_eq!(h.metric("breaker_closed_total"), Some(1.0));
    assert_eq!(h.metric("breaker_half_opened_total"), Some(1.0));
}

#[test]
fn any_failure_in_half_open_reopens() {
    let cfg = r#"{"failure_threshold":1,"open_timeout":"5s","success_threshold":3}"#;
    let mut h = H::new(cfg).unwrap();
    fail(&mut h, 1);
    h.advance(Duration::from_secs(5));
    h.run(get(), &[Outcome::status(200)]);
    h.run(get(), &[Outcome::status(200)]);
    assert_eq!(h.status_json()["state"], "half_open");
    h.run(get(), &[Outcome::error(ErrorClass::Timeout).reached()]);
    let s = h.status_json();
    assert_eq!(s["state"], "open");
    assert_eq!(s["open_remaining_ms"], 5000);
    assert_eq!(s["transitions"]["opened"], 2);
    assert_eq!(h.run(get(), &[]).status(), Some(503));
}

#[test]
fn failure_rate_over_a_count_window_with_minimum_calls() {
    let cfg = r#"{"mode":"rate","window":"count","window_size":10,"minimum_calls":10,"failure_rate":0.5}"#;
    let mut h = H::new(cfg).unwrap();
    // 4 failures of 9: below the minimum number of calls anyway.
    fail(&mut h, 4);
    for _ in 0..5 {
        h.run(get(), &[Outcome::status(200)]);
    }
    assert_eq!(h.status_json()["state"], "closed");
    // 10th call, 5 of 10 failed: trips.
    fail(&mut h, 1);
    assert_eq!(h.status_json()["state"], "open");
}

#[test]
fn failure_rate_over_a_time_window_forgets_old_calls() {
    let cfg = r#"{"mode":"rate","window":"time","window_duration":"10s","minimum_calls":4,"failure_rate":0.75}"#;
    let mut h = H::new(cfg).unwrap();
    fail(&mut h, 2);
    h.advance(Duration::from_secs(11));
    fail(&mut h, 2);
    h.run(get(), &[Outcome::status(200)]);
    // The first two failures fell out of the window: 2 of 3 calls, under the minimum.
    assert_eq!(h.status_json()["state"], "closed");
    assert_eq!(h.status_json()["window"]["calls"], 3);
    fail(&mut h, 3);
    assert_eq!(h.status_json()["state"], "open");
}

#[test]
fn slow_calls_trip_the_slow_mode() {
    let cfg =
        r#"{"mode":"slow","slow_call_duration":"500ms","slow_call_rate":0.6,"minimum_calls":5}"#;
    let mut h = H::new(cfg).unwrap();
    let slow = Outcome::status(200).latency(Duration::from_millis(800));
    for _ in 0..2 {
        h.run(get(), &[Outcome::status(200)]);
    }
    for _ in 0..2 {
        h.run(get(), std::slice::from_ref(&slow));
    }
    assert_eq!(h.status_json()["state"], "closed");
    h.run(get(), &[slow]);
    assert_eq!(h.status_json()["state"], "open");
}

#[test]
fn what_counts_as_failure_is_configurable() {
    let cfg =
        r#"{"failure_threshold":2,"failure_on":["connect-failure"],"failure_statuses":[429]}"#;
    let mut h = H::new(cfg).unwrap();
    fail(&mut h, 5);
    h.run(get(), &[Outcome::error(ErrorClass::Timeout)]);
    assert_eq!(h.status_json()["state"], "closed");
    h.run(get(), &[Outcome::status(429)]);
    h.run(get(), &[Outcome::error(ErrorClass::ConnectTimeout)]);
    assert_eq!(h.status_json()["state"], "open");
    // Local answers of inner plugins are not the upstream's failures.
    let mut h = H::new(r#"{"failure_threshold":1}"#).unwrap();
    h.run(get(), &[Outcome::local(503)]);
    assert_eq!(h.status_json()["state"], "closed");
}

#[test]
fn endpoint_scope_ejects_through_marks_within_the_cap() {
    let cfg = r#"{"scope":"endpoint","failure_threshold":2,"open_timeout":"30s","max_ejection_percent":50}"#;
    let mut h = H::new(cfg).unwrap();
    let on = |id, o: Outcome| o.on_endpoint(id);
    let respond = |h: &mut H, o: Outcome| {
        let mut f = h.start(get());
        h.on_request(&mut f);
        let mut o = o;
        h.on_response(&mut f, &mut o);
        h.on_end(f, o.status, o.error, false);
    };
    for id in 1..=4 {
        respond(&mut h, on(id, Outcome::status(200)));
    }
    respond(&mut h, on(2, Outcome::status(502)));
    respond(&mut h, on(2, Outcome::status(502)));
    assert_eq!(h.take_marks(), [(2, Duration::from_secs(30))]);
    // Endpoint scope never answers locally.
    assert_eq!(h.run(get(), &[]).status(), Some(200));
    respond(&mut h, on(3, Outcome::status(502)));
    respond(&mut h, on(3, Outcome::status(502)));
    assert_eq!(h.take_marks(), [(3, Duration::from_secs(30))]);
    // Two of four ejected: the cap (50 %) keeps endpoint 4 in.
    respond(&mut h, on(4, Outcome::status(502)));
    respond(&mut h, on(4, Outcome::status(502)));
    assert!(h.take_marks().is_empty());
    let s = h.status_json();
    assert_eq!(s["ejected"], 2);
    assert_eq!(s["ejection_skipped"], 1);
    assert_eq!(s["endpoints"]["2"]["state"], "open");
    // After the open time, endpoint 2's next outcome is a probe: success closes and unmarks.
    h.advance(Duration::from_secs(30));
    respond(&mut h, on(2, Outcome::status(200)));
    assert_eq!(h.take_marks(), [(2, Duration::ZERO)]);
    // Endpoint 3's probe fails: re-opened and marked again.
    respond(&mut h, on(3, Outcome::error(ErrorClass::Reset)));
    assert_eq!(h.take_marks(), [(3, Duration::from_secs(30))]);
    assert_eq!(
        h.status_json()["endpoints"]["3"]["transitions"]["opened"],
        2
    );
}

#[test]
fn state_survives_a_hot_reload() {
    let cfg = r#"{"failure_threshold":1,"open_timeout":"10s"}"#;
    let mut old = H::new(cfg).unwrap();
    fail(&mut old, 1);
    assert_eq!(old.run(get(), &[]).status(), Some(503));
    let snap = old.snapshot();
    let mut new = H::new(cfg).unwrap();
    new.restore(&snap).unwrap();
    assert_eq!(new.status_json()["state"], "open");
    assert_eq!(new.status_json()["rejected"], 1, "the count carried over");
    assert_eq!(new.run(get(), &[]).status(), Some(503));
    assert!(
        new.restore(b"garbage")
            .unwrap_err()
            .contains("bad snapshot")
    );
}

#[test]
fn rejects_bad_settings() {
    for (cfg, needle) in [
        (r#"{"mode":"sometimes"}"#, "unknown variant"),
        (r#"{"failure_threshold":0}"#, "failure_threshold"),
        (r#"{"half_open_max_probes":0}"#, "half_open_max_probes"),
        (r#"{"failure_rate":1.5}"#, "failure_rate"),
        (r#"{"failure_on":["teapot"]}"#, "failure_on"),
        (r#"{"failure_statuses":[1000]}"#, "failure_statuses"),
        (r#"{"max_ejection_percent":101}"#, "max_ejection_percent"),
        (r#"{"open_timeout":0}"#, "open_timeout"),
    ] {
        let e = H::new(cfg).unwrap_err();
        assert!(e.contains(needle), "{cfg}: {e}");
    }
}
