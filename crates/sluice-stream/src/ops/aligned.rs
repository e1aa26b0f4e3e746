//! The aligned-window aggregate: tumbling and hopping windows under the pipeline's
//! (per-partition) watermark, on DataFusion's `GroupsAccumulator`s.
//!
//! Aligned windows start at the same instants for every key, so each open window holds one
//! set of accumulators whose groups are the keys seen in it, as DataFusion's hash
//! aggregate and Arroyo's tumbling aggregate do. A batch updates each window with one call
//! per aggregate, whatever the number of keys; a window fires as one columnar batch. Keys
//! are interned once (arrow-row bytes to a dense id) and each window maps ids to its
//! groups. Aggregates without a grouped form run through DataFusion's
//! `GroupsAccumulatorAdapter` (one `Accumulator` per group).
//!
//! Semantics are [`super::window_agg`]'s for these windows: a window fires once the
//! watermark passes its end plus the allowed lateness; a record whose windows have all
//! fired is late (side output, with the reason); a fired window's state merges into the
//! next rollup level's window. Deduplication, per-key watermarks, sessions and
//! `hr_zone_seconds` need per-key state and stay with [`super::window_agg`].
//!
//! Checkpoints use the shared state layout ([`super::window_io`]): for each key changed since
//! the last checkpoint, a row per open window holding it (or a tombstone when it has none).
//! The operator's own bound, `closed_until` (windows ending at or before it have fired), is
//! the key row (level 255) of the empty key; rows of keys written by
//! [`super::window_agg`] are read too (their largest `closed_until` is taken).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::builder::BinaryBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt8Type};
use arrow_array::{new_null_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array, UInt8Array};
use arrow_row::RowConverter;
use arrow_schema::{FieldRef, SchemaRef};
use datafusion_expr::{EmitTo, GroupsAccumulator};
use datafusion_functions_aggregate_common::aggregate::groups_accumulator::GroupsAccumulatorAdapter;

use super::keyed::df;
use super::window_io::{conform, eval_err, key_arrays, key_converter, key_display, output_batch, state_schema, Inputs, FIXED_COLUMNS, META_LEVEL};
use crate::operator::{Ctx, Early, Operator, OperatorStats, Rows, SideOutput};
use crate::sql::plan::{AggPlan, WindowPlan};
use crate::state::StateWriter;
use crate::window::has_fired;
use crate::StreamError;

type Key = super::group_key::GroupKey;
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

const NO_GROUP: u32 = u32::MAX;

/// Interned group keys: dense ids, with what the checkpoint and early results need per id.
#[derive(Default)]
struct Keys {
    ids: Map<Key, u32>,
    /// id → key bytes (empty for a free id).
    key: Vec<Key>,
    /// id → open windows holding it.
    open: Vec<u32>,
    /// id → changed since the last checkpoint.
    dirty: Vec<bool>,
    /// id → changed since the last early results.
    touched: Vec<bool>,
    free: Vec<u32>,
}

impl Keys {
    fn intern(&mut self, key: &[u8]) -> u32 {
        if let Some(&id) = self.ids.get(key) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.key[id as usize] = Key::from(key);
                id
            }
            None => {
                self.key.push(Key::from(key));
                self.open.push(0);
                self.dirty.push(false);
                self.touched.push(false);
                (self.key.len() - 1) as u32
            }
        };
        self.ids.insert(Key::from(key), id);
        id
    }

    /// Each row's id where its key is already interned (`NO_GROUP` otherwise), in one tight
    /// loop: the lookups are independent, so their cache misses overlap instead of
    /// following one another through the per-row window work.
    fn known(&self, inputs: &Inputs, n: usize, out: &mut Vec<u32>) {
        out.clear();
        out.extend((0..n).map(|i| self.ids.get(inputs.key(i)).copied().unwrap_or(NO_GROUP)));
    }

    fn mark(&mut self, id: u32) {
        self.dirty[id as usize] = true;
        self.touched[id as usize] = true;
    }

    fn release(&mut self, id: u32) {
        let k = std::mem::take(&mut self.key[id as usize]);
        self.ids.remove(&k);
        self.dirty[id as usize] = false;
        self.touched[id as usize] = false;
        self.free.push(id);
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// One open window: its accumulators, whose groups are the keys seen in it.
struct Window {
    end: i64,
    accs: Vec<Box<dyn GroupsAccumulator>>,
    /// group → key id.
    ids: Vec<u32>,
    /// key id → group (`NO_GROUP`: none), as long as the largest id seen here.
    group_of: Vec<u32>,
    /// This batch's rows bound here, and their groups.
    rows: Vec<u32>,
    groups: Vec<usize>,
}

impl Window {
    fn new(end: i64, aggs: &[AggPlan], grouped: &[bool]) -> Result<Window, StreamError> {
        Ok(Window { end, accs: new_accs(aggs, grouped)?, ids: Vec::new(), group_of: Vec::new(), rows: Vec::new(), groups: Vec::new() })
    }

    /// The group of key `id`, added (and counted in `open`) when new.
    fn group(&mut self, id: u32, open: &mut [u32]) -> usize {
        let i = id as usize;
        if i >= self.group_of.len() {
            self.group_of.resize(i + 1, NO_GROUP);
        }
        if self.group_of[i] == NO_GROUP {
            self.group_of[i] = self.ids.len() as u32;
            self.ids.push(id);
            open[i] += 1;
        }
        self.group_of[i] as usize
    }

    /// Every aggregate's state, every group; the accumulators keep it.
    fn state(&mut self, aggs: &[AggPlan], grouped: &[bool]) -> Result<Vec<Vec<ArrayRef>>, StreamError> {
        let mut states = Vec::new();
        self.state_chunks(aggs, grouped, usize::MAX, |_, s| {
            states = s;
            Ok(())
        })?;
        Ok(states)
    }

    /// Every aggregate's state, `chunk` groups at a time: `f(key ids of the chunk's groups,
    /// states)`. The accumulators keep it. `GroupsAccumulator::state` empties what it returns, so each
    /// chunk is merged back into fresh accumulators as it is taken: memory is the state
    /// once plus one chunk, not twice the state.
    fn state_chunks(&mut self, aggs: &[AggPlan], grouped: &[bool], chunk: usize, mut f: impl FnMut(&[u32], Vec<Vec<ArrayRef>>) -> Result<(), StreamError>) -> Result<(), StreamError> {
        let n = self.ids.len();
        let mut fresh = new_accs(aggs, grouped)?;
        let mut done = 0;
        while done < n {
            let m = chunk.min(n - done);
            let emit = if done + m == n { EmitTo::All } else { EmitTo::First(m) };
            let groups: Vec<usize> = (done..done + m).collect();
            let mut states = Vec::with_capacity(self.accs.len());
            for (acc, fr) in self.accs.iter_mut().zip(fresh.iter_mut()) {
                let s = acc.state(emit).map_err(df)?;
                fr.merge_batch(&s, &groups, done + m).map_err(df)?;
                states.push(s);
            }
            f(&self.ids[done..done + m], states)?;
            done += m;
        }
        self.accs = fresh;
        Ok(())
    }
}

/// Groups per state batch of a window: bounds the memory of a checkpoint (a t-digest's
/// state is up to about 2 KB a group).
const STATE_BATCH_GROUPS: usize = 4096;

fn new_accs(aggs: &[AggPlan], grouped: &[bool]) -> Result<Vec<Box<dyn GroupsAccumulator>>, StreamError> {
    aggs.iter()
        .zip(grouped)
        .map(|(a, &g)| {
            if g {
                a.expr.create_groups_accumulator().map_err(df)
            } else {
                let expr = a.expr.clone();
                Ok(Box::new(GroupsAccumulatorAdapter::new(move || expr.create_accumulator())) as Box<dyn GroupsAccumulator>)
            }
        })
        .collect()
}

/// The aligned-window aggregate operator. See the module docs.
pub struct AlignedAggregate {
    plan: Arc<WindowPlan>,
    lateness_ms: i64,
    /// Sizes of the coarser levels, ascending.
    rollups: Vec<i64>,
    grouped: Vec<bool>,
    converter: Option<RowConverter>,
    keys: Keys,
    /// Open windows per level, by start.
    levels: Vec<BTreeMap<i64, Window>>,
    watermark_ms: i64,
    /// Base windows ending at or before this have fired, ms.
    closed_until: i64,
    closed_dirty: bool,
    state_schema: SchemaRef,
    state_fields: Vec<Vec<FieldRef>>,
    scratch: Vec<(i64, i64)>,
    /// Per input row: its key's id if already interned ([`Keys::known`]), reused per batch.
    known: Vec<u32>,
}

impl AlignedAggregate {
    /// Whether this operator runs a window plan with these options (else
    /// [`super::window_agg::WindowAggregate`] does).
    pub fn fits(plan: &WindowPlan, per_partition: bool, dedup: bool) -> bool {
        per_partition && !dedup && !plan.kind.is_session() && !plan.aggs.iter().any(|a| a.zone)
    }

    pub fn new(plan: Arc<WindowPlan>, lateness_ms: i64, rollups: Vec<i64>) -> Result<Self, StreamError> {
        let (state_schema, state_fields) = state_schema(&plan)?;
        let grouped = plan.aggs.iter().map(|a| a.expr.groups_accumulator_supported()).collect();
        Ok(AlignedAggregate {
            converter: key_converter(&plan)?,
            levels: (0..=rollups.len()).map(|_| BTreeMap::new()).collect(),
            plan,
            lateness_ms,
            rollups,
            grouped,
            keys: Keys::default(),
            watermark_ms: i64::MIN,
            closed_until: i64::MIN,
            closed_dirty: false,
            state_schema,
            state_fields,
            scratch: Vec::new(),
            known: Vec::new(),
        })
    }

    fn window<'a>(levels: &'a mut [BTreeMap<i64, Window>], level: usize, start: i64, end: i64, aggs: &[AggPlan], grouped: &[bool]) -> Result<&'a mut Window, StreamError> {
        Ok(match levels[level].entry(start) {
            std::collections::btree_map::Entry::Occupied(w) => w.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => v.insert(Window::new(end, aggs, grouped)?),
        })
    }

    /// Fires the windows due at `watermark_ms` (every window with `all`), level by level.
    fn fire(&mut self, watermark_ms: i64, all: bool, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        let plan = self.plan.clone();
        for level in 0..self.levels.len() {
            let due: Vec<i64> = self.levels[level].iter().filter(|(_, w)| all || has_fired(w.end, self.lateness_ms, watermark_ms)).map(|(s, _)| *s).collect();
            for start in due {
                let Some(mut w) = self.levels[level].remove(&start) else { continue };
                if level == 0 && w.end > self.closed_until {
                    self.closed_until = w.end;
                    self.closed_dirty = true;
                }
                let n = w.ids.len();
                let mut values = Vec::with_capacity(w.accs.len());
                if let Some(&size) = self.rollups.get(level) {
                    let coarse_start = start - start.rem_euclid(size);
                    let states = w.state(&plan.aggs, &self.grouped)?;
                    let coarse = Self::window(&mut self.levels, level + 1, coarse_start, coarse_start + size, &plan.aggs, &self.grouped)?;
                    let groups: Vec<usize> = w.ids.iter().map(|&id| coarse.group(id, &mut self.keys.open)).collect();
                    for (acc, s) in coarse.accs.iter_mut().zip(&states) {
                        acc.merge_batch(s, &groups, coarse.ids.len()).map_err(df)?;
                    }
                }
                for acc in w.accs.iter_mut() {
                    values.push(acc.evaluate(EmitTo::All).map_err(df)?);
                }
                for &id in &w.ids {
                    self.keys.open[id as usize] -= 1;
                    self.keys.mark(id);
                }
                let keys: Vec<&[u8]> = w.ids.iter().map(|&id| self.keys.key[id as usize].as_ref()).collect();
                let key_cols = key_arrays(&self.converter, &keys)?;
                let batch = output_batch(&plan, &key_cols, vec![start; n], vec![w.end; n], values)?;
                let mut r = Rows::new(level, batch);
                r.event_ms = Some(Int64Array::from(vec![start; n]));
                out.push(r);
            }
        }
        Ok(())
    }

    /// State rows of one window for the keys marked dirty, written [`STATE_BATCH_GROUPS`]
    /// groups at a time.
    fn window_state(&mut self, level: usize, start: i64, out: &mut StateWriter) -> Result<(), StreamError> {
        let plan = self.plan.clone();
        let Some(w) = self.levels[level].get_mut(&start) else { return Ok(()) };
        if !w.ids.iter().any(|&id| self.keys.dirty[id as usize]) {
            return Ok(());
        }
        let (keys, schema, state_fields, end) = (&self.keys, &self.state_schema, &self.state_fields, w.end);
        w.state_chunks(&plan.aggs, &self.grouped, STATE_BATCH_GROUPS, |ids, states| {
            let mask = BooleanArray::from(ids.iter().map(|&id| keys.dirty[id as usize]).collect::<Vec<_>>());
            let rows = mask.true_count();
            if rows == 0 {
                return Ok(());
            }
            let mut key = BinaryBuilder::new();
            for (g, &id) in ids.iter().enumerate() {
                if mask.value(g) {
                    key.append_value(&keys.key[id as usize]);
                }
            }
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(key.finish()),
                Arc::new(BooleanArray::from(vec![false; rows])),
                Arc::new(UInt8Array::from(vec![level as u8; rows])),
                Arc::new(Int64Array::from(vec![start; rows])),
                Arc::new(Int64Array::from(vec![end; rows])),
            ];
            for f in &schema.fields()[5..FIXED_COLUMNS] {
                columns.push(new_null_array(f.data_type(), rows));
            }
            for (a, s) in states.iter().enumerate() {
                for (j, arr) in s.iter().enumerate() {
                    let arr = arrow_select::filter::filter(arr, &mask).map_err(eval_err)?;
                    let want = state_fields[a][j].data_type();
                    columns.push(if arr.data_type() == want { arr } else { arrow_cast::cast(&arr, want).map_err(eval_err)? });
                }
            }
            out.write(RecordBatch::try_new(schema.clone(), columns).map_err(|e| StreamError::Eval(format!("building window state: {e}")))?)
        })
    }

    /// Key rows: tombstones for `gone` keys, and the empty key's row with `closed_until`.
    fn key_rows(&self, gone: &[u32], closed: bool) -> Result<Option<RecordBatch>, StreamError> {
        let rows = gone.len() + closed as usize;
        if rows == 0 {
            return Ok(None);
        }
        let mut key = BinaryBuilder::new();
        let mut tomb = Vec::with_capacity(rows);
        let mut level = Vec::with_capacity(rows);
        let mut closed_until = Vec::with_capacity(rows);
        for &id in gone {
            key.append_value(&self.keys.key[id as usize]);
            tomb.push(true);
            level.push(None);
            closed_until.push(None);
        }
        if closed {
            key.append_value(b"");
            tomb.push(false);
            level.push(Some(META_LEVEL));
            closed_until.push(Some(self.closed_until));
        }
        let fields = self.state_schema.fields();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(key.finish()), Arc::new(BooleanArray::from(tomb)), Arc::new(UInt8Array::from(level))];
        for f in fields.iter().skip(3) {
            columns.push(if f.name() == "closed_until" { Arc::new(Int64Array::from(closed_until.clone())) } else { new_null_array(f.data_type(), rows) });
        }
        RecordBatch::try_new(self.state_schema.clone(), columns).map(Some).map_err(|e| StreamError::Eval(format!("building window state: {e}")))
    }
}

impl Operator for AlignedAggregate {
    fn name(&self) -> &'static str {
        "window_aggregate"
    }

    /// Each row goes to the open windows it belongs to; then each window with rows gets one
    /// update per aggregate.
    fn process(&mut self, input: Rows, ctx: &mut Ctx, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        let n = input.num_rows();
        let Some(times) = input.event_ms.clone() else { return Err(eval_err("windowed rows without event time")) };
        let plan = self.plan.clone();
        let inputs = Inputs::evaluate(&plan, &self.converter, &input.batch)?;
        let (wm, lateness) = (ctx.watermark_ms, self.lateness_ms);
        let mut known = std::mem::take(&mut self.known);
        self.keys.known(&inputs, n, &mut known);
        for i in 0..n {
            let origin = input.origin.as_ref().map_or(i as u32, |o| o.value(i));
            if times.is_null(i) {
                ctx.side.push(SideOutput::Late { origin, event_ms: None, watermark_ms: wm, reason: format!("{} is null", plan.time_column_name) });
                continue;
            }
            let t = times.value(i);
            plan.kind.assign(t, &mut self.scratch);
            let closed = self.closed_until;
            self.scratch.retain(|&(_, end)| !has_fired(end, lateness, wm) && end > closed);
            if self.scratch.is_empty() {
                let reason = format!("its window closed (watermark {wm} ms, allowed lateness {lateness} ms)");
                ctx.side.push(SideOutput::Late { origin, event_ms: Some(t), watermark_ms: wm, reason });
                continue;
            }
            let id = match known[i] {
                NO_GROUP => self.keys.intern(inputs.key(i)),
                id => id,
            };
            self.keys.mark(id);
            for &(start, end) in &self.scratch {
                let w = Self::window(&mut self.levels, 0, start, end, &plan.aggs, &self.grouped)?;
                let g = w.group(id, &mut self.keys.open);
                w.rows.push(i as u32);
                w.groups.push(g);
            }
        }
        for w in self.levels[0].values_mut() {
            if w.rows.is_empty() {
                continue;
            }
            let all = w.rows.len() == n;
            let idx = (!all).then(|| UInt32Array::from(std::mem::take(&mut w.rows)));
            for (j, acc) in w.accs.iter_mut().enumerate() {
                let (values, filter) = match &idx {
                    None => (inputs.args[j].clone(), inputs.filters[j].clone()),
                    Some(idx) => {
                        let take = |a: &ArrayRef| arrow_select::take::take(a, idx, None).map_err(eval_err);
                        let values = inputs.args[j].iter().map(take).collect::<Result<Vec<_>, _>>()?;
                        let filter = match &inputs.filters[j] {
                            Some(f) => Some(arrow_select::take::take(f, idx, None).map_err(eval_err)?.as_boolean().clone()),
                            None => None,
                        };
                        (values, filter)
                    }
                };
                acc.update_batch(&values, &w.groups, filter.as_ref(), w.ids.len()).map_err(df)?;
            }
            w.rows.clear();
            w.groups.clear();
        }
        self.known = known;
        let _ = out;
        Ok(())
    }

    fn on_watermark(&mut self, ctx: &mut Ctx, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        if ctx.watermark_ms <= self.watermark_ms {
            return Ok(());
        }
        self.watermark_ms = ctx.watermark_ms;
        self.fire(ctx.watermark_ms, false, out)
    }

    fn on_drain(&mut self, _ctx: &mut Ctx, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        self.fire(i64::MAX, true, out)
    }

    fn early(&mut self, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        let plan = self.plan.clone();
        let mut batches = Vec::new();
        let mut display = Vec::new();
        let mut event_ms = Vec::new();
        let starts: Vec<i64> = self.levels[0].keys().copied().collect();
        for start in starts {
            let Some(w) = self.levels[0].get_mut(&start) else { continue };
            let mask = BooleanArray::from(w.ids.iter().map(|&id| self.keys.touched[id as usize]).collect::<Vec<_>>());
            let rows = mask.true_count();
            if rows == 0 {
                continue;
            }
            let states = w.state(&plan.aggs, &self.grouped)?;
            let all: Vec<usize> = (0..w.ids.len()).collect();
            let mut values = Vec::with_capacity(states.len());
            for (acc, s) in new_accs(&plan.aggs, &self.grouped)?.iter_mut().zip(&states) {
                acc.merge_batch(s, &all, all.len()).map_err(df)?;
                values.push(arrow_select::filter::filter(&acc.evaluate(EmitTo::All).map_err(df)?, &mask).map_err(eval_err)?);
            }
            let keys: Vec<&[u8]> = w.ids.iter().zip(mask.values().iter()).filter(|(_, m)| *m).map(|(&id, _)| self.keys.key[id as usize].as_ref()).collect();
            display.extend(key_display(&self.converter, &keys)?);
            event_ms.extend(std::iter::repeat_n(start, rows));
            batches.push(output_batch(&plan, &key_arrays(&self.converter, &keys)?, vec![start; rows], vec![w.end; rows], values)?);
        }
        self.keys.touched.iter_mut().for_each(|t| *t = false);
        if batches.is_empty() {
            return Ok(());
        }
        let batch = arrow_select::concat::concat_batches(&plan.schema, &batches).map_err(eval_err)?;
        let mut r = Rows::new(0, batch);
        r.event_ms = Some(Int64Array::from(event_ms));
        let n = display.len() as u32;
        r.early = Some(Early { keys: Arc::new(display), row_key: UInt32Array::from_iter_values(0..n) });
        out.push(r);
        Ok(())
    }

    fn snapshot(&mut self, w: &mut StateWriter) -> Result<bool, StreamError> {
        let keyless = self.converter.is_none();
        if keyless && self.closed_dirty {
            // The empty key's row and windows are one key's rows: written together.
            if let Some(&id) = self.keys.ids.get(&[][..]) {
                self.keys.dirty[id as usize] = true;
            }
        }
        let keyless_dirty = keyless && self.keys.ids.get(&[][..]).is_some_and(|&id| self.keys.dirty[id as usize]);
        for level in 0..self.levels.len() {
            let starts: Vec<i64> = self.levels[level].keys().copied().collect();
            for start in starts {
                self.window_state(level, start, w)?;
            }
        }
        let dirty: Vec<u32> = (0..self.keys.key.len() as u32).filter(|&id| self.keys.dirty[id as usize]).collect();
        let gone: Vec<u32> = dirty.iter().copied().filter(|&id| self.keys.open[id as usize] == 0 && !(keyless && self.keys.key[id as usize].is_empty())).collect();
        let closed = self.closed_dirty || keyless_dirty;
        if let Some(b) = self.key_rows(&gone, closed)? {
            w.write(b)?;
        }
        w.changed_keys += dirty.len() as u64 + (closed && !keyless) as u64;
        for &id in &dirty {
            self.keys.dirty[id as usize] = false;
            if self.keys.open[id as usize] == 0 {
                self.keys.release(id);
            }
        }
        self.closed_dirty = false;
        Ok(true)
    }

    fn restore(&mut self, files: &[Vec<RecordBatch>]) -> Result<(), StreamError> {
        let plan = self.plan.clone();
        let mut upgraded = false;
        let files = files.iter().map(|batches| batches.iter().map(|b| conform(&plan, &self.state_schema, b, &mut upgraded)).collect::<Result<Vec<_>, _>>()).collect::<Result<Vec<_>, _>>()?;
        // For each key, the newest file that holds it wins.
        let mut newest: Map<Key, usize> = Map::default();
        for (f, batches) in files.iter().enumerate() {
            for b in batches {
                let keys = b.column(0).as_binary::<i32>();
                for r in 0..b.num_rows() {
                    newest.insert(Key::from(keys.value(r)), f);
                }
            }
        }
        let batches: Vec<&RecordBatch> = files.iter().flatten().collect();
        let file_of: Vec<usize> = files.iter().enumerate().flat_map(|(f, bs)| bs.iter().map(move |_| f)).collect();
        // (level, start) → end and (batch, row) of each state row.
        let mut windows: BTreeMap<(u8, i64), (i64, Vec<(usize, usize)>)> = BTreeMap::new();
        for (bi, b) in batches.iter().enumerate() {
            let bad = |what: &str| StreamError::Eval(format!("window state: column {what} is missing or of another type"));
            let keys = b.column(0).as_binary::<i32>();
            let tomb = b.column(1).as_boolean();
            let level = b.column(2).as_primitive_opt::<UInt8Type>().ok_or_else(|| bad("level"))?;
            let i64col = |i: usize, n: &str| b.column(i).as_primitive_opt::<Int64Type>().ok_or_else(|| bad(n));
            let (start, end, closed) = (i64col(3, "start")?, i64col(4, "end")?, i64col(6, "closed_until")?);
            for r in 0..b.num_rows() {
                if tomb.value(r) || newest.get(keys.value(r)) != Some(&file_of[bi]) {
                    continue;
                }
                if level.value(r) == META_LEVEL {
                    if closed.is_valid(r) {
                        self.closed_until = self.closed_until.max(closed.value(r));
                    }
                    continue;
                }
                if level.value(r) as usize >= self.levels.len() {
                    continue; // a rollup level no longer declared
                }
                windows.entry((level.value(r), start.value(r))).or_insert_with(|| (end.value(r), Vec::new())).1.push((bi, r));
            }
        }
        let columns: Vec<Vec<&dyn Array>> = (0..self.state_schema.fields().len()).map(|c| batches.iter().map(|b| b.column(c).as_ref()).collect()).collect();
        for ((level, start), (end, rows)) in windows {
            let w = Self::window(&mut self.levels, level as usize, start, end, &plan.aggs, &self.grouped)?;
            let keys = arrow_select::interleave::interleave(&columns[0], &rows).map_err(eval_err)?;
            let keys = keys.as_binary::<i32>();
            let groups: Vec<usize> = (0..keys.len()).map(|r| w.group(self.keys.intern(keys.value(r)), &mut self.keys.open)).collect();
            let mut col = FIXED_COLUMNS;
            for (a, acc) in w.accs.iter_mut().enumerate() {
                let n = self.state_fields[a].len();
                let state = (col..col + n).map(|c| arrow_select::interleave::interleave(&columns[c], &rows)).collect::<Result<Vec<_>, _>>().map_err(eval_err)?;
                acc.merge_batch(&state, &groups, w.ids.len()).map_err(df)?;
                col += n;
            }
        }
        // Restored state is what the files hold, unless it was read from an older layout:
        // then it is written again whole, in today's layout.
        for d in self.keys.dirty.iter_mut() {
            *d = upgraded;
        }
        self.closed_dirty = upgraded;
        Ok(())
    }

    fn stats(&self) -> OperatorStats {
        let open: usize = self.levels.iter().flat_map(|l| l.values()).map(|w| w.ids.len()).sum();
        OperatorStats { keys: self.keys.len() as u64, open_windows: open as u64, ..Default::default() }
    }
}

#[cfg(test)]
#[path = "aligned_tests.rs"]
mod tests;
