//! The floor: a Runtime API client that does nothing but the HTTP loop, for the benchmark harness to measure real
//! runtimes against. `GET /next`, then the event body straight back to `/response`: one keep-alive connection with
//! Nagle's algorithm off, one write per request, and no parsing beyond the status line and the headers it needs.
//!
//! `FLOOR_RESPONSE_FILE=path` answers every event with that file's bytes instead (a large buffered response), and
//! `FLOOR_STREAM_BYTES=n` streams `n` bytes in 1 MiB chunks, byte `i` of each chunk being `i % 256`, as the
//! benchmark's streaming handler yields them.

use std::env;
use std::fmt::{Display, Write as _};
use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;

const PREFIX: &str = "/2018-06-01/runtime/invocation";
const CHUNK: usize = 1 << 20;

/// What every invocation is answered with.
enum Reply {
    Echo,
    Fixed(Vec<u8>),
    Stream(usize),
}

/// The parts of an HTTP response the loop looks at.
struct Response {
    status: u16,
    request_id: String,
}

/// One keep-alive connection to the Runtime API, with a read buffer that carries over between responses.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
}

fn invalid(message: impl Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

impl Connection {
    /// Reads more bytes into the buffer, making room first; the emulator closing the connection is `UnexpectedEof`.
    fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buffer.len() {
            if self.start > 0 {
                self.buffer.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.buffer.resize(self.buffer.len() * 2, 0);
            }
        }
        let read = self.stream.read(&mut self.buffer[self.end..])?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.end += read;
        Ok(())
    }

    /// Reads one response: its status and request id, and its body into `body`.
    fn read_response(&mut self, body: &mut Vec<u8>) -> io::Result<Response> {
        let head_len = loop {
            if let Some(at) = find(&self.buffer[self.start..self.end], b"\r\n\r\n") {
                break at + 4;
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buffer[self.start..self.start + head_len]).map_err(invalid)?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid("a response without a status line"))?;
        let mut length = 0;
        let mut request_id = String::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(invalid)?;
            } else if name.eq_ignore_ascii_case("lambda-runtime-aws-request-id") {
                value.clone_into(&mut request_id);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(invalid("the floor reads no chunked bodies"));
            }
        }
        self.start += head_len;

        body.clear();
        let buffered = (self.end - self.start).min(length);
        body.extend_from_slice(&self.buffer[self.start..self.start + buffered]);
        self.start += buffered;
        if body.len() < length {
            let have = body.len();
            body.resize(length, 0);
            self.stream.read_exact(&mut body[have..])?;
        }
        Ok(Response { status, request_id })
    }

    /// Writes every part, in one `writev` unless the socket takes less at once.
    fn write_all(&mut self, parts: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut parts = parts;
        while !parts.is_empty() {
            let written = self.stream.write_vectored(parts)?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut parts, written);
        }
        Ok(())
    }
}

fn post(conn: &mut Connection, head: &mut String, address: &str, id: &str, body: &[u8]) -> io::Result<()> {
    head.clear();
    let _ = write!(
        head,
        "POST {PREFIX}/{id}/response HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(&mut [IoSlice::new(head.as_bytes()), IoSlice::new(body)])
}

fn post_stream(conn: &mut Connection, address: &str, id: &str, total: usize, chunk: &[u8]) -> io::Result<()> {
    let head = format!(
        "POST {PREFIX}/{id}/response HTTP/1.1\r\nHost: {address}\r\n\
         Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    if total == 0 {
        return conn.write_all(&mut [IoSlice::new(head.as_bytes()), IoSlice::new(b"0\r\n\r\n")]);
    }
    let mut left = total;
    let mut first = true;
    while left > 0 {
        let size = left.min(chunk.len());
        left -= size;
        let size_line = format!("{size:x}\r\n");
        let end: &[u8] = if left == 0 { b"\r\n0\r\n\r\n" } else { b"\r\n" };
        let start: &[u8] = if first { head.as_bytes() } else { b"" };
        first = false;
        conn.write_all(&mut [
            IoSlice::new(start),
            IoSlice::new(size_line.as_bytes()),
            IoSlice::new(&chunk[..size]),
            IoSlice::new(end),
        ])?;
    }
    Ok(())
}

fn run() -> io::Result<()> {
    let address = env::var("AWS_LAMBDA_RUNTIME_API").map_err(|_| invalid("AWS_LAMBDA_RUNTIME_API is not set"))?;
    let reply = if let Ok(path) = env::var("FLOOR_RESPONSE_FILE") {
        Reply::Fixed(std::fs::read(path)?)
    } else if let Ok(bytes) = env::var("FLOOR_STREAM_BYTES") {
        Reply::Stream(bytes.parse().map_err(invalid)?)
    } else {
        Reply::Echo
    };
    let stream = TcpStream::connect(address.as_str())?;
    stream.set_nodelay(true)?;
    let mut conn = Connection {
        stream,
        buffer: vec![0; 64 * 1024],
        start: 0,
        end: 0,
    };
    let next = format!("GET {PREFIX}/next HTTP/1.1\r\nHost: {address}\r\n\r\n");
    let chunk: Vec<u8> = (0..CHUNK).map(|i| i as u8).collect();
    let (mut event, mut answer, mut head) = (Vec::new(), Vec::new(), String::new());

    loop {
        conn.write_all(&mut [IoSlice::new(next.as_bytes())])?;
        let delivered = conn.read_response(&mut event)?;
        if delivered.status != 200 {
            return Err(invalid(format!("/next answered HTTP {}", delivered.status)));
        }
        let id = delivered.request_id;
        match &reply {
            Reply::Echo => post(&mut conn, &mut head, &address, &id, &event)?,
            Reply::Fixed(body) => post(&mut conn, &mut head, &address, &id, body)?,
            Reply::Stream(total) => post_stream(&mut conn, &address, &id, *total, &chunk)?,
        }
        let accepted = conn.read_response(&mut answer)?;
        if accepted.status != 202 {
            return Err(invalid(format!("the response was answered HTTP {}", accepted.status)));
        }
    }
}

fn main() -> ExitCode {
    match run() {
        // The emulator closed the connection: it is shutting down, and so is the floor.
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("floor: {error}");
            ExitCode::FAILURE
        }
        Ok(()) => ExitCode::SUCCESS,
    }
}
