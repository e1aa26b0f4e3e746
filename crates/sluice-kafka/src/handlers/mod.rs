//! One handler per Kafka API key (the Kafka protocol guide, "The Messages"). Data-plane
//! handlers are in [`data`], consumer groups in [`groups`], topic administration in
//! [`admin`]. Handlers doing file I/O run on a blocking thread; JoinGroup and SyncGroup
//! wait asynchronously for their rebalance.

pub mod admin;
pub mod authz;
pub mod data;
pub mod groups;
pub mod unsupported;

use std::sync::Arc;

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, InitProducerIdResponse, ProducerId, RequestKind, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};

pub use data::{oversized_batch, produced_records};

use crate::{ConnectionError, KafkaServer};

/// Every API sluice serves, with the versions it handles (within what the codec knows).
const APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::Produce, 3, 9),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    // Answered by the connection itself (`crate::sasl`), with SASL enabled.
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// The versions sluice handles for an API, within what the codec knows; None if not served.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    let &(_, lo, hi) = APIS.iter().find(|(k, _, _)| *k == key)?;
    let codec = key.valid_versions();
    Some((lo.max(codec.min), hi.min(codec.max)))
}

pub(crate) fn code(e: ResponseError) -> i16 {
    e.code()
}

pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn encode<T: Encodable>(msg: &T, version: i16) -> Result<BytesMut, ConnectionError> {
    let mut out = BytesMut::new();
    msg.encode(&mut out, version).map_err(|e| ConnectionError::Decode(format!("encoding the response: {e}")))?;
    Ok(out)
}

fn api_versions() -> Vec<ApiVersion> {
    APIS.iter()
        .filter_map(|(k, _, _)| supported(*k).map(|(lo, hi)| ApiVersion::default().with_api_key(*k as i16).with_min_version(lo).with_max_version(hi)))
        .collect()
}

/// The response to a request at a version (or for an API) sluice does not handle, and the
/// response header version to send it with. ApiVersions answers at version 0 with
/// UNSUPPORTED_VERSION and the supported ranges, as Kafka does, so the client can retry at
/// a version it shares with the broker. Other APIs get their response type with
/// UNSUPPORTED_VERSION ([`unsupported::unsupported_response`]). Only a version the codec
/// cannot encode closes the connection, with the reason logged.
pub fn unsupported(key: ApiKey, version: i16) -> Result<(BytesMut, i16), ConnectionError> {
    if key == ApiKey::ApiVersions {
        let resp = ApiVersionsResponse::default().with_error_code(code(ResponseError::UnsupportedVersion)).with_api_keys(api_versions());
        return Ok((encode(&resp, 0)?, 0));
    }
    tracing::info!(api = ?key, version, supported = ?supported(key), "answering a request sluice does not serve with UNSUPPORTED_VERSION");
    match unsupported::unsupported_response(key, version) {
        Some(body) => Ok((body, key.response_header_version(version))),
        None => Err(ConnectionError::Decode(format!("{key:?} v{version} is not supported (supported: {:?})", supported(key)))),
    }
}

/// Who sent a request: the header's client id and the peer's address, and the request's
/// size in bytes (for the produce quota).
pub struct Caller {
    pub client_id: String,
    pub host: String,
    pub request_bytes: usize,
    /// The authenticated principal's role and topic limits; `None` when the listener has no
    /// authentication (then every request is allowed).
    pub grant: Option<(sluice_auth::Role, sluice_auth::Limits)>,
    /// The authenticated user (`None` without authentication): also the key of the byte-rate
    /// quotas, which are per client id without it.
    pub user: Option<String>,
}

/// A response body: ready now, or being finished on another task. `None` when no
/// response is due (Produce with acks=0).
pub enum Reply {
    Ready(Option<BytesMut>),
    Later(tokio::task::JoinHandle<Result<Option<BytesMut>, ConnectionError>>),
}

fn join_error(e: tokio::task::JoinError) -> ConnectionError {
    ConnectionError::Decode(format!("handler failed: {e}"))
}

/// Handles one decoded request. A Produce returns once its records are written (in
/// request order) and finishes, waiting for durability, on another task.
///
/// Also returns how long the connection must stay muted (not read) after this request:
/// a client over its produce or fetch byte-rate quota gets its response at once, with
/// `throttle_time_ms` set, and is then not read for that long (KIP-219).
pub async fn handle(server: Arc<KafkaServer>, request: RequestKind, version: i16, caller: Caller) -> Result<(Reply, std::time::Duration), ConnectionError> {
    let Some((action, api, targets)) = authz::audited(&request) else { return dispatch(server, request, version, caller).await.map(|(r, m, _)| (r, m)) };
    let (user, host) = (caller.user.clone(), caller.host.clone());
    let (reply, mute, refused) = dispatch(server.clone(), request, version, caller).await?;
    for target in targets {
        (server.options.on_admin)(crate::AdminEvent { action, target, user: user.clone(), host: host.clone(), api, refused });
    }
    Ok((reply, mute))
}

/// [`handle`], and whether the request was refused for lack of permission.
async fn dispatch(server: Arc<KafkaServer>, request: RequestKind, version: i16, caller: Caller) -> Result<(Reply, std::time::Duration, bool), ConnectionError> {
    let none = std::time::Duration::ZERO;
    let mut limits = None;
    if let Some((role, l)) = &caller.grant {
        let need = authz::needed(&request);
        // A request naming a topic or group outside the principal's limits is refused whole.
        let outside = l.topics.as_ref().and_then(|_| authz::topics(&request).into_iter().find(|t| !l.topic(t)).map(|t| ("topic", t.to_string())));
        let outside = outside.or_else(|| l.groups.as_ref().and_then(|_| authz::groups(&request).into_iter().find(|g| !l.group(g)).map(|g| ("group", g.to_string()))));
        if !role.allows(need) || outside.is_some() {
            if let Some(refused) = authz::refusal(&request, version) {
                match &outside {
                    Some((kind, name)) => tracing::info!(client = %caller.client_id, %kind, %name, "kafka request refused: outside the principal's limits"),
                    None => tracing::info!(client = %caller.client_id, %role, permission = %need, "kafka request refused: the role lacks the permission"),
                }
                metrics::counter!(sluice_core::telemetry::KAFKA_REFUSED_REQUESTS_TOTAL, "reason" => "authorization").increment(1);
                let mut out = BytesMut::new();
                refused.encode(&mut out, version).map_err(|e| ConnectionError::Decode(format!("encoding the response: {e}")))?;
                return Ok((Reply::Ready(Some(out)), none, true));
            }
        }
        limits = (!l.is_unlimited()).then(|| l.clone());
    }
    let answered = match request {
        RequestKind::Metadata(r) if limits.as_ref().is_some_and(|l| l.topics.is_some()) => {
            let l = limits.unwrap_or_default();
            let resp = tokio::task::spawn_blocking(move || authz::metadata_within(&server, r, &l)).await.map_err(join_error)?;
            encode(&resp, version).map(|b| (Reply::Ready(Some(b)), none))
        }
        RequestKind::ListGroups(r) if limits.is_some() => {
            let l = limits.unwrap_or_default();
            let resp = tokio::task::spawn_blocking(move || authz::groups_within(groups::list_groups(&server, r), &l)).await.map_err(join_error)?;
            encode(&resp, version).map(|b| (Reply::Ready(Some(b)), none))
        }
        RequestKind::OffsetFetch(r) if limits.is_some() => {
            let l = limits.unwrap_or_default();
            let resp = tokio::task::spawn_blocking(move || authz::offsets_within(groups::offset_fetch(&server, r, version), &l)).await.map_err(join_error)?;
            encode(&resp, version).map(|b| (Reply::Ready(Some(b)), none))
        }
        RequestKind::JoinGroup(r) => encode(&groups::join(&server, r, version, caller.client_id, caller.host).await, version).map(|b| (Reply::Ready(Some(b)), none)),
        RequestKind::SyncGroup(r) => encode(&groups::sync(&server, r).await, version).map(|b| (Reply::Ready(Some(b)), none)),
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let throttle = server.quota_use(Quota::Produce, caller.user.as_deref().unwrap_or(&caller.client_id), caller.request_bytes as u64);
            let written = tokio::task::spawn_blocking(move || data::produce_write(&server, r)).await.map_err(join_error)?;
            let reply = Reply::Later(tokio::task::spawn_blocking(move || {
                let mut resp = written.complete();
                if acks == 0 {
                    return Ok(None);
                }
                resp.throttle_time_ms = throttle.as_millis().min(i32::MAX as u128) as i32;
                encode(&resp, version).map(Some)
            }));
            Ok((reply, throttle))
        }
        RequestKind::Fetch(r) => {
            let mut resp = data::fetch(server.clone(), r).await.map_err(join_error)?;
            let bytes: usize = resp.responses.iter().flat_map(|t| &t.partitions).map(|p| p.records.as_ref().map_or(0, |r| r.len())).sum();
            let throttle = server.quota_use(Quota::Fetch, caller.user.as_deref().unwrap_or(&caller.client_id), bytes as u64);
            resp.throttle_time_ms = throttle.as_millis().min(i32::MAX as u128) as i32;
            encode(&resp, version).map(|b| (Reply::Ready(Some(b)), throttle))
        }
        other => tokio::task::spawn_blocking(move || blocking(&server, other, version)).await.map_err(join_error)?.map(|b| (Reply::Ready(b), none)),
    };
    answered.map(|(reply, mute)| (reply, mute, false))
}

/// The byte-rate quotas of the Kafka listener.
#[derive(Debug, Clone, Copy)]
pub enum Quota {
    Produce,
    Fetch,
}

fn blocking(server: &KafkaServer, request: RequestKind, version: i16) -> Result<Option<BytesMut>, ConnectionError> {
    match request {
        RequestKind::ApiVersions(_) => encode(&ApiVersionsResponse::default().with_api_keys(api_versions()), version).map(Some),
        RequestKind::Metadata(r) => encode(&data::metadata(server, r), version).map(Some),
        RequestKind::ListOffsets(r) => encode(&data::list_offsets(server, r), version).map(Some),
        RequestKind::InitProducerId(r) => {
            let mut resp = InitProducerIdResponse::default();
            if r.transactional_id.is_some() {
                // Transactions (KIP-98) are not served: no transaction coordinator.
                resp.error_code = code(ResponseError::InvalidRequest);
                resp.producer_id = ProducerId(-1);
                resp.producer_epoch = -1;
                return encode(&resp, version).map(Some);
            }
            // A fresh id per producer, epoch 0; its batches' sequence numbers are checked
            // by `crate::idempotence`.
            resp.producer_id = ProducerId(server.next_producer_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            resp.producer_epoch = 0;
            encode(&resp, version).map(Some)
        }
        RequestKind::FindCoordinator(r) => encode(&groups::find_coordinator(server, r, version), version).map(Some),
        RequestKind::Heartbeat(r) => encode(&groups::heartbeat(server, r), version).map(Some),
        RequestKind::LeaveGroup(r) => encode(&groups::leave(server, r, version), version).map(Some),
        RequestKind::OffsetCommit(r) => encode(&groups::offset_commit(server, r), version).map(Some),
        RequestKind::OffsetFetch(r) => encode(&groups::offset_fetch(server, r, version), version).map(Some),
        RequestKind::ListGroups(r) => encode(&groups::list_groups(server, r), version).map(Some),
        RequestKind::DescribeGroups(r) => encode(&groups::describe_groups(server, r), version).map(Some),
        RequestKind::DeleteGroups(r) => encode(&groups::delete_groups(server, r), version).map(Some),
        RequestKind::CreateTopics(r) => encode(&admin::create_topics(server, r), version).map(Some),
        RequestKind::DeleteTopics(r) => encode(&admin::delete_topics(server, r), version).map(Some),
        RequestKind::CreatePartitions(r) => encode(&admin::create_partitions(server, r), version).map(Some),
        RequestKind::DescribeConfigs(r) => encode(&admin::describe_configs(server, r), version).map(Some),
        RequestKind::AlterConfigs(r) => encode(&admin::alter_configs(server, r), version).map(Some),
        RequestKind::IncrementalAlterConfigs(r) => encode(&admin::incremental_alter_configs(server, r), version).map(Some),
        other => Err(ConnectionError::Decode(format!("unsupported request {other:?}"))),
    }
}

#[cfg(test)]
mod tests;
