//! Kafka produce/consume benchmark of sluice with librdkafka (the `rdkafka` crate).
//!
//! It starts `sluice serve` on a fresh data directory (or uses `--bootstrap` to measure
//! another broker), measures the disk's fdatasync bandwidth in the same run, then for each
//! value size:
//! 1. producer throughput at acks=all (durable: acked after fdatasync under sluice's
//!    default `fsync` policy), records/s and MB/s of values;
//! 2. produce latency (enqueue to delivery report), p50/p99/max, at a fixed fraction of
//!    that throughput;
//! 3. consumer throughput reading everything back from the start.
//!
//! It ends with the server's peak RSS (VmHWM). Results and the command are kept in
//! docs/benchmarks.md.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

#[derive(Parser)]
#[command(about = "Kafka produce/consume benchmark of sluice with librdkafka")]
struct Args {
    /// The sluice binary to start.
    #[arg(long, default_value = "target/release/sluice")]
    sluice: PathBuf,
    /// Measure an already running broker at this bootstrap address instead of starting sluice.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Seconds of each throughput and latency phase.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Value sizes to measure, bytes.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    sizes: Vec<usize>,
    /// Partitions of each benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Producer linger.ms (librdkafka batching delay).
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
    /// Latency is measured at this fraction of the measured throughput.
    #[arg(long, default_value_t = 0.5)]
    latency_load: f64,
}

#[derive(Default)]
struct Stats {
    delivered: AtomicU64,
    failed: AtomicU64,
    /// Delivery latencies, µs (only when measuring latency).
    latencies_us: Mutex<Vec<u64>>,
}

struct Ctx(Arc<Stats>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    /// When the record was enqueued, µs since [`epoch`] plus one; 0 when not timed.
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
                if sent > 0 {
                    if let Ok(mut l) = self.0.latencies_us.lock() {
                        l.push(now_us().saturating_sub(sent as u64 - 1));
                    }
                }
            }
            Err(_) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

struct Server {
    child: Child,
    bootstrap: String,
    http: u16,
    _dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_sluice(bin: &PathBuf) -> anyhow::Result<Server> {
    let dir = std::env::temp_dir().join(format!("sluice-kafka-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (http, kafka) = (free_port()?, free_port()?);
    let child = Command::new(bin)
        .args(["serve", "--data-dir"])
        .arg(&dir)
        .args(["--http-addr", &format!("127.0.0.1:{http}"), "--kafka-addr", &format!("127.0.0.1:{kafka}")])
        .env("SLUICE_JOBS__HEART_RATE__ENABLED", "false")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {} (build it with cargo build --release)", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", kafka)).is_err() {
        if Instant::now() > deadline {
            bail!("sluice did not open its Kafka port within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Server { child, bootstrap: format!("127.0.0.1:{kafka}"), http, _dir: dir })
}

/// fdatasync bandwidth of 1 MiB appends for about a second, MB/s.
fn disk_probe(dir: &std::path::Path) -> anyhow::Result<f64> {
    let path = dir.join("disk-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let mbs = n as f64 * block.len() as f64 / 1e6 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(mbs)
}

fn producer(bootstrap: &str, linger_ms: u32, stats: Arc<Stats>) -> anyhow::Result<BaseProducer<Ctx>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("batch.num.messages", "100000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("compression.type", "none")
        .create_with_context(Ctx(stats))?)
}

fn send(p: &BaseProducer<Ctx>, topic: &str, value: &[u8], key: &[u8], sent: usize) {
    let mut record = BaseRecord::with_opaque_to(topic, sent).payload(value).key(key);
    loop {
        match p.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                // Queue full: serve delivery reports, then retry.
                p.poll(Duration::from_millis(1));
                record = r;
            }
        }
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let rt = futures_lite_block_on(admin.create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new()));
    for r in rt? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}

/// Runs a future to completion on this thread (the admin API is async; no runtime needed).
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context as TaskContext, Poll, RawWaker, RawWakerVTable, Waker};
    fn noop(_: *const ()) {}
    fn clone(p: *const ()) -> RawWaker {
        RawWaker::new(p, &VTABLE)
    }
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
    let mut cx = TaskContext::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Cumulative bucket counts (upper bound ms, count) of sluice's server-side Produce
/// duration histogram (`sluice_kafka_request_duration_seconds{api="Produce"}`, bounds in
/// seconds, converted to ms here), from /metrics.
fn produce_buckets(http: u16) -> Vec<(f64, u64)> {
    use std::io::Read;
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", http)) else { return Vec::new() };
    let _ = conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with("sluice_kafka_request_duration_seconds_bucket{") && l.contains("api=\"Produce\""))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse::<f64>().ok()? * 1e3 };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// The smallest bucket bound holding fraction `q` of the requests between two scrapes.
fn bucket_quantile(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    let diff: Vec<(f64, u64)> =
        after.iter().map(|(le, n)| (*le, n - before.iter().find(|(b, _)| b == le).map(|(_, m)| *m).unwrap_or(0))).collect();
    let total = diff.last()?.1;
    diff.iter().find(|(_, n)| *n as f64 >= q * total as f64).map(|(le, _)| *le)
}

fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    epoch();
    let server = match &args.bootstrap {
        Some(_) => None,
        None => Some(start_sluice(&args.sluice)?),
    };
    let bootstrap = args.bootstrap.clone().or_else(|| server.as_ref().map(|s| s.bootstrap.clone())).unwrap_or_default();
    let probe_dir = server.as_ref().map(|s| s._dir.clone()).unwrap_or_else(std::env::temp_dir);
    let disk = disk_probe(&probe_dir)?;
    println!("broker {bootstrap}; disk: 1 MiB fdatasync appends {disk:.0} MB/s; linger.ms {}; acks=all; {} partitions", args.linger_ms, args.partitions);
    println!("| value | produce records/s | produce MB/s | latency load records/s | p50 ms | p99 ms | max ms | server p50 / p99 ms | consume records/s | consume MB/s |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let phase = Duration::from_secs_f64(args.seconds);
    for &size in &args.sizes {
        let topic = format!("bench-{size}-{}", std::process::id());
        create_topic(&bootstrap, &topic, args.partitions)?;
        let value = vec![b'x'; size];
        let keys: Vec<Vec<u8>> = (0..1024).map(|i| format!("k{i}").into_bytes()).collect();

        // 1. Throughput: as fast as the producer can enqueue.
        let stats = Arc::new(Stats::default());
        let p = producer(&bootstrap, args.linger_ms, stats.clone())?;
        let start = Instant::now();
        let mut i = 0usize;
        while start.elapsed() < phase {
            for _ in 0..1000 {
                send(&p, &topic, &value, &keys[i % keys.len()], 0);
                i += 1;
            }
            p.poll(Duration::ZERO);
        }
        p.flush(Duration::from_secs(120))?;
        let secs = start.elapsed().as_secs_f64();
        let delivered = stats.delivered.load(Ordering::Relaxed);
        if stats.failed.load(Ordering::Relaxed) > 0 {
            bail!("{} deliveries failed", stats.failed.load(Ordering::Relaxed));
        }
        let rate = delivered as f64 / secs;

        // 2. Latency at a fraction of that rate, paced in 1 ms slices.
        let target = rate * args.latency_load;
        let lstats = Arc::new(Stats::default());
        let lp = producer(&bootstrap, args.linger_ms, lstats.clone())?;
        let http = server.as_ref().map(|s| s.http);
        let before = http.map(produce_buckets).unwrap_or_default();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < phase {
            let due = (start.elapsed().as_secs_f64() * target) as u64;
            while sent < due {
                send(&lp, &topic, &value, &keys[sent as usize % keys.len()], now_us() as usize + 1);
                sent += 1;
            }
            lp.poll(Duration::from_micros(500));
        }
        lp.flush(Duration::from_secs(120))?;
        let achieved = lstats.delivered.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
        let after = http.map(produce_buckets).unwrap_or_default();
        let server_q = |q| bucket_quantile(&before, &after, q).map(|v| format!("≤ {v}")).unwrap_or_else(|| "-".into());
        let server_lat = format!("{} / {}", server_q(0.5), server_q(0.99));
        let mut lat = std::mem::take(&mut *lstats.latencies_us.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
        lat.sort_unstable();
        let total = delivered + lstats.delivered.load(Ordering::Relaxed);

        // 3. Consume everything from the start.
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("bench-{size}"))
            .set("enable.auto.commit", "false")
            // librdkafka pauses fetching for fetch.queue.backoff.ms (default 1 s) whenever
            // its local queue holds queued.min.messages (default 100k): with small records
            // that pause, not the broker, would set the rate.
            .set("queued.min.messages", "1000000")
            .set("fetch.queue.backoff.ms", "10")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for part in 0..args.partitions {
            tpl.add_partition_offset(&topic, part, Offset::Beginning)?;
        }
        c.assign(&tpl)?;
        let start = Instant::now();
        let mut read = 0u64;
        while read < total && start.elapsed() < Duration::from_secs(300) {
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                let m = m?;
                if m.payload().map(<[u8]>::len) == Some(size) {
                    read += 1;
                }
            }
        }
        let csecs = start.elapsed().as_secs_f64();
        if read < total {
            let positions = c.position().map(|tpl| format!("{tpl:?}")).unwrap_or_default();
            let marks: Vec<String> = (0..args.partitions)
                .map(|p| format!("{p}: {:?}", c.fetch_watermarks(&topic, p, Duration::from_secs(5))))
                .collect();
            bail!("consumed {read} of {total} records; positions {positions}; watermarks {}", marks.join(", "));
        }
        println!(
            "| {size} B | {:.0} | {:.1} | {:.0} | {:.2} | {:.2} | {:.2} | {server_lat} | {:.0} | {:.1} |",
            rate,
            rate * size as f64 / 1e6,
            achieved,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 1.0),
            read as f64 / csecs,
            read as f64 * size as f64 / 1e6 / csecs
        );
    }
    if let Some(s) = &server {
        if let Some(mb) = peak_rss_mb(s.child.id()) {
            println!("sluice peak RSS: {mb:.0} MB");
        }
    }
    Ok(())
}
