//! The event decoder: JSON bytes straight into Python objects, as `simplejson.loads` builds them.
//!
//! A large event is mostly many small values, so the cost per value decides the speed, and much of that cost is
//! CPython's: allocating, filling and later freeing objects. What is done about it:
//! - Values are built with raw C API calls and wait, as owned references, on one stack until their container
//!   closes; a list is then made at its final size and filled, a dict filled from the pairs. No PyO3 wrapper, no
//!   `append` regrowing a list, no reference counting beyond what the containers themselves take.
//! - Records repeat their keys, their short values and their shapes: caches give back the same key str and the
//!   same short str value when the same bytes come again, and a dict of a familiar shape starts as a copy of an
//!   earlier one (`Shape`), which skips growing its table.
//! - Python's cyclic garbage collector is paused while the document is built (`GcPause`).
//! - The stacks and caches live in a per-thread `Workspace`, emptied after each call, so a small event allocates
//!   nothing of the decoder's own.
//!
//! The parser's steps return `Step`, with the `PyErr` kept aside, so that their results fit in registers.

use std::cell::RefCell;
use std::ffi::c_char;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyString;

use super::{count_chars, skip_plain, string_special, utf8_error, JSONDecodeError, STRING_SPECIAL};

/// Deeper events are refused. The parser keeps its own stack, so this guards what comes after it: Python code that
/// walks the event recursively, and the encoder if the handler returns it.
const MAX_DECODE_DEPTH: usize = 10_000;

/// A number token as simplejson matches it, `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`: a fraction or an
/// exponent that is not complete is left for the caller to reject as what follows the number. The digits are read
/// as the token is matched, so that the usual number is built without reading it a second time.
#[derive(Debug, PartialEq, Eq)]
struct Number {
    end: usize,
    is_float: bool,
    negative: bool,
    /// The integer and fraction digits as one integer, while there are at most `MAX_MANTISSA_DIGITS` of them.
    mantissa: u64,
    /// How many digits `mantissa` stands for, leading zeros included.
    digits: usize,
    /// The power of ten `mantissa` is scaled by: the exponent, less the fraction's length. Bounded far beyond
    /// any double, so that it cannot overflow.
    scale: i32,
}

/// Nineteen decimal digits always fit a `u64`.
const MAX_MANTISSA_DIGITS: usize = 19;

/// Reads the digits from `i` on into `mantissa` (while it has room) and `digits`; returns where they end.
fn take_digits(data: &[u8], mut i: usize, mantissa: &mut u64, digits: &mut usize) -> usize {
    while let Some(&b) = data.get(i).filter(|b| b.is_ascii_digit()) {
        if *digits < MAX_MANTISSA_DIGITS {
            *mantissa = *mantissa * 10 + u64::from(b - b'0');
        }
        *digits += 1;
        i += 1;
    }
    i
}

fn scan_number(data: &[u8], start: usize) -> Option<Number> {
    let is_digit = |i: usize| data.get(i).is_some_and(u8::is_ascii_digit);
    let negative = data.get(start) == Some(&b'-');
    let mut i = start + usize::from(negative);
    let (mut mantissa, mut digits) = (0u64, 0);
    match data.get(i) {
        Some(b'0') => {
            digits = 1;
            i += 1;
        }
        Some(b'1'..=b'9') => i = take_digits(data, i, &mut mantissa, &mut digits),
        _ => return None,
    }
    let mut is_float = false;
    let mut scale = 0i32;
    if data.get(i) == Some(&b'.') && is_digit(i + 1) {
        let fraction = i + 1;
        i = take_digits(data, fraction, &mut mantissa, &mut digits);
        scale = -((i - fraction).min(100_000) as i32);
        is_float = true;
    }
    if matches!(data.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        let negative_exp = data.get(j) == Some(&b'-');
        if matches!(data.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if is_digit(j) {
            let mut exp = 0i32;
            while let Some(&b) = data.get(j).filter(|b| b.is_ascii_digit()) {
                exp = (exp * 10 + i32::from(b - b'0')).min(1_000_000);
                j += 1;
            }
            scale += if negative_exp { -exp } else { exp };
            i = j;
            is_float = true;
        }
    }
    Some(Number {
        end: i,
        is_float,
        negative,
        mantissa,
        digits,
        scale,
    })
}

/// The powers of ten a double holds exactly.
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

impl Number {
    /// The integer, when it fits `i64` for certain (at most 18 digits).
    fn small_int(&self) -> Option<i64> {
        if self.is_float || self.digits > 18 {
            return None;
        }
        let magnitude = self.mantissa as i64;
        Some(if self.negative { -magnitude } else { magnitude })
    }

    /// The float's value without a general parser, when that is exact (Clinger's fast path): if the digits, read
    /// as one integer, are at most 2^53 and the power of ten they are scaled by is within 22, both operands are
    /// exact doubles and a single IEEE multiplication or division rounds correctly, so the result is the double
    /// Python's `float()` reads. `None` outside that range.
    fn fast_float(&self) -> Option<f64> {
        if self.digits > MAX_MANTISSA_DIGITS || self.mantissa > 1 << 53 {
            return None;
        }
        let power = *EXACT_POWERS_OF_TEN.get(self.scale.unsigned_abs() as usize)?;
        #[allow(clippy::cast_precision_loss)] // exact: at most 2^53, checked above
        let mantissa = self.mantissa as f64;
        let magnitude = if self.scale >= 0 {
            mantissa * power
        } else {
            mantissa / power
        };
        Some(if self.negative { -magnitude } else { magnitude })
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

/// A string's fingerprint for the caches: its length and its first and last eight bytes (overlapping; below
/// eight bytes, all of them), read with a few loads and no loop. Up to 16 bytes, equal fingerprints mean equal
/// bytes, so a cached string is recognised without going back to the input where it was first seen, which on a
/// large document is far out of the CPU's caches.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fingerprint {
    head: u64,
    tail: u64,
    len: usize,
}

/// Strings up to this long are told apart by their fingerprint alone.
const FINGERPRINT_EXACT_LEN: usize = 16;

impl Fingerprint {
    const EMPTY: Self = Self {
        head: 0,
        tail: 0,
        len: usize::MAX,
    };

    #[inline]
    fn of(text: &[u8]) -> Self {
        let (head, tail) = if let (Some(head), Some(tail)) = (text.first_chunk::<8>(), text.last_chunk::<8>()) {
            (u64::from_le_bytes(*head), u64::from_le_bytes(*tail))
        } else if let (Some(head), Some(tail)) = (text.first_chunk::<4>(), text.last_chunk::<4>()) {
            (
                u64::from(u32::from_le_bytes(*head)),
                u64::from(u32::from_le_bytes(*tail)),
            )
        } else {
            (text.iter().fold(0u64, |h, &b| h << 8 | u64::from(b)), 0)
        };
        Self {
            head,
            tail,
            len: text.len(),
        }
    }

    /// Spreads strings over a cache: a collision only costs a miss, so mixing the fingerprint is enough.
    #[inline]
    fn slot(self, slots: usize) -> usize {
        let mixed = (self.head ^ self.tail.rotate_left(29) ^ self.len as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed >> 32) as usize & (slots - 1)
    }
}

/// A new str of UTF-8 `text`: an owned reference, or null with a Python exception set.
fn new_str(text: &[u8]) -> *mut ffi::PyObject {
    // SAFETY: the pointer and length describe a live slice; CPython copies it. Only called with the GIL held.
    unsafe { ffi::PyUnicode_FromStringAndSize(text.as_ptr().cast(), text.len() as isize) }
}

/// A str holding lone surrogates, which only the `surrogatepass` decoder builds from bytes; as `new_str`.
fn new_str_with_surrogates(wtf8: &[u8]) -> *mut ffi::PyObject {
    // SAFETY: the pointer and length describe a live slice, and the error handler name is NUL-terminated.
    unsafe { ffi::PyUnicode_DecodeUTF8(wtf8.as_ptr().cast(), wtf8.len() as isize, c"surrogatepass".as_ptr()) }
}

/// A new reference to one of the interpreter's singletons, given as pyo3's accessor for it.
#[inline]
fn singleton(constant: unsafe fn() -> *mut ffi::PyObject) -> *mut ffi::PyObject {
    // SAFETY: `constant` is `Py_True`, `Py_False` or `Py_None`, which only take the address of an object that
    // lives as long as the interpreter.
    unsafe {
        let obj = constant();
        ffi::Py_IncRef(obj);
        obj
    }
}

/// Documents from this size on are read with the collector paused.
const GC_PAUSE_MIN_LEN: usize = 16 << 10;

/// Keeps the cyclic garbage collector off while a document is built. On 3.10 and 3.11 the collector runs from
/// inside allocations, so building a 1 MB event of records ran it some twenty times, each pass walking the new
/// containers again and every tenth walking older generations too, about a fifth of the decoding time. The
/// containers are all alive until the handler has them, so those passes could never free anything. On 3.12 and
/// later a collection only starts between bytecodes, after the decoder has returned, so this changes nothing
/// there; here it brings 3.10 and 3.11 to the same single pass once the document is built.
struct GcPause {
    was_enabled: bool,
}

impl GcPause {
    fn new(_py: Python<'_>) -> Self {
        // SAFETY: the GIL is held (the token proves it); the call only flips the collector's flag.
        let was_enabled = unsafe { ffi::PyGC_Disable() } != 0;
        Self { was_enabled }
    }
}

impl Drop for GcPause {
    fn drop(&mut self) {
        if self.was_enabled {
            // SAFETY: the pause lives inside `decode`, which holds the GIL from start to end.
            unsafe { ffi::PyGC_Enable() };
        }
    }
}

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
    // A small document makes too few containers for the collector to be due while it is read.
    let _pause = (data.len() >= GC_PAUSE_MIN_LEN).then(|| GcPause::new(py));
    let value = WORKSPACE
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut workspace) => Decoder::run(py, data, &mut workspace),
            Err(_) => Decoder::run(py, data, &mut Workspace::new()),
        })
        .unwrap_or_else(|_| Decoder::run(py, data, &mut Workspace::new()))?;
    // SAFETY: `run` hands over an owned reference to a live object.
    Ok(unsafe { Bound::from_owned_ptr(py, value) })
}

/// A container being read: where its items start on the decoder's stacks.
#[derive(Clone, Copy)]
enum Frame {
    Array {
        values: usize,
    },
    /// A dict's members are the keys from `keys` on, paired in order with the values from `values` on.
    Object {
        keys: usize,
        values: usize,
    },
}

/// Where a string body ended up: still in the input (no escapes), or unescaped into the scratch buffer.
enum Body {
    Input(usize, usize),
    Scratch { surrogates: bool },
}

/// Key cache size bounds; within them the cache grows with the document, so a small event does not pay for
/// a large one's.
const KEY_SLOTS: (usize, usize) = (16, 1024);
const KEY_CACHE_MAX_LEN: usize = 64;
const VALUE_SLOTS: (usize, usize) = (16, 256);
/// String values up to this long go through the value cache: the words and codes that repeat (a status, a type, a
/// tag) fit, while the next lengths up are as often identifiers that never repeat and only cost the cache (a 2%
/// slower decoding of the benchmark's records at 16).
const VALUE_CACHE_MAX_LEN: usize = 8;
/// Buffers grown past this by one large document are not kept for the next.
const KEEP_CAPACITY: usize = 1 << 20;

/// A cache's size for a document: a slot for every 64 bytes, within `(min, max)`.
fn slots_for(document_len: usize, (min, max): (usize, usize)) -> usize {
    (document_len / 64).next_power_of_two().clamp(min, max)
}

/// A dict of six members or more never starts at its final size through the limited API: `PyDict_New` gives
/// room for five, so filling it grows its table once (or more) on the way, rebuilding its index each time. A
/// copy of a dict with the same keys in the same order starts with that final table (CPython clones it whole),
/// and setting each key then only replaces a value in place, so the result is the dict filling it would have
/// made, down to its table size and key order.
const TEMPLATE_MIN_LEN: usize = 6;
const TEMPLATE_SLOTS: usize = 8;

/// What a dict must share with a template: its number of members, a signature of its key objects (cached keys
/// are the same objects from one record to the next), and whether any value is a container. The last because
/// the garbage collector tracks a dict holding one and may leave one holding none untracked, and a copy starts
/// out as its template was.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Shape {
    len: usize,
    signature: u64,
    containers: bool,
}

impl Shape {
    /// Matches no dict.
    const NONE: Self = Self {
        len: 0,
        signature: 0,
        containers: false,
    };

    /// `None` for dicts too small to gain from a template.
    fn of(keys: &[*mut ffi::PyObject], values: &[*mut ffi::PyObject]) -> Option<Self> {
        if keys.len() < TEMPLATE_MIN_LEN {
            return None;
        }
        let signature = keys.iter().fold(keys.len() as u64, |h, &key| {
            (h ^ key as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(23)
        });
        let (list, dict) = (ptr::addr_of_mut!(ffi::PyList_Type), ptr::addr_of_mut!(ffi::PyDict_Type));
        let containers = values.iter().any(|&value| {
            // SAFETY: a live object the stack owns.
            let ty = unsafe { ffi::Py_TYPE(value) };
            ty == list || ty == dict
        });
        Some(Self {
            len: keys.len(),
            signature,
            containers,
        })
    }

    fn slot(self) -> usize {
        (self.signature >> 32) as usize & (TEMPLATE_SLOTS - 1)
    }
}

struct Template {
    shape: Shape,
    /// The template's keys in order, borrowed from `dict`.
    keys: Vec<*mut ffi::PyObject>,
    /// An owned reference to a dict of exactly `keys`; null while the shape has only been seen once.
    dict: *mut ffi::PyObject,
}

/// The decoder's working memory: its stacks, its scratch buffer and its caches. Each thread keeps one between
/// calls, holding no reference once a call is over, so that decoding a small event allocates nothing but its
/// Python objects.
struct Workspace {
    scratch: Vec<u8>,
    /// Finished values whose container has not closed yet: owned references.
    values: Vec<*mut ffi::PyObject>,
    /// The keys of the objects being read, borrowed from `key_slots` and `kept`.
    keys: Vec<*mut ffi::PyObject>,
    /// The containers being read, outermost first.
    frames: Vec<Frame>,
    /// Recently seen keys: a key's fingerprint, where its bytes start in the document, and its str (an owned
    /// reference, null where empty). Object keys repeat across records, and reusing one str object saves its
    /// allocation and its hashing when it goes into the next dict.
    key_slots: Vec<(Fingerprint, usize, *mut ffi::PyObject)>,
    /// Owned references to the keys no slot holds: evicted ones, and those too long or escaped to cache. A key on
    /// the stack is borrowed from here or from a slot, so it costs no reference counting of its own.
    kept: Vec<*mut ffi::PyObject>,
    /// Recently seen short string values, each slot holding an owned reference (null where empty). Records repeat
    /// short values as they repeat keys (a status, a region, a type, a tag), and handing out the same immutable
    /// str again saves its allocation, its construction and later its deallocation: on a large document of
    /// records, a sizeable part of the memory the event takes, and of the page faults that come with it. Equal
    /// values may so be one object where simplejson makes two: only `is` and `id()` can tell, which promise
    /// nothing for equal strs (CPython itself shares one-character and interned ones).
    value_slots: Vec<(Fingerprint, *mut ffi::PyObject)>,
    /// The slots of each cache filled during this call, which are all `release` has to empty.
    filled_keys: Vec<usize>,
    filled_values: Vec<usize>,
    /// Dicts of the shapes records repeat, which a new dict of the same shape starts as a copy of.
    templates: Vec<Template>,
    /// Whether `templates` took any shape during this call.
    templates_used: bool,
}

/// Drops an owned reference, or nothing for null.
fn release(obj: *mut ffi::PyObject) {
    if !obj.is_null() {
        // SAFETY: owned references taken inside `decode`, which holds the GIL until they are released.
        unsafe { ffi::Py_DecRef(obj) };
    }
}

thread_local! {
    static WORKSPACE: RefCell<Workspace> = const { RefCell::new(Workspace::new()) };
}

impl Workspace {
    const fn new() -> Self {
        Self {
            scratch: Vec::new(),
            values: Vec::new(),
            keys: Vec::new(),
            frames: Vec::new(),
            key_slots: Vec::new(),
            kept: Vec::new(),
            value_slots: Vec::new(),
            filled_keys: Vec::new(),
            filled_values: Vec::new(),
            templates: Vec::new(),
            templates_used: false,
        }
    }

    /// Releases every reference held, leaving the caches' slots empty and the memory for the next call.
    fn release(&mut self) {
        for obj in self.values.drain(..).chain(self.kept.drain(..)) {
            release(obj);
        }
        for i in self.filled_keys.drain(..) {
            release(std::mem::replace(&mut self.key_slots[i], EMPTY_KEY).2);
        }
        for i in self.filled_values.drain(..) {
            release(std::mem::replace(&mut self.value_slots[i], EMPTY_VALUE).1);
        }
        if std::mem::take(&mut self.templates_used) {
            for template in &mut self.templates {
                template.shape = Shape::NONE;
                template.keys.clear();
                release(std::mem::replace(&mut template.dict, ptr::null_mut()));
            }
        }
        self.keys.clear();
        self.frames.clear();
        self.scratch.clear();
        if self.scratch.capacity() > KEEP_CAPACITY {
            self.scratch = Vec::new();
        }
        if self.values.capacity() * size_of::<usize>() > KEEP_CAPACITY {
            self.values = Vec::new();
            self.keys = Vec::new();
            self.kept = Vec::new();
        }
    }

    /// The key for `text`, a slice of `data` from `start` without escapes, borrowed from the cache; null with a
    /// Python exception set if it could not be made.
    #[inline]
    fn key(&mut self, data: &[u8], start: usize, text: &[u8], slots: usize) -> *mut ffi::PyObject {
        if text.len() > KEY_CACHE_MAX_LEN {
            return self.keep(new_str(text));
        }
        if self.key_slots.len() != slots {
            self.key_slots.resize(slots, EMPTY_KEY);
        }
        let fingerprint = Fingerprint::of(text);
        let index = fingerprint.slot(slots);
        let (cached, at, key) = self.key_slots[index];
        if cached == fingerprint && (text.len() <= FINGERPRINT_EXACT_LEN || data[at..at + text.len()] == *text) {
            return key;
        }
        let new = new_str(text);
        if !new.is_null() {
            if key.is_null() {
                self.filled_keys.push(index);
            } else {
                self.kept.push(key);
            }
            self.key_slots[index] = (fingerprint, start, new);
        }
        new
    }

    /// Takes an owned reference to a key no slot will hold (or null, passed on), and lends it out.
    fn keep(&mut self, key: *mut ffi::PyObject) -> *mut ffi::PyObject {
        if !key.is_null() {
            self.kept.push(key);
        }
        key
    }

    /// A new reference to a str of `text`, which holds no escapes and at most `VALUE_CACHE_MAX_LEN` bytes; null
    /// with a Python exception set if it could not be made.
    #[inline]
    fn short_value(&mut self, text: &[u8], slots: usize) -> *mut ffi::PyObject {
        if self.value_slots.len() != slots {
            self.value_slots.resize(slots, EMPTY_VALUE);
        }
        let fingerprint = Fingerprint::of(text);
        let index = fingerprint.slot(slots);
        let slot = &mut self.value_slots[index];
        if slot.0 != fingerprint {
            let new = new_str(text);
            if new.is_null() {
                return new;
            }
            if slot.1.is_null() {
                self.filled_values.push(index);
            } else {
                // SAFETY: the slot's own reference; whoever else uses the str holds another.
                unsafe { ffi::Py_DecRef(slot.1) };
            }
            *slot = (fingerprint, new);
        }
        // SAFETY: the str is alive, held by the slot; the new reference is the caller's.
        unsafe { ffi::Py_IncRef(slot.1) };
        slot.1
    }

    /// The template for a dict of `shape` with the keys from `keys` on, if there is one.
    #[inline]
    fn template(&self, shape: Shape, keys: usize) -> Option<*mut ffi::PyObject> {
        let template = self.templates.get(shape.slot())?;
        let found = !template.dict.is_null() && template.shape == shape && template.keys[..] == self.keys[keys..];
        found.then_some(template.dict)
    }

    /// Notes the shape of `dict`, just filled with the keys from `keys` on: the second dict of a shape in a row
    /// (in its slot) becomes its template. False, with a Python exception set, if that copy failed.
    fn remember(&mut self, shape: Shape, keys: usize, dict: *mut ffi::PyObject) -> bool {
        if self.templates.is_empty() {
            self.templates.resize_with(TEMPLATE_SLOTS, || Template {
                shape: Shape::NONE,
                keys: Vec::new(),
                dict: ptr::null_mut(),
            });
        }
        self.templates_used = true;
        let template = &mut self.templates[shape.slot()];
        if template.shape == shape && template.dict.is_null() {
            // SAFETY: `dict` is a live dict. A repeated key leaves it with fewer members than keys, and unfit.
            if unsafe { ffi::PyDict_Size(dict) } == shape.len as isize {
                // SAFETY: as above; the result is a new reference or NULL with an exception set.
                template.dict = unsafe { ffi::PyDict_Copy(dict) };
                if template.dict.is_null() {
                    return false;
                }
                template.keys.clear();
                template.keys.extend_from_slice(&self.keys[keys..]);
            }
            return true;
        }
        if !template.dict.is_null() {
            // SAFETY: the template's own reference; nothing else uses it.
            unsafe { ffi::Py_DecRef(template.dict) };
            template.dict = ptr::null_mut();
        }
        template.shape = shape;
        true
    }
}

const EMPTY_KEY: (Fingerprint, usize, *mut ffi::PyObject) = (Fingerprint::EMPTY, 0, ptr::null_mut());
const EMPTY_VALUE: (Fingerprint, *mut ffi::PyObject) = (Fingerprint::EMPTY, ptr::null_mut());

/// Decoding has stopped, and the reason is in `Decoder::failure`. Keeping the `PyErr` out of every result lets
/// the parser's many small steps return their values in registers.
struct Failed;

type Step<T> = Result<T, Failed>;

struct Decoder<'a, 'w> {
    py: Python<'a>,
    data: &'a [u8],
    pos: usize,
    ws: &'w mut Workspace,
    failure: Option<PyErr>,
    /// The caches' sizes for this document.
    key_slots: usize,
    value_slots: usize,
}

impl Drop for Decoder<'_, '_> {
    fn drop(&mut self) {
        self.ws.release();
    }
}

impl Decoder<'_, '_> {
    /// Decodes `data` with `ws`; returns an owned reference to the document's value.
    fn run(py: Python<'_>, data: &[u8], ws: &mut Workspace) -> PyResult<*mut ffi::PyObject> {
        let mut decoder = Decoder {
            py,
            data,
            pos: if data.starts_with(b"\xef\xbb\xbf") { 3 } else { 0 },
            ws,
            failure: None,
            key_slots: slots_for(data.len(), KEY_SLOTS),
            value_slots: slots_for(data.len(), VALUE_SLOTS),
        };
        decoder
            .document()
            .map_err(|Failed| decoder.failure.take().unwrap_or_else(|| PyErr::fetch(py)))
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    #[inline]
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// A C API call's result: the new reference, or the exception it set.
    #[inline]
    fn made(&mut self, obj: *mut ffi::PyObject) -> Step<*mut ffi::PyObject> {
        if obj.is_null() {
            Err(self.raised())
        } else {
            Ok(obj)
        }
    }

    #[cold]
    fn raised(&mut self) -> Failed {
        self.failure = Some(PyErr::fetch(self.py));
        Failed
    }

    /// A syntax error at byte `at`, worded and placed as simplejson words and places it.
    #[cold]
    fn error(&mut self, msg: &str, at: usize) -> Failed {
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
        self.failure = Some(decode_error(self.py, error_text(&msg, at, None), &msg, at));
        Failed
    }

    /// Reads the whole document; returns an owned reference to its value.
    fn document(&mut self) -> Step<*mut ffi::PyObject> {
        'value: loop {
            self.skip_ws();
            let value = match self.peek() {
                Some(b'[') => {
                    self.check_depth()?;
                    self.pos += 1;
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') => {
                            self.pos += 1;
                            // SAFETY: the GIL is held; the result is a new reference or NULL with an exception set.
                            self.made(unsafe { ffi::PyList_New(0) })?
                        }
                        None => return Err(self.error("Expecting value or ']'", self.pos)),
                        Some(_) => {
                            let values = self.ws.values.len();
                            self.ws.frames.push(Frame::Array { values });
                            continue 'value;
                        }
                    }
                }
                Some(b'{') => {
                    self.check_depth()?;
                    self.pos += 1;
                    self.skip_ws();
                    match self.peek() {
                        Some(b'}') => {
                            self.pos += 1;
                            // SAFETY: as for the list above.
                            self.made(unsafe { ffi::PyDict_New() })?
                        }
                        Some(b'"') => {
                            let (keys, values) = (self.ws.keys.len(), self.ws.values.len());
                            self.ws.frames.push(Frame::Object { keys, values });
                            self.key()?;
                            continue 'value;
                        }
                        _ => {
                            let msg = "Expecting property name enclosed in double quotes or '}'";
                            return Err(self.error(msg, self.pos));
                        }
                    }
                }
                _ => self.scalar()?,
            };
            self.ws.values.push(value);
            // The value is complete: see what follows it in its container, closing containers as they end.
            loop {
                let Some(&frame) = self.ws.frames.last() else {
                    return self.end();
                };
                self.skip_ws();
                let value = match frame {
                    Frame::Array { values } => match self.peek() {
                        Some(b',') => {
                            let comma = self.pos;
                            self.pos += 1;
                            self.skip_ws();
                            if self.peek() == Some(b']') {
                                return Err(self.error("Illegal trailing comma before end of array", comma));
                            }
                            continue 'value;
                        }
                        Some(b']') => self.list(values)?,
                        _ => return Err(self.error("Expecting ',' delimiter or ']'", self.pos)),
                    },
                    Frame::Object { keys, values } => match self.peek() {
                        Some(b',') => {
                            let comma = self.pos;
                            self.pos += 1;
                            self.skip_ws();
                            match self.peek() {
                                Some(b'"') => {
                                    self.key()?;
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
                        Some(b'}') => self.dict(keys, values)?,
                        _ => return Err(self.error("Expecting ',' delimiter or '}'", self.pos)),
                    },
                };
                self.pos += 1;
                self.ws.frames.pop();
                self.ws.values.push(value);
            }
        }
    }

    /// Called at an opening bracket, empty containers included.
    fn check_depth(&mut self) -> Step<()> {
        if self.ws.frames.len() >= MAX_DECODE_DEPTH {
            let msg = format!("Nesting too deep (more than {MAX_DECODE_DEPTH} levels)");
            return Err(self.error(&msg, self.pos));
        }
        Ok(())
    }

    /// The document's value is complete: only whitespace may follow it.
    fn end(&mut self) -> Step<*mut ffi::PyObject> {
        self.skip_ws();
        if self.pos == self.data.len() {
            if let Some(value) = self.ws.values.pop() {
                return Ok(value);
            }
        }
        let (at, end) = (position(self.data, self.pos), position(self.data, self.data.len()));
        self.failure = Some(decode_error(
            self.py,
            error_text("Extra data", at, Some(end)),
            "Extra data",
            at,
        ));
        Err(Failed)
    }

    /// The list of the values from `start` on, which it takes over.
    fn list(&mut self, start: usize) -> Step<*mut ffi::PyObject> {
        let len = self.ws.values.len() - start;
        // SAFETY: the GIL is held; the result is a new reference or NULL with an exception set.
        let list = self.made(unsafe { ffi::PyList_New(len as isize) })?;
        for (i, item) in self.ws.values.drain(start..).enumerate() {
            // SAFETY: `list` is a new list of exactly this length; SetItem takes over the owned `item`, and cannot
            // fail on an index in range.
            unsafe { ffi::PyList_SetItem(list, i as isize, item) };
        }
        Ok(list)
    }

    /// The dict of the keys from `keys` on and the values from `values` on, in order, so a repeated key keeps its
    /// first place and its last value, as in simplejson.
    fn dict(&mut self, keys: usize, values: usize) -> Step<*mut ffi::PyObject> {
        let shape = Shape::of(&self.ws.keys[keys..], &self.ws.values[values..]);
        let template = shape.and_then(|shape| self.ws.template(shape, keys));
        let dict = match template {
            // SAFETY: a live dict the workspace holds; the result is a new reference or NULL with an exception set.
            Some(template) => unsafe { ffi::PyDict_Copy(template) },
            // SAFETY: the GIL is held; as above.
            None => unsafe { ffi::PyDict_New() },
        };
        let dict = self.made(dict)?;
        for (&key, &value) in self.ws.keys[keys..].iter().zip(&self.ws.values[values..]) {
            // SAFETY: live objects: a str key (hashable, compared by value without running Python code) held by
            // the cache, and a value owned by the stack. The dict takes references of its own (and releases the
            // template's value the key had in a copy).
            if unsafe { ffi::PyDict_SetItem(dict, key, value) } != 0 {
                let failed = self.raised();
                // SAFETY: the new dict, owned here; the values stay on the stack, released with it.
                unsafe { ffi::Py_DecRef(dict) };
                return Err(failed);
            }
        }
        if let (Some(shape), None) = (shape, template) {
            if !self.ws.remember(shape, keys, dict) {
                let failed = self.raised();
                // SAFETY: as above.
                unsafe { ffi::Py_DecRef(dict) };
                return Err(failed);
            }
        }
        for value in self.ws.values.drain(values..) {
            // SAFETY: the stack's own references, no longer needed now that the dict holds the values.
            unsafe { ffi::Py_DecRef(value) };
        }
        self.ws.keys.truncate(keys);
        Ok(dict)
    }

    fn scalar(&mut self) -> Step<*mut ffi::PyObject> {
        let rest = &self.data[self.pos..];
        let (value, len) = match rest.first() {
            Some(b'"') => return self.string(),
            Some(b'-' | b'0'..=b'9') => return self.number(),
            Some(b't') if rest.starts_with(b"true") => (singleton(ffi::Py_True), 4),
            Some(b'f') if rest.starts_with(b"false") => (singleton(ffi::Py_False), 5),
            Some(b'n') if rest.starts_with(b"null") => (singleton(ffi::Py_None), 4),
            _ => return Err(self.error("Expecting value", self.pos)),
        };
        self.pos += len;
        Ok(value)
    }

    fn number(&mut self) -> Step<*mut ffi::PyObject> {
        let start = self.pos;
        let Some(number) = scan_number(self.data, start) else {
            return Err(self.error("Expecting value", start));
        };
        self.pos = number.end;
        if let Some(value) = number.small_int() {
            // SAFETY: the GIL is held; the result is a new reference or NULL with an exception set.
            return self.made(unsafe { ffi::PyLong_FromLongLong(value) });
        }
        let text = &self.data[start..number.end];
        if number.is_float {
            // Rust's parser rounds correctly, as Python's float() does, so both give the same double.
            let value = number
                .fast_float()
                .or_else(|| std::str::from_utf8(text).ok()?.parse::<f64>().ok());
            let Some(value) = value else {
                return Err(self.error("Expecting value", start));
            };
            // SAFETY: as above.
            return self.made(unsafe { ffi::PyFloat_FromDouble(value) });
        }
        // Beyond i64, CPython's own conversion: exact at any size, and bounded by sys.set_int_max_str_digits
        // exactly as simplejson's int() is.
        let digits = &mut self.ws.scratch;
        digits.clear();
        digits.extend_from_slice(text);
        digits.push(0);
        // SAFETY: a NUL-terminated buffer of ASCII digits that lives across the call.
        let int = unsafe { ffi::PyLong_FromString(digits.as_ptr().cast::<c_char>(), ptr::null_mut(), 10) };
        self.made(int)
    }

    #[allow(clippy::inline_always)] // the parser's inner loop: measured faster inlined
    #[inline(always)]
    fn string(&mut self) -> Step<*mut ffi::PyObject> {
        let value = match self.body()? {
            Body::Input(start, end) if end - start <= VALUE_CACHE_MAX_LEN => {
                self.ws.short_value(&self.data[start..end], self.value_slots)
            }
            Body::Input(start, end) => new_str(&self.data[start..end]),
            Body::Scratch { surrogates: false } => new_str(&self.ws.scratch),
            Body::Scratch { surrogates: true } => new_str_with_surrogates(&self.ws.scratch),
        };
        self.made(value)
    }

    /// An object key and the `:` after it; the key goes on the key stack.
    #[allow(clippy::inline_always)] // the parser's inner loop: measured faster inlined
    #[inline(always)]
    fn key(&mut self) -> Step<()> {
        let key = match self.body()? {
            Body::Input(start, end) => self.ws.key(self.data, start, &self.data[start..end], self.key_slots),
            Body::Scratch { surrogates: false } => {
                let key = new_str(&self.ws.scratch);
                self.ws.keep(key)
            }
            Body::Scratch { surrogates: true } => {
                let key = new_str_with_surrogates(&self.ws.scratch);
                self.ws.keep(key)
            }
        };
        if key.is_null() {
            return Err(self.raised());
        }
        self.ws.keys.push(key);
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.error("Expecting ':' delimiter", self.pos));
        }
        self.pos += 1;
        Ok(())
    }

    /// A string body, from the opening quote at `self.pos` to just past the closing one.
    #[allow(clippy::inline_always)] // the parser's inner loop: measured faster inlined
    #[inline(always)]
    fn body(&mut self) -> Step<Body> {
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
                self.ws.scratch.extend_from_slice(&data[run..i]);
                return Ok(Body::Scratch { surrogates });
            }
            if b != b'\\' {
                return Err(self.error("Invalid control character %r at", i));
            }
            if !escaped {
                self.ws.scratch.clear();
                escaped = true;
            }
            self.ws.scratch.extend_from_slice(&data[run..i]);
            i = self.escape(i, quote, &mut surrogates)?;
            run = i;
        }
    }

    /// Unescapes the sequence at `backslash` into the scratch buffer; returns the index after it.
    fn escape(&mut self, backslash: usize, quote: usize, surrogates: &mut bool) -> Step<usize> {
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
        self.ws.scratch.push(unescaped);
        Ok(backslash + 2)
    }

    /// `\uXXXX`, joined with a following `\uXXXX` into one character when the two form a surrogate pair. Anything
    /// else leaves a lone surrogate in the string, as simplejson does.
    fn unicode_escape(&mut self, backslash: usize, surrogates: &mut bool) -> Step<usize> {
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
        push_code_point(&mut self.ws.scratch, code);
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let int = |s: &str| scan_number(s.as_bytes(), 0).and_then(|n| n.small_int());
        assert_eq!(int("-123456789012345678"), Some(-123_456_789_012_345_678));
        assert_eq!(int("999999999999999999"), Some(999_999_999_999_999_999));
        assert_eq!(int("-0"), Some(0));
        assert_eq!(int("01"), Some(0));
        assert_eq!(int("1234567890123456789"), None);
        assert_eq!(int("1.0"), None);
    }

    #[test]
    fn the_fast_float_path_agrees_with_the_full_parser() {
        let fast = |s: &str| scan_number(s.as_bytes(), 0).and_then(|n| n.fast_float());
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut taken = 0;
        for _ in 0..300_000 {
            let r = next();
            let mantissa = next() >> (r % 64);
            let text = match r >> 8 & 3 {
                0 => format!("{mantissa}e{}", (r >> 16) as i32 % 40),
                1 => format!("-0.{mantissa:0>width$}", width = (r >> 16) as usize % 25),
                2 => {
                    let digits = mantissa.to_string();
                    let point = 1 + (r >> 16) as usize % digits.len();
                    format!("{}.{}0E-{}", &digits[..point], &digits[point..], (r >> 24) % 9)
                }
                _ => format!("{}.{}e+{}", mantissa % 1000, mantissa, (r >> 24) % 30),
            };
            let Some(value) = fast(&text) else {
                continue;
            };
            taken += 1;
            let full: f64 = text.parse().unwrap();
            assert_eq!(value.to_bits(), full.to_bits(), "{text}");
        }
        assert!(taken > 50_000, "{taken}");
        assert_eq!(fast("-0.0").map(f64::to_bits), Some((-0.0f64).to_bits()));
        assert_eq!(fast("9007199254740993.0"), None);
        assert_eq!(fast("1e23"), None);
        assert_eq!(fast("1e-400"), None);
        assert_eq!(fast("12345678901234567890.5"), None);
        assert_eq!(fast("1e99999999999"), None);
    }

    #[test]
    fn fingerprints_tell_short_strings_apart_by_every_byte() {
        let texts: Vec<Vec<u8>> = (0..=20)
            .flat_map(|len| (0..=len).map(move |at| (len, at)))
            .map(|(len, at)| {
                let mut text = vec![b'k'; len];
                if let Some(b) = text.get_mut(at) {
                    *b = b'x';
                }
                text
            })
            .collect();
        for a in &texts {
            for b in &texts {
                if a.len() <= FINGERPRINT_EXACT_LEN && b.len() <= FINGERPRINT_EXACT_LEN {
                    assert_eq!(Fingerprint::of(a) == Fingerprint::of(b), a == b, "{a:?} {b:?}");
                }
            }
        }
        assert_ne!(Fingerprint::of(b""), Fingerprint::EMPTY);
        assert_ne!(Fingerprint::of(b"\0"), Fingerprint::of(b""));
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
