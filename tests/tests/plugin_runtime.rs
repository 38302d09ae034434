//! The real test plugins in the real host runtime: loading, the contract
//! check, config, and containment of traps, loops and memory bombs.
// Helpers outside #[test] fns unwrap too: any failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use http::HeaderValue;
use weir_proxy::plugin::{
    EngineConfig, LoadError, PluginEngine, PluginError, PluginInstance, RequestVerdict, RequestView,
};
use weir_tests::plugins;

fn engine_with(config: EngineConfig) -> PluginEngine {
    PluginEngine::new(config).unwrap()
}

fn engine() -> PluginEngine {
    engine_with(EngineConfig {
        memory_limit: 8 << 20,
        ..weir_tests::engine_config()
    })
}

fn instance(engine: &PluginEngine, path: &str, config: &str) -> PluginInstance {
    let plugin = engine.load_file(path.as_ref()).unwrap();
    PluginInstance::new(&plugin, config.as_bytes().to_vec()).unwrap()
}

fn request(header: Option<&'static str>) -> Box<RequestView> {
    let mut req = Box::new(RequestView {
        uri: "/things?x=1".parse().unwrap(),
        ..RequestView::default()
    });
    if let Some(h) = header {
        req.headers.insert(h, HeaderValue::from_static("1"));
    }
    req
}

#[test]
fn hello_exports_only_its_hook() {
    let plugin = engine().load_file(plugins::HELLO.as_ref()).unwrap();
    let hooks = plugin.hooks();
    assert!(hooks.on_response);
    assert!(!hooks.on_request && !hooks.on_end && !hooks.select && !hooks.status);
    assert_eq!(plugin.name(), "weir_test_plugin_hello");
    assert_eq!(plugin.hash_hex().len(), 64);
}

#[test]
fn abi_mismatch_is_refused_naming_both_versions() {
    let err = engine()
        .load_file(plugins::ABI_MISMATCH.as_ref())
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::AbiMismatch {
                plugin_version: 999,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("version 999"), "{msg}");
    assert!(
        msg.contains(&format!("version {}", weir_abi::ABI_VERSION)),
        "{msg}"
    );
}

#[test]
fn garbage_truncated_and_missing_files_are_refused() {
    let engine = engine();
    let err = engine.load_bytes("junk", b"this is not wasm").unwrap_err();
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err:?}");
    let err = engine.load_bytes("empty", b"").unwrap_err();
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err:?}");
    let wasm = std::fs::read(plugins::HELLO).unwrap();
    let err = engine
        .load_bytes("half", &wasm[..wasm.len() / 2])
        .unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err:?}");
    let err = engine
        .load_file("/nonexistent/plugin.wasm".as_ref())
        .unwrap_err();
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");
}

#[test]
fn typed_config_is_checked_by_serde_and_by_the_plugin() {
    let engine = engine();
    let plugin = engine.load_file(plugins::CONFIG_REJECT.as_ref()).unwrap();
    let err = PluginInstance::new(&plugin, &br#"{"limit":0}"#[..]).unwrap_err();
    assert!(err.to_string().contains("limit must be positive"), "{err}");
    let err = PluginInstance::new(&plugin, &br#"{"limit":1,"burst":2}"#[..]).unwrap_err();
    assert!(matches!(err, PluginError::Rejected { .. }), "{err:?}");
    assert!(err.to_string().contains("unknown field"), "{err}");
    let err = PluginInstance::new(&plugin, &b""[..]).unwrap_err();
    assert!(err.to_string().contains("missing field `limit`"), "{err}");
    assert!(!err.to_string().contains('{'), "no JSON: {err}");
    let ok = PluginInstance::new(&plugin, &br#"{"limit":5}"#[..]).unwrap();
    assert_eq!(ok.status().unwrap().as_deref(), Some(r#"{"limit":5}"#));
}

#[test]
fn infinite_loop_traps_within_the_deadline() {
    let engine = engine();
    let looping = instance(&engine, plugins::LOOPING, "");
    let started = Instant::now();
    let err = looping.on_request(1, &mut request(None), 1).unwrap_err();
    // Generous bound (shared CI machine); the deadline is 10 ms.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("deadline"), "{err}");
    assert_eq!(looping.traps(), 1);
}

#[test]
fn infinite_loop_traps_after_the_engine_idled() {
    // An idle engine parks its epoch ticker; the next call must wake it,
    // or the loop would run on with the epoch standing still.
    let engine = engine();
    let looping = instance(&engine, plugins::LOOPING, "");
    for round in 1..=2 {
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let err = looping
            .on_request(round, &mut request(None), 1)
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(err.to_string().contains("deadline"), "{err}");
    }
    // A well-behaved call after the traps still runs.
    let hello = instance(&engine, plugins::PANICKING, "");
    assert!(hello.on_request(3, &mut request(None), 1).is_ok());
}

#[test]
fn memory_bomb_is_contained_by_the_memory_limit() {
    let engine = engine();
    let bomb = instance(&engine, plugins::MEMORY_BOMB, "");
    let err = bomb.on_request(1, &mut request(None), 1).unwrap_err();
    assert!(matches!(err, PluginError::Trap { .. }), "{err:?}");
    // The proxy is fine and other instances still work.
    let hello = instance(&engine, plugins::PANICKING, "");
    assert!(hello.on_request(2, &mut request(None), 1).is_ok());
}

#[test]
fn panic_is_contained_and_the_instance_replaced() {
    let engine = engine();
    let p = instance(&engine, plugins::PANICKING, "");
    for id in 1..=3 {
        assert!(matches!(
            p.on_request(id, &mut request(None), 1),
            Ok(RequestVerdict::Continue { .. })
        ));
    }
    assert_eq!(p.status().unwrap().as_deref(), Some(r#"{"served":3}"#));
    let err = p
        .on_request(4, &mut request(Some("x-panic")), 1)
        .unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::Trap {
                hook: "on_request",
                ..
            }
        ),
        "{err:?}"
    );
    // The panic's message and location (from the SDK's panic hook), not
    // only "unreachable".
    let text = err.to_string();
    assert!(
        text.contains("plugin panicked: ")
            && text.contains("asked to panic")
            && text.contains("src/lib.rs"),
        "{text}"
    );
    // A fresh instance (state starts over) serves the next call.
    assert_eq!(p.status().unwrap().as_deref(), Some(r#"{"served":0}"#));
    assert!(p.on_request(5, &mut request(None), 1).is_ok());
    assert_eq!(p.traps(), 1);
}

#[test]
fn request_headers_survive_a_trap() {
    let engine = engine();
    let p = instance(&engine, plugins::PANICKING, "");
    let mut req = request(Some("x-panic"));
    req.headers.insert("x-keep", HeaderValue::from_static("me"));
    assert!(p.on_request(1, &mut req, 1).is_err());
    assert_eq!(req.headers.get("x-keep").unwrap(), "me");
    assert_eq!(req.uri.path(), "/things");
}

#[test]
fn repeated_traps_back_off() {
    let engine = engine_with(EngineConfig {
        trap_backoff: Duration::from_secs(60),
        ..weir_tests::engine_config()
    });
    let p = instance(&engine, plugins::PANICKING, "");
    assert!(matches!(
        p.on_request(1, &mut request(Some("x-panic")), 1),
        Err(PluginError::Trap { .. })
    ));
    assert!(matches!(
        p.on_request(2, &mut request(Some("x-panic")), 1),
        Err(PluginError::Trap { .. })
    ));
    let err = p.on_request(3, &mut request(None), 1).unwrap_err();
    assert!(
        matches!(err, PluginError::BackingOff { traps: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn compile_cache_is_used_and_survives_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let entries_dir = dir.path().join("entries");
    let config = EngineConfig {
        compile_cache: Some(weir_proxy::plugin::CompileCacheConfig {
            dir: entries_dir.clone(),
            key_file: dir.path().join("key"),
            max_bytes: 1 << 30,
        }),
        ..weir_tests::engine_config()
    };
    let engine = engine_with(config.clone());
    engine.load_file(plugins::HELLO.as_ref()).unwrap();
    let entries: Vec<_> = std::fs::read_dir(&entries_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let good = std::fs::read(&entries[0]).unwrap();
    // A second engine loads from the cache; a corrupt entry is recompiled
    // and overwritten with a good one.
    let again = engine_with(config.clone());
    let p = again.load_file(plugins::HELLO.as_ref()).unwrap();
    assert!(p.hooks().on_response);
    std::fs::write(&entries[0], b"garbage").unwrap();
    let third = engine_with(config);
    assert!(
        third
            .load_file(plugins::HELLO.as_ref())
            .unwrap()
            .hooks()
            .on_response
    );
    assert_eq!(std::fs::read(&entries[0]).unwrap(), good);
}

#[test]
fn plugin_metrics_and_shared_counters_work() {
    let engine = engine();
    let c = instance(&engine, plugins::COUNTER, "");
    c.on_request(1, &mut request(None), 1).unwrap();
    c.on_request(2, &mut request(None), 1).unwrap();
    let metrics = c.metrics();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].name, "requests_total");
    assert_eq!(metrics[0].value, 2.0);
    assert_eq!(engine.services().counter_add("counter.requests", 0), 2);
}

/// The first CPU this process may run on.
fn first_allowed_cpu() -> usize {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .find(|cpu| libc::CPU_ISSET(*cpu, &set))
            .unwrap()
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only read and write the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

#[test]
fn deadlines_count_cpu_time_not_time_taken_by_a_busy_machine() {
    let deadline = Duration::from_millis(4);
    let engine = engine_with(EngineConfig {
        memory_limit: 8 << 20,
        call_deadline: deadline,
        epoch_tick: EngineConfig::tick_for(deadline),
        ..weir_tests::engine_config()
    });
    // Calibrate on a quiet core: ~2 ms of work per call, half the deadline.
    let probe = instance(&engine, plugins::BUSY, r#"{"iterations":200000}"#);
    let fastest = (0..5)
        .map(|i| {
            let started = Instant::now();
            probe.on_request(i, &mut request(None), 1).unwrap();
            started.elapsed()
        })
        .min()
        .unwrap();
    let iterations = (200_000.0 * 2.0 / (fastest.as_secs_f64() * 1000.0)) as u64;
    let busy = instance(
        &engine,
        plugins::BUSY,
        &format!(r#"{{"iterations":{iterations}}}"#),
    );
    let looping = instance(&engine, plugins::LOOPING, "");

    // A CPU hog on the same core as the calls.
    let cpu = first_allowed_cpu();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hog = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            pin_to(cpu);
            let mut x = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        })
    };
    let result = std::thread::spawn(move || {
        pin_to(cpu);
        let mut slowest = Duration::ZERO;
        for i in 0..100 {
            let started = Instant::now();
            let outcome = busy.on_request(100 + i, &mut request(None), 1);
            slowest = slowest.max(started.elapsed());
            assert!(outcome.is_ok(), "call {i} trapped: {:?}", outcome.err());
        }
        let started = Instant::now();
        let err = looping.on_request(1, &mut request(None), 1).unwrap_err();
        (busy.traps(), slowest, started.elapsed(), err.to_string())
    })
    .join();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    hog.join().unwrap();
    let (traps, slowest, looped_for, err) = result.unwrap();
    assert_eq!(traps, 0);
    // The hog did take time from the calls: some ran past the deadline in
    // wall time (they would have trapped on a wall-clock deadline).
    assert!(
        slowest > deadline,
        "slowest call {slowest:?}: the hog never got in the way"
    );
    // A loop still traps, on CPU time, well within the wall-clock backstop.
    assert!(err.contains("deadline"), "{err}");
    assert!(looped_for < Duration::from_secs(2), "{looped_for:?}");
}

/// A module with one function import from `module::name`, and nothing else.
fn module_importing(module: &str, name: &str) -> Vec<u8> {
    let mut wasm = b"\0asm\x01\0\0\0".to_vec();
    // Type section: one `() -> ()`.
    wasm.extend_from_slice(&[0x01, 0x04, 0x01, 0x60, 0x00, 0x00]);
    let mut imports = vec![0x01, module.len() as u8];
    imports.extend_from_slice(module.as_bytes());
    imports.push(name.len() as u8);
    imports.extend_from_slice(name.as_bytes());
    imports.extend_from_slice(&[0x00, 0x00]);
    wasm.push(0x02);
    wasm.push(imports.len() as u8);
    wasm.extend_from_slice(&imports);
    wasm
}

#[test]
fn load_errors_say_what_to_do() {
    let engine = engine();
    let wasi = engine
        .load_bytes(
            "wasi",
            &module_importing("wasi_snapshot_preview1", "environ_get"),
        )
        .unwrap_err()
        .to_string();
    assert!(
        wasi.contains("wasi_snapshot_preview1::environ_get")
            && wasi.contains("--target wasm32-unknown-unknown"),
        "{wasi}"
    );
    let other = engine
        .load_bytes(
            "bindgen",
            &module_importing("__wbindgen_placeholder__", "x"),
        )
        .unwrap_err()
        .to_string();
    assert!(other.contains("only the `weir` import module"), "{other}");
    let empty = engine
        .load_bytes("empty", b"\0asm\x01\0\0\0")
        .unwrap_err()
        .to_string();
    assert!(
        empty.contains("weir_abi_version") && empty.contains("#[weir_sdk::plugin]"),
        "{empty}"
    );
    // A native build renamed `.wasm` (this test's own executable is one),
    // and a WebAssembly component, are named for what they are.
    let native = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let native = engine
        .load_bytes("native", &native)
        .unwrap_err()
        .to_string();
    assert!(
        native.contains("native ELF") && native.contains("weir plugin build"),
        "{native}"
    );
    let component = engine
        .load_bytes("component", b"\0asm\x0d\0\x01\0")
        .unwrap_err()
        .to_string();
    assert!(component.contains("WebAssembly component"), "{component}");
}
