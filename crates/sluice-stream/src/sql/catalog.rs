//! What pipeline SQL can name: topics with declared schemas as tables, the window table
//! functions `TUMBLE`, `HOP` and `SESSION`, and the scalar and aggregate functions of
//! [`crate::functions`]. Implements DataFusion's `ContextProvider` for its SQL planner.
//!
//! A topic's table has one column per declared field (types: `string` → Utf8, `int` →
//! Int64, `float` → Float64, `bool` → Boolean, `timestamp` → Timestamp(ms, UTC)), then
//! the record's place in the log: `_partition` (Int32), `_offset` (Int64) and `_timestamp`
//! (the record's log timestamp, Timestamp(ms, UTC)). A window table function adds
//! `window_start` and `window_end` (Timestamp(ms, UTC)).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion_common::config::ConfigOptions;
use datafusion_common::{plan_err, DataFusionError, Result, ScalarValue, TableReference};
use datafusion_expr::planner::{ContextProvider, ExprPlanner};
use datafusion_expr::{AggregateUDF, Expr, HigherOrderUDF, ScalarUDF, TableSource, WindowUDF};
use sluice_core::schema::{FieldType, RecordSchema};

use crate::functions::{self, FunctionConfig};
use crate::window::WindowKind;

/// Name of the partition column every topic table has.
pub const PARTITION_COLUMN: &str = "_partition";
/// Name of the offset column every topic table has.
pub const OFFSET_COLUMN: &str = "_offset";
/// Name of the log-timestamp column every topic table has.
pub const TIMESTAMP_COLUMN: &str = "_timestamp";
/// Columns a window table function adds.
pub const WINDOW_START: &str = "window_start";
pub const WINDOW_END: &str = "window_end";

/// Timestamp(ms, UTC): how sluice's pipelines carry instants.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The Arrow type of a declared field type.
pub fn arrow_type(t: FieldType) -> DataType {
    match t {
        FieldType::String => DataType::Utf8,
        FieldType::Int => DataType::Int64,
        FieldType::Float => DataType::Float64,
        FieldType::Bool => DataType::Boolean,
        FieldType::Timestamp => ts_type(),
    }
}

/// The Arrow schema of a topic's decoded rows: declared fields, then `_partition`,
/// `_offset`, `_timestamp`.
pub fn source_schema(record: &RecordSchema) -> SchemaRef {
    let mut fields: Vec<Field> = record.fields.iter().map(|f| Field::new(&f.name, arrow_type(f.ty), !f.required)).collect();
    fields.push(Field::new(PARTITION_COLUMN, DataType::Int32, false));
    fields.push(Field::new(OFFSET_COLUMN, DataType::Int64, false));
    fields.push(Field::new(TIMESTAMP_COLUMN, ts_type(), false));
    Arc::new(Schema::new(fields))
}

/// A window table function applied to a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowTvf {
    pub kind: WindowKind,
    /// The event-time column (a timestamp column of the topic).
    pub time_column: String,
}

/// A topic as a table (optionally windowed), as the SQL planner sees it.
#[derive(Debug)]
pub struct TopicTable {
    pub topic: String,
    pub record: RecordSchema,
    pub window: Option<WindowTvf>,
    /// For each column before the window columns, its index in the source schema. A
    /// window table function hides source columns named `window_start` or `window_end`
    /// (another pipeline's output): its own window columns take those names.
    pub source_columns: Vec<usize>,
    schema: SchemaRef,
}

impl TopicTable {
    pub fn new(topic: &str, record: RecordSchema, window: Option<WindowTvf>) -> Self {
        let base = source_schema(&record);
        let (schema, source_columns) = match &window {
            None => (base.clone(), (0..base.fields().len()).collect()),
            Some(_) => {
                let kept: Vec<usize> = (0..base.fields().len()).filter(|&i| ![WINDOW_START, WINDOW_END].contains(&base.field(i).name().as_str())).collect();
                let mut fields: Vec<Field> = kept.iter().map(|&i| base.field(i).clone()).collect();
                fields.push(Field::new(WINDOW_START, ts_type(), false));
                fields.push(Field::new(WINDOW_END, ts_type(), false));
                (Arc::new(Schema::new(fields)), kept)
            }
        };
        TopicTable { topic: topic.into(), record, window, source_columns, schema }
    }

    /// Maps a column of this table to the runner's scan input: the decoded source columns,
    /// then the two window placeholders.
    pub fn scan_index(&self, i: usize, source_len: usize) -> usize {
        match self.source_columns.get(i) {
            Some(&s) => s,
            None => source_len + (i - self.source_columns.len()),
        }
    }
}

impl TableSource for TopicTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// Topics and functions visible to pipeline SQL.
#[derive(Debug)]
pub struct Catalog {
    topics: BTreeMap<String, RecordSchema>,
    scalar: HashMap<String, Arc<ScalarUDF>>,
    aggregate: HashMap<String, Arc<AggregateUDF>>,
    planners: Vec<Arc<dyn ExprPlanner>>,
    options: ConfigOptions,
}

impl Catalog {
    /// A catalog with the given topics (name → declared schema) and every function.
    pub fn new(topics: BTreeMap<String, RecordSchema>, functions: &FunctionConfig) -> Self {
        let mut scalar = HashMap::new();
        for f in functions::scalar_functions(functions) {
            for alias in f.aliases() {
                scalar.insert(alias.clone(), f.clone());
            }
            scalar.insert(f.name().to_string(), f);
        }
        let mut aggregate = HashMap::new();
        // In order: a later function replaces an earlier one of the same name or alias.
        for f in functions::aggregate_functions() {
            for alias in f.aliases() {
                aggregate.insert(alias.clone(), f.clone());
            }
            aggregate.insert(f.name().to_string(), f);
        }
        let planners: Vec<Arc<dyn ExprPlanner>> = vec![
            Arc::new(datafusion_functions::core::planner::CoreFunctionPlanner::default()),
            Arc::new(datafusion_functions_nested::planner::FieldAccessPlanner),
            Arc::new(datafusion_functions_nested::planner::NestedFunctionPlanner),
            Arc::new(datafusion_functions_aggregate::planner::AggregateFunctionPlanner),
        ];
        Catalog { topics, scalar, aggregate, planners, options: ConfigOptions::default() }
    }

    pub fn options(&self) -> &ConfigOptions {
        &self.options
    }

    fn topic(&self, name: &str) -> Result<&RecordSchema> {
        match self.topics.get(name) {
            Some(s) => Ok(s),
            None => {
                let known: Vec<&str> = self.topics.keys().map(String::as_str).collect();
                plan_err!("no topic {name:?} with a declared schema; topics that pipelines can read: {}", known.join(", "))
            }
        }
    }
}

/// A table-function argument naming something: a column reference (`"topic"`) or a
/// string literal (`'topic'`).
fn name_arg(e: &Expr, what: &str, func: &str) -> Result<String> {
    match e {
        Expr::Column(c) => Ok(c.name.clone()),
        Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)), _) => Ok(s.clone()),
        other => plan_err!("{func}: the {what} must be a name, got {other}"),
    }
}

/// An `INTERVAL` literal in ms. Months have no fixed length and are refused.
pub fn interval_ms(e: &Expr, what: &str, func: &str) -> Result<i64> {
    let ms = match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000,
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => v.days as i64 * 86_400_000 + v.milliseconds as i64,
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(_)) | ScalarValue::IntervalYearMonth(Some(_)), _) => {
            return plan_err!("{func}: the {what} must not count months or years (they have no fixed length); use days")
        }
        other => return plan_err!("{func}: the {what} must be an INTERVAL literal such as INTERVAL '1' MINUTE, got {other}"),
    };
    if ms <= 0 {
        return plan_err!("{func}: the {what} must be positive, got {ms} ms");
    }
    Ok(ms)
}

impl ContextProvider for Catalog {
    fn get_table_source(&self, name: TableReference) -> Result<Arc<dyn TableSource>> {
        let topic = name.table();
        let record = self.topic(topic)?.clone();
        Ok(Arc::new(TopicTable::new(topic, record, None)))
    }

    fn get_table_function_source(&self, name: &str, args: Vec<Expr>) -> Result<Arc<dyn TableSource>> {
        let func = name.trim_matches('"').to_ascii_uppercase();
        let (kind, n) = match (func.as_str(), args.len()) {
            ("TUMBLE", 3) => (WindowKind::Tumble { size_ms: interval_ms(&args[2], "size", "TUMBLE")? }, 3),
            ("HOP", 4) => {
                let slide_ms = interval_ms(&args[2], "slide", "HOP")?;
                let size_ms = interval_ms(&args[3], "size", "HOP")?;
                if size_ms < slide_ms || size_ms % slide_ms != 0 {
                    return plan_err!("HOP: the size ({size_ms} ms) must be a whole multiple of the slide ({slide_ms} ms)");
                }
                (WindowKind::Hop { slide_ms, size_ms }, 4)
            }
            ("SESSION", 3) => (WindowKind::Session { gap_ms: interval_ms(&args[2], "gap", "SESSION")? }, 3),
            ("TUMBLE", _) => return plan_err!("TUMBLE(source, time_column, size) takes 3 arguments, got {}", args.len()),
            ("HOP", _) => return plan_err!("HOP(source, time_column, slide, size) takes 4 arguments, got {}", args.len()),
            ("SESSION", _) => return plan_err!("SESSION(source, time_column, gap) takes 3 arguments, got {}", args.len()),
            _ => return plan_err!("unknown table function {name}; pipelines have TUMBLE, HOP and SESSION"),
        };
        debug_assert_eq!(args.len(), n);
        let topic = name_arg(&args[0], "source", &func)?;
        let time_column = name_arg(&args[1], "time column", &func)?;
        let record = self.topic(&topic)?.clone();
        let is_ts = time_column == TIMESTAMP_COLUMN || record.field(&time_column).is_some_and(|f| f.ty == FieldType::Timestamp);
        if !is_ts {
            let ts: Vec<&str> = record.fields.iter().filter(|f| f.ty == FieldType::Timestamp).map(|f| f.name.as_str()).chain([TIMESTAMP_COLUMN]).collect();
            return plan_err!("{func}: the time column {time_column:?} is not a timestamp column of {topic:?}; its timestamp columns are {}", ts.join(", "));
        }
        Ok(Arc::new(TopicTable::new(&topic, record, Some(WindowTvf { kind, time_column }))))
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        &self.planners
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.scalar.get(name).cloned()
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.aggregate.get(name).cloned()
    }

    fn get_window_meta(&self, _name: &str) -> Option<Arc<WindowUDF>> {
        None
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        &self.options
    }

    fn udf_names(&self) -> Vec<String> {
        self.scalar.keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.aggregate.keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Wraps a planning error with context (used to keep DataFusion's message readable).
pub fn plan_error(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(msg.into())
}
