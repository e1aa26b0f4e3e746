//! The example configuration and pipeline files in `examples/pipelines` load and plan.

use std::collections::BTreeMap;
use std::path::Path;

use sluice_server::config;
use sluice_stream::pipeline::{self, PipelineSpec};
use sluice_stream::sql::Catalog;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/pipelines")
}

#[test]
fn sensors_config_loads_and_every_pipeline_plans() {
    let c = config::load(Some(&examples().join("sensors.toml")), std::iter::empty(), &[]).unwrap();
    let topics: BTreeMap<_, _> = c.topics.iter().filter_map(|t| t.schema.resolve().unwrap().map(|s| (t.name.clone(), s))).collect();
    let catalog = Catalog::new(topics, &c.heart_rate.functions());
    for p in &c.pipelines {
        pipeline::plan(p, &catalog).unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
    assert_eq!(c.pipelines[0].stream_names(), ["temp_10s", "temp_10s_1m", "temp_10s_1h"]);
}

#[test]
fn default_pipelines_and_the_issue_example_plan() {
    let c = config::load(None, std::iter::empty(), &[]).unwrap();
    let catalog = Catalog::new(BTreeMap::from([("heartbeat-raw-topic".to_string(), sluice_core::schema::heartbeat())]), &c.heart_rate.functions());
    for p in &c.pipelines {
        pipeline::plan(p, &catalog).unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
    let sql = std::fs::read_to_string(examples().join("hr_1m.sql")).unwrap();
    pipeline::plan(&PipelineSpec::new("hr_1m", &sql), &catalog).unwrap();
}
