//! Every metric sluice exports, defined in one place. Names follow
//! `sluice_<name>_<unit>[_total]` and Prometheus' naming guide
//! (<https://prometheus.io/docs/practices/naming/>): base units (`seconds`, `bytes`),
//! counters end in `_total`, timestamps end in `_timestamp_seconds`, and `promtool check
//! metrics` passes on a scrape (the end-to-end monitoring test runs it). Durations are
//! measured in ms inside sluice and exported in seconds. Gauges of state (high
//! watermarks, lag, disk, pipeline state) are sampled when `/metrics` is scraped.

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

/// Records read by a pipeline. Labels: `pipeline`.
pub const PIPELINE_RECORDS_TOTAL: &str = "sluice_pipeline_records_total";
/// Records dropped by a pipeline because every window they belong to had fired (they go
/// to `<pipeline>.late` with the reason). Labels: `pipeline`.
pub const PIPELINE_LATE_RECORDS_TOTAL: &str = "sluice_pipeline_late_records_total";
/// Resent records (same key and event time) counted once. Labels: `pipeline`.
pub const PIPELINE_DUPLICATE_RECORDS_TOTAL: &str = "sluice_pipeline_duplicate_records_total";
/// Records in the log that did not match the source topic's schema (skipped; ingest
/// dead-lettered them). Labels: `pipeline`.
pub const PIPELINE_INVALID_RECORDS_TOTAL: &str = "sluice_pipeline_invalid_records_total";
/// Rows committed to a pipeline's outputs. Labels: `pipeline`, `output`.
pub const PIPELINE_OUTPUT_ROWS_TOTAL: &str = "sluice_pipeline_output_rows_total";
/// Alerts fired. Labels: `pipeline`.
pub const PIPELINE_ALERTS_TOTAL: &str = "sluice_pipeline_alerts_total";
/// Gauge: (rule, key) pairs of a pipeline whose alert fires now (label `pipeline`).
pub const PIPELINE_ALERTS_FIRING: &str = "sluice_pipeline_alerts_firing";
/// Records in the log a pipeline has not read yet (sum over partitions). Labels: `pipeline`.
pub const PIPELINE_LAG_RECORDS: &str = "sluice_pipeline_lag_records";
/// A pipeline's watermark, seconds since the Unix epoch (the event time below which it
/// expects no more records; `time() - …` is the watermark delay). Labels: `pipeline`.
pub const PIPELINE_WATERMARK_TIMESTAMP_SECONDS: &str = "sluice_pipeline_watermark_timestamp_seconds";
/// 1 for a pipeline's current state, 0 for the others, as Kubernetes' `…_phase` gauges.
/// Labels: `pipeline`, `state` (`starting`, `running`, `draining`, `failed`, `stopped`).
pub const PIPELINE_STATE: &str = "sluice_pipeline_state";
/// [`PIPELINE_STATE`]'s `state` label values, all exported so a state can be alerted on
/// when it is 0 as well.
pub const PIPELINE_STATES: &[&str] = &["starting", "running", "draining", "failed", "stopped"];
/// When a pipeline's last checkpoint committed, seconds since the Unix epoch. Labels:
/// `pipeline`.
pub const PIPELINE_LAST_CHECKPOINT_TIMESTAMP_SECONDS: &str = "sluice_pipeline_last_checkpoint_timestamp_seconds";
/// Keys held in a pipeline's state. Labels: `pipeline`.
pub const PIPELINE_STATE_KEYS: &str = "sluice_pipeline_state_keys";
/// Windows open in a pipeline's state. Labels: `pipeline`.
pub const PIPELINE_OPEN_WINDOWS: &str = "sluice_pipeline_open_windows";
/// Bytes of a pipeline's state files on disk (snapshot and changes). Labels: `pipeline`.
pub const PIPELINE_STATE_BYTES: &str = "sluice_pipeline_state_bytes";
/// Checkpoints committed.
pub const CHECKPOINTS_TOTAL: &str = "sluice_checkpoints_total";
/// Time from a checkpoint's barrier to its manifest committed, seconds. A histogram.
pub const CHECKPOINT_DURATION_SECONDS: &str = "sluice_checkpoint_duration_seconds";
/// How long a pipeline takes no input at a checkpoint barrier (the synchronous part of
/// its snapshot: changed state written to the page cache, output staged; the fsync of
/// the state follows on another thread), seconds. Flink calls it the sync duration.
/// Labels: `pipeline`. A histogram with [`CHECKPOINT_DURATION_BUCKETS_SECONDS`].
pub const PIPELINE_CHECKPOINT_PAUSE_SECONDS: &str = "sluice_pipeline_checkpoint_pause_seconds";
/// Checkpoints that failed (after one, pipelines stop checkpointing until a restart).
pub const CHECKPOINT_FAILURES_TOTAL: &str = "sluice_checkpoint_failures_total";
/// Bytes of state changes written by checkpoints.
pub const CHECKPOINT_WRITTEN_BYTES_TOTAL: &str = "sluice_checkpoint_written_bytes_total";
/// Bucket bounds of [`CHECKPOINT_DURATION_SECONDS`], seconds (1 ms to 5 s).
pub const CHECKPOINT_DURATION_BUCKETS_SECONDS: &[f64] = &[0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// 1 while the log refuses writes after a failed fsync or a full disk (it is poisoned
/// until a restart), else 0.
pub const LOG_POISONED: &str = "sluice_log_poisoned";
/// Free bytes on the data directory's file system (for unprivileged users, as `df`).
pub const DISK_FREE_BYTES: &str = "sluice_disk_free_bytes";
/// Size of the data directory's file system, bytes.
pub const DISK_CAPACITY_BYTES: &str = "sluice_disk_capacity_bytes";
/// Records of a partition a consumer group has not committed yet (high watermark minus
/// committed offset). Labels: `group`, `topic`, `partition`.
pub const GROUP_LAG_RECORDS: &str = "sluice_group_lag_records";
/// 1 once recovery finished and the server acks writes (as `GET /readyz`), else 0.
pub const READY: &str = "sluice_ready";
/// Processing-status events published (`GET /v1/events`). Labels: `kind`.
pub const EVENTS_TOTAL: &str = "sluice_events_total";

/// Kafka protocol requests answered. Labels: `api` (e.g. Produce, Fetch, JoinGroup).
pub const KAFKA_REQUESTS_TOTAL: &str = "sluice_kafka_requests_total";
/// Time from a Kafka request's last byte read to its response written, seconds (a
/// Produce includes the fdatasync of its records). Labels: `api`. A histogram.
pub const KAFKA_REQUEST_DURATION_SECONDS: &str = "sluice_kafka_request_duration_seconds";
/// Time from an ingest request's records handed to the external cluster (`serve --log
/// kafka://…`) to the cluster's acks for all of them (acks=all), seconds. Labels:
/// `topic`. A histogram with [`KAFKA_REQUEST_DURATION_BUCKETS_SECONDS`].
pub const CLUSTER_APPEND_DURATION_SECONDS: &str = "sluice_cluster_append_duration_seconds";
/// Appends to the external cluster that failed or timed out (the device got a 503 and
/// nothing was acknowledged). Labels: `topic`.
pub const CLUSTER_APPEND_FAILURES_TOTAL: &str = "sluice_cluster_append_failures_total";
/// Rebalances of a worker's consumer group as this worker saw them. Labels: `kind`
/// (`assigned`, `revoked`: given up cleanly, `lost`: the group moved on without it).
pub const WORKER_REBALANCES_TOTAL: &str = "sluice_worker_rebalances_total";
/// Partitions a worker owns now (sampled at scrape time).
pub const WORKER_PARTITIONS: &str = "sluice_worker_partitions";
/// Checkpoints a worker could not commit because another worker had committed that
/// checkpoint of the partition first (it was fenced, and drops the partition's task).
pub const WORKER_FENCED_TOTAL: &str = "sluice_worker_fenced_total";
/// Records appended by Kafka Produce requests. Labels: `topic`.
pub const KAFKA_PRODUCED_RECORDS_TOTAL: &str = "sluice_kafka_produced_records_total";
/// Kafka produce batches refused (bad batch, sequence error). Labels: `reason`.
pub const KAFKA_REFUSED_BATCHES_TOTAL: &str = "sluice_kafka_refused_batches_total";
/// Connections a listener closed as soon as they were accepted, because of a connection
/// cap. Labels: `listener` (`http`, `kafka`).
pub const LISTENER_REFUSED_CONNECTIONS_TOTAL: &str = "sluice_listener_refused_connections_total";
/// Failed `accept` calls of a listener (e.g. out of file descriptors). Labels: `listener`.
pub const LISTENER_ACCEPT_ERRORS_TOTAL: &str = "sluice_listener_accept_errors_total";
/// Connections a listener closed for a timeout (idle, slow request header or frame).
/// Labels: `listener`, `reason`.
pub const LISTENER_TIMEOUTS_TOTAL: &str = "sluice_listener_timeouts_total";
/// HTTP requests refused before any route (DNS rebinding, cross-site, content type).
/// Labels: `reason` (`host_not_allowed`, `cross_origin`, `unsupported_media_type`,
/// `unauthenticated`, `forbidden`, `csrf_failed`, `login_failed`).
pub const HTTP_REFUSED_REQUESTS_TOTAL: &str = "sluice_http_refused_requests_total";
/// Kafka requests refused before their handler. Labels: `reason` (`authorization`:
/// the principal's role lacks the permission).
pub const KAFKA_REFUSED_REQUESTS_TOTAL: &str = "sluice_kafka_refused_requests_total";
/// Kafka SASL authentications. Labels: `mechanism`, `result` (`ok`, `failed`).
pub const KAFKA_AUTHENTICATIONS_TOTAL: &str = "sluice_kafka_authentications_total";
/// Dashboard logins (`POST /v1/login`). Labels: `result` (`ok`, `failed`).
pub const AUTH_LOGINS_TOTAL: &str = "sluice_auth_logins_total";
/// Throttle time handed to clients over a quota, seconds, one observation per throttled
/// request (`_sum` is the total). Labels: `quota` (`produce`, `fetch`, `http_ingest`). A
/// histogram.
pub const QUOTA_THROTTLE_SECONDS: &str = "sluice_quota_throttle_seconds";
/// Bucket bounds of [`QUOTA_THROTTLE_SECONDS`], seconds (1 ms to 30 s).
pub const QUOTA_THROTTLE_BUCKETS_SECONDS: &[f64] = &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Open connections of a listener (WebSockets included). Labels: `listener`. A gauge.
pub const LISTENER_OPEN_CONNECTIONS: &str = "sluice_listener_open_connections";
/// The connection cap of a listener (0: none). Labels: `listener`. A gauge.
pub const LISTENER_MAX_CONNECTIONS: &str = "sluice_listener_max_connections";
/// Bytes of requests (HTTP bodies, Kafka frames) held now. Labels: `listener`. A gauge.
pub const LISTENER_INFLIGHT_REQUEST_BYTES: &str = "sluice_listener_inflight_request_bytes";
/// The bound on [`LISTENER_INFLIGHT_REQUEST_BYTES`]. Labels: `listener`. A gauge.
pub const LISTENER_MAX_INFLIGHT_REQUEST_BYTES: &str = "sluice_listener_max_inflight_request_bytes";
/// Open WebSocket and SSE streams. Labels: `kind` (`websocket`, `sse`). A gauge.
pub const HTTP_OPEN_STREAMS: &str = "sluice_http_open_streams";
/// The cap on [`HTTP_OPEN_STREAMS`]. Labels: `kind`. A gauge.
pub const HTTP_MAX_STREAMS: &str = "sluice_http_max_streams";
/// Idempotent-producer states (producer id × partition) held. A gauge.
pub const KAFKA_PRODUCER_STATES: &str = "sluice_kafka_producer_states";
/// Bucket bounds of [`KAFKA_REQUEST_DURATION_SECONDS`], seconds (0.5 ms to 5 s).
pub const KAFKA_REQUEST_DURATION_BUCKETS_SECONDS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Registers descriptions with the installed recorder. Call once after installing it.

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(KAFKA_REQUESTS_TOTAL, Unit::Count, "Kafka protocol requests answered.");
    describe_histogram!(KAFKA_REQUEST_DURATION_SECONDS, Unit::Seconds, "Kafka request time from read to response written.");
    describe_histogram!(CLUSTER_APPEND_DURATION_SECONDS, Unit::Seconds, "Time from records handed to the external Kafka cluster to its acks (acks=all).");
    describe_counter!(CLUSTER_APPEND_FAILURES_TOTAL, Unit::Count, "Appends to the external Kafka cluster that failed or timed out (nothing acknowledged).");
    describe_counter!(WORKER_REBALANCES_TOTAL, Unit::Count, "Consumer-group rebalances seen by this worker, by kind (assigned, revoked, lost).");
    describe_gauge!(WORKER_PARTITIONS, Unit::Count, "Source partitions this worker owns now.");
    describe_counter!(WORKER_FENCED_TOTAL, Unit::Count, "Checkpoints refused because another worker committed that checkpoint of the partition first.");
    describe_counter!(KAFKA_PRODUCED_RECORDS_TOTAL, Unit::Count, "Records appended by Kafka Produce requests.");
    describe_counter!(KAFKA_REFUSED_BATCHES_TOTAL, Unit::Count, "Kafka produce batches refused.");
    describe_counter!(LISTENER_REFUSED_CONNECTIONS_TOTAL, Unit::Count, "Connections closed at accept because of a connection cap.");
    describe_counter!(HTTP_REFUSED_REQUESTS_TOTAL, Unit::Count, "HTTP requests refused before any route (host, origin, content type, authentication, permission).");
    describe_counter!(AUTH_LOGINS_TOTAL, Unit::Count, "Dashboard logins, by result.");
    describe_counter!(KAFKA_REFUSED_REQUESTS_TOTAL, Unit::Count, "Kafka requests refused before their handler (authorization).");
    describe_counter!(KAFKA_AUTHENTICATIONS_TOTAL, Unit::Count, "Kafka SASL authentications, by mechanism and result.");
    describe_gauge!(LISTENER_OPEN_CONNECTIONS, Unit::Count, "Open connections of a listener.");
    describe_gauge!(LISTENER_MAX_CONNECTIONS, Unit::Count, "Connection cap of a listener (0: none).");
    describe_gauge!(LISTENER_INFLIGHT_REQUEST_BYTES, Unit::Bytes, "Bytes of requests held now.");
    describe_gauge!(LISTENER_MAX_INFLIGHT_REQUEST_BYTES, Unit::Bytes, "Bound on bytes of requests held.");
    describe_gauge!(HTTP_OPEN_STREAMS, Unit::Count, "Open WebSocket and SSE streams.");
    describe_gauge!(HTTP_MAX_STREAMS, Unit::Count, "Cap on open WebSocket and SSE streams.");
    describe_gauge!(KAFKA_PRODUCER_STATES, Unit::Count, "Idempotent-producer states held.");
    describe_histogram!(QUOTA_THROTTLE_SECONDS, Unit::Seconds, "Throttle time handed to clients over a quota.");
    describe_counter!(LISTENER_ACCEPT_ERRORS_TOTAL, Unit::Count, "Failed accept calls of a listener.");
    describe_counter!(LISTENER_TIMEOUTS_TOTAL, Unit::Count, "Connections closed for a timeout (idle, slow header or frame).");
    describe_counter!(INGEST_RECORDS_TOTAL, Unit::Count, "Records accepted and durably appended by ingest.");
    describe_counter!(INGEST_REJECTED_RECORDS_TOTAL, Unit::Count, "Records rejected by validation (kept in the dead-letter topic).");
    describe_counter!(INGEST_RECEIVED_BYTES_TOTAL, Unit::Bytes, "Bytes received by ingest.");
    describe_counter!(INGEST_REFUSED_REQUESTS_TOTAL, Unit::Count, "Whole ingest requests refused.");
    describe_counter!(LOG_APPENDED_RECORDS_TOTAL, Unit::Count, "Records appended to the log.");
    describe_counter!(LOG_FSYNCS_TOTAL, Unit::Count, "fdatasync calls made by the log.");
    describe_gauge!(LOG_HIGH_WATERMARK_OFFSET, Unit::Count, "High watermark (durable end offset) per partition.");
    describe_gauge!(LOG_SIZE_BYTES, Unit::Bytes, "Bytes stored per partition.");
    describe_counter!(PIPELINE_RECORDS_TOTAL, Unit::Count, "Records read by a pipeline.");
    describe_counter!(PIPELINE_LATE_RECORDS_TOTAL, Unit::Count, "Records too late for any open window (kept in <pipeline>.late).");
    describe_counter!(PIPELINE_DUPLICATE_RECORDS_TOTAL, Unit::Count, "Resent records counted once.");
    describe_counter!(PIPELINE_INVALID_RECORDS_TOTAL, Unit::Count, "Records that did not match the source schema, skipped.");
    describe_counter!(PIPELINE_OUTPUT_ROWS_TOTAL, Unit::Count, "Rows committed to a pipeline's outputs.");
    describe_counter!(PIPELINE_ALERTS_TOTAL, Unit::Count, "Alerts fired.");
    describe_gauge!(PIPELINE_ALERTS_FIRING, Unit::Count, "Alerts of a pipeline firing now (not yet resolved).");
    describe_gauge!(PIPELINE_LAG_RECORDS, Unit::Count, "Records not yet read by a pipeline.");
    describe_gauge!(PIPELINE_WATERMARK_TIMESTAMP_SECONDS, Unit::Seconds, "A pipeline's watermark, seconds since the Unix epoch.");
    describe_gauge!(PIPELINE_STATE, Unit::Count, "1 for a pipeline's current state, else 0.");
    describe_gauge!(PIPELINE_LAST_CHECKPOINT_TIMESTAMP_SECONDS, Unit::Seconds, "When a pipeline's last checkpoint committed.");
    describe_gauge!(PIPELINE_STATE_KEYS, Unit::Count, "Keys held in a pipeline's state.");
    describe_gauge!(PIPELINE_OPEN_WINDOWS, Unit::Count, "Windows open in a pipeline's state.");
    describe_gauge!(PIPELINE_STATE_BYTES, Unit::Bytes, "Bytes of a pipeline's state files.");
    describe_counter!(CHECKPOINTS_TOTAL, Unit::Count, "Checkpoints committed.");
    describe_histogram!(CHECKPOINT_DURATION_SECONDS, Unit::Seconds, "Checkpoint time from barrier to manifest committed.");
    describe_histogram!(PIPELINE_CHECKPOINT_PAUSE_SECONDS, Unit::Seconds, "Time a pipeline takes no input at a checkpoint barrier (the synchronous part of its snapshot).");
    describe_counter!(CHECKPOINT_FAILURES_TOTAL, Unit::Count, "Checkpoints that failed.");
    describe_gauge!(LOG_POISONED, Unit::Count, "1 while the log refuses writes after a disk failure.");
    describe_gauge!(DISK_FREE_BYTES, Unit::Bytes, "Free bytes on the data directory's file system.");
    describe_gauge!(DISK_CAPACITY_BYTES, Unit::Bytes, "Size of the data directory's file system.");
    describe_gauge!(GROUP_LAG_RECORDS, Unit::Count, "Records a consumer group has not committed yet, per partition.");
    describe_gauge!(READY, Unit::Count, "1 once recovery finished and the server acks writes.");
    describe_counter!(EVENTS_TOTAL, Unit::Count, "Processing-status events published.");
    describe_counter!(CHECKPOINT_WRITTEN_BYTES_TOTAL, Unit::Bytes, "Bytes of state changes written by checkpoints.");
}
