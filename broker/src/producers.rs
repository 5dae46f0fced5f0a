//! Producers' own reports of themselves ([`ProducerHeartbeat`]): send latency and message sizes,
//! kept per producer until it stops reporting for [`PRODUCER_EXPIRY`], and shown by
//! `GET /api/broker/clients` ([`crate::clients`]) with p50/p99 and, for producers sending
//! messages over their large-message threshold, the count and a hint to compress. The alert
//! evaluator's `large_messages` rule reads it. Start at [`ProducerReports::heartbeat`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_proto::client_stats::{ClientStats, percentile};
use meridian_proto::messages::ProducerHeartbeat;
use meridian_proto::validate;
use prost::Message;
use serde::Serialize;

use crate::error::{BrokerError, Result};

/// A producer silent this long is forgotten.
pub const PRODUCER_EXPIRY: Duration = Duration::from_secs(60);

/// At most this many producers are kept; a new one beyond it replaces the longest silent.
pub const MAX_PRODUCERS: usize = 10_000;

#[derive(Debug, Clone)]
struct Reported {
    peer: SocketAddr,
    group: String,
    sdk: String,
    idc: String,
    topics: Vec<String>,
    stats: ClientStats,
    last_seen: Instant,
    /// When its count of large messages last grew.
    large_grew: Option<Instant>,
}

/// One producer as `GET /api/broker/clients` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProducerStatsEntry {
    /// Its client id.
    pub client_id: String,
    /// Its producer group; empty when it has none.
    pub group: String,
    /// The IP address it connects from.
    pub host: String,
    /// Its data center; empty when unknown.
    pub idc: String,
    /// `language/version` of its SDK.
    pub sdk: String,
    /// Topics it sent to (the first 64), sorted.
    pub topics: Vec<String>,
    /// Sends it timed since it started.
    pub sends: u64,
    /// Median send latency (µs, upper bound of its power-of-two bucket), since it started.
    pub send_p50_us: Option<u64>,
    /// 99th percentile send latency (µs), since it started.
    pub send_p99_us: Option<u64>,
    /// Median message size in bytes.
    pub message_p50_bytes: Option<u64>,
    /// The size over which it counts a message as large.
    pub large_threshold_bytes: u64,
    /// Messages over that size since it started.
    pub large_messages: u64,
    /// Its largest message, in bytes.
    pub largest_message_bytes: u64,
    /// Time since its count of large messages last grew, in ms; `null` when it never did here.
    pub last_large_ago_ms: Option<u64>,
    /// What to do about large messages, when it sends them.
    pub hint: Option<String>,
    /// Why its SDK breaks the cluster's SDK policy; `None` when it complies (or the broker has
    /// no policy: a standalone broker). Set by [`crate::clients::ClientsView::report`].
    pub sdk_violation: Option<String>,
}

/// The producers reporting to this broker.
#[derive(Debug, Default)]
pub struct ProducerReports {
    producers: Mutex<HashMap<String, Reported>>,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl ProducerReports {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Reported>> {
        self.producers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a producer's report, which came over the connection from `peer`.
    pub fn heartbeat(&self, request: ProducerHeartbeat, peer: SocketAddr, now: Instant) {
        let stats = request.stats.unwrap_or_default();
        let mut producers = self.lock();
        producers.retain(|_, reported| now.saturating_duration_since(reported.last_seen) <= PRODUCER_EXPIRY);
        let large_grew = match producers.get(&request.client_id) {
            Some(before) if stats.large_messages > before.stats.large_messages => Some(now),
            Some(before) => before.large_grew,
            None => (stats.large_messages > 0).then_some(now),
        };
        if producers.len() >= MAX_PRODUCERS && !producers.contains_key(&request.client_id) {
            let silent = producers
                .iter()
                .min_by_key(|(_, reported)| reported.last_seen)
                .map(|(client_id, _)| client_id.clone());
            if let Some(silent) = silent {
                producers.remove(&silent);
            }
        }
        producers.insert(
            request.client_id,
            Reported {
                peer,
                group: request.group,
                sdk: request.sdk,
                idc: request.idc,
                topics: request.topics,
                stats,
                last_seen: now,
                large_grew,
            },
        );
    }

    /// Every producer heard within [`PRODUCER_EXPIRY`], by client id.
    pub fn report(&self, now: Instant) -> Vec<ProducerStatsEntry> {
        let producers = self.lock();
        let mut entries: Vec<ProducerStatsEntry> = producers
            .iter()
            .filter(|(_, reported)| now.saturating_duration_since(reported.last_seen) <= PRODUCER_EXPIRY)
            .map(|(client_id, reported)| {
                let stats = &reported.stats;
                let hint = (stats.large_messages > 0).then(|| {
                    format!(
                        "{} messages over {} bytes (largest {} bytes): compress the bodies in the application (gzip, zstd), or store the payload elsewhere and send a reference",
                        stats.large_messages, stats.large_threshold_bytes, stats.largest_message_bytes
                    )
                });
                ProducerStatsEntry {
                    client_id: client_id.clone(),
                    group: reported.group.clone(),
                    host: reported.peer.ip().to_string(),
                    idc: reported.idc.clone(),
                    sdk: reported.sdk.clone(),
                    topics: reported.topics.clone(),
                    sends: stats.send_latency_us.iter().sum(),
                    send_p50_us: percentile(&stats.send_latency_us, 0.5),
                    send_p99_us: percentile(&stats.send_latency_us, 0.99),
                    message_p50_bytes: percentile(&stats.message_bytes, 0.5),
                    large_threshold_bytes: stats.large_threshold_bytes,
                    large_messages: stats.large_messages,
                    largest_message_bytes: stats.largest_message_bytes,
                    last_large_ago_ms: reported
                        .large_grew
                        .map(|grew| millis(now.saturating_duration_since(grew))),
                    hint,
                    sdk_violation: None,
                }
            })
            .collect();
        entries.sort_by(|left, right| left.client_id.cmp(&right.client_id));
        entries
    }
}

/// Handles [`meridian_proto::RequestCode::ProducerHeartbeat`].
pub fn producer_heartbeat(producers: &ProducerReports, body: Bytes, peer: SocketAddr) -> Result<Bytes> {
    let mut request = ProducerHeartbeat::decode(body)
        .map_err(|error| BrokerError::MalformedBody(format!("producer heartbeat: {error}")))?;
    validate::validate_client_id(&request.client_id)?;
    request.topics.truncate(64);
    for topic in &request.topics {
        validate::validate_topic(topic)?;
    }
    request.topics.sort();
    if let Some(stats) = &request.stats {
        stats
            .validate_buckets()
            .map_err(|error| BrokerError::MalformedBody(format!("producer heartbeat: {error}")))?;
    }
    producers.heartbeat(request, peer, Instant::now());
    Ok(Bytes::new())
}

#[cfg(test)]
mod tests {
    use meridian_proto::client_stats::BUCKETS;

    use super::*;

    fn report(client_id: &str, large_messages: u64) -> ProducerHeartbeat {
        let mut send_latency_us = vec![0; BUCKETS];
        send_latency_us[11] = 99; // ~1-2 ms
        send_latency_us[17] = 1; // ~65-131 ms
        ProducerHeartbeat {
            client_id: client_id.into(),
            group: "shop".into(),
            sdk: "rust/0.1.0".into(),
            idc: "dc1".into(),
            topics: vec!["orders".into()],
            stats: Some(ClientStats {
                send_latency_us,
                large_threshold_bytes: 10_240,
                large_messages,
                largest_message_bytes: if large_messages > 0 { 20_480 } else { 100 },
                ..ClientStats::default()
            }),
        }
    }

    #[test]
    fn producers_show_percentiles_and_large_messages_with_a_hint_and_expire() {
        let reports = ProducerReports::default();
        let peer = SocketAddr::from(([127, 0, 0, 1], 4000));
        let start = Instant::now();
        reports.heartbeat(report("small", 0), peer, start);
        reports.heartbeat(report("large", 3), peer, start);
        let listed = reports.report(start + Duration::from_secs(1));
        assert_eq!(listed.len(), 2);
        let (large, small) = (&listed[0], &listed[1]);
        assert_eq!(small.send_p50_us, Some(2_047));
        assert_eq!(small.send_p99_us, Some(2_047));
        assert_eq!(small.sends, 100);
        assert_eq!((small.large_messages, small.hint.as_deref()), (0, None));
        assert_eq!(large.last_large_ago_ms, Some(1_000));
        assert!(large.hint.as_deref().unwrap().contains("3 messages over 10240 bytes"));
        // Still 3 large messages a while later: it stopped sending them.
        reports.heartbeat(report("large", 3), peer, start + Duration::from_secs(5));
        let listed = reports.report(start + Duration::from_secs(6));
        assert_eq!(listed[0].last_large_ago_ms, Some(6_000));
        reports.heartbeat(report("large", 4), peer, start + Duration::from_secs(7));
        assert_eq!(
            reports.report(start + Duration::from_secs(7))[0].last_large_ago_ms,
            Some(0)
        );
        assert!(
            reports
                .report(start + PRODUCER_EXPIRY + Duration::from_secs(8))
                .is_empty()
        );
    }
}
