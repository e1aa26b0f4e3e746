//! Which permission each Kafka request needs ([`needed`]), and the answer to a principal
//! whose role lacks it ([`refusal`]): the API's own response with Kafka's authorization
//! error in every entry (TOPIC_AUTHORIZATION_FAILED for topics,
//! GROUP_AUTHORIZATION_FAILED for groups, CLUSTER_AUTHORIZATION_FAILED for the cluster),
//! as a Kafka broker with ACLs answers (the Kafka protocol guide, "Error Codes").
//!
//! | request | permission |
//! |---|---|
//! | ApiVersions, Metadata, FindCoordinator, ListGroups, DescribeGroups, DescribeConfigs | `read` |
//! | ListOffsets | `read` |
//! | Produce, InitProducerId | `produce` |
//! | Fetch | `consume` (`admin` for internal `__` topics such as `__audit`) |
//! | JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch | `consume` |
//! | CreateTopics, DeleteTopics, CreatePartitions, AlterConfigs, IncrementalAlterConfigs, DeleteGroups | `manage` |
//!
//! A principal limited to some topics or groups ([`sluice_auth::Limits`]) is refused a
//! request that names one outside them ([`topics`], [`groups`]); Metadata, ListGroups and
//! OffsetFetch for all topics are answered without what lies outside.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use sluice_auth::Permission;

use super::code;
use crate::KafkaServer;

/// The topics a request names, to check against a principal's limits
/// ([`sluice_auth::Limits`]). Metadata is not refused but filtered ([`metadata_within`]).
pub fn topics(request: &RequestKind) -> Vec<&str> {
    fn configs(types_names: Vec<(i8, &str)>) -> Vec<&str> {
        // Resource type 2 is a topic (the Kafka protocol guide, DescribeConfigs).
        types_names.into_iter().filter(|(ty, _)| *ty == 2).map(|(_, n)| n).collect()
    }
    match request {
        RequestKind::Produce(r) => r.topic_data.iter().map(|t| t.name.0.as_str()).collect(),
        RequestKind::Fetch(r) => r.topics.iter().map(|t| t.topic.0.as_str()).collect(),
        RequestKind::ListOffsets(r) => r.topics.iter().map(|t| t.name.0.as_str()).collect(),
        RequestKind::OffsetCommit(r) => r.topics.iter().map(|t| t.name.0.as_str()).collect(),
        RequestKind::OffsetFetch(r) => {
            let old = r.topics.iter().flatten().map(|t| t.name.0.as_str());
            old.chain(r.groups.iter().flat_map(|g| g.topics.iter().flatten()).map(|t| t.name.0.as_str())).collect()
        }
        RequestKind::CreateTopics(r) => r.topics.iter().map(|t| t.name.0.as_str()).collect(),
        RequestKind::DeleteTopics(r) => r.topic_names.iter().map(|t| t.0.as_str()).chain(r.topics.iter().filter_map(|t| t.name.as_ref()).map(|t| t.0.as_str())).collect(),
        RequestKind::CreatePartitions(r) => r.topics.iter().map(|t| t.name.0.as_str()).collect(),
        RequestKind::DescribeConfigs(r) => configs(r.resources.iter().map(|x| (x.resource_type, x.resource_name.as_str())).collect()),
        RequestKind::AlterConfigs(r) => configs(r.resources.iter().map(|x| (x.resource_type, x.resource_name.as_str())).collect()),
        RequestKind::IncrementalAlterConfigs(r) => configs(r.resources.iter().map(|x| (x.resource_type, x.resource_name.as_str())).collect()),
        _ => Vec::new(),
    }
}

/// The consumer groups a request names, to check against a principal's group limits
/// (Kafka's `GROUP` resource). ListGroups is not refused but filtered ([`groups_within`]).
pub fn groups(request: &RequestKind) -> Vec<&str> {
    match request {
        RequestKind::JoinGroup(r) => vec![r.group_id.0.as_str()],
        RequestKind::SyncGroup(r) => vec![r.group_id.0.as_str()],
        RequestKind::Heartbeat(r) => vec![r.group_id.0.as_str()],
        RequestKind::LeaveGroup(r) => vec![r.group_id.0.as_str()],
        RequestKind::OffsetCommit(r) => vec![r.group_id.0.as_str()],
        // v0–7 name one group, v8+ a list.
        RequestKind::OffsetFetch(r) => std::iter::once(r.group_id.0.as_str()).filter(|g| !g.is_empty() || r.groups.is_empty()).chain(r.groups.iter().map(|g| g.group_id.0.as_str())).collect(),
        RequestKind::DescribeGroups(r) => r.groups.iter().map(|g| g.0.as_str()).collect(),
        RequestKind::DeleteGroups(r) => r.groups_names.iter().map(|g| g.0.as_str()).collect(),
        // Key type 0 is a group (1 a transactional id); v4+ send a list of keys.
        RequestKind::FindCoordinator(r) if r.key_type == 0 => std::iter::once(r.key.as_str()).filter(|k| !k.is_empty() || r.coordinator_keys.is_empty()).chain(r.coordinator_keys.iter().map(|k| k.as_str())).collect(),
        _ => Vec::new(),
    }
}

/// A ListGroups answer without the groups outside the principal's limits.
pub fn groups_within(mut resp: ListGroupsResponse, limits: &sluice_auth::Limits) -> ListGroupsResponse {
    resp.groups.retain(|g| limits.group(g.group_id.0.as_str()));
    resp
}

/// An OffsetFetch answer without the topics outside the principal's limits: a request for
/// all of a group's topics (`topics` null) lists only those the principal may describe.
pub fn offsets_within(mut resp: OffsetFetchResponse, limits: &sluice_auth::Limits) -> OffsetFetchResponse {
    resp.topics.retain(|t| limits.topic(t.name.0.as_str()));
    for g in &mut resp.groups {
        g.topics.retain(|t| limits.topic(t.name.0.as_str()));
    }
    resp
}

/// The audited action of a request (for the audit topic), its API's name, and its
/// targets: deleting topics or groups, and altering topics (configs, partitions).
pub fn audited(request: &RequestKind) -> Option<(&'static str, &'static str, Vec<String>)> {
    let names = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<Vec<_>>();
    Some(match request {
        RequestKind::DeleteTopics(_) => ("topic_delete", "DeleteTopics", names(topics(request))),
        RequestKind::CreatePartitions(_) => ("topic_alter", "CreatePartitions", names(topics(request))),
        RequestKind::AlterConfigs(_) => ("topic_alter", "AlterConfigs", names(topics(request))),
        RequestKind::IncrementalAlterConfigs(_) => ("topic_alter", "IncrementalAlterConfigs", names(topics(request))),
        RequestKind::DeleteGroups(r) => ("group_delete", "DeleteGroups", r.groups_names.iter().map(|g| g.0.to_string()).collect()),
        _ => return None,
    })
}

/// A Metadata answer for a principal limited to some topics: topics outside the limits are
/// left out of a request for every topic, and get TOPIC_AUTHORIZATION_FAILED when the
/// request names them (and are not auto-created), as Kafka answers a principal that may
/// not describe a topic.
pub fn metadata_within(server: &KafkaServer, mut r: MetadataRequest, limits: &sluice_auth::Limits) -> MetadataResponse {
    let mut refused = Vec::new();
    if let Some(ts) = r.topics.as_mut() {
        let (ok, bad): (Vec<_>, Vec<_>) = std::mem::take(ts).into_iter().partition(|t| t.name.as_ref().is_none_or(|n| limits.topic(n.0.as_str())));
        *ts = ok;
        refused = bad.into_iter().filter_map(|t| t.name).collect();
    }
    let mut resp = super::data::metadata(server, r);
    resp.topics.retain(|t| t.name.as_ref().is_some_and(|n| limits.topic(n.0.as_str())));
    for name in refused {
        resp.topics.push(metadata_response::MetadataResponseTopic::default().with_name(Some(name)).with_error_code(code(ResponseError::TopicAuthorizationFailed)));
    }
    resp
}

/// The permission a request needs.
pub fn needed(request: &RequestKind) -> Permission {
    use Permission::*;
    match request {
        RequestKind::Produce(_) | RequestKind::InitProducerId(_) => Produce,
        RequestKind::Fetch(r) if r.topics.iter().any(|t| t.topic.0.starts_with("__")) => Admin,
        RequestKind::Fetch(_)
        | RequestKind::JoinGroup(_)
        | RequestKind::SyncGroup(_)
        | RequestKind::Heartbeat(_)
        | RequestKind::LeaveGroup(_)
        | RequestKind::OffsetCommit(_)
        | RequestKind::OffsetFetch(_) => Consume,
        RequestKind::CreateTopics(_)
        | RequestKind::DeleteTopics(_)
        | RequestKind::CreatePartitions(_)
        | RequestKind::AlterConfigs(_)
        | RequestKind::IncrementalAlterConfigs(_)
        | RequestKind::DeleteGroups(_) => Manage,
        _ => Read,
    }
}

/// The response refusing `request` (sent at `version`) for lack of permission; `None` for
/// requests every role may send.
pub fn refusal(request: &RequestKind, version: i16) -> Option<ResponseKind> {
    let topic = code(ResponseError::TopicAuthorizationFailed);
    let group = code(ResponseError::GroupAuthorizationFailed);
    let cluster = code(ResponseError::ClusterAuthorizationFailed);
    let why = Some(kafka_protocol::protocol::StrBytes::from_static_str("the principal's role or resource limits do not allow this (see `sluice users list`)"));
    Some(match request {
        RequestKind::Produce(r) => ResponseKind::Produce(ProduceResponse::default().with_responses(
            r.topic_data
                .iter()
                .map(|t| {
                    produce_response::TopicProduceResponse::default().with_name(t.name.clone()).with_partition_responses(
                        t.partition_data.iter().map(|p| produce_response::PartitionProduceResponse::default().with_index(p.index).with_error_code(topic).with_base_offset(-1)).collect(),
                    )
                })
                .collect(),
        )),
        RequestKind::Fetch(r) => ResponseKind::Fetch(FetchResponse::default().with_responses(
            r.topics
                .iter()
                .map(|t| {
                    let parts = t.partitions.iter().map(|p| fetch_response::PartitionData::default().with_partition_index(p.partition).with_error_code(topic).with_high_watermark(-1));
                    fetch_response::FetchableTopicResponse::default().with_topic(t.topic.clone()).with_topic_id(t.topic_id).with_partitions(parts.collect())
                })
                .collect(),
        )),
        RequestKind::InitProducerId(_) => ResponseKind::InitProducerId(InitProducerIdResponse::default().with_error_code(cluster).with_producer_id(ProducerId(-1)).with_producer_epoch(-1)),
        RequestKind::JoinGroup(_) => ResponseKind::JoinGroup(JoinGroupResponse::default().with_error_code(group).with_generation_id(-1)),
        RequestKind::SyncGroup(_) => ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(group)),
        RequestKind::Heartbeat(_) => ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(group)),
        RequestKind::LeaveGroup(_) => ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(group)),
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(OffsetCommitResponse::default().with_topics(
            r.topics
                .iter()
                .map(|t| {
                    let parts = t.partitions.iter().map(|p| offset_commit_response::OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(group));
                    offset_commit_response::OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(parts.collect())
                })
                .collect(),
        )),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(
            OffsetFetchResponse::default()
                .with_error_code(group)
                .with_groups(r.groups.iter().map(|g| offset_fetch_response::OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone()).with_error_code(group)).collect()),
        ),
        // v4+ answer per key; earlier versions in the top-level fields.
        RequestKind::FindCoordinator(r) if version >= 4 => {
            let keys = r.coordinator_keys.iter().map(|k| find_coordinator_response::Coordinator::default().with_key(k.clone()).with_node_id(BrokerId(-1)).with_port(-1).with_error_code(group).with_error_message(why.clone()));
            ResponseKind::FindCoordinator(FindCoordinatorResponse::default().with_coordinators(keys.collect()))
        }
        RequestKind::FindCoordinator(_) => {
            let why = if version >= 1 { why.clone() } else { None };
            ResponseKind::FindCoordinator(FindCoordinatorResponse::default().with_error_code(group).with_error_message(why).with_node_id(BrokerId(-1)).with_port(-1))
        }
        RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(
            DescribeGroupsResponse::default().with_groups(r.groups.iter().map(|g| describe_groups_response::DescribedGroup::default().with_group_id(g.clone()).with_error_code(group).with_authorized_operations(i32::MIN)).collect()),
        ),
        RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(
            DeleteGroupsResponse::default().with_results(r.groups_names.iter().map(|g| delete_groups_response::DeletableGroupResult::default().with_group_id(g.clone()).with_error_code(group)).collect()),
        ),
        RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(
            r.topics.iter().map(|t| create_topics_response::CreatableTopicResult::default().with_name(t.name.clone()).with_error_code(topic).with_error_message(why.clone()).with_num_partitions(-1).with_replication_factor(-1)).collect(),
        )),
        RequestKind::DeleteTopics(r) => {
            let names = r.topic_names.iter().cloned().map(Some).chain(r.topics.iter().map(|t| t.name.clone()));
            ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(names.map(|n| delete_topics_response::DeletableTopicResult::default().with_name(n).with_error_code(topic).with_error_message(why.clone())).collect()))
        }
        RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(CreatePartitionsResponse::default().with_results(
            r.topics.iter().map(|t| create_partitions_response::CreatePartitionsTopicResult::default().with_name(t.name.clone()).with_error_code(topic).with_error_message(why.clone())).collect(),
        )),
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(AlterConfigsResponse::default().with_responses(
            r.resources
                .iter()
                .map(|x| {
                    let c = if x.resource_type == 2 { topic } else { cluster };
                    alter_configs_response::AlterConfigsResourceResponse::default().with_resource_type(x.resource_type).with_resource_name(x.resource_name.clone()).with_error_code(c).with_error_message(why.clone())
                })
                .collect(),
        )),
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(IncrementalAlterConfigsResponse::default().with_responses(
            r.resources
                .iter()
                .map(|x| {
                    let c = if x.resource_type == 2 { topic } else { cluster };
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(x.resource_type)
                        .with_resource_name(x.resource_name.clone())
                        .with_error_code(c)
                        .with_error_message(why.clone())
                })
                .collect(),
        )),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_auth::Role;

    #[test]
    fn requests_name_their_topics() {
        let name = super::super::topic_name;
        let produce = RequestKind::Produce(ProduceRequest::default().with_topic_data(vec![produce_request::TopicProduceData::default().with_name(name("a"))]));
        assert_eq!(topics(&produce), vec!["a"]);
        let configs = RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default().with_resource_type(2).with_resource_name("t".into()),
            describe_configs_request::DescribeConfigsResource::default().with_resource_type(4).with_resource_name("1".into()),
        ]));
        assert_eq!(topics(&configs), vec!["t"], "broker resources are not topics");
        let delete = RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topic_names(vec![name("x")]).with_topics(vec![delete_topics_request::DeleteTopicState::default().with_name(Some(name("y")))]));
        assert_eq!(topics(&delete), vec!["x", "y"]);
        assert!(topics(&RequestKind::Metadata(MetadataRequest::default())).is_empty());
    }

    #[test]
    fn requests_name_their_groups() {
        let g = |n: &str| GroupId(kafka_protocol::protocol::StrBytes::from_string(n.into()));
        assert_eq!(groups(&RequestKind::JoinGroup(JoinGroupRequest::default().with_group_id(g("a")))), vec!["a"]);
        let old = OffsetFetchRequest::default().with_group_id(g("a"));
        assert_eq!(groups(&RequestKind::OffsetFetch(old)), vec!["a"]);
        let v8 = OffsetFetchRequest::default().with_groups(vec![offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(g("b")), offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(g("c"))]);
        assert_eq!(groups(&RequestKind::OffsetFetch(v8)), vec!["b", "c"]);
        let find = FindCoordinatorRequest::default().with_coordinator_keys(vec!["x".into(), "y".into()]);
        assert_eq!(groups(&RequestKind::FindCoordinator(find.clone())), vec!["x", "y"]);
        assert!(groups(&RequestKind::FindCoordinator(find.with_key_type(1))).is_empty(), "transactional ids are not groups");
        assert_eq!(groups(&RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key("k".into()))), vec!["k"]);
        let limits = sluice_auth::Limits { groups: Some(vec!["app-*".parse().unwrap()]), topics: Some(vec!["t".parse().unwrap()]), ..Default::default() };
        let listed = ListGroupsResponse::default().with_groups(vec![list_groups_response::ListedGroup::default().with_group_id(g("app-1")), list_groups_response::ListedGroup::default().with_group_id(g("other"))]);
        assert_eq!(groups_within(listed, &limits).groups.len(), 1);
        let topic = |n: &str| offset_fetch_response::OffsetFetchResponseTopic::default().with_name(super::super::topic_name(n));
        let fetched = offsets_within(OffsetFetchResponse::default().with_topics(vec![topic("t"), topic("u")]), &limits);
        assert_eq!(fetched.topics.len(), 1);
        assert!(refusal(&RequestKind::DescribeGroups(DescribeGroupsRequest::default()), 0).is_some());
    }

    #[test]
    fn roles_get_what_their_permission_allows() {
        let produce = RequestKind::Produce(ProduceRequest::default());
        let delete = RequestKind::DeleteTopics(DeleteTopicsRequest::default());
        let fetch_audit = RequestKind::Fetch(FetchRequest::default().with_topics(vec![fetch_request::FetchTopic::default().with_topic(super::super::topic_name("__audit"))]));
        let metadata = RequestKind::Metadata(MetadataRequest::default());
        assert!(!Role::Viewer.allows(needed(&produce)) && Role::Operator.allows(needed(&produce)));
        assert!(!Role::Operator.allows(needed(&delete)) && Role::Admin.allows(needed(&delete)));
        assert!(!Role::Operator.allows(needed(&fetch_audit)));
        assert!(Role::Viewer.allows(needed(&metadata)));
        assert!(refusal(&metadata, 0).is_none());
        for r in [produce, delete, fetch_audit] {
            assert!(refusal(&r, 0).is_some());
        }
    }
}
