//! Checkpoints: the job's state, the source offsets it covers, and the sink output staged
//! for it, committed atomically as one file.
//!
//! Protocol (a two-phase commit between the job and its sink, as in Flink's
//! `TwoPhaseCommitSinkFunction`):
//! 1. the sink *stages* the output produced since the last checkpoint (invisible to readers);
//! 2. the checkpoint file `checkpoint-<id, 20 digits>.json` is written to a temporary
//!    name, fsync'd and renamed into place (the commit point), and the directory fsync'd;
//! 3. the sink *publishes* the staged output.
//!
//! On restart, [`recovery_plan`] (pure) decides: resume from the latest checkpoint's
//! offsets and state, publish its staged output again (publishing is idempotent), and
//! discard anything staged for later, uncommitted checkpoints. Output is therefore
//! exactly-once even though input is re-read at least once.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::job::JobState;
use crate::StreamError;

/// One committed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Increasing from 1.
    pub id: u64,
    /// Next offset to read, per source partition.
    pub offsets: Vec<u64>,
    pub state: JobState,
    /// Sink output staged for this checkpoint (sink-defined names).
    pub staged: Vec<String>,
    /// Wall-clock time of the commit, epoch ms.
    pub committed_at_ms: i64,
}

/// What to do on start, given the latest committed checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryPlan {
    pub offsets: Vec<u64>,
    pub state: JobState,
    /// Staged output to (re)publish.
    pub publish: Vec<String>,
    /// Staged output of checkpoints with id greater than this is discarded.
    pub discard_after: u64,
    pub next_id: u64,
}

/// Decides how to resume. `partitions` is the source's current partition count; new
/// partitions start at offset 0.
pub fn recovery_plan(latest: Option<Checkpoint>, partitions: u32) -> RecoveryPlan {
    match latest {
        None => RecoveryPlan {
            offsets: vec![0; partitions as usize],
            state: JobState::default(),
            publish: Vec::new(),
            discard_after: 0,
            next_id: 1,
        },
        Some(cp) => {
            let mut offsets = cp.offsets;
            offsets.resize(offsets.len().max(partitions as usize), 0);
            RecoveryPlan { offsets, state: cp.state, publish: cp.staged, discard_after: cp.id, next_id: cp.id + 1 }
        }
    }
}

/// Checkpoint files in one directory; keeps the newest `retain`.
pub struct CheckpointStore {
    dir: PathBuf,
    retain: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StreamError + '_ {
    move |source| StreamError::Checkpoint { path: path.to_path_buf(), reason: source.to_string() }
}

impl CheckpointStore {
    pub fn open(dir: &Path) -> Result<Self, StreamError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(CheckpointStore { dir: dir.to_path_buf(), retain: 3 })
    }

    fn ids(&self) -> Result<Vec<u64>, StreamError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let name = entry.map_err(io(&self.dir))?.file_name().to_string_lossy().to_string();
            if let Some(id) = name.strip_prefix("checkpoint-").and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("checkpoint-{id:020}.json"))
    }

    /// The newest committed checkpoint. A file that does not parse is an error (it was
    /// renamed into place only after being fsync'd, so it means damage, not a crash).
    pub fn latest(&self) -> Result<Option<Checkpoint>, StreamError> {
        let Some(&id) = self.ids()?.last() else { return Ok(None) };
        let path = self.path(id);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StreamError::Checkpoint { path, reason: format!("unreadable: {e}") })
    }

    /// Commits a checkpoint durably, then prunes old ones.
    pub fn commit(&self, cp: &Checkpoint) -> Result<(), StreamError> {
        let path = self.path(cp.id);
        let tmp = self.dir.join(format!(".checkpoint-{:020}.json.tmp", cp.id));
        let body = serde_json::to_vec(cp).map_err(|e| StreamError::Checkpoint { path: path.clone(), reason: e.to_string() })?;
        std::fs::write(&tmp, body).map_err(io(&tmp))?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        let ids = self.ids()?;
        for old in ids.iter().take(ids.len().saturating_sub(self.retain)) {
            let _ = std::fs::remove_file(self.path(*old));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_start_reads_from_zero_and_discards_all_staging() {
        let plan = recovery_plan(None, 2);
        assert_eq!(plan.offsets, vec![0, 0]);
        assert_eq!(plan.discard_after, 0);
        assert_eq!(plan.next_id, 1);
    }

    #[test]
    fn resume_republishes_and_grows_partitions() {
        let cp = Checkpoint {
            id: 7,
            offsets: vec![10, 20],
            state: JobState::default(),
            staged: vec!["a".into()],
            committed_at_ms: 0,
        };
        let plan = recovery_plan(Some(cp), 3);
        assert_eq!(plan.offsets, vec![10, 20, 0]);
        assert_eq!(plan.publish, vec!["a".to_string()]);
        assert_eq!(plan.discard_after, 7);
        assert_eq!(plan.next_id, 8);
    }

    #[test]
    fn store_keeps_latest() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert!(store.latest().unwrap().is_none());
        for id in 1..=5 {
            let cp = Checkpoint { id, offsets: vec![id], state: JobState::default(), staged: vec![], committed_at_ms: 0 };
            store.commit(&cp).unwrap();
        }
        assert_eq!(store.latest().unwrap().unwrap().id, 5);
        assert_eq!(store.ids().unwrap(), vec![3, 4, 5]);
    }
}
