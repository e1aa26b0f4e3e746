//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions (refused: sluice
//! cannot grow a topic yet), DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.
//!
//! Topic configs map onto the log's settings (Kafka's topic-level config names):
//! - `retention.ms`, `retention.bytes`: [`sluice_log::Retention`] (-1 = unlimited);
//! - `flush.messages=1`: the `fsync` durability policy (ack after fdatasync, the default);
//! - `flush.ms=N`: the `interval` policy (ack after the write, fdatasync every N ms);
//! - `max.message.bytes`: the largest record batch a producer may send, bytes (default
//!   1048588, as Kafka's; at most 64 MiB). A bigger batch gets MESSAGE_TOO_LARGE, which
//!   producers do not retry;
//! - `cleanup.policy=delete`, `segment.bytes`, `min.insync.replicas=1`: read-only.
//!
//! Configured topics, their dead-letter topics and internal topics cannot be deleted
//! (TOPIC_DELETION_DISABLED).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse as IncrementalResult;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_log::{Durability, LogError, Retention};

use super::code;
use crate::KafkaServer;

/// Kafka's ConfigResource types (the Kafka protocol guide, DescribeConfigs).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Config sources: 1 = dynamic topic config, 5 = static broker config.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A topic's alterable settings.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Settings {
    retention: Retention,
    durability: Durability,
    max_message_bytes: u64,
}

impl Settings {
    fn defaults() -> Settings {
        Settings { retention: Retention::default(), durability: Durability::Fsync, max_message_bytes: sluice_log::DEFAULT_MAX_MESSAGE_BYTES }
    }

    fn of(topic: &sluice_log::Topic) -> Settings {
        Settings { retention: topic.retention(), durability: topic.durability(), max_message_bytes: topic.max_message_bytes() }
    }

    /// Persists the settings of an existing topic.
    fn apply(&self, log: &sluice_log::Log, name: &str) -> Result<(), LogError> {
        log.configure(name, self.retention, self.durability)?;
        log.set_max_message_bytes(name, self.max_message_bytes)
    }
}

/// Applies one `name=value` to settings, or says why it cannot.
fn set(settings: &mut Settings, name: &str, value: Option<&str>) -> Result<(), String> {
    let parse = |v: Option<&str>| -> Result<i64, String> {
        let v = v.ok_or_else(|| format!("{name}: a value is required"))?;
        v.trim().parse::<i64>().map_err(|_| format!("{name}: {v:?} is not an integer"))
    };
    match name {
        "retention.ms" => settings.retention.ms = parse(value)?,
        "retention.bytes" => settings.retention.bytes = parse(value)?,
        "flush.ms" => {
            let ms = parse(value)?;
            if ms <= 0 {
                return Err("flush.ms: must be positive (use flush.messages=1 to fsync before every ack)".into());
            }
            settings.durability = Durability::Interval { flush_interval_ms: ms as u64 };
        }
        "flush.messages" => match parse(value)? {
            1 => settings.durability = Durability::Fsync,
            n => return Err(format!("flush.messages: only 1 (fsync before every ack) is supported, got {n}; set flush.ms for interval flushing")),
        },
        "max.message.bytes" => {
            let n = parse(value)?;
            sluice_log::check_max_message_bytes(n.max(0) as u64).map_err(|e| e.to_string())?;
            settings.max_message_bytes = n as u64;
        }
        "cleanup.policy" if value == Some("delete") => {}
        _ => return Err(format!("{name}: not a topic config sluice can set (settable: retention.ms, retention.bytes, flush.ms, flush.messages, max.message.bytes)")),
    }
    Ok(())
}

fn reset(settings: &mut Settings, name: &str) -> Result<(), String> {
    let d = Retention::default();
    match name {
        "retention.ms" => settings.retention.ms = d.ms,
        "retention.bytes" => settings.retention.bytes = d.bytes,
        "flush.ms" | "flush.messages" => settings.durability = Durability::Fsync,
        "max.message.bytes" => settings.max_message_bytes = sluice_log::DEFAULT_MAX_MESSAGE_BYTES,
        _ => return Err(format!("{name}: not a topic config sluice can set")),
    }
    Ok(())
}

fn log_error(e: &LogError) -> i16 {
    match e {
        LogError::UnknownTopic(_) => code(ResponseError::UnknownTopicOrPartition),
        LogError::InvalidTopicName { .. } => code(ResponseError::InvalidTopicException),
        LogError::TopicExists { .. } => code(ResponseError::TopicAlreadyExists),
        _ => code(ResponseError::KafkaStorageError),
    }
}

pub(crate) fn create_topics(server: &KafkaServer, r: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut resp = CreateTopicsResponse::default();
    for t in r.topics {
        let name = t.name.0.to_string();
        let mut result = CreatableTopicResult::default().with_name(t.name.clone()).with_num_partitions(-1).with_replication_factor(-1);
        let partitions = if t.num_partitions < 0 { server.options.auto_create_partitions as i32 } else { t.num_partitions };
        let mut settings = Settings::defaults();
        let configured = t.configs.iter().try_for_each(|c| set(&mut settings, &c.name, c.value.as_deref()));
        let error: Result<(), (ResponseError, String)> = if server.log.topic(&name).is_some() {
            Err((ResponseError::TopicAlreadyExists, format!("topic {name:?} already exists")))
        } else if partitions == 0 || partitions > 10_000 {
            Err((ResponseError::InvalidPartitions, format!("num_partitions must be 1..=10000, got {partitions}")))
        } else if t.replication_factor > 1 {
            Err((ResponseError::InvalidReplicationFactor, "sluice is one broker: replication_factor must be 1 or -1".into()))
        } else if !t.assignments.is_empty() {
            Err((ResponseError::InvalidReplicaAssignment, "sluice is one broker: leave the replica assignment empty".into()))
        } else if let Err(m) = configured {
            Err((ResponseError::InvalidConfig, m))
        } else if let Err(e) = sluice_log::validate_topic_name(&name) {
            Err((ResponseError::InvalidTopicException, e.to_string()))
        } else if r.validate_only {
            Ok(())
        } else {
            server
                .log
                .create_topic_with(&name, partitions as u32, settings.retention)
                .and_then(|_| settings.apply(&server.log, &name))
                .map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))
                .inspect(|_| tracing::info!(topic = %name, partitions, "created topic over the Kafka protocol"))
        };
        match error {
            Ok(()) => result = result.with_num_partitions(partitions).with_replication_factor(1),
            Err((c, m)) => result = result.with_error_code(code(c)).with_error_message(Some(s(&m))),
        }
        resp.topics.push(result);
    }
    resp
}

pub(crate) fn delete_topics(server: &KafkaServer, r: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut resp = DeleteTopicsResponse::default();
    let names: Vec<TopicName> = r.topic_names.into_iter().chain(r.topics.into_iter().filter_map(|t| t.name)).collect();
    for name in names {
        let n = name.0.to_string();
        let (error, message) = if (server.options.protected_topics)(&n) {
            (code(ResponseError::TopicDeletionDisabled), Some(format!("{n:?} is configured in sluice or internal; remove it from the config first")))
        } else {
            match server.offsets.delete_topic(&server.log, &n, sluice_core::time::now_ms()) {
                Ok(()) => {
                    server.producers.lock().unwrap_or_else(|p| p.into_inner()).forget_topic(&n);
                    tracing::info!(topic = %n, "deleted topic over the Kafka protocol");
                    (0, None)
                }
                Err(e) => (log_error(&e), Some(e.to_string())),
            }
        };
        resp.responses.push(DeletableTopicResult::default().with_name(Some(name)).with_error_code(error).with_error_message(message.map(|m| s(&m))));
    }
    resp
}

pub(crate) fn create_partitions(server: &KafkaServer, r: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut resp = CreatePartitionsResponse::default();
    for t in r.topics {
        let (c, m) = match server.log.topic(&t.name.0) {
            None => (ResponseError::UnknownTopicOrPartition, format!("topic {:?} does not exist", t.name.0.as_str())),
            Some(topic) if t.count as u32 == topic.partition_count() => (ResponseError::InvalidPartitions, format!("topic already has {} partitions", t.count)),
            Some(_) => (ResponseError::InvalidPartitions, "sluice cannot change a topic's partition count yet; create a new topic".into()),
        };
        resp.results.push(CreatePartitionsTopicResult::default().with_name(t.name).with_error_code(code(c)).with_error_message(Some(s(&m))));
    }
    resp
}

/// (name, value, read only, source) of every config of a topic.
fn topic_configs(server: &KafkaServer, topic: &sluice_log::Topic) -> Vec<(&'static str, String, bool, i8)> {
    let r = topic.retention();
    let d = Retention::default();
    let src = |custom: bool| if custom { SOURCE_TOPIC } else { SOURCE_DEFAULT };
    let (flush_ms, flush_messages) = match topic.durability() {
        Durability::Fsync => (i64::MAX.to_string(), "1".to_string()),
        Durability::Interval { flush_interval_ms } => (flush_interval_ms.to_string(), i64::MAX.to_string()),
    };
    let interval = topic.durability() != Durability::Fsync;
    vec![
        ("retention.ms", r.ms.to_string(), false, src(r.ms != d.ms)),
        ("retention.bytes", r.bytes.to_string(), false, src(r.bytes != d.bytes)),
        ("flush.ms", flush_ms, false, src(interval)),
        ("flush.messages", flush_messages, false, SOURCE_DEFAULT),
        ("max.message.bytes", topic.max_message_bytes().to_string(), false, src(topic.max_message_bytes() != sluice_log::DEFAULT_MAX_MESSAGE_BYTES)),
        ("cleanup.policy", "delete".into(), true, SOURCE_DEFAULT),
        ("segment.bytes", server.log.config().segment_bytes.to_string(), true, SOURCE_DEFAULT),
        ("min.insync.replicas", "1".into(), true, SOURCE_DEFAULT),
    ]
}

fn broker_configs(server: &KafkaServer) -> Vec<(&'static str, String, bool, i8)> {
    vec![
        ("num.partitions", server.options.auto_create_partitions.to_string(), true, SOURCE_DEFAULT),
        ("auto.create.topics.enable", server.options.auto_create_topics.to_string(), true, SOURCE_DEFAULT),
        ("log.retention.ms", Retention::default().ms.to_string(), true, SOURCE_DEFAULT),
        ("log.segment.bytes", server.log.config().segment_bytes.to_string(), true, SOURCE_DEFAULT),
        ("message.max.bytes", sluice_log::DEFAULT_MAX_MESSAGE_BYTES.to_string(), true, SOURCE_DEFAULT),
        ("group.initial.rebalance.delay.ms", server.options.group_initial_rebalance_delay_ms.to_string(), true, SOURCE_DEFAULT),
    ]
}

pub(crate) fn describe_configs(server: &KafkaServer, r: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut resp = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut out = DescribeConfigsResult::default().with_resource_type(res.resource_type).with_resource_name(res.resource_name.clone());
        let configs = match res.resource_type {
            RESOURCE_TOPIC => match server.log.topic(&res.resource_name) {
                Some(t) => Ok(topic_configs(server, &t)),
                None => Err((ResponseError::UnknownTopicOrPartition, format!("topic {:?} does not exist", res.resource_name.as_str()))),
            },
            RESOURCE_BROKER => Ok(broker_configs(server)),
            other => Err((ResponseError::InvalidRequest, format!("resource type {other} is not supported (topics: 2, brokers: 4)"))),
        };
        match configs {
            Ok(cs) => {
                out.configs = cs
                    .into_iter()
                    .filter(|(n, ..)| res.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == *n)))
                    .map(|(n, v, ro, src)| DescribeConfigsResourceResult::default().with_name(s(n)).with_value(Some(s(&v))).with_read_only(ro).with_config_source(src))
                    .collect();
            }
            Err((c, m)) => out = out.with_error_code(code(c)).with_error_message(Some(s(&m))),
        }
        resp.results.push(out);
    }
    resp
}

/// Alters one topic's configs with `edit`, unless only validating. Errors: (code, message).
fn alter_topic(
    server: &KafkaServer,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    edit: impl FnOnce(&mut Settings) -> Result<(), String>,
) -> Result<(), (ResponseError, String)> {
    if resource_type != RESOURCE_TOPIC {
        return Err((ResponseError::InvalidRequest, "only topic configs (resource type 2) can be altered".into()));
    }
    let topic = server.log.topic(name).ok_or_else(|| (ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist")))?;
    let mut settings = Settings::of(&topic);
    edit(&mut settings).map_err(|m| (ResponseError::InvalidConfig, m))?;
    if validate_only {
        return Ok(());
    }
    settings.apply(&server.log, name).map_err(|e| (ResponseError::KafkaStorageError, e.to_string()))?;
    tracing::info!(topic = name, ?settings, "altered topic config over the Kafka protocol");
    Ok(())
}

pub(crate) fn alter_configs(server: &KafkaServer, r: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut resp = AlterConfigsResponse::default();
    for res in r.resources {
        // AlterConfigs replaces the whole set: what is not given returns to its default.
        let result = alter_topic(server, res.resource_type, &res.resource_name, r.validate_only, |st| {
            *st = Settings::defaults();
            res.configs.iter().try_for_each(|c| set(st, &c.name, c.value.as_deref()))
        });
        let (c, m) = result.err().map(|(c, m)| (code(c), Some(s(&m)))).unwrap_or((0, None));
        resp.responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name)
                .with_error_code(c)
                .with_error_message(m),
        );
    }
    resp
}

pub(crate) fn incremental_alter_configs(server: &KafkaServer, r: IncrementalAlterConfigsRequest) -> IncrementalAlterConfigsResponse {
    let mut resp = IncrementalAlterConfigsResponse::default();
    for res in r.resources {
        let result = alter_topic(server, res.resource_type, &res.resource_name, r.validate_only, |st| {
            res.configs.iter().try_for_each(|c| match c.config_operation {
                0 => set(st, &c.name, c.value.as_deref()),
                1 => reset(st, &c.name),
                op => Err(format!("{}: operation {op} (APPEND/SUBTRACT) applies to list configs, and sluice has none", c.name.as_str())),
            })
        });
        let (c, m) = result.err().map(|(c, m)| (code(c), Some(s(&m)))).unwrap_or((0, None));
        resp.responses.push(
            IncrementalResult::default().with_resource_type(res.resource_type).with_resource_name(res.resource_name).with_error_code(c).with_error_message(m),
        );
    }
    resp
}
