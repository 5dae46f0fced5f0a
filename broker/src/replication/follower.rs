//! A slave's fetch loop: one request in flight to the master at a time, each carrying what the
//! slave holds (which acknowledges sends on the master) and returning the next raw chunk of the
//! master's commitlog, which the slave checks and appends. A long poll on the master makes an idle
//! slave cost one request per `FETCH_WAIT`, and a busy one a request per chunk, never per message.

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::RequestCode;
use meridian_proto::messages::{ReplicaFetch, ReplicaFetchResponse};
use meridian_proto::transport::{ConnectionPool, TransportConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use meridian_proto::validate::Limits;

use crate::config::ReplicationConfig;
use crate::error::{BrokerError, Result};
use crate::metrics::BrokerMetrics;
use crate::store::FlushMode;
use crate::store::MessageStore;

/// How long the master may hold a fetch when it has nothing new.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Pause after a failed fetch before the next.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// What a slave's fetch loop reads of its replication state: handed over by value when it starts
/// following, so this module does not depend on [`super::Replication`], which owns the loop.
pub(super) struct Upstream {
    pub(super) config: ReplicationConfig,
    pub(super) group: String,
    pub(super) name: String,
    pub(super) idc: String,
    pub(super) store: Arc<MessageStore>,
    pub(super) metrics: Arc<BrokerMetrics>,
    pub(super) limits: Limits,
    pub(super) shutdown: CancellationToken,
    /// The node credential this slave logs in to its master with (`[auth]`), if any.
    pub(super) node_credentials: Option<meridian_proto::auth::Credentials>,
    pub(super) tls_client: Option<Arc<meridian_proto::tls::TlsClient>>,
    /// The address it fetches from ([`meridian_proto::transport::source_ip_for`]).
    pub(super) source_ip: Option<std::net::IpAddr>,
}

/// A running fetch loop; [`Follower::stop`] ends it.
pub(super) struct Follower {
    cancel: CancellationToken,
    tracker: TaskTracker,
    pool: ConnectionPool,
}

impl Follower {
    /// Starts following the master at `master_addr` in `epoch`.
    pub fn start(replication: Arc<Upstream>, master_addr: String, epoch: u64) -> Follower {
        let cancel = replication.shutdown.child_token();
        let pool = ConnectionPool::new(TransportConfig {
            limits: replication.limits,
            request_timeout: FETCH_WAIT + Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            credentials: replication.node_credentials.clone(),
            tls: replication.tls_client.clone(),
            source_ip: replication.source_ip,
        });
        let tracker = TaskTracker::new();
        tracker.spawn(fetch_loop(
            replication,
            pool.clone(),
            master_addr,
            epoch,
            cancel.clone(),
        ));
        tracker.close();
        Follower { cancel, tracker, pool }
    }

    /// Stops the loop and waits for it: after this returns, nothing more is appended.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tracker.wait().await;
        self.pool.shutdown().await;
    }
}

async fn fetch_loop(
    replication: Arc<Upstream>,
    pool: ConnectionPool,
    master_addr: String,
    epoch: u64,
    cancel: CancellationToken,
) {
    let mut failing = false;
    loop {
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = fetch_once(&replication, &pool, &master_addr, epoch) => outcome,
        };
        match outcome {
            Ok(()) if failing => {
                info!(master = %master_addr, "replicating from the master again");
                failing = false;
            }
            Ok(()) => {}
            Err(error) => {
                replication.metrics.replication_fetch_errors.inc();
                if !failing {
                    warn!(master = %master_addr, %error, "fetch from the master failed; retrying");
                    failing = true;
                } else {
                    debug!(master = %master_addr, %error, "fetch from the master failed again");
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                }
            }
        }
    }
}

/// One fetch and what it brings: a truncation, or a chunk to append (and sync, under sync flush,
/// so the next fetch reports it synced), the master's epoch list and its consumer offsets.
async fn fetch_once(replication: &Arc<Upstream>, pool: &ConnectionPool, master_addr: &str, epoch: u64) -> Result<()> {
    let store = &replication.store;
    let from_offset = store.committed_offset();
    let request = ReplicaFetch {
        group: replication.group.clone(),
        name: replication.name.clone(),
        idc: replication.idc.clone(),
        epoch: store.seen_epoch().max(epoch),
        last_epoch: store.last_epoch(),
        from_offset,
        flushed_offset: store.flushed_offset().min(from_offset),
        max_bytes: replication.config.fetch_max_bytes,
        wait_ms: FETCH_WAIT.as_millis() as u32,
        offsets_version: store.offsets_version(),
        segment_size: store.config().segment_size,
        confirmed_offset: store.confirmed_offset(),
    };
    let response: ReplicaFetchResponse = pool
        .call(
            master_addr,
            RequestCode::ReplicaFetch,
            &request,
            FETCH_WAIT + Duration::from_secs(5),
        )
        .await
        .map_err(|error| BrokerError::ReplicationRefused(format!("fetch from {master_addr}: {error}")))?;
    if response.epoch < epoch {
        return Err(BrokerError::ReplicationRefused(format!(
            "master at {master_addr} answers for epoch {} but the group is at epoch {epoch}; refusing its data",
            response.epoch
        )));
    }
    if let Some(truncate_to) = response.truncate_to {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.truncate_to(truncate_to))
            .await
            .map_err(|join_error| BrokerError::Corrupt(format!("truncation task failed: {join_error}")))??;
        replication.metrics.replication_truncations.inc();
        return Ok(());
    }
    if !response.data.is_empty() {
        let chunk = store.clone();
        let data = response.data.clone();
        let end = tokio::task::spawn_blocking(move || chunk.append_replica(from_offset, &data))
            .await
            .map_err(|join_error| BrokerError::Corrupt(format!("append task failed: {join_error}")))??;
        if store.config().flush_mode == FlushMode::Sync {
            store.wait_flushed(end).await?;
        }
    }
    // The master confirmed these records: this slave's consumers may see them now.
    store.raise_replication_limit(response.confirmed_offset);
    replication
        .metrics
        .replication_lag_bytes
        .set(response.master_offset.saturating_sub(store.committed_offset()) as i64);
    if store.epochs_differ(&response.epochs) {
        let store = store.clone();
        let epochs = response.epochs;
        tokio::task::spawn_blocking(move || store.adopt_epochs(&epochs))
            .await
            .map_err(|join_error| BrokerError::Corrupt(format!("epoch task failed: {join_error}")))??;
    }
    if !response.consumer_offsets.is_empty() {
        store.import_offsets(response.offsets_version, &response.consumer_offsets)?;
    }
    Ok(())
}
