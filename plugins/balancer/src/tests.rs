//! Native tests of the balancer on the SDK's fake host: distributions with
//! fixed seeds (statistical tolerances), health, retries and hash stability.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;

use weir_sdk::Endpoint;
use weir_sdk::testing::{Harness, TestRequest};

use super::Balancer;

fn ep(id: u32, weight: u32) -> Endpoint {
    Endpoint {
        id,
        weight,
        healthy: true,
        ..Endpoint::default()
    }
}

fn harness(cfg: &str, endpoints: Vec<Endpoint>) -> Harness<Balancer> {
    let mut h = Harness::<Balancer>::with_seed(cfg, 42).unwrap();
    h.set_endpoints(endpoints);
    h
}

fn pick(h: &mut Harness<Balancer>, req: TestRequest) -> u32 {
    let mut f = h.start(req);
    h.select(&mut f).unwrap()
}

fn counts(h: &mut Harness<Balancer>, n: usize) -> BTreeMap<u32, usize> {
    let mut c = BTreeMap::new();
    for _ in 0..n {
        *c.entry(pick(h, TestRequest::get("/"))).or_default() += 1;
    }
    c
}

fn within(actual: usize, expected: f64, tolerance: f64) -> bool {
    (actual as f64 - expected).abs() <= expected * tolerance
}

#[test]
fn round_robin_is_even() {
    let mut h = harness("", Harness::<Balancer>::endpoints(3));
    let c = counts(&mut h, 300);
    assert!(c.values().all(|n| *n == 100), "{c:?}");
}

#[test]
fn smooth_weighted_round_robin_interleaves() {
    let cfg = r#"{"algorithm":"weighted_round_robin"}"#;
    let mut h = harness(cfg, vec![ep(1, 5), ep(2, 1), ep(3, 1)]);
    let seq: Vec<u32> = (0..7)
        .map(|_| pick(&mut h, TestRequest::get("/")))
        .collect();
    // nginx's smooth WRR for 5/1/1: a a b a c a a.
    assert_eq!(seq, [1, 1, 2, 1, 3, 1, 1]);
    let c = counts(&mut h, 700);
    assert_eq!((c[&1], c[&2], c[&3]), (500, 100, 100));
}

#[test]
fn random_is_uniform_and_weighted() {
    let mut h = harness(
        r#"{"algorithm":"random"}"#,
        Harness::<Balancer>::endpoints(3),
    );
    let c = counts(&mut h, 6000);
    assert!(c.values().all(|n| within(*n, 2000.0, 0.08)), "{c:?}");
    let mut h = harness(r#"{"algorithm":"random"}"#, vec![ep(1, 3), ep(2, 1)]);
    let c = counts(&mut h, 4000);
    assert!(
        within(c[&1], 3000.0, 0.05) && within(c[&2], 1000.0, 0.15),
        "{c:?}"
    );
}

#[test]
fn least_request_prefers_idle_endpoints() {
    let busy = |id, in_flight| Endpoint {
        in_flight,
        ..ep(id, 1)
    };
    let cfg = r#"{"algorithm":"least_request"}"#;
    let mut h = harness(cfg, vec![busy(1, 0), busy(2, 5), busy(3, 10)]);
    let c = counts(&mut h, 3000);
    // P2C: the idlest wins whenever drawn (2/3), the busiest never.
    assert!(within(c[&1], 2000.0, 0.08), "{c:?}");
    assert_eq!(c.get(&3), None, "{c:?}");
}

#[test]
fn peak_ewma_avoids_the_slow_endpoint() {
    let lat = |id, us| Endpoint {
        latency_ewma_us: us,
        ..ep(id, 1)
    };
    let cfg = r#"{"algorithm":"peak_ewma"}"#;
    let mut h = harness(cfg, vec![lat(1, 1_000), lat(2, 1_200), lat(3, 90_000)]);
    let c = counts(&mut h, 3000);
    assert_eq!(c.get(&3), None, "{c:?}");
    assert!(within(c[&1], 2000.0, 0.08), "{c:?}");
}

#[test]
fn peak_ewma_gives_a_new_endpoint_a_neutral_cost() {
    let lat = |id, us| Endpoint {
        latency_ewma_us: us,
        ..ep(id, 1)
    };
    let cfg = r#"{"algorithm":"peak_ewma"}"#;
    // Endpoint 3 has no latency yet: it costs the others' mean (2 ms), so it
    // is tried (it beats the 3 ms one) but does not take every request.
    let mut h = harness(cfg, vec![lat(1, 1_000), lat(2, 3_000), lat(3, 0)]);
    let c = counts(&mut h, 3000);
    assert!(c.get(&3).is_some_and(|n| *n > 500 && *n < 1500), "{c:?}");
    assert!(
        c.get(&1)
            .is_some_and(|n| *n > c.get(&3).copied().unwrap_or(0)),
        "{c:?}"
    );
}

#[test]
fn unhealthy_endpoints_are_skipped_unless_all_are() {
    let mut eps = Harness::<Balancer>::endpoints(3);
    eps[1].healthy = false;
    let mut h = harness(r#"{"algorithm":"random"}"#, eps.clone());
    assert_eq!(counts(&mut h, 300).get(&1), None);
    for e in &mut eps {
        e.healthy = false;
    }
    h.set_endpoints(eps);
    assert_eq!(counts(&mut h, 300).len(), 3);
}

#[test]
fn retries_go_to_untried_endpoints() {
    for algo in [
        "round_robin",
        "random",
        "least_request",
        "peak_ewma",
        "ring_hash",
        "maglev",
    ] {
        let cfg = format!(r#"{{"algorithm":"{algo}"}}"#);
        let mut h = harness(&cfg, Harness::<Balancer>::endpoints(3));
        for _ in 0..20 {
            let mut f = h.start(TestRequest::get("/same"));
            f.tried = vec![0, 2];
            assert_eq!(h.select(&mut f), Some(1), "{algo}");
        }
        let mut f = h.start(TestRequest::get("/same"));
        f.tried = vec![0, 1, 2];
        assert!(h.select(&mut f).is_some());
        assert_eq!(h.metric("balancer_all_tried_total"), Some(1.0), "{algo}");
    }
}

/// Fraction of `keys` whose endpoint differs between two endpoint sets.
fn moved(cfg: &str, before: Vec<Endpoint>, after: Vec<Endpoint>, keys: usize) -> f64 {
    let mut h = harness(cfg, before);
    let first: Vec<u32> = (0..keys)
        .map(|k| pick(&mut h, TestRequest::get(&format!("/item/{k}"))))
        .collect();
    h.set_endpoints(after);
    let changed = (0..keys)
        .filter(|&k| pick(&mut h, TestRequest::get(&format!("/item/{k}"))) != first[k])
        .count();
    changed as f64 / keys as f64
}

#[test]
fn consistent_hashing_moves_about_one_nth_of_the_keys() {
    let ten = || (1..=10).map(|id| ep(id, 1)).collect::<Vec<_>>();
    for cfg in [r#"{"algorithm":"ring_hash"}"#, r#"{"algorithm":"maglev"}"#] {
        let removed: Vec<_> = ten().into_iter().filter(|e| e.id != 4).collect();
        let m = moved(cfg, ten(), removed, 5000);
        assert!((0.06..=0.15).contains(&m), "{cfg} removal moved {m}");
        let mut added = ten();
        added.push(ep(11, 1));
        let m = moved(cfg, ten(), added, 5000);
        assert!((0.05..=0.14).contains(&m), "{cfg} addition moved {m}");
        // And keys spread over all endpoints.
        let mut h = harness(cfg, ten());
        let mut c = BTreeMap::new();
        for k in 0..5000 {
            *c.entry(pick(&mut h, TestRequest::get(&format!("/k{k}"))))
                .or_insert(0usize) += 1;
        }
        assert!(c.values().all(|n| within(*n, 500.0, 0.35)), "{cfg}: {c:?}");
    }
}

#[test]
fn hashing_on_a_header_or_cookie_is_sticky() {
    let mut h = harness(
        r#"{"algorithm":"ring_hash","hash_on":"header:x-user"}"#,
        Harness::<Balancer>::endpoints(5),
    );
    let user = |u: &str| TestRequest::get("/").header("x-user", u);
    let a = pick(&mut h, user("alice"));
    assert!((0..20).all(|_| pick(&mut h, user("alice")) == a));
    pick(&mut h, TestRequest::get("/"));
    assert_eq!(h.metric("balancer_hash_key_missing_total"), Some(1.0));

    let mut h = harness(
        r#"{"algorithm":"maglev","hash_on":"cookie:sid"}"#,
        Harness::<Balancer>::endpoints(5),
    );
    let sid = |s: &str| TestRequest::get("/").header("cookie", &format!("theme=dark; sid={s}"));
    let a = pick(&mut h, sid("s1"));
    assert!((0..20).all(|_| pick(&mut h, sid("s1")) == a));
}

#[test]
fn rejects_bad_settings_and_reports_status() {
    for (cfg, needle) in [
        (r#"{"algorithm":"fastest"}"#, "unknown variant"),
        (r#"{"hash_on":"query:x"}"#, "hash_on"),
        (r#"{"ring_vnodes":0}"#, "ring_vnodes"),
        (r#"{"maglev_table_size":1000}"#, "prime"),
    ] {
        let e = Harness::<Balancer>::new(cfg).unwrap_err();
        assert!(e.contains(needle), "{cfg}: {e}");
    }
    let mut h = harness("", Harness::<Balancer>::endpoints(2));
    counts(&mut h, 4);
    let s = h.status_json();
    assert_eq!(s["algorithm"], "round_robin");
    assert_eq!(s["picks"]["1"], 2);
}

#[test]
fn round_robin_and_smooth_wrr_continue_their_sequence_over_a_hot_swap() {
    for cfg in [
        r#"{"algorithm":"round_robin"}"#,
        r#"{"algorithm":"weighted_round_robin"}"#,
    ] {
        let endpoints = || alloc::vec![ep(0, 5), ep(1, 1), ep(2, 1)];
        let mut unswapped = harness(cfg, endpoints());
        let mut old = harness(cfg, endpoints());
        for _ in 0..4 {
            assert_eq!(
                pick(&mut unswapped, TestRequest::get("/")),
                pick(&mut old, TestRequest::get("/"))
            );
        }
        let mut new = harness(cfg, endpoints());
        new.restore(&old.snapshot()).unwrap();
        for _ in 0..20 {
            assert_eq!(
                pick(&mut new, TestRequest::get("/")),
                pick(&mut unswapped, TestRequest::get("/")),
                "{cfg}: the swapped version picks what the old one would have"
            );
        }
        assert_eq!(new.status_json()["picks"], unswapped.status_json()["picks"]);
        assert!(
            new.restore(b"garbage")
                .unwrap_err()
                .contains("bad snapshot")
        );
    }
}
