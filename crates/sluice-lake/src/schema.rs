//! Arrow schemas of the tables and conversions from sluice rows. Timestamps are
//! microseconds, UTC (Parquet `TIMESTAMP(isAdjustedToUTC=true, MICROS)`), which Spark,
//! DuckDB and pandas all read as instants. Durations are seconds as `double`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_core::model::{RawRow, SessionSummary, ZoneMs};

use crate::{io, LakeError};

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `heartbeat_raw`: one row per accepted reading.
///
/// | column | type | meaning |
/// |---|---|---|
/// | player_id | string | the record key |
/// | heartbeat | double | bpm |
/// | created_at | timestamp[us, UTC] | event time |
/// | ingested_at | timestamp[us, UTC] | log-append time |
/// | partition | int32 | log partition |
/// | offset | int64 | log offset (with `partition`, unique) |
pub fn raw() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("player_id", DataType::Utf8, false),
        Field::new("heartbeat", DataType::Float64, false),
        Field::new("created_at", ts(), false),
        Field::new("ingested_at", ts(), false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
    ]))
}

/// `heartbeat_sessions`: one row per closed session.
///
/// | column | type | meaning |
/// |---|---|---|
/// | player_id | string | |
/// | session_start | timestamp[us, UTC] | first reading |
/// | session_end | timestamp[us, UTC] | last reading + its coverage (1 s) |
/// | low_s, moderate_s, high_s | double | seconds in each ACSM %HRmax zone |
/// | samples | int64 | distinct readings |
/// | avg_hr, min_hr, max_hr | double | bpm |
/// | hr_max | double | HRmax used, bpm |
pub fn sessions() -> SchemaRef {
    let mut fields = vec![
        Field::new("player_id", DataType::Utf8, false),
        Field::new("session_start", ts(), false),
        Field::new("session_end", ts(), false),
    ];
    for name in ["low_s", "moderate_s", "high_s"] {
        fields.push(Field::new(name, DataType::Float64, false));
    }
    fields.push(Field::new("samples", DataType::Int64, false));
    for name in ["avg_hr", "min_hr", "max_hr", "hr_max"] {
        fields.push(Field::new(name, DataType::Float64, false));
    }
    Arc::new(Schema::new(fields))
}

fn micros(ms: i64) -> i64 {
    ms.saturating_mul(1000)
}

fn ts_col(values: impl Iterator<Item = i64>) -> Arc<dyn Array> {
    Arc::new(TimestampMicrosecondArray::from_iter_values(values.map(micros)).with_timezone("UTC"))
}

fn f64_col(values: impl Iterator<Item = f64>) -> Arc<dyn Array> {
    Arc::new(Float64Array::from_iter_values(values))
}

pub fn raw_batch(rows: &[&RawRow]) -> Result<RecordBatch, LakeError> {
    Ok(RecordBatch::try_new(
        raw(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.player_id.as_str()))),
            f64_col(rows.iter().map(|r| r.heartbeat)),
            ts_col(rows.iter().map(|r| r.created_at_ms)),
            ts_col(rows.iter().map(|r| r.ingested_at_ms)),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.partition as i32))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.offset as i64))),
        ],
    )?)
}

pub fn sessions_batch(rows: &[&SessionSummary]) -> Result<RecordBatch, LakeError> {
    let secs = |f: fn(&ZoneMs) -> i64| f64_col(rows.iter().map(move |s| f(&s.zones) as f64 / 1000.0));
    Ok(RecordBatch::try_new(
        sessions(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|s| s.player_id.as_str()))),
            ts_col(rows.iter().map(|s| s.session_start_ms)),
            ts_col(rows.iter().map(|s| s.session_end_ms)),
            secs(|z| z.low),
            secs(|z| z.moderate),
            secs(|z| z.high),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|s| s.samples as i64))),
            f64_col(rows.iter().map(|s| s.avg_hr)),
            f64_col(rows.iter().map(|s| s.min_hr)),
            f64_col(rows.iter().map(|s| s.max_hr)),
            f64_col(rows.iter().map(|s| s.hr_max)),
        ],
    )?)
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, path: &Path, name: &str) -> Result<&'a T, LakeError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| LakeError::Schema { path: path.to_path_buf(), column: name.into(), reason: "missing or of another type".into() })
}

/// Reads every session row of one Parquet file.
pub fn read_sessions_file(path: &Path) -> Result<Vec<SessionSummary>, LakeError> {
    let file = File::open(path).map_err(io(path))?;
    let perr = |source| LakeError::Parquet { path: path.to_path_buf(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).map_err(perr)?.build().map_err(perr)?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch?;
        let player = column::<StringArray>(&batch, path, "player_id")?;
        let start = column::<TimestampMicrosecondArray>(&batch, path, "session_start")?;
        let end = column::<TimestampMicrosecondArray>(&batch, path, "session_end")?;
        let f = |name| column::<Float64Array>(&batch, path, name);
        let (low, moderate, high) = (f("low_s")?, f("moderate_s")?, f("high_s")?);
        let (avg, min, max, hr_max) = (f("avg_hr")?, f("min_hr")?, f("max_hr")?, f("hr_max")?);
        let samples = column::<Int64Array>(&batch, path, "samples")?;
        let ms = |s: f64| (s * 1000.0).round() as i64;
        for i in 0..batch.num_rows() {
            out.push(SessionSummary {
                player_id: player.value(i).to_string(),
                session_start_ms: start.value(i) / 1000,
                session_end_ms: end.value(i) / 1000,
                zones: ZoneMs { low: ms(low.value(i)), moderate: ms(moderate.value(i)), high: ms(high.value(i)) },
                samples: samples.value(i) as u64,
                avg_hr: avg.value(i),
                min_hr: min.value(i),
                max_hr: max.value(i),
                hr_max: hr_max.value(i),
                closed: true,
            });
        }
    }
    Ok(out)
}
