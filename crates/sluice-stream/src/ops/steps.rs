//! Stateless relational steps (filters, projections, column selection) as an operator.
//! Per-row side data (event time, source origin, early-result keys) follows the rows
//! through filters.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array};
use arrow_schema::SchemaRef;
use arrow_select::filter::{filter, filter_record_batch, prep_null_mask_filter};

use crate::operator::{Ctx, Early, Operator, Rows};
use crate::sql::plan::Step;
use crate::StreamError;

fn df(e: datafusion_common::DataFusionError) -> StreamError {
    StreamError::Eval(e.to_string())
}

fn arrow(e: arrow_schema::ArrowError) -> StreamError {
    StreamError::Eval(e.to_string())
}

/// Applies one step to rows.
pub fn apply(step: &Step, mut rows: Rows) -> Result<Rows, StreamError> {
    let n = rows.batch.num_rows();
    match step {
        Step::Select { indices, schema } => {
            let columns: Vec<ArrayRef> = indices.iter().map(|&i| rows.batch.column(i).clone()).collect();
            rows.batch = batch(schema, columns, n)?;
        }
        Step::Project { exprs, schema } => {
            let columns = exprs.iter().map(|e| e.evaluate(&rows.batch).and_then(|v| v.into_array(n))).collect::<Result<Vec<_>, _>>().map_err(df)?;
            rows.batch = batch(schema, columns, n)?;
        }
        Step::Filter(predicate) => {
            let mask = predicate.evaluate(&rows.batch).and_then(|v| v.into_array(n)).map_err(df)?;
            let Some(mask) = mask.as_any().downcast_ref::<BooleanArray>() else {
                return Err(StreamError::Eval(format!("a filter produced {} instead of booleans", mask.data_type())));
            };
            let mask = if mask.null_count() > 0 { prep_null_mask_filter(mask) } else { mask.clone() };
            if mask.true_count() == n {
                return Ok(rows);
            }
            rows.batch = filter_record_batch(&rows.batch, &mask).map_err(arrow)?;
            if let Some(t) = &rows.event_ms {
                rows.event_ms = Some(downcast::<Int64Array>(filter(t, &mask).map_err(arrow)?)?);
            }
            if let Some(o) = &rows.origin {
                rows.origin = Some(downcast::<UInt32Array>(filter(o, &mask).map_err(arrow)?)?);
            }
            if let Some(e) = &rows.early {
                let row_key = downcast::<UInt32Array>(filter(&e.row_key, &mask).map_err(arrow)?)?;
                rows.early = Some(Early { keys: e.keys.clone(), row_key });
            }
        }
    }
    Ok(rows)
}

fn downcast<T: Array + Clone + 'static>(a: ArrayRef) -> Result<T, StreamError> {
    a.as_any().downcast_ref::<T>().cloned().ok_or_else(|| StreamError::Eval("unexpected array type".into()))
}

/// A batch of `schema`, keeping the row count when there are no columns.
fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>, n: usize) -> Result<RecordBatch, StreamError> {
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(n));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(arrow)
}

/// Runs a list of steps on every batch.
pub struct Steps {
    steps: Arc<Vec<Step>>,
}

impl Steps {
    pub fn new(steps: Vec<Step>) -> Self {
        Steps { steps: Arc::new(steps) }
    }
}

impl Operator for Steps {
    fn name(&self) -> &'static str {
        "steps"
    }

    fn process(&mut self, mut input: Rows, _ctx: &mut Ctx, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        for step in self.steps.iter() {
            input = apply(step, input)?;
            if input.num_rows() == 0 {
                return Ok(());
            }
        }
        out.push(input);
        Ok(())
    }
}
