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
    assert_eq!(
        config.admin.map(|a| a.address),
        Some("127.0.0.1:9901".parse().unwrap())
    );
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

const HEALTH: &str = r#"
[[listeners]]
address = "127.0.0.1:8080"

[upstreams.app]
endpoints = [{ address = "127.0.0.1:3000", zone = "a", metadata = { version = "v2" } }]
[upstreams.app.health_check]
method = "head"
path = "/healthz"
expected_statuses = [200, "300-304"]
host = "app.internal"
interval = "2s"
jitter = "100ms"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 4
[upstreams.app.passive]
base_ejection_time = "10s"
max_ejection_time = "1m"
max_ejected_percent = 50

[upstreams.dns]
discovery = { kind = "dns", name = "svc.example", port = 80, interval = "5s", nameservers = ["127.0.0.1:5353"] }

[upstreams.file]
discovery = { kind = "file", path = "endpoints.json" }

[upstreams.etcd]
discovery = { kind = "etcd", endpoints = ["127.0.0.1:2379"], prefix = "/weir/upstreams/x/" }

[[routes]]
upstream = "app"
"#;

#[test]
fn health_passive_and_discovery_settings_are_read() {
    let config = Config::parse(HEALTH, Path::new("/etc/weir/weir.toml")).unwrap();
    let app = &config.upstreams["app"];
    assert_eq!(app.endpoints[0].zone.as_deref(), Some("a"));
    assert_eq!(app.endpoints[0].metadata["version"], "v2");
    let check = app.health_check.as_ref().unwrap();
    assert_eq!(check.method, http::Method::HEAD);
    assert_eq!(check.path, "/healthz");
    assert!(check.expects(200) && check.expects(304) && !check.expects(201));
    assert_eq!(check.host.as_deref(), Some("app.internal"));
    assert_eq!(check.interval, Duration::from_secs(2));
    assert_eq!(check.jitter, Duration::from_millis(100));
    assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (1, 4));
    assert_eq!(app.passive.base_ejection_time, Duration::from_secs(10));
    assert_eq!(app.passive.max_ejected_percent, 50);
    assert_eq!(
        config.upstreams["dns"].discovery,
        Discovery::Dns {
            name: "svc.example".into(),
            port: 80,
            interval: Duration::from_secs(5),
            nameservers: vec!["127.0.0.1:5353".parse().unwrap()],
            allow_empty: false,
        }
    );
    assert_eq!(
        config.upstreams["file"].discovery,
        Discovery::File {
            path: "/etc/weir/endpoints.json".into(),
            allow_empty: false,
        }
    );
    assert!(matches!(
        &config.upstreams["etcd"].discovery,
        Discovery::Etcd { prefix, .. } if prefix == "/weir/upstreams/x/"
    ));
    assert!(config.upstreams["etcd"].endpoints.is_empty());
}

#[test]
fn bad_health_and_discovery_values_are_refused_with_lines() {
    let text = r#"[[listeners]]
address = "127.0.0.1:8080"
[upstreams.app]
endpoints = ["127.0.0.1:3000"]
[upstreams.app.health_check]
path = "healthz"
expected_statuses = ["600-700"]
unhealthy_threshold = 0
[upstreams.app.passive]
max_ejected_percent = 101
[upstreams.dns]
discovery = { kind = "dns", name = "svc.example", port = 80, nameservers = ["nowhere"] }
[upstreams.both]
endpoints = ["127.0.0.1:1"]
discovery = { kind = "file", path = "x.json" }
[upstreams.none]
discovery = { kind = "static" }
[[routes]]
upstream = "app"
"#;
    let errors = errors(text);
    let expect = [
        "weir.toml:6:8: health check path",
        "weir.toml:7:22: expected status",
        "weir.toml:8:23: health_check.unhealthy_threshold = 0",
        "weir.toml:10:23: passive.max_ejected_percent = 101",
        "weir.toml:12:13: invalid nameserver \"nowhere\"",
        "weir.toml:14:13: upstream \"both\" discovers its endpoints by file",
        "weir.toml:16:1: upstream \"none\" has no endpoints",
    ];
    for prefix in expect {
        assert!(
            errors.iter().any(|e| e.starts_with(prefix)),
            "{prefix:?} not in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    let unknown = errors_of("[upstreams.app]\ndiscovery = { kind = \"consul\" }\n");
    assert!(unknown[0].contains("consul"), "{unknown:?}");
}

fn errors_of(upstream: &str) -> Vec<String> {
    errors(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n{upstream}[[routes]]\nupstream = \"app\"\n"
    ))
}

#[test]
fn endpoint_lists_parse_as_json_and_toml() {
    let json = r#"[{"address": "10.0.0.1:80", "weight": 2, "zone": "a", "metadata": {"k": "v"}}, "10.0.0.2:80"]"#;
    let list = parse_endpoint_list(json, false).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].weight, 2);
    assert_eq!(list[1].weight, 1);
    let toml = "endpoints = [\"10.0.0.1:80\", { address = \"10.0.0.2:80\", zone = \"b\" }]";
    let list = parse_endpoint_list(toml, true).unwrap();
    assert_eq!(list[1].zone.as_deref(), Some("b"));
    assert!(parse_endpoint_list(r#"[{"address": "nope"}]"#, false).is_err());
    assert!(parse_endpoint_list(r#"[{"address": "10.0.0.1:80", "weight": 0}]"#, false).is_err());
    // Errors name the entry and the field.
    let err = parse_endpoint_list(
        r#"["10.0.0.1:80", {"address": "10.0.0.2:80", "weight": -1}]"#,
        false,
    )
    .unwrap_err();
    assert!(
        err.contains("entry 1 (10.0.0.2:80)") && err.contains("`weight`"),
        "{err}"
    );
    let err = parse_endpoint_list(
        r#"[{"address": "10.0.0.2:80", "weight": 5000000000}]"#,
        false,
    )
    .unwrap_err();
    assert!(err.contains("`weight`"), "{err}");
    let err = parse_endpoint_list(r#"[{"adress": "10.0.0.2:80"}]"#, false).unwrap_err();
    assert!(
        err.contains("entry 0") && err.contains("unknown field `adress`"),
        "{err}"
    );
    let err = parse_endpoint_list(
        "endpoints = [{ address = \"10.0.0.2:80\", zone = 3 }]",
        true,
    )
    .unwrap_err();
    assert!(
        err.contains("entry 0 (10.0.0.2:80)") && err.contains("`zone`"),
        "{err}"
    );
    let err =
        parse_endpoint_json(br#"{"address": "10.0.0.2:80", "metadata": {"v": 2}}"#).unwrap_err();
    assert!(err.contains("`metadata.v`"), "{err}");
    assert_eq!(
        parse_endpoint_json(br#"{"address": "10.0.0.1:80"}"#)
            .unwrap()
            .address
            .as_str(),
        "10.0.0.1:80"
    );
}
