//! [`LagCollector`]: consumer lag computed at each `/metrics` scrape from the broker's state, under
//! Meridian's names and rocketmq-exporter's.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use super::tracker::{GroupLag, compute, now_ms};
use crate::state::BrokerState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    group: String,
    topic: String,
    queue: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
    topic: String,
    status: String,
}

/// rocketmq-exporter's labels of `rocketmq_group_diff`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
#[allow(non_snake_case)] // the exporter's label names, so its dashboards and rules match
struct ExporterDiffLabels {
    group: String,
    topic: String,
    countOfOnlineConsumers: usize,
    msgModel: &'static str,
}

/// rocketmq-exporter's labels of `rocketmq_group_get_latency_by_storetime`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExporterLatencyLabels {
    cluster: String,
    broker: String,
    topic: String,
    group: String,
}

/// Computes lag at each `/metrics` scrape: Meridian's own names per queue and group, and
/// rocketmq-exporter's `rocketmq_group_diff` and `rocketmq_group_get_latency_by_storetime`, so
/// existing RocketMQ dashboards and alert rules keep working.
#[derive(Clone)]
pub struct LagCollector {
    state: Arc<BrokerState>,
}

impl std::fmt::Debug for LagCollector {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("LagCollector")
    }
}

impl LagCollector {
    /// A collector over the broker's store, commit windows and consumer groups.
    pub fn new(state: Arc<BrokerState>) -> LagCollector {
        LagCollector { state }
    }

    /// The lag of every group on this broker now ([`compute`]).
    pub fn report(&self) -> Vec<GroupLag> {
        compute(&self.state.store, &self.state.lag, now_ms())
    }
}

impl Collector for LagCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = &self.state;
        let lags = self.report();
        let gauge = ConstGauge::new(0_i64);
        let mut queue_messages = encoder.encode_descriptor(
            "meridian_broker_consumer_lag_messages",
            "Messages stored and not yet consumed, by group, topic and queue",
            None,
            gauge.metric_type(),
        )?;
        for lag in &lags {
            for queue in &lag.queues {
                let labels = QueueLabels {
                    group: lag.group.clone(),
                    topic: lag.topic.clone(),
                    queue: queue.queue_id,
                };
                ConstGauge::new(queue.lag_messages as i64).encode(queue_messages.encode_family(&labels)?)?;
            }
        }
        let mut queue_seconds = encoder.encode_descriptor(
            "meridian_broker_consumer_lag_seconds",
            "Age of the oldest message not yet consumed (from its store time), by group, topic and queue",
            None,
            gauge.metric_type(),
        )?;
        for lag in &lags {
            for queue in &lag.queues {
                let labels = QueueLabels {
                    group: lag.group.clone(),
                    topic: lag.topic.clone(),
                    queue: queue.queue_id,
                };
                ConstGauge::new(queue.lag_ms as f64 / 1000.0).encode(queue_seconds.encode_family(&labels)?)?;
            }
        }
        let mut status = encoder.encode_descriptor(
            "meridian_broker_consumer_status",
            "1 for each group and topic with its Burrow-style status (OK, WARN, REWIND, STALL, STOP) as a label",
            None,
            gauge.metric_type(),
        )?;
        for lag in &lags {
            let labels = GroupLabels {
                group: lag.group.clone(),
                topic: lag.topic.clone(),
                status: lag.status.as_str().to_owned(),
            };
            ConstGauge::new(1_i64).encode(status.encode_family(&labels)?)?;
        }
        let now = std::time::Instant::now();
        let mut diff = encoder.encode_descriptor(
            "rocketmq_group_diff",
            "rocketmq-exporter name: messages not yet consumed, by group and topic",
            None,
            gauge.metric_type(),
        )?;
        for lag in &lags {
            let group_name = lag.group.split('%').next().unwrap_or_default();
            let broadcasting = state
                .governance
                .as_ref()
                .and_then(|governance| governance.group(group_name))
                .is_some_and(|grant| grant.broadcasting);
            let labels = ExporterDiffLabels {
                group: lag.group.clone(),
                topic: lag.topic.clone(),
                countOfOnlineConsumers: state.groups.members(group_name, now).len(),
                msgModel: if broadcasting { "BROADCASTING" } else { "CLUSTERING" },
            };
            ConstGauge::new(lag.lag_messages as i64).encode(diff.encode_family(&labels)?)?;
        }
        let mut latency = encoder.encode_descriptor(
            "rocketmq_group_get_latency_by_storetime",
            "rocketmq-exporter name: age in ms of the oldest message not yet consumed, by group and topic",
            None,
            gauge.metric_type(),
        )?;
        for lag in &lags {
            let labels = ExporterLatencyLabels {
                cluster: "meridian".to_owned(),
                broker: state.config.broker_name.clone(),
                topic: lag.topic.clone(),
                group: lag.group.clone(),
            };
            ConstGauge::new(lag.lag_ms as i64).encode(latency.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
