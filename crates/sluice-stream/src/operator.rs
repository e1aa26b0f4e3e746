//! The operator interface: a pipeline is a chain of operators over Arrow batches.
//!
//! An operator implements one required method, [`Operator::process`], and may override
//! hooks for the watermark, processing-time timers, the end of input, checkpoints
//! (state snapshots and restore) and early results (as Arroyo's and Flink's operators
//! do). Each method gets a [`Ctx`] (time, watermark, side outputs) and pushes its output
//! [`Rows`] to `out`; the [`Chain`] passes those to the next operator.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, UInt32Array};

use crate::state::StateWriter;
use crate::StreamError;

/// Live (not yet final) rows: which key each row belongs to. `keys[row_key[i]]` is the
/// display form of row `i`'s group key; `row_key` is ascending (rows come key by key).
#[derive(Debug, Clone)]
pub struct Early {
    pub keys: Arc<Vec<String>>,
    pub row_key: UInt32Array,
}

/// Rows flowing between operators.
#[derive(Debug, Clone)]
pub struct Rows {
    /// Output stream: 0 is the pipeline's output; 1.. are rollup levels.
    pub stream: usize,
    pub batch: RecordBatch,
    /// Event time per row, epoch ms, where known.
    pub event_ms: Option<Int64Array>,
    /// Per row, the index of its source record in the current poll (for side outputs).
    pub origin: Option<UInt32Array>,
    /// Set on early (live, not final) results; such rows reach the live view only.
    pub early: Option<Early>,
}

impl Rows {
    pub fn new(stream: usize, batch: RecordBatch) -> Rows {
        Rows { stream, batch, event_ms: None, origin: None, early: None }
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }
}

/// Records or events an operator sends outside its main output.
#[derive(Debug, Clone, PartialEq)]
pub enum SideOutput {
    /// A source record dropped as late (to `<pipeline>.late`, counted).
    Late { origin: u32, event_ms: Option<i64>, watermark_ms: i64, reason: String },
    /// A resent record (same key and event time) counted once.
    Duplicate { origin: u32 },
    /// An alert (to the `alerts` topic and the live stream).
    Alert(serde_json::Value),
}

/// What an operator sees besides its input.
pub struct Ctx<'a> {
    /// Processing time, epoch ms.
    pub now_ms: i64,
    /// The pipeline's input watermark (min over active source partitions), epoch ms.
    pub watermark_ms: i64,
    /// Whether the pipeline has read everything its source holds now.
    pub caught_up: bool,
    pub side: &'a mut Vec<SideOutput>,
}

/// Sizes an operator reports for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperatorStats {
    pub keys: u64,
    pub open_windows: u64,
    /// Approximate memory held, bytes.
    pub state_bytes: u64,
    /// Alerts firing now (the alerts operator).
    pub firing_alerts: u64,
}

/// A streaming operator. See the module docs.
pub trait Operator: Send {
    /// Short name (state file names, logs).
    fn name(&self) -> &'static str;

    /// Processes one batch of input rows.
    fn process(&mut self, input: Rows, ctx: &mut Ctx, out: &mut Vec<Rows>) -> Result<(), StreamError>;

    /// The input watermark advanced to `ctx.watermark_ms`.
    fn on_watermark(&mut self, _ctx: &mut Ctx, _out: &mut Vec<Rows>) -> Result<(), StreamError> {
        Ok(())
    }

    /// A processing-time tick (`ctx.now_ms`), at least every few hundred ms.
    fn on_timer(&mut self, _ctx: &mut Ctx, _out: &mut Vec<Rows>) -> Result<(), StreamError> {
        Ok(())
    }

    /// End of input: emit every pending result.
    fn on_drain(&mut self, _ctx: &mut Ctx, _out: &mut Vec<Rows>) -> Result<(), StreamError> {
        Ok(())
    }

    /// Emits live results of state touched since the last call (rows marked early). An
    /// operator with many keys may emit them in slices: then [`Operator::early_pending`]
    /// says so, and the runner calls again after its next poll.
    fn early(&mut self, _out: &mut Vec<Rows>) -> Result<(), StreamError> {
        Ok(())
    }

    /// Whether the last [`Operator::early`] left touched keys for another call.
    fn early_pending(&self) -> bool {
        false
    }

    /// Writes the state changed since the last snapshot. Returns whether there was state
    /// to write (stateless operators return false).
    fn snapshot(&mut self, _w: &mut StateWriter) -> Result<bool, StreamError> {
        Ok(false)
    }

    /// Writes, ahead of the next checkpoint, state that changed and is unlikely to change
    /// again before it (processing time `now_ms`), so that the checkpoint has less to write:
    /// Flink's changelog state backend writes state changes continuously (FLIP-158). The
    /// runner appends the batches to the next change file; a key written again later in
    /// the same file replaces its earlier rows ([`crate::state`]).
    fn presnapshot(&mut self, _now_ms: i64, _w: &mut StateWriter) -> Result<(), StreamError> {
        Ok(())
    }

    /// Restores state from a snapshot and change files: one entry per file, oldest first.
    fn restore(&mut self, _files: &[Vec<RecordBatch>]) -> Result<(), StreamError> {
        Ok(())
    }

    fn stats(&self) -> OperatorStats {
        OperatorStats::default()
    }
}

/// Operators in order; the output of one is the input of the next.
pub struct Chain {
    pub ops: Vec<Box<dyn Operator>>,
}

/// Which hook to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Watermark,
    Timer,
    Drain,
    Early,
}

impl Chain {
    /// Feeds rows into operator `from` and on down the chain; returns the chain's output.
    pub fn push(&mut self, from: usize, rows: Rows, ctx: &mut Ctx) -> Result<Vec<Rows>, StreamError> {
        let mut current = vec![rows];
        for op in &mut self.ops[from..] {
            let mut next = Vec::new();
            for r in current {
                if r.num_rows() > 0 {
                    op.process(r, ctx, &mut next)?;
                }
            }
            current = next;
        }
        Ok(current)
    }

    /// Whether an operator has early results left from its last slice.
    pub fn early_pending(&self) -> bool {
        self.ops.iter().any(|o| o.early_pending())
    }

    /// Runs a hook on every operator, in order; what an operator emits flows through the
    /// operators after it.
    pub fn hook(&mut self, hook: Hook, ctx: &mut Ctx) -> Result<Vec<Rows>, StreamError> {
        let mut output = Vec::new();
        for i in 0..self.ops.len() {
            let mut emitted = Vec::new();
            match hook {
                Hook::Watermark => self.ops[i].on_watermark(ctx, &mut emitted)?,
                Hook::Timer => self.ops[i].on_timer(ctx, &mut emitted)?,
                Hook::Drain => self.ops[i].on_drain(ctx, &mut emitted)?,
                Hook::Early => self.ops[i].early(&mut emitted)?,
            }
            for rows in emitted {
                output.extend(self.push(i + 1, rows, ctx)?);
            }
        }
        Ok(output)
    }
}
