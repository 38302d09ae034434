//! The proxy server: worker runtimes, listeners, the admin listener, config
//! reload and graceful shutdown. The request path itself is in `handler`;
//! this module only builds and publishes the snapshots it reads.
//!
//! Layout: in `per-core` mode each worker is a thread with a current-thread
//! tokio runtime, its own `SO_REUSEPORT` socket per listener and its own
//! upstream pools; in `multi-thread` mode one multi-thread runtime serves
//! everything. A separate control thread runs the admin API and reloads.

mod conn;
mod forward;
mod handler;
mod headers;
mod intake;
mod listener;
mod peer;
mod plugins;
mod reload;
mod respond;
mod snapshot;

pub use plugins::{SwapError, check_plugins};
pub use reload::ReloadError;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, RuntimeMode};
use crate::plugin::PluginRegistry;
use crate::route::RouteTable;
use crate::telemetry::metrics::{self, Metrics};
use crate::tls::ListenerTls;
use crate::upstream::{self, Upstream};
use crate::watch::{Watch, watch_dir, watch_file};
use conn::{Connections, WorkerContext};

/// What the request path reads; replaced piecewise on reload.
pub(crate) struct Shared {
    pub table: ArcSwap<RouteTable>,
    pub config: ArcSwap<Config>,
    pub metrics: Arc<Metrics>,
    pub access_log: bool,
    pub connections: Connections,
    /// Cancelled when the server starts draining.
    pub drain: CancellationToken,
    /// Request bodies up to this size are kept for retries (plugin routes).
    pub replay_limit: usize,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("cannot start the {what} runtime: {source}")]
    Runtime {
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot watch the config file: {0}")]
    Watch(#[from] notify::Error),
    #[error(transparent)]
    Plugins(#[from] ConfigError),
    #[error(transparent)]
    Engine(#[from] crate::plugin::EngineError),
    #[error("listener {address}: {source}")]
    Tls {
        address: SocketAddr,
        source: crate::tls::ListenerTlsError,
    },
}

/// Start-up options that are not part of the config file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Reload the config when its file changes.
    pub watch_config: bool,
}

struct ActiveListener {
    local: SocketAddr,
    stop: CancellationToken,
    /// Its TLS (none on a plain listener), swapped on reload; the accept
    /// loops read it per connection.
    tls: Arc<ArcSwapOption<ListenerTls>>,
    /// Watches of its certificate and key files.
    _certificate_watches: Vec<Watch>,
}

struct Inner {
    shared: Arc<Shared>,
    /// One context per worker runtime, with the handle to spawn on it.
    workers: Vec<(Handle, Arc<WorkerContext>)>,
    /// Sockets per listener: one per worker in per-core mode.
    sockets_per_listener: usize,
    listeners: Mutex<BTreeMap<SocketAddr, ActiveListener>>,
    upstreams: Mutex<BTreeMap<String, Arc<Upstream>>>,
    /// Parent of every listener's stop token.
    accepting: CancellationToken,
    /// Stops the worker and control runtimes.
    stop: CancellationToken,
    admin: Option<SocketAddr>,
    /// The admin API's TLS, by its configured address (shown with the
    /// listeners' certificates: expiry, last reload error).
    admin_tls: std::sync::OnceLock<(SocketAddr, Arc<ListenerTls>)>,
    ready: AtomicBool,
    last_reload_error: Mutex<Option<String>>,
    /// Serializes reloads (file watcher and admin API may race).
    reload_lock: Mutex<()>,
    /// SHA-256 of the config text last loaded or refused: the watcher
    /// reloads only when the content differs.
    config_digest: Mutex<Option<[u8; 32]>>,
    plugins: PluginRegistry,
    /// The control runtime: admin API, health checks, discovery.
    control: Handle,
}

/// A running proxy. Dropping it stops everything at once; call
/// [`Server::shutdown`] first to drain.
pub struct Server {
    inner: Arc<Inner>,
    _watch: Option<Watch>,
    _plugin_watch: Option<Watch>,
    /// Reload the admin API's certificates when their files change.
    _admin_certificate_watches: Vec<Watch>,
}

/// A cheap handle for the admin API and the watcher.
#[derive(Clone)]
pub struct ServerHandle(Arc<Inner>);

impl Server {
    /// Starts workers, listeners and the admin listener for `config`.
    /// Returns once every socket is bound.
    pub fn start(config: Config, options: Options) -> Result<Self, StartError> {
        let per_core = config.server.runtime == RuntimeMode::PerCore;
        let slots = if per_core { config.server.workers } else { 1 };
        let metrics = Arc::new(Metrics::new(slots));
        let plugins = PluginRegistry::new(&config.plugins)?;
        let candidates = plugins
            .candidates_for(&config)
            .map_err(ConfigError::Invalid)?;
        let first = snapshot::build(snapshot::Inputs {
            config: &config,
            registry: &plugins,
            candidates,
            table: &RouteTable::default(),
            upstreams: &BTreeMap::new(),
            slots,
            metrics: &metrics,
        })?;
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(RouteTable::default()),
            config: ArcSwap::from_pointee(config.clone()),
            metrics,
            access_log: config.server.access_log,
            connections: Connections::default(),
            drain: CancellationToken::new(),
            replay_limit: config.plugins.replay_buffer_bytes,
        });

        let handles = if per_core {
            (0..config.server.workers)
                .map(|index| {
                    spawn_runtime(
                        format!("weir-worker-{index}"),
                        Some(index),
                        None,
                        stop.clone(),
                    )
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            vec![spawn_runtime(
                "weir-workers".into(),
                None,
                Some(config.server.workers),
                stop.clone(),
            )?]
        };
        let workers = handles
            .into_iter()
            .map(|handle| {
                (
                    handle,
                    Arc::new(WorkerContext::new(Arc::clone(&shared), &config)),
                )
            })
            .collect();
        let control = spawn_runtime("weir-control".into(), None, None, stop.clone())?;
        let admin_socket = match config.admin.as_ref().map(|admin| admin.address) {
            Some(address) => {
                let mut sockets = listener::bind(address, 1)
                    .map_err(|source| StartError::Bind { address, source })?;
                sockets.pop()
            }
            None => None,
        };

        let inner = Arc::new(Inner {
            shared,
            workers,
            sockets_per_listener: slots,
            listeners: Mutex::default(),
            upstreams: Mutex::default(),
            accepting: CancellationToken::new(),
            stop,
            admin: admin_socket.as_ref().and_then(|s| s.local_addr().ok()),
            admin_tls: std::sync::OnceLock::new(),
            ready: AtomicBool::new(false),
            last_reload_error: Mutex::default(),
            reload_lock: Mutex::default(),
            config_digest: Mutex::new(reload::file_digest(&config.source)),
            plugins,
            control: control.clone(),
        });
        ServerHandle(Arc::clone(&inner)).publish(first);
        let mut server = Self {
            inner,
            _watch: None,
            _plugin_watch: None,
            _admin_certificate_watches: Vec::new(),
        };
        let mut tls = listener::build_listener_tls(&config)
            .map_err(|(address, source)| StartError::Tls { address, source })?;
        for address in &config.listeners {
            let sockets = listener::bind(*address, slots).map_err(|source| StartError::Bind {
                address: *address,
                source,
            })?;
            server.inner.add_listener(
                *address,
                sockets,
                tls.remove(address),
                config.redirect_https.get(address).copied(),
            );
        }
        if let Some(socket) = admin_socket {
            let admin_tls = match config
                .admin
                .as_ref()
                .and_then(|a| Some((a.address, a.tls.as_ref()?)))
            {
                Some((address, settings)) => {
                    let tls = ListenerTls::new(settings)
                        .map_err(|source| StartError::Tls { address, source })?;
                    let tls = Arc::new(tls);
                    server._admin_certificate_watches = listener::watch_certificates(&tls);
                    let _ = server.inner.admin_tls.set((address, Arc::clone(&tls)));
                    Some(tls)
                }
                None => None,
            };
            if let Some(admin) = config.admin.as_ref()
                && admin_tls.is_none()
                && !admin.address.ip().is_loopback()
            {
                tracing::warn!(
                    address = %admin.address,
                    "the admin API is served without TLS off loopback: its bearer token crosses the network in clear; set admin.tls"
                );
            }
            control.spawn(crate::admin::serve(
                socket,
                Arc::new(server.handle()),
                server.inner.stop.clone(),
                admin_tls,
            ));
        }
        if options.watch_config {
            let handle = ServerHandle(Arc::clone(&server.inner));
            server._watch = Some(watch_file(&config.source, move || {
                // Errors are logged and shown on the admin API by `reload`.
                let _ = handle.reload_if_changed();
            })?);
        }
        if options.watch_config {
            server._plugin_watch = server.watch_plugins();
        }
        server.inner.ready.store(true, Ordering::Release);
        for (configured, active) in server
            .inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            tracing::info!(listener = %configured, local = %active.local, "listening");
        }
        if let Some(admin) = server.inner.admin {
            tracing::info!(%admin, "admin listening");
        }
        Ok(server)
    }

    /// Watches the plugins directory, if it exists (or can be made).
    fn watch_plugins(&self) -> Option<Watch> {
        let dir = self.inner.plugins.dir().to_path_buf();
        let uses_plugins = self
            .inner
            .shared
            .config
            .load()
            .routes
            .iter()
            .any(|r| !r.plugins.is_empty());
        let present = dir.is_dir() || (uses_plugins && std::fs::create_dir_all(&dir).is_ok());
        if !present {
            tracing::info!(dir = %dir.display(), "no plugins directory; not watching for plugins");
            return None;
        }
        let handle = self.handle();
        match watch_dir(&dir, "wasm", move |file| {
            // Errors are logged and shown on /admin/plugins by the swap itself.
            let _ = handle.reload_plugin_file(file);
        }) {
            Ok(watch) => Some(watch),
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot watch the plugins directory");
                None
            }
        }
    }

    /// A handle for reloads and inspection.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle(Arc::clone(&self.inner))
    }

    /// The bound address of each configured listener (resolves port 0).
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.handle().listener_addrs()
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin
    }

    /// Stops accepting, lets in-flight requests finish for up to the config's
    /// drain timeout, then stops. Returns whether every connection closed.
    pub async fn shutdown(&self) -> bool {
        let limit = self.inner.shared.config.load().server.drain_timeout;
        self.shutdown_within(limit).await
    }

    /// As [`Server::shutdown`] with an explicit drain limit.
    pub async fn shutdown_within(&self, limit: Duration) -> bool {
        let inner = &self.inner;
        inner.ready.store(false, Ordering::Release);
        inner.accepting.cancel();
        inner.shared.drain.cancel();
        let open = inner.shared.connections.active();
        tracing::info!(open_connections = open, limit = ?limit, "draining");
        let drained = inner.shared.connections.wait_closed(limit).await;
        if !drained {
            tracing::warn!(
                open_connections = inner.shared.connections.active(),
                "drain limit reached; closing"
            );
        }
        inner.stop.cancel();
        drained
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.inner.accepting.cancel();
        self.inner.stop.cancel();
    }
}

impl ServerHandle {
    /// The config being served.
    pub fn config(&self) -> Arc<Config> {
        self.0.shared.config.load_full()
    }

    /// The route table being served.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.0.shared.table.load_full()
    }

    /// The upstreams being served, by name.
    pub fn upstreams(&self) -> BTreeMap<String, Arc<Upstream>> {
        self.0
            .upstreams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.shared.metrics
    }

    /// The error of the last refused reload, until one is applied.
    pub fn last_reload_error(&self) -> Option<String> {
        self.0
            .last_reload_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the proxy is serving and not draining.
    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Acquire)
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.0.shared.connections.active()
    }

    /// The TLS of each TLS listener, and of the admin API, by configured address.
    pub fn tls_listeners(&self) -> Vec<(SocketAddr, Arc<ListenerTls>)> {
        let mut all: Vec<_> = self
            .0
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|(address, active)| Some((*address, active.tls.load_full()?)))
            .collect();
        all.extend(self.0.admin_tls.get().cloned());
        all
    }

    /// The bound address of each configured listener.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.0
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|l| l.local)
            .collect()
    }
}

impl Inner {
    fn add_listener(
        &self,
        configured: SocketAddr,
        sockets: Vec<std::net::TcpListener>,
        tls: Option<Arc<ListenerTls>>,
        redirect_https: Option<u16>,
    ) {
        let local = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(configured);
        let stop = self.accepting.child_token();
        let metrics = self.shared.metrics.listener(&configured.to_string());
        let certificate_watches = tls
            .as_ref()
            .map_or_else(Vec::new, listener::watch_certificates);
        let tls = Arc::new(ArcSwapOption::new(tls));
        for (socket, (handle, ctx)) in sockets.into_iter().zip(self.workers.iter().cycle()) {
            handle.spawn(listener::accept_loop(
                socket,
                Arc::clone(ctx),
                Arc::clone(&metrics),
                Arc::clone(&tls),
                redirect_https,
                stop.clone(),
            ));
        }
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                configured,
                ActiveListener {
                    local,
                    stop,
                    tls,
                    _certificate_watches: certificate_watches,
                },
            );
    }

    /// Serves `tls` (or plain HTTP) from now on, on the listener at
    /// `configured` (its TLS settings changed on reload).
    fn replace_tls(&self, configured: SocketAddr, tls: Option<Arc<ListenerTls>>) {
        if let Some(active) = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(&configured)
        {
            active._certificate_watches = tls
                .as_ref()
                .map_or_else(Vec::new, listener::watch_certificates);
            active.tls.store(tls);
        }
    }
}

/// Starts a thread running a tokio runtime until `stop` is cancelled.
/// `worker` marks a per-core worker (its index selects its pools and metric
/// shard); `threads` makes a multi-thread runtime of that many threads.
fn spawn_runtime(
    name: String,
    worker: Option<usize>,
    threads: Option<usize>,
    stop: CancellationToken,
) -> Result<Handle, StartError> {
    let what = if worker.is_some() {
        "worker"
    } else if threads.is_some() {
        "multi-thread"
    } else {
        "control"
    };
    let runtime = match threads {
        Some(threads) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name.clone())
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .map_err(|source| StartError::Runtime { what, source })?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Some(index) = worker {
                upstream::set_thread_worker(index);
                metrics::set_thread_shard(index);
            }
            runtime.block_on(stop.cancelled());
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(|source| StartError::Runtime { what, source })?;
    Ok(handle)
}

impl crate::admin::AdminView for ServerHandle {
    fn config(&self) -> Arc<Config> {
        ServerHandle::config(self)
    }
    fn routes(&self) -> Arc<RouteTable> {
        ServerHandle::routes(self)
    }
    fn upstreams(&self) -> BTreeMap<String, Arc<Upstream>> {
        ServerHandle::upstreams(self)
    }
    fn metrics(&self) -> &Metrics {
        ServerHandle::metrics(self)
    }
    fn plugins(&self) -> &PluginRegistry {
        ServerHandle::plugins(self)
    }
    fn is_ready(&self) -> bool {
        ServerHandle::is_ready(self)
    }
    fn open_connections(&self) -> usize {
        ServerHandle::open_connections(self)
    }
    fn last_reload_error(&self) -> Option<String> {
        ServerHandle::last_reload_error(self)
    }
    fn tls_listeners(&self) -> Vec<(SocketAddr, Arc<ListenerTls>)> {
        ServerHandle::tls_listeners(self)
    }
    fn reload(&self) -> Result<(), Vec<String>> {
        ServerHandle::reload(self).map_err(|error| match &error {
            ReloadError::Config(config) if !config.diagnostics().is_empty() => config
                .diagnostics()
                .iter()
                .map(ToString::to_string)
                .collect(),
            other => vec![other.to_string()],
        })
    }
}
