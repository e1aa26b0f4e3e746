//! Resumable Server-Sent Event streams: every event gets an id, and a client that
//! reconnects with `Last-Event-ID: N` (browsers' `EventSource` sends it by itself) gets
//! what happened after `N` once, then live events: no gap and no duplicate.
//!
//! Two kinds of event share one id sequence (1, 2, … per stream):
//! - **appended** ([`Replay::append`]): each one matters (a committed row batch, a closed
//!   session, an alert). The last `capacity` are kept in a ring.
//! - **keyed state** ([`Replay::set`]): the current state of one key replaces the key's
//!   previous one (a player's open sessions, a key's early window results). Only the
//!   latest per key is kept and replayed, as a compacted Kafka topic keeps the last value
//!   of a key. The newest states of at most `2 × capacity` keys are kept; beyond that the
//!   oldest half go and the horizon moves past them.
//!
//! A resume from `N` replays, in id order, the kept appended events after `N` and the
//! latest state of every key that changed after `N`. It is complete while `N` is at or
//! after the ring's horizon (the id before its oldest kept event); otherwise
//! [`Resume::missed`] says how many appended events are gone and the client should fetch
//! the whole view again (`event: resync`).
//!
//! Events are built only while someone listens, or for [`GRACE_MS`] after the last
//! listener left, so a browser that reconnects within that time resumes exactly. A
//! subscriber that comes after a longer silence starts a fresh history (a resume from
//! before it gets `missed`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

/// How long after its last listener left a stream keeps building events for a resume, ms.
pub const GRACE_MS: u64 = 60_000;

/// An event with its id, and its SSE text once rendered (shared by every subscriber).
#[derive(Debug)]
pub struct Sequenced<E> {
    pub id: u64,
    pub event: E,
    /// The key of a keyed state ([`Replay::set`]); None for an appended event.
    pub key: Option<String>,
    rendered: OnceLock<(&'static str, String)>,
}

impl<E> Sequenced<E> {
    fn new(id: u64, key: Option<String>, event: E) -> Self {
        Sequenced { id, event, key, rendered: OnceLock::new() }
    }
}

/// What a subscriber gets: the replay after its last id, then live events.
pub struct Resume<E> {
    pub backlog: Vec<Arc<Sequenced<E>>>,
    pub live: broadcast::Receiver<Arc<Sequenced<E>>>,
    /// Events after the last id that are no longer kept (at most; 0: the resume is complete).
    pub missed: u64,
    /// Counts this subscriber as a listener until dropped.
    pub guard: ListenGuard,
}

struct Inner<E> {
    next_id: u64,
    /// Ids at or below this cannot be resumed from exactly.
    horizon: u64,
    appended: VecDeque<(Option<String>, Arc<Sequenced<E>>)>,
    latest: HashMap<String, Arc<Sequenced<E>>>,
    /// Channels of subscribers to one route (e.g. one player), so that they are not woken
    /// for every other event. Dropped when their last subscriber goes.
    routes: HashMap<String, broadcast::Sender<Arc<Sequenced<E>>>>,
}

impl<E> Inner<E> {
    /// Sends `e` to the subscribers of `route`, if any.
    fn route(&mut self, route: Option<&str>, e: &Arc<Sequenced<E>>) {
        let Some(r) = route.filter(|_| !self.routes.is_empty()) else { return };
        if let Some(tx) = self.routes.get(r) {
            if tx.send(e.clone()).is_err() {
                self.routes.remove(r);
            }
        }
    }
}

/// Live events for one route's subscribers.
const ROUTE_CHANNEL: usize = 1024;

/// A resumable stream of events `E`.
pub struct Replay<E> {
    inner: Mutex<Inner<E>>,
    tx: broadcast::Sender<Arc<Sequenced<E>>>,
    capacity: usize,
    shared: Arc<Presence>,
}

/// Who listens: the count, and when the last one left (ms since process start; 0: none
/// did). Shared by a [`Replay`] and anything else that works only while someone listens
/// (a pipeline's early results).
#[derive(Default)]
pub struct Presence {
    count: AtomicUsize,
    left_at_ms: AtomicU64,
}

impl Presence {
    /// Counts a listener until the guard drops.
    pub fn enter(self: &Arc<Self>) -> ListenGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        ListenGuard(self.clone())
    }

    /// Listeners now.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether the last listener left less than [`GRACE_MS`] ago.
    pub fn in_grace(&self) -> bool {
        let left = self.left_at_ms.load(Ordering::Acquire);
        left > 0 && uptime_ms().saturating_sub(left) < GRACE_MS
    }

    /// Someone listens, or left less than [`GRACE_MS`] ago.
    pub fn wanted(&self) -> bool {
        self.count() > 0 || self.in_grace()
    }
}

/// Keeps a subscriber counted as a listener.
pub struct ListenGuard(Arc<Presence>);

impl Drop for ListenGuard {
    fn drop(&mut self) {
        self.0.left_at_ms.store(uptime_ms().max(1), Ordering::Release);
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The id a client resumes after: the `Last-Event-ID` header, else the `last_event_id`
/// query parameter.
pub fn last_event_id(headers: &HeaderMap, query: Option<u64>) -> Option<u64> {
    headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).or(query)
}

/// The longest `merge_ms` a subscriber may ask for, ms.
pub const MAX_MERGE_MS: u64 = 60_000;

/// Serves a subscription as Server-Sent Events: `event: resync` first when events were
/// missed (also when the client reads too slowly), then each event that `keep` selects,
/// with `id:` set. `render` gives an event's (name, data); it runs once per event, however
/// many subscribers there are, so it must not depend on the subscriber.
///
/// With `merge_ms` > 0 (capped at [`MAX_MERGE_MS`]), live events go out in one flush per
/// `merge_ms`, and a flush holds only the newest state of each key ([`Replay::set`])
/// with every appended event, in id order. A key's older states are dropped only when a
/// newer one goes out in the same flush, so a `Last-Event-ID` resume still sees every
/// key's latest state: merging loses nothing a compacted topic would keep. This is how a
/// page of every player follows 100k updates a second: it gets at most one per player
/// per flush.
pub fn respond<E, K>(resume: Resume<E>, keep: K, render: fn(&E) -> (&'static str, String), merge_ms: u64) -> Response
where
    E: Send + Sync + 'static,
    K: Fn(&E) -> bool + Send + Sync + 'static,
{
    let Resume { backlog, live, missed, guard } = resume;
    let event = Arc::new(move |e: &Sequenced<E>| {
        keep(&e.event).then(|| {
            let (name, data) = e.rendered.get_or_init(|| render(&e.event));
            Event::default().id(e.id.to_string()).event(*name).data(data.as_str())
        })
    });
    let mut first = Vec::new();
    if missed > 0 {
        first.push(Event::default().event("resync").data(json!({"missed": missed}).to_string()));
    }
    first.extend(backlog.iter().filter_map(|e| event(e)));
    let resync = |n: u64| Event::default().event("resync").data(json!({"missed": n}).to_string());
    let live = if merge_ms == 0 {
        BroadcastStream::new(live)
            .filter_map(move |r| {
                let _listening = &guard;
                std::future::ready(match r {
                    Ok(e) => event(&e),
                    Err(BroadcastStreamRecvError::Lagged(n)) => Some(resync(n)),
                })
            })
            .boxed()
    } else {
        let merge = Merge::start(live, Duration::from_millis(merge_ms.min(MAX_MERGE_MS)));
        futures_util::stream::unfold(merge, |mut m| async move { m.next_flush().await.map(|f| (f, m)) })
            .flat_map(move |(missed, events)| {
                let _listening = &guard;
                let event = event.clone();
                // Rendered as the connection takes them, so the first go out at once.
                let events = events.into_iter().filter_map(move |e| event(&e));
                futures_util::stream::iter((missed > 0).then(|| resync(missed)).into_iter().chain(events))
            })
            .boxed()
    };
    let stream = futures_util::stream::iter(first).chain(live).map(Ok::<_, std::convert::Infallible>);
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// One subscriber's live events gathered between flushes, the newest state per key. A
/// task takes them off the channel as they come, also while a flush is being written, so
/// a big flush to a slow reader does not make the subscriber lag.
struct Merge<E> {
    held: Arc<Mutex<Held<E>>>,
    tick: tokio::time::Interval,
    /// Ends the collecting task when this subscriber goes.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Appended events one subscriber may hold between flushes; past it they are dropped and
/// counted as missed (the client gets `resync`), as a lagging unmerged subscriber's are.
/// Keyed states need no bound of their own: one per key is held.
const MERGE_MAX_APPENDED: usize = 16_384;

struct Held<E> {
    /// Held events by id (a flush is in id order).
    events: BTreeMap<u64, Arc<Sequenced<E>>>,
    /// The id of each key's held state.
    by_key: HashMap<String, u64>,
    /// Appended events among `events`.
    appended: usize,
    missed: u64,
    closed: bool,
}

impl<E> Held<E> {
    /// Holds `e`, dropping the held state of its key that it replaces.
    fn hold(&mut self, e: Arc<Sequenced<E>>) {
        match &e.key {
            Some(k) => {
                if let Some(old) = self.by_key.insert(k.clone(), e.id) {
                    self.events.remove(&old);
                }
            }
            None if self.appended == MERGE_MAX_APPENDED => {
                self.events.retain(|_, e| e.key.is_some());
                self.missed += self.appended as u64 + 1;
                self.appended = 0;
                return;
            }
            None => self.appended += 1,
        }
        self.events.insert(e.id, e);
    }

    /// Takes what is held, in id order, and what was missed.
    fn take(&mut self) -> (u64, Vec<Arc<Sequenced<E>>>) {
        self.by_key.clear();
        self.appended = 0;
        (std::mem::take(&mut self.missed), std::mem::take(&mut self.events).into_values().collect())
    }
}

impl<E: Send + Sync + 'static> Merge<E> {
    /// Starts collecting `live` (on the Tokio runtime) for flushes every `every`.
    fn start(mut live: broadcast::Receiver<Arc<Sequenced<E>>>, every: Duration) -> Self {
        let held = Arc::new(Mutex::new(Held { events: BTreeMap::new(), by_key: HashMap::new(), appended: 0, missed: 0, closed: false }));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let h = held.clone();
        tokio::spawn(async move {
            loop {
                let r = tokio::select! {
                    r = live.recv() => r,
                    _ = &mut stopped => return,
                };
                let mut held = h.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(e) => held.hold(e),
                    Err(broadcast::error::RecvError::Lagged(n)) => held.missed += n,
                    Err(broadcast::error::RecvError::Closed) => {
                        held.closed = true;
                        return;
                    }
                }
            }
        });
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Merge { held, tick, _stop: stop }
    }

    /// Waits for the next tick with something to send: (events missed by lagging, the
    /// held events in id order). None once the stream ended and nothing is held.
    async fn next_flush(&mut self) -> Option<(u64, Vec<Arc<Sequenced<E>>>)> {
        loop {
            self.tick.tick().await;
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if !held.events.is_empty() || held.missed > 0 {
                return Some(held.take());
            }
            if held.closed {
                return None;
            }
        }
    }
}

/// Milliseconds since the process first asked (a monotonic clock).
pub fn uptime_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl<E: Send + Sync + 'static> Replay<E> {
    /// A stream keeping the last `capacity` appended events (at least 1); its live channel
    /// holds as many for slow readers.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Replay {
            inner: Mutex::new(Inner { next_id: 1, horizon: 0, appended: VecDeque::new(), latest: HashMap::new(), routes: HashMap::new() }),
            tx: broadcast::channel(capacity).0,
            capacity,
            // Never listened: no grace.
            shared: Arc::new(Presence::default()),
        }
    }

    /// Listeners now.
    pub fn listeners(&self) -> usize {
        self.shared.count()
    }

    /// Whether events should be built: someone listens, or left less than [`GRACE_MS`] ago.
    pub fn wanted(&self) -> bool {
        self.shared.wanted()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<E>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes an appended event; returns its id.
    pub fn append(&self, event: E) -> u64 {
        self.append_routed(None, event)
    }

    /// Publishes an appended event that also goes to the subscribers of `route`.
    pub fn append_routed(&self, route: Option<&str>, event: E) -> u64 {
        let mut inner = self.lock();
        let e = Arc::new(Sequenced::new(inner.next_id, None, event));
        inner.next_id += 1;
        inner.appended.push_back((route.map(str::to_string), e.clone()));
        while inner.appended.len() > self.capacity {
            if let Some((_, old)) = inner.appended.pop_front() {
                inner.horizon = old.id;
            }
        }
        inner.route(route, &e);
        // Sent under the lock, so a subscriber's backlog and its live receiver meet exactly.
        let _ = self.tx.send(e.clone());
        e.id
    }

    /// Publishes the current state of `key`; returns its id. It also goes to the
    /// subscribers of the route named `key`.
    pub fn set(&self, key: String, event: E) -> u64 {
        let mut inner = self.lock();
        let e = Arc::new(Sequenced::new(inner.next_id, Some(key.clone()), event));
        inner.next_id += 1;
        inner.route(Some(&key), &e);
        inner.latest.insert(key, e.clone());
        if inner.latest.len() > 2 * self.capacity {
            // Keep the newest `capacity` keys' states; a resume from before the oldest one
            // dropped is told to resync. Amortised O(1): this runs once per `capacity` sets.
            let mut ids: Vec<u64> = inner.latest.values().map(|v| v.id).collect();
            let cut = ids.len() - self.capacity - 1;
            let (_, threshold, _) = ids.select_nth_unstable(cut);
            let threshold = *threshold;
            inner.latest.retain(|_, v| v.id > threshold);
            inner.horizon = inner.horizon.max(threshold);
        }
        let _ = self.tx.send(e.clone());
        e.id
    }

    /// Subscribes after `last_seen` (`None`: live events only).
    pub fn subscribe(&self, last_seen: Option<u64>) -> Resume<E> {
        self.subscribe_route(last_seen, None)
    }

    /// Subscribes to the events of one route only (with `Some`): those appended with it and
    /// the state of the key of that name.
    pub fn subscribe_route(&self, last_seen: Option<u64>, route: Option<&str>) -> Resume<E> {
        let mut inner = self.lock();
        if !self.shared.wanted() {
            // Nothing was built while nobody listened: the history restarts here.
            inner.appended.clear();
            inner.latest.clear();
            inner.horizon = inner.next_id - 1;
        }
        let guard = self.shared.enter();
        let live = match route {
            None => self.tx.subscribe(),
            Some(r) => inner.routes.entry(r.to_string()).or_insert_with(|| broadcast::channel(ROUTE_CHANNEL).0).subscribe(),
        };
        let Some(last) = last_seen else { return Resume { backlog: Vec::new(), live, missed: 0, guard } };
        // An id from another life of the process (beyond any given) resumes from the start.
        let last = if last >= inner.next_id { 0 } else { last };
        let missed = inner.horizon.saturating_sub(last);
        let on_route = |r: Option<&str>| route.is_none_or(|want| r == Some(want));
        let mut backlog: Vec<Arc<Sequenced<E>>> = inner.appended.iter().filter(|(r, e)| e.id > last && on_route(r.as_deref())).map(|(_, e)| e.clone()).collect();
        backlog.extend(inner.latest.iter().filter(|(k, e)| e.id > last && on_route(Some(k.as_str()))).map(|(_, e)| e.clone()));
        backlog.sort_by_key(|e| e.id);
        Resume { backlog, live, missed, guard }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<E>(v: &[Arc<Sequenced<E>>]) -> Vec<u64> {
        v.iter().map(|e| e.id).collect()
    }

    #[tokio::test]
    async fn a_merged_flush_holds_each_keys_newest_state_and_every_append_in_id_order() {
        let r: Replay<&str> = Replay::new(64);
        let mut m = Merge::start(r.subscribe(None).live, Duration::from_millis(20));
        r.set("a".into(), "a1");
        r.append("x");
        r.set("b".into(), "b1");
        r.set("a".into(), "a2");
        r.append("y");
        let (missed, events) = m.next_flush().await.unwrap();
        assert_eq!(missed, 0);
        assert_eq!(events.iter().map(|e| e.event).collect::<Vec<_>>(), ["x", "b1", "a2", "y"]);
        assert_eq!(ids(&events), [2, 3, 4, 5]);
        // The next flush starts empty: a key sent before is sent again when it changes.
        r.set("a".into(), "a3");
        let (_, events) = m.next_flush().await.unwrap();
        assert_eq!(events.iter().map(|e| e.event).collect::<Vec<_>>(), ["a3"]);
    }

    #[test]
    fn a_merging_subscriber_holds_a_bounded_number_of_appended_events() {
        let mut held: Held<u64> = Held { events: BTreeMap::new(), by_key: HashMap::new(), appended: 0, missed: 0, closed: false };
        held.hold(Arc::new(Sequenced::new(0, Some("k".into()), 0)));
        for id in 1..=MERGE_MAX_APPENDED as u64 + 1 {
            held.hold(Arc::new(Sequenced::new(id, None, id)));
        }
        // The appended ones overflowed: gone and counted; the key's state stays.
        let (missed, events) = held.take();
        assert_eq!(missed, MERGE_MAX_APPENDED as u64 + 1);
        assert_eq!(ids(&events), [0]);
        // The count starts again after a flush.
        held.hold(Arc::new(Sequenced::new(99_999, None, 1)));
        let (missed, events) = held.take();
        assert_eq!((missed, ids(&events)), (0, vec![99_999]));
    }

    #[tokio::test]
    async fn a_merging_subscriber_that_lags_is_told_how_many_it_missed() {
        let r: Replay<u32> = Replay::new(4);
        let mut m = Merge::start(r.subscribe(None).live, Duration::from_millis(20));
        for i in 0..10 {
            r.append(i);
        }
        let (missed, events) = m.next_flush().await.unwrap();
        assert_eq!(missed, 6);
        assert_eq!(events.iter().map(|e| e.event).collect::<Vec<_>>(), [6, 7, 8, 9]);
    }

    #[test]
    fn a_resume_replays_appends_and_the_latest_state_of_changed_keys() {
        let r: Replay<&str> = Replay::new(8);
        let first = r.subscribe(None);
        r.append("row 1"); // 1
        r.set("a".into(), "a=1"); // 2
        r.set("b".into(), "b=1"); // 3
        r.set("a".into(), "a=2"); // 4
        r.append("row 2"); // 5
        drop(first);
        let resumed = r.subscribe(Some(2));
        assert_eq!(ids(&resumed.backlog), [3, 4, 5], "a=1 is superseded by a=2");
        assert_eq!(resumed.missed, 0);
        assert_eq!(resumed.backlog.iter().map(|e| e.event).collect::<Vec<_>>(), ["b=1", "a=2", "row 2"]);
        // Live events follow the backlog with no gap.
        let mut live = resumed.live;
        r.append("row 3");
        assert_eq!(live.try_recv().map(|e| e.id).ok(), Some(6));
        assert!(r.subscribe(Some(6)).backlog.is_empty(), "nothing after the newest id");
    }

    #[test]
    fn a_resume_past_the_ring_counts_what_is_gone() {
        let r: Replay<u32> = Replay::new(2);
        let _listening = r.subscribe(None);
        for i in 0..5 {
            r.append(i); // ids 1..=5; 4 and 5 kept
        }
        let resumed = r.subscribe(Some(1));
        assert_eq!((ids(&resumed.backlog), resumed.missed), (vec![4, 5], 2));
        assert_eq!(r.subscribe(Some(3)).missed, 0);
        // An id beyond any given (a previous life of the server) replays what is kept.
        assert_eq!(r.subscribe(Some(99)).missed, 3);
    }

    #[test]
    fn a_route_gets_only_its_events_live_and_in_the_replay() {
        let r: Replay<&str> = Replay::new(8);
        let mine = r.subscribe_route(None, Some("ann"));
        r.set("bob".into(), "bob open"); // 1
        r.set("ann".into(), "ann open"); // 2
        r.append_routed(Some("bob"), "bob closed"); // 3
        r.append_routed(Some("ann"), "ann closed"); // 4
        let mut live = mine.live;
        assert_eq!([live.try_recv().map(|e| e.id).ok(), live.try_recv().map(|e| e.id).ok()], [Some(2), Some(4)]);
        assert!(live.try_recv().is_err());
        assert_eq!(ids(&r.subscribe_route(Some(0), Some("ann")).backlog), [2, 4]);
        assert_eq!(ids(&r.subscribe(Some(0)).backlog), [1, 2, 3, 4]);
    }

    #[test]
    fn keyed_states_are_bounded_and_a_resume_from_before_them_resyncs() {
        let r: Replay<u64> = Replay::new(4);
        let _listening = r.subscribe(None);
        for k in 0..9u64 {
            r.set(format!("k{k}"), k); // ids 1..=9; past 8 keys, the oldest 5 go
        }
        let resumed = r.subscribe(Some(0));
        assert_eq!(ids(&resumed.backlog), [6, 7, 8, 9]);
        assert_eq!(resumed.missed, 5, "states 1..=5 are gone: resync");
        assert_eq!(r.subscribe(Some(5)).missed, 0);
    }

    #[test]
    fn events_are_wanted_while_listened_to_and_history_restarts_after_silence() {
        let r: Replay<u32> = Replay::new(4);
        assert!(!r.wanted(), "never listened");
        let s = r.subscribe(None);
        assert!(r.wanted());
        r.append(1);
        drop(s);
        assert!(r.wanted(), "within the grace period");
        // A silence longer than the grace period (0: no one left recently).
        r.shared.left_at_ms.store(0, Ordering::Release);
        assert!(!r.wanted());
        let resumed = r.subscribe(Some(0));
        assert!(resumed.backlog.is_empty());
        assert_eq!(resumed.missed, 1, "event 1 was before the silence");
    }
}
