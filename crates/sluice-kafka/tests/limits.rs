//! Limits of the Kafka listener over a real socket: a declared frame size is not reserved
//! up front, slow and idle connections are closed, and connection caps hold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_kafka::{KafkaServer, ListenerLimits};
use sluice_log::{Log, LogConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

async fn serve(limits: ListenerLimits) -> (tempfile::TempDir, Arc<KafkaServer>, std::net::SocketAddr) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(Log::open(dir.path(), LogConfig::default()).expect("log"));
    let (server, addr) = common::spawn_server(log, limits).await;
    (dir, server, addr)
}

/// ApiVersions v0 on a fresh connection; panics unless it is answered.
async fn api_versions(addr: std::net::SocketAddr) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 9, 0xff, 0xff]).await.expect("send");
    let len = tokio::time::timeout(Duration::from_secs(5), s.read_i32()).await.expect("answered in time").expect("length");
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf).await.expect("body");
    assert_eq!(&buf[..6], &[0, 0, 0, 9, 0, 0], "correlation id 9, no error");
}

/// Waits until the server closes `s` (a read returns end of file or an error); returns how long it took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut b = [0u8; 16];
    match tokio::time::timeout(limit, s.read(&mut b)).await {
        Ok(Ok(0)) | Ok(Err(_)) => t0.elapsed(),
        Ok(Ok(n)) => panic!("unexpected {n} bytes"),
        Err(_) => panic!("still open after {limit:?}"),
    }
}

fn vm_size_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status.lines().find_map(|l| l.strip_prefix("VmSize:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).expect("VmSize")
}

/// 200 connections each declare a 100 MB frame and send nothing more. The server used to
/// reserve every declared frame at once (20 GB of address space; under a 3 GB limit the
/// process aborted after 29). Now it buffers what arrives, so the address space barely moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_frame_sizes_are_not_reserved_up_front() {
    let (_dir, server, addr) = serve(ListenerLimits::default()).await;
    api_versions(addr).await;
    let before = vm_size_kb();
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&(100_000_000i32).to_be_bytes()).await.expect("send");
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.open_connections(), 200);
    let grown_mb = vm_size_kb().saturating_sub(before) / 1024;
    assert!(grown_mb < 2_000, "address space grew by {grown_mb} MB for 200 declared 100 MB frames");
    api_versions(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_sent_one_byte_at_a_time_is_cut_off() {
    let (_dir, _server, addr) = serve(ListenerLimits { request_read_timeout_ms: 400, ..Default::default() }).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&[0, 0, 0, 100]).await.expect("length");
    let writer = async {
        for _ in 0..50 {
            if s.write_all(&[0]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), writer).await.expect("writer ends");
    // The server closed it at the deadline: later writes fail (reset), long before 50 bytes.
    let mut b = [0u8; 4];
    let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await.expect("closed");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "cut off after {:?}", t0.elapsed());
    api_versions(addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let (_dir, server, addr) = serve(ListenerLimits { connections_max_idle_ms: 300, ..Default::default() }).await;
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let took = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.open_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_cap_are_closed() {
    let (_dir, server, addr) = serve(ListenerLimits { max_connections_per_ip: 2, ..Default::default() }).await;
    let _a = TcpStream::connect(addr).await.expect("connect");
    let _b = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = TcpStream::connect(addr).await.expect("connect");
    closed_within(&mut c, Duration::from_secs(5)).await;
    assert_eq!(server.open_connections(), 2);
    drop(_a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    api_versions(addr).await;
}

/// Clients each sending a 90 MB frame, half of it, then stalling: together they hold all
/// the request memory large frames may use, yet a small request is still answered, and
/// the memory held never passes the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_large_frames_do_not_starve_small_requests() {
    let limits = ListenerLimits { max_inflight_request_bytes: 0, ..Default::default() }; // raised to the minimum, 132 MiB
    let (_dir, server, addr) = serve(limits).await;
    let (_, bound) = server.request_memory();
    let mut senders = Vec::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        senders.push(tokio::spawn(async move {
            let _ = s.write_all(&(90_000_000i32).to_be_bytes()).await;
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..45 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_secs(30)).await; // stall, holding what was read
            drop(s);
        }));
    }
    // Wait until the large frames have taken what they can: the memory held stops growing.
    let t0 = Instant::now();
    let mut last = (0, Instant::now());
    while t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held = server.request_memory().0;
        if held != last.0 {
            last = (held, Instant::now());
        } else if held > 0 && last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
    }
    let (held, _) = server.request_memory();
    assert!(held <= bound, "{held} bytes held over the bound {bound}");
    // Buffers double, so how far they got depends on timing; at least 64 MiB is held.
    assert!(held >= 64 << 20, "the stalled frames hold {held} bytes");
    let t = Instant::now();
    api_versions(addr).await;
    assert!(t.elapsed() < Duration::from_secs(2), "a small request waited {:?}", t.elapsed());
    for s in senders {
        s.abort();
    }
}
