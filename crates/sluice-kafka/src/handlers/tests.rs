//! Every served API answers at every served version: the codec refuses to encode a field
//! that a version does not have, and that would close the client's connection. Each case
//! runs the real handler over a real log, success and error paths.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use super::{handle, supported, Caller, Reply, APIS};
use crate::{KafkaOptions, KafkaServer};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn server(dir: &std::path::Path) -> Arc<KafkaServer> {
    server_with(dir, Box::new(|_| {}))
}

fn server_with(dir: &std::path::Path, on_admin: Box<dyn Fn(crate::AdminEvent) + Send + Sync>) -> Arc<KafkaServer> {
    let log = Arc::new(sluice_log::Log::open(dir, sluice_log::LogConfig::default()).unwrap());
    log.create_topic("t", 2).unwrap();
    let offsets = Arc::new(sluice_log::OffsetStore::open(&log).unwrap());
    let options = KafkaOptions {
        advertised_host: "127.0.0.1".into(),
        advertised_port: 9092,
        auto_create_partitions: 1,
        auto_create_topics: true,
        group_initial_rebalance_delay_ms: 0,
        protected_topics: Box::new(|t| t == "t"),
        read_only_topics: Box::new(|_| false),
        record_check: Box::new(|_| None),
        limits: Default::default(),
        sasl: None,
        tls: None,
        on_admin,
    };
    Arc::new(KafkaServer::new(log, offsets, options))
}

fn batch() -> Bytes {
    let r = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: 7,
        producer_epoch: 0,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: 0,
        timestamp: 1_700_000_000_000,
        key: None,
        value: Some(Bytes::from_static(b"{}")),
        headers: Default::default(),
    };
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(&mut out, [r].iter(), &RecordEncodeOptions { version: 2, compression: Compression::None }).unwrap();
    out.freeze()
}

/// Representative requests of an API (several where success and error differ).
fn requests(key: ApiKey, version: i16, round: usize) -> Vec<RequestKind> {
    let topic = |n: &str| TopicName(s(n));
    let group = |n: &str| GroupId(s(n));
    match key {
        ApiKey::ApiVersions => vec![RequestKind::ApiVersions(ApiVersionsRequest::default())],
        ApiKey::Metadata => vec![
            RequestKind::Metadata(MetadataRequest::default()),
            RequestKind::Metadata(MetadataRequest::default().with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(topic("bad name!")))]))),
        ],
        ApiKey::Produce => {
            let pd = |p: i32| produce_request::PartitionProduceData::default().with_index(p).with_records(Some(batch()));
            let td = |n: &str, p: i32| produce_request::TopicProduceData::default().with_name(topic(n)).with_partition_data(vec![pd(p)]);
            vec![RequestKind::Produce(ProduceRequest::default().with_acks(-1).with_topic_data(vec![td("t", round as i32 % 2), td("missing", 0), td("t", 9)]))]
        }
        ApiKey::ListOffsets => {
            let parts = [-1i64, -2, -3, 5, -9].map(|ts| list_offsets_request::ListOffsetsPartition::default().with_partition_index(0).with_timestamp(ts));
            let t = list_offsets_request::ListOffsetsTopic::default().with_name(topic("t")).with_partitions(parts.to_vec());
            vec![RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![t]))]
        }
        ApiKey::Fetch => {
            let p = |o: i64| fetch_request::FetchPartition::default().with_partition(0).with_fetch_offset(o).with_partition_max_bytes(1 << 20);
            let t = fetch_request::FetchTopic::default().with_topic(topic("t")).with_partitions(vec![p(0), p(1_000_000)]);
            let missing = fetch_request::FetchTopic::default().with_topic(topic("missing")).with_partitions(vec![p(0)]);
            vec![RequestKind::Fetch(FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![t, missing]))]
        }
        ApiKey::InitProducerId => vec![
            RequestKind::InitProducerId(InitProducerIdRequest::default()),
            RequestKind::InitProducerId(InitProducerIdRequest::default().with_transactional_id(Some(TransactionalId(s("tx"))))),
        ],
        ApiKey::FindCoordinator => vec![RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s("g")).with_coordinator_keys(if version >= 4 { vec![s("g")] } else { vec![] }))],
        ApiKey::JoinGroup => {
            let join = |member: &str| {
                RequestKind::JoinGroup(
                    JoinGroupRequest::default()
                        .with_group_id(group(&format!("g{version}")))
                        .with_member_id(s(member))
                        .with_session_timeout_ms(10_000)
                        .with_rebalance_timeout_ms(10_000)
                        .with_protocol_type(s("consumer"))
                        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(b"m"))]),
                )
            };
            vec![join(""), join("nobody")]
        }
        ApiKey::SyncGroup => vec![RequestKind::SyncGroup(SyncGroupRequest::default().with_group_id(group("g")).with_member_id(s("nobody")).with_generation_id(1))],
        ApiKey::Heartbeat => vec![RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(group("g")).with_member_id(s("nobody")))],
        ApiKey::LeaveGroup => {
            let members = if version >= 3 { vec![leave_group_request::MemberIdentity::default().with_member_id(s("nobody"))] } else { vec![] };
            vec![RequestKind::LeaveGroup(LeaveGroupRequest::default().with_group_id(group("g")).with_member_id(if version < 3 { s("nobody") } else { s("") }).with_members(members))]
        }
        ApiKey::OffsetCommit => {
            let p = offset_commit_request::OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(1);
            let t = |n: &str| offset_commit_request::OffsetCommitRequestTopic::default().with_name(topic(n)).with_partitions(vec![p.clone()]);
            vec![RequestKind::OffsetCommit(OffsetCommitRequest::default().with_group_id(group("c")).with_generation_id_or_member_epoch(-1).with_topics(vec![t("t"), t("missing")]))]
        }
        ApiKey::OffsetFetch => {
            if version >= 8 {
                let g = offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(group("c"))
                    .with_topics(Some(vec![offset_fetch_request::OffsetFetchRequestTopics::default().with_name(topic("t")).with_partition_indexes(vec![0, 1])]));
                vec![RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(vec![g, offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(group("c"))]))]
            } else {
                let t = offset_fetch_request::OffsetFetchRequestTopic::default().with_name(topic("t")).with_partition_indexes(vec![0, 1]);
                vec![
                    RequestKind::OffsetFetch(OffsetFetchRequest::default().with_group_id(group("c")).with_topics(Some(vec![t]))),
                    RequestKind::OffsetFetch(OffsetFetchRequest::default().with_group_id(group("c")).with_topics(if version >= 2 { None } else { Some(vec![]) })),
                ]
            }
        }
        ApiKey::ListGroups => vec![RequestKind::ListGroups(ListGroupsRequest::default())],
        ApiKey::DescribeGroups => vec![RequestKind::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![group("g0"), group("c"), group("none")]))],
        ApiKey::DeleteGroups => vec![RequestKind::DeleteGroups(DeleteGroupsRequest::default().with_groups_names(vec![group("none")]))],
        ApiKey::CreateTopics => {
            let config = create_topics_request::CreatableTopicConfig::default().with_name(s("retention.ms")).with_value(Some(s("1000")));
            let t = |n: &str| create_topics_request::CreatableTopic::default().with_name(topic(n)).with_num_partitions(1).with_replication_factor(1).with_configs(vec![config.clone()]);
            vec![RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![t(&format!("new{version}-{round}")), t("t")]))]
        }
        ApiKey::DeleteTopics => {
            let names = vec![topic("t"), topic("missing")];
            let req = if version >= 6 {
                DeleteTopicsRequest::default().with_topics(names.into_iter().map(|n| delete_topics_request::DeleteTopicState::default().with_name(Some(n))).collect())
            } else {
                DeleteTopicsRequest::default().with_topic_names(names)
            };
            vec![RequestKind::DeleteTopics(req)]
        }
        ApiKey::CreatePartitions => {
            vec![RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![create_partitions_request::CreatePartitionsTopic::default().with_name(topic("t")).with_count(4)]))]
        }
        ApiKey::DescribeConfigs => {
            let r = |ty: i8, n: &str| describe_configs_request::DescribeConfigsResource::default().with_resource_type(ty).with_resource_name(s(n));
            vec![RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![r(2, "t"), r(4, "0"), r(2, "missing"), r(9, "x")]))]
        }
        ApiKey::AlterConfigs => {
            let c = |n: &str, v: &str| alter_configs_request::AlterableConfig::default().with_name(s(n)).with_value(Some(s(v)));
            let r = alter_configs_request::AlterConfigsResource::default().with_resource_type(2).with_resource_name(s("t")).with_configs(vec![c("retention.ms", "5000")]);
            let bad = alter_configs_request::AlterConfigsResource::default().with_resource_type(2).with_resource_name(s("t")).with_configs(vec![c("max.message.bytes", "1")]);
            vec![RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![r, bad]))]
        }
        ApiKey::IncrementalAlterConfigs => {
            let c = |n: &str, op: i8| incremental_alter_configs_request::AlterableConfig::default().with_name(s(n)).with_config_operation(op).with_value(Some(s("100")));
            let r = incremental_alter_configs_request::AlterConfigsResource::default().with_resource_type(2).with_resource_name(s("t")).with_configs(vec![c("flush.ms", 0), c("retention.ms", 1)]);
            let bad = incremental_alter_configs_request::AlterConfigsResource::default().with_resource_type(2).with_resource_name(s("t")).with_configs(vec![c("retention.ms", 2)]);
            vec![RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default().with_resources(vec![r, bad]))]
        }
        // Answered by the connection before any handler (`crate::sasl`; the e2e tests).
        ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => vec![],
        other => panic!("no test request for {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_answers_at_every_served_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let mut checked = 0;
    // Without authentication, as a viewer, and as an admin limited to topics and groups that
    // do not exist (refusals, and the filtered Metadata, ListGroups and OffsetFetch, must
    // encode at every version too).
    let limited = sluice_auth::Limits { topics: Some(vec!["nothing-*".parse().unwrap()]), groups: Some(vec!["nothing-*".parse().unwrap()]), pipelines: None };
    for role in [None, Some((sluice_auth::Role::Viewer, Default::default())), Some((sluice_auth::Role::Admin, limited))] {
    for (round, &(key, _, _)) in APIS.iter().enumerate() {
        let (lo, hi) = supported(key).unwrap();
        for version in lo..=hi {
            for request in requests(key, version, round) {
                let caller = Caller { client_id: "test".into(), host: "/127.0.0.1".into(), request_bytes: 0, grant: role.clone(), user: role.as_ref().map(|_| "u".to_string()) };
                let reply = handle(server.clone(), request, version, caller).await.map(|(r, _)| r);
                let body = match reply {
                    Ok(Reply::Ready(b)) => Ok(b),
                    Ok(Reply::Later(task)) => task.await.unwrap(),
                    Err(e) => Err(e),
                };
                assert!(body.is_ok(), "{key:?} v{version} {role:?}: {:?}", body.err());
                checked += 1;
            }
        }
    }
    }
    assert!(checked > 300, "{checked} requests");
}

/// The success paths of JoinGroup (the leader gets the member list) and SyncGroup (with
/// protocol type and name) at every served version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_sync_succeed_at_every_served_version() {
    use crate::coordinator::{Join, JoinRequest};
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let (jlo, jhi) = supported(ApiKey::JoinGroup).unwrap();
    let (slo, shi) = supported(ApiKey::SyncGroup).unwrap();
    for version in jlo..=jhi.max(shi) {
        let group = format!("ok{version}");
        let protocols = vec![("range".to_string(), Bytes::from_static(b"m"))];
        let seed = JoinRequest { client_id: "c".into(), session_timeout_ms: 10_000, rebalance_timeout_ms: 10_000, protocol_type: "consumer".into(), protocols, ..Default::default() };
        let Join::Waiting { member_id } = server.with_group(&group, |g| g.join(seed, sluice_core::time::now_ms(), 0)) else { panic!("seed join") };
        let caller = || Caller { client_id: "c".into(), host: "/127.0.0.1".into(), request_bytes: 0, grant: None, user: None };
        if version <= jhi {
            let join = JoinGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_member_id(s(&member_id))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(b"m"))]);
            let reply = handle(server.clone(), RequestKind::JoinGroup(join), version, caller()).await.map(|(r, _)| r);
            assert!(matches!(reply, Ok(Reply::Ready(Some(_)))), "JoinGroup v{version}");
        } else {
            server.with_group(&group, |g| g.maybe_complete(sluice_core::time::now_ms()));
        }
        if (slo..=shi).contains(&version) {
            let generation = server.with_group(&group, |g| g.generation);
            let assignment = sync_group_request::SyncGroupRequestAssignment::default().with_member_id(s(&member_id)).with_assignment(Bytes::from_static(b"a"));
            let sync = SyncGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_member_id(s(&member_id))
                .with_generation_id(generation)
                .with_protocol_type(if version >= 5 { Some(s("consumer")) } else { None })
                .with_protocol_name(if version >= 5 { Some(s("range")) } else { None })
                .with_assignments(vec![assignment]);
            let reply = handle(server.clone(), RequestKind::SyncGroup(sync), version, caller()).await.map(|(r, _)| r);
            assert!(matches!(reply, Ok(Reply::Ready(Some(_)))), "SyncGroup v{version}");
            assert_eq!(server.with_group(&group, |g| g.state), crate::coordinator::GroupState::Stable);
        }
    }
}

#[test]
fn oversized_batch_reads_each_batch_length_and_never_panics() {
    use super::data::oversized_batch;
    // Two batches: 100 and 300 bytes (batchLength = total - 12, at bytes 8..12).
    let mut records = Vec::new();
    for total in [100usize, 300] {
        let mut b = vec![0u8; total];
        b[8..12].copy_from_slice(&((total - 12) as i32).to_be_bytes());
        records.extend(b);
    }
    assert_eq!(oversized_batch(&records, 1000), None);
    assert_eq!(oversized_batch(&records, 300), None);
    assert_eq!(oversized_batch(&records, 299), Some(300), "the second batch");
    assert_eq!(oversized_batch(&records, 99), Some(100), "the first batch");
    // Truncated or forged lengths are left to the decoder; they never panic.
    assert_eq!(oversized_batch(&records[..5], 10), None);
    let mut forged = vec![0u8; 12];
    forged[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    assert_eq!(oversized_batch(&forged, 1_048_588), Some(i32::MAX as usize + 12));
    forged[8..12].copy_from_slice(&(-5i32).to_be_bytes());
    assert_eq!(oversized_batch(&forged, 1_048_588), None);
}

#[tokio::test]
async fn deletions_are_reported_for_the_audit_refused_ones_too() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let server = server_with(dir.path(), Box::new(move |e| sink.lock().unwrap().push((e.action, e.target, e.user, e.api, e.refused))));
    let delete = || RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topic_names(vec![super::topic_name("t")]));
    for (role, user) in [(sluice_auth::Role::Viewer, "vic"), (sluice_auth::Role::Admin, "ada")] {
        let caller = Caller { client_id: "c".into(), host: "/127.0.0.1".into(), request_bytes: 0, grant: Some((role, Default::default())), user: Some(user.into()) };
        handle(server.clone(), delete(), 4, caller).await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![
        ("topic_delete", "t".to_string(), Some("vic".to_string()), "DeleteTopics", true),
        ("topic_delete", "t".to_string(), Some("ada".to_string()), "DeleteTopics", false),
    ]);
}
