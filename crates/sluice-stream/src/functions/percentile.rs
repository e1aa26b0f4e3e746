//! `approx_percentile_cont(x, q)` and `approx_median(x)` on the t-digest of Apache
//! DataSketches (Dunning and Ertl, "Computing extremely accurate quantiles using
//! t-digests", 2019).
//!
//! These replace DataFusion's functions of the same names for pipelines: DataFusion's
//! rebuilds its digest on every `update_batch` call, which a streaming window calls with a
//! few rows at a time; DataSketches' buffers values and compresses now and then, so an
//! update costs about as much as a row. Arguments: `x` any number, `q` a literal in
//! [0, 1] (an optional third argument, DataFusion's centroid count, is accepted and
//! ignored). Returns a double; null over no rows. Nulls and NaN are skipped.
//!
//! Compression `k` = [`K`] = 50: at most about 110 centroids plus 440 buffered values
//! (under 9 KiB; 16 bytes a value below that). The returned value's rank is within about
//! 1 % of `q` (checked within 1.5 % by `tests/sketches.rs`), closer in the tails. State:
//! the serialized digest (`Binary`), mergeable.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, BinaryArray, BooleanArray, Float64Array};
use arrow_schema::{DataType, Field, FieldRef};
use datafusion_common::{internal_err, plan_err, Result, ScalarValue};
use datafusion_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion_expr::utils::format_state_name;
use datafusion_expr::{Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility};
use datasketches::tdigest::TDigestMut;

/// The digest's compression parameter.
pub const K: u16 = 50;

/// `approx_percentile_cont` (with `median`: `approx_median`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ApproxPercentile {
    name: &'static str,
    median: bool,
    signature: Signature,
}

impl ApproxPercentile {
    pub fn percentile() -> Self {
        ApproxPercentile { name: "approx_percentile_cont", median: false, signature: Signature::user_defined(Volatility::Immutable) }
    }

    pub fn median() -> Self {
        ApproxPercentile { name: "approx_median", median: true, signature: Signature::user_defined(Volatility::Immutable) }
    }

    /// The quantile asked for: 0.5 for the median, else the literal second argument.
    fn quantile(&self, args: &AccumulatorArgs) -> Result<f64> {
        if self.median {
            return Ok(0.5);
        }
        match super::literal_arg(args, 1) {
            Some(ScalarValue::Float64(Some(q))) if (0.0..=1.0).contains(&q) => Ok(q),
            _ => plan_err!("{}(x, q): q must be a literal in [0, 1]", self.name),
        }
    }
}

impl AggregateUDFImpl for ApproxPercentile {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name;
        match (self.median, arg_types) {
            (true, [x]) if x.is_numeric() || *x == DataType::Null => Ok(vec![DataType::Float64]),
            (false, [x, q]) if (x.is_numeric() || *x == DataType::Null) && q.is_numeric() => Ok(vec![DataType::Float64, DataType::Float64]),
            (false, [x, q, c]) if (x.is_numeric() || *x == DataType::Null) && q.is_numeric() && c.is_integer() => Ok(vec![DataType::Float64, DataType::Float64, DataType::Int64]),
            (true, _) => plan_err!("{name}(x) takes one number, got {arg_types:?}"),
            (false, _) => plan_err!("{name}(x, q) takes a number and a literal fraction in [0, 1], got {arg_types:?}"),
        }
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let q = self.quantile(&args)?;
        PercentileAccumulator::new(q).map(|a| Box::new(a) as Box<dyn Accumulator>)
    }
    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }
    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        let q = self.quantile(&args)?;
        Ok(Box::new(PercentileGroups { q, digests: Vec::new() }))
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format_state_name(args.name, "tdigest"), DataType::Binary, true))])
    }
}

/// A t-digest and the quantile to report.
#[derive(Debug)]
pub struct PercentileAccumulator {
    q: f64,
    digest: TDigestMut,
}

impl PercentileAccumulator {
    pub fn new(q: f64) -> Result<Self> {
        Ok(PercentileAccumulator { q, digest: new_digest()? })
    }
}

fn new_digest() -> Result<TDigestMut> {
    TDigestMut::new(K).or_else(|e| internal_err!("t-digest: {e}"))
}

fn read_digest(bytes: &[u8]) -> Result<TDigestMut> {
    TDigestMut::deserialize(bytes).or_else(|e| internal_err!("unreadable t-digest state: {e}"))
}

fn quantile(d: &mut TDigestMut, q: f64) -> Result<Option<f64>> {
    d.quantile(q).or_else(|e| internal_err!("t-digest quantile: {e}"))
}

/// Whether row `i` is left out: a null value, or a filter that is not true.
fn skipped(v: &Float64Array, opt_filter: Option<&BooleanArray>, i: usize) -> bool {
    v.is_null(i) || opt_filter.is_some_and(|f| !f.is_valid(i) || !f.value(i))
}

impl Accumulator for PercentileAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(v) = values.first() else { return internal_err!("no input") };
        let v = v.as_primitive::<Float64Type>();
        if v.null_count() == 0 {
            for x in v.values().iter() {
                self.digest.update(*x);
            }
        } else {
            for x in v.iter().flatten() {
                self.digest.update(x);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(quantile(&mut self.digest, self.q)?))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.digest.total_weight().min(550) as usize * 16
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.digest.serialize()))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(s) = states.first() else { return internal_err!("no state") };
        let s = s.as_binary::<i32>();
        for i in 0..s.len() {
            if s.is_valid(i) {
                self.digest.merge(&read_digest(s.value(i))?);
            }
        }
        Ok(())
    }
}

/// The same digests for many groups at once (DataFusion's `GroupsAccumulator`): one
/// digest per group, created at the group's first value, so one call per batch updates
/// every group. State: as [`PercentileAccumulator`]'s, one serialized digest per group (null
/// for a group without values).
pub struct PercentileGroups {
    q: f64,
    digests: Vec<Option<TDigestMut>>,
}

impl PercentileGroups {
    fn digest(&mut self, g: usize) -> Result<&mut TDigestMut> {
        let slot = &mut self.digests[g];
        if slot.is_none() {
            *slot = Some(new_digest()?);
        }
        match slot {
            Some(d) => Ok(d),
            None => internal_err!("t-digest missing"),
        }
    }
}

impl GroupsAccumulator for PercentileGroups {
    fn update_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], opt_filter: Option<&BooleanArray>, total_num_groups: usize) -> Result<()> {
        let Some(v) = values.first() else { return internal_err!("no input") };
        let v = v.as_primitive::<Float64Type>();
        self.digests.resize_with(total_num_groups.max(self.digests.len()), || None);
        for (i, &g) in group_indices.iter().enumerate() {
            if skipped(v, opt_filter, i) {
                continue;
            }
            let x = v.value(i);
            self.digest(g)?.update(x);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut taken = emit_to.take_needed(&mut self.digests);
        let mut out = Vec::with_capacity(taken.len());
        for d in taken.iter_mut() {
            out.push(match d {
                Some(d) => quantile(d, self.q)?,
                None => None,
            });
        }
        Ok(Arc::new(Float64Array::from(out)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let mut taken = emit_to.take_needed(&mut self.digests);
        let bytes: Vec<Option<Vec<u8>>> = taken.iter_mut().map(|d| d.as_mut().map(|d| d.serialize())).collect();
        Ok(vec![Arc::new(BinaryArray::from_iter(bytes))])
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        let Some(s) = values.first() else { return internal_err!("no state") };
        let s = s.as_binary::<i32>();
        self.digests.resize_with(total_num_groups.max(self.digests.len()), || None);
        for (i, &g) in group_indices.iter().enumerate() {
            if s.is_null(i) {
                continue;
            }
            let other = read_digest(s.value(i))?;
            self.digest(g)?.merge(&other);
        }
        Ok(())
    }

    /// Each row as its own group's digest (DataFusion's skipped partial aggregation).
    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let Some(v) = values.first() else { return internal_err!("no input") };
        let v = v.as_primitive::<Float64Type>();
        let mut out = Vec::with_capacity(v.len());
        for i in 0..v.len() {
            if skipped(v, opt_filter, i) {
                out.push(None);
                continue;
            }
            let mut d = new_digest()?;
            d.update(v.value(i));
            out.push(Some(d.serialize()));
        }
        Ok(vec![Arc::new(BinaryArray::from_iter(out))])
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.digests.capacity() * std::mem::size_of::<Option<TDigestMut>>()
    }
}
