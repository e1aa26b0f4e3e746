//! Alerts on a pipeline's final output rows (stream 0).
//!
//! - **Threshold**: the value of `column` is above `above` or below `below`.
//! - **Baseline**: the value is more than `baseline_k` standard deviations from the mean
//!   of the key's previous `trailing` values, once at least `min_samples` of them exist
//!   (a z-score test on a trailing window, as in the "anomaly detection" chapter of the
//!   source book, ch. 9). The value then joins the trailing window.
//!
//! Each alert carries its evidence: the value, the baseline mean and standard deviation,
//! the sample count, the rule and the row's window. Alerts go to the `alerts` topic and
//! the pipeline's live stream. State (checkpointed): per rule and key, the trailing values.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, BooleanBuilder, Float64Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::operator::{Ctx, Operator, OperatorStats, Rows, SideOutput};
use crate::state::{StateWriter, KEY, TOMBSTONE};
use crate::StreamError;

fn min_samples() -> usize {
    10
}

fn trailing() -> usize {
    60
}

/// One alert rule of a pipeline (`[[pipelines.alerts]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub name: String,
    /// The numeric output column checked.
    pub column: String,
    /// Threshold: alert when the value is greater than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Threshold: alert when the value is less than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Baseline: alert when |value − mean| > k × stddev of the key's trailing values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_k: Option<f64>,
    /// Baseline: trailing values needed before the rule can fire.
    #[serde(default = "min_samples")]
    pub min_samples: usize,
    /// Baseline: how many trailing values per key form the baseline.
    #[serde(default = "trailing")]
    pub trailing: usize,
    /// Output columns identifying the key. Default: the output's string columns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_columns: Vec<String>,
}

impl AlertRule {
    /// Checks the rule against the pipeline's output schema.
    pub fn check(&self, output: &Schema) -> Result<(), String> {
        let f = output.field_with_name(&self.column).map_err(|_| format!("alert {:?}: the output has no column {:?}", self.name, self.column))?;
        if !f.data_type().is_numeric() {
            return Err(format!("alert {:?}: column {:?} is {}, not a number", self.name, self.column, f.data_type()));
        }
        if self.above.is_none() && self.below.is_none() && self.baseline_k.is_none() {
            return Err(format!("alert {:?}: set above, below or baseline_k", self.name));
        }
        if self.baseline_k.is_some_and(|k| k <= 0.0) || self.trailing < 2 || self.min_samples < 2 || self.min_samples > self.trailing {
            return Err(format!("alert {:?}: baseline_k must be > 0 and 2 <= min_samples <= trailing", self.name));
        }
        for k in &self.key_columns {
            output.field_with_name(k).map_err(|_| format!("alert {:?}: key column {k:?} is not in the output", self.name))?;
        }
        Ok(())
    }
}

/// Mean and sample standard deviation.
pub fn mean_stddev(values: &VecDeque<f64>) -> (f64, f64) {
    let n = values.len() as f64;
    if n == 0.0 {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n;
    if n < 2.0 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Applies alert rules to final rows; passes every row on unchanged.
pub struct Alerts {
    pipeline: String,
    rules: Vec<AlertRule>,
    /// (rule index, key display) → trailing values.
    trailing: HashMap<(usize, String), VecDeque<f64>>,
    dirty: HashSet<(usize, String)>,
    state_schema: SchemaRef,
}

fn key_bytes(rule: usize, key: &str) -> Vec<u8> {
    let mut b = (rule as u32).to_be_bytes().to_vec();
    b.extend_from_slice(key.as_bytes());
    b
}

impl Alerts {
    pub fn new(pipeline: &str, rules: Vec<AlertRule>) -> Self {
        let schema = Schema::new(vec![
            Field::new(KEY, DataType::Binary, false),
            Field::new(TOMBSTONE, DataType::Boolean, false),
            Field::new("values", DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))), true),
        ]);
        Alerts { pipeline: pipeline.into(), rules, trailing: HashMap::new(), dirty: HashSet::new(), state_schema: Arc::new(schema) }
    }

    fn check_batch(&mut self, batch: &RecordBatch, ctx: &mut Ctx) -> Result<(), StreamError> {
        let schema = batch.schema();
        let window = |name: &str| batch.column_by_name(name).and_then(|c| c.as_primitive_opt::<TimestampMillisecondType>().cloned());
        let (ws, we) = (window("window_start"), window("window_end"));
        for (ri, rule) in self.rules.iter().enumerate() {
            let Some(col) = batch.column_by_name(&rule.column) else { continue };
            let values = arrow_cast::cast(col, &DataType::Float64).map_err(|e| StreamError::Eval(e.to_string()))?;
            let values = values.as_primitive::<Float64Type>();
            let key_cols: Vec<(String, ArrayRef)> = if rule.key_columns.is_empty() {
                schema.fields().iter().zip(batch.columns()).filter(|(f, _)| f.data_type() == &DataType::Utf8).map(|(f, c)| (f.name().clone(), c.clone())).collect()
            } else {
                rule.key_columns.iter().filter_map(|k| batch.column_by_name(k).map(|c| (k.clone(), c.clone()))).collect()
            };
            let options = arrow_cast::display::FormatOptions::default();
            let formatters = key_cols.iter().map(|(_, c)| arrow_cast::display::ArrayFormatter::try_new(c.as_ref(), &options)).collect::<Result<Vec<_>, _>>().map_err(|e| StreamError::Eval(e.to_string()))?;
            for i in 0..batch.num_rows() {
                if values.is_null(i) {
                    continue;
                }
                let v = values.value(i);
                let mut key = Map::new();
                for ((name, _), f) in key_cols.iter().zip(&formatters) {
                    key.insert(name.clone(), Value::String(f.value(i).to_string()));
                }
                let key_text = Value::Object(key.clone()).to_string();
                let mut evidence = None;
                if let Some(t) = rule.above.filter(|t| v > *t) {
                    evidence = Some(json!({"kind": "threshold", "threshold": t, "direction": "above"}));
                } else if let Some(t) = rule.below.filter(|t| v < *t) {
                    evidence = Some(json!({"kind": "threshold", "threshold": t, "direction": "below"}));
                }
                if let Some(k) = rule.baseline_k {
                    let entry = self.trailing.entry((ri, key_text.clone())).or_default();
                    let (mean, sd) = mean_stddev(entry);
                    if evidence.is_none() && entry.len() >= rule.min_samples && sd > 0.0 && (v - mean).abs() > k * sd {
                        evidence = Some(json!({"kind": "baseline", "mean": mean, "stddev": sd, "samples": entry.len(), "k": k, "z": (v - mean) / sd}));
                    }
                    entry.push_back(v);
                    while entry.len() > rule.trailing {
                        entry.pop_front();
                    }
                    self.dirty.insert((ri, key_text.clone()));
                }
                if let Some(Value::Object(mut e)) = evidence {
                    e.insert("pipeline".into(), json!(self.pipeline));
                    e.insert("rule".into(), json!(rule.name));
                    e.insert("column".into(), json!(rule.column));
                    e.insert("value".into(), json!(v));
                    e.insert("key".into(), Value::Object(key));
                    let ts = |a: &Option<arrow_array::TimestampMillisecondArray>| a.as_ref().filter(|a| a.is_valid(i)).map(|a| sluice_core::time::format_ms(a.value(i)));
                    e.insert("window_start".into(), json!(ts(&ws)));
                    e.insert("window_end".into(), json!(ts(&we)));
                    e.insert("fired_at_ms".into(), json!(ctx.now_ms));
                    ctx.side.push(SideOutput::Alert(Value::Object(e)));
                }
            }
        }
        Ok(())
    }
}

impl Operator for Alerts {
    fn name(&self) -> &'static str {
        "alerts"
    }

    fn process(&mut self, input: Rows, ctx: &mut Ctx, out: &mut Vec<Rows>) -> Result<(), StreamError> {
        if input.stream == 0 && input.early.is_none() {
            self.check_batch(&input.batch, ctx)?;
        }
        out.push(input);
        Ok(())
    }

    fn snapshot(&mut self, w: &mut StateWriter) -> Result<bool, StreamError> {
        let mut key = BinaryBuilder::new();
        let mut tomb = BooleanBuilder::new();
        let mut values = ListBuilder::new(Float64Builder::new());
        for (ri, k) in self.dirty.drain() {
            key.append_value(key_bytes(ri, &k));
            tomb.append_value(false);
            let v = self.trailing.get(&(ri, k)).map(|d| d.iter().copied().collect::<Vec<_>>()).unwrap_or_default();
            values.values().append_slice(&v);
            values.append(true);
        }
        let batch = RecordBatch::try_new(self.state_schema.clone(), vec![Arc::new(key.finish()), Arc::new(tomb.finish()), Arc::new(values.finish())]).map_err(|e| StreamError::Eval(e.to_string()))?;
        w.write(batch)?;
        Ok(true)
    }

    fn restore(&mut self, files: &[Vec<RecordBatch>]) -> Result<(), StreamError> {
        for b in files.iter().flatten() {
            if b.schema().fields() != self.state_schema.fields() {
                return Err(StreamError::Eval(format!(
                    "alert baseline state: expected columns {:?}, found {:?}",
                    self.state_schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>(),
                    b.schema().fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>()
                )));
            }
            let keys = b.column(0).as_binary::<i32>();
            let tombs = b.column(1).as_boolean();
            let lists = b.column(2).as_list::<i32>();
            for r in 0..b.num_rows() {
                let k = keys.value(r);
                if k.len() < 4 {
                    continue;
                }
                let rule = u32::from_be_bytes([k[0], k[1], k[2], k[3]]) as usize;
                let text = String::from_utf8_lossy(&k[4..]).to_string();
                if tombs.value(r) || lists.is_null(r) {
                    self.trailing.remove(&(rule, text));
                    continue;
                }
                let vals = lists.value(r);
                let Some(vals) = vals.as_primitive_opt::<Float64Type>() else { continue };
                self.trailing.insert((rule, text), vals.values().iter().copied().collect());
            }
        }
        Ok(())
    }

    fn stats(&self) -> OperatorStats {
        OperatorStats { keys: self.trailing.len() as u64, ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_statistics() {
        let v: VecDeque<f64> = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0].into_iter().collect();
        let (m, sd) = mean_stddev(&v);
        assert_eq!(m, 5.0);
        assert!((sd - 2.138).abs() < 1e-3);
    }

    #[test]
    fn baselines_survive_a_snapshot_and_foreign_state_is_an_error() {
        let mut a = Alerts::new("p", Vec::new());
        for (k, vals) in [((0, "{\"k\":\"x\"}".to_string()), vec![1.0, 2.5]), ((1, "{}".to_string()), vec![7.0])] {
            a.trailing.insert(k.clone(), vals.into_iter().collect());
            a.dirty.insert(k);
        }
        let mut w = StateWriter::default();
        assert!(a.snapshot(&mut w).unwrap());
        let mut b = Alerts::new("p", Vec::new());
        b.restore(std::slice::from_ref(&w.batches)).unwrap();
        assert_eq!(b.trailing, a.trailing);

        let foreign = RecordBatch::try_from_iter([("k", Arc::new(arrow_array::Int64Array::from(vec![1])) as ArrayRef)]).unwrap();
        let e = Alerts::new("p", Vec::new()).restore(&[vec![foreign]]).unwrap_err().to_string();
        assert!(e.contains("alert baseline state") && e.contains("k Int64"), "{e}");
    }
}
