//! DNS discovery: the A and AAAA records of a name, each address an endpoint
//! on the configured port. Re-resolved when the records' TTL runs out or
//! after `interval`, whichever comes first (the resolver's cache is capped
//! at `interval`, so a long TTL cannot hold a stale answer longer).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio_util::sync::CancellationToken;

use super::{DiscoveryError, Publisher};
use crate::config::EndpointSpec;

/// What to resolve.
pub(super) struct Target {
    pub name: String,
    pub port: u16,
    pub interval: Duration,
    /// Empty: the system's resolver configuration.
    pub nameservers: Vec<SocketAddr>,
}

/// The shortest pause between lookups, so a zero TTL cannot spin.
const MIN_PAUSE: Duration = Duration::from_millis(200);

/// Resolves until `stop` is cancelled or the upstream is gone.
pub(super) async fn run(publisher: Publisher, target: Target, stop: CancellationToken) {
    let resolver = match resolver(&target) {
        Ok(resolver) => resolver,
        Err(error) => {
            publisher.failed(&error);
            return;
        }
    };
    let mut last: Option<Vec<IpAddr>> = None;
    loop {
        let pause = match resolver.lookup_ip(target.name.as_str()).await {
            Ok(lookup) => {
                let mut addresses: Vec<IpAddr> = lookup.iter().collect();
                addresses.sort_unstable();
                addresses.dedup();
                if last.as_ref() != Some(&addresses) {
                    let specs = specs(&addresses, target.port);
                    if !publisher.publish(&specs) {
                        return;
                    }
                    last = Some(addresses);
                }
                lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now())
                    .min(target.interval)
            }
            Err(error) => {
                let error = DiscoveryError::Dns {
                    name: target.name.clone(),
                    message: error.to_string(),
                };
                if !publisher.failed(&error) {
                    return;
                }
                target.interval.min(Duration::from_secs(5))
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause.max(MIN_PAUSE)) => {}
        }
        if !publisher.alive() {
            return;
        }
    }
}

fn specs(addresses: &[IpAddr], port: u16) -> Vec<EndpointSpec> {
    addresses
        .iter()
        .filter_map(|ip| {
            let address = SocketAddr::new(*ip, port).to_string().parse().ok()?;
            Some(EndpointSpec::new(address))
        })
        .collect()
}

fn resolver(target: &Target) -> Result<Resolver<TokioRuntimeProvider>, DiscoveryError> {
    let failed = |message: String| DiscoveryError::Dns {
        name: target.name.clone(),
        message,
    };
    let mut builder = if target.nameservers.is_empty() {
        Resolver::builder(TokioRuntimeProvider::default()).map_err(|e| failed(e.to_string()))?
    } else {
        let servers = target
            .nameservers
            .iter()
            .map(|server| {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                NameServerConfig::new(server.ip(), true, vec![udp, tcp])
            })
            .collect();
        Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.positive_max_ttl = Some(target.interval);
    // A failed lookup is retried on our own schedule, not cached.
    options.negative_max_ttl = Some(Duration::from_secs(1));
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    builder.build().map_err(|e| failed(e.to_string()))
}
