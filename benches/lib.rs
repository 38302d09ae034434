//! Benchmark support: criterion benches and the load harness's helper binaries.
//!
//! This library owns what the load harness's binaries (`bench-upstream`,
//! `bare-proxy`) share: a loopback listener with `SO_REUSEPORT`, so that each
//! thread can own one, and the "one current-thread runtime per thread" runner
//! that Weir's own per-core model is measured against.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use socket2::{Domain, Protocol, Socket, Type};

/// Backlog for the harness's listeners: large enough that a burst of `wrk`
/// connections is never refused while a runtime is busy.
const BACKLOG: i32 = 4096;

/// Binds a non-blocking TCP listener on `addr` with `SO_REUSEADDR` and
/// `SO_REUSEPORT`, so several threads can each bind their own listener to the
/// same address and let the kernel spread connections between them.
pub fn reuseport_listener(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .context("creating the listening socket")?;
    socket.set_reuse_address(true).context("SO_REUSEADDR")?;
    socket.set_reuse_port(true).context("SO_REUSEPORT")?;
    socket.set_nonblocking(true).context("O_NONBLOCK")?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    socket
        .listen(BACKLOG)
        .with_context(|| format!("listening on {addr}"))?;
    tokio::net::TcpListener::from_std(socket.into()).context("registering the listener")
}

/// Runs `make(i)` for `i in 0..threads`, each on its own OS thread inside its
/// own current-thread tokio runtime, and waits for all of them. The future is
/// built on its thread, so it need not be `Send`. Returns the first error.
pub fn run_per_core<F, Fut>(threads: usize, make: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let make = Arc::new(make);
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads.max(1) {
        let make = Arc::clone(&make);
        let handle = std::thread::Builder::new()
            .name(format!("core-{i}"))
            .spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a current-thread runtime")?;
                rt.block_on(make(i))
            })
            .context("spawning a runtime thread")?;
        handles.push(handle);
    }
    let mut first_error = None;
    for handle in handles {
        let result = match handle.join() {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!("a runtime thread panicked")),
        };
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
