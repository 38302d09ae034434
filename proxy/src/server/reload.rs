//! Config reload: re-reading the file (only when its content changed, for
//! the watcher), validating it whole, and applying it with the plugin
//! versions it needs through the snapshot builder, or refusing all of it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use crate::config::{Config, ConfigError};

use super::{ServerHandle, listener, snapshot};

/// Why a reload was refused. The running config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: io::Error,
    },
    #[error("listener {address}: {source}")]
    Tls {
        address: SocketAddr,
        source: crate::tls::ListenerTlsError,
    },
}

impl ServerHandle {
    /// Re-reads the config file and applies it if it is valid; otherwise the
    /// running config keeps serving and the error is logged and kept for
    /// `/admin/config`.
    pub fn reload(&self) -> Result<(), ReloadError> {
        self.reload_file(false)
    }

    /// Reloads the config file if its content differs from the last one
    /// loaded or refused; otherwise does nothing (the watcher's entry: an
    /// event says the file may have changed, and a refused file is reported
    /// once per distinct content).
    pub fn reload_if_changed(&self) -> Result<(), ReloadError> {
        self.reload_file(true)
    }

    /// Reads the config file once, under the reload lock: its digest is
    /// compared (`only_if_changed`) and recorded, and the same text is
    /// parsed and applied.
    fn reload_file(&self, only_if_changed: bool) -> Result<(), ReloadError> {
        let inner = &self.0;
        let _serial = inner
            .reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let source = inner.shared.config.load().source.clone();
        let text = std::fs::read_to_string(&source);
        let digest = text.as_ref().ok().map(|t| digest_of(t.as_bytes()));
        {
            let mut last = inner
                .config_digest
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if only_if_changed && digest.is_some() && *last == digest {
                return Ok(());
            }
            *last = digest;
        }
        let result = text
            .map_err(|error| {
                ReloadError::from(ConfigError::Read {
                    path: source.clone(),
                    source: error,
                })
            })
            .and_then(|text| Config::parse(&text, &source).map_err(ReloadError::from))
            .and_then(|config| self.apply(config));
        let metrics = &inner.shared.metrics;
        let mut last_error = inner
            .last_reload_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &result {
            Ok(()) => {
                metrics.reloads_applied.fetch_add(1, Ordering::Relaxed);
                *last_error = None;
                tracing::info!(config = %source.display(), "config reloaded");
            }
            Err(error) => {
                metrics.reloads_refused.fetch_add(1, Ordering::Relaxed);
                *last_error = Some(error.to_string());
                for line in error.to_string().lines() {
                    tracing::error!(config = %source.display(), "config refused, old config keeps serving: {line}");
                }
            }
        }
        result
    }

    /// Applies a validated config: all or nothing.
    fn apply(&self, config: Config) -> Result<(), ReloadError> {
        let inner = &self.0;
        let old = inner.shared.config.load_full();
        // Bind new listeners first: if one fails, nothing has changed yet.
        let current: Vec<SocketAddr> = inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        let mut bound = Vec::new();
        for address in config.listeners.iter().filter(|a| !current.contains(a)) {
            let sockets =
                listener::bind(*address, inner.sockets_per_listener).map_err(|source| {
                    ReloadError::Bind {
                        address: *address,
                        source,
                    }
                })?;
            bound.push((*address, sockets));
        }
        let mut tls = super::listener::build_listener_tls(&config)
            .map_err(|(address, source)| ReloadError::Tls { address, source })?;
        // Listeners that stay keep their TLS unless its settings changed.
        tls.retain(|address, new| {
            !current.contains(address) || old.listener_tls.get(address) != Some(new.settings())
        });
        let candidates = inner
            .plugins
            .candidates_for(&config)
            .map_err(ConfigError::Invalid)?;
        let next = snapshot::build(snapshot::Inputs {
            config: &config,
            registry: &inner.plugins,
            candidates,
            table: &inner.shared.table.load(),
            upstreams: &self.upstreams(),
            slots: inner.sockets_per_listener,
            metrics: &inner.shared.metrics,
        })?;
        if old.server != config.server
            || old.admin.as_ref().map(|a| (a.address, &a.tls))
                != config.admin.as_ref().map(|a| (a.address, &a.tls))
            || old.plugins != config.plugins
            || old.limits != config.limits
            || old.timeouts.idle != config.timeouts.idle
            || old.timeouts.header_read != config.timeouts.header_read
            || old.timeouts.body_idle != config.timeouts.body_idle
        {
            tracing::warn!(
                "[server], admin.address, admin.tls, [limits], [plugins] and timeouts.idle, header_read and body_idle apply at start-up only (the admin certificate files are reloaded when they change); restart to change them"
            );
        }
        self.publish(next);
        for (address, sockets) in bound {
            inner.add_listener(
                address,
                sockets,
                tls.remove(&address),
                config.redirect_https.get(&address).copied(),
            );
            tracing::info!(listener = %address, "listener added");
        }
        for (address, tls) in tls {
            inner.replace_tls(address, Some(tls));
            tracing::info!(listener = %address, "listener TLS settings changed");
        }
        for address in current
            .iter()
            .filter(|a| old.listener_tls.contains_key(a) && !config.listener_tls.contains_key(a))
        {
            inner.replace_tls(*address, None);
            tracing::info!(listener = %address, "listener no longer terminates TLS");
        }
        let mut listeners = inner
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|address, active| {
            let keep = config.listeners.contains(address);
            if !keep {
                // Stops accepting; open connections finish on their own.
                active.stop.cancel();
                tracing::info!(listener = %address, "listener removed");
            }
            keep
        });
        inner.shared.config.store(Arc::new(config));
        Ok(())
    }
}

/// SHA-256 of a file's bytes; `None` when it cannot be read (the reload
/// reports why).
pub(super) fn file_digest(path: &std::path::Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|bytes| digest_of(&bytes))
}

fn digest_of(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}
