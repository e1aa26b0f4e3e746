//! From pipeline SQL to a [`PipelinePlan`]: DataFusion parses, analyzes (type coercion)
//! and optimizes the query into a logical plan; this module then lowers the plan's nodes
//! into physical expressions that the streaming operators evaluate batch by batch.
//!
//! The shapes a pipeline may take:
//!
//! ```text
//! stateless:  [Projection | Filter]* ← TableScan(topic)
//! windowed:   [Projection | Filter]* ← Aggregate ← [Projection | Filter]* ← TableScan(TUMBLE|HOP|SESSION(topic))
//! ```
//!
//! Anything else (joins, ORDER BY, LIMIT, OVER) is refused with a reason.

use std::sync::Arc;

use arrow_schema::{FieldRef, SchemaRef};
use datafusion_common::{plan_err, DFSchema, Result};
use datafusion_expr::execution_props::ExecutionProps;
use datafusion_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion_expr::{Expr, LogicalPlan};
use datafusion_optimizer::analyzer::Analyzer;
use datafusion_optimizer::optimizer::{Optimizer, OptimizerContext};
use datafusion_physical_expr::aggregate::{AggregateFunctionExpr, LoweredAggregateBuilder};
use datafusion_physical_expr::{create_physical_expr, PhysicalExpr};
use datafusion_sql::parser::{DFParser, Statement as DFStatement};
use datafusion_sql::planner::{ParserOptions, SqlToRel};
use datafusion_sql::sqlparser::ast::Statement;
use datafusion_sql::sqlparser::dialect::GenericDialect;
use sluice_core::schema::RecordSchema;

use datafusion_expr::TableSource;

use super::catalog::{self, Catalog, TopicTable, WINDOW_END, WINDOW_START};
use super::SqlError;
use crate::functions::zones;
use crate::window::WindowKind;

/// A relational step evaluated on each batch.
#[derive(Debug, Clone)]
pub enum Step {
    /// Keep the rows where the predicate is true.
    Filter(Arc<dyn PhysicalExpr>),
    /// Compute new columns.
    Project { exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef },
    /// Keep these columns of the input, in this order.
    Select { indices: Vec<usize>, schema: SchemaRef },
}

/// Where a group-by column of the aggregate output comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCol {
    /// The i-th key expression.
    Key(usize),
    WindowStart,
    WindowEnd,
}

/// One aggregate of a windowed pipeline.
#[derive(Debug, Clone)]
pub struct AggPlan {
    pub expr: Arc<AggregateFunctionExpr>,
    /// Argument expressions, then ORDER BY expressions, over the aggregate's input.
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    /// `FILTER (WHERE …)`.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// Whether this is `hr_zone_seconds` (folded on the watermark, see its docs).
    pub zone: bool,
}

/// The windowed aggregation of a pipeline.
#[derive(Debug, Clone)]
pub struct WindowPlan {
    pub kind: WindowKind,
    /// Index of the event-time column in the plan's `source_schema`.
    pub time_column: usize,
    pub time_column_name: String,
    /// Group keys (without the window columns), over the aggregate's input.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    pub key_fields: Vec<FieldRef>,
    /// The aggregate output's group-by columns, in order.
    pub group_layout: Vec<GroupCol>,
    pub aggs: Vec<AggPlan>,
    /// Schema of the aggregate's output: group-by columns, then aggregates.
    pub schema: SchemaRef,
}

/// A planned pipeline: what to read, and the steps to run on each batch.
#[derive(Debug, Clone)]
pub struct PipelinePlan {
    pub sql: String,
    /// The topic read.
    pub source: String,
    pub record: RecordSchema,
    /// Decoded source rows: declared fields, `_partition`, `_offset`, `_timestamp`.
    pub source_schema: SchemaRef,
    /// Whether the scan reads the window placeholder columns (windowed pipelines).
    pub windowed: bool,
    /// Steps from the decoded rows to the aggregate's input (or to the output).
    pub pre: Vec<Step>,
    pub window: Option<WindowPlan>,
    /// Steps from the aggregate's output to the pipeline's output.
    pub post: Vec<Step>,
    pub output_schema: SchemaRef,
}

fn optimizer() -> Optimizer {
    use datafusion_optimizer::*;
    let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![
        Arc::new(simplify_expressions::SimplifyExpressions::new()),
        Arc::new(eliminate_filter::EliminateFilter::new()),
        Arc::new(push_down_filter::PushDownFilter::new()),
        Arc::new(common_subexpr_eliminate::CommonSubexprEliminate::new()),
        Arc::new(optimize_projections::OptimizeProjections::new()),
    ];
    Optimizer::with_rules(rules)
}

/// Plans a pipeline's `SELECT`. Errors name the position (when known) and the reason.
pub fn plan(sql: &str, catalog: &Catalog) -> Result<PipelinePlan, SqlError> {
    let logical = logical_plan(sql, catalog).map_err(|e| SqlError::from_datafusion(&e, sql))?;
    lower(sql, &logical).map_err(|e| SqlError::from_datafusion(&e, sql))
}

/// Parses, analyzes and optimizes the query.
pub fn logical_plan(sql: &str, catalog: &Catalog) -> Result<LogicalPlan> {
    let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})?;
    if statements.len() != 1 {
        return plan_err!("a pipeline is one SELECT statement, got {}", statements.len());
    }
    let Some(statement) = statements.pop_front() else { return plan_err!("a pipeline is one SELECT statement, got none") };
    match &statement {
        DFStatement::Statement(s) if matches!(**s, Statement::Query(_)) => {}
        _ => return plan_err!("a pipeline is a SELECT query (the pipeline's name and options are given beside it)"),
    }
    let options = ParserOptions { collect_spans: true, map_string_types_to_utf8view: false, ..ParserOptions::new() };
    let planner = SqlToRel::new_with_options(catalog, options);
    let plan = planner.statement_to_plan(statement)?;
    let plan = Analyzer::new().execute_and_check(plan, catalog.options(), |_, _| {})?;
    optimizer().optimize(plan, &OptimizerContext::new(), |_, _| {})
}

fn unsupported(node: &LogicalPlan) -> Result<()> {
    let why = match node {
        LogicalPlan::Sort(_) => "ORDER BY has no end to wait for on an unbounded stream; sort when you query the output table",
        LogicalPlan::Limit(_) => "LIMIT has no meaning on an unbounded stream",
        LogicalPlan::Join(_) => "joins are not supported in pipelines yet",
        LogicalPlan::Union(_) => "UNION is not supported in pipelines yet",
        LogicalPlan::Window(_) => "OVER (...) window functions are not supported; window with TUMBLE, HOP or SESSION",
        LogicalPlan::Distinct(_) => "DISTINCT is not supported in pipelines; GROUP BY a window instead",
        LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => "a pipeline reads a topic: FROM \"topic\" or FROM TUMBLE(\"topic\", ...)",
        LogicalPlan::Aggregate(_) => "a pipeline has at most one GROUP BY (nested aggregation, or count(DISTINCT) over several columns, is not supported)",
        _ => "this kind of query is not supported in pipelines",
    };
    plan_err!("{why}")
}

/// Peels Projection, Filter and SubqueryAlias nodes from the top; returns them (top
/// first) and the node below.
fn peel(mut node: &LogicalPlan) -> Result<(Vec<&LogicalPlan>, &LogicalPlan)> {
    let mut peeled = Vec::new();
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                peeled.push(node);
                node = &p.input;
            }
            LogicalPlan::Filter(f) => {
                peeled.push(node);
                node = &f.input;
            }
            LogicalPlan::SubqueryAlias(a) => {
                peeled.push(node);
                node = &a.input;
            }
            LogicalPlan::Aggregate(_) | LogicalPlan::TableScan(_) => return Ok((peeled, node)),
            other => {
                unsupported(other)?;
                unreachable!("unsupported() always errs")
            }
        }
    }
}

fn is_window_col(name: &str) -> bool {
    name == WINDOW_START || name == WINDOW_END
}

fn mentions_window(e: &Expr) -> bool {
    e.column_refs().iter().any(|c| is_window_col(&c.name))
}

/// Whether `e` is just a window column (possibly aliased to itself).
fn is_window_passthrough(e: &Expr) -> bool {
    match e {
        Expr::Column(c) => is_window_col(&c.name),
        Expr::Alias(a) => is_window_col(&a.name) && is_window_passthrough(&a.expr),
        _ => false,
    }
}

fn physical(e: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    create_physical_expr(e, schema, &ExecutionProps::new(), &PhysicalPlanningContext::default())
}

/// Lowers nodes (top first) into steps (bottom first). `windowed_input`: the window
/// columns are placeholders here, so only passing them through is allowed.
fn steps(nodes: &[&LogicalPlan], windowed_input: bool) -> Result<Vec<Step>> {
    let mut out = Vec::new();
    for node in nodes.iter().rev() {
        match node {
            LogicalPlan::Projection(p) => {
                if windowed_input {
                    if let Some(e) = p.expr.iter().find(|e| mentions_window(e) && !is_window_passthrough(e)) {
                        return plan_err!("{e}: window_start and window_end are known only after GROUP BY; use them in the SELECT list of the windowed query");
                    }
                }
                let exprs = p.expr.iter().map(|e| physical(e, p.input.schema())).collect::<Result<Vec<_>>>()?;
                out.push(Step::Project { exprs, schema: Arc::new(p.schema.as_arrow().clone()) });
            }
            LogicalPlan::Filter(f) => {
                if windowed_input && mentions_window(&f.predicate) {
                    return plan_err!("WHERE {}: window_start and window_end are known only after GROUP BY; filter on them with HAVING", f.predicate);
                }
                out.push(Step::Filter(physical(&f.predicate, f.input.schema())?));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Lowers an optimized logical plan.
pub fn lower(sql: &str, logical: &LogicalPlan) -> Result<PipelinePlan> {
    let (top, below) = peel(logical)?;
    let (post_nodes, agg, pre_nodes, scan_node) = match below {
        LogicalPlan::Aggregate(a) => {
            let (pre, scan) = peel(&a.input)?;
            if let LogicalPlan::Aggregate(_) = scan {
                unsupported(scan)?;
            }
            (top, Some(a), pre, scan)
        }
        scan => (Vec::new(), None, top, scan),
    };
    let LogicalPlan::TableScan(scan) = scan_node else { return plan_err!("a pipeline reads one topic") };
    let Some(table) = (scan.source.as_ref() as &dyn std::any::Any).downcast_ref::<TopicTable>() else {
        return plan_err!("{} is not a topic", scan.table_name);
    };
    if !scan.filters.is_empty() || scan.fetch.is_some() {
        return plan_err!("internal: the scan of {} kept filters or a limit", table.topic);
    }
    let source_schema = catalog::source_schema(&table.record);
    let scan_schema = table.schema();
    let indices = scan.projection.clone().unwrap_or_else(|| (0..scan_schema.fields().len()).collect());
    let projected = Arc::new(scan_schema.project(&indices)?);
    let indices = indices.iter().map(|&i| table.scan_index(i, source_schema.fields().len())).collect();
    let mut pre = vec![Step::Select { indices, schema: projected }];
    pre.extend(steps(&pre_nodes, table.window.is_some())?);
    let window = match (agg, &table.window) {
        (None, Some(_)) => {
            return plan_err!("TUMBLE, HOP and SESSION make windows to aggregate: add GROUP BY window_start, window_end and your keys, with aggregates such as count(*)")
        }
        (Some(_), None) => {
            return plan_err!("GROUP BY needs a window, because an unbounded aggregation never emits a final row: read FROM TUMBLE(\"{}\", time_column, INTERVAL '1' MINUTE), HOP(...) or SESSION(...)", table.topic)
        }
        (None, None) => None,
        (Some(a), Some(tvf)) => {
            let input_schema = a.input.schema();
            let mut keys = Vec::new();
            let mut key_fields = Vec::new();
            let mut layout = Vec::new();
            for (i, g) in a.group_expr.iter().enumerate() {
                match g {
                    Expr::Column(c) if c.name == WINDOW_START => layout.push(GroupCol::WindowStart),
                    Expr::Column(c) if c.name == WINDOW_END => layout.push(GroupCol::WindowEnd),
                    Expr::GroupingSet(_) => return plan_err!("GROUPING SETS, ROLLUP and CUBE are not supported; declare rollups in the pipeline's options"),
                    e if mentions_window(e) => return plan_err!("GROUP BY {e}: group by window_start and window_end as they are"),
                    e => {
                        layout.push(GroupCol::Key(keys.len()));
                        keys.push(physical(e, input_schema)?);
                        key_fields.push(Arc::new(a.schema.field(i).as_ref().clone()));
                    }
                }
            }
            if !layout.iter().any(|c| matches!(c, GroupCol::WindowStart | GroupCol::WindowEnd)) {
                return plan_err!("a windowed pipeline must GROUP BY window_start, window_end (and its keys)");
            }
            let mut aggs = Vec::new();
            for e in &a.aggr_expr {
                if mentions_window(e) {
                    return plan_err!("{e}: aggregates cannot read window_start or window_end");
                }
                let props = ExecutionProps::new();
                let ctx = PhysicalPlanningContext::default();
                let lowered = LoweredAggregateBuilder::new(e, input_schema, input_schema.as_arrow(), &props, &ctx).build()?;
                let mut args = lowered.aggregate.expressions();
                args.extend(lowered.order_bys.iter().map(|s| s.expr.clone()));
                let zone = lowered.aggregate.fun().name() == zones::NAME;
                aggs.push(AggPlan { expr: lowered.aggregate, args, filter: lowered.filter, zone });
            }
            let time_column = source_schema.index_of(&tvf.time_column)?;
            Some(WindowPlan {
                kind: tvf.kind,
                time_column,
                time_column_name: tvf.time_column.clone(),
                keys,
                key_fields,
                group_layout: layout,
                aggs,
                schema: Arc::new(a.schema.as_arrow().clone()),
            })
        }
    };
    let post = steps(&post_nodes, false)?;
    Ok(PipelinePlan {
        sql: sql.to_string(),
        source: table.topic.clone(),
        record: table.record.clone(),
        source_schema,
        windowed: table.window.is_some(),
        pre,
        window,
        post,
        output_schema: Arc::new(logical.schema().as_arrow().clone()),
    })
}
