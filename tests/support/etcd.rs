//! A real etcd (Debian's `etcd-server`, `/usr/bin/etcd`) for discovery
//! tests: started on free loopback ports with a temporary data directory,
//! killed when dropped. Keys are written through etcd's HTTP/JSON gateway.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

/// Where the etcd binary is.
pub const ETCD: &str = "/usr/bin/etcd";

pub struct Etcd {
    pub client: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub async fn start() -> Self {
        assert!(
            std::path::Path::new(ETCD).exists(),
            "{ETCD} is missing: apt-get install -y etcd-server (see .ci/run)"
        );
        let dir = tempfile::tempdir().unwrap();
        let client: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let peer = format!("http://127.0.0.1:{}", free_port());
        let client_url = format!("http://{client}");
        let child = Command::new(ETCD)
            .args(["--name", "weir-test"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("weir-test={peer}")])
            .args(["--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let etcd = Self {
            client,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if etcd.call("/v3/kv/range", r#"{"key":"AA=="}"#).await.is_ok() {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd did not start within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn call(&self, path: &str, body: &str) -> anyhow::Result<String> {
        let request = Request::post(format!("http://{}{path}", self.client))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))?;
        let reply = crate::send(&crate::client(), request).await?;
        anyhow::ensure!(
            reply.status == 200,
            "{path}: {} {}",
            reply.status,
            reply.text()
        );
        Ok(reply.text())
    }

    /// Puts `key` = `value`.
    pub async fn put(&self, key: &str, value: &str) {
        let body = serde_json::json!({ "key": BASE64.encode(key), "value": BASE64.encode(value) });
        self.call("/v3/kv/put", &body.to_string()).await.unwrap();
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) {
        let body = serde_json::json!({ "key": BASE64.encode(key) });
        self.call("/v3/kv/deleterange", &body.to_string())
            .await
            .unwrap();
    }

    /// Deletes every key under `prefix` at once (one revision), as a writer
    /// that clears a set before writing the new one does.
    pub async fn delete_prefix(&self, prefix: &str) {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body =
            serde_json::json!({ "key": BASE64.encode(prefix), "range_end": BASE64.encode(end) });
        self.call("/v3/kv/deleterange", &body.to_string())
            .await
            .unwrap();
    }

    /// Freezes etcd (SIGSTOP): its sockets stay open but nothing answers,
    /// as with a hung process or a partition that drops packets.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a frozen etcd (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills etcd now (as if its host went away).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
