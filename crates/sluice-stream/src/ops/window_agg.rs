//! The per-key windowed aggregate: keyed windows (tumbling, hopping, session) in event
//! time, DataFusion accumulators per key and window, watermarks per partition or per key,
//! allowed lateness, deduplication, rollups and early results. Pipelines run it for
//! sessions, per-key watermarks, deduplication and `hr_zone_seconds`; other tumbling and
//! hopping windows run on [`super::aligned`] (`pipeline::build_chain` chooses).
//!
//! - **Watermark.** `per_partition`: the pipeline's input watermark (the minimum over its
//!   source partitions of their latest event time less the allowed out-of-orderness).
//!   `per_key`: each key's latest event time less the out-of-orderness, so each device is
//!   its own clock (recordings from different years can be replayed together).
//! - **Firing.** A window emits its one final row once the watermark passes its end plus
//!   the allowed lateness. Records inside the lateness still update it; a record whose
//!   windows have all fired is late: it goes to the side output with the reason.
//! - **Idle keys** (`per_key`): a key without input for `idle_timeout_ms` of processing
//!   time, while the pipeline is caught up, fires its windows. Keys with no open window
//!   are forgotten after `state_ttl_ms`.
//! - **Rollups** (tumbling windows): a fired window's accumulator state is merged into the
//!   next, coarser level's window (output stream 1, 2, …).
//!
//! State for checkpoints, in the layout of [`super::window_io`]: for each changed key, its
//! key row (level 255: `max_event_ms`, `closed_until`, `accept_from`, `seen`) and one row
//! per open window with each aggregate's state fields `a<i>_<j>`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type};
use arrow_array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow_row::RowConverter;
use arrow_schema::{FieldRef, SchemaRef};
use datafusion_common::ScalarValue;
use serde::{Deserialize, Serialize};

use super::keyed::{df, Fired, KeyState, Placed, Shape, Win};
use super::native::{native, restore_types, Acc, Native, ResultColumns};
use super::window_io::{conform, key_arrays, key_converter, key_display, output_batch, state_schema, Inputs, META_LEVEL};
use super::window_state::StateRows;
use crate::operator::{Ctx, Early, Operator, OperatorStats, Rows, SideOutput};
use crate::sql::plan::WindowPlan;
use crate::state::StateWriter;
use crate::StreamError;

/// How the windowed aggregate keeps event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatermarkMode {
    #[default]
    PerPartition,
    PerKey,
}

/// Settings of a windowed aggregate. Times in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowOptions {
    pub watermark: WatermarkMode,
    pub out_of_orderness_ms: i64,
    pub lateness_ms: i64,
    pub dedup: bool,
    /// `per_key`: fire an idle key's windows after this much processing time (0: never).
    pub idle_timeout_ms: i64,
    /// Forget keys without open windows after this much processing time (0: never).
    pub state_ttl_ms: i64,
    /// Sizes of coarser tumbling levels, ascending, each a multiple of the one before.
    pub rollups: Vec<i64>,
}

type Key = super::group_key::GroupKey;

/// A changed key is written ahead of the checkpoint once it has had no input for this long
/// (processing time), ms, and at most once per checkpoint interval.
pub const PRESNAPSHOT_QUIET_MS: i64 = 100;
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;


/// The windowed aggregate operator.
pub struct WindowAggregate {
    plan: Arc<WindowPlan>,
    opts: WindowOptions,
    converter: Option<RowConverter>,
    keys: Map<Key, KeyState>,
    removed: HashSet<Key, foldhash::fast::RandomState>,
    /// `per_partition`: (fire time, key) of every key with open windows.
    timers: BTreeSet<(i64, Key)>,
    timer_of: Map<Key, i64>,
    watermark_ms: i64,
    state_schema: SchemaRef,
    state_fields: Vec<Vec<FieldRef>>,
    /// Per aggregate, its inline accumulator if it has one ([`super::native`]).
    natives: Arc<[Option<Native>]>,
    has_zone: bool,
    last_idle_scan_ms: i64,
    /// Snapshots taken: numbers the checkpoint intervals ([`KeyState::ahead_in`]).
    snapshots: u32,
    /// Touched keys whose early results are still to be emitted in this round.
    early_queue: Vec<Key>,
    last_ttl_scan_ms: i64,
    scratch: Vec<(i64, i64)>,
}

impl WindowAggregate {
    pub fn new(plan: Arc<WindowPlan>, opts: WindowOptions) -> Result<Self, StreamError> {
        let converter = key_converter(&plan)?;
        let (state_schema, state_fields) = state_schema(&plan)?;
        let has_zone = plan.aggs.iter().any(|a| a.zone);
        let natives = plan.aggs.iter().map(native).collect();
        Ok(WindowAggregate {
            plan,
            opts,
            converter,
            keys: Map::default(),
            removed: Default::default(),
            timers: BTreeSet::new(),
            timer_of: Map::default(),
            watermark_ms: i64::MIN,
            state_schema,
            state_fields,
            natives,
            has_zone,
            last_idle_scan_ms: 0,
            snapshots: 0,
            early_queue: Vec::new(),
            last_ttl_scan_ms: 0,
            scratch: Vec::new(),
        })
    }

    fn levels(&self) -> usize {
        1 + self.opts.rollups.len()
    }

    fn reschedule(&mut self, key: &[u8]) {
        if self.opts.watermark != WatermarkMode::PerPartition {
            return;
        }
        let next = self.keys.get(key).and_then(|s| s.next_fire(self.opts.lateness_ms));
        let old = self.timer_of.get(key).copied();
        if old == next {
            return;
        }
        if let Some(t) = old {
            self.timers.remove(&(t, Key::from(key)));
            self.timer_of.remove(key);
        }
        if let Some(t) = next {
            self.timers.insert((t, Key::from(key)));
            self.timer_of.insert(Key::from(key), t);
        }
    }

    fn mark(&mut self, key: &[u8]) {
        if let Some(st) = self.keys.get_mut(key) {
            st.dirty = true;
            st.touched = true;
        }
    }

    /// Fires due windows of one key (all of them with `all`).
    fn fire_key(&mut self, key: &[u8], watermark_ms: i64, all: bool, fired: &mut Vec<(Key, Fired)>) -> Result<(), StreamError> {
        let plan = self.plan.clone();
        let natives = self.natives.clone();
        let shape = Shape { kind: plan.kind, aggs: &plan.aggs, natives: &natives, lateness_ms: self.opts.lateness_ms, rollups: &self.opts.rollups };
        let Some(st) = self.keys.get_mut(key) else { return Ok(()) };
        let mut out = Vec::new();
        let folded = self.has_zone && !all && st.fold_zones(&shape, watermark_ms.saturating_sub(self.opts.lateness_ms));
        st.fire(&shape, watermark_ms, all, &mut out)?;
        if !out.is_empty() || folded {
            self.mark(key);
            fired.extend(out.into_iter().map(|f| (Key::from(key), f)));
        }
        self.reschedule(key);
        Ok(())
    }

    /// Builds output rows (per stream) from fired windows.
    fn emit(&self, fired: Vec<(Key, Fired)>, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        let mut by_stream: Vec<Vec<(Key, Fired)>> = (0..self.levels()).map(|_| Vec::new()).collect();
        for f in fired {
            let s = f.1.stream;
            by_stream[s].push(f);
        }
        for (stream, rows) in by_stream.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let batch = self.batch(&rows)?;
            let mut r = Rows::new(stream, batch);
            r.event_ms = Some(Int64Array::from_iter_values(rows.iter().map(|(_, f)| f.start)));
            out.push(r);
        }
        Ok(())
    }

    /// A batch of the aggregate's output schema for fired (or early) windows.
    fn batch(&self, rows: &[(Key, Fired)]) -> Result<RecordBatch, StreamError> {
        let keys: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_ref()).collect();
        let key_arrays = key_arrays(&self.converter, &keys)?;
        let mut values = Vec::with_capacity(self.plan.aggs.len());
        for j in 0..self.plan.aggs.len() {
            values.push(ScalarValue::iter_to_array(rows.iter().map(|(_, f)| f.values[j].clone())).map_err(df)?);
        }
        output_batch(&self.plan, &key_arrays, rows.iter().map(|(_, f)| f.start).collect(), rows.iter().map(|(_, f)| f.end).collect(), values)
    }

    fn forget(&mut self, key: &[u8]) {
        self.keys.remove(key);
        if let Some(t) = self.timer_of.remove(key) {
            self.timers.remove(&(t, Key::from(key)));
        }
        self.removed.insert(Key::from(key));
    }
}

impl WindowAggregate {
    /// Writes the deleted keys' tombstones, then the changed keys that `take` accepts, in
    /// batches of at most [`STATE_BATCH_KEYS`] keys (each key's rows in one batch). With
    /// `ahead`, the keys written are marked as written ahead in that interval.
    fn write_state(&mut self, w: &mut StateWriter, take: impl Fn(&KeyState) -> bool, ahead: Option<u32>) -> Result<(), StreamError> {
        let dirty = self.keys.values().filter(|s| s.dirty && take(s)).count();
        if dirty == 0 && self.removed.is_empty() {
            return Ok(());
        }
        let plan = self.plan.clone();
        let key_len = self.keys.keys().next().map_or(16, |k| k.len() + 8);
        let mut left = self.removed.len() + dirty;
        w.changed_keys += left as u64;
        let (natives, fields, schema) = (&self.natives, &self.state_fields, &self.state_schema);
        let new_rows = |left: usize| StateRows::new(&plan.aggs, natives, fields, left.min(STATE_BATCH_KEYS) * 2, key_len);
        let mut rows = new_rows(left)?;
        let mut in_batch = 0;
        let removed = std::mem::take(&mut self.removed);
        let changed = self.keys.iter_mut().filter(|(_, s)| s.dirty && take(s));
        for (k, st) in removed.iter().map(|k| (k, None)).chain(changed.map(|(k, st)| (k, Some(st)))) {
            match st {
                None => rows.tombstone(k),
                Some(st) => {
                    st.dirty = false;
                    if let Some(interval) = ahead {
                        st.ahead_in = interval;
                    }
                    rows.key(&plan.aggs, k, st)?;
                }
            }
            in_batch += 1;
            left -= 1;
            if in_batch == STATE_BATCH_KEYS && left > 0 {
                let full = std::mem::replace(&mut rows, new_rows(left)?);
                if let Some(batch) = full.finish(schema, fields)? {
                    w.write(batch)?;
                }
                in_batch = 0;
            }
        }
        if let Some(batch) = rows.finish(schema, fields)? {
            w.write(batch)?;
        }
        Ok(())
    }
}

/// Keys per slice of early results ([`WindowAggregate`]'s `early`): about 10–20 ms of the
/// pipeline thread at the heart-rate pipeline's aggregates.
pub const EARLY_SLICE_KEYS: usize = 8192;

/// Keys per state batch: bounds the memory of writing and compacting state to a few MB
/// a batch, whatever the number of keys.
const STATE_BATCH_KEYS: usize = 4096;

/// The aggregates' argument arrays and filters of one input batch.
struct BatchArgs<'a> {
    args: &'a [Vec<ArrayRef>],
    filters: &'a [Option<BooleanArray>],
}

/// A key's rows waiting to be added to the same windows (by start). One per batch, reused
/// from key to key, with its buffers. Rows are positions in the batch's key-ordered
/// argument arrays ([`Inputs::reordered`]).
#[derive(Default)]
struct Pending {
    targets: Vec<i64>,
    rows: Vec<u32>,
    filtered: Vec<u32>,
    taken: Vec<ArrayRef>,
}

impl Pending {
    /// Adds the pending rows to their windows: one update per aggregate and window.
    fn flush(&mut self, st: &mut KeyState, shape: &Shape, b: &BatchArgs) -> Result<(), StreamError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        for (j, _) in shape.aggs.iter().enumerate() {
            let selected: &[u32] = match &b.filters[j] {
                Some(f) => {
                    self.filtered.clear();
                    self.filtered.extend(self.rows.iter().copied().filter(|&r| f.is_valid(r as usize) && f.value(r as usize)));
                    &self.filtered
                }
                None => &self.rows,
            };
            let Some(&first) = selected.first() else { continue };
            let contiguous = (selected[selected.len() - 1] - first) as usize + 1 == selected.len();
            self.taken.clear();
            if contiguous {
                self.taken.extend(b.args[j].iter().map(|a| a.slice(first as usize, selected.len())));
            } else {
                let idx = UInt32Array::from(selected.to_vec());
                for a in &b.args[j] {
                    self.taken.push(arrow_select::take::take(a, &idx, None).map_err(|e| StreamError::Eval(e.to_string()))?);
                }
            }
            for &start in &self.targets {
                if let Some(w) = st.base_window(start) {
                    w.accs[j].update(&shape.natives[j], &self.taken)?;
                }
            }
        }
        self.taken.clear();
        self.rows.clear();
        self.targets.clear();
        Ok(())
    }
}

impl Operator for WindowAggregate {
    fn name(&self) -> &'static str {
        "window_aggregate"
    }

    /// Rows are taken key by key, in their order within each key (keys are independent:
    /// per-key clocks, or a watermark that moves only between batches). A key's
    /// consecutive rows bound for the same windows are added with one update per aggregate.
    fn process(&mut self, input: Rows, ctx: &mut Ctx, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        let n = input.num_rows();
        let batch = &input.batch;
        let Some(times) = input.event_ms.clone() else { return Err(StreamError::Eval("windowed rows without event time".into())) };
        let plan = self.plan.clone();
        let inputs = Inputs::evaluate(&plan, &self.converter, batch)?;
        // Group row numbers by key, keeping their order (a counting sort: no allocation
        // per key).
        let mut group_of: HashMap<&[u8], u32, foldhash::fast::RandomState> = HashMap::with_capacity_and_hasher(n.min(4096), Default::default());
        let mut keys_in_order: Vec<&[u8]> = Vec::new();
        let mut row_group: Vec<u32> = Vec::with_capacity(n);
        for i in 0..n {
            let key: &[u8] = inputs.key(i);
            let g = *group_of.entry(key).or_insert_with(|| {
                keys_in_order.push(key);
                (keys_in_order.len() - 1) as u32
            });
            row_group.push(g);
        }
        let mut starts = vec![0u32; keys_in_order.len() + 1];
        for &g in &row_group {
            starts[g as usize + 1] += 1;
        }
        for g in 0..keys_in_order.len() {
            starts[g + 1] += starts[g];
        }
        let mut fill = starts.clone();
        let mut ordered = vec![0u32; n];
        for (i, &g) in row_group.iter().enumerate() {
            ordered[fill[g as usize] as usize] = i as u32;
            fill[g as usize] += 1;
        }
        // Each key's argument rows become one contiguous run, so that its updates take
        // slices rather than gathering rows per key and aggregate.
        let (sorted_args, sorted_filters) = inputs.reordered(&ordered)?;
        let groups = keys_in_order.iter().enumerate().map(|(g, k)| (*k, starts[g], &ordered[starts[g] as usize..starts[g + 1] as usize]));
        let rollups = self.opts.rollups.clone();
        let natives = self.natives.clone();
        let shape = Shape { kind: plan.kind, aggs: &plan.aggs, natives: &natives, lateness_ms: self.opts.lateness_ms, rollups: &rollups };
        let (ooo, lateness, dedup, mode) = (self.opts.out_of_orderness_ms, self.opts.lateness_ms, self.opts.dedup, self.opts.watermark);
        let batch_args = BatchArgs { args: &sorted_args, filters: &sorted_filters };
        let mut fired = Vec::new();
        let mut targets = Vec::new();
        let mut pending = Pending::default();
        let partition_wm = ctx.watermark_ms;
        let key_wm = |st: &KeyState| match mode {
            WatermarkMode::PerKey => st.watermark(ooo),
            WatermarkMode::PerPartition => partition_wm,
        };
        for (key, first, rows) in groups {
            let st = match self.keys.get_mut(key) {
                Some(st) => st,
                None => self.keys.entry(Key::from(key)).or_insert_with(|| KeyState::new(1 + rollups.len(), ctx.now_ms)),
            };
            st.last_input_ms = ctx.now_ms;
            let mut key_fired = Vec::new();
            let mut reshaped = false;
            for (&i, p) in rows.iter().zip(first..) {
                let iu = i as usize;
                let origin = input.origin.as_ref().map_or(i, |o| o.value(iu));
                if times.is_null(iu) {
                    ctx.side.push(SideOutput::Late { origin, event_ms: None, watermark_ms: ctx.watermark_ms, reason: format!("{} is null", plan.time_column_name) });
                    continue;
                }
                let t = times.value(iu);
                let wm = key_wm(st);
                // Folded zone coverage only matters to a record behind the fold point.
                if self.has_zone && t < wm.saturating_sub(lateness) {
                    pending.flush(st, &shape, &batch_args)?;
                    st.fold_zones(&shape, wm.saturating_sub(lateness));
                }
                match st.check(&shape, t, wm, dedup, &mut self.scratch) {
                    Placed::Late => {
                        let reason = if t < st.accept_from {
                            "behind readings whose coverage is already final".to_string()
                        } else {
                            format!("its window closed (watermark {wm} ms, allowed lateness {lateness} ms)")
                        };
                        ctx.side.push(SideOutput::Late { origin, event_ms: Some(t), watermark_ms: wm, reason });
                        continue;
                    }
                    Placed::Duplicate => {
                        ctx.side.push(SideOutput::Duplicate { origin });
                        continue;
                    }
                    Placed::Accepted => {}
                }
                let same = match shape.kind {
                    crate::window::WindowKind::Session { gap_ms } => {
                        let (f, l) = st.session_reach(gap_ms, t);
                        l == f + 1 && pending.targets.first() == Some(&st.levels[0][f].start) && pending.targets.len() == 1
                    }
                    _ => pending.targets.len() == self.scratch.len() && self.scratch.iter().zip(&pending.targets).all(|((s, _), p)| s == p),
                };
                if !same {
                    pending.flush(st, &shape, &batch_args)?;
                }
                reshaped |= st.open(&shape, t, &self.scratch, &mut targets)?;
                pending.targets.clone_from(&targets);
                pending.rows.push(p);
                if mode == WatermarkMode::PerKey {
                    let after = st.watermark(ooo);
                    if after > wm && st.next_fire(lateness).is_some_and(|f| f <= after) {
                        pending.flush(st, &shape, &batch_args)?;
                        if self.has_zone {
                            st.fold_zones(&shape, after.saturating_sub(lateness));
                        }
                        st.fire(&shape, after, false, &mut key_fired)?;
                    }
                }
            }
            pending.flush(st, &shape, &batch_args)?;
            if self.has_zone {
                st.fold_zones(&shape, key_wm(st).saturating_sub(lateness));
            }
            st.prune_seen();
            st.dirty = true;
            st.touched = true;
            reshaped |= !key_fired.is_empty();
            fired.extend(key_fired.into_iter().map(|f| (Key::from(key), f)));
            if mode == WatermarkMode::PerPartition && reshaped {
                self.reschedule(key);
            }
        }
        self.emit(fired, out)
    }

    fn on_watermark(&mut self, ctx: &mut Ctx, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        if self.opts.watermark != WatermarkMode::PerPartition || ctx.watermark_ms <= self.watermark_ms {
            return Ok(());
        }
        self.watermark_ms = ctx.watermark_ms;
        let mut fired = Vec::new();
        while let Some((t, _)) = self.timers.first() {
            if *t > self.watermark_ms {
                break;
            }
            let Some((_, key)) = self.timers.pop_first() else { break };
            self.timer_of.remove(&key);
            self.fire_key(&key, self.watermark_ms, false, &mut fired)?;
        }
        self.emit(fired, out)
    }

    fn on_timer(&mut self, ctx: &mut Ctx, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        let mut fired = Vec::new();
        let idle = self.opts.idle_timeout_ms;
        if self.opts.watermark == WatermarkMode::PerKey && idle > 0 && ctx.caught_up && ctx.now_ms - self.last_idle_scan_ms >= (idle / 4).clamp(10, 1000) {
            self.last_idle_scan_ms = ctx.now_ms;
            let due: Vec<Key> = self.keys.iter().filter(|(_, s)| s.open_windows() > 0 && ctx.now_ms - s.last_input_ms >= idle).map(|(k, _)| k.clone()).collect();
            for k in due {
                self.fire_key(&k, i64::MAX, true, &mut fired)?;
            }
        }
        let ttl = self.opts.state_ttl_ms;
        if ttl > 0 && ctx.now_ms - self.last_ttl_scan_ms >= (ttl / 10).clamp(1000, 60_000) {
            self.last_ttl_scan_ms = ctx.now_ms;
            let stale: Vec<Key> = self.keys.iter().filter(|(_, s)| s.open_windows() == 0 && ctx.now_ms - s.last_input_ms >= ttl).map(|(k, _)| k.clone()).collect();
            for k in stale {
                self.forget(&k);
            }
        }
        self.emit(fired, out)
    }

    fn on_drain(&mut self, _ctx: &mut Ctx, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        let mut fired = Vec::new();
        let keys: Vec<Key> = self.keys.iter().filter(|(_, s)| s.open_windows() > 0).map(|(k, _)| k.clone()).collect();
        for k in keys {
            self.fire_key(&k, i64::MAX, true, &mut fired)?;
        }
        self.emit(fired, out)
    }

    /// Results of the open base windows of the keys that changed since the last round,
    /// built column by column, at most [`EARLY_SLICE_KEYS`] keys a call: a round starts by
    /// queueing every changed key, and each call takes the next slice, so that a
    /// checkpoint barrier waits for one slice at most.
    fn early(&mut self, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        let plan = self.plan.clone();
        if self.early_queue.is_empty() {
            self.early_queue = self.keys.iter_mut().filter(|(_, s)| s.touched).map(|(k, s)| {
                s.touched = false;
                k.clone()
            }).collect();
        }
        let from = self.early_queue.len().saturating_sub(EARLY_SLICE_KEYS);
        let slice: Vec<Key> = self.early_queue.split_off(from);
        let mut results = ResultColumns::new(&plan.aggs, &self.natives, 0);
        let mut keys: Vec<&[u8]> = Vec::new();
        let (mut starts, mut ends, mut row_key) = (Vec::new(), Vec::new(), Vec::new());
        for k in &slice {
            // A key removed since it was queued has no open windows left to show.
            let Some(st) = self.keys.get_mut(k.as_slice()) else { continue };
            let ki = keys.len() as u32;
            keys.push(k);
            for w in st.levels[0].iter_mut() {
                results.push(&mut w.accs)?;
                starts.push(w.start);
                ends.push(w.end);
                row_key.push(ki);
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let display = key_display(&self.converter, &keys)?;
        let batch = if starts.is_empty() {
            RecordBatch::new_empty(plan.schema.clone())
        } else {
            let row_keys: Vec<&[u8]> = row_key.iter().map(|&i| keys[i as usize]).collect();
            output_batch(&plan, &key_arrays(&self.converter, &row_keys)?, starts.clone(), ends, results.finish()?)?
        };
        let mut r = Rows::new(0, batch);
        r.event_ms = Some(Int64Array::from(starts));
        r.early = Some(Early { keys: Arc::new(display), row_key: UInt32Array::from(row_key) });
        out.push(r);
        Ok(())
    }

    fn early_pending(&self) -> bool {
        !self.early_queue.is_empty()
    }

    fn snapshot(&mut self, w: &mut StateWriter) -> Result<bool, StreamError> {
        self.write_state(w, |_| true, None)?;
        // Never u32::MAX, the mark of a key not yet written ahead.
        self.snapshots = self.snapshots.wrapping_add(1) % u32::MAX;
        Ok(true)
    }

    /// Writes ahead the keys that changed and have had no input for
    /// [`PRESNAPSHOT_QUIET_MS`], each at most once per checkpoint interval: with many keys
    /// each sending now and then (devices at 1 Hz), most of a checkpoint's state is written
    /// before its barrier, and a key that keeps changing is written at most twice.
    fn presnapshot(&mut self, now_ms: i64, w: &mut StateWriter) -> Result<(), StreamError> {
        let interval = self.snapshots;
        self.write_state(w, |st| st.ahead_in != interval && now_ms.saturating_sub(st.last_input_ms) >= PRESNAPSHOT_QUIET_MS, Some(interval))
    }

    fn restore(&mut self, files: &[Vec<RecordBatch>]) -> Result<(), StreamError> {
        let plan = self.plan.clone();
        let now = sluice_core::time::now_ms();
        let mut upgraded = false;
        let files = files
            .iter()
            .map(|batches| batches.iter().map(|b| conform(&self.plan, &self.state_schema, b, &mut upgraded)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<Vec<_>, _>>()?;
        for batches in &files {
            for b in batches {
                let bad = |what: &str| StreamError::Eval(format!("window state: column {what} is missing or of another type"));
                let keys = b.column(0).as_binary::<i32>();
                let tomb = b.column(1).as_boolean();
                let level = b.column(2).as_primitive_opt::<UInt8Type>().ok_or_else(|| bad("level"))?;
                let i64col = |i: usize, n: &str| b.column(i).as_primitive_opt::<Int64Type>().ok_or_else(|| bad(n));
                let (start, end, max_ev, closed, accept) = (i64col(3, "start")?, i64col(4, "end")?, i64col(5, "max_event_ms")?, i64col(6, "closed_until")?, i64col(7, "accept_from")?);
                let seen = b.column(8).as_list::<i32>();
                // Inline aggregates' state columns, cast once per batch to the types they
                // are read as (a timestamp's max as Int64, say).
                let mut cast: Vec<Vec<ArrayRef>> = Vec::with_capacity(plan.aggs.len());
                let mut col = 9;
                for (a, native) in self.natives.iter().enumerate() {
                    let n = self.state_fields[a].len();
                    let types = restore_types(native).unwrap_or_default();
                    let c = types
                        .iter()
                        .enumerate()
                        .map(|(j, t)| arrow_cast::cast(b.column(col + j), t).map_err(|e| StreamError::Eval(format!("window state: {e}"))))
                        .collect::<Result<Vec<_>, _>>()?;
                    cast.push(c);
                    col += n;
                }
                for r in 0..b.num_rows() {
                    let k = keys.value(r);
                    // Each group of a key's rows replaces its state (crate::state).
                    if r == 0 || keys.value(r - 1) != k {
                        self.keys.remove(k);
                    }
                    if tomb.value(r) {
                        continue;
                    }
                    let levels = 1 + self.opts.rollups.len();
                    let st = self.keys.entry(Key::from(k)).or_insert_with(|| KeyState::new(levels, now));
                    if level.value(r) == META_LEVEL {
                        st.max_event_ms = max_ev.value(r);
                        st.closed_until = closed.value(r);
                        st.accept_from = accept.value(r);
                        let s = seen.value(r);
                        st.seen = s.as_primitive::<Int64Type>().values().iter().copied().collect();
                        continue;
                    }
                    let li = level.value(r) as usize;
                    if li >= st.levels.len() {
                        continue; // a rollup level no longer declared
                    }
                    let mut accs = Vec::with_capacity(plan.aggs.len());
                    let mut col = 9;
                    for (a, agg) in plan.aggs.iter().enumerate() {
                        let n = self.state_fields[a].len();
                        accs.push(Acc::restore(agg, &self.natives[a], &b.columns()[col..col + n], &cast[a], r)?);
                        col += n;
                    }
                    st.levels[li].push(Win { start: start.value(r), end: end.value(r), accs });
                }
            }
        }
        for st in self.keys.values_mut() {
            for l in st.levels.iter_mut() {
                l.sort_by_key(|w| w.start);
            }
            // Restored state is what the files hold: nothing to write until it changes.
            // State read from an older layout is written again whole, in today's layout,
            // so that compaction never merges the two.
            st.dirty = upgraded;
        }
        let keys: Vec<Key> = self.keys.keys().cloned().collect();
        for k in keys {
            self.reschedule(&k);
        }
        Ok(())
    }

    fn stats(&self) -> OperatorStats {
        let open: usize = self.keys.values().map(|s| s.open_windows()).sum();
        OperatorStats { keys: self.keys.len() as u64, open_windows: open as u64, ..Default::default() }
    }
}

