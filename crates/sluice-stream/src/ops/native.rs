//! Accumulators of the per-key windowed aggregate ([`super::window_agg`]).
//!
//! `count`, `sum`, `min`, `max` and `avg` over 64-bit integers, millisecond timestamps and
//! doubles are kept inline in an [`Acc`] (24 bytes, no allocation) instead of a boxed
//! DataFusion `Accumulator` (a heap object of 40–100 bytes each, whose state is read back
//! as `ScalarValue`s). At a checkpoint their state goes straight into Arrow builders
//! ([`StateColumns`]), as does `hr_zone_seconds`'s; any other aggregate keeps DataFusion's
//! accumulator ([`Acc::Dyn`]) and its `state()`.
//!
//! Results and state are DataFusion 55's, bit for bit, so state files written before this
//! module restore unchanged: each batch goes through the same arrow kernels
//! (`arrow_arith::aggregate::{sum, min, max}`), integer sums wrap, doubles combine across
//! batches by `f64::total_cmp`, and the state columns are DataFusion's
//! (`count: Int64`; `sum`/`min`/`max`: the value's type; `avg`: `count: UInt64, sum:
//! Float64`, the sum null while the count is 0). Source: `datafusion-functions-aggregate`
//! 55.2 (`count.rs`, `sum.rs`, `average.rs`, `min_max.rs`).

use std::cmp::Ordering;
use std::sync::Arc;

use arrow_arith::aggregate::{max, min, sum};
use arrow_array::builder::{BinaryBuilder, Float64Builder, Int64Builder, UInt64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType, UInt64Type};
use arrow_array::{Array, ArrayRef, PrimitiveArray, StructArray};
use arrow_schema::{DataType, FieldRef, TimeUnit};
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;

use super::keyed::{arrays, df, read_state};
use crate::functions::zones::{self, as_zone};
use crate::sql::plan::AggPlan;
use crate::StreamError;

/// Which inline accumulator an aggregate uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Count,
    SumI,
    SumF,
    MinI,
    MaxI,
    MinF,
    MaxF,
    Avg,
}

/// An aggregate that runs inline: its kind and result type (`Int64`, `Float64` or
/// `Timestamp(ms, tz)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Native {
    pub kind: Kind,
    pub ty: DataType,
}

/// The inline accumulator for `agg`, if it has one (see the module docs for which).
pub fn native(agg: &AggPlan) -> Option<Native> {
    let e = &agg.expr;
    if agg.zone || e.is_distinct() || e.ignore_nulls() || !e.order_bys().is_empty() || agg.args.len() != 1 {
        return None;
    }
    let ty = e.field().data_type().clone();
    let state: Vec<DataType> = e.state_fields().ok()?.iter().map(|f| f.data_type().clone()).collect();
    let int = |t: &DataType| matches!(t, DataType::Int64 | DataType::Timestamp(TimeUnit::Millisecond, _));
    let kind = match (e.fun().name(), state.as_slice()) {
        ("count", [DataType::Int64]) if ty == DataType::Int64 => Kind::Count,
        ("sum", [DataType::Int64]) if ty == DataType::Int64 => Kind::SumI,
        ("sum", [DataType::Float64]) if ty == DataType::Float64 => Kind::SumF,
        ("min", [t]) if *t == ty && int(t) => Kind::MinI,
        ("max", [t]) if *t == ty && int(t) => Kind::MaxI,
        ("min", [DataType::Float64]) if ty == DataType::Float64 => Kind::MinF,
        ("max", [DataType::Float64]) if ty == DataType::Float64 => Kind::MaxF,
        ("avg" | "mean", [DataType::UInt64, DataType::Float64]) if ty == DataType::Float64 => Kind::Avg,
        _ => return None,
    };
    Some(Native { kind, ty })
}

/// One aggregate's accumulator in one window.
pub enum Acc {
    /// Rows whose argument is not null.
    Count(i64),
    /// `sum`, `min` or `max` of integers or timestamps (ms); None before the first value.
    I(Option<i64>),
    /// `sum`, `min` or `max` of doubles; None before the first value.
    F(Option<f64>),
    /// `avg`: values counted and their sum (0 while the count is 0).
    Avg(u64, f64),
    /// Any other aggregate: DataFusion's accumulator.
    Dyn(Box<dyn Accumulator>),
}

fn eval_err(what: &str, t: &DataType) -> StreamError {
    StreamError::Eval(format!("{what}: unexpected argument type {t}"))
}

/// An integer or millisecond-timestamp array's values as i64, through `f`.
fn with_i64<R>(a: &ArrayRef, what: &str, f: impl FnOnce(&dyn IntOps) -> R) -> Result<R, StreamError> {
    match a.data_type() {
        DataType::Int64 => Ok(f(a.as_primitive::<Int64Type>())),
        DataType::Timestamp(TimeUnit::Millisecond, _) => Ok(f(a.as_primitive::<TimestampMillisecondType>())),
        t => Err(eval_err(what, t)),
    }
}

/// The arrow kernels over an i64-valued array of either type.
trait IntOps {
    fn sum(&self) -> Option<i64>;
    fn min(&self) -> Option<i64>;
    fn max(&self) -> Option<i64>;
}

impl<T: arrow_array::ArrowNumericType<Native = i64>> IntOps for PrimitiveArray<T> {
    fn sum(&self) -> Option<i64> {
        sum(self)
    }
    fn min(&self) -> Option<i64> {
        min(self)
    }
    fn max(&self) -> Option<i64> {
        max(self)
    }
}

fn floats<'a>(a: &'a ArrayRef, what: &str) -> Result<&'a PrimitiveArray<Float64Type>, StreamError> {
    a.as_primitive_opt::<Float64Type>().ok_or_else(|| eval_err(what, a.data_type()))
}

/// DataFusion's `min_max_float_option`: `b` replaces `a` when `a` compares as `replace`.
fn pick_f(a: Option<f64>, b: Option<f64>, replace: Ordering) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if x.total_cmp(&y) == replace { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

fn pick_i(a: Option<i64>, b: Option<i64>, replace: Ordering) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if x.cmp(&y) == replace { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

fn add_i(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (x, None) => x,
        (x, Some(y)) => Some(x.unwrap_or(0).wrapping_add(y)),
    }
}

fn add_f(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (x, None) => x,
        (x, Some(y)) => Some(x.unwrap_or(0.0) + y),
    }
}

impl Acc {
    pub fn new(agg: &AggPlan, native: &Option<Native>) -> Result<Acc, StreamError> {
        Ok(match native.as_ref().map(|n| n.kind) {
            None => Acc::Dyn(agg.expr.create_accumulator().map_err(df)?),
            Some(Kind::Count) => Acc::Count(0),
            Some(Kind::SumI | Kind::MinI | Kind::MaxI) => Acc::I(None),
            Some(Kind::SumF | Kind::MinF | Kind::MaxF) => Acc::F(None),
            Some(Kind::Avg) => Acc::Avg(0, 0.0),
        })
    }

    /// Adds argument rows (`args`: the aggregate's argument arrays, equally long).
    pub fn update(&mut self, native: &Option<Native>, args: &[ArrayRef]) -> Result<(), StreamError> {
        let kind = native.as_ref().map(|n| n.kind);
        let name = "aggregate";
        match (self, kind) {
            (Acc::Dyn(a), _) => a.update_batch(args).map_err(df)?,
            (acc, Some(k)) => {
                let Some(a) = args.first() else { return Err(StreamError::Eval("aggregate without an argument".into())) };
                match (acc, k) {
                    (Acc::Count(n), _) => *n += (a.len() - a.null_count()) as i64,
                    (Acc::I(v), Kind::SumI) => *v = add_i(*v, with_i64(a, name, |x| x.sum())?),
                    (Acc::I(v), Kind::MinI) => *v = pick_i(*v, with_i64(a, name, |x| x.min())?, Ordering::Greater),
                    (Acc::I(v), Kind::MaxI) => *v = pick_i(*v, with_i64(a, name, |x| x.max())?, Ordering::Less),
                    (Acc::F(v), Kind::SumF) => *v = add_f(*v, sum(floats(a, name)?)),
                    (Acc::F(v), Kind::MinF) => *v = pick_f(*v, min(floats(a, name)?), Ordering::Greater),
                    (Acc::F(v), Kind::MaxF) => *v = pick_f(*v, max(floats(a, name)?), Ordering::Less),
                    (Acc::Avg(c, s), Kind::Avg) => {
                        let f = floats(a, name)?;
                        *c += (f.len() - f.null_count()) as u64;
                        if let Some(x) = sum(f) {
                            *s += x;
                        }
                    }
                    _ => return Err(StreamError::Eval("an accumulator does not match its aggregate".into())),
                }
            }
            (_, None) => return Err(StreamError::Eval("an accumulator does not match its aggregate".into())),
        }
        Ok(())
    }

    /// Merges `src` (of the same aggregate) into `self`.
    pub fn merge(&mut self, agg: &AggPlan, native: &Option<Native>, src: &mut Acc) -> Result<(), StreamError> {
        let kind = native.as_ref().map(|n| n.kind);
        match (self, src, kind) {
            (Acc::Dyn(d), Acc::Dyn(s), _) => {
                let state = read_state(agg, s)?;
                d.merge_batch(&arrays(&state)?).map_err(df)?;
            }
            (Acc::Count(d), Acc::Count(s), _) => *d += *s,
            (Acc::I(d), Acc::I(s), Some(Kind::SumI)) => *d = add_i(*d, *s),
            (Acc::I(d), Acc::I(s), Some(Kind::MinI)) => *d = pick_i(*d, *s, Ordering::Greater),
            (Acc::I(d), Acc::I(s), Some(Kind::MaxI)) => *d = pick_i(*d, *s, Ordering::Less),
            (Acc::F(d), Acc::F(s), Some(Kind::SumF)) => *d = add_f(*d, *s),
            (Acc::F(d), Acc::F(s), Some(Kind::MinF)) => *d = pick_f(*d, *s, Ordering::Greater),
            (Acc::F(d), Acc::F(s), Some(Kind::MaxF)) => *d = pick_f(*d, *s, Ordering::Less),
            (Acc::Avg(dc, ds), Acc::Avg(sc, ss), _) => {
                *dc += *sc;
                if *sc > 0 {
                    *ds += *ss;
                }
            }
            _ => return Err(StreamError::Eval("merging accumulators of different aggregates".into())),
        }
        Ok(())
    }

    /// The aggregate's result.
    pub fn evaluate(&mut self, native: &Option<Native>) -> Result<ScalarValue, StreamError> {
        Ok(match self {
            Acc::Dyn(a) => a.evaluate().map_err(df)?,
            Acc::Count(n) => ScalarValue::Int64(Some(*n)),
            Acc::I(v) => match native.as_ref().map(|n| &n.ty) {
                Some(DataType::Timestamp(TimeUnit::Millisecond, tz)) => ScalarValue::TimestampMillisecond(*v, tz.clone()),
                _ => ScalarValue::Int64(*v),
            },
            Acc::F(v) => ScalarValue::Float64(*v),
            Acc::Avg(c, s) => ScalarValue::Float64((*c > 0).then(|| *s / *c as f64)),
        })
    }

    /// The accumulator of `agg` holding the state in row `row` of `cols` (the aggregate's
    /// state columns of a state file; `cast`: the same columns cast to the inline types,
    /// for inline aggregates).
    pub fn restore(agg: &AggPlan, native: &Option<Native>, cols: &[ArrayRef], cast: &[ArrayRef], row: usize) -> Result<Acc, StreamError> {
        let bad = || StreamError::Eval("window state: an aggregate's state columns are of another type".into());
        let i64_at = |c: &ArrayRef| -> Result<Option<i64>, StreamError> {
            let a = c.as_primitive_opt::<Int64Type>().ok_or_else(bad)?;
            Ok(a.is_valid(row).then(|| a.value(row)))
        };
        let f64_at = |c: &ArrayRef| -> Result<Option<f64>, StreamError> {
            let a = c.as_primitive_opt::<Float64Type>().ok_or_else(bad)?;
            Ok(a.is_valid(row).then(|| a.value(row)))
        };
        Ok(match (native.as_ref().map(|n| n.kind), cast) {
            (None, _) => {
                let mut acc = agg.expr.create_accumulator().map_err(df)?;
                let state: Vec<ArrayRef> = cols.iter().map(|c| c.slice(row, 1)).collect();
                acc.merge_batch(&state).map_err(df)?;
                Acc::Dyn(acc)
            }
            (Some(Kind::Count), [c]) => Acc::Count(i64_at(c)?.unwrap_or(0)),
            (Some(Kind::SumI | Kind::MinI | Kind::MaxI), [c]) => Acc::I(i64_at(c)?),
            (Some(Kind::SumF | Kind::MinF | Kind::MaxF), [c]) => Acc::F(f64_at(c)?),
            (Some(Kind::Avg), [c, s]) => {
                let counts = c.as_primitive_opt::<UInt64Type>().ok_or_else(bad)?;
                let n = if counts.is_valid(row) { counts.value(row) } else { 0 };
                Acc::Avg(n, if n > 0 { f64_at(s)?.unwrap_or(0.0) } else { 0.0 })
            }
            _ => return Err(bad()),
        })
    }
}

/// The storage types inline aggregates' state columns are cast to when restoring.
pub fn restore_types(native: &Option<Native>) -> Option<Vec<DataType>> {
    Some(match native.as_ref()?.kind {
        Kind::Count | Kind::SumI | Kind::MinI | Kind::MaxI => vec![DataType::Int64],
        Kind::SumF | Kind::MinF | Kind::MaxF => vec![DataType::Float64],
        Kind::Avg => vec![DataType::UInt64, DataType::Float64],
    })
}

/// One state column being built.
enum Col {
    I64(Int64Builder),
    U64(UInt64Builder),
    F64(Float64Builder),
    Bin(BinaryBuilder),
    /// A DataFusion accumulator's state field, and its null.
    Scalars(Vec<ScalarValue>, ScalarValue),
}

impl Col {
    fn push_null(&mut self) {
        match self {
            Col::I64(b) => b.append_null(),
            Col::U64(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Bin(b) => b.append_null(),
            Col::Scalars(v, null) => v.push(null.clone()),
        }
    }
}

/// The aggregates' state columns of a state batch (per aggregate, its state fields in
/// DataFusion's order), built row by row.
pub struct StateColumns {
    cols: Vec<Vec<Col>>,
    scratch: Vec<u8>,
}

impl StateColumns {
    pub fn new(aggs: &[AggPlan], natives: &[Option<Native>], state_fields: &[Vec<FieldRef>], rows: usize) -> Result<Self, StreamError> {
        let mut cols = Vec::with_capacity(aggs.len());
        for ((agg, native), fields) in aggs.iter().zip(natives).zip(state_fields) {
            let c: Vec<Col> = match native.as_ref().map(|n| n.kind) {
                Some(Kind::Count | Kind::SumI | Kind::MinI | Kind::MaxI) => vec![Col::I64(Int64Builder::with_capacity(rows))],
                Some(Kind::SumF | Kind::MinF | Kind::MaxF) => vec![Col::F64(Float64Builder::with_capacity(rows))],
                Some(Kind::Avg) => vec![Col::U64(UInt64Builder::with_capacity(rows)), Col::F64(Float64Builder::with_capacity(rows))],
                None if agg.zone => {
                    let mut c: Vec<Col> = (0..4).map(|_| Col::I64(Int64Builder::with_capacity(rows))).collect();
                    c.push(Col::F64(Float64Builder::with_capacity(rows)));
                    c.push(Col::Bin(BinaryBuilder::with_capacity(rows, rows * 16 * 12)));
                    c
                }
                None => fields.iter().map(|f| Ok(Col::Scalars(Vec::with_capacity(rows), ScalarValue::try_from(f.data_type()).map_err(df)?))).collect::<Result<_, StreamError>>()?,
            };
            cols.push(c);
        }
        Ok(StateColumns { cols, scratch: Vec::new() })
    }

    /// A row without aggregate state (a key's own row, or a tombstone).
    pub fn push_null(&mut self) {
        self.cols.iter_mut().flatten().for_each(Col::push_null);
    }

    /// A window's row: each accumulator's state.
    pub fn push(&mut self, aggs: &[AggPlan], accs: &mut [Acc]) -> Result<(), StreamError> {
        let mismatch = || StreamError::Eval("a state column does not match its accumulator".into());
        let scratch = &mut self.scratch;
        for ((cols, acc), agg) in self.cols.iter_mut().zip(accs.iter_mut()).zip(aggs) {
            match (acc, cols.as_mut_slice()) {
                (Acc::Count(n), [Col::I64(b)]) => b.append_value(*n),
                (Acc::I(v), [Col::I64(b)]) => b.append_option(*v),
                (Acc::F(v), [Col::F64(b)]) => b.append_option(*v),
                (Acc::Avg(c, s), [Col::U64(cb), Col::F64(sb)]) => {
                    cb.append_value(*c);
                    sb.append_option((*c > 0).then_some(*s));
                }
                (Acc::Dyn(a), [Col::I64(low), Col::I64(moderate), Col::I64(high), Col::I64(frontier), Col::F64(hr_max), Col::Bin(tail)]) if agg.zone => {
                    let z = as_zone(a.as_mut()).ok_or_else(mismatch)?;
                    low.append_value(z.folded[0]);
                    moderate.append_value(z.folded[1]);
                    high.append_value(z.folded[2]);
                    frontier.append_value(z.frontier_ms);
                    hr_max.append_value(z.hr_max);
                    scratch.clear();
                    z.tail_bytes(scratch);
                    tail.append_value(&scratch);
                }
                (Acc::Dyn(a), cols) => {
                    let state = read_state(agg, a)?;
                    if state.len() != cols.len() {
                        return Err(mismatch());
                    }
                    for (v, c) in state.into_iter().zip(cols.iter_mut()) {
                        let Col::Scalars(vals, _) = c else { return Err(mismatch()) };
                        vals.push(v);
                    }
                }
                _ => return Err(mismatch()),
            }
        }
        Ok(())
    }

    /// The finished columns, each of its declared type.
    pub fn finish(self, state_fields: &[Vec<FieldRef>]) -> Result<Vec<ArrayRef>, StreamError> {
        let mut out = Vec::new();
        for (cols, fields) in self.cols.into_iter().zip(state_fields) {
            for (c, f) in cols.into_iter().zip(fields) {
                let arr: ArrayRef = match c {
                    Col::I64(mut b) => Arc::new(b.finish()),
                    Col::U64(mut b) => Arc::new(b.finish()),
                    Col::F64(mut b) => Arc::new(b.finish()),
                    Col::Bin(mut b) => Arc::new(b.finish()),
                    Col::Scalars(v, _) => ScalarValue::iter_to_array(v).map_err(df)?,
                };
                let want = f.data_type();
                out.push(if arr.data_type() == want { arr } else { arrow_cast::cast(&arr, want).map_err(|e| StreamError::Eval(e.to_string()))? });
            }
        }
        Ok(out)
    }
}

/// One result column being built.
enum Out {
    I64(Int64Builder),
    F64(Float64Builder),
    /// `hr_zone_seconds`: low, moderate and high seconds.
    Zone([Float64Builder; 3]),
    Scalars(Vec<ScalarValue>),
}

/// The aggregates' result columns of a batch of windows, built window by window (inline
/// aggregates straight into Arrow builders).
pub struct ResultColumns {
    cols: Vec<Out>,
}

impl ResultColumns {
    pub fn new(aggs: &[AggPlan], natives: &[Option<Native>], rows: usize) -> Self {
        let cols = aggs
            .iter()
            .zip(natives)
            .map(|(a, n)| match n.as_ref().map(|n| n.kind) {
                Some(Kind::Count | Kind::SumI | Kind::MinI | Kind::MaxI) => Out::I64(Int64Builder::with_capacity(rows)),
                Some(Kind::SumF | Kind::MinF | Kind::MaxF | Kind::Avg) => Out::F64(Float64Builder::with_capacity(rows)),
                None if a.zone => Out::Zone(std::array::from_fn(|_| Float64Builder::with_capacity(rows))),
                None => Out::Scalars(Vec::with_capacity(rows)),
            })
            .collect();
        ResultColumns { cols }
    }

    /// A window's results.
    pub fn push(&mut self, accs: &mut [Acc]) -> Result<(), StreamError> {
        for (c, acc) in self.cols.iter_mut().zip(accs.iter_mut()) {
            match (c, acc) {
                (Out::I64(b), Acc::Count(n)) => b.append_value(*n),
                (Out::I64(b), Acc::I(v)) => b.append_option(*v),
                (Out::F64(b), Acc::F(v)) => b.append_option(*v),
                (Out::F64(b), Acc::Avg(n, s)) => b.append_option((*n > 0).then(|| *s / *n as f64)),
                (Out::Zone(b), Acc::Dyn(a)) => {
                    let z = as_zone(a.as_mut()).ok_or_else(|| StreamError::Eval("hr_zone_seconds without its accumulator".into()))?;
                    for (b, ms) in b.iter_mut().zip(z.zone_ms()) {
                        b.append_value(ms as f64 / 1000.0);
                    }
                }
                (Out::Scalars(v), Acc::Dyn(a)) => v.push(a.evaluate().map_err(df)?),
                _ => return Err(StreamError::Eval("a result column does not match its accumulator".into())),
            }
        }
        Ok(())
    }

    /// The finished columns (of the accumulators' value types; `output_batch` casts them to
    /// the planned types). `None` when no window was pushed.
    pub fn finish(self) -> Result<Vec<ArrayRef>, StreamError> {
        self.cols
            .into_iter()
            .map(|c| match c {
                Out::I64(mut b) => Ok(Arc::new(b.finish()) as ArrayRef),
                Out::F64(mut b) => Ok(Arc::new(b.finish()) as ArrayRef),
                Out::Zone(b) => {
                    let DataType::Struct(fields) = zones::result_type() else { return Err(StreamError::Eval("hr_zone_seconds: result type".into())) };
                    let [mut l, mut m, mut h] = b;
                    let cols: Vec<ArrayRef> = vec![Arc::new(l.finish()), Arc::new(m.finish()), Arc::new(h.finish())];
                    Ok(Arc::new(StructArray::new(fields, cols, None)) as ArrayRef)
                }
                Out::Scalars(v) => ScalarValue::iter_to_array(v).map_err(df),
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "native_tests.rs"]
mod tests;
