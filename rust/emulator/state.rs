//! What the emulator knows: the events waiting for a `/next`, the invocations in flight, their outcomes and the
//! record of every call the runtime made. One mutex guards it; connection threads and the Python side wait on
//! condition variables, never by polling.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::http::Headers;

/// Nanoseconds on `CLOCK_MONOTONIC`, the clock Python's `time.monotonic_ns()` reads: the benchmark harness
/// compares the emulator's timestamps with the moment it spawned the runtime.
#[must_use]
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Misbehaviour the emulator acts out for one event, to test how a runtime survives a faulty Runtime API.
#[derive(Debug, Clone, Default)]
pub struct Fault {
    /// Answer the `/next` that would deliver the event with this status instead (the event is dropped).
    pub next_status: Option<u16>,
    pub next_body: Vec<u8>,
    pub next_content_type: Option<String>,
    /// Close the connection instead of answering that `/next` (the event is dropped).
    pub next_close: bool,
    /// Lower-case header names left out of the `/next` answer.
    pub omit_headers: Vec<String>,
    /// Send the event body with chunked transfer encoding.
    pub chunked: bool,
    /// Answer the runtime's first reply (response or error) with this status; the invocation stays open for a
    /// retry unless the status is 410, which ends it as the Runtime API does for a late reply.
    pub reply_status: Option<u16>,
    /// Close the connection instead of answering the runtime's first reply; a streamed reply is cut off after its
    /// first chunk, as a connection lost mid-stream.
    pub reply_close: bool,
}

/// A piece of a response on its way to a caller of the invoke endpoint, sent as the runtime writes it.
#[derive(Debug)]
pub enum Piece {
    /// The runtime started a streamed response with this content type.
    Head(String),
    Data(Vec<u8>),
    /// The stream ended; the trailers the runtime sent, if any.
    End(Headers),
    /// The invocation ended without streaming (a buffered response or an error).
    Done(Box<Outcome>),
}

/// One event, queued for the next `/next`.
#[derive(Debug)]
pub struct Event {
    pub request_id: String,
    pub body: Arc<[u8]>,
    /// `None` sends no `Content-Type` at all.
    pub content_type: Option<String>,
    /// Extra `/next` headers: trace id, client context, cognito identity, tenant id, invocation id.
    pub headers: Headers,
    pub deadline_ms: Option<u64>,
    pub fault: Fault,
    /// Where a streamed response goes as it arrives (the invoke endpoint), besides the outcome.
    pub sink: Option<SyncSender<Piece>>,
    /// The body a benchmark expects back; the outcome is then counted, not stored.
    pub expect: Option<Arc<[u8]>>,
    pub enqueued_ns: u64,
}

/// How an invocation ended, as the emulator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeKind {
    Response,
    Error,
    /// The emulator faulted the `/next` that carried the event, so the runtime never saw it.
    Dropped,
    /// The runtime process ended while the invocation was in flight.
    Exit,
}

impl OutcomeKind {
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Response => "response",
            Self::Error => "error",
            Self::Dropped => "dropped",
            Self::Exit => "exit",
        }
    }
}

/// The end of one invocation: what the runtime posted and what the emulator answered.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub request_id: String,
    pub kind: OutcomeKind,
    /// The status the emulator answered the runtime's post with.
    pub status: u16,
    /// The post's request headers.
    pub headers: Headers,
    /// The body, cut at the event's keep limit; `body_len` counts every byte.
    pub body: Vec<u8>,
    pub body_len: usize,
    pub trailers: Headers,
    pub streamed: bool,
    pub chunks: usize,
    pub delivered_ns: u64,
    pub first_byte_ns: u64,
    pub done_ns: u64,
}

impl Outcome {
    /// The end of an invocation the runtime never answered: its `/next` was faulted, or the runtime died.
    #[must_use]
    pub fn unanswered(request_id: String, kind: OutcomeKind, status: u16, delivered_ns: u64, done_ns: u64) -> Self {
        Self {
            request_id,
            kind,
            status,
            headers: Headers::new(),
            body: Vec::new(),
            body_len: 0,
            trailers: Headers::new(),
            streamed: false,
            chunks: 0,
            delivered_ns,
            first_byte_ns: 0,
            done_ns,
        }
    }
}

/// One call the runtime made, in arrival order.
#[derive(Debug, Clone)]
pub struct Record {
    /// `next`, `response`, `error`, `init_error`, `restore_next` or `restore_error`.
    pub kind: &'static str,
    pub request_id: Option<String>,
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub body_len: usize,
    pub trailers: Headers,
    pub at_ns: u64,
}

/// An invocation handed to the runtime and not yet answered.
#[derive(Debug)]
pub struct InFlight {
    pub event: Event,
    pub delivered_ns: u64,
    /// The reply fault is acted out once; a retry then goes through.
    pub reply_fault_used: bool,
}

/// Figures a benchmark feed collects.
#[derive(Debug, Default, Clone)]
pub struct FeedStats {
    pub completed: usize,
    pub errors: usize,
    pub mismatches: usize,
    /// Delivery to reply, per invocation, in completion order.
    pub latencies_ns: Vec<u64>,
    pub first_error: Option<String>,
}

/// Events made on demand, as fast as the runtime asks: the benchmark path, with no hand-off between threads.
#[derive(Debug)]
pub struct Feed {
    pub body: Arc<[u8]>,
    pub expect: Arc<[u8]>,
    pub content_type: String,
    pub remaining: usize,
    pub total: usize,
    pub stats: FeedStats,
}

#[derive(Debug, Default)]
pub struct State {
    pub queue: VecDeque<Event>,
    pub inflight: HashMap<String, InFlight>,
    pub outcomes: HashMap<String, Outcome>,
    pub records: Vec<Record>,
    pub feed: Option<Feed>,
    pub init_errors: usize,
    pub closed: bool,
    next_id: u64,
}

/// The state and the condition variables its waiters sleep on.
#[derive(Debug, Default)]
pub struct Shared {
    state: Mutex<State>,
    /// Signalled when an event is queued or the feed refilled: `/next` waiters wake.
    pub event_ready: Condvar,
    /// Signalled when an outcome or a record arrives: the Python side and the feed's owner wake.
    pub changed: Condvar,
    pub keep_records: bool,
    seed: u64,
}

impl Shared {
    #[must_use]
    pub fn new(keep_records: bool) -> Self {
        Self {
            keep_records,
            seed: monotonic_ns() ^ (u64::from(std::process::id()) << 32),
            ..Self::default()
        }
    }

    /// Locks the state; a panic in another thread leaves it usable, since every update is a single step.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh request id shaped like Lambda's (a version 4 UUID), unique within this emulator.
    pub fn request_id(&self, state: &mut State) -> String {
        state.next_id += 1;
        let a = splitmix(self.seed.wrapping_add(state.next_id));
        let b = splitmix(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    pub fn record(&self, state: &mut State, record: Record) {
        if self.keep_records {
            state.records.push(record);
            self.changed.notify_all();
        }
    }

    /// Waits until `done` holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, mut done: impl FnMut(&mut State) -> bool) -> bool {
        let until = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if done(&mut state) {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, until - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_uuid_shaped() {
        let shared = Shared::new(true);
        let mut state = shared.lock();
        let a = shared.request_id(&mut state);
        let b = shared.request_id(&mut state);
        assert_ne!(a, b);
        let groups: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn wait_until_times_out_and_sees_changes() {
        let shared = Arc::new(Shared::new(true));
        assert!(!shared.wait_until(Duration::from_millis(20), |s| s.init_errors > 0));
        let other = Arc::clone(&shared);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            other.lock().init_errors = 1;
            other.changed.notify_all();
        });
        assert!(shared.wait_until(Duration::from_secs(5), |s| s.init_errors > 0));
        t.join().expect("the helper thread ran");
    }
}
