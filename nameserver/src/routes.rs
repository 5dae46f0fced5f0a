//! What clients and brokers read: a topic's route ([`topic_route`]) and what a broker group may
//! serve ([`broker_metadata`]), computed from the replicated state and this node's [`Liveness`].

use meridian_proto::ErrorCode;
use meridian_proto::messages::{BrokerMetadata, BrokerRoute, GroupGrant, ReplicaRoute, TopicGrant, TopicRoute, role};
use meridian_proto::validate::validate_topic;

use crate::error::ApiError;
use crate::liveness::LivenessView;
use crate::state::{ApprovalStatus, ConsumeMode, MetadataState, Topic, format_time_ms};

/// The route of `topic`: for each broker group it is placed on, the group's live master (the
/// member elected at the group's epoch, if this node heard it within the broker timeout: the
/// address sends go to; empty when it has none) and every member with its liveness. Unknown and
/// unapproved topics are refused with what to do about it.
pub fn topic_route(state: &MetadataState, liveness: &LivenessView<'_>, topic: &str) -> Result<TopicRoute, ApiError> {
    validate_topic(topic)?;
    // The system trace topic needs no approval: every broker group creates it and serves it to
    // tracers, read-only (brokers write it themselves).
    let system_queues: std::collections::BTreeMap<String, u32>;
    let (placements, perm) = if meridian_proto::trace::is_system_topic(topic) {
        system_queues = state
            .broker_groups()
            .keys()
            .map(|group| (group.clone(), meridian_proto::trace::TRACE_TOPIC_QUEUES))
            .collect();
        (&system_queues, meridian_proto::messages::perm::READ)
    } else {
        let found = state.topic(topic).ok_or_else(|| ApiError {
            code: ErrorCode::TopicNotFound,
            message: format!(
                "topic {topic:?} does not exist: request it with `meridian topic request {topic} --owner TEAM --queues N`, then have an admin approve it"
            ),
        })?;
        if found.approval.status != ApprovalStatus::Approved {
            return Err(not_approved(found));
        }
        (&found.queues, u32::from(found.perm))
    };
    let brokers = placements
        .iter()
        .map(|(group_name, queues)| {
            let group = state.broker_groups().get(group_name);
            let replicas: Vec<ReplicaRoute> = group
                .map(|group| {
                    group
                        .members
                        .values()
                        .map(|member| {
                            let seen = liveness.get(group_name, &member.name);
                            // The group's state says who is master, whatever a broker reported.
                            let is_master = group.master.as_deref() == Some(member.name.as_str());
                            ReplicaRoute {
                                name: member.name.clone(),
                                addr: member.addr.clone(),
                                idc: member.idc.clone(),
                                role: if is_master { role::MASTER } else { role::SLAVE },
                                epoch: if is_master { group.epoch } else { member.epoch },
                                alive: seen.is_some_and(|(_, alive)| alive),
                                max_offset: seen.map_or(member.max_offset, |(seen, _)| seen.max_offset),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let master = group.and_then(|group| group.master()).filter(|master| {
                replicas
                    .iter()
                    .any(|replica| replica.name == master.name && replica.alive)
            });
            let idc = state.group_idc(group_name).to_owned();
            // A drill's evacuated data center takes no writes.
            let perm = if state.drill().evacuated.as_ref() == Some(&idc) {
                perm & !meridian_proto::messages::perm::WRITE
            } else {
                perm
            };
            BrokerRoute {
                broker_name: group_name.clone(),
                addr: master.map(|master| master.addr.clone()).unwrap_or_default(),
                idc,
                queues: *queues,
                perm,
                replicas,
            }
        })
        .collect();
    Ok(TopicRoute {
        topic: topic.to_owned(),
        brokers,
        evacuated_idcs: state.evacuated_idcs(),
        lost_idcs: state.lost_idcs(),
    })
}

/// The error for using a topic that exists but is not approved.
fn not_approved(topic: &Topic) -> ApiError {
    let name = &topic.name;
    let message = match topic.approval.status {
        ApprovalStatus::Rejected => format!(
            "topic {name:?} was rejected by {} at {}{}: request it again with `meridian topic request {name} --owner TEAM --queues N`",
            topic.approval.decided_by.as_deref().unwrap_or("an admin"),
            topic.approval.decided_at_ms.map(format_time_ms).unwrap_or_default(),
            topic
                .approval
                .decision_reason
                .as_ref()
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default(),
        ),
        _ => format!(
            "topic {name:?} was requested by {} at {} and is not approved yet: an admin approves it with `meridian topic approve {name}`",
            topic.approval.requested_by,
            format_time_ms(topic.approval.requested_at_ms),
        ),
    };
    ApiError {
        code: ErrorCode::NotApproved,
        message,
    }
}

/// What broker group `group` may serve: the approved topics placed on it and every approved
/// consumer group.
pub fn broker_metadata(state: &MetadataState, group: &str) -> BrokerMetadata {
    let topics = state
        .topics()
        .values()
        .filter(|topic| topic.approval.status == ApprovalStatus::Approved)
        .filter_map(|topic| {
            let queues = *topic.queues.get(group)?;
            Some(TopicGrant {
                name: topic.name.clone(),
                queues,
                perm: u32::from(topic.perm),
                produce_limit: topic.produce_limit.unwrap_or(0),
                topic_queues: topic.queues.values().sum(),
                produce_limit_bytes: 0,
            })
        })
        .collect();
    let groups = state
        .consumer_groups()
        .values()
        .filter(|consumer_group| consumer_group.approval.status == ApprovalStatus::Approved)
        .map(|consumer_group| GroupGrant {
            name: consumer_group.name.clone(),
            topics: consumer_group.topics.iter().cloned().collect(),
            max_retries: consumer_group.max_retries,
            broadcasting: consumer_group.consume_mode == ConsumeMode::Broadcasting,
        })
        .collect();
    let policy = state.sdk_policy();
    let users = state
        .users()
        .iter()
        .filter_map(|(name, user)| {
            Some(meridian_proto::messages::UserGrant {
                name: name.clone(),
                verifier: Some(user.verifier.to_verifier().ok()?),
                rocketmq_sealed: user.rocketmq_sealed.clone().unwrap_or_default(),
            })
        })
        .collect();
    BrokerMetadata {
        users,
        acl_json: serde_json::to_string(&state.acl()).unwrap_or_default(),
        version: state.metadata_version(),
        topics,
        groups,
        sdk_policy: Some(meridian_proto::sdk::SdkPolicyGrant {
            min_version: policy.min_version.clone().unwrap_or_default(),
            blocked_versions: policy.blocked_versions.iter().cloned().collect(),
            refuse: policy.refuse,
            language_min_versions: policy
                .language_min_versions
                .iter()
                .map(|(language, min_version)| meridian_proto::sdk::LanguageMinimum {
                    language: language.clone(),
                    min_version: min_version.clone(),
                })
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use super::*;
    use crate::liveness::Liveness;
    use crate::state::{BrokerRegistration, BrokerRole, Command, GroupRequest, PERM_READ_WRITE, TopicRequest};

    fn state_with_orders(status: Option<&str>) -> MetadataState {
        let mut state = MetadataState::default();
        let request = TopicRequest {
            name: "orders".into(),
            owner: "payments".into(),
            description: String::new(),
            queues: BTreeMap::from([("broker-a".into(), 4), ("broker-b".into(), 2)]),
            perm: PERM_READ_WRITE,
            produce_limit: Some(100),
            requested_by: "alice".into(),
        };
        state.apply(Command::RequestTopic(request), 1_000).unwrap();
        match status {
            Some("approved") => {
                state
                    .apply(
                        Command::ApproveTopic {
                            name: "orders".into(),
                            decided_by: "bob".into(),
                            reason: None,
                        },
                        2_000,
                    )
                    .unwrap();
            }
            Some("rejected") => {
                state
                    .apply(
                        Command::RejectTopic {
                            name: "orders".into(),
                            decided_by: "bob".into(),
                            reason: "use payments-v2".into(),
                        },
                        2_000,
                    )
                    .unwrap();
            }
            _ => {}
        }
        for (member, role) in [("a-0", BrokerRole::Master), ("a-1", BrokerRole::Slave)] {
            state
                .apply(
                    Command::RegisterBroker {
                        group: "broker-a".into(),
                        member: BrokerRegistration {
                            name: member.into(),
                            addr: format!("{member}:7911"),
                            idc: "dc1".into(),
                            role,
                            epoch: 0,
                            max_offset: 10,
                            registration_digest: 1,
                            in_sync: Vec::new(),
                            ack_policy: None,
                            ack_replicas: 0,
                        },
                        topics: BTreeMap::from([("orders".into(), 4)]),
                    },
                    3_000,
                )
                .unwrap();
        }
        state
    }

    fn elect(state: &mut MetadataState, member: &str, epoch: u64) {
        state
            .apply(
                Command::ElectMaster {
                    group: "broker-a".into(),
                    member: member.into(),
                    epoch,
                    reason: "test".into(),
                },
                3_500,
            )
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn routes_name_the_live_master_and_every_replica() {
        let mut state = state_with_orders(Some("approved"));
        let liveness = Liveness::new(Duration::from_secs(10));
        liveness.touch("broker-a", "a-0", 77);
        liveness.touch("broker-a", "a-1", 70);
        // a-0 registered as master, but nobody elected it: no master yet.
        let route = liveness.with(|view| topic_route(&state, view, "orders")).unwrap();
        assert_eq!(route.brokers[0].addr, "");
        assert!(
            route.brokers[0]
                .replicas
                .iter()
                .all(|replica| replica.role == role::SLAVE)
        );
        elect(&mut state, "a-0", 1);
        let route = liveness.with(|view| topic_route(&state, view, "orders")).unwrap();
        assert_eq!(route.brokers.len(), 2);
        let a = &route.brokers[0];
        assert_eq!(
            (
                a.broker_name.as_str(),
                a.addr.as_str(),
                a.idc.as_str(),
                a.queues,
                a.perm
            ),
            ("broker-a", "a-0:7911", "dc1", 4, 3)
        );
        let replicas: Vec<_> = a
            .replicas
            .iter()
            .map(|replica| {
                (
                    replica.name.as_str(),
                    replica.role,
                    replica.epoch,
                    replica.alive,
                    replica.max_offset,
                )
            })
            .collect();
        assert_eq!(
            replicas,
            [("a-0", role::MASTER, 1, true, 77), ("a-1", role::SLAVE, 0, true, 70)]
        );
        // broker-b never registered: placed, but nobody serves it.
        let b = &route.brokers[1];
        assert_eq!(
            (b.broker_name.as_str(), b.addr.as_str(), b.replicas.len()),
            ("broker-b", "", 0)
        );

        // The master goes silent: it stays listed, marked down, and the group has no address.
        tokio::time::advance(Duration::from_secs(8)).await;
        liveness.touch("broker-a", "a-1", 71);
        tokio::time::advance(Duration::from_secs(3)).await;
        let route = liveness.with(|view| topic_route(&state, view, "orders")).unwrap();
        let a = &route.brokers[0];
        assert_eq!(a.addr, "");
        assert_eq!(
            a.replicas.iter().map(|replica| replica.alive).collect::<Vec<_>>(),
            [false, true]
        );
        // It comes back.
        liveness.touch("broker-a", "a-0", 80);
        let route = liveness.with(|view| topic_route(&state, view, "orders")).unwrap();
        assert_eq!(route.brokers[0].addr, "a-0:7911");
        // A failover: the route follows the election, not what the brokers last registered.
        elect(&mut state, "a-1", 2);
        let route = liveness.with(|view| topic_route(&state, view, "orders")).unwrap();
        let a = &route.brokers[0];
        assert_eq!(a.addr, "a-1:7911");
        let roles: Vec<_> = a.replicas.iter().map(|replica| (replica.role, replica.epoch)).collect();
        assert_eq!(roles, [(role::SLAVE, 1), (role::MASTER, 2)]);
    }

    #[test]
    fn unknown_and_unapproved_topics_are_refused_with_what_to_do() {
        let liveness = Liveness::new(Duration::from_secs(10));
        let lookup =
            |state: &MetadataState, topic: &str| liveness.with(|view| topic_route(state, view, topic)).unwrap_err();
        let unknown = lookup(&MetadataState::default(), "orders");
        assert_eq!(unknown.code, ErrorCode::TopicNotFound);
        assert!(
            unknown
                .message
                .contains("`meridian topic request orders --owner TEAM --queues N`"),
            "{}",
            unknown.message
        );
        let requested = lookup(&state_with_orders(None), "orders");
        assert_eq!(requested.code, ErrorCode::NotApproved);
        assert!(
            requested
                .message
                .contains("requested by alice at 1970-01-01T00:00:01Z and is not approved yet"),
            "{}",
            requested.message
        );
        assert!(requested.message.contains("`meridian topic approve orders`"));
        let rejected = lookup(&state_with_orders(Some("rejected")), "orders");
        assert_eq!(rejected.code, ErrorCode::NotApproved);
        assert!(
            rejected
                .message
                .contains("rejected by bob at 1970-01-01T00:00:02Z (use payments-v2)"),
            "{}",
            rejected.message
        );
        let invalid = lookup(&MetadataState::default(), "a b");
        assert_eq!(invalid.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn brokers_get_their_approved_topics_and_every_approved_group() {
        let mut state = state_with_orders(Some("approved"));
        let before = state.metadata_version();
        let group = |name: &str| {
            Command::RequestGroup(GroupRequest {
                name: name.into(),
                owner: "payments".into(),
                description: String::new(),
                topics: BTreeSet::from(["orders".into()]),
                max_retries: Some(3),
                consume_mode: ConsumeMode::Clustering,
                requested_by: "alice".into(),
            })
        };
        state.apply(group("billing"), 4_000).unwrap();
        state.apply(group("audit"), 4_000).unwrap();
        state
            .apply(
                Command::ApproveGroup {
                    name: "billing".into(),
                    decided_by: "bob".into(),
                    reason: None,
                },
                5_000,
            )
            .unwrap();
        assert_eq!(state.metadata_version(), before + 3);
        // A refused command and a broker registration do not move the version.
        let _ = state.apply(group("billing"), 6_000).unwrap_err();
        assert_eq!(state.metadata_version(), before + 3);

        let metadata = broker_metadata(&state, "broker-b");
        assert_eq!(metadata.version, before + 3);
        assert_eq!(
            metadata.topics,
            [TopicGrant {
                name: "orders".into(),
                queues: 2,
                perm: 3,
                produce_limit: 100,
                // Queues on broker-a (4) and broker-b (2): broker-b enforces 2/6 of the limit.
                topic_queues: 6,
                produce_limit_bytes: 0,
            }]
        );
        assert_eq!(
            metadata.groups,
            [GroupGrant {
                name: "billing".into(),
                topics: vec!["orders".into()],
                max_retries: 3,
                broadcasting: false
            }]
        );
        assert!(broker_metadata(&state, "broker-z").topics.is_empty());
    }
}
