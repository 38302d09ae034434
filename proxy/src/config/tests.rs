//! Config parsing and validation, good and bad.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("weir.toml"))
}

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("config should be refused"),
        Err(e) => e.diagnostics().iter().map(ToString::to_string).collect(),
    }
}

const MINIMAL: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[upstreams.app]
endpoints = ["127.0.0.1:3000", { address = "localhost:3001", weight = 3 }]

[[routes]]
upstream = "app"
"#;

#[test]
fn minimal_config_gets_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.listeners, vec!["127.0.0.1:8080".parse().unwrap()]);
    assert_eq!(config.admin, Some("127.0.0.1:9901".parse().unwrap()));
    assert_eq!(config.timeouts.connect, defaults::CONNECT_TIMEOUT);
    assert_eq!(config.routes[0].path_prefix, "/");
    assert_eq!(config.routes[0].name, "route-0");
    assert_eq!(config.routes[0].timeout, defaults::REQUEST_TIMEOUT);
    let app = &config.upstreams["app"];
    assert_eq!(app.endpoints[1].weight, 3);
    assert_eq!(app.endpoints[1].address.as_str(), "localhost:3001");
    assert_eq!(app.protocol, UpstreamProtocol::Http1);
    assert_eq!(config.server.runtime, RuntimeMode::PerCore);
}

#[test]
fn durations_and_overrides_parse() {
    let config = parse(
        r#"
[server]
workers = 3
runtime = "multi-thread"
drain_timeout = "5s"
[timeouts]
connect = "250ms"
request = "1m"
[[listeners]]
address = "127.0.0.1:8080"
[upstreams.app]
endpoints = ["127.0.0.1:3000"]
protocol = "h2c"
[[routes]]
upstream = "app"
timeout = "3s"
methods = ["get", "POST"]
host = "API.example.com"
"#,
    )
    .unwrap();
    assert_eq!(config.server.workers, 3);
    assert_eq!(config.server.runtime, RuntimeMode::MultiThread);
    assert_eq!(
        config.timeouts.connect,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(
        config.upstreams["app"].connect_timeout,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(config.routes[0].timeout, std::time::Duration::from_secs(3));
    assert_eq!(
        config.routes[0].methods,
        vec![http::Method::GET, http::Method::POST]
    );
    assert_eq!(config.routes[0].host.as_deref(), Some("api.example.com"));
}

#[test]
fn unknown_key_is_located() {
    let text = "[[listeners]]\naddress = \"127.0.0.1:1\"\nport = 3\n";
    let found = errors(text);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("weir.toml:3:1: unknown field `port`"),
        "{found:?}"
    );
}

#[test]
fn bad_type_is_located() {
    let text = "[server]\nworkers = \"many\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\n";
    let found = errors(text);
    assert!(found[0].starts_with("weir.toml:2:11:"), "{found:?}");
    assert!(found[0].contains("invalid type"), "{found:?}");
}

#[test]
fn unknown_upstream_and_duplicate_listener_are_all_reported() {
    let text = r#"[[listeners]]
address = "127.0.0.1:8080"
[[listeners]]
address = "127.0.0.1:8080"
[upstreams.app]
endpoints = ["127.0.0.1:3000"]
[[routes]]
upstream = "nope"
"#;
    let found = errors(text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].starts_with("weir.toml:4:11: duplicate listener address 127.0.0.1:8080"),
        "{found:?}"
    );
    assert!(
        found[1]
            .starts_with("weir.toml:8:12: route points at unknown upstream \"nope\" (known: app)"),
        "{found:?}"
    );
}

#[test]
fn bad_values_are_refused() {
    let text = r#"[[listeners]]
address = "not-an-address"
[timeouts]
connect = "soon"
"#;
    let found = errors(text);
    // Serde stops at the first bad value; the rest is checked once it parses.
    assert!(found[0].contains("invalid duration \"soon\""), "{found:?}");

    let text = r#"[[listeners]]
address = "not-an-address"
[upstreams.app]
endpoints = []
[upstreams.other]
endpoints = ["no-port", { address = "127.0.0.1:1", weight = 0 }]
[[routes]]
upstream = "app"
path_prefix = "api"
methods = ["G E T"]
host = "bad host:80"
"#;
    let joined = errors(text).join("\n");
    for expected in [
        "weir.toml:2:11: invalid listener address",
        "weir.toml:4:13: upstream \"app\" has no endpoints",
        "weir.toml:6:14: invalid endpoint \"no-port\"",
        "endpoint weight must be at least 1",
        "weir.toml:9:15: path_prefix \"api\" must start with '/'",
        "weir.toml:10:12: invalid method",
        "weir.toml:11:8: invalid host",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in\n{joined}"
        );
    }
}

#[test]
fn zero_duration_and_zero_workers_are_refused() {
    let found = errors("[timeouts]\nrequest = \"0s\"\n[[listeners]]\naddress = \"127.0.0.1:1\"\n");
    assert!(found[0].contains("must be greater than zero"), "{found:?}");
    let found = errors("[server]\nworkers = 0\n[[listeners]]\naddress = \"127.0.0.1:1\"\n");
    assert!(
        found[0].starts_with("weir.toml:2:11: server.workers must be at least 1"),
        "{found:?}"
    );
}

#[test]
fn duplicate_routes_and_no_listeners_are_refused() {
    let text = r#"[upstreams.app]
endpoints = ["127.0.0.1:3000"]
[[routes]]
upstream = "app"
[[routes]]
upstream = "app"
path_prefix = "/"
"#;
    let joined = errors(text).join("\n");
    assert!(joined.contains("no listeners"), "{joined}");
    assert!(
        joined.contains("weir.toml:5:1: duplicate route"),
        "{joined}"
    );
}

#[test]
fn admin_can_be_disabled_or_moved_but_not_onto_a_listener() {
    let config = parse(&format!("[admin]\nenabled = false\n{MINIMAL}")).unwrap();
    assert_eq!(config.admin, None);
    let joined = errors(&format!("[admin]\naddress = \"127.0.0.1:8080\"\n{MINIMAL}")).join("\n");
    assert!(
        joined.contains("weir.toml:2:11: admin address 127.0.0.1:8080 is also a proxy listener"),
        "{joined}"
    );
}
