//! Reading the heart-rate sessions table back (for the live view at start): columns
//! `player_id, session_start, session_end, low_s, moderate_s, high_s, samples, avg_hr,
//! min_hr, max_hr, hr_max`, timestamps in µs UTC, durations in seconds.

use std::path::Path;

use bytes::Bytes;

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_core::model::{SessionSummary, ZoneMs};

use crate::LakeError;

fn column<'a, T: 'static>(batch: &'a RecordBatch, path: &Path, name: &str) -> Result<&'a T, LakeError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| LakeError::Schema { path: path.to_path_buf(), column: name.into(), reason: "missing or of another type".into() })
}

/// Reads every session row of one Parquet file, `bytes` (named `path` in errors).
pub fn read_sessions(bytes: Bytes, path: &Path) -> Result<Vec<SessionSummary>, LakeError> {
    let perr = |source| LakeError::Parquet { path: path.to_path_buf(), source };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(perr)?.build().map_err(perr)?;
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

/// Sessions as rows of the sessions table's columns (no `date`): what `open_sessions`, the
/// live state of the heart-rate pipeline, looks like to SQL.
pub fn sessions_batch(sessions: &[SessionSummary]) -> RecordBatch {
    use arrow_array::ArrayRef;
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let f64s = |g: &dyn Fn(&SessionSummary) -> f64| Arc::new(Float64Array::from_iter_values(sessions.iter().map(g))) as ArrayRef;
    let schema = Schema::new(vec![
        Field::new("player_id", DataType::Utf8, false),
        Field::new("session_start", ts(), false),
        Field::new("session_end", ts(), false),
        Field::new("low_s", DataType::Float64, false),
        Field::new("moderate_s", DataType::Float64, false),
        Field::new("high_s", DataType::Float64, false),
        Field::new("samples", DataType::Int64, false),
        Field::new("avg_hr", DataType::Float64, false),
        Field::new("min_hr", DataType::Float64, false),
        Field::new("max_hr", DataType::Float64, false),
        Field::new("hr_max", DataType::Float64, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(sessions.iter().map(|s| s.player_id.as_str()))),
        Arc::new(TimestampMicrosecondArray::from_iter_values(sessions.iter().map(|s| s.session_start_ms * 1000)).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from_iter_values(sessions.iter().map(|s| s.session_end_ms * 1000)).with_timezone("UTC")),
        f64s(&|s| s.zones.low as f64 / 1000.0),
        f64s(&|s| s.zones.moderate as f64 / 1000.0),
        f64s(&|s| s.zones.high as f64 / 1000.0),
        Arc::new(Int64Array::from_iter_values(sessions.iter().map(|s| s.samples as i64))),
        f64s(&|s| s.avg_hr),
        f64s(&|s| s.min_hr),
        f64s(&|s| s.max_hr),
        f64s(&|s| s.hr_max),
    ];
    // The columns match the schema by construction.
    RecordBatch::try_new(Arc::new(schema), columns).unwrap_or_else(|e| unreachable!("sessions batch: {e}"))
}
