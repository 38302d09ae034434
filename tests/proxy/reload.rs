//! Config reload while requests are in flight, and graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use weir_tests::{TestProxy, TestUpstream, assert_eventually, config_head, get};

fn config(upstreams: &[(&str, &TestUpstream)], target: &str, extra: &str) -> String {
    let mut text = config_head();
    for (name, upstream) in upstreams {
        text.push_str(&format!(
            "[upstreams.{name}]\nendpoints = [\"{}\"]\n",
            upstream.addr
        ));
    }
    text.push_str(&format!("[[routes]]\nupstream = \"{target}\"\n{extra}"));
    text
}

/// Requests in a loop until stopped; counts answers that were not 200.
fn client_loop(
    url: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = weir_tests::client();
        while !stop.load(Ordering::SeqCst) {
            let request = http::Request::get(&url).body(Default::default()).unwrap();
            match weir_tests::send(&client, request).await {
                Ok(reply) if reply.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                _ => failed.fetch_add(1, Ordering::SeqCst),
            };
        }
    })
}

#[tokio::test]
async fn valid_config_is_applied_and_invalid_refused_under_load() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let both = [("blue", &blue), ("green", &green)];
    let proxy = TestProxy::start(&config(&both, "blue", ""));
    assert_eq!(get(&proxy.url("/")).await.unwrap().text(), "blue");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            client_loop(
                proxy.url("/slow/5"),
                stop.clone(),
                ok.clone(),
                failed.clone(),
            )
        })
        .collect();

    // A valid change: the route moves to green.
    proxy.write_config(&config(&both, "green", ""));
    assert_eventually(Duration::from_secs(5), "route moved to green", || async {
        let text = get(&proxy.url("/"))
            .await
            .map_err(|e| e.to_string())?
            .text();
        if text == "green" { Ok(()) } else { Err(text) }
    })
    .await;

    // An invalid change (unknown upstream on line 12): refused, green keeps serving.
    let invalid = config(&both, "nowhere", "");
    let line = invalid.lines().position(|l| l.contains("nowhere")).unwrap() + 1;
    proxy.write_config(&invalid);
    assert_eventually(Duration::from_secs(5), "invalid config refused", || async {
        let admin = get(&proxy.admin_url("/admin/config"))
            .await
            .map_err(|e| e.to_string())?
            .text();
        let json: serde_json::Value = serde_json::from_str(&admin).map_err(|e| e.to_string())?;
        let error = json["last_reload_error"].as_str().unwrap_or("").to_owned();
        if error.contains(&format!(
            "weir.toml:{line}:12: route points at unknown upstream \"nowhere\""
        )) {
            Ok(())
        } else {
            Err(error)
        }
    })
    .await;
    assert_eq!(get(&proxy.url("/")).await.unwrap().text(), "green");

    // A syntax error is refused with its position too.
    proxy.write_config("[[listeners]\naddress = 1\n");
    assert_eventually(Duration::from_secs(5), "broken config refused", || async {
        let json: serde_json::Value = serde_json::from_slice(
            &get(&proxy.admin_url("/admin/config"))
                .await
                .map_err(|e| e.to_string())?
                .body,
        )
        .map_err(|e| e.to_string())?;
        let error = json["last_reload_error"].as_str().unwrap_or("").to_owned();
        if error.contains("weir.toml:1:") {
            Ok(())
        } else {
            Err(error)
        }
    })
    .await;

    // The admin API can reload explicitly, and reports refusals.
    let client = weir_tests::client();
    let refused = weir_tests::send(
        &client,
        http::Request::post(proxy.admin_url("/admin/reload"))
            .header("content-type", "application/json")
            .body(Default::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains("\"refused\""), "{}", refused.text());
    proxy.write_config(&config(&both, "blue", ""));
    let applied = weir_tests::send(
        &client,
        http::Request::post(proxy.admin_url("/admin/reload"))
            .header("content-type", "application/json")
            .body(Default::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(applied.status, 200, "{}", applied.text());
    assert_eq!(get(&proxy.url("/")).await.unwrap().text(), "blue");

    stop.store(true, Ordering::SeqCst);
    for task in loops {
        task.await.unwrap();
    }
    assert!(ok.load(Ordering::SeqCst) > 0);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during reloads"
    );
}

#[tokio::test]
async fn listeners_are_added_and_removed_on_reload() {
    let upstream = TestUpstream::start("u").await;
    let proxy = TestProxy::start(&config(&[("u", &upstream)], "u", ""));
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let extra_addr = spare.local_addr().unwrap();
    drop(spare);
    let with_extra = config(&[("u", &upstream)], "u", "").replace(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n",
        &format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"{extra_addr}\"\n"
        ),
    );
    proxy.write_config(&with_extra);
    assert_eventually(Duration::from_secs(5), "extra listener serves", || async {
        get(&format!("http://{extra_addr}/"))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    // The original listener kept serving throughout.
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
    proxy.write_config(&config(&[("u", &upstream)], "u", ""));
    assert_eventually(Duration::from_secs(5), "extra listener closed", || async {
        match tokio::net::TcpStream::connect(extra_addr).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".into()),
        }
    })
    .await;
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let upstream = TestUpstream::start("u").await;
    let proxy = TestProxy::start(&config(&[("u", &upstream)], "u", ""));
    let url = proxy.url("/slow/600");
    let in_flight = tokio::spawn(async move { get(&url).await });
    // Wait until the request reached the upstream.
    assert_eventually(Duration::from_secs(5), "request in flight", || async {
        if upstream.requests() == 1 {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    let addr = proxy.addr;
    let drained = proxy.server.shutdown_within(Duration::from_secs(5)).await;
    assert!(
        drained,
        "drain should finish once the slow request is answered"
    );
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "slow u");
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_gives_up_after_the_drain_limit() {
    let upstream = TestUpstream::start("u").await;
    let proxy = TestProxy::start(&config(&[("u", &upstream)], "u", ""));
    let url = proxy.url("/slow/5000");
    let in_flight = tokio::spawn(async move { get(&url).await });
    assert_eventually(Duration::from_secs(5), "request in flight", || async {
        if upstream.requests() == 1 {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    let started = std::time::Instant::now();
    let drained = proxy
        .server
        .shutdown_within(Duration::from_millis(200))
        .await;
    assert!(!drained);
    assert!(started.elapsed() < Duration::from_secs(4));
    in_flight.abort();
}

/// The value of an unlabelled counter on `/metrics`.
async fn counter(proxy: &TestProxy, name: &str) -> u64 {
    let metrics = get(&proxy.admin_url("/metrics")).await.unwrap().text();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
}

/// Waits until `name` reads `expected`, then checks it stays there a while
/// (a change must apply exactly once, not again on later events).
async fn settles_at(proxy: &TestProxy, name: &str, expected: u64) {
    // Long enough to compile a plugin version in a debug build on a busy machine.
    assert_eventually(Duration::from_secs(60), name, || async {
        let value = counter(proxy, name).await;
        (value == expected)
            .then_some(())
            .ok_or_else(|| format!("{name} = {value}, expected {expected}"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(counter(proxy, name).await, expected, "{name} moved again");
}

#[tokio::test]
async fn watchers_react_to_content_changes_only() {
    let upstream = TestUpstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let plugins_dir = dir.path().join("plugins");
    weir_tests::install_plugin(&plugins_dir, "swapped", weir_tests::plugins::SWAP_V1);
    let text = config(
        &[("u", &upstream)],
        "u",
        "plugins = [{ name = \"swapped\" }]\n",
    );
    let proxy = TestProxy::start_in(dir, &text);
    let plugin_file = plugins_dir.join("swapped.wasm");
    assert_eq!(get(&proxy.url("/")).await.unwrap().status, 200);

    // Reading (a backup job, `cat`, `sha256sum`) and touching change nothing.
    for _ in 0..1000 {
        std::fs::read(&proxy.config_path).unwrap();
        std::fs::read(&plugin_file).unwrap();
    }
    for file in [&proxy.config_path, &plugin_file] {
        let permissions = std::fs::metadata(file).unwrap().permissions();
        std::fs::set_permissions(file, permissions).unwrap();
    }
    settles_at(&proxy, "weir_config_reloads_total", 0).await;
    assert_eq!(
        counter(&proxy, "weir_config_reloads_refused_total").await,
        0
    );
    assert_eq!(counter(&proxy, "weir_plugin_swaps_total").await, 0);

    // An editor's save by write-then-rename applies once.
    let edited = format!("{text}# edited\n");
    proxy.write_config(&edited);
    settles_at(&proxy, "weir_config_reloads_total", 1).await;
    // In place (truncate, then write in pieces) applies once too.
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&proxy.config_path).unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file.write_all(b"# edited again\n").unwrap();
    }
    settles_at(&proxy, "weir_config_reloads_total", 2).await;
    // The same content written again is not a change.
    proxy.write_config(&format!("{text}# edited again\n"));
    settles_at(&proxy, "weir_config_reloads_total", 2).await;

    // A refused config is refused once, and not retried until it changes.
    proxy.write_config("[[listeners]\n");
    settles_at(&proxy, "weir_config_reloads_refused_total", 1).await;
    for _ in 0..100 {
        std::fs::read(&proxy.config_path).unwrap();
    }
    settles_at(&proxy, "weir_config_reloads_refused_total", 1).await;

    // The same plugin bytes installed again are not a new version; new bytes are.
    weir_tests::install_plugin(&plugins_dir, "swapped", weir_tests::plugins::SWAP_V1);
    settles_at(&proxy, "weir_plugin_swaps_total", 0).await;
    weir_tests::install_plugin(&plugins_dir, "swapped", weir_tests::plugins::SWAP_V2);
    settles_at(&proxy, "weir_plugin_swaps_total", 1).await;
    for _ in 0..1000 {
        std::fs::read(&plugin_file).unwrap();
    }
    settles_at(&proxy, "weir_plugin_swaps_total", 1).await;
    assert_eq!(counter(&proxy, "weir_plugin_swaps_refused_total").await, 0);
}

async fn versioned(proxy: &TestProxy) -> (Option<String>, Option<String>, Option<String>) {
    let reply = get(&proxy.url("/")).await.unwrap();
    let header = |name: &str| reply.header(name).map(str::to_owned);
    (
        header("x-settings-version"),
        header("x-greeting"),
        header("x-tag"),
    )
}

async fn last_reload_error(proxy: &TestProxy) -> String {
    let config: serde_json::Value =
        serde_json::from_slice(&get(&proxy.admin_url("/admin/config")).await.unwrap().body)
            .unwrap();
    config["last_reload_error"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_plugin_version_and_the_setting_it_needs_apply_together() {
    let upstream = TestUpstream::start("u").await;
    let dir = tempfile::tempdir().unwrap();
    let plugins_dir = dir.path().join("plugins");
    weir_tests::install_plugin(&plugins_dir, "versioned", weir_tests::plugins::SETTINGS_V1);
    let with = |settings: &str| {
        config(
            &[("u", &upstream)],
            "u",
            &format!("plugins = [{{ name = \"versioned\", config = {{ {settings} }} }}]\n"),
        )
    };
    let proxy = TestProxy::start_in(dir, &with("greeting = \"hello\""));
    let v1 = (Some("1".to_owned()), Some("hello".to_owned()), None);
    assert_eq!(versioned(&proxy).await, v1);

    // The new version alone: it needs `tag`, which the config lacks.
    weir_tests::install_plugin(&plugins_dir, "versioned", weir_tests::plugins::SETTINGS_V2);
    settles_at(&proxy, "weir_plugin_swaps_refused_total", 1).await;
    assert_eq!(versioned(&proxy).await, v1);
    // Written again unchanged (a retried deploy): refused once, not again.
    weir_tests::install_plugin(&plugins_dir, "versioned", weir_tests::plugins::SETTINGS_V2);
    settles_at(&proxy, "weir_plugin_swaps_refused_total", 1).await;

    // The new config names `tag`: config and version on disk go in together.
    proxy.write_config(&with("greeting = \"hi\", tag = \"blue\""));
    settles_at(&proxy, "weir_config_reloads_total", 1).await;
    assert_eq!(
        versioned(&proxy).await,
        (
            Some("2".to_owned()),
            Some("hi".to_owned()),
            Some("blue".to_owned())
        )
    );
    assert_eq!(counter(&proxy, "weir_plugin_swaps_total").await, 1);

    // A config the version on disk refuses is refused whole, with the
    // error; version and settings stay as they were.
    proxy.write_config(&with("greeting = \"hey\", tag = \"red\", colour = \"x\""));
    settles_at(&proxy, "weir_config_reloads_refused_total", 1).await;
    let error = last_reload_error(&proxy).await;
    assert!(error.contains("unknown field `colour`"), "{error}");
    assert_eq!(
        versioned(&proxy).await,
        (
            Some("2".to_owned()),
            Some("hi".to_owned()),
            Some("blue".to_owned())
        )
    );

    // Back to version 1 and its settings, together, by one config change
    // after the file: the file alone is refused (v1 refuses `tag`).
    weir_tests::install_plugin(&plugins_dir, "versioned", weir_tests::plugins::SETTINGS_V1);
    settles_at(&proxy, "weir_plugin_swaps_refused_total", 2).await;
    proxy.write_config(&with("greeting = \"hello again\""));
    settles_at(&proxy, "weir_config_reloads_total", 2).await;
    assert_eq!(
        versioned(&proxy).await,
        (Some("1".to_owned()), Some("hello again".to_owned()), None)
    );
}
