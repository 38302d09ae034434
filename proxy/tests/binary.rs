//! The real `weir` binary: `weir check`, `weir run` with SIGTERM draining,
//! and a 1 GiB body each way through the process with its peak memory read
//! from `/proc`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use weir_tests::TestUpstream;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(WEIR)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout =
        String::from_utf8_lossy(&output.stdout).replace(&path.display().to_string(), "weir.toml");
    let stderr =
        String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "weir.toml");
    (output.status.success(), stdout, stderr)
}

#[test]
fn check_accepts_a_good_config() {
    let (ok, stdout, stderr) = check(
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[upstreams.app]\nendpoints = [\"127.0.0.1:3000\"]\n[[routes]]\nupstream = \"app\"\n",
    );
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.trim(),
        "weir.toml: ok (1 listeners, 1 upstreams, 1 routes, 0 plugins)"
    );
}

#[test]
fn check_reports_every_error_with_its_position() {
    let (ok, _, stderr) = check(
        "[[listeners]]\naddress = \"127.0.0.1:8080\"\n[[listeners]]\naddress = \"127.0.0.1:8080\"\n[upstreams.app]\nendpoints = [\"127.0.0.1:3000\"]\n[[routes]]\nupstream = \"missing\"\n",
    );
    assert!(!ok);
    assert!(
        stderr.contains("error: weir.toml:4:11: duplicate listener address 127.0.0.1:8080"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: weir.toml:8:12: route points at unknown upstream \"missing\""),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s); config refused"), "{stderr}");

    let (ok, _, stderr) = check("[[listeners]]\naddress = \"127.0.0.1:8080\"\ncolour = \"blue\"\n");
    assert!(!ok);
    assert!(
        stderr.contains("error: weir.toml:3:1: unknown field `colour`"),
        "{stderr}"
    );

    let (ok, _, stderr) = check("[[listeners]\n");
    assert!(!ok);
    assert!(stderr.contains("error: weir.toml:1:"), "{stderr}");
}

#[test]
fn check_reports_a_missing_file() {
    let output = Command::new(WEIR)
        .args(["check", "--config", "/nonexistent/weir.toml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("cannot read config file /nonexistent/weir.toml")
    );
}

/// A `weir run` child process, killed on drop.
struct Running {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn run(upstream: SocketAddr, drain: &str) -> Running {
    // A port picked free can be taken by another test before weir binds it;
    // then weir exits, and a new port is tried.
    for _ in 0..5 {
        if let Some(running) = try_run(upstream, drain, free_port()).await {
            return running;
        }
    }
    panic!("weir did not start listening on any of 5 free ports");
}

/// Starts weir on `port`; `None` if it exited (the port was taken).
async fn try_run(upstream: SocketAddr, drain: &str, port: u16) -> Option<Running> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nworkers = 2\ndrain_timeout = \"{drain}\"\n[admin]\nenabled = false\n[[listeners]]\naddress = \"127.0.0.1:{port}\"\n[upstreams.u]\nendpoints = [\"{upstream}\"]\n[[routes]]\nupstream = \"u\"\n"
        ),
    )
    .unwrap();
    let child = Command::new(WEIR)
        .args(["run", "--log-format", "json", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running {
        child,
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if running.child.try_wait().unwrap().is_some() {
            return None;
        }
        // Answered through weir (the upstream names itself), not by whatever
        // else may hold the port.
        if let Ok(reply) = weir_tests::get(&format!("http://{}/", running.addr)).await
            && reply.header("x-upstream").is_some()
        {
            return Some(running);
        }
        assert!(Instant::now() < deadline, "weir did not start listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn peak_resident_mib(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

#[tokio::test]
async fn sigterm_drains_the_in_flight_request_then_exits() {
    let upstream = TestUpstream::start("u").await;
    let mut running = run(upstream.addr, "10s").await;
    let url = format!("http://{}/slow/700", running.addr);
    // The start-up check made a request already.
    let before = upstream.requests();
    let in_flight = tokio::spawn(async move { weir_tests::get(&url).await });
    while upstream.requests() == before {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = running.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "slow u");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "weir did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
    let mut logs = String::new();
    running
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    // JSON logs, one object per line.
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert!(logs.contains("\"drained\":true"), "{logs}");
}

const GIB: usize = 1 << 30;

#[tokio::test]
async fn a_gibibyte_each_way_passes_with_bounded_memory() {
    let upstream = TestUpstream::start("u").await;
    let running = run(upstream.addr, "1s").await;
    let client = weir_tests::client();

    // Download.
    let response = client
        .request(
            http::Request::get(format!("http://{}/big/{GIB}", running.addr))
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            received += data.len();
        }
    }
    assert_eq!(received, GIB);

    // Upload.
    const CHUNK: usize = 256 * 1024;
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let chunks = futures_util::stream::iter(0..GIB / CHUNK)
        .map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone())));
    let upload_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let response = upload_client
        .request(
            http::Request::post(format!("http://{}/count", running.addr))
                .body(StreamBody::new(chunks))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&text),
        format!("{GIB}:{}", 7 * GIB as u64)
    );

    let peak = peak_resident_mib(running.child.id());
    assert!(
        peak < 64,
        "weir's peak resident memory was {peak} MiB for 1 GiB bodies"
    );
}

#[test]
fn plugin_new_then_one_build_command_installs_a_plugin_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(WEIR)
        .args(["plugin", "new", "greeter", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let root = dir.path().join("greeter");
    // A target dir beside the workspace's, kept between runs so rebuilds are incremental.
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold-test");
    // Runs `program args` in `crate_dir`, building into the shared target dir.
    let run_in = |program: &str, args: &[&str], crate_dir: &std::path::Path| {
        Command::new(program)
            .args(args)
            .current_dir(crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .unwrap()
    };
    // The scaffold's own tests pass on the SDK's harness.
    let tested = run_in(env!("CARGO"), &["test"], &root);
    let out = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success() && out.contains("2 passed"),
        "{out}\n{}",
        String::from_utf8_lossy(&tested.stderr)
    );

    // One command from source to the plugins directory.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let build = |crate_dir: &std::path::Path, extra: &[&str]| {
        let args: Vec<&str> = ["plugin", "build"].iter().chain(extra).copied().collect();
        run_in(WEIR, &args, crate_dir)
    };
    let built = build(&root, &["--install", plugins.to_str().unwrap()]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let said = String::from_utf8_lossy(&built.stdout);
    assert!(said.contains("installed"), "{said}");
    let wasm = plugins.join("greeter.wasm");
    let engine =
        weir_proxy::plugin::PluginEngine::new(weir_proxy::plugin::EngineConfig::default()).unwrap();
    let loaded = engine.load_file(&wasm).unwrap();
    // Exactly the hooks the impl defines.
    let hooks = loaded.hooks();
    assert!(hooks.on_response && hooks.status && !hooks.on_request && !hooks.on_end);
    let instance = weir_proxy::plugin::PluginInstance::new(
        &loaded,
        bytes::Bytes::from_static(br#"{"header":"x-hi"}"#),
    )
    .unwrap();
    assert_eq!(instance.status().unwrap().as_deref(), Some(r#"{"seen":0}"#));
    let rejected = weir_proxy::plugin::PluginInstance::new(
        &loaded,
        bytes::Bytes::from_static(br#"{"header":""}"#),
    );
    assert!(
        rejected
            .unwrap_err()
            .to_string()
            .contains("must not be empty")
    );

    // The crate still builds after it moves (its SDK path is absolute
    // outside the Weir checkout), and a bad name is refused before building.
    let moved = dir.path().join("elsewhere");
    std::fs::create_dir(&moved).unwrap();
    std::fs::rename(&root, moved.join("greeter")).unwrap();
    let rebuilt = build(&moved.join("greeter"), &["--name", "greeter-2"]);
    assert!(
        rebuilt.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    let refused = build(
        &moved.join("greeter"),
        &["--install", "plugins", "--name", "a/b"],
    );
    assert!(!refused.status.success());
}
