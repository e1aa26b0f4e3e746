//! Per-key window state of the windowed aggregate: open windows with their accumulators,
//! the key's event-time clock, and the bounds that make a record late. Pure: no I/O, no
//! clock (times are passed in).

use std::collections::VecDeque;

use arrow_array::ArrayRef;
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;

use super::native::{Acc, Native};
use crate::functions::zones::as_zone;
use crate::sql::plan::AggPlan;
use crate::window::{has_fired, WindowKind};
use crate::StreamError;

pub(crate) fn df(e: datafusion_common::DataFusionError) -> StreamError {
    StreamError::Eval(e.to_string())
}

/// Aggregates whose `state()` leaves the accumulator usable (the others are rebuilt from
/// their state after a checkpoint reads it; see DataFusion's `Accumulator::state`).
const STATE_KEEPS: &[&str] = &[
    "count", "sum", "min", "max", "avg", "mean", "stddev", "stddev_pop", "stddev_samp", "var", "var_pop", "var_samp", "variance",
    "approx_percentile_cont", "approx_distinct", "approx_median", "hr_zone_seconds", "approx_top_k", "first_value", "last_value",
    "bool_and", "bool_or", "bit_and", "bit_or", "bit_xor", "corr", "covar", "covar_pop", "covar_samp",
];

/// Reads an accumulator's state, keeping the accumulator usable.
pub(crate) fn read_state(agg: &AggPlan, acc: &mut Box<dyn Accumulator>) -> Result<Vec<ScalarValue>, StreamError> {
    let state = acc.state().map_err(df)?;
    if !STATE_KEEPS.contains(&agg.expr.fun().name()) {
        let mut fresh = agg.expr.create_accumulator().map_err(df)?;
        fresh.merge_batch(&arrays(&state)?).map_err(df)?;
        *acc = fresh;
    }
    Ok(state)
}

/// One-row arrays of scalar values.
pub(crate) fn arrays(values: &[ScalarValue]) -> Result<Vec<ArrayRef>, StreamError> {
    values.iter().map(|v| v.to_array_of_size(1).map_err(df)).collect()
}

/// Merges the state of `src` into `dst`, aggregate by aggregate.
pub(crate) fn merge(shape: &Shape, dst: &mut [Acc], src: &mut [Acc]) -> Result<(), StreamError> {
    for (((agg, native), d), s) in shape.aggs.iter().zip(shape.natives).zip(dst.iter_mut()).zip(src.iter_mut()) {
        d.merge(agg, native, s)?;
    }
    Ok(())
}

pub(crate) fn new_accs(aggs: &[AggPlan], natives: &[Option<Native>]) -> Result<Vec<Acc>, StreamError> {
    aggs.iter().zip(natives).map(|(a, n)| Acc::new(a, n)).collect()
}

/// An open window of one key.
pub struct Win {
    pub start: i64,
    /// Tumbling and hopping: the window's end. Sessions: last record + gap.
    pub end: i64,
    pub accs: Vec<Acc>,
}

/// A window that fired: its stream (0 = base, 1.. = rollup levels), bounds and results.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub stream: usize,
    pub start: i64,
    pub end: i64,
    pub values: Vec<ScalarValue>,
}

/// Settings shared by every key.
pub struct Shape<'a> {
    pub kind: WindowKind,
    pub aggs: &'a [AggPlan],
    /// Per aggregate, its inline accumulator if it has one.
    pub natives: &'a [Option<Native>],
    pub lateness_ms: i64,
    /// Sizes of the rollup levels after the base, ms.
    pub rollups: &'a [i64],
}

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Accepted,
    Duplicate,
    /// Every window it belongs to has fired (or it lies behind folded readings).
    Late,
}

/// A set of event times (ms), kept as a sorted ring buffer: records arrive mostly in
/// order, so an insert is usually a push at the back and pruning pops the front; memory is
/// 8 bytes per time (a `BTreeSet` node holds 11 in about 200 bytes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen(VecDeque<i64>);

impl Seen {
    /// Adds `t`; false if it was there.
    pub fn insert(&mut self, t: i64) -> bool {
        if self.0.back().is_none_or(|&b| b < t) {
            self.0.push_back(t);
            return true;
        }
        match self.0.binary_search(&t) {
            Ok(_) => false,
            Err(i) => {
                self.0.insert(i, t);
                true
            }
        }
    }

    pub fn first(&self) -> Option<i64> {
        self.0.front().copied()
    }

    pub fn pop_first(&mut self) -> Option<i64> {
        self.0.pop_front()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Ascending.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<i64> for Seen {
    fn from_iter<I: IntoIterator<Item = i64>>(iter: I) -> Self {
        let mut v: Vec<i64> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Seen(v.into())
    }
}

/// The state of one key.
pub struct KeyState {
    /// Largest event time seen, ms (`i64::MIN`: none).
    pub max_event_ms: i64,
    /// Records of windows ending at or before this have fired: late, ms.
    pub closed_until: i64,
    /// Records before this would change folded zone coverage: late, ms.
    pub accept_from: i64,
    /// Processing time of the last record, ms (not checkpointed).
    pub last_input_ms: i64,
    /// Event times seen in open windows (deduplication).
    pub seen: Seen,
    /// Open windows per level, each sorted by start.
    pub levels: Vec<Vec<Win>>,
    /// Changed since the last checkpoint.
    pub dirty: bool,
    /// Changed since the last early results.
    pub touched: bool,
    /// The checkpoint interval (the operator's count of snapshots) in which the key was last
    /// written ahead of its barrier: at most once per interval, so a key changing often is
    /// written at most twice per checkpoint (ahead, and at the barrier).
    pub ahead_in: u32,
}

impl KeyState {
    pub fn new(levels: usize, now_ms: i64) -> Self {
        KeyState {
            max_event_ms: i64::MIN,
            closed_until: i64::MIN,
            accept_from: i64::MIN,
            last_input_ms: now_ms,
            seen: Seen::default(),
            levels: (0..levels).map(|_| Vec::new()).collect(),
            dirty: true,
            touched: true,
            ahead_in: u32::MAX,
        }
    }

    /// The key's own watermark: latest event time less the allowed out-of-orderness.
    pub fn watermark(&self, out_of_orderness_ms: i64) -> i64 {
        if self.max_event_ms == i64::MIN {
            i64::MIN
        } else {
            self.max_event_ms.saturating_sub(out_of_orderness_ms)
        }
    }

    pub fn open_windows(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    /// When the earliest open window fires: min over windows of end + lateness.
    pub fn next_fire(&self, lateness_ms: i64) -> Option<i64> {
        self.levels.iter().flatten().map(|w| w.end.saturating_add(lateness_ms)).min()
    }

    /// Folds zone readings of base windows that are final at `until_ms`, raising
    /// `accept_from`. Returns whether any state changed (then the key's state must be
    /// written at the next checkpoint: a restored unfolded state would accept readings
    /// that the run before the crash refused as behind final coverage).
    pub fn fold_zones(&mut self, shape: &Shape, until_ms: i64) -> bool {
        let mut changed = false;
        for w in self.levels.iter_mut().take(1).flatten() {
            for (agg, acc) in shape.aggs.iter().zip(w.accs.iter_mut()) {
                if let (true, Acc::Dyn(acc)) = (agg.zone, acc) {
                    if let Some(z) = as_zone(acc.as_mut()) {
                        let pending = z.tail.len();
                        let from = z.fold(until_ms);
                        changed |= z.tail.len() != pending || from > self.accept_from;
                        self.accept_from = self.accept_from.max(from);
                    }
                }
            }
        }
        changed
    }

    /// Decides whether a record at `t_ms` is late or a duplicate at watermark
    /// `watermark_ms`, without changing any window. On `Accepted` of a tumbling or hopping
    /// record, `scratch` holds the windows it goes to.
    pub fn check(&mut self, shape: &Shape, t_ms: i64, watermark_ms: i64, dedup: bool, scratch: &mut Vec<(i64, i64)>) -> Placed {
        if t_ms < self.accept_from {
            return Placed::Late;
        }
        let l = shape.lateness_ms;
        match shape.kind {
            WindowKind::Session { gap_ms } => {
                if has_fired(t_ms.saturating_add(gap_ms), l, watermark_ms) || t_ms <= self.closed_until {
                    return Placed::Late;
                }
            }
            kind => {
                kind.assign(t_ms, scratch);
                let closed = self.closed_until;
                scratch.retain(|&(_, end)| !has_fired(end, l, watermark_ms) && end > closed);
                if scratch.is_empty() {
                    return Placed::Late;
                }
            }
        }
        if dedup && !self.seen.insert(t_ms) {
            return Placed::Duplicate;
        }
        Placed::Accepted
    }

    /// Indices `[first, last)` of the base sessions within reach of `t_ms`:
    /// `start − gap ≤ t ≤ last record + gap` (a session's end is its last record + gap).
    pub fn session_reach(&self, gap_ms: i64, t_ms: i64) -> (usize, usize) {
        let base = &self.levels[0];
        let first = base.partition_point(|w| w.end < t_ms);
        let mut last = first;
        while last < base.len() && base[last].start.saturating_sub(gap_ms) <= t_ms {
            last += 1;
        }
        (first, last)
    }

    /// Opens or merges the base windows of an accepted record at `t_ms` (after
    /// [`KeyState::check`], with its `scratch`); `targets` gets the windows' starts.
    /// Returns whether the key's windows changed shape (opened, merged or widened), which
    /// can change when they fire.
    pub fn open(&mut self, shape: &Shape, t_ms: i64, scratch: &[(i64, i64)], targets: &mut Vec<i64>) -> Result<bool, StreamError> {
        targets.clear();
        let mut reshaped = false;
        match shape.kind {
            WindowKind::Session { gap_ms } => {
                let (first, last) = self.session_reach(gap_ms, t_ms);
                let base = &mut self.levels[0];
                reshaped = true;
                if first == last {
                    reserve_first(base);
                    base.insert(first, Win { start: t_ms, end: t_ms.saturating_add(gap_ms), accs: new_accs(shape.aggs, shape.natives)? });
                } else if last == first + 1 {
                    // The common case: the record falls in (or extends) one session.
                    let w = &mut base[first];
                    reshaped = t_ms < w.start || t_ms.saturating_add(gap_ms) > w.end;
                    w.start = w.start.min(t_ms);
                    w.end = w.end.max(t_ms.saturating_add(gap_ms));
                } else {
                    let mut merged: Vec<Win> = base.drain(first..last).collect();
                    let mut head = merged.remove(0);
                    for mut w in merged {
                        merge(shape, &mut head.accs, &mut w.accs)?;
                        head.start = head.start.min(w.start);
                        head.end = head.end.max(w.end);
                    }
                    head.start = head.start.min(t_ms);
                    head.end = head.end.max(t_ms.saturating_add(gap_ms));
                    base.insert(first, head);
                }
                targets.push(base[first].start);
            }
            _ => {
                let base = &mut self.levels[0];
                for &(start, end) in scratch {
                    let i = base.partition_point(|w| w.start < start);
                    if base.get(i).is_none_or(|w| w.start != start) {
                        reserve_first(base);
                        base.insert(i, Win { start, end, accs: new_accs(shape.aggs, shape.natives)? });
                        reshaped = true;
                    }
                    targets.push(start);
                }
            }
        }
        self.max_event_ms = self.max_event_ms.max(t_ms);
        Ok(reshaped)
    }

    /// The base window that starts at `start_ms`.
    pub fn base_window(&mut self, start_ms: i64) -> Option<&mut Win> {
        let base = &mut self.levels[0];
        let i = base.partition_point(|w| w.start < start_ms);
        base.get_mut(i).filter(|w| w.start == start_ms)
    }

    /// Drops deduplication entries that no open window can hold any more.
    pub fn prune_seen(&mut self) {
        if self.levels[0].is_empty() {
            self.seen.clear();
            return;
        }
        let floor = self.levels[0].first().map(|w| w.start).unwrap_or(i64::MAX).max(self.accept_from);
        while self.seen.first().is_some_and(|t| t < floor) {
            self.seen.pop_first();
        }
    }

    /// Fires every window that is due at `watermark_ms` (or every window, if `all`),
    /// level by level: a fired base window's state is merged into the rollup window that
    /// holds it. Returns the fired windows in order.
    pub fn fire(&mut self, shape: &Shape, watermark_ms: i64, all: bool, out: &mut Vec<Fired>) -> Result<(), StreamError> {
        let l = shape.lateness_ms;
        let from = out.len();
        for level in 0..self.levels.len() {
            let due: Vec<usize> = (0..self.levels[level].len()).filter(|&i| all || has_fired(self.levels[level][i].end, l, watermark_ms)).collect();
            for i in due.into_iter().rev() {
                let mut w = self.levels[level].remove(i);
                let values = w.accs.iter_mut().zip(shape.natives).map(|(a, n)| a.evaluate(n)).collect::<Result<Vec<_>, _>>()?;
                if level == 0 {
                    self.closed_until = self.closed_until.max(w.end);
                }
                if let Some(&size) = shape.rollups.get(level) {
                    let start = w.start - w.start.rem_euclid(size);
                    let next = &mut self.levels[level + 1];
                    let j = next.partition_point(|x| x.start < start);
                    if next.get(j).is_none_or(|x| x.start != start) {
                        next.insert(j, Win { start, end: start + size, accs: new_accs(shape.aggs, shape.natives)? });
                    }
                    merge(shape, &mut next[j].accs, &mut w.accs)?;
                }
                out.push(Fired { stream: level, start: w.start, end: w.end, values });
            }
        }
        // Oldest first within each level.
        out[from..].sort_by_key(|f| (f.stream, f.start));
        self.prune_seen();
        Ok(())
    }
}

/// Most keys have one open window (a session, the current tumbling window): room for
/// exactly one, rather than the four a first push reserves (160 bytes a key).
fn reserve_first(windows: &mut Vec<Win>) {
    if windows.capacity() == 0 {
        windows.reserve_exact(1);
    }
}
