//! Listening sockets: one per worker with `SO_REUSEPORT` in the per-core
//! layout (the kernel spreads connections), one shared socket otherwise; and
//! the accept loop that hands connections to `conn::serve` — on a TLS
//! listener after the handshake, which is bounded in time and whose
//! failures are counted by reason, not logged per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use std::collections::BTreeMap;

use super::conn::{self, ListenerKind, WorkerContext};
use crate::config::Config;
use crate::telemetry::metrics::ListenerMetrics;
use crate::tls::ListenerTls;
use crate::watch::{Watch, watch_file};

/// Binds `count` sockets to `address`. With port 0, the first socket picks
/// the port and the others join it.
pub(crate) fn bind(address: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut sockets = Vec::with_capacity(count);
    let mut target = address;
    for _ in 0..count.max(1) {
        let socket = Socket::new(
            Domain::for_address(target),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        if count > 1 {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&target.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        target = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// Accepts connections until `stop` is cancelled.
pub(crate) async fn accept_loop(
    socket: std::net::TcpListener,
    ctx: Arc<WorkerContext>,
    metrics: Arc<ListenerMetrics>,
    tls: Arc<ArcSwapOption<ListenerTls>>,
    redirect_https: Option<u16>,
    stop: CancellationToken,
) {
    let plain = redirect_https.map_or(ListenerKind::Plain, ListenerKind::RedirectToHttps);
    let listener = match TcpListener::from_std(socket) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot register listener with the runtime");
            return;
        }
    };
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small responses must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    match tls.load_full() {
                        Some(tls) => {
                            tokio::spawn(handshake_then_serve(
                                stream,
                                peer,
                                Arc::clone(&ctx),
                                Arc::clone(&metrics),
                                tls,
                            ));
                        }
                        None => {
                            tokio::spawn(conn::serve(
                                stream,
                                peer,
                                Arc::clone(&ctx),
                                Arc::clone(&metrics),
                                plain.clone(),
                            ));
                        }
                    }
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// The TLS handshake, within the head-read timeout, then the connection.
async fn handshake_then_serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<WorkerContext>,
    metrics: Arc<ListenerMetrics>,
    tls: Arc<ListenerTls>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
    match crate::tls::handshake::accept(&acceptor, stream, ctx.handshake_timeout()).await {
        Ok(stream) => {
            let facts = Arc::new(crate::tls::ConnectionTls::of(stream.get_ref().1));
            conn::serve(stream, peer, ctx, metrics, ListenerKind::Tls(facts)).await;
        }
        Err(failed) => metrics.tls_handshake_failed(&failed, peer),
    }
}

/// Reloads a listener's certificates whenever one of its files changes.
pub(super) fn watch_certificates(tls: &Arc<ListenerTls>) -> Vec<Watch> {
    let mut watches = Vec::new();
    for paths in &tls.settings().certificates {
        for file in [&paths.cert, &paths.key] {
            let weak = Arc::downgrade(tls);
            match watch_file(file, move || {
                if let Some(tls) = weak.upgrade() {
                    tls.reload_certificates();
                }
            }) {
                Ok(watch) => watches.push(watch),
                Err(error) => {
                    tracing::warn!(file = %file.display(), %error, "cannot watch a TLS file; it will not be reloaded");
                }
            }
        }
    }
    watches
}

/// Builds the TLS of every TLS listener of `config` (checked whole before
/// anything changes).
pub(super) fn build_listener_tls(
    config: &Config,
) -> Result<BTreeMap<SocketAddr, Arc<ListenerTls>>, (SocketAddr, crate::tls::ListenerTlsError)> {
    config
        .listener_tls
        .iter()
        .map(|(address, settings)| {
            ListenerTls::new(settings)
                .map(|tls| (*address, Arc::new(tls)))
                .map_err(|e| (*address, e))
        })
        .collect()
}
