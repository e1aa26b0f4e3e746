//! Reading the heart-rate sessions table back (for the live view at start): columns
//! `player_id, session_start, session_end, low_s, moderate_s, high_s, samples, avg_hr,
//! min_hr, max_hr, hr_max`, timestamps in µs UTC, durations in seconds.

use std::fs::File;
use std::path::Path;

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_core::model::{SessionSummary, ZoneMs};

use crate::{io, LakeError};

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
