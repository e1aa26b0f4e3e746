//! Consumer-group handlers over [`crate::coordinator`]: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, ListGroups,
//! DescribeGroups and DeleteGroups. JoinGroup and SyncGroup wait (asynchronously) for the
//! rebalance; committed offsets go to `sluice_log::OffsetStore` (the `__consumer_offsets`
//! topic), so they survive restarts. Group membership itself is in memory, as in Kafka a
//! coordinator restart makes members rejoin.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_log::OffsetCommit;

use super::code;
use crate::coordinator::{GroupState, Join, JoinRequest, Sync};
use crate::KafkaServer;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn now() -> i64 {
    sluice_core::time::now_ms()
}

/// Longest a JoinGroup or SyncGroup waits between checks of its group, ms.
const POLL_MS: u64 = 100;

pub(crate) fn find_coordinator(server: &KafkaServer, r: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    let mut resp = FindCoordinatorResponse::default();
    let host = s(&server.options.advertised_host);
    if version >= 4 {
        resp.coordinators = r
            .coordinator_keys
            .into_iter()
            .map(|key| Coordinator::default().with_key(key).with_node_id(BrokerId(0)).with_host(host.clone()).with_port(server.options.advertised_port))
            .collect();
    } else {
        resp.node_id = BrokerId(0);
        resp.host = host;
        resp.port = server.options.advertised_port;
    }
    resp
}

pub(crate) async fn join(server: &KafkaServer, r: JoinGroupRequest, version: i16, client_id: String, client_host: String) -> JoinGroupResponse {
    let group_id = r.group_id.0.to_string();
    let req = JoinRequest {
        member_id: r.member_id.to_string(),
        group_instance_id: r.group_instance_id.map(|g| g.to_string()),
        client_id,
        client_host,
        session_timeout_ms: r.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 { r.rebalance_timeout_ms } else { r.session_timeout_ms },
        protocol_type: r.protocol_type.to_string(),
        protocols: r.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
        require_known_member_id: version >= 4,
    };
    let error = |c: ResponseError, member: &str| JoinGroupResponse::default().with_error_code(code(c)).with_member_id(s(member)).with_generation_id(-1);
    if group_id.is_empty() {
        return error(ResponseError::InvalidGroupId, &req.member_id);
    }
    let outcome = server.with_group(&group_id, |g| g.join(req, now(), server.options.group_initial_rebalance_delay_ms));
    let member_id = match outcome {
        Join::Error { code: c, member_id } => return error(c, &member_id),
        Join::Waiting { member_id } => member_id,
    };
    loop {
        let notified = server.group_changed.notified();
        // `notified` exists before the check, so a change after it still wakes this task.
        let result = server.poll_group(&group_id, |g| (g.maybe_complete(now()), g.take_join_result(&member_id)));
        match result {
            Err(c) => return error(c, &member_id),
            Ok(Some(j)) => {
                let mut resp = JoinGroupResponse::default()
                    .with_generation_id(j.generation)
                    .with_protocol_type(Some(s(&j.protocol_type)))
                    .with_protocol_name(Some(s(&j.protocol)))
                    .with_leader(s(&j.leader))
                    .with_member_id(s(&j.member_id));
                resp.members = j
                    .members
                    .into_iter()
                    .map(|(id, instance, metadata)| {
                        JoinGroupResponseMember::default().with_member_id(s(&id)).with_group_instance_id(instance.map(|i| s(&i))).with_metadata(metadata)
                    })
                    .collect();
                return resp;
            }
            Ok(None) => {
                let _ = tokio::time::timeout(Duration::from_millis(POLL_MS), notified).await;
            }
        }
    }
}

pub(crate) async fn sync(server: &KafkaServer, r: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = r.group_id.0.to_string();
    let member_id = r.member_id.to_string();
    let mut assignments: Option<Vec<(String, Bytes)>> = Some(r.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect());
    loop {
        let notified = server.group_changed.notified();
        let (outcome, protocol_type, protocol) = server.poll_group(&group_id, |g| {
            let before = g.state;
            let o = g.sync(&member_id, r.generation_id, assignments.take().unwrap_or_default(), now());
            (g.state != before, (o, g.protocol_type.clone(), g.protocol.clone()))
        });
        match outcome {
            Sync::Error(c) => return SyncGroupResponse::default().with_error_code(code(c)),
            Sync::Assignment(a) => {
                return SyncGroupResponse::default()
                    .with_assignment(a)
                    .with_protocol_type(protocol_type.map(|p| s(&p)))
                    .with_protocol_name(protocol.map(|p| s(&p)))
            }
            Sync::Waiting => {
                let _ = tokio::time::timeout(Duration::from_millis(POLL_MS), notified).await;
            }
        }
    }
}

pub(crate) fn heartbeat(server: &KafkaServer, r: HeartbeatRequest) -> HeartbeatResponse {
    let result = server.poll_group(&r.group_id.0, |g| (false, g.heartbeat(&r.member_id, r.generation_id, now())));
    HeartbeatResponse::default().with_error_code(result.err().map(code).unwrap_or(0))
}

pub(crate) fn leave(server: &KafkaServer, r: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let mut resp = LeaveGroupResponse::default();
    if version < 3 {
        let result = server.with_group(&r.group_id.0, |g| g.leave(&r.member_id, now()));
        return resp.with_error_code(result.err().map(code).unwrap_or(0));
    }
    for m in r.members {
        let result = server.with_group(&r.group_id.0, |g| {
            // A static member may leave by its group.instance.id alone (KIP-345).
            let by_instance = || g.members.values().find(|x| x.group_instance_id.as_deref() == m.group_instance_id.as_deref()).map(|x| x.id.clone());
            let id = if m.member_id.is_empty() && m.group_instance_id.is_some() { by_instance().unwrap_or_default() } else { m.member_id.to_string() };
            g.leave(&id, now())
        });
        resp.members.push(
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(result.err().map(code).unwrap_or(0)),
        );
    }
    resp
}

pub(crate) fn offset_commit(server: &KafkaServer, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = r.group_id.0.to_string();
    let allowed = server.poll_group(&group_id, |g| (false, g.may_commit(&r.member_id, r.generation_id_or_member_epoch)));
    let mut commits = Vec::new();
    let mut resp = OffsetCommitResponse::default();
    for t in &r.topics {
        let topic = server.log.topic(&t.name.0);
        let mut tr = OffsetCommitResponseTopic::default().with_name(t.name.clone());
        for p in &t.partitions {
            let known = topic.as_ref().is_some_and(|tp| p.partition_index >= 0 && (p.partition_index as u32) < tp.partition_count());
            let err = match (&allowed, known) {
                (Err(c), _) => code(*c),
                (Ok(()), false) => code(ResponseError::UnknownTopicOrPartition),
                (Ok(()), true) if p.committed_offset < 0 => code(ResponseError::InvalidCommitOffsetSize),
                (Ok(()), true) => {
                    commits.push(OffsetCommit {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index as u32,
                        offset: p.committed_offset as u64,
                        metadata: p.committed_metadata.as_deref().unwrap_or("").to_string(),
                    });
                    0
                }
            };
            tr.partitions.push(OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(err));
        }
        resp.topics.push(tr);
    }
    if !commits.is_empty() {
        if let Err(e) = server.offsets.commit(&group_id, &commits, now()) {
            tracing::error!(group = %group_id, error = %e, "offset commit failed");
            for tr in &mut resp.topics {
                for pr in &mut tr.partitions {
                    if pr.error_code == 0 {
                        pr.error_code = code(ResponseError::KafkaStorageError);
                    }
                }
            }
        }
    }
    resp
}

/// (partition, offset or -1, metadata) for the requested partitions, or every committed
/// one of the topic when `partitions` is None.
fn committed(server: &KafkaServer, group: &str, topic: &str, partitions: Option<&[i32]>) -> Vec<(i32, i64, String)> {
    match partitions {
        Some(ps) => ps
            .iter()
            .map(|&p| match server.offsets.fetch(group, topic, p.max(0) as u32).filter(|_| p >= 0) {
                Some(c) => (p, c.offset as i64, c.metadata),
                None => (p, -1, String::new()),
            })
            .collect(),
        None => {
            server.offsets.group(group).into_iter().filter(|(t, _, _)| t == topic).map(|(_, p, c)| (p as i32, c.offset as i64, c.metadata)).collect()
        }
    }
}

/// Committed offsets by topic: (topic, [(partition, offset or -1, metadata)]).
type CommittedTopics = Vec<(String, Vec<(i32, i64, String)>)>;

fn committed_topics(server: &KafkaServer, group: &str, requested: Option<Vec<(String, Vec<i32>)>>) -> CommittedTopics {
    match requested {
        Some(ts) => ts.into_iter().map(|(t, ps)| { let c = committed(server, group, &t, Some(&ps)); (t, c) }).collect(),
        None => {
            let mut topics: Vec<String> = server.offsets.group(group).into_iter().map(|(t, _, _)| t).collect();
            topics.dedup();
            topics.into_iter().map(|t| { let c = committed(server, group, &t, None); (t, c) }).collect()
        }
    }
}

pub(crate) fn offset_fetch(server: &KafkaServer, r: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let mut resp = OffsetFetchResponse::default();
    if version < 8 {
        let requested = r.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
        for (topic, parts) in committed_topics(server, &r.group_id.0, requested) {
            let mut tr = OffsetFetchResponseTopic::default().with_name(TopicName(s(&topic)));
            tr.partitions = parts
                .into_iter()
                .map(|(p, o, m)| OffsetFetchResponsePartition::default().with_partition_index(p).with_committed_offset(o).with_committed_leader_epoch(-1).with_metadata(Some(s(&m))))
                .collect();
            resp.topics.push(tr);
        }
        return resp;
    }
    for g in r.groups {
        let requested = g.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
        let mut gr = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
        for (topic, parts) in committed_topics(server, &g.group_id.0, requested) {
            let mut tr = OffsetFetchResponseTopics::default().with_name(TopicName(s(&topic)));
            tr.partitions = parts
                .into_iter()
                .map(|(p, o, m)| OffsetFetchResponsePartitions::default().with_partition_index(p).with_committed_offset(o).with_committed_leader_epoch(-1).with_metadata(Some(s(&m))))
                .collect();
            gr.topics.push(tr);
        }
        resp.groups.push(gr);
    }
    resp
}

/// Every group the coordinator or the offset store knows: (name, state, protocol type).
fn known_groups(server: &KafkaServer) -> Vec<(String, GroupState, String)> {
    let mut out: std::collections::BTreeMap<String, (GroupState, String)> =
        server.offsets.groups().into_iter().map(|g| (g, (GroupState::Empty, "consumer".to_string()))).collect();
    for (name, g) in server.groups.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        if g.state != GroupState::Empty || out.contains_key(name) {
            out.insert(name.clone(), (g.state, g.protocol_type.clone().unwrap_or_else(|| "consumer".into())));
        }
    }
    out.into_iter().map(|(n, (st, pt))| (n, st, pt)).collect()
}

pub(crate) fn list_groups(server: &KafkaServer, r: ListGroupsRequest) -> ListGroupsResponse {
    let mut resp = ListGroupsResponse::default();
    for (name, state, protocol_type) in known_groups(server) {
        if !r.states_filter.is_empty() && !r.states_filter.iter().any(|f| f.eq_ignore_ascii_case(state.name())) {
            continue;
        }
        if !r.types_filter.is_empty() && !r.types_filter.iter().any(|f| f.eq_ignore_ascii_case("classic")) {
            continue;
        }
        resp.groups.push(
            ListedGroup::default()
                .with_group_id(GroupId(s(&name)))
                .with_protocol_type(s(&protocol_type))
                .with_group_state(s(state.name()))
                .with_group_type(s("classic")),
        );
    }
    resp
}

pub(crate) fn describe_groups(server: &KafkaServer, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    let mut resp = DescribeGroupsResponse::default();
    let known = known_groups(server);
    for name in r.groups {
        let mut d = DescribedGroup::default().with_group_id(name.clone()).with_authorized_operations(i32::MIN);
        let groups = server.groups.lock().unwrap_or_else(|p| p.into_inner());
        match groups.get(name.0.as_str()) {
            Some(g) => {
                let protocol = g.protocol.clone().unwrap_or_default();
                d = d
                    .with_group_state(s(g.state.name()))
                    .with_protocol_type(s(g.protocol_type.as_deref().unwrap_or("")))
                    .with_protocol_data(s(&protocol));
                d.members = g
                    .members
                    .values()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(s(&m.id))
                            .with_group_instance_id(m.group_instance_id.as_ref().map(|i| s(i)))
                            .with_client_id(s(&m.client_id))
                            .with_client_host(s(&m.client_host))
                            .with_member_metadata(m.metadata(&protocol))
                            .with_member_assignment(m.assignment.clone())
                    })
                    .collect();
            }
            // Kafka answers an unknown group with state Dead and no error.
            None if known.iter().any(|(n, _, _)| n == name.0.as_str()) => d = d.with_group_state(s("Empty")).with_protocol_type(s("consumer")),
            None => d = d.with_group_state(s("Dead")),
        }
        resp.groups.push(d);
    }
    resp
}

pub(crate) fn delete_groups(server: &KafkaServer, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut resp = DeleteGroupsResponse::default();
    for name in r.groups_names {
        let busy = server.groups.lock().unwrap_or_else(|p| p.into_inner()).get(name.0.as_str()).is_some_and(|g| !g.members.is_empty());
        let known = known_groups(server).iter().any(|(n, _, _)| n == name.0.as_str());
        let error = if busy {
            code(ResponseError::NonEmptyGroup)
        } else if !known {
            code(ResponseError::GroupIdNotFound)
        } else {
            server.groups.lock().unwrap_or_else(|p| p.into_inner()).remove(name.0.as_str());
            match server.offsets.delete_group(&name.0, now()) {
                Ok(_) => 0,
                Err(e) => {
                    tracing::error!(group = %name.0.as_str(), error = %e, "deleting a group's offsets failed");
                    code(ResponseError::KafkaStorageError)
                }
            }
        };
        resp.results.push(DeletableGroupResult::default().with_group_id(name).with_error_code(error));
    }
    resp
}

/// Expires sessions and completes timed-out rebalances every `POLL_MS`, until dropped.
pub(crate) async fn tick(server: std::sync::Arc<KafkaServer>) {
    let mut every = tokio::time::interval(Duration::from_millis(POLL_MS));
    loop {
        every.tick().await;
        let changed = {
            let mut groups = server.groups.lock().unwrap_or_else(|p| p.into_inner());
            let t = now();
            let changed = groups.values_mut().fold(false, |acc, g| g.tick(t) | acc);
            // Forget groups nobody is in (their committed offsets stay in the store), so
            // requests naming arbitrary groups cannot grow this map without bound.
            groups.retain(|_, g| !g.is_idle());
            changed
        };
        if changed {
            server.group_changed.notify_waiters();
        }
    }
}
