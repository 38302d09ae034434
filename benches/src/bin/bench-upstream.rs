//! `bench-upstream`: the load harness's fast origin server.
//!
//! Answers every HTTP/1.1 request with `200 OK` and a small fixed body
//! (`hello\n`, with `Content-Length`), keeping connections alive. One
//! current-thread runtime per thread, each with its own `SO_REUSEPORT`
//! listener, so the origin costs as little CPU as possible and never becomes
//! the bottleneck of a proxy measurement.
//!
//! Run with: `bench-upstream --listen 127.0.0.1:9000 --threads 1`

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The body every request gets.
const BODY: &[u8] = b"hello\n";

#[derive(Parser, Debug)]
#[command(about = "A fast HTTP/1.1 origin that answers every request 200 \"hello\"")]
struct Args {
    /// Address to listen on (loopback only for the harness).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Threads, each with its own current-thread runtime and listener.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// A `Cache-Control` value to put on every response (to measure a
    /// caching proxy's hit path); none by default.
    #[arg(long)]
    cache_control: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listen = args.listen;
    let cache_control = match args.cache_control {
        Some(value) => Some(http::HeaderValue::from_str(&value).context("--cache-control")?),
        None => None,
    };
    weir_benches::run_per_core(args.threads, move |_| serve(listen, cache_control.clone()))
}

/// Accepts connections on one `SO_REUSEPORT` listener and serves each on the
/// current runtime.
async fn serve(listen: SocketAddr, cache_control: Option<http::HeaderValue>) -> anyhow::Result<()> {
    let listener = weir_benches::reuseport_listener(listen)?;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Running out of descriptors or a reset before accept: keep serving.
            Err(e) => {
                eprintln!("bench-upstream: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small responses: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let cache_control = cache_control.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, cache_control.clone()));
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            // A client closing mid-request is normal under load; nothing to report.
            let _ = conn.await;
        });
    }
}

/// Every request: 200 with the fixed body. The request body, if any, is left
/// to hyper, which drains or closes as HTTP/1.1 requires.
async fn answer(
    _req: Request<Incoming>,
    cache_control: Option<http::HeaderValue>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    if let Some(value) = cache_control {
        response
            .headers_mut()
            .insert(http::header::CACHE_CONTROL, value);
    }
    Ok(response)
}
