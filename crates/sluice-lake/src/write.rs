//! Staging, publishing and reading lake files.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use sluice_core::model::{RawRow, SessionSummary};
use sluice_core::time::date_of_ms;

use crate::{io, schema, sync_dir, table_files, LakeError, RAW_TABLE, SESSIONS_TABLE, STAGING};

/// The lake under one root directory.
pub struct Lake {
    root: PathBuf,
}

fn group_by_date<'a, T>(rows: &'a [T], time_ms: impl Fn(&T) -> i64) -> BTreeMap<String, Vec<&'a T>> {
    let mut by_date: BTreeMap<String, Vec<&T>> = BTreeMap::new();
    for r in rows {
        by_date.entry(date_of_ms(time_ms(r))).or_default().push(r);
    }
    by_date
}

impl Lake {
    pub fn open(root: &Path) -> Result<Lake, LakeError> {
        std::fs::create_dir_all(root.join(STAGING)).map_err(io(root))?;
        Ok(Lake { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn staging_dir(&self, id: u64) -> PathBuf {
        self.root.join(STAGING).join(format!("{id:020}"))
    }

    /// Writes the rows of checkpoint `id` as fsync'd Parquet files under `_staging`, one
    /// file per table and date. Returns their paths relative to the root.
    pub fn stage(&self, id: u64, raw: &[RawRow], sessions: &[SessionSummary]) -> Result<Vec<String>, LakeError> {
        let dir = self.staging_dir(id);
        if dir.exists() {
            // A retry of the same checkpoint: start clean.
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        let file = format!("part-{id:020}.parquet");
        let mut staged = Vec::new();
        for (date, rows) in group_by_date(raw, |r| r.created_at_ms) {
            let rel = format!("{STAGING}/{id:020}/{RAW_TABLE}/date={date}/{file}");
            self.write_file(&rel, &schema::raw_batch(&rows)?)?;
            staged.push(rel);
        }
        for (date, rows) in group_by_date(sessions, |s| s.session_start_ms) {
            let rel = format!("{STAGING}/{id:020}/{SESSIONS_TABLE}/date={date}/{file}");
            self.write_file(&rel, &schema::sessions_batch(&rows)?)?;
            staged.push(rel);
        }
        if !staged.is_empty() {
            sync_tree(&dir)?;
        }
        Ok(staged)
    }

    fn write_file(&self, rel: &str, batch: &RecordBatch) -> Result<(), LakeError> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let file = File::create(&path).map_err(io(&path))?;
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let perr = |source| LakeError::Parquet { path: path.clone(), source };
        let mut writer = ArrowWriter::try_new(file.try_clone().map_err(io(&path))?, batch.schema(), Some(props)).map_err(perr)?;
        writer.write(batch).map_err(perr)?;
        writer.close().map_err(perr)?;
        file.sync_all().map_err(io(&path))
    }

    /// Moves staged files into their tables (idempotent: a file already moved is skipped).
    pub fn publish(&self, staged: &[String]) -> Result<(), LakeError> {
        let mut emptied = Vec::new();
        for rel in staged {
            let src = self.root.join(rel);
            // `_staging/<id>/<table>/date=.../part-...` → `<table>/date=.../part-...`
            let target_rel: PathBuf = Path::new(rel).components().skip(2).collect();
            let dst = self.root.join(&target_rel);
            if src.exists() {
                let parent = dst.parent().unwrap_or(&self.root).to_path_buf();
                std::fs::create_dir_all(&parent).map_err(io(&parent))?;
                std::fs::rename(&src, &dst).map_err(io(&dst))?;
                sync_dir(&parent)?;
            } else if !dst.exists() {
                return Err(LakeError::MissingStaged { path: src });
            }
            if let Some(id_dir) = Path::new(rel).components().take(2).collect::<PathBuf>().to_str() {
                emptied.push(self.root.join(id_dir));
            }
        }
        emptied.dedup();
        for dir in emptied {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(())
    }

    /// Removes staging directories of checkpoints with an id greater than `id` (uncommitted
    /// output of a crashed run) and leftovers of committed ones.
    pub fn discard_after(&self, id: u64) -> Result<(), LakeError> {
        let staging = self.root.join(STAGING);
        for entry in std::fs::read_dir(&staging).map_err(io(&staging))? {
            let path = entry.map_err(io(&staging))?.path();
            let staged_id = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<u64>().ok());
            if let Some(staged_id) = staged_id {
                if staged_id > id {
                    tracing::info!(dir = %path.display(), "discarding output of an uncommitted checkpoint");
                }
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }

    /// Every committed session, sorted by player then start.
    pub fn read_sessions(&self) -> Result<Vec<SessionSummary>, LakeError> {
        let mut out = Vec::new();
        for file in table_files(&self.root.join(SESSIONS_TABLE))? {
            out.extend(schema::read_sessions_file(&file)?);
        }
        out.sort_by(|a, b| (&a.player_id, a.session_start_ms).cmp(&(&b.player_id, b.session_start_ms)));
        Ok(out)
    }
}

/// fsyncs every directory in a tree, deepest first, so new entries survive a crash.
fn sync_tree(dir: &Path) -> Result<(), LakeError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        }
    }
    sync_dir(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::model::ZoneMs;

    fn session(player: &str, start_ms: i64) -> SessionSummary {
        SessionSummary {
            player_id: player.into(),
            session_start_ms: start_ms,
            session_end_ms: start_ms + 61_000,
            zones: ZoneMs { low: 1_500, moderate: 2_000, high: 57_500 },
            samples: 60,
            avg_hr: 150.5,
            min_hr: 100.0,
            max_hr: 180.0,
            hr_max: 190.0,
            closed: true,
        }
    }

    fn raw(offset: u64, t: i64) -> RawRow {
        RawRow { player_id: "p".into(), heartbeat: 99.0, created_at_ms: t, ingested_at_ms: t + 5, partition: 1, offset }
    }

    #[test]
    fn staged_output_is_invisible_until_published() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let day = 86_400_000;
        let staged = lake.stage(3, &[raw(0, 0), raw(1, day)], &[session("a", 0), session("b", day)]).unwrap();
        assert_eq!(staged.len(), 4, "one file per table and date: {staged:?}");
        assert!(lake.read_sessions().unwrap().is_empty());
        lake.publish(&staged).unwrap();
        lake.publish(&staged).unwrap(); // idempotent
        let got = lake.read_sessions().unwrap();
        assert_eq!(got, vec![session("a", 0), session("b", day)]);
        assert!(dir.path().join("heartbeat_raw/date=1970-01-02/part-00000000000000000003.parquet").exists());
    }

    #[test]
    fn uncommitted_staging_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path()).unwrap();
        let staged = lake.stage(5, &[], &[session("a", 0)]).unwrap();
        lake.discard_after(4).unwrap();
        assert!(matches!(lake.publish(&staged), Err(LakeError::MissingStaged { .. })));
        assert!(lake.read_sessions().unwrap().is_empty());
    }
}
