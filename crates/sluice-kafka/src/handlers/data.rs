//! Data-plane handlers: Metadata, Produce, ListOffsets, Fetch. Blocking (file I/O): called
//! on a blocking thread.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use sluice_log::batch::{decode_header, decode_records, NewRecord, RecordHeader};
use sluice_log::{LogError, Topic};

use super::{code, topic_name};
use crate::idempotence::{Decision, ProducerBatch};
use crate::KafkaServer;

pub(crate) fn lookup(server: &KafkaServer, name: &str, create: bool) -> Result<std::sync::Arc<Topic>, i16> {
    if let Some(t) = server.log.topic(name) {
        return Ok(t);
    }
    if !create || !server.options.auto_create_topics {
        return Err(code(ResponseError::UnknownTopicOrPartition));
    }
    match server.log.ensure_topic(name, server.options.auto_create_partitions) {
        Ok(t) => {
            tracing::info!(topic = name, partitions = server.options.auto_create_partitions, "auto-created topic");
            Ok(t)
        }
        Err(LogError::InvalidTopicName { .. }) => Err(code(ResponseError::InvalidTopicException)),
        Err(_) => Err(code(ResponseError::KafkaStorageError)),
    }
}

pub(crate) fn metadata(server: &KafkaServer, r: MetadataRequest) -> MetadataResponse {
    let names: Vec<String> = match &r.topics {
        Some(ts) => ts.iter().filter_map(|t| t.name.as_ref().map(|n| n.0.to_string())).collect(),
        None => server.log.topics().iter().map(|t| t.name().to_string()).collect(),
    };
    let topics = names
        .iter()
        .map(|name| {
            let mut t = MetadataResponseTopic::default();
            t.name = Some(topic_name(name));
            t.is_internal = name == sluice_log::OFFSETS_TOPIC;
            match lookup(server, name, r.allow_auto_topic_creation) {
                Ok(topic) => {
                    t.partitions = (0..topic.partition_count() as i32)
                        .map(|p| {
                            let mut mp = MetadataResponsePartition::default();
                            mp.partition_index = p;
                            mp.leader_id = BrokerId(0);
                            mp.replica_nodes = vec![BrokerId(0)];
                            mp.isr_nodes = vec![BrokerId(0)];
                            mp
                        })
                        .collect();
                }
                Err(c) => t.error_code = c,
            }
            t
        })
        .collect();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(0);
    broker.host = StrBytes::from_string(server.options.advertised_host.clone());
    broker.port = server.options.advertised_port;
    let mut resp = MetadataResponse::default();
    resp.brokers = vec![broker];
    resp.cluster_id = Some(StrBytes::from_static_str("sluice"));
    resp.controller_id = BrokerId(0);
    resp.topics = topics;
    resp
}

/// Decodes every batch of a produce request's records into records to append.
///
/// Input: the `records` bytes of one partition in a Produce request (RecordBatch v2, the
/// Kafka protocol guide, "Record Batch"). Compressed batches (gzip, snappy, lz4, zstd) are
/// decompressed, up to 256 MiB per batch. Errors: CORRUPT_MESSAGE for a truncated,
/// undecodable or oversized batch.
pub fn produced_records(mut bytes: Bytes) -> Result<Vec<NewRecord>, i16> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let header = decode_header(&bytes).map_err(|_| code(ResponseError::CorruptMessage))?;
        if header.total_len > bytes.len() {
            return Err(code(ResponseError::CorruptMessage));
        }
        let batch = bytes.split_to(header.total_len);
        if header.attributes & 0x07 != 0 {
            // Compressed (gzip, snappy, lz4, zstd): kafka-protocol decompresses; stored uncompressed.
            let set = RecordBatchDecoder::decode(&mut batch.clone()).map_err(|e| {
                tracing::warn!(error = %e, "cannot decode a compressed batch");
                code(ResponseError::CorruptMessage)
            })?;
            out.extend(set.records.into_iter().map(|r| NewRecord {
                key: r.key.map(|k| k.to_vec()),
                value: r.value.map(|v| v.to_vec()).unwrap_or_default(),
                headers: r.headers.into_iter().map(|(k, v)| RecordHeader { key: k.to_string(), value: v.map(|v| v.to_vec()) }).collect(),
                timestamp_ms: Some(r.timestamp),
            }));
            continue;
        }
        let mut recs = Vec::new();
        decode_records(&batch, 0, &mut recs).map_err(|_| code(ResponseError::CorruptMessage))?;
        out.extend(recs.into_iter().map(|r| NewRecord { key: r.key, value: r.value, headers: r.headers, timestamp_ms: Some(r.timestamp_ms) }));
    }
    Ok(out)
}

pub(crate) fn produce(server: &KafkaServer, r: ProduceRequest) -> ProduceResponse {
    let now = sluice_core::time::now_ms();
    let mut resp = ProduceResponse::default();
    for td in r.topic_data {
        let name = td.name.0.to_string();
        let topic = lookup(server, &name, false);
        let mut tr = TopicProduceResponse::default();
        tr.name = td.name.clone();
        for pd in td.partition_data {
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            let result = topic.as_ref().map_err(|c| *c).and_then(|t| {
                let p = t.partition(pd.index as u32).map_err(|_| code(ResponseError::UnknownTopicOrPartition))?;
                let raw = pd.records.unwrap_or_default();
                let idempotent = ProducerBatch::parse(&raw);
                let records = produced_records(raw)?;
                if records.is_empty() {
                    return Ok((p.log_end_offset() as i64, p.log_start_offset() as i64));
                }
                // One request carries one batch per partition; its sequence range covers
                // every record of the request.
                let idempotent = idempotent.map(|b| ProducerBatch { count: records.len() as i32, ..b });
                let storage_error = |e: sluice_log::LogError| {
                    tracing::error!(topic = %name, partition = pd.index, error = %e, "produce failed");
                    code(ResponseError::KafkaStorageError)
                };
                // Sequence check and append happen under one lock, so batches of a producer
                // are appended in the order they were checked.
                let info = {
                    let mut producers = server.producers.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(b) = &idempotent {
                        match producers.check(&name, pd.index, b) {
                            Decision::Append => {}
                            Decision::Duplicate { base_offset } => {
                                tracing::debug!(topic = %name, partition = pd.index, producer = b.producer_id, "duplicate batch not appended again");
                                return Ok((base_offset, p.log_start_offset() as i64));
                            }
                            Decision::Reject(e) => return Err(code(e)),
                        }
                    }
                    let info = p.write(&records, now).map_err(storage_error)?;
                    if let Some(b) = &idempotent {
                        producers.record(&name, pd.index, b, info.base_offset as i64);
                    }
                    info
                };
                p.complete(&info).map_err(storage_error)?;
                Ok((info.base_offset as i64, p.log_start_offset() as i64))
            });
            match result {
                Ok((base, start)) => {
                    pr.base_offset = base;
                    pr.log_start_offset = start;
                }
                Err(c) => pr.error_code = c,
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    resp
}

pub(crate) fn list_offsets(server: &KafkaServer, r: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut resp = ListOffsetsResponse::default();
    for t in r.topics {
        let topic = server.log.topic(&t.name.0);
        let mut tr = ListOffsetsTopicResponse::default();
        tr.name = t.name.clone();
        for p in t.partitions {
            let mut pr = ListOffsetsPartitionResponse::default();
            pr.partition_index = p.partition_index;
            pr.timestamp = -1;
            pr.offset = -1;
            match topic.as_ref().and_then(|t| t.partition(p.partition_index as u32).ok().cloned()) {
                None => pr.error_code = code(ResponseError::UnknownTopicOrPartition),
                Some(part) => match p.timestamp {
                    -2 => pr.offset = part.log_start_offset() as i64,
                    -1 => pr.offset = part.high_watermark() as i64,
                    ts => match part.offset_for_timestamp(ts) {
                        Ok(Some(o)) => {
                            pr.offset = o as i64;
                            pr.timestamp = ts;
                        }
                        Ok(None) => {}
                        Err(_) => pr.error_code = code(ResponseError::KafkaStorageError),
                    },
                },
            }
            tr.partitions.push(pr);
        }
        resp.topics.push(tr);
    }
    resp
}

pub(crate) fn fetch(server: &KafkaServer, r: FetchRequest) -> FetchResponse {
    let deadline = Instant::now() + Duration::from_millis(r.max_wait_ms.max(0) as u64);
    loop {
        let mut total = 0usize;
        let mut resp = FetchResponse::default();
        let mut changes = None;
        for t in &r.topics {
            let topic = server.log.topic(&t.topic.0);
            let mut tr = FetchableTopicResponse::default();
            tr.topic = t.topic.clone();
            for p in &t.partitions {
                let mut pd = PartitionData::default();
                pd.partition_index = p.partition;
                pd.high_watermark = -1;
                pd.last_stable_offset = -1;
                pd.log_start_offset = -1;
                pd.preferred_read_replica = BrokerId(-1);
                match topic.as_ref().and_then(|t| t.partition(p.partition as u32).ok().cloned()) {
                    None => pd.error_code = code(ResponseError::UnknownTopicOrPartition),
                    Some(part) => {
                        changes.get_or_insert_with(|| topic.as_ref().map(|t| t.changes().clone()));
                        let (start, hw) = (part.log_start_offset() as i64, part.high_watermark() as i64);
                        pd.high_watermark = hw;
                        pd.last_stable_offset = hw;
                        pd.log_start_offset = start;
                        if p.fetch_offset < start || p.fetch_offset > hw {
                            pd.error_code = code(ResponseError::OffsetOutOfRange);
                        } else {
                            match part.read_raw(p.fetch_offset as u64, p.partition_max_bytes.max(1) as usize) {
                                Ok(bytes) => {
                                    total += bytes.len();
                                    pd.records = Some(Bytes::from(bytes));
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "fetch read failed");
                                    pd.error_code = code(ResponseError::KafkaStorageError);
                                }
                            }
                        }
                    }
                }
                tr.partitions.push(pd);
            }
            resp.responses.push(tr);
        }
        let now = Instant::now();
        if total >= r.min_bytes.max(1) as usize || now >= deadline {
            return resp;
        }
        // Long poll: wait for new data (or the deadline), then read again.
        match changes.flatten() {
            Some(c) => {
                let seen = c.version();
                c.wait(seen, (deadline - now).min(Duration::from_millis(100)));
            }
            None => std::thread::sleep((deadline - now).min(Duration::from_millis(100))),
        }
    }
}
