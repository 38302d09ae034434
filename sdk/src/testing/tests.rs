//! The fake host keeps the real host's rules: phases, codes, metrics,
//! marks, counters, the cache and the request deadline.

use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use super::{EndpointFacts, Harness, Outcome, ResponseResult, TestRequest, endpoints};
use crate::{
    Answer, End, Endpoint, HostError, Metric, Plugin, Request, RequestAction, Response,
    ResponseAction, host,
};
use weir_abi::status;

/// Records what each host call returned.
#[derive(Default)]
struct Probe {
    seen: Vec<(&'static str, Result<(), HostError>)>,
    hits: Option<Metric>,
}

#[weir_sdk::plugin]
impl Plugin for Probe {
    type Config = ();
    type Ctx = u32;

    fn configure(&mut self, (): ()) -> Result<(), String> {
        self.hits = Metric::counter("probe_hits_total").ok();
        Ok(())
    }

    fn on_request(&mut self, ctx: &mut u32, req: &mut Request) -> RequestAction {
        *ctx += 1;
        let r = req.set_header("x-added", "1");
        self.seen.push(("set request header in on_request", r));
        let r = req.set_deadline(Duration::from_millis(500));
        self.seen.push(("deadline", r));
        let r = host::endpoint_mark(7, 1000);
        self.seen.push(("mark", r));
        if let Some(m) = self.hits {
            let _ = m.record(2.0);
        }
        RequestAction::Continue
    }

    fn on_response(&mut self, ctx: &mut u32, req: &Request, resp: &mut Response) -> ResponseAction {
        let mut r = Request {
            method: None,
            attempt: req.attempt(),
        };
        let e = r.set_header("x-late", "1");
        self.seen.push(("set request header in on_response", e));
        let e = resp.set_header("x-seen", &alloc::format!("{ctx}"));
        self.seen.push(("set response header", e));
        ResponseAction::Pass
    }

    fn on_end(&mut self, _: u32, _: &End) {
        let e = host::cache_put(b"k", b"v", 1000);
        self.seen.push(("cache in on_end", e));
    }
}

#[test]
fn the_fake_host_enforces_phases_and_records_effects() {
    let mut h = Harness::<Probe>::new("").unwrap();
    let run = h.run(TestRequest::get("/x"), &[Outcome::status(200)]);
    assert_eq!(run.attempts[0].header("x-added"), Some("1"));
    assert_eq!(run.attempts[0].timeout, Some(Duration::from_millis(500)));
    assert_eq!(run.header("x-seen"), Some("1"));
    let seen = &h.plugin().seen;
    let get = |what: &str| seen.iter().find(|(w, _)| *w == what).map(|(_, r)| *r);
    assert_eq!(get("set request header in on_request"), Some(Ok(())));
    assert_eq!(
        get("set request header in on_response"),
        Some(Err(HostError(status::BAD_PHASE)))
    );
    assert_eq!(get("set response header"), Some(Ok(())));
    assert_eq!(get("cache in on_end"), Some(Ok(())));
    assert_eq!(h.metric("probe_hits_total"), Some(2.0));
    assert_eq!(h.take_marks(), [(7, Duration::from_secs(1))]);
}

#[test]
fn a_slow_outcome_past_the_deadline_becomes_a_timeout() {
    let mut h = Harness::<Probe>::new("").unwrap();
    let slow = Outcome::status(200).latency(Duration::from_secs(2));
    let run = h.run(TestRequest::get("/"), &[slow]);
    assert_eq!(run.error, Some(crate::ErrorClass::Timeout));
    assert_eq!(h.now(), Duration::from_millis(1500));
    let mut f = h.start(TestRequest::get("/"));
    h.on_request(&mut f);
    let mut o = Outcome::error(crate::ErrorClass::Reset);
    // No response head: response headers are unavailable.
    assert_eq!(h.on_response(&mut f, &mut o), ResponseResult::Pass);
    let last = h.plugin().seen.last().map(|(_, r)| *r);
    assert_eq!(last, Some(Err(HostError(status::UNAVAILABLE))));
}

/// Reads `x-list` both ways.
#[derive(Default)]
struct ListReader {
    first: Option<String>,
    joined: Option<String>,
}

#[weir_sdk::plugin]
impl Plugin for ListReader {
    type Config = ();
    type Ctx = ();

    fn on_request(&mut self, _: &mut (), req: &mut Request) -> RequestAction {
        self.first = req.header("x-list").ok().flatten();
        self.joined = req.header_joined("x-list").ok().flatten();
        RequestAction::Continue
    }
}

#[test]
fn a_header_over_several_lines_reads_first_or_joined() {
    let mut h = Harness::<ListReader>::new("").unwrap();
    h.run(
        TestRequest::get("/")
            .header("X-List", "a")
            .header("x-other", "z")
            .header("x-list", "b, c"),
        &[],
    );
    assert_eq!(h.plugin().first.as_deref(), Some("a"));
    assert_eq!(h.plugin().joined.as_deref(), Some("a, b, c"));
    h.run(TestRequest::get("/"), &[]);
    assert_eq!(h.plugin().joined, None);
}

/// An API-key check whose build exports only `status`: the mistake the
/// `#[weir_sdk::plugin]` attribute makes impossible, written by hand.
#[derive(Default)]
struct ForgottenHook;

impl Plugin for ForgottenHook {
    type Config = ();
    type Ctx = ();

    fn on_request(&mut self, _: &mut (), req: &mut Request) -> RequestAction {
        match req.header("x-api-key") {
            Ok(Some(_)) => RequestAction::Continue,
            _ => RequestAction::Answer(Answer::new(401)),
        }
    }
}
crate::__export!(ForgottenHook, hooks: [status]);

/// The same check through the attribute.
#[derive(Default)]
struct Remembered;

#[weir_sdk::plugin]
impl Plugin for Remembered {
    fn on_request(&mut self, _: &mut (), req: &mut Request) -> RequestAction {
        match req.header("x-api-key") {
            Ok(Some(_)) => RequestAction::Continue,
            _ => RequestAction::Answer(Answer::new(401)),
        }
    }
}

#[test]
fn the_harness_calls_only_the_hooks_the_build_exports() {
    // As in the proxy, an unexported on_request never runs: the request is
    // let through, and the test says so instead of passing by accident.
    let mut forgotten = Harness::<ForgottenHook>::new("").unwrap();
    assert_eq!(
        forgotten.run(TestRequest::get("/"), &[]).status(),
        Some(200)
    );
    let mut remembered = Harness::<Remembered>::new("").unwrap();
    assert_eq!(
        remembered.run(TestRequest::get("/"), &[]).status(),
        Some(401)
    );
    let keyed = TestRequest::get("/").header("x-api-key", "k");
    assert_eq!(remembered.run(keyed, &[]).status(), Some(200));
    // Nothing exported, nothing to show or hand over.
    assert_eq!(remembered.status(), "");
    assert!(remembered.snapshot().is_empty());
}

/// Picks the endpoint in zone `b` whose metadata says `tier = gold`.
#[derive(Default)]
struct Facts {
    seen: Vec<(Option<String>, Option<String>)>,
}

#[weir_sdk::plugin]
impl Plugin for Facts {
    fn select(&mut self, _: &mut (), _: &Request, eps: &[Endpoint], _: &[u32]) -> Option<u32> {
        self.seen = eps.iter().map(|e| (e.address(), e.zone())).collect();
        eps.iter()
            .find(|e| {
                e.zone().as_deref() == Some("b") && e.metadata("tier").as_deref() == Some("gold")
            })
            .map(|e| e.id)
    }
}

#[test]
fn endpoints_carry_address_zone_and_metadata() {
    let mut h = Harness::<Facts>::new("").unwrap();
    h.describe_endpoint(1, EndpointFacts::new("10.0.0.2:80").zone("b"));
    h.describe_endpoint(
        2,
        EndpointFacts::new("10.0.0.3:80")
            .zone("b")
            .metadata("tier", "gold"),
    );
    h.set_endpoints(endpoints(3));
    let run = h.run(TestRequest::get("/"), &[]);
    assert_eq!(run.attempts[0].endpoint, Some(2));
    assert_eq!(
        h.plugin().seen,
        [
            (Some("endpoint-0.test:80".into()), None),
            (Some("10.0.0.2:80".into()), Some("b".into())),
            (Some("10.0.0.3:80".into()), Some("b".into())),
        ]
    );
}

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Keys {
    keys: Vec<String>,
}

#[derive(Default)]
struct KeyCheck;

#[weir_sdk::plugin]
impl Plugin for KeyCheck {
    type Config = Keys;
    fn configure(&mut self, config: Keys) -> Result<(), String> {
        if config.keys.iter().any(String::is_empty) {
            let at = config.keys.iter().position(String::is_empty).unwrap_or(0);
            return Err(crate::config::reject_at(
                &alloc::format!("keys[{at}]"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

#[test]
fn settings_errors_name_the_setting() {
    let err = Harness::<KeyCheck>::new(r#"{"keys": 5}"#).unwrap_err();
    assert_eq!(err, "keys: invalid type: integer `5`, expected a sequence");
    let err = Harness::<KeyCheck>::new(r#"{"keys": ["a", ""]}"#).unwrap_err();
    assert_eq!(err, "keys[1]: must not be empty");
    let err = Harness::<KeyCheck>::new(r#"{"kyes": []}"#).unwrap_err();
    assert!(err.contains("unknown field `kyes`"), "{err}");
}
