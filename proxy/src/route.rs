//! The route table: which route a request belongs to. A route matches on
//! host, path prefix and optionally method; among the routes that match, a
//! named host beats any-host, the longest prefix wins, and a route listing
//! methods beats one that takes any method. Prefixes are plain string
//! prefixes (`/api` matches `/api`, `/api/x` and `/apix`), as in Envoy.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;

use crate::config::{Config, RouteSpec};
use crate::plugin::Chain;
use crate::telemetry::metrics::{Metrics, RouteMetrics};
use crate::upstream::Upstream;

/// One route, ready to serve.
#[derive(Debug)]
pub struct Route {
    pub spec: RouteSpec,
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<RouteMetrics>,
    /// The plugin chain, outermost first; `None` when the route has no plugins.
    pub chain: Option<Arc<Chain>>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteMetrics")
    }
}

/// Every route of one config, in match order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Builds the table for `config`. `upstreams` must hold every upstream the
    /// config names (validation guarantees the names exist); `chains` holds
    /// the chain of each route that has plugins, by route name.
    pub fn build(
        config: &Config,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        metrics: &Metrics,
        chains: &BTreeMap<String, Arc<Chain>>,
    ) -> Self {
        let mut routes: Vec<Arc<Route>> = config
            .routes
            .iter()
            .filter_map(|spec| {
                let upstream = upstreams.get(&spec.upstream)?;
                Some(Arc::new(Route {
                    spec: spec.clone(),
                    upstream: Arc::clone(upstream),
                    metrics: metrics.route(&spec.name),
                    chain: chains.get(&spec.name).cloned(),
                }))
            })
            .collect();
        // Most specific first: named host, longer prefix, method-restricted.
        routes.sort_by_key(|r| {
            (
                r.spec.host.is_none(),
                std::cmp::Reverse(r.spec.path_prefix.len()),
                r.spec.methods.is_empty(),
            )
        });
        Self { routes }
    }

    /// The same table with some routes' chains replaced (a plugin hot swap).
    pub fn with_chains(&self, chains: &BTreeMap<String, Arc<Chain>>) -> Self {
        let routes = self
            .routes
            .iter()
            .map(|route| match chains.get(&route.spec.name) {
                Some(chain) => Arc::new(Route {
                    spec: route.spec.clone(),
                    upstream: Arc::clone(&route.upstream),
                    metrics: Arc::clone(&route.metrics),
                    chain: Some(Arc::clone(chain)),
                }),
                None => Arc::clone(route),
            })
            .collect();
        Self { routes }
    }

    /// The route named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| r.spec.name == name)
    }

    /// The routes in match order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route for a request; `host` is the request's host without port,
    /// in any case.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> Option<&Arc<Route>> {
        self.routes.iter().find(|r| {
            let spec = &r.spec;
            let host_ok = match (&spec.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            host_ok
                && path.starts_with(spec.path_prefix.as_str())
                && (spec.methods.is_empty() || spec.methods.contains(method))
        })
    }
}

/// The host a request is for, without port: the URI's authority (HTTP/2,
/// absolute-form) or else the `Host` header.
pub fn request_host<B>(request: &http::Request<B>) -> Option<&str> {
    let raw = match request.uri().host() {
        Some(host) => host,
        None => request.headers().get(http::header::HOST)?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop a trailing port.
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table(toml: &str) -> RouteTable {
        let config = Config::parse(toml, Path::new("t.toml")).unwrap();
        let metrics = Metrics::new(1);
        let upstreams = config
            .upstreams
            .iter()
            .map(|(name, spec)| {
                (
                    name.clone(),
                    Arc::new(Upstream::new(name, spec, 1, &metrics)),
                )
            })
            .collect();
        RouteTable::build(&config, &upstreams, &metrics, &BTreeMap::new())
    }

    const ROUTES: &str = r#"
        [[listeners]]
        address = "127.0.0.1:0"
        [upstreams.u]
        endpoints = ["127.0.0.1:1"]
        [[routes]]
        name = "root"
        upstream = "u"
        [[routes]]
        name = "api"
        path_prefix = "/api"
        upstream = "u"
        [[routes]]
        name = "api-v2"
        path_prefix = "/api/v2"
        upstream = "u"
        [[routes]]
        name = "api-post"
        path_prefix = "/api"
        methods = ["POST"]
        upstream = "u"
        [[routes]]
        name = "example-root"
        host = "Example.com"
        upstream = "u"
    "#;

    fn name<'a>(t: &'a RouteTable, host: Option<&str>, path: &str, method: Method) -> &'a str {
        t.find(host, path, &method)
            .map_or("none", |r| r.spec.name.as_str())
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table(ROUTES);
        assert_eq!(name(&t, None, "/", Method::GET), "root");
        assert_eq!(name(&t, None, "/api/users", Method::GET), "api");
        assert_eq!(name(&t, None, "/api/v2/users", Method::GET), "api-v2");
        assert_eq!(name(&t, None, "/other", Method::GET), "root");
    }

    #[test]
    fn method_restricted_beats_any_method_at_equal_prefix() {
        let t = table(ROUTES);
        assert_eq!(name(&t, None, "/api/x", Method::POST), "api-post");
        assert_eq!(name(&t, None, "/api/x", Method::PUT), "api");
        // A longer prefix still beats a method match.
        assert_eq!(name(&t, None, "/api/v2/x", Method::POST), "api-v2");
    }

    #[test]
    fn named_host_beats_any_host_and_ignores_case() {
        let t = table(ROUTES);
        assert_eq!(
            name(&t, Some("EXAMPLE.com"), "/api/x", Method::GET),
            "example-root"
        );
        assert_eq!(name(&t, Some("other.org"), "/api/x", Method::GET), "api");
    }

    #[test]
    fn no_match_without_catch_all() {
        let t = table(
            r#"
            [[listeners]]
            address = "127.0.0.1:0"
            [upstreams.u]
            endpoints = ["127.0.0.1:1"]
            [[routes]]
            path_prefix = "/only"
            upstream = "u"
        "#,
        );
        assert!(t.find(None, "/elsewhere", &Method::GET).is_none());
    }

    #[test]
    fn host_port_is_stripped() {
        let request = http::Request::builder()
            .header("host", "example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&request), Some("example.com"));
        let request = http::Request::builder()
            .header("host", "[::1]:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&request), Some("[::1]"));
        let request = http::Request::builder()
            .uri("http://h2.example/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&request), Some("h2.example"));
    }
}
