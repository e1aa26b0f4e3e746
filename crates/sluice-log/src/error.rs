use std::path::PathBuf;

/// Why a batch could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated: needs {needed} bytes, {available} available")]
    Truncated { needed: usize, available: usize },
    #[error("batch_length {0} is out of range")]
    BadLength(usize),
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("{0}")]
    Invalid(String),
}

/// Errors of the log. I/O errors carry the path they happened on.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the log refuses writes after a failed write or fsync ({reason}); reads still work. Fix the disk, then restart sluice")]
    Poisoned { reason: String },
    #[error("corrupt batch in {path} at byte {position}: {source}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        #[source]
        source: DecodeError,
    },
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    #[error("topic name {name:?} is invalid: {reason}")]
    InvalidTopicName { name: String, reason: String },
    #[error("invalid topic config: {0}")]
    InvalidConfig(String),
    #[error("topic {name:?} already exists with {partitions} partitions")]
    TopicExists { name: String, partitions: u32 },
    #[error("partition {partition} does not exist in topic {topic:?}")]
    UnknownPartition { topic: String, partition: u32 },
    #[error("the batch cannot be stored: {0}")]
    BadBatch(#[source] DecodeError),
    #[error("a batch of {size} bytes exceeds the maximum of {max} bytes; send smaller batches")]
    BatchTooLarge { size: usize, max: usize },
    #[error("bad topic metadata in {path}: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.into();
    move |source| LogError::Io { path, source }
}
