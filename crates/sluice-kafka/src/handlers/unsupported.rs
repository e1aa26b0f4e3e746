//! Answers for APIs sluice does not serve, so a client gets an error code instead of a
//! dropped connection. Each response type's default (empty) value is sent, with its
//! top-level `error_code` set to UNSUPPORTED_VERSION where the type has one (56 of the 87
//! types; the others report errors per resource, and an empty list of resources is their
//! answer). Generated from the response types of `kafka-protocol` 0.18: one arm per
//! API key.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;

/// The UNSUPPORTED_VERSION answer to `key` at `version`; None when the codec cannot encode
/// that version (the caller closes the connection, as Kafka does).
pub fn unsupported_response(key: ApiKey, version: i16) -> Option<BytesMut> {
    let range = key.valid_versions();
    if version < range.min || version > range.max {
        return None;
    }
    let code = ResponseError::UnsupportedVersion.code();
    let kind = match key {
        ApiKey::AlterConfigs => ResponseKind::AlterConfigs(AlterConfigsResponse::default()),
        ApiKey::IncrementalAlterConfigs => ResponseKind::IncrementalAlterConfigs(IncrementalAlterConfigsResponse::default()),
        ApiKey::ListOffsets => ResponseKind::ListOffsets(ListOffsetsResponse::default()),
        ApiKey::Produce => ResponseKind::Produce(ProduceResponse::default()),
        ApiKey::AddOffsetsToTxn => ResponseKind::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code)),
        ApiKey::AddPartitionsToTxn => ResponseKind::AddPartitionsToTxn(AddPartitionsToTxnResponse::default().with_error_code(code)),
        ApiKey::AddRaftVoter => ResponseKind::AddRaftVoter(AddRaftVoterResponse::default().with_error_code(code)),
        ApiKey::AllocateProducerIds => ResponseKind::AllocateProducerIds(AllocateProducerIdsResponse::default().with_error_code(code)),
        ApiKey::AlterClientQuotas => ResponseKind::AlterClientQuotas(AlterClientQuotasResponse::default()),
        ApiKey::AlterPartitionReassignments => ResponseKind::AlterPartitionReassignments(AlterPartitionReassignmentsResponse::default().with_error_code(code)),
        ApiKey::AlterPartition => ResponseKind::AlterPartition(AlterPartitionResponse::default().with_error_code(code)),
        ApiKey::AlterReplicaLogDirs => ResponseKind::AlterReplicaLogDirs(AlterReplicaLogDirsResponse::default()),
        ApiKey::AlterShareGroupOffsets => ResponseKind::AlterShareGroupOffsets(AlterShareGroupOffsetsResponse::default().with_error_code(code)),
        ApiKey::AlterUserScramCredentials => ResponseKind::AlterUserScramCredentials(AlterUserScramCredentialsResponse::default()),
        ApiKey::ApiVersions => ResponseKind::ApiVersions(ApiVersionsResponse::default().with_error_code(code)),
        ApiKey::AssignReplicasToDirs => ResponseKind::AssignReplicasToDirs(AssignReplicasToDirsResponse::default().with_error_code(code)),
        ApiKey::BeginQuorumEpoch => ResponseKind::BeginQuorumEpoch(BeginQuorumEpochResponse::default().with_error_code(code)),
        ApiKey::BrokerHeartbeat => ResponseKind::BrokerHeartbeat(BrokerHeartbeatResponse::default().with_error_code(code)),
        ApiKey::BrokerRegistration => ResponseKind::BrokerRegistration(BrokerRegistrationResponse::default().with_error_code(code)),
        ApiKey::ConsumerGroupDescribe => ResponseKind::ConsumerGroupDescribe(ConsumerGroupDescribeResponse::default()),
        ApiKey::ConsumerGroupHeartbeat => ResponseKind::ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse::default().with_error_code(code)),
        ApiKey::ControllerRegistration => ResponseKind::ControllerRegistration(ControllerRegistrationResponse::default().with_error_code(code)),
        ApiKey::CreateAcls => ResponseKind::CreateAcls(CreateAclsResponse::default()),
        ApiKey::CreateDelegationToken => ResponseKind::CreateDelegationToken(CreateDelegationTokenResponse::default().with_error_code(code)),
        ApiKey::CreatePartitions => ResponseKind::CreatePartitions(CreatePartitionsResponse::default()),
        ApiKey::CreateTopics => ResponseKind::CreateTopics(CreateTopicsResponse::default()),
        ApiKey::DeleteAcls => ResponseKind::DeleteAcls(DeleteAclsResponse::default()),
        ApiKey::DeleteGroups => ResponseKind::DeleteGroups(DeleteGroupsResponse::default()),
        ApiKey::DeleteRecords => ResponseKind::DeleteRecords(DeleteRecordsResponse::default()),
        ApiKey::DeleteShareGroupOffsets => ResponseKind::DeleteShareGroupOffsets(DeleteShareGroupOffsetsResponse::default().with_error_code(code)),
        ApiKey::DeleteShareGroupState => ResponseKind::DeleteShareGroupState(DeleteShareGroupStateResponse::default()),
        ApiKey::DeleteTopics => ResponseKind::DeleteTopics(DeleteTopicsResponse::default()),
        ApiKey::DescribeAcls => ResponseKind::DescribeAcls(DescribeAclsResponse::default().with_error_code(code)),
        ApiKey::DescribeClientQuotas => ResponseKind::DescribeClientQuotas(DescribeClientQuotasResponse::default().with_error_code(code)),
        ApiKey::DescribeCluster => ResponseKind::DescribeCluster(DescribeClusterResponse::default().with_error_code(code)),
        ApiKey::DescribeConfigs => ResponseKind::DescribeConfigs(DescribeConfigsResponse::default()),
        ApiKey::DescribeDelegationToken => ResponseKind::DescribeDelegationToken(DescribeDelegationTokenResponse::default().with_error_code(code)),
        ApiKey::DescribeGroups => ResponseKind::DescribeGroups(DescribeGroupsResponse::default()),
        ApiKey::DescribeLogDirs => ResponseKind::DescribeLogDirs(DescribeLogDirsResponse::default().with_error_code(code)),
        ApiKey::DescribeProducers => ResponseKind::DescribeProducers(DescribeProducersResponse::default()),
        ApiKey::DescribeQuorum => ResponseKind::DescribeQuorum(DescribeQuorumResponse::default().with_error_code(code)),
        ApiKey::DescribeShareGroupOffsets => ResponseKind::DescribeShareGroupOffsets(DescribeShareGroupOffsetsResponse::default()),
        ApiKey::DescribeTopicPartitions => ResponseKind::DescribeTopicPartitions(DescribeTopicPartitionsResponse::default()),
        ApiKey::DescribeTransactions => ResponseKind::DescribeTransactions(DescribeTransactionsResponse::default()),
        ApiKey::DescribeUserScramCredentials => ResponseKind::DescribeUserScramCredentials(DescribeUserScramCredentialsResponse::default().with_error_code(code)),
        ApiKey::ElectLeaders => ResponseKind::ElectLeaders(ElectLeadersResponse::default().with_error_code(code)),
        ApiKey::EndQuorumEpoch => ResponseKind::EndQuorumEpoch(EndQuorumEpochResponse::default().with_error_code(code)),
        ApiKey::EndTxn => ResponseKind::EndTxn(EndTxnResponse::default().with_error_code(code)),
        ApiKey::Envelope => ResponseKind::Envelope(EnvelopeResponse::default().with_error_code(code)),
        ApiKey::ExpireDelegationToken => ResponseKind::ExpireDelegationToken(ExpireDelegationTokenResponse::default().with_error_code(code)),
        ApiKey::Fetch => ResponseKind::Fetch(FetchResponse::default().with_error_code(code)),
        ApiKey::FetchSnapshot => ResponseKind::FetchSnapshot(FetchSnapshotResponse::default().with_error_code(code)),
        ApiKey::FindCoordinator => ResponseKind::FindCoordinator(FindCoordinatorResponse::default().with_error_code(code)),
        ApiKey::GetTelemetrySubscriptions => ResponseKind::GetTelemetrySubscriptions(GetTelemetrySubscriptionsResponse::default().with_error_code(code)),
        ApiKey::Heartbeat => ResponseKind::Heartbeat(HeartbeatResponse::default().with_error_code(code)),
        ApiKey::InitProducerId => ResponseKind::InitProducerId(InitProducerIdResponse::default().with_error_code(code)),
        ApiKey::InitializeShareGroupState => ResponseKind::InitializeShareGroupState(InitializeShareGroupStateResponse::default()),
        ApiKey::JoinGroup => ResponseKind::JoinGroup(JoinGroupResponse::default().with_error_code(code)),
        ApiKey::LeaveGroup => ResponseKind::LeaveGroup(LeaveGroupResponse::default().with_error_code(code)),
        ApiKey::ListConfigResources => ResponseKind::ListConfigResources(ListConfigResourcesResponse::default().with_error_code(code)),
        ApiKey::ListGroups => ResponseKind::ListGroups(ListGroupsResponse::default().with_error_code(code)),
        ApiKey::ListPartitionReassignments => ResponseKind::ListPartitionReassignments(ListPartitionReassignmentsResponse::default().with_error_code(code)),
        ApiKey::ListTransactions => ResponseKind::ListTransactions(ListTransactionsResponse::default().with_error_code(code)),
        ApiKey::Metadata => ResponseKind::Metadata(MetadataResponse::default().with_error_code(code)),
        ApiKey::OffsetCommit => ResponseKind::OffsetCommit(OffsetCommitResponse::default()),
        ApiKey::OffsetDelete => ResponseKind::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code)),
        ApiKey::OffsetFetch => ResponseKind::OffsetFetch(OffsetFetchResponse::default().with_error_code(code)),
        ApiKey::OffsetForLeaderEpoch => ResponseKind::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default()),
        ApiKey::PushTelemetry => ResponseKind::PushTelemetry(PushTelemetryResponse::default().with_error_code(code)),
        ApiKey::ReadShareGroupState => ResponseKind::ReadShareGroupState(ReadShareGroupStateResponse::default()),
        ApiKey::ReadShareGroupStateSummary => ResponseKind::ReadShareGroupStateSummary(ReadShareGroupStateSummaryResponse::default()),
        ApiKey::RemoveRaftVoter => ResponseKind::RemoveRaftVoter(RemoveRaftVoterResponse::default().with_error_code(code)),
        ApiKey::RenewDelegationToken => ResponseKind::RenewDelegationToken(RenewDelegationTokenResponse::default().with_error_code(code)),
        ApiKey::SaslAuthenticate => ResponseKind::SaslAuthenticate(SaslAuthenticateResponse::default().with_error_code(code)),
        ApiKey::SaslHandshake => ResponseKind::SaslHandshake(SaslHandshakeResponse::default().with_error_code(code)),
        ApiKey::ShareAcknowledge => ResponseKind::ShareAcknowledge(ShareAcknowledgeResponse::default().with_error_code(code)),
        ApiKey::ShareFetch => ResponseKind::ShareFetch(ShareFetchResponse::default().with_error_code(code)),
        ApiKey::ShareGroupDescribe => ResponseKind::ShareGroupDescribe(ShareGroupDescribeResponse::default()),
        ApiKey::ShareGroupHeartbeat => ResponseKind::ShareGroupHeartbeat(ShareGroupHeartbeatResponse::default().with_error_code(code)),
        ApiKey::SyncGroup => ResponseKind::SyncGroup(SyncGroupResponse::default().with_error_code(code)),
        ApiKey::TxnOffsetCommit => ResponseKind::TxnOffsetCommit(TxnOffsetCommitResponse::default()),
        ApiKey::UnregisterBroker => ResponseKind::UnregisterBroker(UnregisterBrokerResponse::default().with_error_code(code)),
        ApiKey::UpdateFeatures => ResponseKind::UpdateFeatures(UpdateFeaturesResponse::default().with_error_code(code)),
        ApiKey::UpdateRaftVoter => ResponseKind::UpdateRaftVoter(UpdateRaftVoterResponse::default().with_error_code(code)),
        ApiKey::Vote => ResponseKind::Vote(VoteResponse::default().with_error_code(code)),
        ApiKey::WriteShareGroupState => ResponseKind::WriteShareGroupState(WriteShareGroupStateResponse::default()),
        ApiKey::WriteTxnMarkers => ResponseKind::WriteTxnMarkers(WriteTxnMarkersResponse::default()),
    };
    let mut out = BytesMut::new();
    kind.encode(&mut out, version).ok()?;
    Some(out)
}
