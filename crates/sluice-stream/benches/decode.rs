//! JSON records → Arrow columns: sluice's schema decoder beside two peers in the same run.
//!
//! `cargo bench -p sluice-stream --bench decode`
//!
//! Input: 400,000 heart-rate readings as the bench pipelines generate them
//! (`{"playerId":"p17","heartbeat":131,"createdAt":1700000000000}`, about 60 bytes), in
//! chunks of 2,000 records, as the log reader hands them over. Figures: records/s and MB/s
//! of JSON, best of 5 rounds.
//!
//! - **sluice**: `BatchDecoder::decode` with the built-in `heartbeat` schema: bounds and
//!   length checks, three event-time forms, per-record errors.
//! - **arrow-json**: `arrow_json::ReaderBuilder` over the same bytes as NDJSON, into the same
//!   three columns; it checks no bounds and fails a whole batch on one bad record.
//! - **serde_json struct**: `serde_json::from_slice` into a struct with borrowed fields, the
//!   floor for a serde-based decoder; it builds no columns.

use std::sync::Arc;
use std::time::Instant;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use sluice_stream::decode::{BatchDecoder, SourceChunk};

const RECORDS: usize = 400_000;
const CHUNK: usize = 2_000;

fn best_of(rounds: usize, mut f: impl FnMut() -> usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        let n = f();
        assert_eq!(n, RECORDS, "every record decodes");
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Reading<'a> {
    #[serde(rename = "playerId")]
    player_id: &'a str,
    heartbeat: f64,
    #[serde(rename = "createdAt")]
    created_at: i64,
}

fn main() {
    // `cargo bench -p sluice-stream --bench decode -- sluice` runs only our decoder (to profile it).
    let only_ours = std::env::args().skip(1).any(|a| a == "sluice");
    let values: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| {
            let v = format!(
                "{{\"playerId\":\"p{}\",\"heartbeat\":{},\"createdAt\":{}}}",
                i % 200,
                60 + i % 120,
                1_700_000_000_000i64 + i as i64 * 1000
            );
            v.into_bytes()
        })
        .collect();
    let bytes: usize = values.iter().map(Vec::len).sum();
    let chunks: Vec<SourceChunk> =
        values.chunks(CHUNK).enumerate().map(|(k, c)| SourceChunk::from_values((k * CHUNK) as u64, 0, c.iter().map(|v| v.as_slice()))).collect();
    let ndjson: Vec<Vec<u8>> = values.chunks(CHUNK).map(|c| c.iter().flat_map(|v| v.iter().copied().chain([b'\n'])).collect()).collect();

    let mut sluice = BatchDecoder::new(sluice_core::schema::heartbeat());
    let t_sluice = best_of(5, || chunks.iter().map(|c| sluice.decode(0, c).map_or(0, |d| d.batch.num_rows())).sum());

    let schema = Arc::new(Schema::new(vec![
        Field::new("playerId", DataType::Utf8, false),
        Field::new("heartbeat", DataType::Float64, false),
        Field::new("createdAt", DataType::Timestamp(TimeUnit::Millisecond, None), false),
    ]));
    if only_ours {
        println!("  sluice BatchDecoder {:.0} ns/record", t_sluice * 1e9 / RECORDS as f64);
        return;
    }
    let t_arrow = best_of(5, || {
        let mut n = 0;
        for c in &ndjson {
            let mut d = arrow_json::ReaderBuilder::new(schema.clone()).with_batch_size(CHUNK).build_decoder().expect("decoder");
            d.decode(c).expect("decode");
            n += d.flush().expect("flush").map_or(0, |b| b.num_rows());
        }
        n
    });

    let t_serde = best_of(5, || values.iter().filter(|v| serde_json::from_slice::<Reading>(v).is_ok()).count());

    println!("decode {RECORDS} records ({:.1} MB of JSON), best of 5:", bytes as f64 / 1e6);
    for (name, t) in [("sluice BatchDecoder", t_sluice), ("arrow-json Decoder", t_arrow), ("serde_json struct (no columns)", t_serde)] {
        println!(
            "  {name:<32} {:>12.0} records/s {:>8.1} MB/s {:>6.0} ns/record",
            RECORDS as f64 / t,
            bytes as f64 / t / 1e6,
            t * 1e9 / RECORDS as f64
        );
    }
}
