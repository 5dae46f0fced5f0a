//! Governance: topics and consumer groups, requested with an owner, then approved or rejected,
//! changed and deleted, each step appended to their history (who, when, what, why), which is
//! never rewritten, even when the topic or group is deleted.
//!
//! Topics and groups share one approval record ([`Approval`]) and one flow: [`Governance::decide`]
//! approves or rejects either, and requests and deletions go through the same checks. Pure code,
//! over the maps [`super::MetadataState`] lends it for one command.

use std::collections::BTreeMap;

use meridian_proto::validate::{validate_group, validate_queue_count, validate_topic};

use super::approval::{Approval, ApprovalStatus, Decision, DecisionAction, Subject};
use super::error::{CommandError, require_person, require_reason};

/// The records and requests of the admin contract; the rules over them are below.
pub use meridian_proto::admin::{
    ConsumeMode, ConsumerGroup, DEFAULT_MAX_RETRIES, GroupRequest, PERM_READ, PERM_READ_WRITE, PERM_WRITE,
    ProduceLimitChange, Topic, TopicChanges, TopicRequest,
};

/// The governed part of the metadata, lent by [`super::MetadataState::apply`] for one command.
/// A command that fails changes nothing: every check runs before the first change.
pub(super) struct Governance<'a> {
    pub(super) topics: &'a mut BTreeMap<String, Topic>,
    pub(super) consumer_groups: &'a mut BTreeMap<String, ConsumerGroup>,
    pub(super) topic_history: &'a mut BTreeMap<String, Vec<Decision>>,
    pub(super) group_history: &'a mut BTreeMap<String, Vec<Decision>>,
}

impl Governance<'_> {
    /// Requests a topic (or requests a rejected one again).
    pub(super) fn request_topic(&mut self, now_ms: u64, request: TopicRequest) -> Result<Topic, CommandError> {
        validate_topic(&request.name)?;
        if meridian_proto::topics::is_system(&request.name) {
            return Err(CommandError::Invalid {
                message: format!(
                    "topic name {:?} is reserved for a system topic (trace, delay or transaction), which every broker creates by itself and needs no approval; choose another name",
                    request.name
                ),
            });
        }
        require_person("owner", &request.owner)?;
        require_person("requested_by", &request.requested_by)?;
        validate_queues(&request.queues)?;
        validate_perm(request.perm)?;
        validate_produce_limit(request.produce_limit)?;
        self.check_new_request(Subject::Topic, &request.name)?;
        let topic = Topic {
            name: request.name.clone(),
            queues: request.queues,
            perm: request.perm,
            owner: request.owner.clone(),
            description: request.description,
            approval: Approval::requested(request.requested_by.clone(), now_ms),
            produce_limit: request.produce_limit,
        };
        self.topics.insert(request.name.clone(), topic.clone());
        self.record_request(
            Subject::Topic,
            request.name,
            request.requested_by,
            &request.owner,
            now_ms,
        );
        Ok(topic)
    }

    /// Requests a consumer group (or requests a rejected one again); its topics must exist and
    /// not be rejected.
    pub(super) fn request_group(&mut self, now_ms: u64, request: GroupRequest) -> Result<ConsumerGroup, CommandError> {
        validate_group(&request.name)?;
        require_person("owner", &request.owner)?;
        require_person("requested_by", &request.requested_by)?;
        if request.topics.is_empty() {
            return Err(CommandError::Invalid {
                message: format!(
                    "consumer group {:?} subscribes to no topic: name at least one topic",
                    request.name
                ),
            });
        }
        for topic in &request.topics {
            validate_topic(topic)?;
            match self.topics.get(topic) {
                None => {
                    return Err(CommandError::NotFound {
                        subject: Subject::Topic,
                        name: topic.clone(),
                    });
                }
                Some(existing) if existing.approval.status == ApprovalStatus::Rejected => {
                    return Err(CommandError::TopicNotApproved {
                        group: request.name,
                        topic: topic.clone(),
                        status: existing.approval.status,
                    });
                }
                Some(_) => {}
            }
        }
        self.check_new_request(Subject::Group, &request.name)?;
        let group = ConsumerGroup {
            name: request.name.clone(),
            owner: request.owner.clone(),
            description: request.description,
            topics: request.topics,
            approval: Approval::requested(request.requested_by.clone(), now_ms),
            max_retries: request.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            consume_mode: request.consume_mode,
        };
        self.consumer_groups.insert(request.name.clone(), group.clone());
        self.record_request(
            Subject::Group,
            request.name,
            request.requested_by,
            &request.owner,
            now_ms,
        );
        Ok(group)
    }

    /// Approves or rejects a requested topic or group. Approving needs a topic placed on a
    /// broker group, and a group whose topics are all approved.
    pub(super) fn decide(
        &mut self,
        now_ms: u64,
        subject: Subject,
        name: String,
        decided_by: String,
        action: DecisionAction,
        reason: Option<String>,
    ) -> Result<(), CommandError> {
        require_person("decided_by", &decided_by)?;
        let reason = reason.filter(|reason| !reason.trim().is_empty());
        if action == DecisionAction::Rejected && reason.is_none() {
            return Err(CommandError::Invalid {
                message: format!("rejecting {subject} {name:?} needs a reason: say why, so its owner can act on it"),
            });
        }
        let status = match action {
            DecisionAction::Approved => ApprovalStatus::Approved,
            _ => ApprovalStatus::Rejected,
        };
        let approval = self.approval(subject, &name)?;
        if approval.status != ApprovalStatus::Requested {
            return Err(CommandError::AlreadyDecided {
                subject,
                name,
                status: approval.status,
                decided_by: approval.decided_by.clone().unwrap_or_default(),
                decided_at_ms: approval.decided_at_ms.unwrap_or_default(),
                reason: approval.decision_reason.clone(),
                attempted: action,
            });
        }
        if action == DecisionAction::Approved {
            self.check_approvable(subject, &name)?;
        }
        let decision = Decision {
            at_ms: now_ms,
            by: decided_by.clone(),
            action,
            reason: reason.clone(),
            detail: None,
        };
        let approval = match subject {
            Subject::Topic => &mut self.topics.get_mut(&name).expect("checked above").approval,
            Subject::Group => &mut self.consumer_groups.get_mut(&name).expect("checked above").approval,
        };
        approval.decide(status, decided_by, now_ms, reason);
        self.history(subject).entry(name).or_default().push(decision);
        Ok(())
    }

    /// Changes a topic's placement, permissions, produce limit, owner or description.
    pub(super) fn update_topic(
        &mut self,
        now_ms: u64,
        name: String,
        updated_by: String,
        reason: Option<String>,
        changes: TopicChanges,
    ) -> Result<Topic, CommandError> {
        require_person("updated_by", &updated_by)?;
        let topic = self.topics.get(&name).ok_or_else(|| CommandError::NotFound {
            subject: Subject::Topic,
            name: name.clone(),
        })?;
        if let Some(queues) = &changes.queues {
            validate_queues(queues)?;
            if queues.is_empty() && topic.approval.status == ApprovalStatus::Approved {
                return Err(CommandError::Invalid {
                    message: format!(
                        "topic {name:?} is approved and needs queues on at least one broker group; delete it to take it out of service"
                    ),
                });
            }
        }
        if let Some(perm) = changes.perm {
            validate_perm(perm)?;
        }
        if let ProduceLimitChange::Set(limit) = changes.produce_limit {
            validate_produce_limit(Some(limit))?;
        }
        if let Some(owner) = &changes.owner {
            require_person("owner", owner)?;
        }

        let mut detail = Vec::new();
        let topic = self.topics.get_mut(&name).expect("checked above");
        if let Some(queues) = changes.queues
            && queues != topic.queues
        {
            let placement: Vec<String> = queues.iter().map(|(group, count)| format!("{group}={count}")).collect();
            detail.push(format!("queues {}", placement.join(",")));
            topic.queues = queues;
        }
        if let Some(perm) = changes.perm
            && perm != topic.perm
        {
            detail.push(format!("perm {}->{}", topic.perm, perm));
            topic.perm = perm;
        }
        let produce_limit = match changes.produce_limit {
            ProduceLimitChange::Keep => topic.produce_limit,
            ProduceLimitChange::Set(limit) => Some(limit),
            ProduceLimitChange::Remove => None,
        };
        if produce_limit != topic.produce_limit {
            detail.push(match produce_limit {
                Some(limit) => format!("produce limit {limit} msgs/s"),
                None => "no produce limit".to_owned(),
            });
            topic.produce_limit = produce_limit;
        }
        if let Some(owner) = changes.owner
            && owner != topic.owner
        {
            detail.push(format!("owner {}->{}", topic.owner, owner));
            topic.owner = owner;
        }
        if let Some(description) = changes.description
            && description != topic.description
        {
            detail.push("description".to_owned());
            topic.description = description;
        }
        let updated = topic.clone();
        self.topic_history.entry(name).or_default().push(Decision {
            at_ms: now_ms,
            by: updated_by,
            action: DecisionAction::Updated,
            reason: reason.filter(|reason| !reason.trim().is_empty()),
            detail: Some(if detail.is_empty() {
                "no change".to_owned()
            } else {
                detail.join("; ")
            }),
        });
        Ok(updated)
    }

    /// Deletes a topic no consumer group uses; its history stays.
    pub(super) fn delete_topic(
        &mut self,
        now_ms: u64,
        name: String,
        deleted_by: String,
        reason: String,
    ) -> Result<(), CommandError> {
        require_person("deleted_by", &deleted_by)?;
        require_reason(Subject::Topic, &name, "deleting", &reason)?;
        if !self.topics.contains_key(&name) {
            return Err(CommandError::NotFound {
                subject: Subject::Topic,
                name,
            });
        }
        let users: Vec<String> = self
            .consumer_groups
            .values()
            .filter(|group| group.approval.status != ApprovalStatus::Rejected && group.topics.contains(&name))
            .map(|group| group.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(CommandError::TopicInUse { name, groups: users });
        }
        self.topics.remove(&name);
        self.record_deletion(Subject::Topic, name, deleted_by, reason, now_ms);
        Ok(())
    }

    /// Deletes a consumer group; its history stays.
    pub(super) fn delete_group(
        &mut self,
        now_ms: u64,
        name: String,
        deleted_by: String,
        reason: String,
    ) -> Result<(), CommandError> {
        require_person("deleted_by", &deleted_by)?;
        require_reason(Subject::Group, &name, "deleting", &reason)?;
        if self.consumer_groups.remove(&name).is_none() {
            return Err(CommandError::NotFound {
                subject: Subject::Group,
                name,
            });
        }
        self.record_deletion(Subject::Group, name, deleted_by, reason, now_ms);
        Ok(())
    }

    fn approval(&self, subject: Subject, name: &str) -> Result<&Approval, CommandError> {
        let found = match subject {
            Subject::Topic => self.topics.get(name).map(|topic| &topic.approval),
            Subject::Group => self.consumer_groups.get(name).map(|group| &group.approval),
        };
        found.ok_or_else(|| CommandError::NotFound {
            subject,
            name: name.to_owned(),
        })
    }

    fn history(&mut self, subject: Subject) -> &mut BTreeMap<String, Vec<Decision>> {
        match subject {
            Subject::Topic => self.topic_history,
            Subject::Group => self.group_history,
        }
    }

    /// A name may be requested when it is new or was rejected.
    fn check_new_request(&self, subject: Subject, name: &str) -> Result<(), CommandError> {
        let existing = match subject {
            Subject::Topic => self.topics.get(name).map(|topic| &topic.approval),
            Subject::Group => self.consumer_groups.get(name).map(|group| &group.approval),
        };
        match existing {
            Some(existing) if existing.blocks_request() => Err(CommandError::AlreadyRequested {
                subject,
                name: name.to_owned(),
                requested_by: existing.requested_by.clone(),
                requested_at_ms: existing.requested_at_ms,
                status: existing.status,
            }),
            _ => Ok(()),
        }
    }

    /// What must hold before approving: a topic is placed on a broker group; a group's topics
    /// are all approved.
    fn check_approvable(&self, subject: Subject, name: &str) -> Result<(), CommandError> {
        match subject {
            Subject::Topic => {
                if self.topics.get(name).is_some_and(|topic| topic.queues.is_empty()) {
                    return Err(CommandError::NoQueues { name: name.to_owned() });
                }
            }
            Subject::Group => {
                for topic in &self.consumer_groups[name].topics {
                    match self.topics.get(topic) {
                        None => {
                            return Err(CommandError::NotFound {
                                subject: Subject::Topic,
                                name: topic.clone(),
                            });
                        }
                        Some(existing) if existing.approval.status != ApprovalStatus::Approved => {
                            return Err(CommandError::TopicNotApproved {
                                group: name.to_owned(),
                                topic: topic.clone(),
                                status: existing.approval.status,
                            });
                        }
                        Some(_) => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn record_request(&mut self, subject: Subject, name: String, by: String, owner: &str, now_ms: u64) {
        self.history(subject).entry(name).or_default().push(Decision {
            at_ms: now_ms,
            by,
            action: DecisionAction::Requested,
            reason: None,
            detail: Some(format!("owner {owner}")),
        });
    }

    fn record_deletion(&mut self, subject: Subject, name: String, by: String, reason: String, now_ms: u64) {
        self.history(subject).entry(name).or_default().push(Decision {
            at_ms: now_ms,
            by,
            action: DecisionAction::Deleted,
            reason: Some(reason),
            detail: None,
        });
    }
}

fn validate_queues(queues: &BTreeMap<String, u32>) -> Result<(), CommandError> {
    for (broker_group, count) in queues {
        validate_group(broker_group)?;
        validate_queue_count(*count)?;
    }
    Ok(())
}

fn validate_perm(perm: u8) -> Result<(), CommandError> {
    if perm & !PERM_READ_WRITE != 0 {
        return Err(CommandError::Invalid {
            message: format!("topic permission {perm} is invalid: 1 (read), 2 (write) or 3 (read and write)"),
        });
    }
    Ok(())
}

fn validate_produce_limit(limit: Option<u32>) -> Result<(), CommandError> {
    meridian_proto::quota::validate_produce_limit(limit, None).map_err(|error| CommandError::Invalid {
        message: error.to_string(),
    })
}
