//! Alerts on a pipeline's final output rows (stream 0).
//!
//! - **Threshold**: the value of `column` is above `above` or below `below`.
//! - **Baseline**: the value is more than `baseline_k` standard deviations from the mean
//!   of the key's previous `trailing` values, once at least `min_samples` of them exist
//!   (a z-score test on a trailing window, as in the "anomaly detection" chapter of the
//!   source book, ch. 9). The value then joins the trailing window.
//!
//! An alert has a `state`, as in Prometheus' Alertmanager: it is `firing` at the first
//! row of a key that breaks the rule, and `resolved` at the key's next row that keeps it
//! again (with `fired_at_ms` of the firing and `resolved_at_ms`). Rows that break the rule
//! while it already fires raise nothing new.
//!
//! Each alert carries its evidence: the value, the baseline mean and standard deviation,
//! the sample count, the rule and the row's window. Alerts go to the `alerts` topic and
//! the pipeline's live stream. State (checkpointed): per rule and key, the trailing values
//! and, while it fires, the firing time.
//!
//! State file columns: `key` (binary: rule index as u32 big-endian, then the key's JSON),
//! `tombstone` (bool), `values` (list of f64, the trailing values; null: none) and
//! `firing_since_ms` (i64, null: not firing). Files written before alerts had a state
//! lack `firing_since_ms` and are still read.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
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
    /// (rule index, key display) → when its alert fired (ms since the epoch), while it fires.
    firing: HashMap<(usize, String), i64>,
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
            Field::new("firing_since_ms", DataType::Int64, true),
        ]);
        Alerts { pipeline: pipeline.into(), rules, trailing: HashMap::new(), firing: HashMap::new(), dirty: HashSet::new(), state_schema: Arc::new(schema) }
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
                let id = (ri, key_text);
                let fired_at = self.firing.get(&id).copied();
                let (state, mut e) = match (evidence, fired_at) {
                    (Some(Value::Object(e)), None) => {
                        self.firing.insert(id.clone(), ctx.now_ms);
                        self.dirty.insert(id);
                        ("firing", e)
                    }
                    (None, Some(since)) => {
                        self.firing.remove(&id);
                        self.dirty.insert(id);
                        let mut e = Map::new();
                        e.insert("kind".into(), json!(if rule.baseline_k.is_some() && rule.above.is_none() && rule.below.is_none() { "baseline" } else { "threshold" }));
                        e.insert("fired_at_ms".into(), json!(since));
                        e.insert("resolved_at_ms".into(), json!(ctx.now_ms));
                        ("resolved", e)
                    }
                    _ => continue,
                };
                e.insert("state".into(), json!(state));
                e.insert("pipeline".into(), json!(self.pipeline));
                e.insert("rule".into(), json!(rule.name));
                e.insert("column".into(), json!(rule.column));
                e.insert("value".into(), json!(v));
                e.insert("key".into(), Value::Object(key));
                let ts = |a: &Option<arrow_array::TimestampMillisecondArray>| a.as_ref().filter(|a| a.is_valid(i)).map(|a| sluice_core::time::format_ms(a.value(i)));
                e.insert("window_start".into(), json!(ts(&ws)));
                e.insert("window_end".into(), json!(ts(&we)));
                e.entry("fired_at_ms").or_insert(json!(ctx.now_ms));
                ctx.side.push(SideOutput::Alert(Value::Object(e)));
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
        let mut since = Int64Builder::new();
        for id in self.dirty.drain() {
            key.append_value(key_bytes(id.0, &id.1));
            let trailing = self.trailing.get(&id);
            let firing = self.firing.get(&id).copied();
            tomb.append_value(trailing.is_none() && firing.is_none());
            match trailing {
                Some(d) => {
                    values.values().extend(d.iter().map(|v| Some(*v)));
                    values.append(true);
                }
                None => values.append(false),
            }
            since.append_option(firing);
        }
        let columns: Vec<ArrayRef> = vec![Arc::new(key.finish()), Arc::new(tomb.finish()), Arc::new(values.finish()), Arc::new(since.finish())];
        let batch = RecordBatch::try_new(self.state_schema.clone(), columns).map_err(|e| StreamError::Eval(e.to_string()))?;
        w.write(batch)?;
        Ok(true)
    }

    fn restore(&mut self, files: &[Vec<RecordBatch>]) -> Result<(), StreamError> {
        for b in files.iter().flatten() {
            // The first three columns are the same in files from before `firing_since_ms`.
            let fields = b.schema().fields().clone();
            let known = fields.len() <= self.state_schema.fields().len() && fields.len() >= 3 && fields.iter().zip(self.state_schema.fields()).all(|(a, b)| a == b);
            if !known {
                return Err(StreamError::Eval(format!(
                    "alert baseline state: expected columns {:?}, found {:?}",
                    self.state_schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>(),
                    b.schema().fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>()
                )));
            }
            let keys = b.column(0).as_binary::<i32>();
            let tombs = b.column(1).as_boolean();
            let lists = b.column(2).as_list::<i32>();
            let since = b.columns().get(3).and_then(|c| c.as_primitive_opt::<Int64Type>());
            for r in 0..b.num_rows() {
                let k = keys.value(r);
                if k.len() < 4 {
                    continue;
                }
                let id = (u32::from_be_bytes([k[0], k[1], k[2], k[3]]) as usize, String::from_utf8_lossy(&k[4..]).to_string());
                match since.filter(|s| !tombs.value(r) && s.is_valid(r)) {
                    Some(s) => self.firing.insert(id.clone(), s.value(r)),
                    None => self.firing.remove(&id),
                };
                if tombs.value(r) || lists.is_null(r) {
                    self.trailing.remove(&id);
                    continue;
                }
                let vals = lists.value(r);
                let Some(vals) = vals.as_primitive_opt::<Float64Type>() else { continue };
                self.trailing.insert(id, vals.values().iter().copied().collect());
            }
        }
        Ok(())
    }

    fn stats(&self) -> OperatorStats {
        OperatorStats { keys: self.trailing.len() as u64, firing_alerts: self.firing.len() as u64, ..Default::default() }
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

    fn rule(above: f64) -> AlertRule {
        AlertRule { name: "hot".into(), column: "v".into(), above: Some(above), below: None, baseline_k: None, min_samples: 10, trailing: 60, key_columns: Vec::new() }
    }

    /// Feeds (key, value) rows at `now_ms`; returns (state, key) of the alerts raised.
    fn feed(a: &mut Alerts, now_ms: i64, rows: &[(&str, f64)]) -> Vec<(String, String)> {
        let batch = RecordBatch::try_from_iter([
            ("k", Arc::new(arrow_array::StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())) as ArrayRef),
            ("v", Arc::new(arrow_array::Float64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())) as ArrayRef),
        ])
        .unwrap();
        let mut side = Vec::new();
        let mut ctx = Ctx { now_ms, watermark_ms: 0, caught_up: false, side: &mut side };
        a.check_batch(&batch, &mut ctx).unwrap();
        side.into_iter()
            .map(|s| match s {
                SideOutput::Alert(v) => (v["state"].as_str().unwrap().to_string(), v["key"]["k"].as_str().unwrap().to_string()),
                _ => panic!("not an alert"),
            })
            .collect()
    }

    #[test]
    fn an_alert_fires_once_then_resolves_and_its_state_survives_a_snapshot() {
        let pair = |s: &str, k: &str| (s.to_string(), k.to_string());
        let mut a = Alerts::new("p", vec![rule(100.0)]);
        assert_eq!(feed(&mut a, 1, &[("x", 150.0), ("y", 50.0)]), [pair("firing", "x")]);
        assert!(feed(&mut a, 2, &[("x", 160.0)]).is_empty(), "still firing: nothing new");
        assert_eq!(a.stats().firing_alerts, 1);
        let mut w = StateWriter::default();
        a.snapshot(&mut w).unwrap();
        let mut b = Alerts::new("p", vec![rule(100.0)]);
        b.restore(std::slice::from_ref(&w.batches)).unwrap();
        assert_eq!(b.firing, a.firing);
        assert!(feed(&mut b, 3, &[("x", 170.0)]).is_empty(), "a restored alert still fires");
        let mut side = Vec::new();
        let mut ctx = Ctx { now_ms: 4, watermark_ms: 0, caught_up: false, side: &mut side };
        let batch = RecordBatch::try_from_iter([("k", Arc::new(arrow_array::StringArray::from(vec!["x"])) as ArrayRef), ("v", Arc::new(arrow_array::Float64Array::from(vec![90.0])) as ArrayRef)]).unwrap();
        b.check_batch(&batch, &mut ctx).unwrap();
        let SideOutput::Alert(resolved) = &side[0] else { panic!() };
        assert_eq!((resolved["state"].as_str(), resolved["fired_at_ms"].as_i64(), resolved["resolved_at_ms"].as_i64()), (Some("resolved"), Some(1), Some(4)));
        assert_eq!(b.stats().firing_alerts, 0);
        // The resolution reaches the state as a tombstone: a restore forgets the alert.
        let mut w = StateWriter::default();
        b.snapshot(&mut w).unwrap();
        a.restore(std::slice::from_ref(&w.batches)).unwrap();
        assert!(a.firing.is_empty());
        assert_eq!(feed(&mut a, 5, &[("x", 101.0)]), [pair("firing", "x")], "fires again");
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
