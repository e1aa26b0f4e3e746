//! `approx_top_k(value, k)`: the `k` most frequent values, with estimated counts.
//!
//! Returns `list<struct {value: string, count: int64}>`, most frequent first. Values are
//! compared as text (numbers are formatted); nulls are skipped. `k` must be a literal
//! integer, 1..=64.
//!
//! Sketch: the frequent-items sketch of Apache DataSketches (the `datasketches` crate;
//! Anderson et al., "A High-Performance Algorithm for Identifying Frequent Items in Data
//! Streams", IMC 2017) with a map of [`MAX_MAP_SIZE`] = 128 slots. Error bound: every
//! estimate is within `epsilon × W` of the true count, where `W` is the number of values
//! seen and `epsilon = 3.5 / 128 ≈ 2.7 %`; with fewer than 96 distinct values the counts
//! are exact. Memory: at most about 128 × (16 bytes + value length), about 4 KiB for short
//! values. State: the serialized sketch (`Binary`), mergeable.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, Field, FieldRef, Fields};
use datafusion_common::{internal_err, plan_err, Result, ScalarValue};
use datafusion_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion_expr::utils::format_state_name;
use datafusion_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use datasketches::frequencies::{ErrorType, FrequentItemsSketch};

/// Name of the function in SQL.
pub const NAME: &str = "approx_top_k";
/// Slots of the sketch's map (a power of two).
pub const MAX_MAP_SIZE: usize = 128;
/// Largest accepted `k`.
pub const MAX_K: i64 = 64;

/// The `approx_top_k` aggregate function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ApproxTopK {
    signature: Signature,
}

impl Default for ApproxTopK {
    fn default() -> Self {
        ApproxTopK { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

/// The result type: `list<struct {value: string, count: int64}>`.
pub fn result_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Struct(item_fields()), true)))
}

fn item_fields() -> Fields {
    Fields::from(vec![Field::new("value", DataType::Utf8, false), Field::new("count", DataType::Int64, false)])
}

impl AggregateUDFImpl for ApproxTopK {
    fn name(&self) -> &str {
        NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [_, k] if k.is_integer() || *k == DataType::Null => Ok(vec![DataType::Utf8, DataType::Int64]),
            [_, k] => plan_err!("{NAME}(value, k): k must be an integer literal, got {k}"),
            _ => plan_err!("{NAME}(value, k) takes 2 arguments, got {}", arg_types.len()),
        }
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(result_type())
    }
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let k = match super::literal_arg(&args, 1) {
            Some(ScalarValue::Int64(Some(k))) if (1..=MAX_K).contains(&k) => k as usize,
            _ => return plan_err!("{NAME}(value, k): k must be an integer literal in 1..={MAX_K}"),
        };
        TopKAccumulator::new(k).map(|a| Box::new(a) as Box<dyn Accumulator>)
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format_state_name(args.name, "sketch"), DataType::Binary, true))])
    }
}

/// A frequent-items sketch of the values seen.
#[derive(Debug)]
pub struct TopKAccumulator {
    k: usize,
    sketch: FrequentItemsSketch<String>,
}

impl TopKAccumulator {
    pub fn new(k: usize) -> Result<Self> {
        match FrequentItemsSketch::new(MAX_MAP_SIZE) {
            Ok(sketch) => Ok(TopKAccumulator { k, sketch }),
            Err(e) => internal_err!("{NAME}: {e}"),
        }
    }

    /// The `k` most frequent values, most frequent first (ties by value).
    pub fn top(&self) -> Vec<(String, u64)> {
        let mut rows: Vec<(String, u64)> = self.sketch.frequent_items(ErrorType::NoFalseNegatives).into_iter().map(|r| (r.item().clone(), r.estimate())).collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(self.k);
        rows
    }

    /// Every estimate is within this many counts of the true count.
    pub fn maximum_error(&self) -> u64 {
        self.sketch.maximum_error()
    }
}

impl Accumulator for TopKAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(v) = values.first() else { return internal_err!("{NAME}: no input") };
        let v = v.as_string::<i32>();
        for i in 0..v.len() {
            if v.is_valid(i) {
                self.sketch.update_ref(v.value(i));
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let top = self.top();
        let values = arrow_array::StringArray::from_iter_values(top.iter().map(|(v, _)| v.as_str()));
        let counts = arrow_array::Int64Array::from_iter_values(top.iter().map(|(_, c)| *c as i64));
        let items = arrow_array::StructArray::new(item_fields(), vec![Arc::new(values) as ArrayRef, Arc::new(counts)], None);
        Ok(datafusion_common::utils::SingleRowListArrayBuilder::new(Arc::new(items)).build_list_scalar())
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.sketch.current_map_capacity() * 48
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.sketch.serialize()))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(s) = states.first() else { return internal_err!("{NAME}: no state") };
        let s = s.as_binary::<i32>();
        for i in 0..s.len() {
            if s.is_valid(i) {
                match FrequentItemsSketch::<String>::deserialize(s.value(i)) {
                    Ok(other) => self.sketch.merge(&other),
                    Err(e) => return internal_err!("{NAME}: unreadable sketch state: {e}"),
                }
            }
        }
        Ok(())
    }
}

