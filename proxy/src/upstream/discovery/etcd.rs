//! etcd v3 discovery through etcd's HTTP/JSON gateway (no gRPC stack):
//! `POST /v3/kv/range` reads every key under the prefix (each value is one
//! endpoint as JSON), then `POST /v3/watch` streams changes from the next
//! revision; any change re-reads the whole prefix, which keeps the logic
//! simple and the published set always consistent with one revision. When
//! etcd cannot be reached the last set keeps serving; the task retries with
//! a short capped backoff, trying each configured etcd endpoint in turn.
//!
//! A watch stream says nothing while nothing changes, so silence cannot tell
//! a quiet prefix from a frozen or partitioned etcd (its sockets stay open).
//! Beside each watch, a keep-alive asks etcd for its status every
//! [`KEEPALIVE`]; an answer missing for [`KEEPALIVE_TIMEOUT`] ends the round
//! as a failure, so the state turns `error` within a few seconds.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Buf, Bytes, BytesMut};
use http::uri::Authority;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{DiscoveryError, Publisher};
use crate::config::{EndpointSpec, parse_endpoint_json};
use crate::upstream_error::error_chain;

/// Longest wait for a range request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry backoff after a failed round: short, because a change made while
/// etcd was away waits for the next successful round.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often a watching task checks that etcd still answers.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// How long a keep-alive may wait for etcd's answer.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

type EtcdClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Deserialize)]
struct RangeResponse {
    header: Header,
    #[serde(default)]
    kvs: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct Header {
    /// int64 fields are strings in the gateway's JSON.
    #[serde(default)]
    revision: Option<String>,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct WatchMessage {
    #[serde(default)]
    result: Option<WatchResult>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WatchResult {
    #[serde(default)]
    events: Vec<serde_json::Value>,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: Option<String>,
}

/// Follows the prefix until `stop` is cancelled or the upstream is gone.
pub(super) async fn run(
    publisher: Publisher,
    endpoints: Vec<Authority>,
    prefix: String,
    stop: CancellationToken,
) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    let client: EtcdClient = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(connector);
    let key = BASE64.encode(prefix.as_bytes());
    let range_end = BASE64.encode(prefix_end(prefix.as_bytes()));
    let mut backoff = BACKOFF_MIN;
    let mut turn = 0usize;
    loop {
        let Some(etcd) = endpoints.get(turn % endpoints.len().max(1)) else {
            return;
        };
        let failed = |message: String| DiscoveryError::Etcd {
            endpoint: etcd.to_string(),
            message,
        };
        let round = async {
            let revision = sync(&client, etcd, &key, &range_end, &publisher).await?;
            tokio::select! {
                result = watch(&client, etcd, &key, &range_end, revision, &publisher) => result,
                result = keep_alive(&client, etcd) => result,
            }
        };
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = round => result,
        };
        if !publisher.alive() {
            return;
        }
        match result {
            // The watch ended cleanly (e.g. compaction): start over at once.
            Ok(()) => backoff = BACKOFF_MIN,
            Err(message) => {
                publisher.failed(&failed(message));
                turn += 1;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Reads the whole prefix, publishes it, and returns its revision.
async fn sync(
    client: &EtcdClient,
    etcd: &Authority,
    key: &str,
    range_end: &str,
    publisher: &Publisher,
) -> Result<i64, String> {
    let body = json!({ "key": key, "range_end": range_end });
    let request = post(etcd, "/v3/kv/range", &body)?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!(
                "range answered {status}: {}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        serde_json::from_slice::<RangeResponse>(&bytes)
            .map_err(|e| format!("bad range answer: {e}"))
    };
    let range = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| String::from("range request timed out"))??;
    let revision = range
        .header
        .revision
        .as_deref()
        .unwrap_or("0")
        .parse::<i64>()
        .map_err(|e| format!("bad revision: {e}"))?;
    let mut specs = Vec::new();
    let mut bad = Vec::new();
    for kv in &range.kvs {
        let key = decode(&kv.key);
        match BASE64
            .decode(&kv.value)
            .map_err(|e| e.to_string())
            .and_then(|value| parse_endpoint_json(&value))
        {
            Ok(spec) => specs.push(spec),
            Err(message) => bad.push(format!("{key}: {message}")),
        }
    }
    publish_sorted(publisher, specs);
    if !bad.is_empty() {
        // The valid keys serve; the invalid ones are reported.
        publisher.failed(&DiscoveryError::Etcd {
            endpoint: etcd.to_string(),
            message: format!("invalid endpoint values: {}", bad.join("; ")),
        });
    }
    Ok(revision)
}

fn publish_sorted(publisher: &Publisher, mut specs: Vec<EndpointSpec>) {
    specs.sort_by(|a, b| a.address.as_str().cmp(b.address.as_str()));
    publisher.publish(&specs);
}

/// Watches from `revision + 1`; re-syncs on every change. Returns when the
/// stream ends or fails.
async fn watch(
    client: &EtcdClient,
    etcd: &Authority,
    key: &str,
    range_end: &str,
    mut revision: i64,
    publisher: &Publisher,
) -> Result<(), String> {
    let body = json!({
        "create_request": {
            "key": key,
            "range_end": range_end,
            "start_revision": (revision + 1).to_string(),
        }
    });
    let request = post(etcd, "/v3/watch", &body)?;
    let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
        .await
        .map_err(|_| String::from("watch request timed out"))?
        .map_err(|e| error_chain(&e))?;
    if response.status() != StatusCode::OK {
        return Err(format!("watch answered {}", response.status()));
    }
    let mut body = response.into_body();
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("watch stream: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        // The gateway writes one JSON object per message; a frame may hold
        // part of one or several.
        let mut changed = false;
        let consumed = {
            let mut stream =
                serde_json::Deserializer::from_slice(&buffer).into_iter::<WatchMessage>();
            loop {
                match stream.next() {
                    Some(Ok(message)) => {
                        if let Some(error) = message.error {
                            return Err(format!("watch error: {error}"));
                        }
                        if let Some(result) = message.result {
                            if result.canceled {
                                return Err(format!(
                                    "watch canceled: {}",
                                    result.cancel_reason.unwrap_or_default()
                                ));
                            }
                            changed |= !result.events.is_empty();
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break stream.byte_offset(),
                    Some(Err(e)) => return Err(format!("bad watch message: {e}")),
                    None => break stream.byte_offset(),
                }
            }
        };
        buffer.advance(consumed);
        if changed {
            revision = sync(client, etcd, key, range_end, publisher).await?;
            tracing::debug!(revision, "etcd prefix changed");
        }
    }
    Err(String::from("watch stream ended"))
}

/// Asks etcd for its status every [`KEEPALIVE`]; returns the first failure
/// (no answer within [`KEEPALIVE_TIMEOUT`], or an error answer).
async fn keep_alive(client: &EtcdClient, etcd: &Authority) -> Result<(), String> {
    loop {
        tokio::time::sleep(KEEPALIVE).await;
        let request = post(etcd, "/v3/maintenance/status", &json!({}))?;
        let exchange = async {
            let response = client.request(request).await.map_err(|e| error_chain(&e))?;
            let status = response.status();
            // Read the answer whole so the connection goes back to the pool.
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            if status == StatusCode::OK {
                Ok(())
            } else {
                Err(format!("status answered {status}"))
            }
        };
        tokio::time::timeout(KEEPALIVE_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                format!(
                    "no answer to a keep-alive within {} s (etcd frozen or unreachable)",
                    KEEPALIVE_TIMEOUT.as_secs()
                )
            })??;
    }
}

fn post(
    etcd: &Authority,
    path: &str,
    body: &serde_json::Value,
) -> Result<Request<Full<Bytes>>, String> {
    Request::post(format!("http://{etcd}{path}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())
}

/// The end of the range of every key that starts with `prefix`: the prefix
/// with its last byte that is not 0xff incremented (etcd's `WithPrefix`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

fn decode(key: &str) -> String {
    BASE64.decode(key).map_or_else(
        |_| key.to_owned(),
        |k| String::from_utf8_lossy(&k).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/weir/x/"), b"/weir/x0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }
}
