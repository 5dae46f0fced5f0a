//! Alerts as the nameservers agree on them: one record per de-duplication key (rule + subject),
//! firing or resolved, with when it first fired, when it last changed and its history. The
//! evaluator on the Raft leader ([`crate::alerts`]) writes a [`super::Command::RecordAlert`] only
//! when an alert changes state, so a new leader knows what already fired and neither fires it
//! again nor forgets to resolve it.
//!
//! Pure code, over the alert map [`super::MetadataState`] lends it for one command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::CommandError;

/// Alerts as clients read them, defined in the admin contract.
pub use meridian_proto::admin::{Alert, AlertChange, AlertStatus};

/// Changes kept per alert; older ones are dropped.
pub const ALERT_HISTORY_LEN: usize = 32;

/// Alerts kept at most; beyond it, the resolved alerts that changed longest ago are dropped.
pub const MAX_ALERTS: usize = 1_000;

/// What the evaluator reports about one rule and subject ([`super::Command::RecordAlert`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertUpdate {
    /// Rule name.
    pub rule: String,
    /// What the alert is about, e.g. `group=billing topic=orders` or `broker=broker-a/b0`.
    pub subject: String,
    /// The rule's severity.
    pub severity: String,
    /// Who is told: the owner of the topic or group (empty: nobody in particular).
    #[serde(default)]
    pub owner: String,
    /// The new status.
    pub status: AlertStatus,
    /// What the evaluator saw.
    pub message: String,
}

/// The de-duplication key of a rule and subject.
pub fn alert_key(rule: &str, subject: &str) -> String {
    format!("{rule}/{subject}")
}

/// Records `update` at `now_ms`. Refused when it changes nothing (the alert already has that
/// status, or a resolution of an alert never fired), so a repeated write after a leader change
/// cannot notify twice.
pub fn record(alerts: &mut BTreeMap<String, Alert>, now_ms: u64, update: AlertUpdate) -> Result<Alert, CommandError> {
    if update.rule.trim().is_empty() || update.subject.trim().is_empty() {
        return Err(CommandError::Invalid {
            message: "an alert needs a rule and a subject".into(),
        });
    }
    let key = alert_key(&update.rule, &update.subject);
    let change = AlertChange {
        at_ms: now_ms,
        status: update.status,
        message: update.message.clone(),
    };
    match alerts.get_mut(&key) {
        Some(alert) if alert.status == update.status => Err(CommandError::Invalid {
            message: format!("alert {key} is already {}", update.status.as_str()),
        }),
        Some(alert) => {
            alert.status = update.status;
            alert.message = update.message;
            alert.severity = update.severity;
            if !update.owner.is_empty() {
                alert.owner = update.owner;
            }
            alert.last_change_ms = now_ms;
            if update.status == AlertStatus::Firing {
                alert.first_fired_ms = now_ms;
            }
            alert.history.push(change);
            if alert.history.len() > ALERT_HISTORY_LEN {
                alert.history.remove(0);
            }
            Ok(alert.clone())
        }
        None if update.status == AlertStatus::Resolved => Err(CommandError::Invalid {
            message: format!("alert {key} never fired, so it cannot resolve"),
        }),
        None => {
            let alert = Alert {
                key: key.clone(),
                rule: update.rule,
                subject: update.subject,
                severity: update.severity,
                owner: update.owner,
                status: update.status,
                message: update.message,
                first_fired_ms: now_ms,
                last_change_ms: now_ms,
                history: vec![change],
            };
            alerts.insert(key, alert.clone());
            prune(alerts);
            Ok(alert)
        }
    }
}

// Drops the resolved alerts that changed longest ago while there are more than MAX_ALERTS.
fn prune(alerts: &mut BTreeMap<String, Alert>) {
    while alerts.len() > MAX_ALERTS {
        let oldest = alerts
            .values()
            .filter(|alert| alert.status == AlertStatus::Resolved)
            .min_by_key(|alert| (alert.last_change_ms, alert.key.clone()))
            .map(|alert| alert.key.clone());
        match oldest {
            Some(key) => alerts.remove(&key),
            None => break,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(status: AlertStatus) -> AlertUpdate {
        AlertUpdate {
            rule: "group_lag".into(),
            subject: "group=billing topic=orders".into(),
            severity: "warning".into(),
            owner: "alice".into(),
            status,
            message: "lag 40".into(),
        }
    }

    #[test]
    fn an_alert_fires_resolves_and_fires_again_with_its_history() {
        let mut alerts = BTreeMap::new();
        let fired = record(&mut alerts, 10, update(AlertStatus::Firing)).unwrap();
        assert_eq!(fired.key, "group_lag/group=billing topic=orders");
        assert_eq!((fired.first_fired_ms, fired.owner.as_str()), (10, "alice"));
        let again = record(&mut alerts, 11, update(AlertStatus::Firing)).unwrap_err();
        assert!(again.to_string().contains("already firing"), "{again}");
        let resolved = record(&mut alerts, 20, update(AlertStatus::Resolved)).unwrap();
        assert_eq!(resolved.status, AlertStatus::Resolved);
        let refired = record(&mut alerts, 30, update(AlertStatus::Firing)).unwrap();
        assert_eq!(refired.first_fired_ms, 30);
        assert_eq!(
            refired.history.iter().map(|change| change.at_ms).collect::<Vec<_>>(),
            [10, 20, 30]
        );
        assert_eq!(alerts.len(), 1, "one record per rule and subject");
    }

    #[test]
    fn resolving_an_alert_that_never_fired_is_refused() {
        let mut alerts = BTreeMap::new();
        let error = record(&mut alerts, 1, update(AlertStatus::Resolved)).unwrap_err();
        assert!(error.to_string().contains("never fired"), "{error}");
        assert!(alerts.is_empty());
    }

    #[test]
    fn history_and_the_number_of_alerts_are_bounded() {
        let mut alerts = BTreeMap::new();
        for round in 0..40u64 {
            let status = if round % 2 == 0 {
                AlertStatus::Firing
            } else {
                AlertStatus::Resolved
            };
            record(&mut alerts, round, update(status)).unwrap();
        }
        assert_eq!(alerts.values().next().unwrap().history.len(), ALERT_HISTORY_LEN);
        for index in 0..MAX_ALERTS as u64 + 5 {
            let mut fired = update(AlertStatus::Firing);
            fired.subject = format!("broker={index}");
            record(&mut alerts, 100 + index, fired.clone()).unwrap();
            fired.status = AlertStatus::Resolved;
            record(&mut alerts, 100 + index, fired).unwrap();
        }
        assert_eq!(alerts.len(), MAX_ALERTS);
    }
}
