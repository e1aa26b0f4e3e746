//! The lake on a real S3-API server on loopback (moto's `moto_server`, from the test venv).
//!
//! `scripts/test.sh` sets `SLUICE_REQUIRE_S3_TESTS=1`, so there a missing server fails these
//! tests; a bare `cargo test` without the venv skips them with a message.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use deltalake::logstore::CommitOrBytes;
use sluice_lake::{Lake, Root, StorageOptions};

/// A `moto_server` child, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    venv.exists().then_some(venv)
}

fn start_moto() -> Option<Moto> {
    let Some(bin) = moto_binary() else {
        assert!(std::env::var_os("SLUICE_REQUIRE_S3_TESTS").is_none(), "moto_server is missing: `.venv/bin/pip install -r tests/e2e/requirements.txt`");
        eprintln!("skipped: no moto_server (install tests/e2e/requirements.txt into .venv)");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(bin).args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starting moto_server");
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(moto)
}

impl Moto {
    /// Creates a bucket (CreateBucket is a bare `PUT /<bucket>`; moto checks no signature).
    fn bucket(&self, name: &str) {
        // Retried: the server may take the connection before it serves requests.
        let mut last = String::new();
        for _ in 0..50 {
            let put = || -> std::io::Result<String> {
                let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
                write!(s, "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.port)?;
                let mut reply = Vec::new();
                let _ = s.read_to_end(&mut reply);
                Ok(String::from_utf8_lossy(&reply).into_owned())
            };
            match put() {
                Ok(reply) if reply.starts_with("HTTP/1.1 200") => return,
                Ok(reply) => last = reply,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("CreateBucket {name} failed: {last}");
    }

    fn options(&self) -> StorageOptions {
        let o = [("aws_endpoint", format!("http://127.0.0.1:{}", self.port)), ("aws_allow_http", "true".into()), ("aws_region", "us-east-1".into()), ("aws_access_key_id", "test".into()), ("aws_secret_access_key", "test".into())];
        StorageOptions(o.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn lake(&self, url: &str) -> Lake {
        Lake::open_at(Root::open(url, &self.options()).unwrap()).unwrap()
    }
}

fn rows(player: &str, from: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("player_id", DataType::Utf8, false),
        Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("bpm", DataType::Float64, false),
    ]));
    let ts: Vec<i64> = (from..from + n).map(|i| i * 1000).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from_iter_values(ts.iter().map(|_| player))),
            Arc::new(TimestampMillisecondArray::from(ts.clone()).with_timezone("UTC")),
            Arc::new(Float64Array::from_iter_values(ts.iter().map(|&t| (t % 100) as f64))),
        ],
    )
    .unwrap()
}

#[test]
fn two_writers_commit_at_once_and_no_commit_is_lost() {
    let Some(moto) = start_moto() else { return };
    moto.bucket("two-writers");
    let moto = Arc::new(moto);
    const COMMITS: u64 = 12;
    // Two lakes (as two processes would: nothing cached in common but the HTTP client),
    // starting together on a table that does not exist yet.
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|pipeline| {
            let moto = moto.clone();
            std::thread::spawn(move || {
                let lake = moto.lake("s3://two-writers/lake");
                lake.set_auto_compact_min_files(0);
                for id in 1..=COMMITS {
                    let staged = lake.stage_table("t", id, &[rows(pipeline, id as i64 * 10, 10)], 0).unwrap();
                    lake.publish("t", pipeline, id, &staged).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let lake = moto.lake("s3://two-writers/lake");
    let files = lake.files("t").unwrap();
    assert_eq!(files.iter().filter_map(|f| f.rows).sum::<usize>(), 2 * COMMITS as usize * 10, "every commit of both writers is in the table");
    let history = lake.history("t", None).unwrap();
    let streaming: Vec<_> = history.iter().filter(|c| c["operation"] == "STREAMING UPDATE").collect();
    assert_eq!(streaming.len(), 2 * COMMITS as usize, "{history:#?}");
    // Versions are a gapless sequence, each written once.
    let versions: Vec<i64> = history.iter().map(|c| c["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, (0..history.len() as i64).rev().collect::<Vec<_>>());
    // The txn of each writer records its last checkpoint: a retry is skipped.
    let staged = lake.stage_table("t", COMMITS, &[rows("a", 0, 1)], 0).unwrap();
    lake.publish("t", "a", COMMITS, &staged).unwrap();
    assert_eq!(lake.files("t").unwrap().iter().filter_map(|f| f.rows).sum::<usize>(), 2 * COMMITS as usize * 10);
}

#[test]
fn a_second_commit_of_the_same_version_is_refused_by_the_store() {
    let Some(moto) = start_moto() else { return };
    moto.bucket("put-if-absent");
    let lake = moto.lake("s3://put-if-absent/lake");
    let staged = lake.stage_table("t", 1, &[rows("p", 0, 3)], 0).unwrap();
    lake.publish("t", "p", 1, &staged).unwrap();
    let t = lake.table("t", None).unwrap();
    let store = t.log_store();
    let next = t.version().unwrap() + 1;
    let commit = |body: &'static str| {
        let store = store.clone();
        async move { store.write_commit_entry(next, CommitOrBytes::LogBytes(bytes::Bytes::from_static(body.as_bytes())), uuid_v4()).await }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(commit("{\"commitInfo\":{\"operation\":\"WRITE\"}}\n")).expect("the first writer of a version wins");
    let second = rt.block_on(commit("{\"commitInfo\":{\"operation\":\"OVERWRITE\"}}\n"));
    assert!(matches!(second, Err(deltalake::kernel::transaction::TransactionError::VersionAlreadyExists(v)) if v == next), "{second:?}");
}

#[test]
fn sessions_query_and_maintenance_work_on_s3() {
    let Some(moto) = start_moto() else { return };
    moto.bucket("lake");
    let lake = moto.lake("s3://lake/prefix/");
    for id in 1..=3 {
        let staged = lake.stage_table("raw", id, &[rows("p", id as i64 * 100, 5)], 0).unwrap();
        lake.publish("raw", "raw", id, &staged).unwrap();
    }
    assert_eq!(lake.table_names().unwrap(), vec!["raw".to_string()]);
    let report = lake.optimize("raw", 1 << 20, 2).unwrap();
    assert_eq!((report.files_removed, report.files_added), (3, 1));
    assert_eq!(lake.checkpoint("raw").unwrap(), 4);
    // SQL reads the files through the same store.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let n: i64 = rt.block_on(async {
        let ctx = sluice_lake::query::context(lake.root(), Default::default(), None, Default::default()).await.unwrap();
        let batches = ctx.sql("SELECT count(*) AS n FROM raw WHERE bpm >= 0").await.unwrap().collect().await.unwrap();
        batches[0].column(0).as_any().downcast_ref::<arrow_array::Int64Array>().unwrap().value(0)
    });
    assert_eq!(n, 15);
    // A lake on a missing bucket does not open, and says which location failed.
    let e = Lake::open_at(Root::open("s3://no-such-bucket/x", &moto.options()).unwrap()).err().unwrap();
    assert!(sluice_core::error_chain(&e).contains("no-such-bucket"), "{}", sluice_core::error_chain(&e));
}

fn uuid_v4() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}
