//! Data-plane handlers: Metadata, Produce, ListOffsets, Fetch. All but Fetch's wait are
//! blocking (file I/O) and run on a blocking thread; Fetch waits for new data
//! asynchronously between reads.

use std::time::Duration;

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
use std::sync::Arc;

use sluice_log::partition::AppendInfo;
use sluice_log::{LogError, Partition, Topic};

use super::{code, topic_name};
use crate::idempotence::{Decision, ProducerBatch};
use crate::{KafkaServer, RecordCheck};
use sluice_core::dead_letter::{DeadLetter, DLQ_SUFFIX};
use sluice_core::schema::FieldError;

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
/// decompressed, up to 256 MiB per batch. Errors: CORRUPT_MESSAGE for a truncated or
/// undecodable batch. (Batches over the topic's `max.message.bytes` are refused before,
/// with MESSAGE_TOO_LARGE: [`oversized_batch`].)
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

/// The size of the first record batch in a partition's produce data that is larger than
/// `max` bytes (the topic's `max.message.bytes`, compared, as Kafka does, with the batch as
/// sent, compressed or not), if any. Each batch's size is its `batchLength` (bytes 8..12,
/// the Kafka protocol guide, "Record Batch") plus the 12 bytes before it; truncated data is
/// left to the decoder to refuse.
pub fn oversized_batch(records: &[u8], max: u64) -> Option<usize> {
    let mut at = 0usize;
    while at.checked_add(12).is_some_and(|end| end <= records.len()) {
        let batch_length = i32::from_be_bytes([records[at + 8], records[at + 9], records[at + 10], records[at + 11]]);
        let total = (batch_length.max(0) as usize).saturating_add(12);
        if total as u64 > max {
            return Some(total);
        }
        at = at.saturating_add(total);
    }
    None
}

/// A Produce whose records are written (in request order) but not yet durable.
pub(crate) struct WrittenProduce {
    resp: ProduceResponse,
    /// (topic index, partition index in the response, partition, what was written).
    pending: Vec<(usize, usize, Arc<Partition>, AppendInfo)>,
}

impl WrittenProduce {
    /// Waits until every write is acknowledged under its topic's durability policy (the
    /// `fsync` policy: fdatasync, shared with concurrent writers), then answers.
    pub(crate) fn complete(mut self) -> ProduceResponse {
        for (t, i, p, info) in self.pending {
            let pr = &mut self.resp.responses[t].partition_responses[i];
            if let Err(e) = p.complete(&info) {
                tracing::error!(partition = pr.index, error = %e, "produce failed");
                pr.error_code = code(ResponseError::KafkaStorageError);
                pr.base_offset = -1;
            }
        }
        self.resp
    }
}

/// The first half of a Produce: checks and writes every partition's records, in order.
pub(crate) fn produce_write(server: &KafkaServer, r: ProduceRequest) -> WrittenProduce {
    let now = sluice_core::time::now_ms();
    let mut resp = ProduceResponse::default();
    let mut pending = Vec::new();
    for (ti, td) in r.topic_data.into_iter().enumerate() {
        let name = td.name.0.to_string();
        // Internal topics (committed offsets) take no client records, as in Kafka.
        // Pipeline outputs are written by their pipeline only.
        let topic = if name == sluice_log::OFFSETS_TOPIC {
            Err(code(ResponseError::InvalidTopicException))
        } else if (server.options.read_only_topics)(&name) {
            Err(code(ResponseError::TopicAuthorizationFailed))
        } else {
            lookup(server, &name, false)
        };
        let mut tr = TopicProduceResponse::default();
        tr.name = td.name.clone();
        for (pi, pd) in td.partition_data.into_iter().enumerate() {
            let mut pr = PartitionProduceResponse::default();
            pr.index = pd.index;
            pr.base_offset = -1;
            pr.log_append_time_ms = -1;
            let result = topic.as_ref().map_err(|c| *c).and_then(|t| {
                let p = t.partition(pd.index as u32).map_err(|_| code(ResponseError::UnknownTopicOrPartition))?;
                let written = append(server, &name, pd.index, p, pd.records.unwrap_or_default(), t.max_message_bytes(), now)?;
                Ok((written, p.log_start_offset() as i64, p.clone()))
            });
            match result {
                Ok((Written::Done { base_offset }, start, _)) => {
                    pr.base_offset = base_offset;
                    pr.log_start_offset = start;
                }
                Ok((Written::Pending(info), start, p)) => {
                    pr.base_offset = info.base_offset as i64;
                    pr.log_start_offset = start;
                    pending.push((ti, pi, p, info));
                }
                Err(c) => pr.error_code = c,
            }
            tr.partition_responses.push(pr);
        }
        resp.responses.push(tr);
    }
    WrittenProduce { resp, pending }
}

/// The outcome of writing one partition's records.
enum Written {
    /// Nothing to wait for (no records).
    Done { base_offset: i64 },
    /// Written (or a retry of a batch written before); acknowledge after
    /// [`Partition::complete`].
    Pending(AppendInfo),
}

/// How much of a partition's newest data is scanned to rebuild a producer's state, bytes.
const RESTORE_SCAN_BYTES: u64 = 8 << 20;

/// What a partition's records in a Produce request become.
enum Payload {
    /// One uncompressed batch, stored as sent (validated, base offset assigned).
    Raw(Vec<u8>),
    /// Compressed or several batches: decoded, appended as a new batch.
    Records(Vec<NewRecord>),
}

/// Writes one partition's records from a Produce request (not yet acknowledged), or says
/// why not with an error code.
fn append(server: &KafkaServer, topic: &str, index: i32, p: &Partition, raw: Bytes, max_message_bytes: u64, now: i64) -> Result<Written, i16> {
    if let Some(size) = oversized_batch(&raw, max_message_bytes) {
        metrics::counter!(sluice_core::telemetry::KAFKA_REFUSED_BATCHES_TOTAL, "reason" => "too_large").increment(1);
        tracing::warn!(topic, partition = index, size, max_message_bytes, "refused a produced batch larger than the topic's max.message.bytes");
        return Err(code(ResponseError::MessageTooLarge));
    }
    let idempotent = ProducerBatch::parse(&raw);
    let single_uncompressed = decode_header(&raw).ok().filter(|h| h.total_len == raw.len() && h.attributes & 0x07 == 0);
    let (payload, count) = match single_uncompressed {
        Some(h) => (Payload::Raw(raw.to_vec()), h.record_count as usize),
        None => {
            let records = produced_records(raw)?;
            let n = records.len();
            (Payload::Records(records), n)
        }
    };
    if count == 0 {
        return Ok(Written::Done { base_offset: p.log_end_offset() as i64 });
    }
    let rejected = match (server.options.record_check)(topic) {
        Some(check) => check_records(&payload, &check)?,
        None => Vec::new(),
    };
    // One request carries one batch per partition; its sequence range covers all of it.
    let idempotent = idempotent.map(|b| ProducerBatch { count: count as i32, ..b });
    let write = |payload: Payload| match (payload, &idempotent) {
        (Payload::Raw(mut b), _) => p.write_raw(&mut b, now),
        // An idempotent producer's compressed batch is stored re-encoded with its producer
        // fields, so its state can be rebuilt from the log after a restart.
        (Payload::Records(r), Some(b)) => {
            let mut buf = Vec::new();
            sluice_log::batch::encode(0, now, &r, &mut buf).map_err(|size| LogError::BatchTooLarge { size, max: sluice_log::batch::MAX_BATCH_BYTES })?;
            sluice_log::batch::set_producer(&mut buf, b.producer_id, b.epoch, b.base_sequence);
            p.write_raw(&mut buf, now)
        }
        (Payload::Records(r), None) => p.write(&r, now),
    };
    let failed = |e: LogError| match e {
        LogError::BatchTooLarge { size, max } => {
            metrics::counter!(sluice_core::telemetry::KAFKA_REFUSED_BATCHES_TOTAL, "reason" => "too_large").increment(1);
            tracing::warn!(topic, partition = index, size, max, "refused a produced batch that decompresses past the log's batch limit");
            code(ResponseError::MessageTooLarge)
        }
        LogError::BadBatch(reason) => {
            metrics::counter!(sluice_core::telemetry::KAFKA_REFUSED_BATCHES_TOTAL, "reason" => "corrupt").increment(1);
            tracing::warn!(topic, partition = index, %reason, "refused a produced batch");
            code(ResponseError::CorruptMessage)
        }
        e => {
            tracing::error!(topic, partition = index, error = %e, "produce failed");
            code(ResponseError::KafkaStorageError)
        }
    };
    let info = match &idempotent {
        None => write(payload).map_err(failed)?,
        Some(b) => {
            // Sequence check and append under one lock: a producer's batches are appended
            // in the order they were checked.
            let mut producers = server.producers.lock().unwrap_or_else(|p| p.into_inner());
            if producers.needs_restore(topic, index) {
                // First idempotent batch here since sluice started: rebuild the state of the
                // producers in the most recent stored batches (a retry may straddle a restart).
                let tail = p.read_raw(p.tail_offset(RESTORE_SCAN_BYTES), RESTORE_SCAN_BYTES as usize * 2).unwrap_or_default();
                producers.restore(topic, index, &tail, now);
            }
            match producers.check(topic, index, b) {
                Decision::Append => {}
                Decision::Duplicate { base_offset } => {
                    tracing::debug!(topic, partition = index, producer = b.producer_id, "duplicate batch not appended again");
                    // Answered like the original: once its records are durable (the
                    // original may still be waiting for its fdatasync).
                    let base = base_offset.max(0) as u64;
                    return Ok(Written::Pending(AppendInfo { base_offset: base, last_offset: base + count as u64 - 1 }));
                }
                Decision::Reject(e) => {
                    metrics::counter!(sluice_core::telemetry::KAFKA_REFUSED_BATCHES_TOTAL, "reason" => "sequence").increment(1);
                    return Err(code(e));
                }
            }
            let info = write(payload).map_err(failed)?;
            producers.record(topic, index, b, info.base_offset as i64, now);
            info
        }
    };
    metrics::counter!(sluice_core::telemetry::KAFKA_PRODUCED_RECORDS_TOTAL, "topic" => topic.to_string()).increment(count as u64);
    if !rejected.is_empty() {
        dead_letters(server, topic, index, info.base_offset, &rejected, now);
    }
    Ok(Written::Pending(info))
}

/// (index in the batch, field error, the record as text) of every record failing `check`.
fn check_records(payload: &Payload, check: &RecordCheck) -> Result<Vec<(usize, FieldError, String)>, i16> {
    let mut owned = Vec::new();
    let values: Vec<&[u8]> = match payload {
        Payload::Raw(b) => {
            decode_records(b, 0, &mut owned).map_err(|_| code(ResponseError::CorruptMessage))?;
            owned.iter().map(|r| r.value.as_slice()).collect()
        }
        Payload::Records(r) => r.iter().map(|r| r.value.as_slice()).collect(),
    };
    Ok(values.into_iter().enumerate().filter_map(|(i, v)| check(v).err().map(|e| (i, e, String::from_utf8_lossy(v).into_owned()))).collect())
}

/// Writes rejected records, with their reasons and stored offsets, to the topic's
/// dead-letter topic, and counts them. The records themselves are already in the topic.
fn dead_letters(server: &KafkaServer, topic: &str, partition: i32, base_offset: u64, rejected: &[(usize, FieldError, String)], now: i64) {
    let records: Vec<NewRecord> = rejected
        .iter()
        .map(|(i, e, raw)| {
            metrics::counter!(sluice_core::telemetry::INGEST_REJECTED_RECORDS_TOTAL, "topic" => topic.to_string(), "field" => e.field.clone()).increment(1);
            let letter = DeadLetter {
                topic,
                index: Some(*i),
                field: &e.field,
                reason: &e.reason,
                record: raw,
                transport: "kafka",
                received_at_ms: now,
                stored_at: Some((partition as u32, base_offset + *i as u64)),
            };
            NewRecord::new(None, letter.to_value())
        })
        .collect();
    let dlq = format!("{topic}{DLQ_SUFFIX}");
    let written = server.log.ensure_topic(&dlq, 1).and_then(|t| t.partition(0).cloned()).and_then(|p| p.append(&records, now));
    match written {
        Ok(_) => tracing::warn!(topic, partition, rejected = records.len(), dead_letter_topic = %dlq, "produced records failed the topic's schema; stored, and copied with the reason to the dead-letter topic"),
        Err(e) => tracing::error!(topic, partition, error = %e, "could not write rejected records to the dead-letter topic"),
    }
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
                    // -2 earliest, -4 earliest local (KIP-405: all of sluice's log is local).
                    -2 | -4 => pr.offset = part.log_start_offset() as i64,
                    -1 => pr.offset = part.high_watermark() as i64,
                    // -3 max timestamp (KIP-734) needs a per-record scan sluice does not do.
                    -3 => pr.error_code = code(ResponseError::UnsupportedVersion),
                    ts if ts < 0 => pr.error_code = code(ResponseError::InvalidRequest),
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

/// A Fetch: reads at once, and if fewer than `min_bytes` are there, waits (without holding
/// a thread) for the log to change or `max_wait_ms` to pass, then reads again.
pub(crate) async fn fetch(server: Arc<KafkaServer>, r: FetchRequest) -> Result<FetchResponse, tokio::task::JoinError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(r.max_wait_ms.max(0) as u64);
    let r = Arc::new(r);
    loop {
        // Registered before reading, so a change during the read still wakes this task.
        let changed = server.log_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let (s2, r2) = (server.clone(), r.clone());
        let (resp, total) = tokio::task::spawn_blocking(move || fetch_once(&s2, &r2)).await?;
        if total >= r.min_bytes.max(1) as usize || tokio::time::Instant::now() >= deadline {
            return Ok(resp);
        }
        let _ = tokio::time::timeout_at(deadline, changed).await;
    }
}

/// Reads every requested partition once; returns the response and its record bytes.
fn fetch_once(server: &KafkaServer, r: &FetchRequest) -> (FetchResponse, usize) {
    let mut total = 0usize;
    let mut resp = FetchResponse::default();
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
                    let (start, hw) = (part.log_start_offset() as i64, part.high_watermark() as i64);
                    pd.high_watermark = hw;
                    // No transactions: the last stable offset is the high watermark, so
                    // read_committed and read_uncommitted consumers read the same records.
                    pd.last_stable_offset = hw;
                    pd.log_start_offset = start;
                    if p.fetch_offset < start || p.fetch_offset > hw {
                        pd.error_code = code(ResponseError::OffsetOutOfRange);
                    } else {
                        // partition_max_bytes per partition, max_bytes for the whole
                        // response; at least one batch overall (KIP-74).
                        let left = (r.max_bytes.max(1) as usize).saturating_sub(total);
                        let limit = (p.partition_max_bytes.max(1) as usize).min(left);
                        let read = if limit == 0 { Ok(Vec::new()) } else { part.read_raw(p.fetch_offset as u64, limit) };
                        match read {
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
    (resp, total)
}
