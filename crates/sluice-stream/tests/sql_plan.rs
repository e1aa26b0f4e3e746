//! Planning pipeline SQL: window table functions, aggregates, errors with positions.

use std::collections::BTreeMap;

use sluice_stream::functions::FunctionConfig;
use sluice_stream::sql::{plan, Catalog};

fn catalog() -> Catalog {
    let mut topics = BTreeMap::new();
    topics.insert("heartbeat-raw-topic".to_string(), sluice_core::schema::heartbeat());
    Catalog::new(topics, &FunctionConfig::default())
}

#[test]
fn issue_example_plans() {
    let sql = r#"SELECT "playerId", window_start, window_end,
       avg(heartbeat) AS avg_hr, min(heartbeat) AS min_hr, max(heartbeat) AS max_hr,
       count(*) AS n, approx_percentile_cont(heartbeat, 0.95) AS p95_hr
FROM TUMBLE("heartbeat-raw-topic", "createdAt", INTERVAL '1' MINUTE)
GROUP BY "playerId", window_start, window_end"#;
    let p = plan(sql, &catalog()).unwrap_or_else(|e| panic!("{e}"));
    let w = p.window.as_ref().unwrap();
    println!("{:#?}", p.output_schema);
    assert_eq!(w.keys.len(), 1);
    assert_eq!(w.aggs.len(), 5);
    let names: Vec<&str> = p.output_schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["playerId", "window_start", "window_end", "avg_hr", "min_hr", "max_hr", "n", "p95_hr"]);
}

#[test]
fn heart_rate_plans() {
    let sql = r#"SELECT "playerId" AS player_id, window_start AS session_start,
       max("createdAt") + INTERVAL '1' SECOND AS session_end,
       hr_zone_seconds(heartbeat, "createdAt", hr_max("playerId"))['low_s'] AS low_s,
       hr_zone_seconds(heartbeat, "createdAt", hr_max("playerId"))['moderate_s'] AS moderate_s,
       hr_zone_seconds(heartbeat, "createdAt", hr_max("playerId"))['high_s'] AS high_s,
       count(*) AS samples, avg(heartbeat) AS avg_hr, min(heartbeat) AS min_hr, max(heartbeat) AS max_hr,
       hr_max("playerId") AS hr_max
FROM SESSION("heartbeat-raw-topic", "createdAt", INTERVAL '300' SECOND)
GROUP BY "playerId", window_start, window_end"#;
    let p = plan(sql, &catalog()).unwrap_or_else(|e| panic!("{e}"));
    let w = p.window.as_ref().unwrap();
    println!("aggs: {:?}", w.aggs.iter().map(|a| a.expr.name().to_string()).collect::<Vec<_>>());
    println!("{:#?}", p.output_schema);
    assert_eq!(w.aggs.iter().filter(|a| a.zone).count(), 1, "the zone aggregate is computed once");
}

#[test]
fn stateless_projection_plans() {
    let sql = r#"SELECT "playerId" AS player_id, heartbeat, "createdAt" AS created_at, _timestamp AS ingested_at, _partition AS "partition", _offset AS "offset" FROM "heartbeat-raw-topic" WHERE heartbeat > 100"#;
    let p = plan(sql, &catalog()).unwrap_or_else(|e| panic!("{e}"));
    assert!(p.window.is_none());
    let names: Vec<&str> = p.output_schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["player_id", "heartbeat", "created_at", "ingested_at", "partition", "offset"]);
}

#[test]
fn errors_name_position_and_reason() {
    let c = catalog();
    let e = plan("SELECT nope FROM \"heartbeat-raw-topic\"", &c).unwrap_err();
    println!("{e}");
    assert_eq!((e.line, e.column), (Some(1), Some(8)), "{e}");
    let e = plan("SELECT heartbeat FROM \"no-topic\"", &c).unwrap_err();
    println!("{e}");
    assert!(e.message.contains("no-topic"), "{e}");
    let e = plan("SELECT heartbeat\nFROM \"heartbeat-raw-topic\" WHERE", &c).unwrap_err();
    println!("{e}");
    assert_eq!(e.line, Some(2), "{e}");
    let e = plan("SELECT count(*) FROM \"heartbeat-raw-topic\"", &c).unwrap_err();
    println!("{e}");
    assert!(e.message.contains("window"), "{e}");
    let e = plan("SELECT heartbeat FROM \"heartbeat-raw-topic\" ORDER BY heartbeat", &c).unwrap_err();
    println!("{e}");
    assert!(e.message.contains("ORDER BY"), "{e}");
    let e = plan("SELECT window_start, count(*) FROM TUMBLE(\"heartbeat-raw-topic\", heartbeat, INTERVAL '1' MINUTE) GROUP BY window_start", &c).unwrap_err();
    println!("{e}");
    assert!(e.message.contains("timestamp"), "{e}");
}
