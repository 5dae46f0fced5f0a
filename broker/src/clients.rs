//! The clients a broker knows, for `meridian client list` and `GET /api/broker/clients`: every
//! live consumer with the SDK it reported and the policy's verdict on it, and the producers whose
//! SDK broke the policy recently (compliant producers are not tracked: that would cost every send).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::state::BrokerState;

/// How long a producer that broke the SDK policy stays listed after its last send.
pub const FLAGGED_PRODUCER_TTL: Duration = Duration::from_secs(600);

/// One consumer and the policy's verdict on its SDK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientEntry {
    /// `consumer` or `producer`.
    pub kind: &'static str,
    /// Its consumer group (empty for a producer).
    pub group: String,
    /// Its client id, or a producer's address.
    pub client_id: String,
    /// Its data center; empty when unknown.
    pub idc: String,
    /// SDK language.
    pub sdk_language: String,
    /// SDK version; empty when it reported none.
    pub sdk_version: String,
    /// `null` when it complies, else what is wrong and what to do.
    pub sdk_violation: Option<String>,
}

/// The clients of one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientsReport {
    /// Whether the policy refuses offenders (they are only flagged otherwise).
    pub refuse: bool,
    /// Consumers, then flagged producers.
    pub clients: Vec<ClientEntry>,
}

/// Builds [`ClientsReport`]s of a running broker.
#[derive(Clone)]
pub struct ClientsView {
    state: Arc<BrokerState>,
}

impl ClientsView {
    /// A view over the broker's groups and governance.
    pub fn new(state: Arc<BrokerState>) -> ClientsView {
        ClientsView { state }
    }

    /// The clients now.
    pub fn report(&self) -> ClientsReport {
        let governance = self.state.governance.as_ref();
        let judge = |language: &str, version: &str| {
            governance.and_then(|governance| {
                governance
                    .judge_sdk(language, version)
                    .err()
                    .map(|violation| violation.to_string())
            })
        };
        let mut clients: Vec<ClientEntry> = self
            .state
            .groups
            .all(Instant::now())
            .into_iter()
            .map(|(group, client_id, info)| ClientEntry {
                kind: "consumer",
                sdk_violation: judge(&info.sdk_language, &info.sdk_version),
                group,
                client_id,
                idc: info.idc,
                sdk_language: info.sdk_language,
                sdk_version: info.sdk_version,
            })
            .collect();
        for (peer, sdk) in governance.map_or_else(Vec::new, |governance| {
            governance.flagged_producers(FLAGGED_PRODUCER_TTL)
        }) {
            let (language, version) = meridian_proto::sdk::split_sdk(&sdk);
            clients.push(ClientEntry {
                kind: "producer",
                group: String::new(),
                client_id: peer.to_string(),
                idc: String::new(),
                sdk_language: language.to_owned(),
                sdk_version: version.to_owned(),
                sdk_violation: judge(language, version),
            });
        }
        ClientsReport {
            refuse: governance.is_some_and(|governance| governance.sdk_policy().refuse),
            clients,
        }
    }
}
