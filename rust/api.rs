//! The Runtime API client: one keep-alive HTTP/1.1 connection, one method per endpoint.
//!
//! Free of PyO3 types so that `cargo test` covers it without an interpreter. The Python binding in `client`
//! releases the GIL around every call here.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::thread;
use std::time::Duration;

use crate::config::Endpoint;
use crate::http::{header, Connection, Framing, Headers};
use crate::invocation::{InvocationMeta, MetaError};

/// `GET /runtime/invocation/next`.
pub const PATH_NEXT: &str = "/runtime/invocation/next";
/// `POST /runtime/init/error`.
pub const PATH_INIT_ERROR: &str = "/runtime/init/error";
/// `GET /runtime/restore/next` (SnapStart).
pub const PATH_RESTORE_NEXT: &str = "/runtime/restore/next";
/// `POST /runtime/restore/error` (SnapStart).
pub const PATH_RESTORE_ERROR: &str = "/runtime/restore/error";

/// awslambdaric's C++ client gives up connecting after one second; the Runtime API is local.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Attempts for a request whose connection failed or that RAPID answered with a 5xx, and the first back-off.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Error bodies from RAPID are small JSON documents; anything bigger is not read in full.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// `/runtime/invocation/{id}/response`.
#[must_use]
pub fn path_response(request_id: &str) -> String {
    format!("/runtime/invocation/{request_id}/response")
}

/// `/runtime/invocation/{id}/error`.
#[must_use]
pub fn path_error(request_id: &str) -> String {
    format!("/runtime/invocation/{request_id}/error")
}

/// Why a Runtime API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the Runtime API at `{authority}`: {source}")]
    Connect { authority: String, source: io::Error },
    #[error("the connection to the Runtime API failed during `{path}`: {source}")]
    Io { path: String, source: io::Error },
    #[error("the Runtime API answered `{path}` with HTTP {status}: {body}")]
    Status { path: String, status: u16, body: String },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("interrupted by a signal")]
    Interrupted,
}

impl ApiError {
    /// Whether the same request may be sent again: the connection broke, or RAPID had a transient 5xx.
    fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Io { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::Meta(_) | Self::Interrupted => false,
        }
    }
}

/// What RAPID said to a POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// 2xx.
    #[must_use]
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A `/next` answer whose body has not been read yet, so the caller can read it into memory it owns.
#[derive(Debug)]
pub struct NextHead {
    pub meta: InvocationMeta,
    pub framing: Framing,
}

/// What a wait for the `/next` answer reported.
pub enum Wake {
    /// The socket is readable.
    Ready,
    /// A signal arrived (through the wake-up fd or `EINTR`): the caller runs Python's handlers, then waits again.
    Signal,
    /// Another thread asked this wait to end (`Interrupter::interrupt`).
    Interrupted,
}

/// The longest chunk size line: 16 hex digits and CRLF.
const CHUNK_LINE_MAX: usize = 18;

/// Writes `len` as a chunk size line (`<hex>\r\n`) into `out`, without allocating: it is done once per chunk.
fn chunk_size_line(len: usize, out: &mut [u8; CHUNK_LINE_MAX]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (at, slot) in out[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - at);
        *slot = HEX[(len >> shift) & 0xf];
    }
    out[digits..digits + 2].copy_from_slice(b"\r\n");
    &out[..digits + 2]
}

/// A streamed response in progress: owns its connection until the body is ended.
pub struct StreamWriter {
    connection: Connection,
    path: String,
    written: usize,
}

impl StreamWriter {
    /// Body bytes written so far.
    #[must_use]
    pub fn written(&self) -> usize {
        self.written
    }

    /// Writes one chunk straight from `data`, its size line and CRLF around it in the same vectored write; the
    /// socket's own flow control pauses the caller while RAPID is not reading.
    pub fn write(&mut self, data: &[u8]) -> Result<(), ApiError> {
        if data.is_empty() {
            // An empty chunk would end the body.
            return Ok(());
        }
        let mut line = [0u8; CHUNK_LINE_MAX];
        let line = chunk_size_line(data.len(), &mut line);
        self.connection
            .write_all_vectored(&[line, data, b"\r\n"])
            .map_err(|source| ApiError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.written += data.len();
        Ok(())
    }

    /// Ends the body, with the error trailers when `error` is `(type, base64 body)`, and reads RAPID's answer. The
    /// connection is closed afterwards, as the streaming documentation asks.
    pub fn finish(mut self, error: Option<(&str, &str)>) -> Result<Reply, ApiError> {
        let io_err = |source| ApiError::Io {
            path: self.path.clone(),
            source,
        };
        let trailer = match error {
            Some((error_type, body)) => format!(
                "0\r\nLambda-Runtime-Function-Error-Type: {error_type}\r\n\
                 Lambda-Runtime-Function-Error-Body: {body}\r\n\r\n"
            ),
            None => "0\r\n\r\n".to_owned(),
        };
        self.connection
            .write_all_vectored(&[trailer.as_bytes()])
            .map_err(io_err)?;
        let head = self.connection.read_response_head().map_err(io_err)?;
        let (body, _, _) = self
            .connection
            .read_body(head.framing, MAX_ERROR_BODY)
            .map_err(io_err)?;
        Ok(Reply {
            status: head.status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A self-pipe through which another thread ends a pending wait for good: a Managed Instances slot that is
/// being shut down. Once interrupted, every later wait returns at once.
pub struct Interrupter {
    read: OwnedFd,
    write: OwnedFd,
}

impl Interrupter {
    pub fn new() -> io::Result<Self> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a live two-element array, as pipe2 requires.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(Self { read, write })
    }

    /// Ends the current and every later wait.
    pub fn interrupt(&self) {
        let byte = 1u8;
        // SAFETY: writes one byte from a live local; a full pipe (EAGAIN) already means "interrupted".
        unsafe { libc::write(self.write.as_raw_fd(), std::ptr::addr_of!(byte).cast(), 1) };
    }

    /// The descriptor a wait polls.
    #[must_use]
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

/// Blocks until `fd` is readable, a signal arrives or `interrupt` is readable. `wakeup` is the read end of
/// Python's `signal.set_wakeup_fd` pipe: the interpreter's C handler writes to it, so a signal ends the wait
/// without any polling interval.
pub fn wait_readable(fd: RawFd, wakeup: Option<RawFd>, interrupt: Option<RawFd>) -> io::Result<Wake> {
    let entry = |fd: Option<RawFd>| libc::pollfd {
        fd: fd.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    };
    // A negative fd is ignored by poll, so absent descriptors need no separate array shapes.
    let mut fds = [entry(Some(fd)), entry(wakeup), entry(interrupt)];
    // SAFETY: `fds` is a live array of three initialised pollfd structs for the duration of the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(Wake::Signal)
        } else {
            Err(err)
        };
    }
    if fds[2].revents != 0 {
        return Ok(Wake::Interrupted);
    }
    if fds[1].revents != 0 {
        let mut drain = [0u8; 64];
        // SAFETY: reading into a live stack buffer of the stated length; the fd is non-blocking (Python requires it).
        while unsafe { libc::read(fds[1].fd, drain.as_mut_ptr().cast(), drain.len()) } > 0 {}
        return Ok(Wake::Signal);
    }
    Ok(Wake::Ready)
}

/// A client of one Runtime API endpoint over one keep-alive connection.
pub struct RuntimeApi {
    endpoint: Endpoint,
    user_agent: String,
    connection: Option<Connection>,
}

impl RuntimeApi {
    /// A client that connects on first use.
    #[must_use]
    pub fn new(endpoint: Endpoint, user_agent: String) -> Self {
        Self {
            endpoint,
            user_agent,
            connection: None,
        }
    }

    /// The endpoint this client talks to.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn connect(&self) -> Result<Connection, ApiError> {
        let authority = &self.endpoint.authority;
        let fail = |source| ApiError::Connect {
            authority: authority.clone(),
            source,
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in authority.to_socket_addrs().map_err(fail)? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(stream) => return Connection::new(stream).map_err(fail),
                Err(e) => last = e,
            }
        }
        Err(fail(last))
    }

    fn connection(&mut self) -> Result<&mut Connection, ApiError> {
        if self.connection.is_none() {
            self.connection = Some(self.connect()?);
        }
        Ok(self.connection.as_mut().expect("connection was just set"))
    }

    /// Drops the connection, so the next call opens a new one (after a failure, or before a SnapStart snapshot).
    pub fn reset(&mut self) {
        self.connection = None;
    }

    fn head(&self, method: &str, path: &str, extra: &[(&str, &str)], body_len: Option<usize>) -> String {
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\n",
            self.endpoint.base_path, self.endpoint.authority, self.user_agent
        );
        for (name, value) in extra {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        if let Some(len) = body_len {
            head.push_str("Content-Length: ");
            head.push_str(&len.to_string());
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head
    }

    /// Runs `call` up to `ATTEMPTS` times while it fails in a retryable way, with doubling back-off.
    fn with_retries<T>(&mut self, mut call: impl FnMut(&mut Self) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match call(self) {
                Ok(value) => return Ok(value),
                Err(err) if err.is_retryable() && attempt < ATTEMPTS => {
                    self.reset();
                    thread::sleep(backoff);
                    backoff *= 2;
                    attempt += 1;
                }
                Err(err) => {
                    if !matches!(err, ApiError::Status { .. } | ApiError::Meta(_)) {
                        self.reset();
                    }
                    return Err(err);
                }
            }
        }
    }

    fn read_reply(&mut self, path: &str) -> Result<(u16, Headers, String), ApiError> {
        let io_err = |source| ApiError::Io {
            path: path.to_owned(),
            source,
        };
        let conn = self.connection()?;
        let head = conn.read_response_head().map_err(io_err)?;
        let (body, _, _) = conn.read_body(head.framing, MAX_ERROR_BODY).map_err(io_err)?;
        let keep = header(&head.headers, "connection").is_none_or(|v| !v.eq_ignore_ascii_case("close"));
        if !keep || head.framing == Framing::UntilClose {
            self.reset();
        }
        Ok((head.status, head.headers, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Sends one buffered request and reads RAPID's answer. 5xx answers come back as `Ok`: the caller decides.
    fn request_once(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let head = self.head(method, path, extra, (method == "POST").then_some(body.len()));
        let io_err = |source| ApiError::Io {
            path: path.to_owned(),
            source,
        };
        self.connection()?
            .write_all_vectored(&[head.as_bytes(), body])
            .map_err(io_err)?;
        let (status, _, body) = self.read_reply(path)?;
        Ok(Reply { status, body })
    }

    /// POSTs a buffered body, retrying lost connections and 5xx answers; 4xx answers are returned to the caller.
    pub fn post(&mut self, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Result<Reply, ApiError> {
        self.with_retries(|api| {
            let reply = api.request_once("POST", path, extra, body)?;
            if reply.status >= 500 {
                return Err(ApiError::Status {
                    path: path.to_owned(),
                    status: reply.status,
                    body: reply.body,
                });
            }
            Ok(reply)
        })
    }

    /// Asks for the next invocation and reads its head; the body is left on the connection for the caller
    /// (`read_body_into` or `read_body`). `wait` is called with the socket's fd before the head is read and
    /// returns `Err(ApiError::Interrupted)` to abandon the wait.
    pub fn next_head(
        &mut self,
        wait: &mut dyn FnMut(RawFd, bool) -> Result<(), ApiError>,
    ) -> Result<NextHead, ApiError> {
        self.with_retries(|api| {
            let head = api.head("GET", PATH_NEXT, &[], None);
            let io_err = |source| ApiError::Io {
                path: PATH_NEXT.to_owned(),
                source,
            };
            let conn = api.connection()?;
            conn.write_all_vectored(&[head.as_bytes()]).map_err(io_err)?;
            wait(conn.raw_fd(), conn.has_buffered())?;
            let response = conn.read_response_head().map_err(io_err)?;
            if response.status != 200 {
                let (body, _, _) = conn.read_body(response.framing, MAX_ERROR_BODY).map_err(io_err)?;
                let body = String::from_utf8_lossy(&body).into_owned();
                return Err(ApiError::Status {
                    path: PATH_NEXT.to_owned(),
                    status: response.status,
                    body,
                });
            }
            match InvocationMeta::from_headers(&response.headers) {
                Ok(meta) => Ok(NextHead {
                    meta,
                    framing: response.framing,
                }),
                Err(err) => {
                    // The body still has to leave the connection before it can be reused.
                    conn.read_body(response.framing, usize::MAX).map_err(io_err)?;
                    Err(err.into())
                }
            }
        })
    }

    /// Reads a `Content-Length` event body straight into `out` (sized from `Framing::Length`).
    pub fn read_body_into(&mut self, out: &mut [u8]) -> Result<(), ApiError> {
        let conn = self.connection()?;
        let result = conn.read_exact_into(out);
        result.map_err(|source| {
            self.reset();
            ApiError::Io {
                path: PATH_NEXT.to_owned(),
                source,
            }
        })
    }

    /// Reads a chunked or close-delimited event body.
    pub fn read_body(&mut self, framing: Framing) -> Result<Vec<u8>, ApiError> {
        let result = self.connection()?.read_body(framing, usize::MAX);
        match result {
            Ok((body, _, _)) => {
                if framing == Framing::UntilClose {
                    self.reset();
                }
                Ok(body)
            }
            Err(source) => {
                self.reset();
                Err(ApiError::Io {
                    path: PATH_NEXT.to_owned(),
                    source,
                })
            }
        }
    }

    /// Starts a streamed response to `request_id`: sends the head (`Transfer-Encoding: chunked`, the streaming
    /// response mode, both error trailers declared) and hands the connection to the returned writer. Nothing of
    /// the body has left yet, so a broken connection is retried like any request.
    pub fn open_stream(&mut self, request_id: &str, extra: &[(&str, &str)]) -> Result<StreamWriter, ApiError> {
        let path = path_response(request_id);
        let mut headers: Vec<(&str, &str)> = vec![
            ("Lambda-Runtime-Function-Response-Mode", "streaming"),
            ("Transfer-Encoding", "chunked"),
            (
                "Trailer",
                "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
            ),
        ];
        headers.extend_from_slice(extra);
        self.with_retries(|api| {
            let head = api.head("POST", &path, &headers, None);
            let io_err = |source| ApiError::Io {
                path: path.clone(),
                source,
            };
            api.connection()?
                .write_all_vectored(&[head.as_bytes()])
                .map_err(io_err)?;
            Ok(())
        })?;
        let connection = self.connection.take().ok_or_else(|| ApiError::Io {
            path: path.clone(),
            source: io::Error::new(io::ErrorKind::NotConnected, "no connection after sending the head"),
        })?;
        Ok(StreamWriter {
            connection,
            path,
            written: 0,
        })
    }

    /// `GET /runtime/restore/next`: blocks until the SnapStart snapshot was taken and restored.
    pub fn restore_next(&mut self) -> Result<Reply, ApiError> {
        self.with_retries(|api| {
            let reply = api.request_once("GET", PATH_RESTORE_NEXT, &[], &[])?;
            if reply.status >= 500 {
                return Err(ApiError::Status {
                    path: PATH_RESTORE_NEXT.to_owned(),
                    status: reply.status,
                    body: reply.body,
                });
            }
            Ok(reply)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-connection server that answers each request with the next canned response and returns what it got.
    fn serve(responses: Vec<&'static [u8]>) -> (Endpoint, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint::parse(&listener.local_addr().unwrap().to_string()).unwrap();
        let handle = thread::spawn(move || {
            let mut seen = Vec::new();
            let mut responses = responses.into_iter();
            while let Some(first) = responses.next() {
                let (mut stream, _) = listener.accept().unwrap();
                let mut pending = Some(first);
                while let Some(response) = pending.take() {
                    let mut buf = [0u8; 4096];
                    let n = stream.read(&mut buf).unwrap();
                    seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    if response.is_empty() {
                        break; // drop the connection without answering
                    }
                    stream.write_all(response).unwrap();
                    pending = responses.next();
                }
            }
            seen
        });
        (endpoint, handle)
    }

    #[expect(clippy::unnecessary_wraps, reason = "the signature next_head expects")]
    fn no_wait(_: RawFd, _: bool) -> Result<(), ApiError> {
        Ok(())
    }

    #[test]
    fn next_then_post_on_one_connection() {
        let (endpoint, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: r1\r\nContent-Length: 2\r\n\r\n{}",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 15\r\n\r\n{\"status\":\"OK\"}",
        ]);
        let mut api = RuntimeApi::new(endpoint, "test".to_owned());
        let next = api.next_head(&mut no_wait).unwrap();
        assert_eq!(next.meta.request_id, "r1");
        let mut body = vec![0; 2];
        api.read_body_into(&mut body).unwrap();
        assert_eq!(body, b"{}");
        let reply = api
            .post(&path_response("r1"), &[("Content-Type", "application/json")], b"1")
            .unwrap();
        assert!(reply.is_success());
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n"));
        assert!(seen[1].contains("Content-Length: 1\r\n") && seen[1].ends_with("\r\n\r\n1"));
    }

    #[test]
    fn lost_connection_is_retried_on_a_new_one() {
        let (endpoint, server) = serve(vec![
            b"",
            b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: r2\r\nContent-Length: 0\r\n\r\n",
        ]);
        let mut api = RuntimeApi::new(endpoint, "test".to_owned());
        assert_eq!(api.next_head(&mut no_wait).unwrap().meta.request_id, "r2");
        assert_eq!(server.join().unwrap().len(), 2);
    }

    #[test]
    fn missing_request_id_is_an_error_and_the_connection_stays_usable() {
        let (endpoint, _server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: r3\r\nContent-Length: 0\r\n\r\n",
        ]);
        let mut api = RuntimeApi::new(endpoint, "test".to_owned());
        assert!(matches!(
            api.next_head(&mut no_wait),
            Err(ApiError::Meta(MetaError::MissingRequestId))
        ));
        assert_eq!(api.next_head(&mut no_wait).unwrap().meta.request_id, "r3");
    }

    #[test]
    fn client_error_is_returned_not_retried() {
        let (endpoint, _server) = serve(vec![
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}",
        ]);
        let mut api = RuntimeApi::new(endpoint, "test".to_owned());
        let reply = api.post(&path_response("r"), &[], b"x").unwrap();
        assert_eq!(reply.status, 413);
    }

    #[test]
    fn chunk_size_lines_are_lower_case_hex() {
        let mut out = [0u8; CHUNK_LINE_MAX];
        assert_eq!(chunk_size_line(1, &mut out), b"1\r\n");
        assert_eq!(chunk_size_line(0xabc, &mut out), b"abc\r\n");
        assert_eq!(chunk_size_line(1 << 20, &mut out), b"100000\r\n");
        assert_eq!(chunk_size_line(usize::MAX, &mut out), b"ffffffffffffffff\r\n");
    }

    /// Reads one streamed request up to the end of its trailers, answers it, and returns the bytes as sent.
    fn serve_stream(answer: &'static [u8]) -> (Endpoint, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint::parse(&listener.local_addr().unwrap().to_string()).unwrap();
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // The last chunk, then the trailer section's blank line.
            while !(seen.ends_with(b"\r\n\r\n") && seen.windows(5).any(|w| w == b"\r\n0\r\n")) {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed early");
                seen.extend_from_slice(&buf[..n]);
            }
            stream.write_all(answer).unwrap();
            seen
        });
        (endpoint, handle)
    }

    #[test]
    fn stream_is_chunked_with_declared_trailers() {
        let (endpoint, server) = serve_stream(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}");
        let mut api = RuntimeApi::new(endpoint, "test".to_owned());
        let mut writer = api.open_stream("r1", &[("Content-Type", "text/plain")]).unwrap();
        writer.write(b"hello ").unwrap();
        writer.write(b"").unwrap();
        writer.write(&[b'x'; 300]).unwrap();
        assert_eq!(writer.written(), 306);
        let reply = writer.finish(Some(("Function.Oops", "e30="))).unwrap();
        assert_eq!(reply.status, 202);

        let seen = server.join().unwrap();
        let text = String::from_utf8(seen).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /2018-06-01/runtime/invocation/r1/response HTTP/1.1\r\n"));
        assert!(head.contains("\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n"));
        assert!(head.contains("\r\nTransfer-Encoding: chunked\r\n"));
        assert!(
            head.contains("\r\nTrailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n")
        );
        assert!(head.contains("\r\nContent-Type: text/plain"));
        let expected = format!(
            "6\r\nhello \r\n12c\r\n{}\r\n0\r\nLambda-Runtime-Function-Error-Type: Function.Oops\r\n\
             Lambda-Runtime-Function-Error-Body: e30=\r\n\r\n",
            "x".repeat(300)
        );
        assert_eq!(body, expected);
    }

    #[test]
    fn unreachable_api_is_a_connect_error_after_retries() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = Endpoint::parse(&listener.local_addr().unwrap().to_string()).unwrap();
        drop(listener);
        let mut api = RuntimeApi::new(endpoint, "test".to_owned());
        assert!(matches!(api.next_head(&mut no_wait), Err(ApiError::Connect { .. })));
    }
}
