//! Active health checks: every `interval` (plus up to `jitter`), each
//! endpoint of the upstream gets one HTTP request, on its own schedule (a
//! hung check holds up only its endpoint); `unhealthy_threshold`
//! consecutive failures mark it unhealthy, `healthy_threshold` consecutive
//! passes mark it healthy again. Endpoints start healthy, so that a new
//! endpoint takes traffic at once rather than after its first checks.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::connector::CountingConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_util::sync::CancellationToken;

use super::{Endpoint, Upstream};
use crate::config::{HealthCheckSpec, UpstreamProtocol};
use crate::upstream_error::error_chain;

/// Consecutive results of one endpoint.
#[derive(Default)]
struct Streak {
    passes: u32,
    failures: u32,
}

/// Runs the checks until `stop` is cancelled or the upstream is gone.
/// Every endpoint is checked on its own schedule: the next check is due
/// `interval` (plus jitter) after the previous one ended, and a check that
/// hangs until its timeout delays only its own endpoint.
pub(crate) async fn run(upstream: Weak<Upstream>, spec: HealthCheckSpec, stop: CancellationToken) {
    let Some(client) = upstream.upgrade().map(|u| probe_client(&u)) else {
        return;
    };
    let mut streaks: HashMap<u32, Streak> = HashMap::new();
    // When each endpoint's next check is due; absent: at once.
    let mut due: HashMap<u32, Instant> = HashMap::new();
    let mut running: HashSet<u32> = HashSet::new();
    let mut probes = FuturesUnordered::new();
    loop {
        let Some(current) = upstream.upgrade() else {
            return;
        };
        let set = current.endpoints();
        let now = Instant::now();
        // Forget endpoints that discovery removed.
        streaks.retain(|id, _| set.all().iter().any(|e| e.id == *id));
        due.retain(|id, _| set.all().iter().any(|e| e.id == *id));
        let mut next = now + spec.interval;
        for endpoint in set.all() {
            if running.contains(&endpoint.id) {
                continue;
            }
            match due.get(&endpoint.id) {
                Some(at) if *at > now => next = next.min(*at),
                _ => {
                    running.insert(endpoint.id);
                    let endpoint = Arc::clone(endpoint);
                    let (client, spec) = (&client, &spec);
                    probes.push(async move {
                        let result = probe(client, spec, &endpoint).await;
                        (endpoint, result)
                    });
                }
            }
        }
        drop(set);
        drop(current);
        tokio::select! {
            () = stop.cancelled() => return,
            Some((endpoint, result)) = probes.next() => {
                running.remove(&endpoint.id);
                due.insert(endpoint.id, Instant::now() + spec.interval + jitter(spec.jitter));
                let Some(current) = upstream.upgrade() else {
                    return;
                };
                // A result for an endpoint discovery removed meanwhile is dropped.
                if current.endpoints().all().iter().any(|e| e.id == endpoint.id) {
                    let streak = streaks.entry(endpoint.id).or_default();
                    judge(&current, &spec, &endpoint, streak, result);
                }
            }
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Applies one probe result and the thresholds.
fn judge(
    upstream: &Upstream,
    spec: &HealthCheckSpec,
    endpoint: &Endpoint,
    streak: &mut Streak,
    result: Result<(), String>,
) {
    let stats = &endpoint.stats;
    match result {
        Ok(()) => {
            upstream.metrics.health_checks_passed.fetch_add(1, Relaxed);
            streak.failures = 0;
            streak.passes = streak.passes.saturating_add(1);
            if !stats.actively_healthy() && streak.passes >= spec.healthy_threshold {
                stats.set_actively_healthy(true);
                stats.update_note(|note| note.active_reason = None);
                upstream.metrics.became_healthy.fetch_add(1, Relaxed);
                tracing::info!(
                    upstream = %upstream.name,
                    endpoint = %endpoint.authority,
                    passes = streak.passes,
                    "endpoint healthy again"
                );
            }
        }
        Err(reason) => {
            upstream.metrics.health_checks_failed.fetch_add(1, Relaxed);
            streak.passes = 0;
            streak.failures = streak.failures.saturating_add(1);
            if stats.actively_healthy() && streak.failures >= spec.unhealthy_threshold {
                stats.set_actively_healthy(false);
                upstream.metrics.became_unhealthy.fetch_add(1, Relaxed);
                tracing::warn!(
                    upstream = %upstream.name,
                    endpoint = %endpoint.authority,
                    failures = streak.failures,
                    %reason,
                    "endpoint unhealthy"
                );
            }
            if !stats.actively_healthy() {
                stats.update_note(|note| note.active_reason = Some(reason));
            }
        }
    }
}

/// One check of one endpoint: `Ok` if it answered an expected status in time.
async fn probe(
    client: &Client<CountingConnector, Empty<Bytes>>,
    spec: &HealthCheckSpec,
    endpoint: &Endpoint,
) -> Result<(), String> {
    let uri = format!("http://{}{}", endpoint.authority, spec.path);
    let host = spec
        .host
        .as_deref()
        .unwrap_or_else(|| endpoint.authority.as_str());
    let request = Request::builder()
        .method(spec.method.clone())
        .uri(uri)
        .header(HOST, host)
        .header(USER_AGENT, HeaderValue::from_static("weir-health-check"))
        .body(Empty::new())
        .map_err(|e| format!("health check: cannot build request: {e}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("health check: {}", error_chain(&e)))?;
        let status = response.status();
        // Read the body so that the connection can be reused.
        let _ = response.into_body().collect().await;
        if spec.expects(status.as_u16()) {
            Ok(())
        } else {
            Err(format!("health check: status {}", status.as_u16()))
        }
    };
    match tokio::time::timeout(spec.timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "health check: no answer within {}",
            humantime::format_duration(spec.timeout)
        )),
    }
}

fn probe_client(upstream: &Upstream) -> Client<CountingConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(upstream.spec.connect_timeout));
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_max_idle_per_host(1)
        .set_host(false);
    if upstream.spec.protocol == UpstreamProtocol::H2c {
        builder.http2_only(true);
    }
    // Probes speak TLS to a TLS upstream; their connections are not counted
    // with the upstream's own.
    builder.build(CountingConnector::new(
        connector,
        Arc::default(),
        super::upstream_tls(&upstream.spec),
    ))
}

/// A random pause in `0..=max`, so that proxies do not probe in lockstep.
fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    // RandomState is seeded randomly per instance: enough for jitter.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(random % nanos.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(50)) <= Duration::from_millis(50));
        }
    }
}
