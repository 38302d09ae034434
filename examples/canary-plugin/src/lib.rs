//! Canary routing by endpoint metadata. Requests that carry the canary
//! header (`x-canary: 1` by default), and `percent` % of the others, go to
//! the endpoints whose metadata says they run the new version
//! (`version = "v2"` by default); every other request goes to the rest. If
//! one group has no endpoint left, the other serves rather than nobody.
//!
//! ```toml
//! [upstreams.app]
//! endpoints = [
//!   { address = "10.0.0.1:8080" },
//!   { address = "10.0.0.2:8080", metadata = { version = "v2" } },
//! ]
//!
//! [[routes]]
//! name = "app"
//! upstream = "app"
//! plugins = [{ name = "canary", config = { percent = 5 } }]
//! ```
//!
//! Within a group it picks the endpoint with the fewest requests in flight,
//! untried ones first (a retry goes elsewhere when it can).

use serde::Deserialize;
use weir_sdk::{Endpoint, Metric, Plugin, Request, RequestAction};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    /// A request with this header set to `1` (or `true`) is a canary request.
    header: String,
    /// The share of other requests sent to the canary, 0–100.
    percent: f64,
    /// The metadata key and value that mark a canary endpoint.
    key: String,
    value: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header: "x-canary".into(),
            percent: 0.0,
            key: "version".into(),
            value: "v2".into(),
        }
    }
}

#[derive(Default)]
struct Canary {
    config: Config,
    canary_requests: Option<Metric>,
}

#[weir_sdk::plugin]
impl Plugin for Canary {
    type Config = Config;
    /// Whether this request goes to the canary.
    type Ctx = bool;

    fn configure(&mut self, config: Config) -> Result<(), String> {
        if !(0.0..=100.0).contains(&config.percent) {
            return Err(weir_sdk::config::reject_at(
                "percent",
                format!("must be between 0 and 100, not {}", config.percent),
            ));
        }
        if config.key.is_empty() {
            return Err(weir_sdk::config::reject_at("key", "must not be empty"));
        }
        self.config = config;
        self.canary_requests = Metric::counter("canary_requests_total").ok();
        Ok(())
    }

    fn on_request(&mut self, canary: &mut bool, req: &mut Request) -> RequestAction {
        let asked = req
            .header(&self.config.header)
            .ok()
            .flatten()
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        // 53 random bits give a uniform fraction in [0, 1).
        let roll = (weir_sdk::host::random() >> 11) as f64 / (1u64 << 53) as f64 * 100.0;
        *canary = asked || roll < self.config.percent;
        if *canary && let Some(m) = &self.canary_requests {
            let _ = m.record(1.0);
        }
        RequestAction::Continue
    }

    fn select(
        &mut self,
        canary: &mut bool,
        _: &Request,
        endpoints: &[Endpoint],
        tried: &[u32],
    ) -> Option<u32> {
        let is_canary = |e: &Endpoint| {
            e.metadata(&self.config.key).as_deref() == Some(self.config.value.as_str())
        };
        let group: Vec<&Endpoint> = endpoints
            .iter()
            .filter(|e| is_canary(e) == *canary)
            .collect();
        let pool = if group.is_empty() {
            endpoints.iter().collect()
        } else {
            group
        };
        pool.iter()
            .min_by_key(|e| (tried.contains(&e.id), e.in_flight))
            .map(|e| e.id)
    }

    fn status(&self) -> String {
        format!(
            r#"{{"percent":{},"header":{:?},"canary":{{{:?}:{:?}}}}}"#,
            self.config.percent, self.config.header, self.config.key, self.config.value
        )
    }
}

#[cfg(test)]
mod tests {
    use weir_sdk::testing::{EndpointFacts, Harness, Outcome, TestRequest, endpoints};

    use super::Canary;

    /// Endpoints 0 and 1 run v1, endpoint 2 runs v2.
    fn harness(config: &str) -> Harness<Canary> {
        let mut h = Harness::<Canary>::new(config).unwrap();
        h.set_endpoints(endpoints(3));
        h.describe_endpoint(
            2,
            EndpointFacts::new("10.0.0.3:80").metadata("version", "v2"),
        );
        h
    }

    #[test]
    fn the_header_sends_a_request_to_the_canary_and_the_rest_stay_on_stable() {
        let mut h = harness("");
        for _ in 0..10 {
            let run = h.run(TestRequest::get("/").header("x-canary", "1"), &[]);
            assert_eq!(run.attempts[0].endpoint, Some(2));
            let run = h.run(TestRequest::get("/"), &[]);
            assert_ne!(run.attempts[0].endpoint, Some(2));
        }
        assert_eq!(h.metric("canary_requests_total"), Some(10.0));
    }

    #[test]
    fn a_percentage_goes_to_the_canary() {
        let mut h = harness(r#"{"percent": 25}"#);
        let to_canary = (0..4000)
            .filter(|_| h.run(TestRequest::get("/"), &[]).attempts[0].endpoint == Some(2))
            .count();
        assert!((800..1200).contains(&to_canary), "{to_canary} of 4000");
    }

    #[test]
    fn a_retry_moves_to_another_endpoint_of_the_group_and_an_empty_group_falls_back() {
        let mut h = harness("");
        h.set_endpoints(endpoints(3));
        let run = h.run(
            TestRequest::get("/"),
            &[Outcome::status(503), Outcome::status(200)],
        );
        // No retry policy here: one attempt, on a stable endpoint.
        assert_eq!(run.attempts.len(), 1);
        assert_ne!(run.attempts[0].endpoint, Some(2));

        // Only stable endpoints: canary requests still get served.
        let mut h = Harness::<Canary>::new("").unwrap();
        h.set_endpoints(endpoints(2));
        let run = h.run(TestRequest::get("/").header("x-canary", "1"), &[]);
        assert!(run.attempts[0].endpoint.is_some());
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let err = Harness::<Canary>::new(r#"{"percent": 150}"#).unwrap_err();
        assert!(
            err.starts_with("percent: must be between 0 and 100"),
            "{err}"
        );
        let err = Harness::<Canary>::new(r#"{"precent": 5}"#).unwrap_err();
        assert!(err.contains("precent"), "{err}");
    }
}
