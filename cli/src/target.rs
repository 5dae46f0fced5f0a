//! [`ClientTarget`]: where a client command (`produce`, `consume`, `dlq`, `bench`) finds brokers,
//! through the nameservers or one standalone broker, and the [`route_source`] it makes. A leaf
//! apart from the nameserver addresses it embeds.

use std::sync::Arc;

use meridian_client::{ConnectionPool, NameserverRoute, RouteSource, StaticRoute};

use crate::nameservers::NameserverAddrs;

/// Where a client command finds brokers: through the nameservers, or one standalone broker.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientTarget {
    #[command(flatten)]
    pub nameservers: NameserverAddrs,
    /// Talk to this broker directly instead (a standalone broker, started without nameservers).
    #[arg(long = "broker", env = "MERIDIAN_BROKER_ADDR")]
    pub broker: Option<String>,
}

pub fn route_source(target: &ClientTarget, pool: &ConnectionPool) -> Arc<dyn RouteSource> {
    match &target.broker {
        Some(broker) => Arc::new(StaticRoute::new(broker.clone(), pool.clone())),
        None => Arc::new(NameserverRoute::new(
            target.nameservers.nameservers.clone(),
            pool.clone(),
        )),
    }
}

impl std::fmt::Display for ClientTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.broker {
            Some(broker) => write!(formatter, "broker {broker}"),
            None => write!(formatter, "nameservers {}", self.nameservers.nameservers.join(",")),
        }
    }
}
