//! The event decoder and the result encoder, with awslambdaric's observable rules.
//!
//! awslambdaric decodes an `application/json` event with `simplejson.loads` and encodes a result with a
//! `simplejson.JSONEncoder` (`allow_nan=True`, `use_decimal=False`, and a `default` that writes a `Decimal` as its
//! `str()`). The encoder here writes the bytes that encoder's output becomes, following its type dispatch order,
//! key rules and error messages; the decoder builds what `simplejson.loads` builds and words its errors the same
//! way. Neither imports a Python module: cold start pays for every import.

use std::ffi::c_char;
use std::ptr;

use pyo3::exceptions::{
    PyAttributeError, PyException, PyRecursionError, PyTypeError, PyUnicodeEncodeError, PyValueError,
};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

pyo3::create_exception!(
    slipstream._native,
    MarshalError,
    pyo3::exceptions::PyTypeError,
    "A value awslambdaric's encoder would refuse."
);
pyo3::create_exception!(
    slipstream._native,
    JSONDecodeError,
    pyo3::exceptions::PyValueError,
    "Invalid JSON."
);

/// Deeper events are refused. The parser keeps its own stack, so this guards what comes after it: Python code that
/// walks the event recursively, and the encoder if the handler returns it.
const MAX_DECODE_DEPTH: usize = 10_000;

/// The encoder recurses on the native stack; Python's recursion limit normally stops it far sooner, and this bound
/// holds when that limit has been raised. Each level costs well under 1 KiB, so an 8 MiB thread stack is safe.
const MAX_ENCODE_DEPTH: usize = 5_000;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `x` is below `n` (`n` at most 128).
const fn has_less(x: u64, n: u8) -> bool {
    x.wrapping_sub(ONES * n as u64) & !x & HIGHS != 0
}

/// Whether any byte of `x` equals `b`.
const fn has_byte(x: u64, b: u8) -> bool {
    has_less(x ^ (ONES * b as u64), 1)
}

/// Whether any byte of `x` is above `n` (`n` at most 127).
const fn has_more(x: u64, n: u8) -> bool {
    (x.wrapping_add(ONES * (127 - n) as u64) | x) & HIGHS != 0
}

/// Whether eight input bytes hold anything a JSON string body cannot pass through: a quote, a backslash or a
/// control character.
const fn string_special(x: u64) -> bool {
    has_less(x, 0x20) || has_byte(x, b'"') || has_byte(x, b'\\')
}

/// As `string_special`, plus everything outside printable ASCII: what simplejson's `ensure_ascii` escapes.
const fn ascii_special(x: u64) -> bool {
    string_special(x) || has_more(x, 0x7e)
}

const fn byte_table(ascii: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b == b'"' as usize || b == b'\\' as usize || (ascii && b > 0x7e);
        b += 1;
    }
    table
}

/// Bytes a string body cannot hold as they are.
static STRING_SPECIAL: [bool; 256] = byte_table(false);
/// Bytes simplejson escapes when `ensure_ascii` is on.
static ASCII_SPECIAL: [bool; 256] = byte_table(true);

/// The first index at or after `i` whose byte `table` marks, or `data.len()`; eight bytes at a time while `wide`
/// finds none.
#[inline]
fn skip_plain(data: &[u8], mut i: usize, table: &[bool; 256], wide: fn(u64) -> bool) -> usize {
    while let Some(chunk) = data.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        if wide(u64::from_le_bytes(*chunk)) {
            break;
        }
        i += 8;
    }
    while i < data.len() && !table[data[i] as usize] {
        i += 1;
    }
    i
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u_escape(out: &mut Vec<u8>, unit: u32) {
    out.extend_from_slice(&[
        b'\\',
        b'u',
        HEX[(unit >> 12 & 0xf) as usize],
        HEX[(unit >> 8 & 0xf) as usize],
        HEX[(unit >> 4 & 0xf) as usize],
        HEX[(unit & 0xf) as usize],
    ]);
}

/// The escape simplejson writes for an ASCII byte it does not pass through.
fn push_ascii_escape(out: &mut Vec<u8>, b: u8) {
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => return push_u_escape(out, u32::from(b)),
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// Decodes the sequence starting at `src[i]`, a lead byte of at least 0x80, without validating it: the input comes
/// from CPython, as UTF-8 or as UTF-8 with lone surrogates kept (`surrogatepass`). Returns the code point and the
/// sequence's length.
fn decode_sequence(src: &[u8], i: usize) -> (u32, usize) {
    let cont = |k: usize| u32::from(src.get(i + k).copied().unwrap_or(0x80) & 0x3f);
    let lead = u32::from(src[i]);
    if lead < 0xe0 {
        ((lead & 0x1f) << 6 | cont(1), 2)
    } else if lead < 0xf0 {
        ((lead & 0x0f) << 12 | cont(1) << 6 | cont(2), 3)
    } else {
        ((lead & 0x07) << 18 | cont(1) << 12 | cont(2) << 6 | cont(3), 4)
    }
}

/// Writes a string body as simplejson's `ensure_ascii` encoder does: printable ASCII as is, the short escapes, and
/// `\uXXXX` (lowercase, a surrogate pair above the BMP) for everything else, lone surrogates included.
fn escape_ascii(src: &[u8], out: &mut Vec<u8>) {
    out.reserve(src.len());
    let mut run = 0;
    let mut i = 0;
    loop {
        i = skip_plain(src, i, &ASCII_SPECIAL, ascii_special);
        out.extend_from_slice(&src[run..i]);
        let Some(&b) = src.get(i) else { return };
        if b < 0x80 {
            push_ascii_escape(out, b);
            i += 1;
        } else {
            let (code, len) = decode_sequence(src, i);
            if code >= 0x1_0000 {
                let v = code - 0x1_0000;
                push_u_escape(out, 0xd800 | (v >> 10 & 0x3ff));
                push_u_escape(out, 0xdc00 | (v & 0x3ff));
            } else {
                push_u_escape(out, code);
            }
            i += len;
        }
        run = i;
    }
}

/// Writes a string body as simplejson's encoder does with `ensure_ascii` off: only quotes, backslashes and control
/// characters are escaped.
fn escape_utf8(src: &[u8], out: &mut Vec<u8>) {
    out.reserve(src.len());
    let mut run = 0;
    let mut i = 0;
    loop {
        i = skip_plain(src, i, &STRING_SPECIAL, string_special);
        out.extend_from_slice(&src[run..i]);
        let Some(&b) = src.get(i) else { return };
        push_ascii_escape(out, b);
        i += 1;
        run = i;
    }
}

/// A run of lone surrogates in `surrogatepass` UTF-8: its byte offset, its first code point and its length in
/// characters.
#[derive(Debug, PartialEq, Eq)]
struct Surrogates {
    offset: usize,
    first: u32,
    count: usize,
}

fn is_surrogate_at(src: &[u8], i: usize) -> bool {
    src.get(i) == Some(&0xed) && src.get(i + 1).is_some_and(|&b| b >= 0xa0)
}

/// The first run of lone surrogates in `surrogatepass` UTF-8, which strict UTF-8 cannot carry.
fn find_surrogates(src: &[u8]) -> Option<Surrogates> {
    let offset = (0..src.len()).find(|&i| is_surrogate_at(src, i))?;
    let first = decode_sequence(src, offset).0;
    let mut count = 1;
    while is_surrogate_at(src, offset + 3 * count) {
        count += 1;
    }
    Some(Surrogates { offset, first, count })
}

/// Python's wording for a str that UTF-8 cannot carry; `position` counts characters of the document.
fn surrogate_message(run: &Surrogates, position: usize) -> String {
    if run.count == 1 {
        format!(
            "'utf-8' codec can't encode character '\\u{:04x}' in position {position}: surrogates not allowed",
            run.first
        )
    } else {
        let last = position + run.count - 1;
        format!("'utf-8' codec can't encode characters in position {position}-{last}: surrogates not allowed")
    }
}

fn count_chars(utf8: &[u8]) -> usize {
    utf8.iter().filter(|&&b| b & 0xc0 != 0x80).count()
}

fn write_i64(out: &mut Vec<u8>, value: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = value.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if value < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// A fixed buffer for one formatted float: `{:e}` of an f64 is at most 24 bytes.
struct FloatText {
    buf: [u8; 32],
    len: usize,
}

impl std::fmt::Write for FloatText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The shortest decimal digits that read back as `value` (finite, not negative) under Rust's rules, as an
/// integer `digits` and a power of ten `exp`: `value` reads back from `digits` × 10^`exp`.
fn shortest(value: f64) -> (u64, i32) {
    use std::fmt::Write;
    let mut text = FloatText { buf: [0; 32], len: 0 };
    // `{:e}` of a finite f64 always fits the buffer.
    let _ = write!(text, "{value:e}");
    let text = &text.buf[..text.len];
    let split = text.iter().position(|&b| b == b'e').unwrap_or(text.len());
    let (mantissa, exponent) = text.split_at(split);
    let mut digits = 0u64;
    let mut count = 0;
    for &d in mantissa.iter().filter(|d| d.is_ascii_digit()) {
        digits = digits * 10 + u64::from(d - b'0');
        count += 1;
    }
    let exponent = exponent.get(1..).unwrap_or_default();
    let (negative, magnitude) = match exponent.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, exponent),
    };
    let magnitude = magnitude.iter().fold(0i32, |n, d| n * 10 + i32::from(d - b'0'));
    let exp = if negative { -magnitude } else { magnitude };
    (digits, exp - (count - 1))
}

/// Whether `value` (finite, positive) lies exactly halfway between two decimals, `odd` / 2 × 10^`exp` with `odd`
/// odd. Writing `value` as m × 2^e with m odd, that is m × 2^(e+1) = `odd` × 5^`exp` × 2^`exp`, so both the
/// powers of two and the odd parts must agree.
fn is_midpoint(value: f64, odd: u128, exp: i32) -> bool {
    let bits = value.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (m, e) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | 1 << 52, biased - 1075)
    };
    if m == 0 {
        return false;
    }
    let zeros = m.trailing_zeros();
    let (m, e) = (u128::from(m >> zeros), e + zeros as i32);
    if e + 1 != exp {
        return false;
    }
    let Some(five) = 5u128.checked_pow(exp.unsigned_abs()) else {
        return false;
    };
    if exp >= 0 {
        odd.checked_mul(five) == Some(m)
    } else {
        m.checked_mul(five) == Some(odd)
    }
}

fn reads_back(digits: u64, exp: i32, value: f64) -> bool {
    use std::fmt::Write;
    let mut text = FloatText { buf: [0; 32], len: 0 };
    write!(text, "{digits}e{exp}").is_ok()
        && std::str::from_utf8(&text.buf[..text.len])
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            == Some(value)
}

/// Writes a finite float as `float.__repr__` does. Both Rust's `{:e}` and CPython's `dtoa` (mode 0) find the
/// shortest digits that read back as the same double; when two such candidates are equally near, `dtoa` takes
/// the one ending in an even digit, which is corrected for here. repr then lays the digits out positionally when
/// the decimal point falls within 16 digits and 4 zeros after it, and with a signed exponent of at least two
/// digits otherwise.
fn write_float_repr(out: &mut Vec<u8>, value: f64) {
    let magnitude = value.abs();
    let (mut digits, mut exp) = shortest(magnitude);
    if digits % 2 == 1 {
        let twice = u128::from(digits) * 2;
        let other = if is_midpoint(magnitude, twice - 1, exp) {
            Some(digits - 1)
        } else if is_midpoint(magnitude, twice + 1, exp) {
            Some(digits + 1)
        } else {
            None
        };
        if let Some(other) = other.filter(|&other| reads_back(other, exp, magnitude)) {
            digits = other;
        }
    }
    while digits != 0 && digits % 10 == 0 {
        digits /= 10;
        exp += 1;
    }
    let mut text = Vec::with_capacity(20);
    write_i64(&mut text, digits as i64);
    if value.is_sign_negative() {
        out.push(b'-');
    }
    let point = exp + text.len() as i32;
    if -4 < point && point <= 16 {
        if point <= 0 {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + point.unsigned_abs() as usize, b'0');
            out.extend_from_slice(&text);
        } else if (point as usize) < text.len() {
            out.extend_from_slice(&text[..point as usize]);
            out.push(b'.');
            out.extend_from_slice(&text[point as usize..]);
        } else {
            out.extend_from_slice(&text);
            out.resize(out.len() + point as usize - text.len(), b'0');
            out.extend_from_slice(b".0");
        }
    } else {
        let exp = point - 1;
        out.push(text[0]);
        if text.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&text[1..]);
        }
        out.extend_from_slice(if exp < 0 { b"e-" } else { b"e+" });
        if exp.unsigned_abs() < 10 {
            out.push(b'0');
        }
        write_i64(out, i64::from(exp.unsigned_abs()));
    }
}

/// A number token as simplejson matches it, `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`: a fraction or an
/// exponent that is not complete is left for the caller to reject as what follows the number.
#[derive(Debug, PartialEq, Eq)]
struct Number {
    end: usize,
    is_float: bool,
}

fn scan_number(data: &[u8], start: usize) -> Option<Number> {
    let digit = |i: usize| data.get(i).is_some_and(u8::is_ascii_digit);
    let digits_from = |mut i: usize| {
        while digit(i) {
            i += 1;
        }
        i
    };
    let mut i = start + usize::from(data.get(start) == Some(&b'-'));
    match data.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits_from(i + 1),
        _ => return None,
    }
    let mut is_float = false;
    if data.get(i) == Some(&b'.') && digit(i + 1) {
        i = digits_from(i + 2);
        is_float = true;
    }
    if matches!(data.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(data.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if digit(j) {
            i = digits_from(j + 1);
            is_float = true;
        }
    }
    Some(Number { end: i, is_float })
}

/// An integer token short enough for `i64`, sign included.
fn small_int(text: &[u8]) -> i64 {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    let magnitude = digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

fn hex4(data: &[u8], at: usize) -> Option<u32> {
    let digits = data.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0u32, |n, &d| Some(n << 4 | char::from(d).to_digit(16)?))
}

/// Appends a code point as UTF-8, a surrogate as the three bytes `surrogatepass` reads back.
fn push_code_point(out: &mut Vec<u8>, code: u32) {
    if code < 0x80 {
        out.push(code as u8);
    } else if code < 0x800 {
        out.extend_from_slice(&[0xc0 | (code >> 6) as u8, 0x80 | (code & 0x3f) as u8]);
    } else if code < 0x1_0000 {
        out.extend_from_slice(&[
            0xe0 | (code >> 12) as u8,
            0x80 | (code >> 6 & 0x3f) as u8,
            0x80 | (code & 0x3f) as u8,
        ]);
    } else {
        out.extend_from_slice(&[
            0xf0 | (code >> 18) as u8,
            0x80 | (code >> 12 & 0x3f) as u8,
            0x80 | (code >> 6 & 0x3f) as u8,
            0x80 | (code & 0x3f) as u8,
        ]);
    }
}

/// Where an error is, counted as simplejson counts it: in characters of the decoded document.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Position {
    char: usize,
    line: usize,
    column: usize,
}

fn position(data: &[u8], byte: usize) -> Position {
    let before = &data[..byte.min(data.len())];
    let char = count_chars(before);
    match before.iter().rposition(|&b| b == b'\n') {
        None => Position {
            char,
            line: 1,
            column: char + 1,
        },
        Some(newline) => Position {
            char,
            line: before.split(|&b| b == b'\n').count(),
            column: char - count_chars(&before[..newline]),
        },
    }
}

/// simplejson's `errmsg`: the message, then where, then (for "Extra data") where the document ends.
fn error_text(msg: &str, at: Position, end: Option<Position>) -> String {
    match end {
        None => format!("{msg}: line {} column {} (char {})", at.line, at.column, at.char),
        Some(end) => format!(
            "{msg}: line {} column {} - line {} column {} (char {} - {})",
            at.line, at.column, end.line, end.column, at.char, end.char
        ),
    }
}

/// Spreads object keys over the decoder's key cache from their length and their first and last eight bytes: a
/// collision only costs a cache miss, so a hash over every byte is not worth its time.
fn key_hash(text: &[u8]) -> usize {
    let (head, tail) = if let (Some(head), Some(tail)) = (text.first_chunk::<8>(), text.last_chunk::<8>()) {
        (u64::from_le_bytes(*head), u64::from_le_bytes(*tail))
    } else {
        (text.iter().fold(0u64, |h, &b| h << 8 | u64::from(b)), 0)
    };
    let mixed = (head ^ tail.rotate_left(31) ^ text.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 40) as usize
}

fn new_str<'py>(py: Python<'py>, utf8: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the pointer and length describe a live slice; CPython copies it.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyUnicode_FromStringAndSize(utf8.as_ptr().cast(), utf8.len() as isize),
        )
    }
}

/// A str holding lone surrogates, which only the `surrogatepass` decoder builds from bytes.
fn new_str_with_surrogates<'py>(py: Python<'py>, wtf8: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: the pointer and length describe a live slice, and the error handler name is NUL-terminated.
    unsafe {
        let obj = ffi::PyUnicode_DecodeUTF8(wtf8.as_ptr().cast(), wtf8.len() as isize, c"surrogatepass".as_ptr());
        Bound::from_owned_ptr_or_err(py, obj)
    }
}

/// The `UnicodeDecodeError` Python raises for bytes that are not UTF-8: simplejson lets it through as it is, so
/// its message is the one a caller of awslambdaric sees.
#[cold]
fn utf8_error(py: Python<'_>, data: &[u8], valid_up_to: usize) -> PyErr {
    // SAFETY: the pointer and length describe a live slice; a NULL error handler means strict.
    let decoded = unsafe { ffi::PyUnicode_DecodeUTF8(data.as_ptr().cast(), data.len() as isize, ptr::null()) };
    if decoded.is_null() {
        PyErr::fetch(py)
    } else {
        // SAFETY: an owned reference the call above returned.
        unsafe { ffi::Py_DecRef(decoded) };
        PyValueError::new_err(format!("invalid UTF-8 at byte {valid_up_to}"))
    }
}

/// `sys.modules[name]` when the module is loaded. An object of a class a module defines can only exist once the
/// module has run, so looking it up here answers "could this be one of its objects" without importing anything.
fn loaded_module<'py>(py: Python<'py>, name: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    // SAFETY: the attribute name is NUL-terminated; the result is borrowed from the sys module, or NULL.
    let modules = unsafe { ffi::PySys_GetObject(c"modules".as_ptr()) };
    if modules.is_null() {
        return Ok(None);
    }
    // SAFETY: a live object borrowed from the sys module, which outlives this call.
    let modules = unsafe { Bound::from_borrowed_ptr(py, modules) };
    match modules.cast::<PyDict>() {
        Ok(modules) => modules.get_item(name),
        Err(_) => Ok(None),
    }
}

/// A class from an already-loaded module, cached once found.
fn loaded_class<'a, 'py>(
    py: Python<'py>,
    cell: &'a PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<Option<&'a Bound<'py, PyAny>>> {
    if let Some(class) = cell.get(py) {
        return Ok(Some(class.bind(py)));
    }
    let Some(module) = loaded_module(py, module)? else {
        return Ok(None);
    };
    let class = module.getattr(name)?.unbind();
    Ok(Some(cell.get_or_init(py, || class).bind(py)))
}

static DECIMAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static RAW_JSON: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Decodes an event as `simplejson.loads` does, strictly: no `NaN` or `Infinity`, no control characters in strings.
pub fn decode<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    // Validating once up front lets every string be sliced from the input without another check; it also makes
    // bad UTF-8 win over a syntax error, as it does for simplejson, which decodes the bytes before parsing.
    if let Err(err) = std::str::from_utf8(data) {
        let cause = utf8_error(py, data, err.valid_up_to());
        let message = cause
            .value(py)
            .str()
            .map_or_else(|_| String::from("invalid UTF-8"), |s| s.to_string());
        let decode_err = decode_error(py, message.clone(), &message, position(data, err.valid_up_to()));
        decode_err.set_cause(py, Some(cause));
        return Err(decode_err);
    }
    let start = if data.starts_with(b"\xef\xbb\xbf") { 3 } else { 0 };
    let mut parser = Parser {
        py,
        data,
        pos: start,
        scratch: Vec::new(),
        keys: Vec::new(),
    };
    parser.document()
}

#[cold]
fn decode_error(py: Python<'_>, text: String, msg: &str, at: Position) -> PyErr {
    let err = JSONDecodeError::new_err(text);
    let value = err.value(py);
    // The attributes json.JSONDecodeError has, apart from the document; failing to set one would only hide the
    // error being reported.
    let _ = value.setattr("msg", msg);
    let _ = value.setattr("pos", at.char);
    let _ = value.setattr("lineno", at.line);
    let _ = value.setattr("colno", at.column);
    err
}

/// Key cache size bounds; within them the cache grows with the document, so a small event does not pay for
/// clearing a large one.
const KEY_CACHE_MIN_SLOTS: usize = 16;
const KEY_CACHE_MAX_SLOTS: usize = 1024;
const KEY_CACHE_MAX_LEN: usize = 64;

enum Frame<'py> {
    Array(Bound<'py, PyList>),
    Object(Bound<'py, PyDict>, Bound<'py, PyAny>),
}

/// Where a string body ended up: still in the input (no escapes), or unescaped into the scratch buffer.
enum Body {
    Input(usize, usize),
    Scratch { surrogates: bool },
}

struct Parser<'a, 'py> {
    py: Python<'py>,
    data: &'a [u8],
    pos: usize,
    scratch: Vec<u8>,
    /// Recently seen object keys: events repeat the same keys across records, and reusing one str object skips
    /// both its allocation and its hashing when it goes into the next dict.
    keys: Vec<Option<(&'a [u8], Bound<'py, PyAny>)>>,
}

impl<'a, 'py> Parser<'a, 'py> {
    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    #[cold]
    fn error(&self, msg: &str, at: usize) -> PyErr {
        let msg = if msg.contains("%r") {
            // simplejson shows the offending character as Python's repr of it.
            let ch = std::str::from_utf8(&self.data[at.min(self.data.len())..])
                .ok()
                .and_then(|rest| rest.chars().next())
                .map(String::from)
                .unwrap_or_default();
            let shown = PyString::new(self.py, &ch)
                .repr()
                .map_or_else(|_| format!("{ch:?}"), |r| r.to_string());
            msg.replace("%r", &shown)
        } else {
            msg.to_owned()
        };
        let at = position(self.data, at);
        decode_error(self.py, error_text(&msg, at, None), &msg, at)
    }

    fn document(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let mut stack: Vec<Frame<'py>> = Vec::new();
        'value: loop {
            self.skip_ws();
            let mut value = match self.peek() {
                Some(b'[') => {
                    self.check_depth(stack.len())?;
                    self.pos += 1;
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') => {
                            self.pos += 1;
                            PyList::empty(self.py).into_any()
                        }
                        None => return Err(self.error("Expecting value or ']'", self.pos)),
                        Some(_) => {
                            stack.push(Frame::Array(PyList::empty(self.py)));
                            continue 'value;
                        }
                    }
                }
                Some(b'{') => {
                    self.check_depth(stack.len())?;
                    self.pos += 1;
                    self.skip_ws();
                    match self.peek() {
                        Some(b'}') => {
                            self.pos += 1;
                            PyDict::new(self.py).into_any()
                        }
                        Some(b'"') => {
                            let key = self.key()?;
                            stack.push(Frame::Object(PyDict::new(self.py), key));
                            continue 'value;
                        }
                        _ => {
                            return Err(self.error("Expecting property name enclosed in double quotes or '}'", self.pos))
                        }
                    }
                }
                _ => self.scalar()?,
            };
            // The value is complete: hand it to the container it belongs to, closing containers as they end.
            loop {
                let Some(frame) = stack.last_mut() else {
                    return self.end(value);
                };
                match frame {
                    Frame::Array(list) => {
                        list.append(&value)?;
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                let comma = self.pos;
                                self.pos += 1;
                                self.skip_ws();
                                if self.peek() == Some(b']') {
                                    return Err(self.error("Illegal trailing comma before end of array", comma));
                                }
                                continue 'value;
                            }
                            Some(b']') => {}
                            _ => return Err(self.error("Expecting ',' delimiter or ']'", self.pos)),
                        }
                    }
                    Frame::Object(dict, key) => {
                        dict.set_item(&*key, &value)?;
                        self.skip_ws();
                        match self.peek() {
                            Some(b',') => {
                                let comma = self.pos;
                                self.pos += 1;
                                self.skip_ws();
                                match self.peek() {
                                    Some(b'"') => {
                                        *key = self.key()?;
                                        continue 'value;
                                    }
                                    Some(b'}') => {
                                        return Err(self.error("Illegal trailing comma before end of object", comma))
                                    }
                                    _ => {
                                        let msg = "Expecting property name enclosed in double quotes";
                                        return Err(self.error(msg, self.pos));
                                    }
                                }
                            }
                            Some(b'}') => {}
                            _ => return Err(self.error("Expecting ',' delimiter or '}'", self.pos)),
                        }
                    }
                }
                self.pos += 1;
                value = match stack.pop() {
                    Some(Frame::Array(list)) => list.into_any(),
                    Some(Frame::Object(dict, _)) => dict.into_any(),
                    None => return self.end(value),
                };
            }
        }
    }

    /// Called at an opening bracket, empty containers included, with the number of containers around it.
    fn check_depth(&self, enclosing: usize) -> PyResult<()> {
        if enclosing >= MAX_DECODE_DEPTH {
            return Err(self.error(
                &format!("Nesting too deep (more than {MAX_DECODE_DEPTH} levels)"),
                self.pos,
            ));
        }
        Ok(())
    }

    fn end(&mut self, value: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        self.skip_ws();
        if self.pos == self.data.len() {
            return Ok(value);
        }
        let (at, end) = (position(self.data, self.pos), position(self.data, self.data.len()));
        Err(decode_error(
            self.py,
            error_text("Extra data", at, Some(end)),
            "Extra data",
            at,
        ))
    }

    fn scalar(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let py = self.py;
        let rest = &self.data[self.pos..];
        let (value, len) = match rest.first() {
            Some(b'"') => return self.string(),
            Some(b'-' | b'0'..=b'9') => return self.number(),
            Some(b't') if rest.starts_with(b"true") => (PyBool::new(py, true).to_owned().into_any(), 4),
            Some(b'f') if rest.starts_with(b"false") => (PyBool::new(py, false).to_owned().into_any(), 5),
            Some(b'n') if rest.starts_with(b"null") => (py.None().into_bound(py), 4),
            _ => return Err(self.error("Expecting value", self.pos)),
        };
        self.pos += len;
        Ok(value)
    }

    fn number(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let start = self.pos;
        let Some(number) = scan_number(self.data, start) else {
            return Err(self.error("Expecting value", start));
        };
        self.pos = number.end;
        let text = &self.data[start..number.end];
        if number.is_float {
            // Rust's parser rounds correctly, as Python's float() does, so both give the same double.
            let value = std::str::from_utf8(text).ok().and_then(|t| t.parse::<f64>().ok());
            let Some(value) = value else {
                return Err(self.error("Expecting value", start));
            };
            return Ok(PyFloat::new(self.py, value).into_any());
        }
        if text.len() <= 18 {
            return Ok(small_int(text).into_pyobject(self.py)?.into_any());
        }
        // Beyond i64, CPython's own conversion: exact at any size, and bounded by sys.set_int_max_str_digits
        // exactly as simplejson's int() is.
        self.scratch.clear();
        self.scratch.extend_from_slice(text);
        self.scratch.push(0);
        // SAFETY: a NUL-terminated buffer of ASCII digits that lives across the call.
        unsafe {
            let obj = ffi::PyLong_FromString(self.scratch.as_ptr().cast::<c_char>(), ptr::null_mut(), 10);
            Bound::from_owned_ptr_or_err(self.py, obj)
        }
    }

    fn string(&mut self) -> PyResult<Bound<'py, PyAny>> {
        match self.body()? {
            Body::Input(start, end) => new_str(self.py, &self.data[start..end]),
            Body::Scratch { surrogates: false } => new_str(self.py, &self.scratch),
            Body::Scratch { surrogates: true } => new_str_with_surrogates(self.py, &self.scratch),
        }
    }

    /// An object key and the `:` after it.
    fn key(&mut self) -> PyResult<Bound<'py, PyAny>> {
        let key = match self.body()? {
            Body::Input(start, end) if end - start <= KEY_CACHE_MAX_LEN => {
                let data: &'a [u8] = self.data;
                let text = &data[start..end];
                if self.keys.is_empty() {
                    let slots = (data.len() / 64)
                        .next_power_of_two()
                        .clamp(KEY_CACHE_MIN_SLOTS, KEY_CACHE_MAX_SLOTS);
                    self.keys.resize_with(slots, || None);
                }
                let slot = key_hash(text) & (self.keys.len() - 1);
                let slot = &mut self.keys[slot];
                match slot {
                    Some((cached, key)) if *cached == text => key.clone(),
                    _ => {
                        let key = new_str(self.py, text)?;
                        *slot = Some((text, key.clone()));
                        key
                    }
                }
            }
            Body::Input(start, end) => new_str(self.py, &self.data[start..end])?,
            Body::Scratch { surrogates: false } => new_str(self.py, &self.scratch)?,
            Body::Scratch { surrogates: true } => new_str_with_surrogates(self.py, &self.scratch)?,
        };
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.error("Expecting ':' delimiter", self.pos));
        }
        self.pos += 1;
        Ok(key)
    }

    /// A string body, from the opening quote at `self.pos` to just past the closing one.
    fn body(&mut self) -> PyResult<Body> {
        let data = self.data;
        let quote = self.pos;
        let mut i = quote + 1;
        let mut run = i;
        let mut escaped = false;
        let mut surrogates = false;
        loop {
            i = skip_plain(data, i, &STRING_SPECIAL, string_special);
            let Some(&b) = data.get(i) else {
                return Err(self.error("Unterminated string starting at", quote));
            };
            if b == b'"' {
                self.pos = i + 1;
                if !escaped {
                    return Ok(Body::Input(run, i));
                }
                self.scratch.extend_from_slice(&data[run..i]);
                return Ok(Body::Scratch { surrogates });
            }
            if b != b'\\' {
                return Err(self.error("Invalid control character %r at", i));
            }
            if !escaped {
                self.scratch.clear();
                escaped = true;
            }
            self.scratch.extend_from_slice(&data[run..i]);
            i = self.escape(i, quote, &mut surrogates)?;
            run = i;
        }
    }

    /// Unescapes the sequence at `backslash` into the scratch buffer; returns the index after it.
    fn escape(&mut self, backslash: usize, quote: usize, surrogates: &mut bool) -> PyResult<usize> {
        let data = self.data;
        let Some(&c) = data.get(backslash + 1) else {
            return Err(self.error("Unterminated string starting at", quote));
        };
        let unescaped = match c {
            b'"' | b'\\' | b'/' => c,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => return self.unicode_escape(backslash, surrogates),
            _ => return Err(self.error("Invalid \\X escape sequence %r", backslash + 1)),
        };
        self.scratch.push(unescaped);
        Ok(backslash + 2)
    }

    /// `\uXXXX`, joined with a following `\uXXXX` into one character when the two form a surrogate pair. Anything
    /// else leaves a lone surrogate in the string, as simplejson does.
    fn unicode_escape(&mut self, backslash: usize, surrogates: &mut bool) -> PyResult<usize> {
        let data = self.data;
        let Some(mut code) = hex4(data, backslash + 2) else {
            return Err(self.error("Invalid \\uXXXX escape sequence", backslash));
        };
        let mut next = backslash + 6;
        if (0xd800..0xdc00).contains(&code) && data.get(next..next + 2) == Some(b"\\u") {
            let Some(low) = hex4(data, next + 2) else {
                return Err(self.error("Invalid \\uXXXX escape sequence", next));
            };
            if (0xdc00..0xe000).contains(&low) {
                code = 0x1_0000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                next += 6;
            }
        }
        *surrogates |= (0xd800..0xe000).contains(&code);
        push_code_point(&mut self.scratch, code);
        Ok(next)
    }
}

/// Encodes a handler's result as awslambdaric's encoder does, appending UTF-8 to `out`. Every `Exception` on the
/// way becomes a `MarshalError` carrying the message awslambdaric would put after "Unable to marshal response: ".
pub fn encode(obj: &Bound<'_, PyAny>, ensure_ascii: bool, out: &mut Vec<u8>) -> PyResult<()> {
    let base = out.len();
    let mut encoder = Encoder {
        out,
        base,
        ascii: ensure_ascii,
        path: Vec::new(),
        depth_checked: false,
        unsendable: None,
    };
    encoder.value(obj).map_err(|err| marshal_error(obj.py(), err))?;
    match encoder.unsendable {
        Some(message) => Err(MarshalError::new_err(message)),
        None => Ok(()),
    }
}

#[cold]
fn marshal_error(py: Python<'_>, err: PyErr) -> PyErr {
    // awslambdaric catches Exception, so KeyboardInterrupt and SystemExit pass through untouched.
    if err.is_instance_of::<MarshalError>(py) || !err.is_instance_of::<PyException>(py) {
        return err;
    }
    let message = err
        .value(py)
        .str()
        .map_or_else(|_| String::from("<unprintable error>"), |s| s.to_string());
    let marshal = MarshalError::new_err(message);
    marshal.set_cause(py, Some(err));
    marshal
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| String::from("?"), |name| name.to_string())
}

/// The type objects the fast path compares against: exact builtins only, since a subclass may carry `_asdict`.
struct Builtins {
    str: *mut ffi::PyTypeObject,
    int: *mut ffi::PyTypeObject,
    float: *mut ffi::PyTypeObject,
    bool: *mut ffi::PyTypeObject,
    dict: *mut ffi::PyTypeObject,
    list: *mut ffi::PyTypeObject,
    tuple: *mut ffi::PyTypeObject,
}

fn builtins() -> Builtins {
    Builtins {
        str: ptr::addr_of_mut!(ffi::PyUnicode_Type),
        int: ptr::addr_of_mut!(ffi::PyLong_Type),
        float: ptr::addr_of_mut!(ffi::PyFloat_Type),
        bool: ptr::addr_of_mut!(ffi::PyBool_Type),
        dict: ptr::addr_of_mut!(ffi::PyDict_Type),
        list: ptr::addr_of_mut!(ffi::PyList_Type),
        tuple: ptr::addr_of_mut!(ffi::PyTuple_Type),
    }
}

#[derive(Clone, Copy)]
enum Sequence {
    List,
    Tuple,
}

struct Encoder<'o> {
    out: &'o mut Vec<u8>,
    /// Where this document starts in `out`: error positions count from here.
    base: usize,
    ascii: bool,
    /// The containers being encoded, outermost first. simplejson checks each new container against this set; here
    /// it is only read once the depth limit is reached, because a cycle is what makes an encoding reach it.
    path: Vec<*mut ffi::PyObject>,
    /// Set once a recursion error has been looked at, so the levels it unwinds through do not look again. It is
    /// turned into a `MarshalError` at the top: reading its message deep down would hit the limit once more.
    depth_checked: bool,
    /// Why the document, complete, could not be sent: lone surrogates where UTF-8 must carry them. awslambdaric
    /// only finds out when it encodes the finished str, so any error the encoding raises comes first.
    unsendable: Option<String>,
}

impl Encoder<'_> {
    fn value(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let ptr = obj.as_ptr();
        // SAFETY: `obj` is a live object.
        let ty = unsafe { ffi::Py_TYPE(ptr) };
        let types = builtins();
        if ty == types.str {
            self.string(obj)
        } else if ty == types.int {
            self.int(obj)
        } else if ty == types.dict {
            self.dict(obj)
        } else if ty == types.list {
            self.sequence(obj, Sequence::List)
        } else if ty == types.float {
            // SAFETY: `obj` is a float.
            self.float(unsafe { ffi::PyFloat_AsDouble(ptr) });
            Ok(())
        } else if obj.is_none() {
            self.out.extend_from_slice(b"null");
            Ok(())
        } else if ty == types.bool {
            // SAFETY: only the address of the True singleton is taken.
            let is_true = ptr == unsafe { ffi::Py_True() };
            self.out.extend_from_slice(if is_true { b"true" } else { b"false" });
            Ok(())
        } else if ty == types.tuple {
            self.sequence(obj, Sequence::Tuple)
        } else {
            self.other(obj)
        }
    }

    /// Descends into a container, under Python's recursion limit as simplejson's C encoder is.
    fn enter(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.path.len() >= MAX_ENCODE_DEPTH {
            return Err(self.too_deep(None));
        }
        // SAFETY: the GIL is held (there is a Bound) and the message is NUL-terminated.
        if unsafe { ffi::Py_EnterRecursiveCall(c" while encoding a JSON object".as_ptr()) } != 0 {
            return Err(self.too_deep(Some(PyErr::fetch(obj.py()))));
        }
        self.path.push(obj.as_ptr());
        Ok(())
    }

    fn leave(&mut self) {
        self.path.pop();
        // SAFETY: pairs with the successful Py_EnterRecursiveCall in `enter`.
        unsafe { ffi::Py_LeaveRecursiveCall() };
    }

    /// The depth limit was reached, by `enter` or by Python code the encoder called. A cycle on the path is what
    /// simplejson would have reported; otherwise the recursion error stands, already a `MarshalError` so that
    /// the levels it unwinds through do not look again.
    #[cold]
    fn too_deep(&mut self, recursion: Option<PyErr>) -> PyErr {
        if self.depth_checked {
            if let Some(err) = recursion {
                return err;
            }
        }
        self.depth_checked = true;
        let mut seen = self.path.clone();
        seen.sort_unstable();
        if seen.windows(2).any(|pair| pair[0] == pair[1]) {
            return MarshalError::new_err("Circular reference detected");
        }
        recursion
            .unwrap_or_else(|| MarshalError::new_err("maximum recursion depth exceeded while encoding a JSON object"))
    }

    fn string(&mut self, s: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut size: ffi::Py_ssize_t = 0;
        // SAFETY: `s` is a str or a str subclass; the buffer returned is cached on it and lives as long as it does.
        let data = unsafe { ffi::PyUnicode_AsUTF8AndSize(s.as_ptr(), &raw mut size) };
        if data.is_null() {
            return self.string_with_surrogates(s);
        }
        // SAFETY: CPython returned `size` bytes at `data`, alive while `s` is.
        let utf8 = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size as usize) };
        self.quoted(utf8);
        Ok(())
    }

    fn quoted(&mut self, utf8: &[u8]) {
        self.out.push(b'"');
        if self.ascii {
            escape_ascii(utf8, self.out);
        } else {
            escape_utf8(utf8, self.out);
        }
        self.out.push(b'"');
    }

    /// A str with lone surrogates, which UTF-8 cannot hold. `ensure_ascii` escapes them as simplejson does;
    /// without it awslambdaric's own `.encode("utf-8")` of the document fails, and that failure is reported here.
    #[cold]
    fn string_with_surrogates(&mut self, s: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = s.py();
        let err = PyErr::fetch(py);
        if !err.is_instance_of::<PyUnicodeEncodeError>(py) {
            return Err(err);
        }
        let wtf8 = surrogatepass(s)?;
        let wtf8 = wtf8.as_bytes();
        if !self.ascii {
            self.note_surrogates(wtf8, 1);
        }
        self.quoted(wtf8);
        Ok(())
    }

    /// Records the first lone surrogate of the document, which starts `skip` characters into `wtf8`'s output.
    #[cold]
    fn note_surrogates(&mut self, wtf8: &[u8], skip: usize) {
        if self.unsendable.is_some() {
            return;
        }
        if let Some(run) = find_surrogates(wtf8) {
            let mut prefix = Vec::new();
            if skip > 0 {
                escape_utf8(&wtf8[..run.offset], &mut prefix);
            } else {
                prefix.extend_from_slice(&wtf8[..run.offset]);
            }
            let position = count_chars(&self.out[self.base..]) + skip + count_chars(&prefix);
            self.unsendable = Some(surrogate_message(&run, position));
        }
    }

    /// `bytes` inside a result: simplejson decodes them as UTF-8 and writes the text.
    fn bytes(&mut self, bytes: &Bound<'_, PyBytes>) -> PyResult<()> {
        let data = bytes.as_bytes();
        if let Err(err) = std::str::from_utf8(data) {
            return Err(utf8_error(bytes.py(), data, err.valid_up_to()));
        }
        self.quoted(data);
        Ok(())
    }

    fn int(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let mut overflow = 0;
        // SAFETY: `obj` is an int; CPython reads its value without calling into Python.
        let value = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj.as_ptr(), &raw mut overflow) };
        if overflow == 0 {
            if value == -1 {
                if let Some(err) = PyErr::take(obj.py()) {
                    return Err(err);
                }
            }
            write_i64(self.out, value);
            return Ok(());
        }
        // Beyond i64: CPython's decimal text, subject to sys.set_int_max_str_digits as simplejson's str() is.
        let text = obj.str()?;
        self.out.extend_from_slice(text.to_str()?.as_bytes());
        Ok(())
    }

    fn float(&mut self, value: f64) {
        if value.is_nan() {
            self.out.extend_from_slice(b"NaN");
        } else if value.is_infinite() {
            self.out
                .extend_from_slice(if value > 0.0 { b"Infinity" } else { b"-Infinity" });
        } else {
            write_float_repr(self.out, value);
        }
    }

    fn dict(&mut self, dict: &Bound<'_, PyAny>) -> PyResult<()> {
        // SAFETY: `dict` is a dict.
        if unsafe { ffi::PyDict_Size(dict.as_ptr()) } == 0 {
            self.out.extend_from_slice(b"{}");
            return Ok(());
        }
        self.enter(dict)?;
        let result = self.dict_items(dict);
        self.leave();
        result
    }

    fn dict_items(&mut self, dict: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = dict.py();
        self.out.push(b'{');
        let mut pos: ffi::Py_ssize_t = 0;
        let mut key = ptr::null_mut();
        let mut value = ptr::null_mut();
        let mut first = true;
        // SAFETY: `dict` is a dict and the out-pointers are valid; the references it hands out are borrowed.
        while unsafe { ffi::PyDict_Next(dict.as_ptr(), &raw mut pos, &raw mut key, &raw mut value) } != 0 {
            // SAFETY: borrowed references, owned from here on so that code run while encoding the value (a
            // `_asdict`, a `__float__`) cannot free them by changing the dict.
            let (key, value) = unsafe { (Bound::from_borrowed_ptr(py, key), Bound::from_borrowed_ptr(py, value)) };
            self.member(&key, &value, first)?;
            first = false;
        }
        self.out.push(b'}');
        Ok(())
    }

    fn member(&mut self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>, first: bool) -> PyResult<()> {
        if !first {
            self.out.extend_from_slice(b", ");
        }
        if key.is_instance_of::<PyString>() {
            self.string(key)?;
        } else {
            self.key(key)?;
        }
        self.out.extend_from_slice(b": ");
        self.value(value)
    }

    /// A key that is not a str, converted as simplejson's `stringify_key` does.
    #[cold]
    fn key(&mut self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(bytes) = key.cast::<PyBytes>() {
            return self.bytes(bytes);
        }
        self.out.push(b'"');
        if let Ok(float) = key.cast::<PyFloat>() {
            self.float_subclass(float)?;
        } else if key.is_none() {
            self.out.extend_from_slice(b"null");
        } else if key.is_instance_of::<PyBool>() {
            self.out
                .extend_from_slice(if key.is_truthy()? { b"true" } else { b"false" });
        } else if key.is_instance_of::<PyInt>() {
            self.int_subclass(key)?;
        } else {
            let name = type_name(key);
            return Err(MarshalError::new_err(format!(
                "keys must be str, int, float, bool or None, not {name}"
            )));
        }
        self.out.push(b'"');
        Ok(())
    }

    fn sequence(&mut self, seq: &Bound<'_, PyAny>, kind: Sequence) -> PyResult<()> {
        let py = seq.py();
        let ptr = seq.as_ptr();
        // SAFETY: `seq` is a list or a tuple, as `kind` says.
        let len = |ptr| unsafe {
            match kind {
                Sequence::List => ffi::PyList_Size(ptr),
                Sequence::Tuple => ffi::PyTuple_Size(ptr),
            }
        };
        if len(ptr) == 0 {
            self.out.extend_from_slice(b"[]");
            return Ok(());
        }
        self.enter(seq)?;
        self.out.push(b'[');
        let mut i = 0;
        let mut result = Ok(());
        // The length is read again each time: encoding an item can run code that changes a list.
        while i < len(ptr) {
            // SAFETY: `i` is in bounds, checked just above with nothing run in between.
            let item = unsafe {
                match kind {
                    Sequence::List => ffi::PyList_GetItem(ptr, i),
                    Sequence::Tuple => ffi::PyTuple_GetItem(ptr, i),
                }
            };
            // SAFETY: a borrowed reference to an item, owned from here on for the same reason as dict values.
            let item = unsafe { Bound::from_borrowed_ptr(py, item) };
            if i > 0 {
                self.out.extend_from_slice(b", ");
            }
            result = self.value(&item);
            if result.is_err() {
                break;
            }
            i += 1;
        }
        self.out.push(b']');
        self.leave();
        result
    }

    /// Everything that is not an exact builtin, in simplejson's order: str, bytes, int and float subclasses by
    /// value; then `_asdict()`; then list, tuple and dict subclasses; then `RawJSON`; then awslambdaric's `default`.
    #[inline(never)]
    fn other(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = obj.py();
        self.other_kinds(obj).map_err(|err| {
            // Python code run from here (`_asdict`, `__iter__`, `items`) can be where a cycle hits the limit.
            if err.is_instance_of::<PyRecursionError>(py) {
                self.too_deep(Some(err))
            } else {
                err
            }
        })
    }

    fn other_kinds(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        if obj.is_instance_of::<PyString>() {
            // A str subclass is written from its characters, never from its __str__.
            return self.string(obj);
        }
        if let Ok(bytes) = obj.cast::<PyBytes>() {
            return self.bytes(bytes);
        }
        if obj.is_instance_of::<PyInt>() {
            return self.int_subclass(obj);
        }
        if let Ok(float) = obj.cast::<PyFloat>() {
            return self.float_subclass(float);
        }
        if let Some(dict) = asdict(obj)? {
            self.enter(obj)?;
            let result = self.mapping(&dict);
            self.leave();
            return result;
        }
        if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
            self.enter(obj)?;
            let result = self.iterated(obj);
            self.leave();
            return result;
        }
        if obj.is_instance_of::<PyDict>() {
            self.enter(obj)?;
            let result = self.mapping(obj);
            self.leave();
            return result;
        }
        self.fallback(obj)
    }

    /// `int(obj)` first, as simplejson does, so a custom `__str__` or `__repr__` never reaches the output.
    fn int_subclass(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        // SAFETY: `obj` is live; the result is a new reference or NULL with an exception set.
        let exact = unsafe { Bound::from_owned_ptr_or_err(obj.py(), ffi::PyNumber_Long(obj.as_ptr()))? };
        self.int(&exact)
    }

    /// Non-finite values are recognised on the stored double; finite ones go through `float(obj)` first, as
    /// simplejson does.
    fn float_subclass(&mut self, obj: &Bound<'_, PyFloat>) -> PyResult<()> {
        let raw = obj.value();
        if !raw.is_finite() || obj.is_exact_instance_of::<PyFloat>() {
            self.float(raw);
            return Ok(());
        }
        // SAFETY: `obj` is live; the result is a new reference or NULL with an exception set.
        let exact = unsafe { Bound::from_owned_ptr_or_err(obj.py(), ffi::PyNumber_Float(obj.as_ptr()))? };
        // SAFETY: PyNumber_Float returns a float.
        self.float(unsafe { ffi::PyFloat_AsDouble(exact.as_ptr()) });
        Ok(())
    }

    /// A list or tuple subclass, through its own iterator as simplejson reads it.
    fn iterated(&mut self, seq: &Bound<'_, PyAny>) -> PyResult<()> {
        self.out.push(b'[');
        for (i, item) in seq.try_iter()?.enumerate() {
            if i > 0 {
                self.out.extend_from_slice(b", ");
            }
            self.value(&item?)?;
        }
        self.out.push(b']');
        Ok(())
    }

    /// A dict of any kind: exact ones are walked directly, subclasses through their `items()`.
    fn mapping(&mut self, dict: &Bound<'_, PyAny>) -> PyResult<()> {
        // SAFETY: `dict` is a dict or a dict subclass.
        if unsafe { ffi::PyDict_Size(dict.as_ptr()) } == 0 {
            self.out.extend_from_slice(b"{}");
            return Ok(());
        }
        if dict.is_exact_instance_of::<PyDict>() {
            return self.dict_items(dict);
        }
        // SAFETY: `dict` is live; the result is a new reference or NULL with an exception set.
        let items = unsafe { Bound::from_owned_ptr_or_err(dict.py(), ffi::PyMapping_Items(dict.as_ptr()))? };
        self.out.push(b'{');
        for (i, item) in items.try_iter()?.enumerate() {
            let item = item?;
            let pair = match item.cast::<PyTuple>() {
                Ok(pair) if pair.len() == 2 => pair,
                _ => return Err(PyValueError::new_err("items must return 2-tuples")),
            };
            self.member(&pair.get_item(0)?, &pair.get_item(1)?, i == 0)?;
        }
        self.out.push(b'}');
        Ok(())
    }

    /// simplejson's `RawJSON`, then awslambdaric's `default`: a `Decimal` as its `str()` (a NaN as `NaN`), and
    /// anything else refused.
    fn fallback(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = obj.py();
        if let Some(raw_json) = loaded_class(py, &RAW_JSON, "simplejson.raw_json", "RawJSON")? {
            if obj.is_instance(raw_json)? {
                let encoded = obj.getattr(intern!(py, "encoded_json"))?;
                let Ok(encoded) = encoded.cast::<PyString>() else {
                    let found = type_name(&encoded);
                    return Err(MarshalError::new_err(format!("expected str instance, {found} found")));
                };
                return self.raw(encoded);
            }
        }
        if let Some(decimal) = loaded_class(py, &DECIMAL, "decimal", "Decimal")? {
            if obj.is_instance(decimal)? {
                self.enter(obj)?;
                let result = self.decimal(obj);
                self.leave();
                return result;
            }
        }
        let class = obj.getattr(intern!(py, "__class__"))?;
        let name = class.getattr(intern!(py, "__name__"))?.str()?;
        Err(MarshalError::new_err(format!(
            "Object of type {name} is not JSON serializable"
        )))
    }

    fn decimal(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        if obj.call_method0(intern!(obj.py(), "is_nan"))?.is_truthy()? {
            self.out.extend_from_slice(b"NaN");
            return Ok(());
        }
        self.raw(&obj.str()?)
    }

    /// Text written as it is, without quotes or escapes.
    fn raw(&mut self, text: &Bound<'_, PyString>) -> PyResult<()> {
        if let Ok(utf8) = text.to_str() {
            self.out.extend_from_slice(utf8.as_bytes());
            return Ok(());
        }
        let wtf8 = surrogatepass(text)?;
        let wtf8 = wtf8.as_bytes();
        self.note_surrogates(wtf8, 0);
        self.out.extend_from_slice(wtf8);
        Ok(())
    }
}

/// A str's characters as UTF-8 with lone surrogates kept, three bytes each. Through the C API, so that a str
/// subclass's own `encode` never runs.
fn surrogatepass<'py>(s: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    // SAFETY: `s` is a str; the codec and handler names are NUL-terminated; the result is new or NULL.
    let bytes = unsafe {
        let bytes = ffi::PyUnicode_AsEncodedString(s.as_ptr(), c"utf-8".as_ptr(), c"surrogatepass".as_ptr());
        Bound::from_owned_ptr_or_err(s.py(), bytes)?
    };
    Ok(bytes.cast_into::<PyBytes>()?)
}

/// simplejson's `namedtuple_as_object`: a callable `_asdict` attribute whose call returns a dict. A missing
/// attribute, or a call failing with `TypeError`, means "not a namedtuple".
fn asdict<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = obj.py();
    let method = match obj.getattr(intern!(py, "_asdict")) {
        Ok(method) => method,
        Err(err) if err.is_instance_of::<PyAttributeError>(py) => return Ok(None),
        Err(err) => return Err(err),
    };
    if !method.is_callable() {
        return Ok(None);
    }
    match method.call0() {
        Ok(dict) if dict.is_instance_of::<PyDict>() => Ok(Some(dict)),
        Ok(other) => Err(PyTypeError::new_err(format!(
            "_asdict() must return a dict, not {}",
            type_name(&other)
        ))),
        Err(err) if err.is_instance_of::<PyTypeError>(py) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Decodes a JSON document as an `application/json` event is decoded.
#[pyfunction]
fn loads<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    decode(py, data)
}

/// Encodes a value as a handler's result is encoded.
#[pyfunction]
#[pyo3(signature = (obj, ensure_ascii = true))]
fn dumps<'py>(obj: &Bound<'py, PyAny>, ensure_ascii: bool) -> PyResult<Bound<'py, PyBytes>> {
    let mut out = Vec::new();
    encode(obj, ensure_ascii, &mut out)?;
    Ok(PyBytes::new(obj.py(), &out))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MarshalError", m.py().get_type::<MarshalError>())?;
    m.add("JSONDecodeError", m.py().get_type::<JSONDecodeError>())?;
    m.add_function(wrap_pyfunction!(loads, m)?)?;
    m.add_function(wrap_pyfunction!(dumps, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ascii(s: &str) -> String {
        let mut out = Vec::new();
        escape_ascii(s.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    fn utf8(s: &str) -> String {
        let mut out = Vec::new();
        escape_utf8(s.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    /// A byte-by-byte statement of each SWAR predicate.
    fn reference(x: u64, table: &[bool; 256]) -> bool {
        x.to_le_bytes().iter().any(|&b| table[b as usize])
    }

    #[test]
    fn swar_predicates_agree_with_the_tables() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            // Mostly printable ASCII, with a few bytes drawn from everywhere, to exercise borrows between bytes.
            let mut bytes = next().to_le_bytes().map(|b| 0x20 + b % 0x5f);
            let wild = next();
            for k in 0..(wild % 3) as usize {
                bytes[(wild >> (8 + 3 * k)) as usize % 8] = (wild >> (24 + 8 * k)) as u8;
            }
            let x = u64::from_le_bytes(bytes);
            assert_eq!(string_special(x), reference(x, &STRING_SPECIAL), "{bytes:?}");
            assert_eq!(ascii_special(x), reference(x, &ASCII_SPECIAL), "{bytes:?}");
        }
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut bytes = [b'a'; 8];
                bytes[at] = b;
                let x = u64::from_le_bytes(bytes);
                assert_eq!(string_special(x), STRING_SPECIAL[b as usize]);
                assert_eq!(ascii_special(x), ASCII_SPECIAL[b as usize]);
            }
        }
    }

    #[test]
    fn ascii_escaping_follows_simplejson() {
        assert_eq!(
            ascii("plain text, long enough for the wide loop"),
            "plain text, long enough for the wide loop"
        );
        assert_eq!(ascii("\"\\/\u{8}\u{c}\n\r\t"), "\\\"\\\\/\\b\\f\\n\\r\\t");
        assert_eq!(ascii("\u{0}\u{1f}\u{7f}"), "\\u0000\\u001f\\u007f");
        assert_eq!(ascii("é\u{80}\u{2028}\u{ffff}"), "\\u00e9\\u0080\\u2028\\uffff");
        assert_eq!(ascii("😀\u{10ffff}"), "\\ud83d\\ude00\\udbff\\udfff");
        assert_eq!(ascii("abcdefgh\u{1}ijklmnop"), "abcdefgh\\u0001ijklmnop");
    }

    #[test]
    fn ascii_escaping_writes_lone_surrogates_as_escapes() {
        let mut out = Vec::new();
        // "a", U+D800 and U+DC00 as surrogatepass writes them, then "b".
        escape_ascii(b"a\xed\xa0\x80\xed\xb0\x80b", &mut out);
        assert_eq!(out, b"a\\ud800\\udc00b");
    }

    #[test]
    fn utf8_escaping_keeps_non_ascii() {
        assert_eq!(utf8("é😀\u{7f}\u{2028}"), "é😀\u{7f}\u{2028}");
        assert_eq!(utf8("\"\\\n\u{1}é"), "\\\"\\\\\\n\\u0001é");
    }

    #[test]
    fn surrogate_runs_are_found_and_worded_as_python_does() {
        assert_eq!(find_surrogates("é😀".as_bytes()), None);
        // U+D7FF is not a surrogate; U+D800, U+DFFF are.
        let src = b"\xed\x9f\xbfx\xed\xa0\x80\xed\xbf\xbfy";
        let run = find_surrogates(src).unwrap();
        assert_eq!(
            run,
            Surrogates {
                offset: 4,
                first: 0xd800,
                count: 2
            }
        );
        assert_eq!(
            surrogate_message(&run, 5),
            "'utf-8' codec can't encode characters in position 5-6: surrogates not allowed"
        );
        let one = Surrogates {
            offset: 0,
            first: 0xdc00,
            count: 1,
        };
        assert_eq!(
            surrogate_message(&one, 1),
            "'utf-8' codec can't encode character '\\udc00' in position 1: surrogates not allowed"
        );
    }

    #[test]
    fn floats_are_laid_out_as_python_repr() {
        // Expected texts are Python's repr of the same literals.
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123_456_789_012_345_680.0, "1.2345678901234568e+17"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (5e-324, "5e-324"),
            (1.797_693_134_862_315_7e308, "1.7976931348623157e+308"),
            (2.225_073_858_507_201_4e-308, "2.2250738585072014e-308"),
            (0.000_123, "0.000123"),
            (12345.678, "12345.678"),
            (1e22, "1e+22"),
            (9_007_199_254_740_993.0, "9007199254740992.0"),
            (1.0 / 3.0, "0.3333333333333333"),
            (100.0, "100.0"),
            (1.5e16, "1.5e+16"),
            (1_234_567_890_123_456.7, "1234567890123456.8"),
            (-2.5e-300, "-2.5e-300"),
            (9_999_999_999_999_998.0, "9999999999999998.0"),
            (0.001, "0.001"),
            (123e-20, "1.23e-18"),
            // Exactly halfway between two shortest candidates (…002.25, …429.625, …355.03125): repr takes
            // the one ending in an even digit.
            (4_452_712_482_368_009.0 / 4.0, "1113178120592002.2"),
            (1_871_134_174_267_437.0 / 8.0, "233891771783429.62"),
            (80_312_716_043_361.0 / 32.0, "2509772376355.0312"),
            (-4_452_712_482_368_009.0 / 4.0, "-1113178120592002.2"),
        ];
        for &(value, expected) in cases {
            let mut out = Vec::new();
            write_float_repr(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{value:e}");
        }
    }

    #[test]
    fn integers_are_written_in_full() {
        for value in [0, 7, -7, 10, 1_000_000, i64::MAX, i64::MIN, -1] {
            let mut out = Vec::new();
            write_i64(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes());
        }
    }

    #[test]
    fn numbers_are_scanned_as_simplejson_matches_them() {
        let scan = |s: &str| scan_number(s.as_bytes(), 0).map(|n| (n.end, n.is_float));
        assert_eq!(scan("0"), Some((1, false)));
        assert_eq!(scan("-0"), Some((2, false)));
        assert_eq!(scan("123,"), Some((3, false)));
        assert_eq!(scan("01"), Some((1, false)));
        assert_eq!(scan("1.5"), Some((3, true)));
        assert_eq!(scan("1."), Some((1, false)));
        assert_eq!(scan("1.e5"), Some((1, false)));
        assert_eq!(scan("1e5"), Some((3, true)));
        assert_eq!(scan("1E+5"), Some((4, true)));
        assert_eq!(scan("1e-"), Some((1, false)));
        assert_eq!(scan("-1.25e-10]"), Some((9, true)));
        assert_eq!(scan("-"), None);
        assert_eq!(scan("-a"), None);
        assert_eq!(scan(".5"), None);
        assert_eq!(scan("+1"), None);
        assert_eq!(small_int(b"-123456789012345678"), -123_456_789_012_345_678);
        assert_eq!(small_int(b"999999999999999999"), 999_999_999_999_999_999);
    }

    #[test]
    fn unicode_escapes_read_four_hex_digits() {
        assert_eq!(hex4(b"\\u00e9", 2), Some(0xe9));
        assert_eq!(hex4(b"\\uD83D", 2), Some(0xd83d));
        assert_eq!(hex4(b"\\u12", 2), None);
        assert_eq!(hex4(b"\\u12zz", 2), None);
        assert_eq!(hex4(b"\\u+123", 2), None);
    }

    #[test]
    fn code_points_are_written_as_utf8_and_surrogates_as_surrogatepass_does() {
        for code in [0x41, 0xe9, 0x20ac, 0x1f600, 0x0010_ffff] {
            let mut out = Vec::new();
            push_code_point(&mut out, code);
            assert_eq!(out, char::from_u32(code).unwrap().to_string().as_bytes());
            if code >= 0x80 {
                assert_eq!(decode_sequence(&out, 0), (code, out.len()));
            }
        }
        let mut out = Vec::new();
        push_code_point(&mut out, 0xd800);
        assert_eq!(out, b"\xed\xa0\x80");
    }

    #[test]
    fn positions_count_characters_lines_and_columns() {
        let doc = "[1,\n  \"é\", x]".as_bytes();
        let x = doc.iter().position(|&b| b == b'x').unwrap();
        assert_eq!(
            position(doc, x),
            Position {
                char: 11,
                line: 2,
                column: 8
            }
        );
        assert_eq!(
            position(b"abc", 0),
            Position {
                char: 0,
                line: 1,
                column: 1
            }
        );
        assert_eq!(
            position(b"a\n", 2),
            Position {
                char: 2,
                line: 2,
                column: 1
            }
        );
        let at = Position {
            char: 4,
            line: 1,
            column: 5,
        };
        let end = Position {
            char: 5,
            line: 1,
            column: 6,
        };
        assert_eq!(
            error_text("Expecting value", at, None),
            "Expecting value: line 1 column 5 (char 4)"
        );
        assert_eq!(
            error_text("Extra data", at, Some(end)),
            "Extra data: line 1 column 5 - line 1 column 6 (char 4 - 5)"
        );
    }
}
