//! The emulator's HTTP side: the Runtime API a runtime polls, and the RIE-compatible invoke endpoint a caller
//! posts events to, on one loopback port.
//!
//! A thread per connection with blocking sockets: a runtime holds one keep-alive connection per slot, so there
//! are few of them, and a blocking read is the shortest path between two processes on loopback. Each answer
//! leaves in one vectored write with Nagle's algorithm off; together these are what let a native client reach
//! well over 20,000 invocations a second, so the emulator is never what a benchmark measures.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::state::{
    monotonic_ns, Event, Fault, FeedStats, InFlight, Outcome, OutcomeKind, Piece, Record, Shared, State,
};
use crate::http::{header, Connection, Framing, Headers, RequestHead};

/// RAPID's buffered response limit: 6 MiB plus 100 bytes.
pub const BUFFERED_LIMIT: usize = 6 * 1024 * 1024 + 100;
/// Lambda's streamed response limit.
pub const STREAM_LIMIT: usize = 200 * 1024 * 1024;
const RUNTIME_PREFIX: &str = "/2018-06-01/runtime/";
const INVOKE_PREFIX: &str = "/2015-03-31/functions/";
const HTTP_INTEGRATION: &str = "application/vnd.awslambda.http-integration-response";

/// How the emulated function is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    /// Serve `/restore/next` and `/restore/error` (they answer 404 otherwise, as RAPID's routes do).
    pub snap_start: bool,
    /// Managed Instances: only the first init error is accepted, later ones get 403.
    pub max_concurrency: usize,
    pub function_arn: String,
    /// The function timeout: the deadline header is now plus this, and an invoke waits this long.
    pub timeout: Duration,
    /// Bytes of each body kept in records and outcomes; `body_len` still counts all of them.
    pub keep_body: usize,
}

/// A running emulator: a listener thread and the connections it accepted.
pub struct Server {
    pub shared: Arc<Shared>,
    pub config: Arc<Config>,
    pub addr: SocketAddr,
    connections: Arc<Mutex<HashMap<u64, TcpStream>>>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

/// Whether a connection stays open after a request.
enum Next {
    KeepAlive,
    Close,
}

impl Server {
    /// Binds `127.0.0.1:port` (0 picks a free port) and starts accepting.
    pub fn start(config: Config, keep_records: bool) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", config.port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(keep_records));
        let config = Arc::new(config);
        let connections = Arc::new(Mutex::new(HashMap::new()));
        let acceptor = {
            let (shared, config, connections) = (Arc::clone(&shared), Arc::clone(&config), Arc::clone(&connections));
            thread::Builder::new()
                .name("emulator-accept".into())
                .spawn(move || accept_loop(&listener, &shared, &config, &connections))?
        };
        Ok(Self {
            shared,
            config,
            addr,
            connections,
            acceptor: Mutex::new(Some(acceptor)),
        })
    }

    /// Queues an event; returns its request id.
    pub fn enqueue(&self, mut event: Event) -> String {
        let mut state = self.shared.lock();
        if event.request_id.is_empty() {
            event.request_id = self.shared.request_id(&mut state);
        }
        let id = event.request_id.clone();
        state.queue.push_back(event);
        self.shared.event_ready.notify_one();
        id
    }

    /// Serves `count` copies of `body` as fast as the runtime asks for them, each reply checked against
    /// `expect`; returns when all are answered or `timeout` passes.
    pub fn run_feed(
        &self,
        body: Arc<[u8]>,
        expect: Arc<[u8]>,
        content_type: String,
        count: usize,
        timeout: Duration,
    ) -> FeedStats {
        {
            let mut state = self.shared.lock();
            state.feed = Some(super::state::Feed {
                body,
                expect,
                content_type,
                remaining: count,
                total: count,
                stats: FeedStats {
                    latencies_ns: Vec::with_capacity(count),
                    ..FeedStats::default()
                },
            });
            self.shared.event_ready.notify_all();
        }
        self.shared.wait_until(timeout, |state| {
            state.closed || state.feed.as_ref().is_none_or(|f| f.stats.completed >= f.total)
        });
        let mut state = self.shared.lock();
        state.feed.take().map(|f| f.stats).unwrap_or_default()
    }

    /// Ends every invocation in flight with an `Exit` outcome: the runtime process is gone.
    pub fn fail_inflight(&self) -> usize {
        let mut state = self.shared.lock();
        let ids: Vec<String> = state.inflight.keys().cloned().collect();
        let now = monotonic_ns();
        for id in &ids {
            if let Some(flight) = state.inflight.remove(id) {
                let outcome = Outcome::unanswered(id.clone(), OutcomeKind::Exit, 0, flight.delivered_ns, now);
                finish(&self.shared, &mut state, flight.event, outcome);
            }
        }
        self.shared.changed.notify_all();
        ids.len()
    }

    /// Stops accepting, wakes every waiter and closes every connection.
    pub fn close(&self) {
        {
            let mut state = self.shared.lock();
            state.closed = true;
            state.queue.clear();
        }
        self.shared.event_ready.notify_all();
        self.shared.changed.notify_all();
        // A connection to ourselves wakes the blocking accept so the thread sees `closed`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let acceptor = self
            .acceptor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(acceptor) = acceptor {
            let _ = acceptor.join();
        }
        let connections = self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for stream in connections.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close();
    }
}

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    config: &Arc<Config>,
    connections: &Arc<Mutex<HashMap<u64, TcpStream>>>,
) {
    static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(0);
    for stream in listener.incoming() {
        if shared.lock().closed {
            return;
        }
        let Ok(stream) = stream else { continue };
        let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(id, clone);
        }
        let (shared, config, connections) = (Arc::clone(shared), Arc::clone(config), Arc::clone(connections));
        let spawned = thread::Builder::new().name("emulator-conn".into()).spawn(move || {
            if let Ok(mut conn) = Connection::new(stream) {
                serve(&mut conn, &shared, &config);
            }
            connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
        });
        drop(spawned);
    }
}

fn serve(conn: &mut Connection, shared: &Shared, config: &Config) {
    loop {
        let Ok(Some(head)) = conn.read_request_head() else {
            return;
        };
        let outcome = route(conn, &head, shared, config);
        match outcome {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close) | Err(_) => {
                let _ = conn.stream().shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

fn route(conn: &mut Connection, head: &RequestHead, shared: &Shared, config: &Config) -> io::Result<Next> {
    let path = head.path.split('?').next().unwrap_or("");
    if let Some(rest) = path.strip_prefix(RUNTIME_PREFIX) {
        return match (head.method.as_str(), rest) {
            ("GET", "invocation/next") => next(conn, shared, config),
            ("POST", "init/error") => init_error(conn, head, shared, config),
            ("GET", "restore/next") if config.snap_start => restore_next(conn, head, shared),
            ("POST", "restore/error") if config.snap_start => restore_error(conn, head, shared, config),
            ("POST", rest) if rest.starts_with("invocation/") => {
                let rest = &rest["invocation/".len()..];
                match rest.rsplit_once('/') {
                    Some((id, "response")) => reply(conn, head, id, OutcomeKind::Response, shared, config),
                    Some((id, "error")) => reply(conn, head, id, OutcomeKind::Error, shared, config),
                    _ => not_found(conn, head),
                }
            }
            _ => not_found(conn, head),
        };
    }
    if path.starts_with(INVOKE_PREFIX) && path.ends_with("/invocations") && head.method == "POST" {
        return invoke(conn, head, shared, config);
    }
    not_found(conn, head)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        // The reason phrase is informative only (RFC 9112 section 4): any text is valid.
        _ => "Status",
    }
}

/// Writes a whole answer, head and body, in one vectored write.
fn answer(
    conn: &mut Connection,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    if !content_type.is_empty() {
        head.push_str("Content-Type: ");
        head.push_str(content_type);
        head.push_str("\r\n");
    }
    for (name, value) in extra {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("Content-Length: ");
    head.push_str(&body.len().to_string());
    head.push_str("\r\n\r\n");
    conn.write_all_vectored(&[head.as_bytes(), body])
}

fn answer_error(conn: &mut Connection, status: u16, error_type: &str, message: &str) -> io::Result<()> {
    let body = serde_json::json!({"errorMessage": message, "errorType": error_type}).to_string();
    answer(conn, status, "application/json", &[], body.as_bytes())
}

const ACCEPTED: &[u8] = b"{\"status\":\"OK\"}";

fn not_found(conn: &mut Connection, head: &RequestHead) -> io::Result<Next> {
    conn.discard_body(head.framing)?;
    answer_error(
        conn,
        404,
        "NotFound",
        &format!("no route for {} {}", head.method, head.path),
    )?;
    Ok(Next::KeepAlive)
}

fn kept(body: &[u8], keep: usize) -> Vec<u8> {
    body[..body.len().min(keep)].to_vec()
}

/// `GET /next`: waits for an event (queued, or made by a benchmark feed) and hands it over.
fn next(conn: &mut Connection, shared: &Shared, config: &Config) -> io::Result<Next> {
    let arrived = monotonic_ns();
    let mut state = shared.lock();
    shared.record(
        &mut state,
        Record {
            kind: "next",
            request_id: None,
            status: 200,
            headers: Headers::new(),
            body: Vec::new(),
            body_len: 0,
            trailers: Headers::new(),
            at_ns: arrived,
        },
    );
    let event = loop {
        if state.closed {
            drop(state);
            answer_error(conn, 500, "InternalServerError", "the emulator is shutting down")?;
            return Ok(Next::Close);
        }
        if let Some(event) = state.queue.pop_front() {
            break event;
        }
        if let Some(event) = feed_event(shared, &mut state) {
            break event;
        }
        state = shared
            .event_ready
            .wait(state)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    };

    if event.fault.next_close || event.fault.next_status.is_some() {
        let fault = event.fault.clone();
        let outcome = dropped(&event);
        finish(shared, &mut state, event, outcome);
        drop(state);
        if fault.next_close {
            return Ok(Next::Close);
        }
        let status = fault.next_status.unwrap_or(500);
        let content_type = fault.next_content_type.as_deref().unwrap_or("");
        answer(conn, status, content_type, &[], &fault.next_body)?;
        return Ok(Next::KeepAlive);
    }

    let head = next_head(&event, config);
    let body = Arc::clone(&event.body);
    let chunked = event.fault.chunked;
    let id = event.request_id.clone();
    state.inflight.insert(
        id,
        InFlight {
            event,
            delivered_ns: monotonic_ns(),
            reply_fault_used: false,
        },
    );
    drop(state);
    if chunked {
        conn.write_all_vectored(&[head.as_bytes()])?;
        let half = body.len() / 2;
        conn.write_chunk(&body[..half])?;
        conn.write_chunk(&body[half..])?;
        conn.write_all_vectored(&[b"0\r\n\r\n"])?;
    } else {
        conn.write_all_vectored(&[head.as_bytes(), &body])?;
    }
    Ok(Next::KeepAlive)
}

fn feed_event(shared: &Shared, state: &mut State) -> Option<Event> {
    let feed = state.feed.as_mut()?;
    if feed.remaining == 0 {
        return None;
    }
    feed.remaining -= 1;
    let (body, expect, content_type) = (
        Arc::clone(&feed.body),
        Arc::clone(&feed.expect),
        feed.content_type.clone(),
    );
    Some(Event {
        request_id: shared.request_id(state),
        body,
        content_type: Some(content_type),
        headers: Headers::new(),
        deadline_ms: None,
        fault: Fault::default(),
        sink: None,
        expect: Some(expect),
        enqueued_ns: 0,
    })
}

fn next_head(event: &Event, config: &Config) -> String {
    let omitted = |name: &str| event.fault.omit_headers.iter().any(|h| h == name);
    let deadline = event.deadline_ms.unwrap_or_else(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        (now + config.timeout).as_millis() as u64
    });
    let mut head = String::with_capacity(512);
    head.push_str("HTTP/1.1 200 OK\r\n");
    let mut add = |name: &str, value: &str| {
        if !omitted(&name.to_ascii_lowercase()) {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
    };
    if let Some(content_type) = &event.content_type {
        add("Content-Type", content_type);
    }
    add("Lambda-Runtime-Aws-Request-Id", &event.request_id);
    add("Lambda-Runtime-Deadline-Ms", &deadline.to_string());
    add("Lambda-Runtime-Invoked-Function-Arn", &config.function_arn);
    for (name, value) in &event.headers {
        add(name, value);
    }
    if event.fault.chunked {
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        head.push_str("Content-Length: ");
        head.push_str(&event.body.len().to_string());
        head.push_str("\r\n\r\n");
    }
    head
}

fn dropped(event: &Event) -> Outcome {
    let now = monotonic_ns();
    let status = event.fault.next_status.unwrap_or(0);
    Outcome::unanswered(event.request_id.clone(), OutcomeKind::Dropped, status, now, now)
}

/// Hands an outcome to whoever waits for it: the feed's counters, the invoke endpoint's caller, or the table
/// the Python side reads.
fn finish(shared: &Shared, state: &mut State, event: Event, outcome: Outcome) {
    if let Some(expect) = &event.expect {
        if let Some(feed) = state.feed.as_mut() {
            let counts = &mut feed.stats;
            counts.completed += 1;
            counts
                .latencies_ns
                .push(outcome.done_ns.saturating_sub(outcome.delivered_ns));
            if outcome.kind != OutcomeKind::Response {
                counts.errors += 1;
                if counts.first_error.is_none() {
                    counts.first_error = Some(String::from_utf8_lossy(&outcome.body).into_owned());
                }
            } else if outcome.body.as_slice() != &expect[..] {
                counts.mismatches += 1;
            }
            if counts.completed >= feed.total {
                shared.changed.notify_all();
            }
        }
        return;
    }
    if let Some(sink) = &event.sink {
        let _ = sink.try_send(Piece::Done(Box::new(outcome.clone())));
    }
    state.outcomes.insert(outcome.request_id.clone(), outcome);
    shared.changed.notify_all();
}

/// The in-flight invocation's reply fault (acted out once, so a retry goes through), its sink and whether a
/// benchmark feed made it; `None` when no such invocation is in flight.
fn reply_fault(shared: &Shared, request_id: &str) -> Option<(Fault, Option<SyncSender<Piece>>, bool)> {
    let mut state = shared.lock();
    let flight = state.inflight.get_mut(request_id)?;
    let fault = if flight.reply_fault_used {
        Fault::default()
    } else {
        flight.reply_fault_used = true;
        flight.event.fault.clone()
    };
    Some((fault, flight.event.sink.clone(), flight.event.expect.is_some()))
}

/// `POST /invocation/{id}/response` and `/error`: buffered or streamed, with the event's reply fault acted out.
fn reply(
    conn: &mut Connection,
    head: &RequestHead,
    request_id: &str,
    kind: OutcomeKind,
    shared: &Shared,
    config: &Config,
) -> io::Result<Next> {
    let arrived = monotonic_ns();
    let Some((fault, sink, keep_whole)) = reply_fault(shared, request_id) else {
        conn.discard_body(head.framing)?;
        answer_error(conn, 400, "InvalidRequestID", "Invalid request ID")?;
        return Ok(Next::KeepAlive);
    };
    let keep = if keep_whole { usize::MAX } else { config.keep_body };

    let streaming = kind == OutcomeKind::Response
        && header(&head.headers, "lambda-runtime-function-response-mode") == Some("streaming")
        && head.framing == Framing::Chunked;
    let read = if streaming {
        read_streamed(conn, head, sink.as_ref(), keep, fault.reply_close)?
    } else {
        let limit = if kind == OutcomeKind::Response {
            BUFFERED_LIMIT
        } else {
            STREAM_LIMIT
        };
        let (whole, trailers, over) = conn.read_body(head.framing, limit)?;
        if over && kind == OutcomeKind::Response {
            // RAPID answers 413 and the invocation stays open: a runtime may still post an error for it.
            record_reply(shared, kind, request_id, 413, head, &ReplyBody::default(), arrived);
            answer_error(
                conn,
                413,
                "RequestEntityTooLarge",
                "Exceeded maximum allowed payload size (6291556 bytes).",
            )?;
            return Ok(Next::KeepAlive);
        }
        ReplyBody {
            body_len: if over { limit + 1 } else { whole.len() },
            body: if whole.len() > keep { kept(&whole, keep) } else { whole },
            trailers,
            chunks: 0,
            first_byte_ns: monotonic_ns(),
            oversized: over,
        }
    };

    if fault.reply_close {
        record_reply(shared, kind, request_id, 0, head, &read, arrived);
        return Ok(Next::Close);
    }
    if let Some(status) = fault.reply_status.filter(|s| *s != 410) {
        record_reply(shared, kind, request_id, status, head, &read, arrived);
        answer_error(conn, status, "InternalServerError", "injected fault")?;
        return Ok(Next::KeepAlive);
    }
    let status = fault.reply_status.unwrap_or(202);

    let done_ns = monotonic_ns();
    {
        let mut state = shared.lock();
        if !keep_whole {
            shared.record(
                &mut state,
                reply_record(&kind, request_id, status, head, &read, arrived),
            );
        }
        if let Some(flight) = state.inflight.remove(request_id) {
            let outcome = Outcome {
                request_id: request_id.to_owned(),
                kind: if read.oversized { OutcomeKind::Error } else { kind },
                status,
                headers: head.headers.clone(),
                body: read.body,
                body_len: read.body_len,
                trailers: read.trailers,
                streamed: streaming,
                chunks: read.chunks,
                delivered_ns: flight.delivered_ns,
                first_byte_ns: read.first_byte_ns,
                done_ns,
            };
            finish(shared, &mut state, flight.event, outcome);
        }
    }
    if status == 410 {
        answer_error(conn, 410, "InvokeTimeout", "Invoke timeout")?;
    } else {
        answer(conn, 202, "application/json", &[], ACCEPTED)?;
    }
    Ok(Next::KeepAlive)
}

/// What a reply carried.
#[derive(Default)]
struct ReplyBody {
    /// Cut at the keep limit; `body_len` counts every byte.
    body: Vec<u8>,
    body_len: usize,
    trailers: Headers,
    chunks: usize,
    first_byte_ns: u64,
    /// Past Lambda's limit for the kind of response.
    oversized: bool,
}

/// The buffer a streamed body is read through when no caller takes it: as large as a benchmark's chunks, so a
/// chunk takes as few `read` calls as the socket allows.
const STREAM_SCRATCH: usize = 1024 * 1024;

/// Reads a streamed response chunk by chunk, passing each on to the invoke caller's sink as it arrives. With
/// `cut`, reading stops after the first chunk so that the caller can close the connection mid-stream.
fn read_streamed(
    conn: &mut Connection,
    head: &RequestHead,
    sink: Option<&SyncSender<Piece>>,
    keep: usize,
    cut: bool,
) -> io::Result<ReplyBody> {
    let content_type = header(&head.headers, "content-type").unwrap_or("application/octet-stream");
    if let Some(sink) = sink {
        let _ = sink.send(Piece::Head(content_type.to_owned()));
    }
    let mut read = ReplyBody::default();
    // Where the bytes past the keep limit land when nobody takes them: one buffer for the whole stream, so a
    // benchmark's 200 MiB cost no allocation per chunk.
    let mut scratch = Vec::new();
    loop {
        let size = conn.read_chunk_size()?;
        if size == 0 {
            read.trailers = conn.read_trailers()?;
            break;
        }
        if read.first_byte_ns == 0 {
            read.first_byte_ns = monotonic_ns();
        }
        read.chunks += 1;
        read.body_len += size;
        let room = keep.saturating_sub(read.body.len()).min(size);
        if let Some(sink) = sink {
            let mut chunk = vec![0; size];
            conn.read_exact_into(&mut chunk)?;
            read.body.extend_from_slice(&chunk[..room]);
            // A slow caller blocks this send and so this read: the runtime's writes back up, as they would
            // behind Lambda's throttled stream.
            let _ = sink.send(Piece::Data(chunk));
        } else {
            // The kept part goes straight into the body, the rest through the scratch buffer.
            let at = read.body.len();
            read.body.resize(at + room, 0);
            conn.read_exact_into(&mut read.body[at..])?;
            let mut left = size - room;
            while left > 0 {
                if scratch.is_empty() {
                    scratch = vec![0; STREAM_SCRATCH];
                }
                let step = left.min(scratch.len());
                conn.read_exact_into(&mut scratch[..step])?;
                left -= step;
            }
        }
        conn.read_chunk_end()?;
        if cut {
            return Ok(read);
        }
    }
    if let Some(sink) = sink {
        let _ = sink.send(Piece::End(read.trailers.clone()));
    }
    read.oversized = read.body_len > STREAM_LIMIT;
    Ok(read)
}

fn record_reply(
    shared: &Shared,
    kind: OutcomeKind,
    request_id: &str,
    status: u16,
    head: &RequestHead,
    read: &ReplyBody,
    at_ns: u64,
) {
    let mut state = shared.lock();
    shared.record(&mut state, reply_record(&kind, request_id, status, head, read, at_ns));
}

/// The record of a reply: records keep at most 64 KiB of a body, outcomes carry the rest.
fn reply_record(
    kind: &OutcomeKind,
    request_id: &str,
    status: u16,
    head: &RequestHead,
    read: &ReplyBody,
    at_ns: u64,
) -> Record {
    Record {
        kind: if *kind == OutcomeKind::Response {
            "response"
        } else {
            "error"
        },
        request_id: Some(request_id.to_owned()),
        status,
        headers: head.headers.clone(),
        body: kept(&read.body, 64 * 1024),
        body_len: read.body_len,
        trailers: read.trailers.clone(),
        at_ns,
    }
}

fn init_error(conn: &mut Connection, head: &RequestHead, shared: &Shared, config: &Config) -> io::Result<Next> {
    let at = monotonic_ns();
    let (body, _, _) = conn.read_body(head.framing, STREAM_LIMIT)?;
    let status = {
        let mut state = shared.lock();
        state.init_errors += 1;
        // On Managed Instances only the first worker's init error is taken.
        let status = if config.max_concurrency > 0 && state.init_errors > 1 {
            403
        } else {
            202
        };
        let body_len = body.len();
        shared.record(
            &mut state,
            Record {
                kind: "init_error",
                request_id: None,
                status,
                headers: head.headers.clone(),
                body: kept(&body, config.keep_body),
                body_len,
                trailers: Headers::new(),
                at_ns: at,
            },
        );
        status
    };
    if status == 403 {
        answer_error(conn, 403, "InvalidStateTransition", "init error already reported")?;
    } else {
        answer(conn, 202, "application/json", &[], ACCEPTED)?;
    }
    Ok(Next::KeepAlive)
}

fn restore_next(conn: &mut Connection, head: &RequestHead, shared: &Shared) -> io::Result<Next> {
    conn.discard_body(head.framing)?;
    let mut state = shared.lock();
    shared.record(
        &mut state,
        Record {
            kind: "restore_next",
            request_id: None,
            status: 200,
            headers: head.headers.clone(),
            body: Vec::new(),
            body_len: 0,
            trailers: Headers::new(),
            at_ns: monotonic_ns(),
        },
    );
    drop(state);
    // The snapshot is "taken and restored" at once: there is no VM to freeze here.
    answer(conn, 200, "", &[], b"")?;
    Ok(Next::KeepAlive)
}

fn restore_error(conn: &mut Connection, head: &RequestHead, shared: &Shared, config: &Config) -> io::Result<Next> {
    let at = monotonic_ns();
    let (body, _, _) = conn.read_body(head.framing, STREAM_LIMIT)?;
    let mut state = shared.lock();
    let body_len = body.len();
    shared.record(
        &mut state,
        Record {
            kind: "restore_error",
            request_id: None,
            status: 202,
            headers: head.headers.clone(),
            body: kept(&body, config.keep_body),
            body_len,
            trailers: Headers::new(),
            at_ns: at,
        },
    );
    drop(state);
    answer(conn, 202, "application/json", &[], ACCEPTED)?;
    Ok(Next::KeepAlive)
}

/// `POST /2015-03-31/functions/function/invocations`, as the Runtime Interface Emulator serves it: the event is
/// queued, and the response goes back to the caller, streamed as the runtime writes it when it streams.
fn invoke(conn: &mut Connection, head: &RequestHead, shared: &Shared, config: &Config) -> io::Result<Next> {
    let (body, _, oversized) = conn.read_body(head.framing, BUFFERED_LIMIT)?;
    if oversized {
        answer_error(
            conn,
            413,
            "RequestEntityTooLarge",
            "Request must be smaller than 6291556 bytes",
        )?;
        return Ok(Next::KeepAlive);
    }
    let content_type = header(&head.headers, "content-type")
        .unwrap_or("application/json")
        .to_owned();
    let (sender, receiver) = mpsc::sync_channel(16);
    let mut headers = Headers::new();
    for name in ["lambda-runtime-aws-tenant-id", "lambda-runtime-trace-id"] {
        if let Some(value) = header(&head.headers, name) {
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    let server_event = Event {
        request_id: String::new(),
        body: body.into(),
        content_type: Some(content_type),
        headers,
        deadline_ms: None,
        fault: Fault::default(),
        sink: Some(sender),
        expect: None,
        enqueued_ns: monotonic_ns(),
    };
    let request_id = {
        let mut state = shared.lock();
        let mut event = server_event;
        event.request_id = shared.request_id(&mut state);
        let id = event.request_id.clone();
        state.queue.push_back(event);
        shared.event_ready.notify_one();
        id
    };

    let wait = config.timeout + Duration::from_secs(5);
    let first = match receiver.recv_timeout(wait) {
        Ok(piece) => piece,
        Err(RecvTimeoutError::Timeout) => {
            answer_error(conn, 504, "Sandbox.Timedout", "the function did not answer in time")?;
            return Ok(Next::KeepAlive);
        }
        Err(RecvTimeoutError::Disconnected) => {
            answer_error(conn, 503, "ServiceUnavailable", "the emulator is shutting down")?;
            return Ok(Next::Close);
        }
    };
    let result = match first {
        Piece::Done(outcome) => answer_outcome(conn, &outcome),
        Piece::Head(content_type) => relay_stream(conn, &receiver, &content_type, &request_id, wait),
        Piece::Data(_) | Piece::End(_) => Err(io::Error::other("stream without a head")),
    };
    // Whatever the caller did, the outcome is not left for the Python side to collect.
    shared.lock().outcomes.remove(&request_id);
    result
}

fn answer_outcome(conn: &mut Connection, outcome: &Outcome) -> io::Result<Next> {
    let content_type = header(&outcome.headers, "content-type").unwrap_or("application/json");
    let request_id = [("X-Amzn-RequestId", outcome.request_id.as_str())];
    match outcome.kind {
        OutcomeKind::Response => answer(conn, 200, content_type, &request_id, &outcome.body)?,
        OutcomeKind::Error => {
            let extra = [request_id[0], ("X-Amz-Function-Error", "Unhandled")];
            answer(conn, 200, content_type, &extra, &outcome.body)?;
        }
        OutcomeKind::Dropped | OutcomeKind::Exit => {
            answer_error(conn, 502, "Runtime.ExitError", "the runtime exited without answering")?;
        }
    }
    Ok(Next::KeepAlive)
}

/// Passes a streamed response on to the caller as it arrives: chunked, with the runtime's error trailers as
/// real HTTP trailers, and a Function URL prelude turned into the status line and headers it describes.
fn relay_stream(
    conn: &mut Connection,
    receiver: &mpsc::Receiver<Piece>,
    content_type: &str,
    request_id: &str,
    wait: Duration,
) -> io::Result<Next> {
    let mut prelude: Option<Vec<u8>> = (content_type == HTTP_INTEGRATION).then(Vec::new);
    let mut started = false;
    let start = |conn: &mut Connection, status: u16, headers: &[(String, String)]| -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {status} {}\r\nX-Amzn-RequestId: {request_id}\r\n",
            reason(status)
        );
        for (name, value) in headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str(
            "Transfer-Encoding: chunked\r\nTrailer: Lambda-Runtime-Function-Error-Type, \
             Lambda-Runtime-Function-Error-Body\r\n\r\n",
        );
        conn.write_all_vectored(&[head.as_bytes()])
    };
    loop {
        let Ok(piece) = receiver.recv_timeout(wait) else {
            return Ok(Next::Close);
        };
        match piece {
            Piece::Data(data) => {
                if let Some(buffer) = prelude.as_mut() {
                    buffer.extend_from_slice(&data);
                    if let Some(at) = find_delimiter(buffer) {
                        let (status, headers) = parse_prelude(&buffer[..at]);
                        start(conn, status, &headers)?;
                        started = true;
                        let rest = buffer[at + 8..].to_vec();
                        prelude = None;
                        conn.write_chunk(&rest)?;
                    }
                    continue;
                }
                if !started {
                    start(conn, 200, &[("Content-Type".into(), content_type.to_owned())])?;
                    started = true;
                }
                conn.write_chunk(&data)?;
            }
            Piece::End(trailers) => {
                if !started {
                    start(conn, 200, &[("Content-Type".into(), content_type.to_owned())])?;
                }
                let mut tail = String::from("0\r\n");
                for (name, value) in &trailers {
                    let _ = write!(tail, "{name}: {value}\r\n");
                }
                tail.push_str("\r\n");
                conn.write_all_vectored(&[tail.as_bytes()])?;
                return Ok(Next::KeepAlive);
            }
            Piece::Head(_) | Piece::Done(_) => return Ok(Next::Close),
        }
    }
}

fn find_delimiter(buffer: &[u8]) -> Option<usize> {
    buffer.windows(8).position(|w| w == [0u8; 8])
}

/// Reads a Function URL prelude: `statusCode`, `headers` and `cookies` (as `Set-Cookie` headers).
fn parse_prelude(prelude: &[u8]) -> (u16, Vec<(String, String)>) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(prelude) else {
        return (500, vec![("Content-Type".into(), "text/plain".into())]);
    };
    let status = value
        .get("statusCode")
        .and_then(serde_json::Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(200);
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(map) = value.get("headers").and_then(serde_json::Value::as_object) {
        for (name, value) in map {
            let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
            headers.push((name.clone(), text));
        }
    }
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
        headers.push(("Content-Type".into(), "application/octet-stream".into()));
    }
    if let Some(cookies) = value.get("cookies").and_then(serde_json::Value::as_array) {
        for cookie in cookies.iter().filter_map(serde_json::Value::as_str) {
            headers.push(("Set-Cookie".into(), cookie.to_owned()));
        }
    }
    (status, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prelude_gives_status_headers_and_cookies() {
        let (status, headers) = parse_prelude(br#"{"statusCode":201,"headers":{"x-a":"1"},"cookies":["a=1","b=2"]}"#);
        assert_eq!(status, 201);
        assert!(headers.contains(&("x-a".into(), "1".into())));
        assert!(headers.contains(&("Content-Type".into(), "application/octet-stream".into())));
        assert_eq!(headers.iter().filter(|(n, _)| n == "Set-Cookie").count(), 2);
    }

    #[test]
    fn invalid_prelude_is_a_500() {
        assert_eq!(parse_prelude(b"{nope").0, 500);
    }

    #[test]
    fn delimiter_is_eight_nul_bytes() {
        assert_eq!(find_delimiter(b"{}\0\0\0\0\0\0\0\0body"), Some(2));
        assert_eq!(find_delimiter(b"{}\0\0\0\0\0\0\0body"), None);
    }
}
