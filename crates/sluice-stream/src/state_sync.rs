//! The asynchronous half of a checkpoint barrier: making an operator's change files
//! durable (fsync, rename, directory fsync) off the pipeline thread.
//!
//! At a barrier the pipeline thread writes the state that changed since the last write
//! ahead and closes the change file, which is cheap (its bytes go to the page cache). It
//! then returns to its input, while this thread fsyncs the files and only then answers the
//! coordinator. The coordinator commits the manifest after every answer, so no checkpoint
//! ever names state that is not on disk. This is the split of a snapshot into a
//! synchronous and an asynchronous part, as in Flink (Carbone et al., "Lightweight
//! Asynchronous Snapshots for Distributed Dataflows", 2015; Flink's "asynchronous
//! snapshots" of keyed state).
//!
//! Measured reason: at 100k readings/s the fsync of a checkpoint's change file stalled the
//! heart-rate pipeline for 10 to 30 ms once a second, which was the p99 of ack → SSE
//! delivery (`docs/benchmarks.md`).
//!
//! Jobs finish in the order they were given. After a failed fsync nothing more is made
//! durable: every later job is answered with the same error, and [`Syncer::failure`]
//! hands the error to the pipeline thread, which then fails (its change files can no
//! longer be trusted, as the log is poisoned after a failed fsync).

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use crate::checkpoint::PipelineCheckpoint;
use crate::state::ClosedStateFile;
use crate::StreamError;

/// Where a barrier's answer goes: the checkpoint, or why there is none.
pub(crate) type Reply = Sender<Result<PipelineCheckpoint, String>>;

struct Job {
    /// Closed change files and the names they take once durable.
    files: Vec<(ClosedStateFile, PathBuf)>,
    checkpoint: PipelineCheckpoint,
    reply: Reply,
}

/// One pipeline's state-sync thread.
pub(crate) struct Syncer {
    jobs: Option<Sender<Job>>,
    failed: Receiver<String>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread (`sync-<pipeline>`). Errors: the thread cannot be started.
    pub(crate) fn start(pipeline: &str) -> Result<Syncer, StreamError> {
        let (jobs, rx) = channel::<Job>();
        let (fail_tx, failed) = channel();
        let name = pipeline.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("sync-{pipeline}"))
            .spawn(move || {
                let mut broken: Option<String> = None;
                for job in rx {
                    let result = match &broken {
                        Some(e) => Err(e.clone()),
                        None => persist_all(job.files).map_err(|e| crate::error_chain(&e)),
                    };
                    match result {
                        Ok(()) => {
                            let _ = job.reply.send(Ok(job.checkpoint));
                        }
                        Err(e) => {
                            if broken.is_none() {
                                tracing::error!(pipeline = %name, error = %e, "cannot make checkpoint state durable; the pipeline stops");
                                let _ = fail_tx.send(e.clone());
                                broken = Some(e.clone());
                            }
                            let _ = job.reply.send(Err(e));
                        }
                    }
                }
            })
            .map_err(|e| StreamError::Eval(format!("cannot start the state sync thread: {e}")))?;
        Ok(Syncer { jobs: Some(jobs), failed, thread: Some(thread) })
    }

    /// Answers a barrier with `checkpoint` once `files` are durable under their names
    /// (at once when there are none and nothing is queued before them).
    pub(crate) fn submit(&self, files: Vec<(ClosedStateFile, PathBuf)>, checkpoint: PipelineCheckpoint, reply: Reply) {
        let job = Job { files, checkpoint, reply };
        // The thread only ends when `jobs` is dropped, so a send fails only if it panicked;
        // then the barrier is answered with that.
        if let Some(Err(e)) = self.jobs.as_ref().map(|j| j.send(job)) {
            let _ = e.0.reply.send(Err("the state sync thread stopped".into()));
        }
    }

    /// The error of a failed sync, once (then the pipeline must stop).
    pub(crate) fn failure(&self) -> Option<String> {
        self.failed.try_recv().ok()
    }
}

impl Drop for Syncer {
    /// Waits for the queued jobs, so that a stopping pipeline leaves no barrier unanswered.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn persist_all(files: Vec<(ClosedStateFile, PathBuf)>) -> Result<(), StreamError> {
    for (file, path) in files {
        file.persist(&path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateFileWriter;
    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use std::sync::Arc;

    fn closed(dir: &std::path::Path, name: &str) -> ClosedStateFile {
        let b = RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef)]).unwrap();
        let mut w = StateFileWriter::create(&dir.join(format!("{name}.tmp")), &b.schema()).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap()
    }

    #[test]
    fn answers_in_order_after_the_files_have_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let s = Syncer::start("t").unwrap();
        let mut answers = Vec::new();
        for id in 1..=3u64 {
            let (tx, rx) = channel();
            let cp = PipelineCheckpoint { written_bytes: id, ..Default::default() };
            s.submit(vec![(closed(dir.path(), &format!("a{id}")), dir.path().join(format!("delta-{id}.arrow")))], cp, tx);
            answers.push(rx);
        }
        for (i, rx) in answers.into_iter().enumerate() {
            let cp = rx.recv().unwrap().unwrap();
            assert_eq!(cp.written_bytes, i as u64 + 1);
            assert!(dir.path().join(format!("delta-{}.arrow", i + 1)).exists());
            assert!(!dir.path().join(format!("a{}.tmp", i + 1)).exists());
        }
        assert!(s.failure().is_none());
    }

    #[test]
    fn a_failed_sync_fails_that_barrier_and_every_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = Syncer::start("t").unwrap();
        // A rename into a directory that does not exist fails.
        let (tx, rx) = channel();
        s.submit(vec![(closed(dir.path(), "a"), dir.path().join("missing/delta-1.arrow"))], PipelineCheckpoint::default(), tx);
        let e = rx.recv().unwrap().unwrap_err();
        assert!(e.contains("missing"), "{e}");
        let (tx, rx) = channel();
        s.submit(vec![(closed(dir.path(), "b"), dir.path().join("delta-2.arrow"))], PipelineCheckpoint::default(), tx);
        assert_eq!(rx.recv().unwrap().unwrap_err(), e);
        assert!(!dir.path().join("delta-2.arrow").exists());
        assert_eq!(s.failure(), Some(e));
    }
}
