//! What a plugin author relies on, through the real proxy and real plugins:
//! settings errors at the exact key (check, start and reload), endpoint
//! facts for `select` (the canary example), and a plugin that declares it
//! guards access failing closed on a fail-open route.

use std::time::Duration;

use http::Request;
use http_body_util::Full;
use weir_proxy::config::Config;
use weir_tests::{
    TestUpstream, assert_eventually, client, config_head, get, install_plugin, plugins, send,
};

use super::plugins::proxy_with;

/// A config with the canary plugin on route 0 as its second plugin, its
/// settings table written out over several lines.
fn canary_config(upstream: &str, settings: &str) -> String {
    format!(
        "{head}[upstreams.u]\nendpoints = [\"{upstream}\"]\n\n[[routes]]\nupstream = \"u\"\n\n[[routes.plugins]]\nname = \"counter\"\n\n[[routes.plugins]]\nname = \"canary\"\n[routes.plugins.config]\nheader = \"x-canary\"\n{settings}\n",
        head = config_head()
    )
}

/// The line (1-based) of the first line of `text` that starts with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    text.lines().position(|l| l.starts_with(prefix)).unwrap() + 1
}

/// `weir check`'s plugin step on config text; the errors as printed.
fn check(dir: &std::path::Path, text: &str) -> Result<Vec<String>, String> {
    let path = dir.join("weir.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    weir_proxy::server::check_plugins(&config)
        .map(|warnings| warnings.iter().map(ToString::to_string).collect())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn settings_errors_point_at_the_setting_on_check_start_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    install_plugin(&dir.path().join("plugins"), "counter", plugins::COUNTER);
    install_plugin(
        &dir.path().join("plugins"),
        "canary",
        plugins::EXAMPLE_CANARY_PLUGIN,
    );
    let upstream = "127.0.0.1:9";

    // A type error, an unknown key, and a value the plugin itself rejects:
    // each at its own line and column, with its full path, no JSON positions.
    for (setting, path, expected) in [
        (
            "percent = \"lots\"",
            "routes[0].plugins[1].config.percent",
            "invalid type: string \"lots\", expected f64",
        ),
        (
            "precent = 5",
            "routes[0].plugins[1].config.precent",
            "unknown field `precent`",
        ),
        (
            "percent = 150",
            "routes[0].plugins[1].config.percent",
            "must be between 0 and 100, not 150",
        ),
    ] {
        let text = canary_config(upstream, setting);
        let line = line_of(&text, setting);
        let error = check(dir.path(), &text).unwrap_err();
        let at = format!("weir.toml:{line}:1: {path}: plugin \"canary\": ");
        assert!(
            error.contains(&at),
            "{setting}: expected {at:?} in\n{error}"
        );
        assert!(error.contains(expected), "{setting}:\n{error}");
        assert!(!error.contains("column 3"), "{error}");
    }

    // Start refuses the same way (weir run loads, then builds the chains).
    let text = canary_config(upstream, "percent = 150");
    std::fs::write(dir.path().join("weir.toml"), &text).unwrap();
    let config = Config::load(&dir.path().join("weir.toml")).unwrap();
    let refused = weir_proxy::server::Server::start(
        config,
        weir_proxy::server::Options {
            watch_config: false,
        },
    )
    .err()
    .map(|e| format!("{e:#}"))
    .unwrap_or_default();
    let line = line_of(&text, "percent = 150");
    assert!(
        refused.contains(&format!(
            "weir.toml:{line}:1: routes[0].plugins[1].config.percent"
        )),
        "{refused}"
    );

    // A reload to a bad setting is refused at the setting; the route keeps
    // serving with the settings it had.
    let up = TestUpstream::start("u").await;
    let good = canary_config(&up.addr.to_string(), "percent = 0");
    let proxy = proxy_with(
        &[
            ("counter", plugins::COUNTER),
            ("canary", plugins::EXAMPLE_CANARY_PLUGIN),
        ],
        &good,
    );
    let bad = canary_config(&up.addr.to_string(), "key = \"\"");
    let line = line_of(&bad, "key = ");
    proxy.write_config(&bad);
    assert_eventually(Duration::from_secs(10), "the reload refused", || async {
        let reply = get(&proxy.admin_url("/admin/config"))
            .await
            .map_err(|e| e.to_string())?;
        let config: serde_json::Value =
            serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
        let error = config["last_reload_error"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let at = format!("weir.toml:{line}:1: routes[0].plugins[1].config.key: ");
        if error.contains(&at) && error.contains("must not be empty") {
            Ok(())
        } else {
            Err(error)
        }
    })
    .await;
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
}

#[tokio::test]
async fn the_canary_plugin_routes_by_endpoint_metadata() {
    let stable = TestUpstream::start("stable").await;
    let canary = TestUpstream::start("canary").await;
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\n  {{ address = \"{}\" }},\n  {{ address = \"{}\", zone = \"b\", metadata = {{ version = \"v2\" }} }},\n]\n[[routes]]\nupstream = \"u\"\nplugins = [{{ name = \"canary\" }}]\n",
        config_head(),
        stable.addr,
        canary.addr
    );
    let proxy = proxy_with(&[("canary", plugins::EXAMPLE_CANARY_PLUGIN)], &config);
    let http = client();
    for _ in 0..10 {
        let marked = Request::get(proxy.url("/"))
            .header("x-canary", "1")
            .body(Full::default())
            .unwrap();
        let reply = send(&http, marked).await.unwrap();
        assert_eq!(reply.text(), "canary", "a marked request goes to v2");
        let reply = get(&proxy.url("/")).await.unwrap();
        assert_eq!(reply.text(), "stable", "the rest stay on v1");
    }
    assert_eq!((stable.requests(), canary.requests()), (10, 10));
}

#[tokio::test]
async fn a_plugin_that_guards_access_fails_closed_on_a_fail_open_route() {
    let upstream = TestUpstream::start("u").await;
    // The route says nothing, so it is fail-open.
    let config = format!(
        "{}[upstreams.u]\nendpoints = [\"{}\"]\n[[routes]]\nupstream = \"u\"\nplugins = [{{ name = \"guard\" }}, {{ name = \"panicking\" }}]\n",
        config_head(),
        upstream.addr
    );
    let proxy = proxy_with(
        &[("guard", plugins::GUARD), ("panicking", plugins::PANICKING)],
        &config,
    );
    let http = client();
    let with_key = |key: &str, panic: bool| {
        let mut r = Request::get(proxy.url("/")).header("x-key", key);
        if panic {
            r = r.header("x-panic", "1");
        }
        r.body(Full::default()).unwrap()
    };
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 401);
    assert_eq!(send(&http, with_key("k", false)).await.unwrap().status, 200);
    // The guard traps: 503, never the upstream, though the route is fail-open.
    let reply = send(&http, with_key("boom", false)).await.unwrap();
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(
        reply
            .header("proxy-status")
            .is_some_and(|s| s.contains("plugin guard failed")),
        "{:?}",
        reply.header("proxy-status")
    );
    // A plugin that does not declare it still fails open on this route.
    assert_eq!(send(&http, with_key("k", true)).await.unwrap().status, 200);
    assert_eq!(upstream.requests(), 2);

    // `weir check` says the guard fails closed despite the route.
    let warnings = check(proxy.dir.path(), &config).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("plugin \"guard\" declares that it guards access"),
        "{warnings:?}"
    );
}
