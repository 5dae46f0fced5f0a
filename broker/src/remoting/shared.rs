//! What the remoting connections share: the broker's state, the address RocketMQ clients use, and
//! the connections of consumers and producers by group (for broker-initiated requests).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use meridian_proto::remoting::RemotingCommand;
use meridian_proto::remoting::codes::request;
use tokio::sync::mpsc;

use crate::state::BrokerState;

/// A group's RocketMQ members: client id → its connection's peer and writer.
type Members = HashMap<String, (SocketAddr, mpsc::Sender<RemotingCommand>)>;

/// Connections of RocketMQ consumers by group, for broker-initiated requests.
#[derive(Default)]
pub struct Clients {
    groups: Mutex<HashMap<String, Members>>,
    pub(super) opaque: AtomicI32,
}

impl Clients {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Members>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers that `client_id` of `group` talks over this connection.
    pub(super) fn register(
        &self,
        group: &str,
        client_id: &str,
        peer: SocketAddr,
        sender: &mpsc::Sender<RemotingCommand>,
    ) {
        self.lock()
            .entry(group.to_owned())
            .or_default()
            .insert(client_id.to_owned(), (peer, sender.clone()));
    }

    pub(super) fn forget(&self, group: &str, client_id: &str) {
        if let Some(members) = self.lock().get_mut(group) {
            members.remove(client_id);
        }
    }

    pub(super) fn forget_peer(&self, peer: SocketAddr) {
        for members in self.lock().values_mut() {
            members.retain(|_, (member_peer, _)| *member_peer != peer);
        }
    }

    /// One connection of `group`'s members, if any is connected.
    pub(super) fn any(&self, group: &str) -> Option<(String, mpsc::Sender<RemotingCommand>)> {
        self.lock()
            .get(group)?
            .iter()
            .find(|(_, (_, sender))| !sender.is_closed())
            .map(|(client_id, (_, sender))| (client_id.clone(), sender.clone()))
    }

    pub(super) fn groups(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, members)| !members.is_empty())
            .map(|(group, _)| group.clone())
            .collect()
    }

    /// Tells every RocketMQ member of `group` that its members changed, so it rebalances now
    /// (one-way `NOTIFY_CONSUMER_IDS_CHANGED`, as the Java broker sends).
    pub fn notify_changed(&self, group: &str) {
        let senders: Vec<mpsc::Sender<RemotingCommand>> = self
            .lock()
            .get(group)
            .map(|members| members.values().map(|(_, sender)| sender.clone()).collect())
            .unwrap_or_default();
        for sender in senders {
            let opaque = self.opaque.fetch_add(1, Ordering::Relaxed);
            let mut notify =
                RemotingCommand::request(request::NOTIFY_CONSUMER_IDS_CHANGED, opaque).with("consumerGroup", group);
            notify.flag = meridian_proto::remoting::command::FLAG_ONEWAY;
            // A full queue means the client is not reading: it rebalances on its 20 s timer.
            let _ = sender.try_send(notify);
        }
    }
}

/// What the remoting connections share.
pub struct Remoting {
    /// The broker's state: every request ends in its handlers.
    pub state: Arc<BrokerState>,
    /// Address RocketMQ clients use for this broker (store host of offset msgIds).
    pub advertise: SocketAddr,
    /// Consumers' connections by group.
    pub clients: Clients,
    /// Producers' connections by producer group, for transaction check-backs.
    pub producers: Clients,
    /// Half messages (commitlog offsets of the copies) already asked about.
    pub asked: Mutex<std::collections::HashSet<u64>>,
    /// Subscriptions RocketMQ consumers registered by heartbeat, by (group, topic): the
    /// expression type (`TAG` or `SQL92`) and the expression.
    pub subscriptions: Mutex<HashMap<(String, String), (String, String)>>,
    /// AccessKey signature checks; `None` when `[auth]` is off.
    pub access: Option<super::access::AccessCheck>,
}
