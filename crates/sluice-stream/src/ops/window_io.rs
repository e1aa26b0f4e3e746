//! What both windowed aggregates ([`super::window_agg`], [`super::aligned`]) share: the
//! evaluation of an input batch (group keys, aggregate arguments and filters), group keys
//! as arrow-row bytes and back, output batches, and the checkpoint state layout.
//!
//! State layout (one Arrow schema for both operators, so either restores the other's
//! files): `key` (Binary: the arrow-row encoded group key), `tombstone` (Boolean), `level`
//! (UInt8: 0 = base windows, 1.. = rollup levels, 255 = the key's own row), `start`, `end`
//! (Int64 ms), `max_event_ms`, `closed_until`, `accept_from` (Int64 ms, key rows only),
//! `seen` (List<Int64>: event times, key rows only), then each aggregate's state fields
//! `a<i>_<j>` in DataFusion's state layout of that aggregate.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow_row::{RowConverter, Rows as KeyRows, SortField};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};

use super::keyed::df;
use crate::sql::plan::{GroupCol, WindowPlan};
use crate::state::{KEY, TOMBSTONE};
use crate::StreamError;

/// `level` of a key's own row.
pub(crate) const META_LEVEL: u8 = 255;
/// Columns before the aggregates' state fields.
pub(crate) const FIXED_COLUMNS: usize = 9;

pub(crate) fn eval_err(e: impl std::fmt::Display) -> StreamError {
    StreamError::Eval(e.to_string())
}

/// The state schema of a window plan, and each aggregate's state fields.
pub(crate) fn state_schema(plan: &WindowPlan) -> Result<(SchemaRef, Vec<Vec<FieldRef>>), StreamError> {
    let mut fields = vec![
        Field::new(KEY, DataType::Binary, false),
        Field::new(TOMBSTONE, DataType::Boolean, false),
        Field::new("level", DataType::UInt8, true),
        Field::new("start", DataType::Int64, true),
        Field::new("end", DataType::Int64, true),
        Field::new("max_event_ms", DataType::Int64, true),
        Field::new("closed_until", DataType::Int64, true),
        Field::new("accept_from", DataType::Int64, true),
        Field::new("seen", DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))), true),
    ];
    let mut state_fields = Vec::new();
    for (i, a) in plan.aggs.iter().enumerate() {
        let sf = a.expr.state_fields().map_err(df)?;
        for (j, f) in sf.iter().enumerate() {
            fields.push(Field::new(format!("a{i}_{j}"), f.data_type().clone(), true));
        }
        state_fields.push(sf);
    }
    Ok((Arc::new(Schema::new(fields)), state_fields))
}

/// The converter of group keys to bytes (None when the query has no key besides the window).
pub(crate) fn key_converter(plan: &WindowPlan) -> Result<Option<RowConverter>, StreamError> {
    if plan.keys.is_empty() {
        return Ok(None);
    }
    RowConverter::new(plan.key_fields.iter().map(|f| SortField::new(f.data_type().clone())).collect()).map(Some).map_err(eval_err)
}

/// One input batch, evaluated: group keys as bytes, and each aggregate's argument arrays and
/// filter.
pub(crate) struct Inputs {
    pub keys: Option<KeyRows>,
    pub args: Vec<Vec<ArrayRef>>,
    pub filters: Vec<Option<BooleanArray>>,
}

impl Inputs {
    pub fn evaluate(plan: &WindowPlan, converter: &Option<RowConverter>, batch: &RecordBatch) -> Result<Inputs, StreamError> {
        let n = batch.num_rows();
        let keys = match converter {
            Some(c) => {
                let arrays = plan.keys.iter().map(|k| k.evaluate(batch).and_then(|v| v.into_array(n))).collect::<Result<Vec<_>, _>>().map_err(df)?;
                Some(c.convert_columns(&arrays).map_err(eval_err)?)
            }
            None => None,
        };
        let mut args = Vec::with_capacity(plan.aggs.len());
        let mut filters = Vec::with_capacity(plan.aggs.len());
        for a in &plan.aggs {
            args.push(a.args.iter().map(|e| e.evaluate(batch).and_then(|v| v.into_array(n))).collect::<Result<Vec<_>, _>>().map_err(df)?);
            filters.push(match &a.filter {
                Some(f) => Some(f.evaluate(batch).and_then(|v| v.into_array(n)).map_err(df)?.as_boolean().clone()),
                None => None,
            });
        }
        Ok(Inputs { keys, args, filters })
    }

    /// The argument and filter arrays with their rows in `order` (row `p` of the result is
    /// row `order[p]` of the batch), so that each key's rows are one contiguous run. An
    /// array that several aggregates share is taken once. Errors: arrow's `take`.
    pub fn reordered(&self, order: &[u32]) -> Result<(Vec<Vec<ArrayRef>>, Vec<Option<BooleanArray>>), StreamError> {
        if order.iter().enumerate().all(|(p, &i)| p as u32 == i) {
            return Ok((self.args.clone(), self.filters.clone()));
        }
        let idx = UInt32Array::from(order.to_vec());
        let mut done: Vec<(*const (), ArrayRef)> = Vec::new();
        let mut take = |a: &ArrayRef| -> Result<ArrayRef, StreamError> {
            let ptr = Arc::as_ptr(a) as *const ();
            if let Some((_, t)) = done.iter().find(|(q, _)| *q == ptr) {
                return Ok(t.clone());
            }
            let t = arrow_select::take::take(a, &idx, None).map_err(eval_err)?;
            done.push((ptr, t.clone()));
            Ok(t)
        };
        let args = self.args.iter().map(|arrays| arrays.iter().map(&mut take).collect::<Result<Vec<_>, _>>()).collect::<Result<Vec<_>, _>>()?;
        let filters = self
            .filters
            .iter()
            .map(|f| f.as_ref().map(|f| arrow_select::take::take(f, &idx, None).map(|t| t.as_boolean().clone())).transpose().map_err(eval_err))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((args, filters))
    }

    /// Row `i`'s group key bytes (empty without keys).
    pub fn key(&self, i: usize) -> &[u8] {
        self.keys.as_ref().map_or(&[][..], |r| r.row(i).data())
    }
}

/// Key columns from key bytes.
pub(crate) fn key_arrays(converter: &Option<RowConverter>, keys: &[&[u8]]) -> Result<Vec<ArrayRef>, StreamError> {
    match converter {
        None => Ok(Vec::new()),
        Some(c) => {
            let parser = c.parser();
            c.convert_rows(keys.iter().map(|k| parser.parse(k))).map_err(eval_err)
        }
    }
}

/// Display strings of keys (for the live view): the value of a single key column, else a
/// JSON-like list of the values.
pub(crate) fn key_display(converter: &Option<RowConverter>, keys: &[&[u8]]) -> Result<Vec<String>, StreamError> {
    let arrays = key_arrays(converter, keys)?;
    let options = arrow_cast::display::FormatOptions::default();
    let formatters = arrays.iter().map(|a| arrow_cast::display::ArrayFormatter::try_new(a.as_ref(), &options)).collect::<Result<Vec<_>, _>>().map_err(eval_err)?;
    Ok((0..keys.len())
        .map(|i| match formatters.as_slice() {
            [one] => one.value(i).to_string(),
            many => format!("[{}]", many.iter().map(|f| f.value(i).to_string()).collect::<Vec<_>>().join(", ")),
        })
        .collect())
}

/// A batch of the aggregate's output schema: key columns, window bounds (ms) and each
/// aggregate's values, cast where an accumulator's value type differs in form from the
/// planned type.
pub(crate) fn output_batch(plan: &WindowPlan, key_arrays: &[ArrayRef], starts: Vec<i64>, ends: Vec<i64>, values: Vec<ArrayRef>) -> Result<RecordBatch, StreamError> {
    let rows = starts.len();
    let ts = |v: Vec<i64>| Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC")) as ArrayRef;
    let (mut starts, mut ends) = (Some(starts), Some(ends));
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(plan.schema.fields().len());
    for g in &plan.group_layout {
        columns.push(match g {
            GroupCol::Key(i) => key_arrays[*i].clone(),
            GroupCol::WindowStart => ts(starts.take().unwrap_or_default()),
            GroupCol::WindowEnd => ts(ends.take().unwrap_or_default()),
        });
    }
    columns.extend(values);
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
    let schema = plan.schema.clone();
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c) } else { arrow_cast::cast(&c, f.data_type()) })
        .collect::<Result<Vec<_>, _>>()
        .map_err(eval_err)?;
    RecordBatch::try_new_with_options(schema, columns, &options).map_err(|e| StreamError::Eval(format!("building window results: {e}")))
}

/// A state batch in the current layout. Batches in the layout before 2026-11-29
/// (`hr_zone_seconds` kept its pending readings in two list columns) are converted and
/// `upgraded` is set. Any other difference is an error that names the column.
pub(crate) fn conform(plan: &WindowPlan, state_schema: &SchemaRef, b: &RecordBatch, upgraded: &mut bool) -> Result<RecordBatch, StreamError> {
    if b.schema().fields() == state_schema.fields() {
        return Ok(b.clone());
    }
    let mismatch = |name: &str, found: String| {
        StreamError::Eval(format!(
            "window state column {name:?}: expected {}, found {found}. The state was written by a version of sluice whose layout this one cannot read. To rebuild it from the source topic, give the pipeline a new name (the table and topic of the old name stay as they are)",
            state_schema.field_with_name(name).map_or_else(|_| "nothing".to_string(), |f| f.data_type().to_string())
        ))
    };
    let mut columns = Vec::with_capacity(state_schema.fields().len());
    for f in state_schema.fields() {
        let name = f.name();
        let found = b.column_by_name(name);
        if let Some(c) = found.filter(|c| c.data_type() == f.data_type()) {
            columns.push(c.clone());
            continue;
        }
        // hr_zone_seconds' tail, from `a<i>_5` and `a<i>_6` lists.
        let zone_tail = name.strip_prefix('a').and_then(|r| r.strip_suffix("_5")).and_then(|i| i.parse::<usize>().ok()).filter(|&i| plan.aggs.get(i).is_some_and(|a| a.zone));
        let converted = zone_tail.and_then(|i| Some((b.column_by_name(&format!("a{i}_5"))?, b.column_by_name(&format!("a{i}_6"))?))).and_then(|(ms, bpm)| crate::functions::zones::upgrade_tail(ms, bpm));
        match converted {
            Some(c) => {
                *upgraded = true;
                columns.push(c);
            }
            None => return Err(mismatch(name, found.map_or_else(|| "no such column".to_string(), |c| c.data_type().to_string()))),
        }
    }
    RecordBatch::try_new(state_schema.clone(), columns).map_err(|e| StreamError::Eval(format!("window state: {e}")))
}
