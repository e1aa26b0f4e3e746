//! Checkpoints: one manifest covers every pipeline's source offsets, operator state files
//! and staged sink output, committed atomically.
//!
//! Protocol (a two-phase commit between the pipelines and their sinks, as Flink's
//! checkpoint coordinator with `TwoPhaseCommitSinkFunction`s):
//! 1. the coordinator sends a barrier with the next id to every pipeline; each writes the
//!    state that changed ([`crate::state`]) and *stages* its output since the last
//!    checkpoint (invisible to readers), and answers with a [`PipelineCheckpoint`];
//! 2. the manifest `manifest-<id, 20 digits>.json` is written to a temporary name,
//!    fsync'd and renamed into place (the commit point), and the directory fsync'd;
//! 3. every pipeline *publishes* what it staged for that id.
//!
//! On start, [`recovery_plan`] (pure) decides: resume each pipeline from the latest
//! manifest's offsets and state, publish that manifest's staged output again
//! (publishing is idempotent), and discard anything staged for later ids. Output is
//! exactly once although input is re-read at least once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::StateFiles;
use crate::StreamError;

/// One pipeline's part of a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineCheckpoint {
    /// Fingerprint of the pipeline's SQL and options: state is only reused by the same query.
    pub fingerprint: String,
    /// Next offset to read, per source partition.
    pub offsets: Vec<u64>,
    /// Latest event time seen per source partition, epoch ms (`i64::MIN`: none).
    #[serde(default)]
    pub partition_max_event_ms: Vec<i64>,
    /// State files per operator (by position in the pipeline).
    #[serde(default)]
    pub operators: Vec<StateFiles>,
    /// Output staged for this checkpoint, per sink name (sink-defined handles). Kept in
    /// later manifests until the pipeline answers another barrier, which it only does
    /// after publishing it; so output that a failed or stuck pipeline never published is
    /// published on recovery.
    #[serde(default)]
    pub staged: BTreeMap<String, Vec<String>>,
    /// The checkpoint id `staged` was staged for (None in manifests of earlier releases,
    /// where it is the manifest's id). Sinks publish it under this id, so that publishing
    /// is idempotent however many manifests repeat it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_id: Option<u64>,
    /// Bytes of state changes this checkpoint wrote (not stored).
    #[serde(skip)]
    pub written_bytes: u64,
    /// Keys whose state this checkpoint wrote (not stored).
    #[serde(skip)]
    pub changed_keys: u64,
}

/// A committed checkpoint of every pipeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Increasing from 1.
    pub id: u64,
    /// Wall-clock time of the commit, epoch ms.
    pub committed_at_ms: i64,
    pub pipelines: BTreeMap<String, PipelineCheckpoint>,
}

/// What one pipeline resumes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// No checkpoint: start at the pipeline's configured start position, empty state.
    Fresh,
    /// Resume from this checkpoint.
    From(PipelineCheckpoint),
    /// The checkpoint belongs to a different query (the SQL or options changed).
    Changed { was: String },
}

/// What to do on start.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryPlan {
    /// Per pipeline (by name) that is defined now.
    pub resume: BTreeMap<String, Resume>,
    /// Staged output to (re)publish, in manifest order.
    pub publish: Vec<Republish>,
    /// Staged output of checkpoints with an id greater than this is discarded.
    pub discard_after: u64,
    pub next_id: u64,
}

/// Decides how to resume `defined` pipelines (name → fingerprint) from the latest manifest.
pub fn recovery_plan(latest: Option<&Manifest>, defined: &BTreeMap<String, String>) -> RecoveryPlan {
    let mut resume = BTreeMap::new();
    for (name, fp) in defined {
        let r = match latest.and_then(|m| m.pipelines.get(name)) {
            None => Resume::Fresh,
            Some(cp) if &cp.fingerprint == fp => Resume::From(cp.clone()),
            Some(cp) => Resume::Changed { was: cp.fingerprint.clone() },
        };
        resume.insert(name.clone(), r);
    }
    let publish = latest
        .map(|m| {
            m.pipelines
                .iter()
                .flat_map(|(pipeline, p)| {
                    let id = p.staged_id.unwrap_or(m.id);
                    p.staged.iter().map(move |(sink, handles)| Republish { pipeline: pipeline.clone(), sink: sink.clone(), id, handles: handles.clone() })
                })
                .collect()
        })
        .unwrap_or_default();
    let id = latest.map_or(0, |m| m.id);
    RecoveryPlan { resume, publish, discard_after: id, next_id: id + 1 }
}

/// Output of a committed checkpoint that may not have been published before a crash.
#[derive(Debug, Clone, PartialEq)]
pub struct Republish {
    pub pipeline: String,
    pub sink: String,
    /// The checkpoint it was staged for (the id sinks publish it under).
    pub id: u64,
    pub handles: Vec<String>,
}

/// The manifest of checkpoint `id`, after `last`: each pipeline in `answered` with the
/// checkpoint it answered the barrier with, and every other pipeline the engine still has
/// (`present`: failed, or too slow to answer) with its entry in `last`, staged output
/// included; a dropped pipeline leaves the manifest. A
/// pipeline answers a barrier only after publishing what it staged before, so the staged
/// output an entry carries is either published or still to be published by recovery;
/// dropping it would lose output whose input the entry's offsets already cover.
pub fn next_manifest(last: &Manifest, id: u64, answered: BTreeMap<String, PipelineCheckpoint>, present: &[String], committed_at_ms: i64) -> Manifest {
    let mut pipelines: BTreeMap<String, PipelineCheckpoint> = last.pipelines.iter().filter(|(n, _)| present.contains(n)).map(|(n, c)| (n.clone(), c.clone())).collect();
    pipelines.extend(answered);
    Manifest { id, committed_at_ms, pipelines }
}

/// State files referenced by `old` but by none of `keep`: safe to delete once `old` is gone.
pub fn unreferenced(old: &Manifest, keep: &[&Manifest]) -> Vec<String> {
    let live: BTreeSet<&String> = keep.iter().flat_map(|m| m.pipelines.values()).flat_map(|p| p.operators.iter()).flat_map(|f| f.all()).collect();
    let mut out: Vec<String> = old.pipelines.values().flat_map(|p| p.operators.iter()).flat_map(|f| f.all()).filter(|f| !live.contains(f)).cloned().collect();
    out.sort();
    out.dedup();
    out
}

/// Manifests in one directory; keeps the newest two.
pub struct CheckpointStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StreamError + '_ {
    move |source| StreamError::Checkpoint { path: path.to_path_buf(), reason: source.to_string() }
}

impl CheckpointStore {
    pub fn open(dir: &Path) -> Result<Self, StreamError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(CheckpointStore { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ids(&self) -> Result<Vec<u64>, StreamError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let name = entry.map_err(io(&self.dir))?.file_name().to_string_lossy().to_string();
            if let Some(id) = name.strip_prefix("manifest-").and_then(|n| n.strip_suffix(".json")).and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("manifest-{id:020}.json"))
    }

    fn read(&self, id: u64) -> Result<Manifest, StreamError> {
        let path = self.path(id);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| StreamError::Checkpoint { path, reason: format!("unreadable: {e}") })
    }

    /// The newest committed manifest. One that does not parse is an error (it was
    /// renamed into place only after being fsync'd, so it means damage, not a crash).
    pub fn latest(&self) -> Result<Option<Manifest>, StreamError> {
        match self.ids()?.last() {
            Some(&id) => self.read(id).map(Some),
            None => Ok(None),
        }
    }

    /// Commits a manifest durably. Returns state files that no retained manifest uses any
    /// more (the caller deletes them), after removing the manifests older than the
    /// previous one.
    pub fn commit(&self, m: &Manifest) -> Result<Vec<String>, StreamError> {
        let path = self.path(m.id);
        let tmp = self.dir.join(format!(".manifest-{:020}.json.tmp", m.id));
        let body = serde_json::to_vec_pretty(m).map_err(|e| StreamError::Checkpoint { path: path.clone(), reason: e.to_string() })?;
        std::fs::write(&tmp, body).map_err(io(&tmp))?;
        File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io(&self.dir))?;
        let ids = self.ids()?;
        let keep: Vec<u64> = ids.iter().rev().take(2).copied().collect();
        let kept: Vec<Manifest> = keep.iter().filter_map(|&id| self.read(id).ok()).collect();
        let kept_refs: Vec<&Manifest> = kept.iter().collect();
        let mut garbage = Vec::new();
        for &old in ids.iter().filter(|id| !keep.contains(id)) {
            if let Ok(m) = self.read(old) {
                garbage.extend(unreferenced(&m, &kept_refs));
            }
            let _ = std::fs::remove_file(self.path(old));
        }
        garbage.sort();
        garbage.dedup();
        Ok(garbage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(fp: &str, files: &[&str]) -> PipelineCheckpoint {
        PipelineCheckpoint {
            fingerprint: fp.into(),
            offsets: vec![3, 4],
            operators: vec![StateFiles { snapshot: None, deltas: files.iter().map(|s| s.to_string()).collect(), ..Default::default() }],
            staged: BTreeMap::from([("lake:t".to_string(), vec!["f".to_string()])]),
            ..Default::default()
        }
    }

    #[test]
    fn fresh_changed_and_resumed_pipelines() {
        let m = Manifest { id: 7, committed_at_ms: 0, pipelines: BTreeMap::from([("a".to_string(), cp("x", &[])), ("b".to_string(), cp("y", &[]))]) };
        let defined = BTreeMap::from([("a".to_string(), "x".to_string()), ("b".to_string(), "z".to_string()), ("c".to_string(), "w".to_string())]);
        let plan = recovery_plan(Some(&m), &defined);
        assert_eq!(plan.resume["a"], Resume::From(cp("x", &[])));
        assert_eq!(plan.resume["b"], Resume::Changed { was: "y".into() });
        assert_eq!(plan.resume["c"], Resume::Fresh);
        assert_eq!(plan.publish.len(), 2, "staged output of every pipeline in the manifest is republished");
        assert!(plan.publish.iter().all(|r| r.id == 7 && r.handles == ["f"]), "staged output of an earlier release is republished as the manifest's id");
        assert_eq!((plan.discard_after, plan.next_id), (7, 8));
        let none = recovery_plan(None, &defined);
        assert_eq!((none.discard_after, none.next_id), (0, 1));
    }

    #[test]
    fn output_of_a_pipeline_that_did_not_answer_stays_in_the_manifest_until_it_does() {
        let mut a = cp("x", &[]);
        a.staged_id = Some(7);
        let last = Manifest { id: 7, committed_at_ms: 0, pipelines: BTreeMap::from([("a".to_string(), a.clone()), ("b".to_string(), cp("y", &[])), ("gone".to_string(), cp("z", &[]))]) };
        let mut b8 = cp("y", &[]);
        b8.staged = BTreeMap::from([("lake:u".to_string(), vec!["g".to_string()])]);
        b8.staged_id = Some(8);
        let running = ["a".to_string(), "b".to_string()];
        let m8 = next_manifest(&last, 8, BTreeMap::from([("b".to_string(), b8.clone())]), &running, 1);
        assert_eq!(m8.pipelines.keys().collect::<Vec<_>>(), ["a", "b"], "a dropped pipeline leaves the manifest");
        assert_eq!(m8.pipelines["a"], a, "a keeps its unanswered checkpoint with its staged output");
        let plan = recovery_plan(Some(&m8), &BTreeMap::from([("a".to_string(), "x".to_string()), ("b".to_string(), "y".to_string())]));
        let ids: Vec<(&str, u64, &str)> = plan.publish.iter().map(|r| (r.pipeline.as_str(), r.id, r.handles[0].as_str())).collect();
        assert_eq!(ids, [("a", 7, "f"), ("b", 8, "g")], "each output is republished under the id it was staged for");
        let mut a9 = cp("x", &[]);
        a9.staged.clear();
        let m9 = next_manifest(&m8, 9, BTreeMap::from([("a".to_string(), a9)]), &running, 2);
        assert!(m9.pipelines["a"].staged.is_empty(), "an answer replaces the entry (the pipeline published before answering)");
        assert_eq!(m9.pipelines["b"], b8);
    }

    #[test]
    fn store_keeps_two_and_reports_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        assert!(store.latest().unwrap().is_none());
        let mk = |id: u64, files: &[&str]| Manifest { id, committed_at_ms: 0, pipelines: BTreeMap::from([("p".to_string(), cp("x", files))]) };
        assert!(store.commit(&mk(1, &["d1"])).unwrap().is_empty());
        assert!(store.commit(&mk(2, &["d1", "d2"])).unwrap().is_empty());
        assert_eq!(store.commit(&mk(3, &["s2", "d3"])).unwrap(), Vec::<String>::new(), "d1, d2 still used by manifest 2");
        assert_eq!(store.commit(&mk(4, &["s2", "d3", "d4"])).unwrap(), vec!["d1".to_string(), "d2".to_string()]);
        assert_eq!(store.ids().unwrap(), vec![3, 4]);
        assert_eq!(store.latest().unwrap().unwrap().id, 4);
    }
}
