//! Every metric sluice exports, defined in one place. Names follow
//! `sluice_<name>_<unit>[_total]`; counters end in `_total`. Gauges of state (high
//! watermarks, open sessions, lag) are sampled when `/metrics` is scraped.

/// Records accepted and durably appended by the ingest gateway. Labels: `topic`, `transport`.
pub const INGEST_RECORDS_TOTAL: &str = "sluice_ingest_records_total";
/// Records rejected by validation and written to the dead-letter topic. Labels: `topic`, `field`.
pub const INGEST_REJECTED_RECORDS_TOTAL: &str = "sluice_ingest_rejected_records_total";
/// Request bodies and WebSocket frames received, bytes. Labels: `transport`.
pub const INGEST_RECEIVED_BYTES_TOTAL: &str = "sluice_ingest_received_bytes_total";
/// Whole requests refused (malformed JSON, unknown topic, too large). Labels: `reason`.
pub const INGEST_REFUSED_REQUESTS_TOTAL: &str = "sluice_ingest_refused_requests_total";

/// Records appended to the log. Labels: `topic`.
pub const LOG_APPENDED_RECORDS_TOTAL: &str = "sluice_log_appended_records_total";
/// fdatasync calls made by the log (group commit shares one among many appends).
pub const LOG_FSYNCS_TOTAL: &str = "sluice_log_fsyncs_total";
/// Durable end of each partition (high watermark), offset. Labels: `topic`, `partition`.
pub const LOG_HIGH_WATERMARK_OFFSET: &str = "sluice_log_high_watermark_offset";
/// Bytes stored per partition. Labels: `topic`, `partition`.
pub const LOG_SIZE_BYTES: &str = "sluice_log_size_bytes";

/// Records read by a job. Labels: `job`.
pub const JOB_RECORDS_TOTAL: &str = "sluice_job_records_total";
/// Records dropped by a job because their event time was behind the finalized frontier
/// (later than allowed lateness, or a resend of an already-final reading). Labels: `job`.
pub const JOB_LATE_RECORDS_TOTAL: &str = "sluice_job_late_records_total";
/// Resent readings (same key and event time) dropped by a job. Labels: `job`.
pub const JOB_DUPLICATE_RECORDS_TOTAL: &str = "sluice_job_duplicate_records_total";
/// Records in the log a job could not parse (skipped, logged). Labels: `job`.
pub const JOB_INVALID_RECORDS_TOTAL: &str = "sluice_job_invalid_records_total";
/// Sessions closed and committed. Labels: `job`.
pub const JOB_SESSIONS_CLOSED_TOTAL: &str = "sluice_job_sessions_closed_total";
/// Checkpoints committed. Labels: `job`.
pub const JOB_CHECKPOINTS_TOTAL: &str = "sluice_job_checkpoints_total";
/// Sessions currently open. Labels: `job`.
pub const JOB_OPEN_SESSIONS: &str = "sluice_job_open_sessions";
/// Records in the log the job has not read yet (sum over partitions). Labels: `job`.
pub const JOB_LAG_RECORDS: &str = "sluice_job_lag_records";

/// Registers descriptions with the installed recorder. Call once after installing it.
/// Kafka protocol requests answered. Labels: `api` (e.g. Produce, Fetch, JoinGroup).
pub const KAFKA_REQUESTS_TOTAL: &str = "sluice_kafka_requests_total";
/// Time from a Kafka request's last byte read to its response written, ms (a Produce
/// includes the fdatasync of its records). Labels: `api`. A histogram.
pub const KAFKA_REQUEST_DURATION_MS: &str = "sluice_kafka_request_duration_ms";
/// Records appended by Kafka Produce requests. Labels: `topic`.
pub const KAFKA_PRODUCED_RECORDS_TOTAL: &str = "sluice_kafka_produced_records_total";
/// Kafka produce batches refused (bad batch, sequence error). Labels: `reason`.
pub const KAFKA_REFUSED_BATCHES_TOTAL: &str = "sluice_kafka_refused_batches_total";
/// Bucket bounds of [`KAFKA_REQUEST_DURATION_MS`], ms.
pub const KAFKA_REQUEST_DURATION_BUCKETS_MS: &[f64] = &[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0];

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(KAFKA_REQUESTS_TOTAL, Unit::Count, "Kafka protocol requests answered.");
    describe_histogram!(KAFKA_REQUEST_DURATION_MS, Unit::Milliseconds, "Kafka request time from read to response written.");
    describe_counter!(KAFKA_PRODUCED_RECORDS_TOTAL, Unit::Count, "Records appended by Kafka Produce requests.");
    describe_counter!(KAFKA_REFUSED_BATCHES_TOTAL, Unit::Count, "Kafka produce batches refused.");
    describe_counter!(INGEST_RECORDS_TOTAL, Unit::Count, "Records accepted and durably appended by ingest.");
    describe_counter!(INGEST_REJECTED_RECORDS_TOTAL, Unit::Count, "Records rejected by validation (kept in the dead-letter topic).");
    describe_counter!(INGEST_RECEIVED_BYTES_TOTAL, Unit::Bytes, "Bytes received by ingest.");
    describe_counter!(INGEST_REFUSED_REQUESTS_TOTAL, Unit::Count, "Whole ingest requests refused.");
    describe_counter!(LOG_APPENDED_RECORDS_TOTAL, Unit::Count, "Records appended to the log.");
    describe_counter!(LOG_FSYNCS_TOTAL, Unit::Count, "fdatasync calls made by the log.");
    describe_gauge!(LOG_HIGH_WATERMARK_OFFSET, Unit::Count, "High watermark (durable end offset) per partition.");
    describe_gauge!(LOG_SIZE_BYTES, Unit::Bytes, "Bytes stored per partition.");
    describe_counter!(JOB_RECORDS_TOTAL, Unit::Count, "Records read by a job.");
    describe_counter!(JOB_LATE_RECORDS_TOTAL, Unit::Count, "Records dropped as late.");
    describe_counter!(JOB_DUPLICATE_RECORDS_TOTAL, Unit::Count, "Resent readings dropped.");
    describe_counter!(JOB_INVALID_RECORDS_TOTAL, Unit::Count, "Unparseable records skipped by a job.");
    describe_counter!(JOB_SESSIONS_CLOSED_TOTAL, Unit::Count, "Sessions closed and committed.");
    describe_counter!(JOB_CHECKPOINTS_TOTAL, Unit::Count, "Checkpoints committed.");
    describe_gauge!(JOB_OPEN_SESSIONS, Unit::Count, "Sessions currently open.");
    describe_gauge!(JOB_LAG_RECORDS, Unit::Count, "Records not yet read by a job.");
}
