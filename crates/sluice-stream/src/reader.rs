//! Reading and decoding a pipeline's source ahead of its operators, on every core.
//!
//! Decoding JSON is the costliest part of reading, so it runs on reader threads (one per
//! core), apart from the pipeline's own thread. Readers do not own partitions: each takes
//! the next chunk of whichever partition has data (round robin), under one lock, and
//! decodes it outside the lock. So one busy partition, or partitions of unequal size, keep
//! every reader busy.
//!
//! Chunks of one partition can then finish out of order. Each carries its partition's
//! sequence number, and [`ReadAhead::next`] hands them to the pipeline strictly in order
//! per partition. At most `limit` chunks, and about [`READ_AHEAD_BYTES`] of stored
//! batches, are read and not yet handed over, which bounds memory.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::decode::{BatchDecoder, Decoded, SourceChunk};
use crate::runner::Source;
use crate::StreamError;

/// Bytes of stored batches the readers may hold ahead of the pipeline (a chunk is claimed
/// while less than this is outstanding, so one larger chunk still goes through).
pub(crate) const READ_AHEAD_BYTES: usize = 8 << 20;

/// Records read and decoded ahead of the operators.
pub(crate) struct Fetched {
    pub partition: u32,
    /// The chunk's place among its partition's chunks (0, 1, …).
    seq: u64,
    pub chunk: SourceChunk,
    pub decoded: Decoded,
}

/// What reaches the pipeline thread on its readers' channel.
pub(crate) enum Feed {
    Chunk(Result<Fetched, String>),
    /// Stop waiting for input: a command was sent to the pipeline, or a reader exited.
    Wake,
}

/// Wakes the pipeline thread when it waits for input, so that a command sent to it (a
/// checkpoint barrier, a commit, a drain) is handled now rather than after its wait.
#[derive(Clone)]
pub(crate) struct Waker {
    tx: Sender<Feed>,
    woken: Arc<AtomicBool>,
}

impl Waker {
    pub fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        let _ = self.tx.send(Feed::Wake);
    }
}

/// What the readers share: where each partition's next chunk starts.
struct Claims {
    /// Per partition: the next offset to read, and the next chunk's sequence number.
    next: Vec<(u64, u64)>,
    /// The partition to try first (round robin).
    turn: usize,
    /// Per partition: a reader is reading it now.
    reading: Vec<bool>,
    /// Chunks claimed and not yet handed to the pipeline, and their stored bytes.
    outstanding: usize,
    outstanding_bytes: usize,
}

struct Shared {
    claims: Mutex<Claims>,
    /// Signalled when the pipeline takes a chunk (room under the limit), a read ends, or
    /// the readers stop.
    room: Condvar,
    stop: AtomicBool,
    limit: usize,
    /// Reader threads still running.
    alive: AtomicUsize,
}

fn lock(m: &Mutex<Claims>) -> MutexGuard<'_, Claims> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The pipeline's end of its readers.
pub(crate) struct ReadAhead {
    rx: Receiver<Feed>,
    /// For [`ReadAhead::waker`].
    tx: Sender<Feed>,
    /// Set by [`Waker::wake`]: a command waits (see [`ReadAhead::woken`]).
    woken: Arc<AtomicBool>,
    shared: Arc<Shared>,
    /// Chunks received ahead of an earlier chunk of their partition, by (partition, seq).
    early: BTreeMap<(u32, u64), Fetched>,
    /// Per partition: the sequence number of the next chunk to hand over.
    expect: Vec<u64>,
}

impl ReadAhead {
    /// Starts `readers` threads (named `read-<name>-<i>`) reading every partition of
    /// `source` from `offsets`, at most `batch_records` records per chunk, at most `limit`
    /// chunks ahead of the pipeline. Errors: a thread cannot be started.
    pub fn start(source: Arc<dyn Source>, decoder: &BatchDecoder, offsets: &[u64], batch_records: usize, readers: usize, limit: usize, name: &str) -> Result<ReadAhead, StreamError> {
        let shared = Arc::new(Shared {
            claims: Mutex::new(Claims { next: offsets.iter().map(|&o| (o, 0)).collect(), reading: vec![false; offsets.len()], turn: 0, outstanding: 0, outstanding_bytes: 0 }),
            room: Condvar::new(),
            stop: AtomicBool::new(false),
            limit: limit.max(1),
            alive: AtomicUsize::new(readers.max(1)),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        for me in 0..readers.max(1) {
            let (source, shared, tx, decoder) = (source.clone(), shared.clone(), tx.clone(), decoder.clone());
            std::thread::Builder::new()
                .name(format!("read-{name}-{me}"))
                .spawn(move || read_loop(source, decoder, batch_records, tx, shared))
                .map_err(|e| StreamError::Eval(format!("cannot start a reader thread: {e}")))?;
        }
        Ok(ReadAhead { rx, tx, woken: Arc::new(AtomicBool::new(false)), shared, early: BTreeMap::new(), expect: vec![0; offsets.len()] })
    }

    /// Something that ends [`ReadAhead::next`]'s wait from another thread.
    pub fn waker(&self) -> Waker {
        Waker { tx: self.tx.clone(), woken: self.woken.clone() }
    }

    /// Whether a command was sent since [`ReadAhead::clear_woken`]: the pipeline then stops
    /// taking input and handles it, so that a barrier does not wait behind a whole poll.
    pub fn woken(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }

    /// Called before the pipeline reads its commands.
    pub fn clear_woken(&self) {
        self.woken.store(false, Ordering::Release);
    }

    /// The next chunk, in order, of a partition not marked in `skip`. Waits up to `wait`
    /// for one (None: does not wait), or until woken ([`Waker`]). Errors: a reader failed,
    /// or every reader stopped.
    pub fn next(&mut self, skip: &[bool], wait: Option<Duration>) -> Result<Option<Fetched>, StreamError> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            while let Ok(r) = self.rx.try_recv() {
                self.receive(r)?;
            }
            if let Some(f) = self.take_in_order(skip) {
                return Ok(Some(f));
            }
            if self.shared.alive.load(Ordering::Acquire) == 0 {
                return Err(StreamError::Source("the reader threads stopped".into()));
            }
            let Some(left) = deadline.map(|d| d.saturating_duration_since(Instant::now())).filter(|l| !l.is_zero()) else { return Ok(None) };
            match self.rx.recv_timeout(left) {
                Ok(Feed::Wake) | Err(RecvTimeoutError::Timeout) => return Ok(None),
                Ok(r) => self.receive(r)?,
                Err(RecvTimeoutError::Disconnected) => return Err(StreamError::Source("the reader threads stopped".into())),
            }
        }
    }

    fn receive(&mut self, r: Feed) -> Result<(), StreamError> {
        let Feed::Chunk(r) = r else { return Ok(()) };
        let f = r.map_err(|e| StreamError::Source(e.into()))?;
        self.early.insert((f.partition, f.seq), f);
        Ok(())
    }

    fn take_in_order(&mut self, skip: &[bool]) -> Option<Fetched> {
        let key = self.early.keys().find(|(p, seq)| !skip.get(*p as usize).copied().unwrap_or(false) && self.expect.get(*p as usize).copied().unwrap_or(0) == *seq).copied()?;
        let f = self.early.remove(&key)?;
        let pi = f.partition as usize;
        if self.expect.len() <= pi {
            self.expect.resize(pi + 1, 0);
        }
        self.expect[pi] += 1;
        let mut c = lock(&self.shared.claims);
        c.outstanding -= 1;
        c.outstanding_bytes -= f.chunk.buf.len();
        drop(c);
        self.shared.room.notify_all();
        Some(f)
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.room.notify_all();
    }
}

/// What [`claim`] found.
enum Claim {
    Chunk(u32, u64, SourceChunk),
    /// Every partition with data is being read by another reader.
    Busy,
    /// No partition has data past its next offset.
    Empty,
}

/// Claims and reads the next chunk: the first partition, from the round robin's turn, that
/// has records at its next offset and that no other reader is reading. The partition is
/// marked while it is read, outside the lock, so that readers read different partitions
/// at once (holding the lock through the read made the other reader wait: about 15 % of
/// two cores idle).
fn claim(source: &dyn Source, shared: &Shared, batch_records: usize) -> Result<Claim, String> {
    let (p, start) = {
        let mut c = lock(&shared.claims);
        while (c.outstanding >= shared.limit || c.outstanding_bytes >= READ_AHEAD_BYTES) && !shared.stop.load(Ordering::Acquire) {
            c = shared.room.wait_timeout(c, Duration::from_millis(100)).map_or_else(|e| e.into_inner().0, |r| r.0);
        }
        let parts = source.partition_count() as usize;
        if c.next.len() < parts {
            c.next.resize(parts, (0, 0));
        }
        if c.reading.len() < parts {
            c.reading.resize(parts, false);
        }
        let mut found = None;
        let mut busy = false;
        for k in 0..parts {
            let p = (c.turn + k) % parts;
            if c.reading[p] {
                busy = true;
                continue;
            }
            let start = source.start_offset(p as u32).max(c.next[p].0);
            if start >= source.end_offset(p as u32) {
                continue;
            }
            c.reading[p] = true;
            c.turn = p + 1;
            found = Some((p, start));
            break;
        }
        match found {
            Some(f) => f,
            None => return Ok(if busy { Claim::Busy } else { Claim::Empty }),
        }
    };
    let read = source.read(p as u32, start, batch_records);
    let mut c = lock(&shared.claims);
    c.reading[p] = false;
    let claimed = match read {
        Err(e) => Err(crate::error_chain(e.as_ref())),
        Ok(chunk) => match chunk.records.last().map(|r| r.offset) {
            None => Ok(Claim::Empty),
            Some(last) => {
                let seq = c.next[p].1;
                c.next[p] = (last + 1, seq + 1);
                c.outstanding += 1;
                c.outstanding_bytes += chunk.buf.len();
                Ok(Claim::Chunk(p as u32, seq, chunk))
            }
        },
    };
    drop(c);
    shared.room.notify_all();
    claimed
}

/// Counts a reader thread out when it ends, even by a panic, and wakes the pipeline so
/// that it notices when none is left.
struct Alive(Arc<Shared>, Sender<Feed>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::AcqRel);
        let _ = self.1.send(Feed::Wake);
    }
}

fn read_loop(source: Arc<dyn Source>, mut decoder: BatchDecoder, batch_records: usize, tx: Sender<Feed>, shared: Arc<Shared>) {
    let _alive = Alive(shared.clone(), tx.clone());
    while !shared.stop.load(Ordering::Acquire) {
        let (partition, seq, chunk) = match claim(source.as_ref(), &shared, batch_records) {
            Ok(Claim::Chunk(p, seq, chunk)) => (p, seq, chunk),
            Ok(Claim::Busy) => {
                // Until the other reader's read ends (it signals `room`).
                let c = lock(&shared.claims);
                if c.reading.iter().any(|&r| r) {
                    drop(shared.room.wait_timeout(c, Duration::from_millis(1)));
                }
                continue;
            }
            Ok(Claim::Empty) => {
                source.wait(Duration::from_millis(10));
                continue;
            }
            Err(e) => {
                let _ = tx.send(Feed::Chunk(Err(e)));
                return;
            }
        };
        let decoded = match decoder.decode(source.partition_id(partition), &chunk) {
            Ok(d) => d,
            Err(e) => {
                let _ = tx.send(Feed::Chunk(Err(e.to_string())));
                return;
            }
        };
        if tx.send(Feed::Chunk(Ok(Fetched { partition, seq, chunk, decoded }))).is_err() {
            return;
        }
    }
}
