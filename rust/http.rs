//! HTTP/1.1 message framing over a blocking socket, for both ends of the Runtime API.
//!
//! Heads are parsed by `httparse`; this module adds what a parser leaves to its caller: buffering, body framing
//! (`Content-Length`, chunked with trailers, read-to-close), and writes that put each message on the wire in as
//! few syscalls as possible. The Runtime API is one local peer, so a blocking socket with the GIL released is the
//! shortest path from the kernel to Python: no executor, no task wake-ups.

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

/// Largest head (request or status line plus headers) either side accepts.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers either side accepts in one head.
const MAX_HEADERS: usize = 64;
/// Read buffer size: one `read` call serves a whole small message.
const READ_CHUNK: usize = 64 * 1024;

/// Header names lower-cased, values as sent (lossy UTF-8: the Runtime API only sends ASCII).
pub type Headers = Vec<(String, String)>;

/// Looks a header up by its lower-case name; an empty value counts as absent, as RAPID sometimes sends them.
#[must_use]
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
    /// The body runs until the peer closes (a response without length or chunking).
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Headers,
    pub framing: Framing,
}

/// A parsed request head.
#[derive(Debug)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub headers: Headers,
    pub framing: Framing,
}

/// An HTTP/1.1 connection: a socket and the bytes read from it but not yet consumed.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn framing_of(headers: &Headers, is_response_without_body: bool) -> io::Result<Framing> {
    if is_response_without_body {
        return Ok(Framing::Length(0));
    }
    if let Some(te) = header(headers, "transfer-encoding") {
        if te.to_ascii_lowercase().contains("chunked") {
            return Ok(Framing::Chunked);
        }
    }
    match header(headers, "content-length") {
        Some(v) => v
            .trim()
            .parse()
            .map(Framing::Length)
            .map_err(|_| invalid("invalid Content-Length")),
        None => Ok(Framing::UntilClose),
    }
}

fn collect_headers(parsed: &[httparse::Header<'_>]) -> Headers {
    parsed
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

impl Connection {
    /// Wraps an open socket, with Nagle's algorithm off: every message here is latency-bound.
    pub fn new(stream: TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        })
    }

    /// The socket, for `poll` and for shutting it down from another thread.
    #[must_use]
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket's file descriptor.
    #[must_use]
    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Whether bytes are already buffered, so a wait for readability would be wrong.
    #[must_use]
    pub fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start == 0 {
                return Err(invalid("message head too large"));
            }
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = loop {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        self.end += n;
        Ok(n)
    }

    fn fill_or_eof(&mut self) -> io::Result<()> {
        if self.fill()? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by peer",
            ));
        }
        Ok(())
    }

    /// Reads one response head. `head_request` is true when the request had no response body (HEAD).
    pub fn read_response_head(&mut self) -> io::Result<ResponseHead> {
        loop {
            let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut storage);
            match response.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or(0);
                    let headers = collect_headers(response.headers);
                    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
                    let framing = framing_of(&headers, no_body)?;
                    self.start += len;
                    return Ok(ResponseHead {
                        status,
                        headers,
                        framing,
                    });
                }
                Ok(httparse::Status::Partial) => {
                    if self.end - self.start >= MAX_HEAD {
                        return Err(invalid("response head too large"));
                    }
                    self.fill_or_eof()?;
                }
                Err(_) => return Err(invalid("malformed HTTP response head")),
            }
        }
    }

    /// Reads one request head; `Ok(None)` when the peer closed the connection cleanly between requests.
    pub fn read_request_head(&mut self) -> io::Result<Option<RequestHead>> {
        loop {
            if self.start < self.end {
                let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut request = httparse::Request::new(&mut storage);
                match request.parse(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete(len)) => {
                        let method = request.method.unwrap_or("").to_owned();
                        let path = request.path.unwrap_or("").to_owned();
                        let headers = collect_headers(request.headers);
                        // A request without length or chunking has no body (RFC 9112 section 6.3).
                        let framing = match framing_of(&headers, false)? {
                            Framing::UntilClose => Framing::Length(0),
                            other => other,
                        };
                        self.start += len;
                        return Ok(Some(RequestHead {
                            method,
                            path,
                            headers,
                            framing,
                        }));
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.end - self.start >= MAX_HEAD {
                            return Err(invalid("request head too large"));
                        }
                    }
                    Err(_) => return Err(invalid("malformed HTTP request head")),
                }
            }
            if self.fill()? == 0 {
                if self.start == self.end {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a request head",
                ));
            }
        }
    }

    /// Reads exactly `out.len()` body bytes into `out`: buffered bytes first, then straight from the socket, so a
    /// large body is never copied through the read buffer.
    pub fn read_exact_into(&mut self, out: &mut [u8]) -> io::Result<()> {
        let buffered = (self.end - self.start).min(out.len());
        out[..buffered].copy_from_slice(&self.buf[self.start..self.start + buffered]);
        self.start += buffered;
        if buffered < out.len() {
            self.stream.read_exact(&mut out[buffered..])?;
        }
        Ok(())
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf[self.start..self.end].windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[self.start..self.start + pos].to_vec();
                self.start += pos + 2;
                return Ok(line);
            }
            if self.end - self.start >= MAX_HEAD {
                return Err(invalid("chunk line too long"));
            }
            self.fill_or_eof()?;
        }
    }

    /// Reads the next chunk's size line; `Ok(0)` is the last chunk (trailers follow, see `read_trailers`).
    pub fn read_chunk_size(&mut self) -> io::Result<usize> {
        let line = self.read_line()?;
        let digits = line.split(|b| *b == b';').next().unwrap_or(&[]);
        let text = std::str::from_utf8(digits).map_err(|_| invalid("invalid chunk size"))?;
        usize::from_str_radix(text.trim(), 16).map_err(|_| invalid("invalid chunk size"))
    }

    /// Consumes the CRLF that ends a chunk's data.
    pub fn read_chunk_end(&mut self) -> io::Result<()> {
        if self.read_line()?.is_empty() {
            Ok(())
        } else {
            Err(invalid("chunk data longer than its size"))
        }
    }

    /// Reads the trailer section after the last chunk.
    pub fn read_trailers(&mut self) -> io::Result<Headers> {
        let mut trailers = Headers::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                return Ok(trailers);
            }
            let text = String::from_utf8_lossy(&line);
            if let Some((name, value)) = text.split_once(':') {
                trailers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
    }

    /// Reads a whole chunked body into `out` (appending) and returns its trailers. `limit` bounds the body size:
    /// past it the rest is read and dropped, and `Ok((trailers, true))` says the body was too large.
    pub fn read_chunked(&mut self, out: &mut Vec<u8>, limit: usize) -> io::Result<(Headers, bool)> {
        let mut oversized = false;
        let mut scratch = Vec::new();
        loop {
            let size = self.read_chunk_size()?;
            if size == 0 {
                return Ok((self.read_trailers()?, oversized));
            }
            if !oversized && out.len() + size <= limit {
                let at = out.len();
                out.resize(at + size, 0);
                self.read_exact_into(&mut out[at..])?;
            } else {
                oversized = true;
                scratch.resize(size.min(READ_CHUNK), 0);
                let mut left = size;
                while left > 0 {
                    let n = left.min(scratch.len());
                    self.read_exact_into(&mut scratch[..n])?;
                    left -= n;
                }
            }
            self.read_chunk_end()?;
        }
    }

    /// Reads a whole body of the given framing into a new vector (trailers, if any, are returned too).
    pub fn read_body(&mut self, framing: Framing, limit: usize) -> io::Result<(Vec<u8>, Headers, bool)> {
        match framing {
            Framing::Length(n) => {
                if n > limit {
                    self.discard(n)?;
                    return Ok((Vec::new(), Headers::new(), true));
                }
                let mut body = vec![0; n];
                self.read_exact_into(&mut body)?;
                Ok((body, Headers::new(), false))
            }
            Framing::Chunked => {
                let mut body = Vec::new();
                let (trailers, oversized) = self.read_chunked(&mut body, limit)?;
                Ok((body, trailers, oversized))
            }
            Framing::UntilClose => {
                let mut body = self.buf[self.start..self.end].to_vec();
                self.start = self.end;
                self.stream.read_to_end(&mut body)?;
                let oversized = body.len() > limit;
                Ok((body, Headers::new(), oversized))
            }
        }
    }

    /// Reads and drops a whole body of the given framing.
    pub fn discard_body(&mut self, framing: Framing) -> io::Result<()> {
        match framing {
            Framing::Length(n) => self.discard(n),
            Framing::Chunked => self.read_chunked(&mut Vec::new(), 0).map(drop),
            Framing::UntilClose => self.read_body(framing, 0).map(drop),
        }
    }

    /// Reads and drops `n` body bytes.
    pub fn discard(&mut self, mut n: usize) -> io::Result<()> {
        let mut scratch = vec![0; n.min(READ_CHUNK)];
        while n > 0 {
            let step = n.min(scratch.len());
            self.read_exact_into(&mut scratch[..step])?;
            n -= step;
        }
        Ok(())
    }

    /// Writes all of `parts` with vectored writes: a head and its body leave in one syscall when they fit.
    pub fn write_all_vectored(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        write_all_vectored(&mut self.stream, parts)
    }

    /// Writes one chunk of a chunked body without joining it with its framing.
    pub fn write_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            // An empty chunk would end the body.
            return Ok(());
        }
        let size = format!("{:x}\r\n", data.len());
        self.write_all_vectored(&[size.as_bytes(), data, b"\r\n"])
    }
}

/// `write_all` for a list of slices, retrying short and interrupted writes.
pub fn write_all_vectored(stream: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "connection closed while writing",
                ))
            }
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn pair(server_bytes: &'static [u8]) -> Connection {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for piece in server_bytes.chunks(7) {
                s.write_all(piece).unwrap();
            }
        });
        Connection::new(TcpStream::connect(addr).unwrap()).unwrap()
    }

    #[test]
    fn reads_content_length_response_split_across_reads() {
        let mut c = pair(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello");
        let head = c.read_response_head().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(header(&head.headers, "content-type"), Some("application/json"));
        let (body, _, over) = c.read_body(head.framing, 100).unwrap();
        assert_eq!(body, b"hello");
        assert!(!over);
    }

    #[test]
    fn reads_chunked_body_with_trailers() {
        let mut c = pair(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
        );
        let head = c.read_response_head().unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        let (body, trailers, _) = c.read_body(head.framing, 100).unwrap();
        assert_eq!(body, b"abcde");
        assert_eq!(trailers, vec![("x-t".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn oversized_chunked_body_is_drained_and_flagged() {
        let mut c = pair(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n");
        let head = c.read_response_head().unwrap();
        let (body, _, over) = c.read_body(head.framing, 4).unwrap();
        assert!(over);
        assert_eq!(body, b"abc");
    }

    #[test]
    fn empty_header_value_counts_as_absent() {
        let headers = vec![("lambda-runtime-client-context".to_owned(), String::new())];
        assert_eq!(header(&headers, "lambda-runtime-client-context"), None);
    }

    #[test]
    fn malformed_head_is_an_error_not_a_panic() {
        let mut c = pair(b"NOT HTTP AT ALL\r\n\r\n");
        assert!(c.read_response_head().is_err());
    }

    #[test]
    fn eof_inside_head_is_an_error() {
        let mut c = pair(b"HTTP/1.1 200 OK\r\nContent-Le");
        assert_eq!(c.read_response_head().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn reads_request_heads_back_to_back() {
        let mut c = pair(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nok");
        let first = c.read_request_head().unwrap().unwrap();
        assert_eq!((first.method.as_str(), first.path.as_str()), ("GET", "/a"));
        assert_eq!(first.framing, Framing::Length(0));
        let second = c.read_request_head().unwrap().unwrap();
        let (body, _, _) = c.read_body(second.framing, 10).unwrap();
        assert_eq!(body, b"ok");
        assert!(c.read_request_head().unwrap().is_none());
    }
}
