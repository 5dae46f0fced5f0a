//! Tests of the state: every rule of governance, brokers, IDC and drills, the SDK policy, and
//! properties that hold over any sequence of commands.

use super::*;
use proptest::prelude::*;

const T0: u64 = 1_764_064_800_000; // 2025-11-25T10:00:00Z

fn request_topic(name: &str, by: &str) -> Command {
    Command::RequestTopic(TopicRequest {
        name: name.into(),
        owner: "team-a".into(),
        description: "orders of the shop".into(),
        queues: BTreeMap::from([("broker-a".to_owned(), 8)]),
        perm: PERM_READ_WRITE,
        produce_limit: None,
        requested_by: by.into(),
    })
}

fn approve_topic(name: &str) -> Command {
    Command::ApproveTopic {
        name: name.into(),
        decided_by: "admin".into(),
        reason: Some("looks fine".into()),
    }
}

fn reject_topic(name: &str) -> Command {
    Command::RejectTopic {
        name: name.into(),
        decided_by: "admin".into(),
        reason: "use the existing payments topic".into(),
    }
}

fn request_group(name: &str, topic: &str) -> Command {
    Command::RequestGroup(GroupRequest {
        name: name.into(),
        owner: "team-b".into(),
        description: String::new(),
        topics: BTreeSet::from([topic.to_owned()]),
        max_retries: None,
        consume_mode: ConsumeMode::Clustering,
        requested_by: "bob".into(),
    })
}

fn register(group: &str, member: &str, role: BrokerRole, epoch: u64) -> Command {
    Command::RegisterBroker {
        group: group.into(),
        member: BrokerRegistration {
            name: member.into(),
            addr: format!("{member}:7911"),
            idc: "dc1".into(),
            role,
            epoch,
            max_offset: 100,
            registration_digest: epoch,
            in_sync: Vec::new(),
            ack_policy: None,
            ack_replicas: 0,
        },
        topics: BTreeMap::from([("orders".to_owned(), 4)]),
    }
}

fn elect(group: &str, member: &str, epoch: u64) -> Command {
    Command::ElectMaster {
        group: group.into(),
        member: member.into(),
        epoch,
        reason: "test".into(),
    }
}

fn fence(group: &str, preferred: &str) -> Command {
    Command::FenceMaster {
        group: group.into(),
        preferred: preferred.into(),
        by: "admin".into(),
        reason: Some("maintenance".into()),
    }
}

/// A group whose three members registered as slaves, then `a-0` elected at epoch 1 and
/// reporting `a-1` in sync.
fn group_with_master() -> MetadataState {
    let mut state = MetadataState::default();
    for member in ["a-0", "a-1", "a-2"] {
        state
            .apply(register("broker-a", member, BrokerRole::Slave, 0), T0)
            .unwrap();
    }
    state.apply(elect("broker-a", "a-0", 1), T0).unwrap();
    let mut report = register("broker-a", "a-0", BrokerRole::Master, 1);
    if let Command::RegisterBroker { member, .. } = &mut report {
        member.in_sync = vec!["a-1".into(), "a-0".into(), "a-1".into()];
    }
    state.apply(report, T0).unwrap();
    state
}

/// The Raft log (redb) and snapshots hold this state and its commands as JSON: what an earlier
/// version wrote must load, and write back the same JSON.
#[test]
fn snapshots_and_log_entries_written_before_still_load() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../../testdata/snapshot-state-v1.json")).unwrap();
    let state: MetadataState = serde_json::from_value(fixture.clone()).unwrap();
    assert_eq!(serde_json::to_value(&state).unwrap(), fixture);
    assert_eq!(state.topics().len(), 2);
    assert_eq!(state.topic_history("orders").len(), 3);
    assert_eq!(state.group_history("audit").len(), 2);
    assert_eq!(state.evacuated_idcs(), vec!["west".to_owned()]);
    assert_eq!(state.idc_for("10.1.2.3".parse().unwrap()), Some("east"));
    assert!(state.sdk_policy().check("1.3.1").is_err());

    let lines = include_str!("../../testdata/raft-log-requests-v1.jsonl");
    for line in lines.lines() {
        let written: serde_json::Value = serde_json::from_str(line).unwrap();
        let request: crate::types::Request = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(serde_json::to_value(&request).unwrap(), written, "{line}");
    }
    assert_eq!(lines.lines().count(), 19, "one entry per command kind, some twice");
}

#[test]
fn time_format_is_utc_rfc3339() {
    assert_eq!(format_time_ms(0), "1970-01-01T00:00:00Z");
    assert_eq!(format_time_ms(T0), "2025-11-25T10:00:00Z");
    assert_eq!(format_time_ms(951_782_400_000), "2000-02-29T00:00:00Z");
}

#[test]
fn topic_lifecycle_is_recorded_in_history() {
    let mut state = MetadataState::default();
    state.apply(request_topic("orders", "alice"), T0).unwrap();
    assert_eq!(
        state.topic("orders").unwrap().approval.status,
        ApprovalStatus::Requested
    );
    let Response::Topic(topic) = state.apply(approve_topic("orders"), T0 + 1000).unwrap() else {
        panic!("approval answers with the topic");
    };
    assert_eq!(topic.approval.status, ApprovalStatus::Approved);
    assert_eq!(topic.approval.decided_by.as_deref(), Some("admin"));
    assert_eq!(topic.approval.decided_at_ms, Some(T0 + 1000));
    let history = state.topic_history("orders");
    let actions: Vec<_> = history.iter().map(|decision| decision.action).collect();
    assert_eq!(actions, [DecisionAction::Requested, DecisionAction::Approved]);
    assert_eq!(history[0].by, "alice");
    assert_eq!(history[1].reason.as_deref(), Some("looks fine"));
}

#[test]
fn requesting_an_existing_topic_names_who_and_when() {
    let mut state = MetadataState::default();
    state.apply(request_topic("orders", "team-a"), T0).unwrap();
    let before = state.clone();
    let error = state.apply(request_topic("orders", "team-b"), T0 + 5).unwrap_err();
    assert_eq!(
        error.to_string(),
        "topic \"orders\" was already requested by team-a at 2025-11-25T10:00:00Z and is requested: \
         wait for an admin to approve or reject it, or pick another name"
    );
    assert_eq!(error.code(), meridian_proto::ErrorCode::AlreadyExists);
    assert_eq!(state, before, "a failed command changes nothing");
    assert_eq!(state.topic_history("orders").len(), 1);
}

#[test]
fn approving_unknown_or_rejected_topics_is_refused() {
    let mut state = MetadataState::default();
    let error = state.apply(approve_topic("ghost"), T0).unwrap_err();
    assert_eq!(
        error.to_string(),
        "topic \"ghost\" does not exist: request it first, with an owner"
    );
    state.apply(request_topic("orders", "alice"), T0).unwrap();
    state.apply(reject_topic("orders"), T0 + 1).unwrap();
    let error = state.apply(approve_topic("orders"), T0 + 2).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("cannot approve topic \"orders\": it was rejected by admin at "),
        "{message}"
    );
    assert!(message.contains("use the existing payments topic"), "{message}");
    assert!(message.ends_with("request it again to reopen it"), "{message}");
    // A rejected topic may be requested again; history keeps every step.
    state.apply(request_topic("orders", "alice"), T0 + 3).unwrap();
    state.apply(approve_topic("orders"), T0 + 4).unwrap();
    let error = state.apply(reject_topic("orders"), T0 + 5).unwrap_err();
    assert!(error.to_string().ends_with("delete it instead"), "{error}");
    assert_eq!(state.topic_history("orders").len(), 4);
}

#[test]
fn names_and_sizes_use_proto_rules() {
    let mut state = MetadataState::default();
    let error = state.apply(request_topic("a b", "alice"), T0).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"topic name "a b" is invalid: only [A-Za-z0-9_-], at most 127 chars"#
    );
    let mut command = request_topic("orders", "alice");
    if let Command::RequestTopic(TopicRequest { queues, .. }) = &mut command {
        queues.insert("broker-b".into(), 0);
    }
    let error = state.apply(command, T0).unwrap_err();
    assert_eq!(
        error.to_string(),
        "queue count 0 is invalid: 1 to 1024 queues per topic"
    );
    let error = state.apply(request_group("bad group", "orders"), T0).unwrap_err();
    assert!(
        error.to_string().starts_with("group name \"bad group\" is invalid"),
        "{error}"
    );
    assert_eq!(state, MetadataState::default());
}

#[test]
fn rejection_needs_a_reason_and_approval_needs_queues() {
    let mut state = MetadataState::default();
    let mut command = request_topic("orders", "alice");
    if let Command::RequestTopic(TopicRequest { queues, .. }) = &mut command {
        queues.clear();
    }
    state.apply(command, T0).unwrap();
    let error = state
        .apply(
            Command::RejectTopic {
                name: "orders".into(),
                decided_by: "admin".into(),
                reason: " ".into(),
            },
            T0,
        )
        .unwrap_err();
    assert!(error.to_string().contains("needs a reason"), "{error}");
    let error = state.apply(approve_topic("orders"), T0).unwrap_err();
    assert!(error.to_string().contains("has no queues"), "{error}");
    state
        .apply(
            Command::UpdateTopic {
                name: "orders".into(),
                updated_by: "admin".into(),
                reason: Some("place it".into()),
                changes: TopicChanges {
                    queues: Some(BTreeMap::from([("broker-a".to_owned(), 4)])),
                    perm: Some(PERM_READ),
                    produce_limit: ProduceLimitChange::Set(500),
                    owner: None,
                    description: None,
                },
            },
            T0 + 1,
        )
        .unwrap();
    let topic = state.topic("orders").unwrap();
    assert_eq!(topic.perm, PERM_READ);
    assert_eq!(topic.produce_limit, Some(500));
    let update = &state.topic_history("orders")[1];
    assert_eq!(
        update.detail.as_deref(),
        Some("queues broker-a=4; perm 3->1; produce limit 500 msgs/s")
    );
    state.apply(approve_topic("orders"), T0 + 2).unwrap();
}

#[test]
fn groups_need_existing_then_approved_topics() {
    let mut state = MetadataState::default();
    let error = state.apply(request_group("g1", "orders"), T0).unwrap_err();
    assert_eq!(error.code(), meridian_proto::ErrorCode::TopicNotFound);
    state.apply(request_topic("orders", "alice"), T0).unwrap();
    state.apply(request_group("g1", "orders"), T0).unwrap();
    assert_eq!(state.consumer_group("g1").unwrap().max_retries, DEFAULT_MAX_RETRIES);
    let approve_group = Command::ApproveGroup {
        name: "g1".into(),
        decided_by: "admin".into(),
        reason: None,
    };
    let error = state.apply(approve_group.clone(), T0).unwrap_err();
    assert_eq!(
        error.to_string(),
        "consumer group \"g1\" subscribes to topic \"orders\", which is requested: approve the topic first"
    );
    state.apply(approve_topic("orders"), T0).unwrap();
    state.apply(approve_group, T0).unwrap();
    let delete = Command::DeleteTopic {
        name: "orders".into(),
        deleted_by: "admin".into(),
        reason: "retired".into(),
    };
    let error = state.apply(delete.clone(), T0).unwrap_err();
    assert!(error.to_string().contains("used by consumer groups \"g1\""), "{error}");
    state
        .apply(
            Command::DeleteGroup {
                name: "g1".into(),
                deleted_by: "admin".into(),
                reason: "retired".into(),
            },
            T0,
        )
        .unwrap();
    state.apply(delete, T0).unwrap();
    assert!(state.topic("orders").is_none());
    assert_eq!(state.topic_history("orders").len(), 3, "history outlives the topic");
    assert_eq!(state.group_history("g1").len(), 3);
}

fn register_in(group: &str, member: &str, idc: &str) -> Command {
    let mut command = register(group, member, BrokerRole::Slave, 0);
    if let Command::RegisterBroker { member, .. } = &mut command {
        member.idc = idc.into();
    }
    command
}

#[test]
fn drills_evacuate_one_known_idc_at_a_time_and_record_every_step() {
    let mut state = MetadataState::default();
    state.apply(register_in("a", "a-0", "dc1"), T0).unwrap();
    state.apply(register_in("b", "b-0", "dc2"), T0).unwrap();
    state.apply(elect("a", "a-0", 1), T0).unwrap();
    let evacuate = |idc: &str, by: &str| Command::Evacuate {
        idc: idc.into(),
        by: by.into(),
        reason: Some("drill".into()),
    };
    let restore = |by: &str| Command::Restore {
        by: by.into(),
        reason: None,
    };
    let refusal = |state: &mut MetadataState, command| state.apply(command, T0).unwrap_err().to_string();
    assert!(refusal(&mut state, evacuate("dc1", "ops")).contains("no group has a master outside \"dc1\""));
    state.apply(elect("b", "b-0", 1), T0).unwrap();
    assert!(refusal(&mut state, evacuate("dc9", "ops")).contains("the cluster knows \"dc1\", \"dc2\""));
    assert!(refusal(&mut state, evacuate("dc 1", "ops")).contains("IDC name \"dc 1\" is invalid"));
    assert!(refusal(&mut state, evacuate("dc1", " ")).contains("by is empty"));
    assert!(refusal(&mut state, restore("ops")).contains("nothing to restore"));

    state.apply(evacuate("dc1", "ops"), T0 + 1).unwrap();
    assert_eq!(state.evacuated_idcs(), ["dc1"]);
    assert!(refusal(&mut state, evacuate("dc1", "ops")).contains("already evacuated"));
    assert!(refusal(&mut state, evacuate("dc2", "ops")).contains("restore` first"));
    state.apply(restore("sre"), T0 + 2).unwrap();
    assert!(state.evacuated_idcs().is_empty());
    let steps: Vec<_> = state
        .drill()
        .steps
        .iter()
        .map(|step| (step.at_ms, step.action, step.idc.as_str(), step.by.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            (T0 + 1, DrillAction::Evacuate, "dc1", "ops"),
            (T0 + 2, DrillAction::Restore, "dc1", "sre")
        ]
    );
}

#[test]
fn a_group_keeps_its_idc_while_it_has_no_master() {
    let mut state = MetadataState::default();
    state.apply(register_in("a", "a-0", "dc1"), T0).unwrap();
    state.apply(register_in("a", "a-1", "dc2"), T0).unwrap();
    assert_eq!(state.group_idc("a"), "", "never had a master");
    state.apply(elect("a", "a-0", 1), T0).unwrap();
    assert_eq!(state.group_idc("a"), "dc1");
    let mut report = register_in("a", "a-0", "dc1");
    if let Command::RegisterBroker { member, .. } = &mut report {
        member.role = BrokerRole::Master;
        member.epoch = 1;
        member.in_sync = vec!["a-1".into()];
    }
    state.apply(report, T0).unwrap();
    state.apply(fence("a", "a-1"), T0).unwrap();
    assert_eq!(state.group_idc("a"), "dc1", "between fencing and the next election");
    state.apply(elect("a", "a-1", 3), T0).unwrap();
    assert_eq!(state.group_idc("a"), "dc2");
}

#[test]
fn overlapping_idc_rules_of_other_idcs_are_reported() {
    let mut state = MetadataState::default();
    let set = |cidr: &str, idc: &str| Command::SetIdcRule {
        cidr: cidr.into(),
        idc: idc.into(),
    };
    state.apply(set("10.0.0.0/8", "dc1"), T0).unwrap();
    let Response::IdcRule { overlaps, .. } = state.apply(set("10.1.0.0/16", "dc2"), T0).unwrap() else {
        panic!("an IDC rule answer");
    };
    assert_eq!(overlaps.iter().map(IdcRule::cidr).collect::<Vec<_>>(), ["10.0.0.0/8"]);
    let Response::IdcRule { overlaps, .. } = state.apply(set("10.2.0.0/16", "dc1"), T0).unwrap() else {
        panic!("an IDC rule answer");
    };
    assert!(overlaps.is_empty(), "same IDC: no conflict");
    assert!(state.apply(set("11.0.0.0/8", "bad idc"), T0).is_err());
}

#[test]
fn registrations_report_but_only_elections_make_a_master() {
    let mut state = MetadataState::default();
    // A broker claiming to be master at any epoch is recorded, but neither becomes master
    // nor moves the group's epoch.
    let response = state
        .apply(register("broker-a", "a-0", BrokerRole::Master, 7), T0)
        .unwrap();
    assert_eq!(
        response,
        Response::Broker {
            group: "broker-a".into(),
            epoch: 0
        }
    );
    state
        .apply(register("broker-a", "a-1", BrokerRole::Master, 7), T0)
        .unwrap();
    let group = &state.broker_groups()["broker-a"];
    assert_eq!((group.epoch, group.master(), group.master.as_deref()), (0, None, None));
    assert_eq!(group.members["a-1"].role, BrokerRole::Master, "as reported");
    assert_eq!(group.members["a-0"].last_heartbeat_ms, T0);

    // A slave's in-sync list, or a master's at another epoch, is ignored.
    let mut state = group_with_master();
    assert_eq!(
        state.broker_groups()["broker-a"].in_sync,
        ["a-1"],
        "sorted, deduplicated, without the master"
    );
    let mut stale = register("broker-a", "a-0", BrokerRole::Master, 0);
    let mut slave = register("broker-a", "a-2", BrokerRole::Slave, 1);
    for command in [&mut stale, &mut slave] {
        if let Command::RegisterBroker { member, .. } = command {
            member.in_sync = vec!["a-2".into()];
        }
    }
    state.apply(stale, T0).unwrap();
    state.apply(slave, T0).unwrap();
    let group = &state.broker_groups()["broker-a"];
    assert_eq!(group.in_sync, ["a-1"]);
    assert_eq!(
        group.master().unwrap().name,
        "a-0",
        "a registration does not unseat the master"
    );

    // Unregistering the master leaves the group masterless at its epoch.
    for member in ["a-0", "a-1"] {
        state
            .apply(
                Command::UnregisterBroker {
                    group: "broker-a".into(),
                    member: member.into(),
                },
                T0,
            )
            .unwrap();
    }
    let group = &state.broker_groups()["broker-a"];
    assert_eq!((group.epoch, group.master.as_deref()), (1, None));
    assert!(group.in_sync.is_empty());
    state
        .apply(
            Command::UnregisterBroker {
                group: "broker-a".into(),
                member: "a-2".into(),
            },
            T0,
        )
        .unwrap();
    assert!(state.broker_groups().is_empty());
}

#[test]
fn an_election_applies_once_at_the_next_epoch() {
    let mut state = group_with_master();
    // The controller's decision, applied twice (a stale tick): the second is refused.
    let response = state.apply(elect("broker-a", "a-1", 2), T0 + 1).unwrap();
    let Response::EpochChange { change, .. } = response else {
        panic!("an election answers with the epoch change");
    };
    assert_eq!(
        (
            change.epoch,
            change.master.as_deref(),
            change.previous_master.as_deref()
        ),
        (2, Some("a-1"), Some("a-0"))
    );
    let before = state.clone();
    let error = state.apply(elect("broker-a", "a-2", 2), T0 + 2).unwrap_err();
    assert!(matches!(error, CommandError::StaleElection { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        "cannot elect \"a-2\" master of broker group \"broker-a\" at epoch 2: the group is at epoch 2 with master \"a-1\", \
         so the next election is at epoch 3; read the group again before deciding"
    );
    assert_eq!(error.code(), meridian_proto::ErrorCode::FailedPrecondition);
    assert_eq!(state, before);
    // Skipping an epoch is refused too; so is an unknown member.
    assert!(state.apply(elect("broker-a", "a-2", 4), T0).is_err());
    let error = state.apply(elect("broker-a", "a-9", 3), T0).unwrap_err();
    assert_eq!(
        error.to_string(),
        "broker group \"broker-a\" has no member \"a-9\": its members are \"a-0\", \"a-1\", \"a-2\""
    );
    assert!(state.apply(elect("broker-z", "a-0", 1), T0).is_err());
    assert_eq!(state, before);

    let group = &state.broker_groups()["broker-a"];
    assert_eq!((group.epoch, group.master().unwrap().name.as_str()), (2, "a-1"));
    let roles: Vec<_> = group
        .members
        .values()
        .map(|member| (member.role, member.epoch))
        .collect();
    assert_eq!(
        roles,
        [(BrokerRole::Slave, 1), (BrokerRole::Master, 2), (BrokerRole::Slave, 0)],
        "the new master takes the epoch; every other member is a slave"
    );
    assert!(group.in_sync.is_empty(), "the old in-sync set minus the new master");
    assert_eq!(group.history.len(), 2);
}

#[test]
fn a_first_election_may_start_above_the_epochs_brokers_remember() {
    let mut state = MetadataState::default();
    state
        .apply(register("broker-a", "a-0", BrokerRole::Slave, 5), T0)
        .unwrap();
    state.apply(elect("broker-a", "a-0", 6), T0).unwrap();
    assert_eq!(state.broker_groups()["broker-a"].epoch, 6);
    // Only the first: from then on, one epoch at a time.
    assert!(state.apply(elect("broker-a", "a-0", 6), T0).is_err());
    assert!(state.apply(elect("broker-a", "a-0", 9), T0).is_err());
    state.apply(elect("broker-a", "a-0", 7), T0).unwrap();
    assert!(state.apply(elect("broker-a", "a-0", 0), T0).is_err());
}

#[test]
fn a_switchover_fences_the_master_then_elects_the_target() {
    let mut state = group_with_master();
    let error = state.apply(fence("broker-a", "a-2"), T0).unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot switch broker group \"broker-a\" over to \"a-2\": it is not in sync with master \"a-0\" (in sync: \"a-1\"); \
         wait until it has caught up, or pick one of those"
    );
    assert_eq!(error.code(), meridian_proto::ErrorCode::FailedPrecondition);
    let error = state.apply(fence("broker-a", "a-0"), T0).unwrap_err();
    assert!(error.to_string().contains("already the master"), "{error}");
    assert!(state.apply(fence("broker-a", "a-7"), T0).is_err());

    let Response::EpochChange { change, .. } = state.apply(fence("broker-a", "a-1"), T0 + 5).unwrap() else {
        panic!("a fencing answers with the epoch change");
    };
    assert_eq!(change.action, EpochAction::Fenced);
    assert_eq!(
        (
            change.epoch,
            change.master,
            change.previous_master.as_deref(),
            change.preferred.as_deref()
        ),
        (2, None, Some("a-0"), Some("a-1"))
    );
    let group = &state.broker_groups()["broker-a"];
    assert_eq!(
        (group.epoch, group.master(), group.preferred.as_deref()),
        (2, None, Some("a-1"))
    );
    assert!(group.members.values().all(|member| member.role == BrokerRole::Slave));
    // Masterless: any member may be named now (how an operator unsticks a group).
    state.apply(fence("broker-a", "a-2"), T0 + 6).unwrap();
    state.apply(fence("broker-a", "a-1"), T0 + 7).unwrap();
    assert_eq!(state.broker_groups()["broker-a"].epoch, 4);

    // The controller elects the target at the next epoch; the switchover is over.
    state.apply(elect("broker-a", "a-1", 5), T0 + 8).unwrap();
    let group = &state.broker_groups()["broker-a"];
    assert_eq!(
        (group.epoch, group.master.as_deref(), group.preferred.as_deref()),
        (5, Some("a-1"), None)
    );
    let actions: Vec<_> = group
        .history
        .iter()
        .map(|change| (change.epoch, change.action))
        .collect();
    assert_eq!(
        actions,
        [
            (1, EpochAction::Elected),
            (2, EpochAction::Fenced),
            (3, EpochAction::Fenced),
            (4, EpochAction::Fenced),
            (5, EpochAction::Elected)
        ]
    );
    assert_eq!(group.history[1].by, "admin");
    assert_eq!(group.history[1].reason.as_deref(), Some("maintenance"));
}

#[test]
fn epoch_history_is_short() {
    let mut state = group_with_master();
    for epoch in 2..=(EPOCH_HISTORY_LEN as u64 + 10) {
        state.apply(elect("broker-a", "a-1", epoch), T0).unwrap();
    }
    let history = &state.broker_groups()["broker-a"].history;
    assert_eq!(history.len(), EPOCH_HISTORY_LEN);
    assert_eq!(history.last().unwrap().epoch, EPOCH_HISTORY_LEN as u64 + 10);
}

#[test]
fn idc_lookup_takes_the_longest_prefix() {
    let mut state = MetadataState::default();
    for (cidr, idc) in [
        ("10.0.0.0/8", "dc-wide"),
        ("10.1.0.0/16", "dc1"),
        ("10.1.2.0/24", "dc1-rack"),
        ("fd00::/8", "dc-v6"),
    ] {
        state
            .apply(
                Command::SetIdcRule {
                    cidr: cidr.into(),
                    idc: idc.into(),
                },
                T0,
            )
            .unwrap();
    }
    let idc = |address: &str| state.idc_for(address.parse().unwrap()).map(str::to_owned);
    assert_eq!(idc("10.1.2.3").as_deref(), Some("dc1-rack"));
    assert_eq!(idc("10.1.9.9").as_deref(), Some("dc1"));
    assert_eq!(idc("10.200.0.1").as_deref(), Some("dc-wide"));
    assert_eq!(idc("::ffff:10.1.9.9").as_deref(), Some("dc1"), "IPv4-mapped");
    assert_eq!(idc("fd12::1").as_deref(), Some("dc-v6"));
    assert_eq!(idc("192.168.0.1"), None);

    let error = state
        .apply(
            Command::SetIdcRule {
                cidr: "10.1.2.3/16".into(),
                idc: "dc1".into(),
            },
            T0,
        )
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "IDC rule \"10.1.2.3/16\" is invalid: host bits are set; did you mean 10.1.0.0/16?"
    );
    for bad in ["10.0.0.0", "10.0.0.0/33", "fd00::/129", "nope/8", "10.0.0.0/x"] {
        assert!(parse_cidr(bad).is_err(), "{bad} should be refused");
    }
    assert_eq!(parse_cidr("0.0.0.0/0").unwrap().1, 0);
    state
        .apply(
            Command::SetIdcRule {
                cidr: "0.0.0.0/0".into(),
                idc: "default".into(),
            },
            T0,
        )
        .unwrap();
    assert_eq!(
        state.idc_for("192.168.0.1".parse().unwrap()),
        Some("default"),
        "a /0 rule matches every IPv4 address"
    );
    state
        .apply(
            Command::RemoveIdcRule {
                cidr: "10.1.2.0/24".into(),
            },
            T0,
        )
        .unwrap();
    assert_eq!(state.idc_for("10.1.2.3".parse().unwrap()), Some("dc1"));
}

#[test]
fn idc_ties_go_to_the_first_rule() {
    let state = MetadataState {
        idc_rules: vec![
            IdcRule {
                network: "10.0.0.0".parse().unwrap(),
                prefix_len: 8,
                idc: "first".into(),
            },
            IdcRule {
                network: "10.0.0.0".parse().unwrap(),
                prefix_len: 8,
                idc: "second".into(),
            },
        ],
        ..MetadataState::default()
    };
    assert_eq!(state.idc_for("10.0.0.1".parse().unwrap()), Some("first"));
}

#[test]
fn sdk_policy_blocks_old_and_bad_versions() {
    let mut state = MetadataState::default();
    assert!(state.sdk_policy().check("0.0.1").is_ok());
    state
        .apply(
            Command::SetSdkPolicy {
                min_version: Some("1.2.0".into()),
                blocked_versions: BTreeSet::from(["1.3.1".to_owned()]),
                refuse: false,
                language_min_versions: BTreeMap::new(),
            },
            T0,
        )
        .unwrap();
    let policy = state.sdk_policy();
    assert!(policy.check("1.2.0").is_ok());
    assert!(policy.check("1.10.0-rc1").is_ok());
    assert!(matches!(policy.check("1.1.9"), Err(SdkVersionError::TooOld { .. })));
    assert!(matches!(policy.check("1.3.1"), Err(SdkVersionError::Blocked { .. })));
    assert!(matches!(
        policy.check("latest"),
        Err(SdkVersionError::Unparsable { .. })
    ));
    let error = state
        .apply(
            Command::SetSdkPolicy {
                min_version: Some("one".into()),
                blocked_versions: BTreeSet::new(),
                refuse: false,
                language_min_versions: BTreeMap::new(),
            },
            T0,
        )
        .unwrap_err();
    assert!(error.to_string().contains("MAJOR.MINOR.PATCH"), "{error}");
}

#[test]
fn decision_times_never_go_backwards() {
    let mut state = MetadataState::default();
    state.apply(request_topic("orders", "alice"), T0).unwrap();
    // A new leader whose clock is behind.
    state.apply(approve_topic("orders"), T0 - 60_000).unwrap();
    assert_eq!(state.topic("orders").unwrap().approval.decided_at_ms, Some(T0));
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["orders", "payments", "bad name", "g1", "broker-a"]).prop_map(str::to_owned)
}

fn person() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["alice", "admin", ""]).prop_map(str::to_owned)
}

fn queues() -> impl Strategy<Value = BTreeMap<String, u32>> {
    prop::collection::btree_map(name(), prop::sample::select(vec![0_u32, 1, 8, 2000]), 0..3)
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (
            name(),
            person(),
            queues(),
            0_u8..5,
            prop::option::of(0_u32..3),
            person()
        )
            .prop_map(|(name, owner, queues, perm, produce_limit, requested_by)| {
                Command::RequestTopic(TopicRequest {
                    name,
                    owner,
                    description: "d".into(),
                    queues,
                    perm,
                    produce_limit,
                    requested_by,
                })
            }),
        (name(), person(), prop::option::of(person())).prop_map(|(name, decided_by, reason)| {
            Command::ApproveTopic {
                name,
                decided_by,
                reason,
            }
        }),
        (name(), person(), person()).prop_map(|(name, decided_by, reason)| Command::RejectTopic {
            name,
            decided_by,
            reason,
        }),
        (name(), person(), prop::option::of(queues()), prop::option::of(0_u8..5)).prop_map(
            |(name, updated_by, queues, perm)| Command::UpdateTopic {
                name,
                updated_by,
                reason: None,
                changes: TopicChanges {
                    queues,
                    perm,
                    produce_limit: ProduceLimitChange::Remove,
                    owner: None,
                    description: Some("new".into()),
                },
            }
        ),
        (name(), person(), person()).prop_map(|(name, deleted_by, reason)| Command::DeleteTopic {
            name,
            deleted_by,
            reason,
        }),
        (
            name(),
            prop::collection::btree_set(name(), 0..3),
            prop::option::of(0_u32..20)
        )
            .prop_map(|(name, topics, max_retries)| Command::RequestGroup(GroupRequest {
                name,
                owner: "team".into(),
                description: String::new(),
                topics,
                max_retries,
                consume_mode: ConsumeMode::Broadcasting,
                requested_by: "bob".into(),
            })),
        (name(), person()).prop_map(|(name, decided_by)| Command::ApproveGroup {
            name,
            decided_by,
            reason: None,
        }),
        (name(), person()).prop_map(|(name, decided_by)| Command::RejectGroup {
            name,
            decided_by,
            reason: "no".into(),
        }),
        (name(), person()).prop_map(|(name, deleted_by)| Command::DeleteGroup {
            name,
            deleted_by,
            reason: "gone".into(),
        }),
        (
            name(),
            name(),
            any::<bool>(),
            0_u64..4,
            prop::collection::btree_map(name(), 1_u32..8, 0..3)
        )
            .prop_map(|(group, member, master, epoch, topics)| Command::RegisterBroker {
                group,
                member: BrokerRegistration {
                    name: member,
                    addr: "127.0.0.1:7911".into(),
                    idc: "dc1".into(),
                    role: if master { BrokerRole::Master } else { BrokerRole::Slave },
                    epoch,
                    max_offset: epoch * 10,
                    registration_digest: epoch,
                    in_sync: if master {
                        vec!["g1".into(), "broker-a".into()]
                    } else {
                        Vec::new()
                    },
                    ack_policy: None,
                    ack_replicas: 0,
                },
                topics,
            }),
        (name(), name(), 0_u64..4).prop_map(|(group, member, epoch)| Command::ElectMaster {
            group,
            member,
            epoch,
            reason: "test".into(),
        }),
        (name(), name(), person()).prop_map(|(group, preferred, by)| Command::FenceMaster {
            group,
            preferred,
            by,
            reason: None,
        }),
        (name(), name()).prop_map(|(group, member)| Command::UnregisterBroker { group, member }),
        (
            prop::sample::select(vec!["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/16", "fd00::/8", "x"]),
            prop::sample::select(vec!["dc1", "dc2", ""])
        )
            .prop_map(|(cidr, idc)| Command::SetIdcRule {
                cidr: cidr.into(),
                idc: idc.into(),
            }),
        prop::sample::select(vec!["10.0.0.0/8", "fd00::/8"])
            .prop_map(|cidr| Command::RemoveIdcRule { cidr: cidr.into() }),
        (
            prop::sample::select(vec!["dc1", "dc2", "bad idc"]),
            prop::sample::select(vec!["ops", ""])
        )
            .prop_map(|(idc, by)| Command::Evacuate {
                idc: idc.into(),
                by: by.into(),
                reason: None,
            }),
        prop::sample::select(vec!["ops", ""]).prop_map(|by| Command::Restore {
            by: by.into(),
            reason: None,
        }),
        (
            prop::option::of(prop::sample::select(vec!["1.0.0", "2.1", "x"])),
            prop::collection::btree_set(prop::sample::select(vec!["1.0.1".to_owned(), "bad".to_owned()]), 0..2)
        )
            .prop_map(|(min_version, blocked_versions)| Command::SetSdkPolicy {
                min_version: min_version.map(str::to_owned),
                blocked_versions,
                refuse: false,
                language_min_versions: BTreeMap::new(),
            }),
    ]
}

fn commands() -> impl Strategy<Value = Vec<(Command, u64)>> {
    prop::collection::vec((command(), T0..T0 + 100_000), 0..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn apply_is_deterministic(commands in commands()) {
        let mut first = MetadataState::default();
        let mut second = MetadataState::default();
        for (command, now_ms) in commands {
            let first_result = first.apply(command.clone(), now_ms);
            let second_result = second.apply(command, now_ms);
            prop_assert_eq!(first_result, second_result);
        }
        prop_assert_eq!(first, second);
    }

    #[test]
    fn failed_commands_change_nothing_and_history_only_grows(commands in commands()) {
        let mut state = MetadataState::default();
        for (command, now_ms) in commands {
            let before = state.clone();
            match state.apply(command, now_ms) {
                Err(_) => prop_assert_eq!(&state, &before),
                Ok(_) => {
                    for (name, old) in &before.topic_history {
                        prop_assert!(state.topic_history(name).starts_with(old));
                    }
                    for (name, old) in &before.group_history {
                        prop_assert!(state.group_history(name).starts_with(old));
                    }
                }
            }
        }
    }

    #[test]
    fn state_and_commands_round_trip_through_json(commands in commands(), split in 0_usize..60) {
        let mut straight = MetadataState::default();
        let mut restored = MetadataState::default();
        for (index, (command, now_ms)) in commands.into_iter().enumerate() {
            let encoded = serde_json::to_vec(&command).unwrap();
            prop_assert_eq!(&serde_json::from_slice::<Command>(&encoded).unwrap(), &command);
            if index == split {
                // As if a snapshot was taken here and a node restored from it.
                restored = serde_json::from_slice(&serde_json::to_vec(&restored).unwrap()).unwrap();
            }
            let straight_result = straight.apply(command.clone(), now_ms);
            let restored_result = restored.apply(command, now_ms);
            prop_assert_eq!(straight_result, restored_result);
        }
        let decoded: MetadataState = serde_json::from_slice(&serde_json::to_vec(&straight).unwrap()).unwrap();
        prop_assert_eq!(&decoded, &straight);
        prop_assert_eq!(&restored, &straight);
    }
}
