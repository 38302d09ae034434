//! `bare-proxy`: the simplest honest hyper pass-through, the reference Weir
//! must beat (`docs/architecture.md`, "Performance budgets").
//!
//! It accepts HTTP/1.1, rewrites each request's URI to the one upstream, drops
//! hop-by-hop headers both ways, and forwards it with hyper-util's legacy
//! `Client` (pooled keep-alive connections), streaming both bodies through
//! untouched. Nothing else: no routing, no plugins, no metrics. A failed
//! upstream exchange becomes a `502`.
//!
//! Two runtime shapes, to measure what the shape costs:
//! - `per-core`: one current-thread runtime per thread, each with its own
//!   `SO_REUSEPORT` listener and its own `Client` (pool);
//! - `multi-thread`: one work-stealing runtime with `--threads` workers, one
//!   listener and one shared `Client`.
//!
//! Run with: `bare-proxy --listen 127.0.0.1:9001 --upstream 127.0.0.1:9000`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::header::{CONNECTION, HeaderName, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the proxy answers: the upstream's streamed body, or a small local one.
type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Hop-by-hop headers (RFC 9110 §7.6.1) that a proxy must not forward.
/// `keep-alive` and `proxy-connection` are not in `http`'s constants.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RuntimeShape {
    /// One current-thread runtime per thread, each with its own listener and pool.
    PerCore,
    /// One multi-thread runtime, one listener, one shared pool.
    MultiThread,
}

#[derive(Parser, Debug)]
#[command(about = "A bare hyper pass-through proxy to one upstream")]
struct Args {
    /// Address to listen on (loopback only for the harness).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// The one upstream, `host:port`.
    #[arg(long)]
    upstream: String,
    /// Threads (runtimes for `per-core`, workers for `multi-thread`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Runtime shape.
    #[arg(long, value_enum, default_value = "per-core")]
    runtime: RuntimeShape,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let upstream: Authority = args
        .upstream
        .parse()
        .with_context(|| format!("--upstream {:?} is not host:port", args.upstream))?;
    let listen = args.listen;
    match args.runtime {
        RuntimeShape::PerCore => weir_benches::run_per_core(args.threads, move |_| {
            let upstream = upstream.clone();
            async move {
                let listener = weir_benches::reuseport_listener(listen)?;
                serve(listener, new_client(), upstream).await
            }
        }),
        RuntimeShape::MultiThread => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.threads.max(1))
                .enable_all()
                .build()
                .context("building the multi-thread runtime")?;
            rt.block_on(async move {
                let listener = weir_benches::reuseport_listener(listen)?;
                serve(listener, new_client(), upstream).await
            })
        }
    }
}

/// A keep-alive pooled HTTP/1.1 client; tasks go to the current runtime.
fn new_client() -> Client<HttpConnector, Incoming> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Accepts connections and serves each with the pass-through service.
async fn serve(
    listener: tokio::net::TcpListener,
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
) -> anyhow::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("bare-proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(client.clone(), upstream.clone(), req));
            // Clients closing mid-exchange are normal under load.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Forwards one request to the upstream and streams its answer back.
async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = match Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(upstream)
        .path_and_query(path_and_query)
        .build()
    {
        Ok(uri) => uri,
        Err(_) => return Ok(local(StatusCode::BAD_REQUEST, "bad request target\n")),
    };
    strip_hop_by_hop(&mut parts.headers);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, Either::Left(body)))
        }
        Err(_) => Ok(local(StatusCode::BAD_GATEWAY, "bad gateway\n")),
    }
}

/// Removes the hop-by-hop headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Names listed in `Connection` are hop-by-hop too; rare, so only then allocate.
    if let Some(listed) = headers.get(CONNECTION).and_then(|v| v.to_str().ok()) {
        let listed: Vec<HeaderName> = listed
            .split(',')
            .filter_map(|name| HeaderName::try_from(name.trim()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// A small local answer.
fn local(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp
}
