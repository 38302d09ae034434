//! Shared helpers for the end-to-end tests: controllable upstream servers on
//! ephemeral loopback ports, a proxy started from config text, an HTTP client
//! and `assert_eventually` for convergence after reloads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod dns;
pub mod etcd;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use weir_proxy::{Config, Options, Server};

pub use upstream::TestUpstream;

/// Paths of the test plugins' `.wasm` files, built by `tests/build.rs` from
/// `tests/plugins/`, one constant per plugin (`HELLO`, `RETRY_ONCE`, …).
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

/// The key of the compile cache the tests share (see [`engine_config`]).
pub const COMPILE_CACHE_KEY: &str = concat!(env!("OUT_DIR"), "/compile-cache.key");

/// The engine config tests start from: compiled plugins are cached in the
/// build's target dir, so each test plugin is compiled once per build rather
/// than once per test (Cranelift is slow in debug builds).
pub fn engine_config() -> weir_proxy::plugin::EngineConfig {
    weir_proxy::plugin::EngineConfig {
        compile_cache: Some(weir_proxy::plugin::CompileCacheConfig {
            dir: concat!(env!("OUT_DIR"), "/compile-cache").into(),
            key_file: COMPILE_CACHE_KEY.into(),
            max_bytes: 1 << 30,
        }),
        ..Default::default()
    }
}

/// A proxy started in-process from config text, with its config file in a
/// temporary directory (so reload tests can rewrite it).
pub struct TestProxy {
    pub server: Server,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl TestProxy {
    /// Starts a proxy; the text should use `127.0.0.1:0` for its listener
    /// and admin addresses. One per-core worker unless the text says otherwise.
    pub fn start(config_text: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), config_text)
    }

    /// Like [`TestProxy::start`], in a directory the test prepared (e.g. with
    /// plugins already in its `plugins/`).
    pub fn start_in(dir: tempfile::TempDir, config_text: &str) -> Self {
        let config_path = dir.path().join("weir.toml");
        std::fs::write(&config_path, config_text).unwrap();
        let config =
            Config::load(&config_path).unwrap_or_else(|e| panic!("test config refused:\n{e}"));
        let server = Server::start(config, Options { watch_config: true }).unwrap();
        let addr = server.listener_addrs()[0];
        let admin = server.admin_addr().unwrap();
        Self {
            server,
            addr,
            admin,
            config_path,
            dir,
        }
    }

    /// `http://ADDR` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://ADMIN` + path.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The plugins directory (`plugins/` beside the config).
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Rewrites the config file atomically (write then rename).
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join("weir.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }
}

/// Copies a built plugin into `dir` as `NAME.wasm`, write-then-rename, the
/// way a deploy should drop it.
pub fn install_plugin(dir: &std::path::Path, name: &str, wasm: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::copy(wasm, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

/// Installs `wasm` as `NAME.wasm` in `dir` as a distinct version: the same
/// code with a custom section naming `tag` appended, which changes the
/// file's hash and nothing else (write, then rename).
pub fn install_variant(dir: &std::path::Path, name: &str, wasm: &str, tag: &str) {
    let mut bytes = std::fs::read(wasm).unwrap();
    // A custom section: id 0, its size, then its name (length-prefixed).
    let section_name = format!("weir-test-variant-{tag}");
    let size = 1 + section_name.len();
    assert!(size < 128, "one-byte LEB128 sizes only");
    bytes.push(0);
    bytes.push(size as u8);
    bytes.push(section_name.len() as u8);
    bytes.extend_from_slice(section_name.as_bytes());
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

/// The standard head of a test config: one listener and the admin API on
/// ephemeral ports, one worker.
pub fn config_head() -> String {
    String::from(
        "[server]\nworkers = 1\ndrain_timeout = \"5s\"\n[admin]\naddress = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n",
    )
}

/// A plain HTTP/1.1 client with keep-alive.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub version: http::Version,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request and reads the whole response.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<Reply> {
    let response = client.request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        version: parts.version,
        body,
    })
}

/// `GET url` with a fresh client.
pub async fn get(url: &str) -> anyhow::Result<Reply> {
    send(&client(), Request::get(url).body(Full::default())?).await
}

/// What came back on a raw connection: the first response's status (0 if
/// none), everything read, and whether the proxy closed the connection.
#[derive(Debug)]
pub struct RawExchange {
    pub status: u16,
    pub text: String,
    pub closed: bool,
}

/// Writes `bytes` to the proxy on a fresh connection and reads until the
/// proxy closes it or `wait` passes with nothing more.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> RawExchange {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The proxy may close before taking every byte: that is an answer too.
    let _ = stream.write_all(bytes).await;
    read_exchange(&mut stream, wait).await
}

/// Reads what the proxy answers on `stream` until it closes the connection
/// or `wait` passes with nothing more.
pub async fn read_exchange(stream: &mut tokio::net::TcpStream, wait: Duration) -> RawExchange {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&seen).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    RawExchange {
        status,
        text,
        closed,
    }
}

/// Retries `check` until it passes or `within` runs out; then fails with the
/// last message. For hot reloads and other convergence, instead of sleeps.
pub async fn assert_eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return,
            Err(message) if Instant::now() >= deadline => {
                panic!("{what}: not true within {within:?}: {message}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
