//! A pipeline's declaration ([`PipelineSpec`]: its SQL and options, as written in the
//! config's `[[pipelines]]` or sent to `POST /v1/pipelines`) and how it becomes a chain of
//! operators ([`build`]). Adding an operator touches this file only.

use std::sync::Arc;

use arrow_schema::{DataType, SchemaRef};
use serde::{Deserialize, Serialize};
use sluice_core::schema::{FieldSpec, FieldType, RecordSchema};

use crate::operator::{Chain, Operator};
use crate::ops::alerts::{AlertRule, Alerts};
use crate::ops::steps::Steps;
use crate::ops::aligned::AlignedAggregate;
use crate::ops::window_agg::{WatermarkMode, WindowAggregate, WindowOptions};
use crate::sql::{self, Catalog, PipelinePlan, SqlError};
use crate::window::WindowKind;

fn ten_seconds() -> i64 {
    10_000
}

fn one_day() -> i64 {
    86_400_000
}

fn yes() -> bool {
    true
}

fn forever() -> i64 {
    -1
}

/// Where a new pipeline starts reading its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// From the log start offset (everything retained).
    #[default]
    Earliest,
    /// From the high watermark when the pipeline is created.
    Latest,
}

/// A coarser resolution of a tumbling pipeline (`rollups = [{size_ms = 60000}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupSpec {
    /// Window size, ms: a whole multiple of the previous level's.
    pub size_ms: i64,
    /// Keep this level's lake partitions this long, ms (-1: forever).
    #[serde(default = "forever")]
    pub retention_ms: i64,
    /// Table and topic name. Default: `<pipeline>_<size>` such as `hr_1m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A declared pipeline. Times in ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Names the pipeline, its lake table and its output topic.
    pub name: String,
    /// The SELECT query (a `CREATE PIPELINE name AS` prefix is accepted too).
    pub sql: String,
    /// `per_partition` (default) or `per_key` event-time clocks.
    #[serde(default)]
    pub watermark: WatermarkMode,
    /// How far the watermark trails the latest event time.
    #[serde(default = "ten_seconds")]
    pub max_out_of_orderness_ms: i64,
    /// How long after a window's end records still update it.
    #[serde(default)]
    pub allowed_lateness_ms: i64,
    /// Count resent records (same key and event time) once.
    #[serde(default)]
    pub dedup: bool,
    /// `per_key`: fire an idle key's windows after this much processing time while
    /// caught up; `per_partition`: an idle partition stops holding the watermark back.
    /// Default: `[stream] idle_timeout_ms`. 0: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<i64>,
    /// Forget keys without open windows after this much processing time (0: never).
    #[serde(default = "one_day")]
    pub state_ttl_ms: i64,
    /// Coarser tumbling levels computed from this one's accumulator state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollups: Vec<RollupSpec>,
    /// Alert rules on the output rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertRule>,
    /// Where a new pipeline starts reading.
    #[serde(default)]
    pub start: StartPosition,
    /// Write the output to the lake table `<name>`.
    #[serde(default = "yes")]
    pub lake: bool,
    /// Write the output to the topic `<name>`.
    #[serde(default = "yes")]
    pub topic: bool,
    /// Keep the lake table's date partitions this long (-1: forever).
    #[serde(default = "forever")]
    pub retention_ms: i64,
    /// Compute early results of open windows even when no live view asks for them.
    #[serde(default)]
    pub early_results: bool,
}

impl PipelineSpec {
    /// A pipeline with default options.
    pub fn new(name: &str, sql: &str) -> Self {
        serde_json::from_value(serde_json::json!({"name": name, "sql": sql})).unwrap_or_else(|_| unreachable!("defaults deserialize"))
    }

    /// The query without a `CREATE PIPELINE … AS` prefix.
    pub fn query(&self) -> Result<String, String> {
        match sql::parse_create_pipeline(&self.sql) {
            None => Ok(self.sql.trim().trim_end_matches(';').to_string()),
            Some(Ok((name, q))) if name == self.name => Ok(q),
            Some(Ok((name, _))) => Err(format!("the SQL creates pipeline {name:?} but the pipeline is named {:?}", self.name)),
            Some(Err(e)) => Err(e),
        }
    }

    /// A stable fingerprint of everything that shapes the pipeline's state: state in a
    /// checkpoint is reused only by the same fingerprint (FNV-1a, 64 bits, hex).
    pub fn fingerprint(&self) -> String {
        let shape = serde_json::json!({
            "sql": self.query().unwrap_or_default(), "watermark": self.watermark, "ooo": self.max_out_of_orderness_ms,
            "lateness": self.allowed_lateness_ms, "dedup": self.dedup,
            "rollups": self.rollups.iter().map(|r| r.size_ms).collect::<Vec<_>>(),
            "alerts": self.alerts,
        });
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in shape.to_string().bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// Table/topic names of the output streams: the base, then each rollup level.
    pub fn stream_names(&self) -> Vec<String> {
        let mut names = vec![self.name.clone()];
        for r in &self.rollups {
            names.push(r.name.clone().unwrap_or_else(|| format!("{}_{}", self.name, WindowKind::label(r.size_ms))));
        }
        names
    }

    /// Lake retention per output stream, ms.
    pub fn stream_retention(&self) -> Vec<i64> {
        std::iter::once(self.retention_ms).chain(self.rollups.iter().map(|r| r.retention_ms)).collect()
    }

    /// The dead-letter topic of records that arrived too late.
    pub fn late_topic(&self) -> String {
        format!("{}.late", self.name)
    }
}

/// Name of the topic every pipeline's alerts go to.
pub const ALERTS_TOPIC: &str = "alerts";

/// Why a pipeline cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Sql(#[from] SqlError),
    #[error("pipeline {name:?}: {reason}")]
    Invalid { name: String, reason: String },
}

/// Checks a pipeline name: 1–200 characters of `[a-zA-Z0-9_-]`, as topic names allow.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("pipeline name {name:?} must be 1 to 200 characters of letters, digits, '_' and '-'"));
    }
    Ok(())
}

/// A planned pipeline, ready to run.
#[derive(Debug, Clone)]
pub struct Planned {
    pub spec: PipelineSpec,
    pub plan: Arc<PipelinePlan>,
    pub fingerprint: String,
}

/// Plans a pipeline and checks its options.
pub fn plan(spec: &PipelineSpec, catalog: &Catalog) -> Result<Planned, SpecError> {
    let invalid = |reason: String| SpecError::Invalid { name: spec.name.clone(), reason };
    check_name(&spec.name).map_err(invalid)?;
    let query = spec.query().map_err(invalid)?;
    let plan = sql::plan(&query, catalog)?;
    // Surface what DataFusion only checks when an accumulator is made (unsupported
    // argument types, non-literal parameters) now, not when the first record arrives.
    for a in plan.window.iter().flat_map(|w| w.aggs.iter()) {
        if let Err(e) = a.expr.create_accumulator() {
            let msg = e.strip_backtrace().replace("This feature is not implemented: ", "");
            return Err(SpecError::Sql(SqlError::at_word(format!("{}: {msg}", a.expr.name()), &query, a.expr.fun().name())));
        }
    }
    if spec.max_out_of_orderness_ms < 0 || spec.allowed_lateness_ms < 0 || spec.state_ttl_ms < 0 || spec.idle_timeout_ms.is_some_and(|t| t < 0) {
        return Err(invalid("times must not be negative".into()));
    }
    if !spec.rollups.is_empty() {
        let Some(WindowKind::Tumble { size_ms }) = plan.window.as_ref().map(|w| w.kind) else {
            return Err(invalid("rollups need a TUMBLE window".into()));
        };
        let mut prev = size_ms;
        for r in &spec.rollups {
            if r.size_ms <= prev || r.size_ms % prev != 0 {
                return Err(invalid(format!("rollup size {} ms must be a larger whole multiple of {prev} ms", r.size_ms)));
            }
            prev = r.size_ms;
        }
        let names = spec.stream_names();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != names.len() {
            return Err(invalid(format!("output names repeat: {names:?}")));
        }
    }
    for a in &spec.alerts {
        a.check(&plan.output_schema).map_err(invalid)?;
    }
    if plan.window.is_none() && (spec.dedup || spec.watermark == WatermarkMode::PerKey) {
        return Err(invalid("dedup and per_key watermarks need a windowed query (TUMBLE, HOP or SESSION)".into()));
    }
    Ok(Planned { fingerprint: spec.fingerprint(), spec: spec.clone(), plan: Arc::new(plan) })
}

/// The operator chain of a planned pipeline: steps before the aggregate, the windowed
/// aggregate, steps after it, alerts.
pub fn build_chain(p: &Planned, default_idle_timeout_ms: i64) -> Result<Chain, crate::StreamError> {
    let mut ops: Vec<Box<dyn Operator>> = vec![Box::new(Steps::new(p.plan.pre.clone()))];
    if let Some(w) = &p.plan.window {
        let opts = WindowOptions {
            watermark: p.spec.watermark,
            out_of_orderness_ms: p.spec.max_out_of_orderness_ms,
            lateness_ms: p.spec.allowed_lateness_ms,
            dedup: p.spec.dedup,
            idle_timeout_ms: p.spec.idle_timeout_ms.unwrap_or(default_idle_timeout_ms),
            state_ttl_ms: p.spec.state_ttl_ms,
            rollups: p.spec.rollups.iter().map(|r| r.size_ms).collect(),
        };
        if AlignedAggregate::fits(w, opts.watermark == WatermarkMode::PerPartition, opts.dedup) {
            ops.push(Box::new(AlignedAggregate::new(Arc::new(w.clone()), opts.lateness_ms, opts.rollups)?));
        } else {
            ops.push(Box::new(WindowAggregate::new(Arc::new(w.clone()), opts)?));
        }
        ops.push(Box::new(Steps::new(p.plan.post.clone())));
    }
    if !p.spec.alerts.is_empty() {
        ops.push(Box::new(Alerts::new(&p.spec.name, p.spec.alerts.clone())));
    }
    Ok(Chain { ops })
}

/// The schema other pipelines read an output topic with: its scalar columns (timestamps
/// as RFC 3339 text), with `window_start` as the event time when present.
pub fn derived_schema(output: &SchemaRef) -> Option<RecordSchema> {
    let mut fields = Vec::new();
    for f in output.fields() {
        let ty = match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => FieldType::String,
            t if t.is_integer() => FieldType::Int,
            t if t.is_floating() || matches!(t, DataType::Decimal128(_, _)) => FieldType::Float,
            DataType::Boolean => FieldType::Bool,
            DataType::Timestamp(_, _) => FieldType::Timestamp,
            _ => continue,
        };
        if f.name().starts_with('_') {
            continue;
        }
        fields.push(FieldSpec::new(f.name(), ty));
    }
    if fields.is_empty() {
        return None;
    }
    let event_time = fields.iter().find(|f| f.name == "window_start" && f.ty == FieldType::Timestamp).map(|f| f.name.clone());
    let schema = RecordSchema { fields, event_time, key: None };
    schema.check().ok().map(|_| schema)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_prefix_and_fingerprint() {
        let mut s = PipelineSpec::new("hr_1m", "CREATE PIPELINE hr_1m AS SELECT 1;");
        assert_eq!(s.query().unwrap(), "SELECT 1");
        let fp = s.fingerprint();
        s.dedup = true;
        assert_ne!(fp, s.fingerprint());
        s.sql = "CREATE PIPELINE other AS SELECT 1".into();
        assert!(s.query().is_err());
        assert_eq!(PipelineSpec::new("x", "SELECT 1").fingerprint(), PipelineSpec::new("y", "SELECT 1").fingerprint());
    }

    #[test]
    fn names() {
        let mut s = PipelineSpec::new("hr", "SELECT 1");
        s.rollups = vec![RollupSpec { size_ms: 60_000, retention_ms: -1, name: None }, RollupSpec { size_ms: 3_600_000, retention_ms: -1, name: Some("hourly".into()) }];
        assert_eq!(s.stream_names(), vec!["hr", "hr_1m", "hourly"]);
        assert!(check_name("a b").is_err());
    }
}
