//! The result encoder: Python objects to the bytes awslambdaric's simplejson encoder sends.
//!
//! Exact builtins take the fast path: type checks by identity (a subclass may carry `_asdict`, so it waits until
//! simplejson's order reaches it), str contents read through `PyUnicode_AsUTF8AndSize` and copied in runs between
//! the bytes that need escapes, numbers written by itoa and zmij straight into the output. Numbers, booleans and
//! None are read through the references their container lends; a str written before in the same call (a key every
//! record repeats, a short value a decoded event shares) is copied from a memo of its text by object. Everything
//! else keeps simplejson's dispatch order on the slow path.

use std::cell::RefCell;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::exceptions::{PyAttributeError, PyException, PyRecursionError, PyTypeError, PyUnicodeEncodeError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::float::write_float_repr;
use super::{
    ascii_special, count_chars, skip_plain, string_special, utf8_error, MarshalError, ASCII_SPECIAL, STRING_SPECIAL,
};

/// The encoder recurses on the native stack; Python's recursion limit normally stops it far sooner, and this bound
/// holds when that limit has been raised. Each level costs well under 1 KiB, so an 8 MiB thread stack is safe.
const MAX_ENCODE_DEPTH: usize = 5_000;

/// The size of the last document encoded, up to `MAX_SIZE_HINT`: a function tends to answer alike every time, so
/// the output buffer starts at that size instead of doubling its way up, copying as it goes.
static SIZE_HINT: AtomicUsize = AtomicUsize::new(0);
const MAX_SIZE_HINT: usize = 8 << 20;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `src`, copying the short runs a JSON document is mostly made of with a few loads and stores rather
/// than a call to `memcpy`.
#[inline]
fn append(out: &mut Vec<u8>, src: &[u8]) {
    let n = src.len();
    if n >= 16 {
        out.extend_from_slice(src);
        return;
    }
    out.reserve(16);
    let len = out.len();
    // SAFETY: `out` has room for 16 more bytes and `n` is below 16; each load reads within `src` (the overlapping
    // pairs start at 0 and at `n - 8` or `n - 4`, taken only when `n` is at least 8 or 4); every byte up to
    // `len + n` is written before the length covers it.
    unsafe {
        let dst = out.as_mut_ptr().add(len);
        let src = src.as_ptr();
        if n >= 8 {
            let (head, tail) = (
                src.cast::<u64>().read_unaligned(),
                src.add(n - 8).cast::<u64>().read_unaligned(),
            );
            dst.cast::<u64>().write_unaligned(head);
            dst.add(n - 8).cast::<u64>().write_unaligned(tail);
        } else if n >= 4 {
            let (head, tail) = (
                src.cast::<u32>().read_unaligned(),
                src.add(n - 4).cast::<u32>().read_unaligned(),
            );
            dst.cast::<u32>().write_unaligned(head);
            dst.add(n - 4).cast::<u32>().write_unaligned(tail);
        } else {
            for i in 0..n {
                *dst.add(i) = *src.add(i);
            }
        }
        out.set_len(len + n);
    }
}

/// Appends the first `len` bytes of `text` with one fixed-size copy: the bytes after them land in spare capacity
/// and are left out of the length.
#[inline]
fn append_padded(out: &mut Vec<u8>, text: &[u8; MEMO_TEXT_LEN], len: usize) {
    out.reserve(MEMO_TEXT_LEN);
    let at = out.len();
    // SAFETY: `out` has room for `MEMO_TEXT_LEN` more bytes, all written before `len` (at most that) of them are
    // counted in.
    unsafe {
        out.as_mut_ptr()
            .add(at)
            .cast::<[u8; MEMO_TEXT_LEN]>()
            .write_unaligned(*text);
        out.set_len(at + len.min(MEMO_TEXT_LEN));
    }
}

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
    let mut run = 0;
    let mut i = 0;
    loop {
        i = skip_plain(src, i, &ASCII_SPECIAL, ascii_special);
        append(out, &src[run..i]);
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
    let mut run = 0;
    let mut i = 0;
    loop {
        i = skip_plain(src, i, &STRING_SPECIAL, string_special);
        append(out, &src[run..i]);
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

/// Encodes a handler's result as awslambdaric's encoder does, appending UTF-8 to `out`. Every `Exception` on the
/// way becomes a `MarshalError` carrying the message awslambdaric would put after "Unable to marshal response: ".
pub fn encode(obj: &Bound<'_, PyAny>, ensure_ascii: bool, out: &mut Vec<u8>) -> PyResult<()> {
    let base = out.len();
    out.reserve(SIZE_HINT.load(Ordering::Relaxed));
    let unsendable = with_workspace(|ws| {
        let mut encoder = Encoder {
            py: obj.py(),
            out: &mut *out,
            base,
            ascii: ensure_ascii,
            ws,
            depth_checked: false,
            unsendable: None,
        };
        encoder.value(obj)?;
        Ok(encoder.unsendable.take())
    })
    .map_err(|err| marshal_error(obj.py(), err))?;
    SIZE_HINT.store((out.len() - base).min(MAX_SIZE_HINT), Ordering::Relaxed);
    match unsendable {
        Some(message) => Err(MarshalError::new_err(message)),
        None => Ok(()),
    }
}

/// Runs `f` with this thread's workspace, or with a new one if that is in use: a handler's `_asdict` may encode
/// JSON itself while its result is being encoded.
fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    let mut f = Some(f);
    let done = WORKSPACE.try_with(|cell| {
        let mut ws = cell.try_borrow_mut().ok()?;
        f.take().map(|f| f(&mut ws))
    });
    if let Ok(Some(result)) = done {
        return result;
    }
    match f {
        Some(f) => f(&mut Workspace::new()),
        None => unreachable!("the thread's workspace ran it"),
    }
}

/// The encoder's working memory, kept per thread between calls and holding no reference once a call is over.
struct Workspace {
    /// The containers being encoded, outermost first. simplejson checks each new container against this set; here
    /// it is only read once the depth limit is reached, because a cycle is what makes an encoding reach it.
    path: Vec<*mut ffi::PyObject>,
    /// Member keys already written in this call, `"key": ` by str object: records repeat the same key objects.
    /// Keys are kept once a document has shown many dicts (`MEMO_AFTER_DICTS`), so that a small result with keys
    /// of its own pays nothing for them.
    keys: Memo,
    /// Str values written in this call: values repeat too (a decoded event shares its short strings), but unique
    /// ones are as common, so a value is kept only the second time its object comes by.
    strings: Memo,
    /// Dicts entered in this call.
    dicts: usize,
}

/// Texts already written for str objects, by object: copying one saves reading, scanning and quoting the str
/// again. Replaying a text is right for any later use of the same object: a str cannot change, and what writing it
/// noted (a lone surrogate's position) only counts the first time.
struct Memo {
    slots: Vec<MemoSlot>,
    /// Owned references to every object a slot has kept in this call, so that none is freed and its address
    /// taken by another object while a slot can still match it.
    held: Vec<*mut ffi::PyObject>,
}

/// A memo slot: the object (null where empty) and its text, held in place so that a hit reads one line. A slot
/// whose `len` is `CANDIDATE` only remembers an address seen once, and holds nothing.
#[derive(Clone, Copy)]
struct MemoSlot {
    key: *mut ffi::PyObject,
    len: usize,
    text: [u8; MEMO_TEXT_LEN],
}

const MEMO_TEXT_LEN: usize = 48;
const MEMO_SLOTS: usize = 64;
const MEMO_AFTER_DICTS: usize = 16;
const CANDIDATE: usize = usize::MAX;
const EMPTY_SLOT: MemoSlot = MemoSlot {
    key: ptr::null_mut(),
    len: 0,
    text: [0; MEMO_TEXT_LEN],
};

thread_local! {
    static WORKSPACE: RefCell<Workspace> = const { RefCell::new(Workspace::new()) };
}

impl Workspace {
    const fn new() -> Self {
        Self {
            path: Vec::new(),
            keys: Memo::new(),
            strings: Memo::new(),
            dicts: 0,
        }
    }

    /// Releases every reference held and empties the memos for the next call.
    fn release(&mut self) {
        self.keys.release();
        self.strings.release();
        self.path.clear();
        self.dicts = 0;
    }
}

impl Memo {
    const fn new() -> Self {
        Self {
            slots: Vec::new(),
            held: Vec::new(),
        }
    }

    fn slot(obj: *mut ffi::PyObject) -> usize {
        ((obj as usize >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) & (MEMO_SLOTS - 1)
    }

    /// The slot keeping a text for `obj`, if any.
    #[inline]
    fn get(&self, obj: *mut ffi::PyObject) -> Option<&MemoSlot> {
        let slot = self.slots.get(Self::slot(obj))?;
        (slot.key == obj && slot.len != CANDIDATE).then_some(slot)
    }

    /// Keeps `text` as what `obj`, an exact str, is written as.
    fn put(&mut self, obj: &Bound<'_, PyAny>, text: &[u8]) {
        if text.len() > MEMO_TEXT_LEN {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize(MEMO_SLOTS, EMPTY_SLOT);
        }
        let slot = &mut self.slots[Self::slot(obj.as_ptr())];
        slot.key = obj.as_ptr();
        slot.len = text.len();
        slot.text[..text.len()].copy_from_slice(text);
        self.held.push(obj.clone().into_ptr());
    }

    /// Keeps `text` for `obj` if its address was noted the last time its slot missed, and notes the address
    /// otherwise (in a slot keeping nothing). The address may by then belong to another object; that is harmless,
    /// since the text kept is the one just written for the object now held.
    fn seen(&mut self, obj: &Bound<'_, PyAny>, text: &[u8]) {
        if self.slots.is_empty() {
            self.slots.resize(MEMO_SLOTS, EMPTY_SLOT);
        }
        let slot = &mut self.slots[Self::slot(obj.as_ptr())];
        if slot.len == CANDIDATE && slot.key == obj.as_ptr() {
            self.put(obj, text);
        } else if slot.len == CANDIDATE || slot.key.is_null() {
            slot.key = obj.as_ptr();
            slot.len = CANDIDATE;
        }
    }

    fn release(&mut self) {
        for obj in self.held.drain(..) {
            // SAFETY: owned references; a workspace is only used inside `encode`, which holds the GIL.
            unsafe { ffi::Py_DecRef(obj) };
        }
        self.slots.clear();
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

/// A value that is written from what it holds, read before anything else runs.
#[derive(Clone, Copy)]
enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    None,
}

/// An exact int in `i64`, float, bool or None, read through a reference borrowed from a container. Reading them
/// allocates nothing and runs nothing, so the container cannot have changed under it; every other value must be
/// owned before the encoder goes on (writing a key can raise, and an allocation can run the garbage collector and
/// with it any finalizer).
#[inline]
fn scalar(obj: *mut ffi::PyObject) -> Option<Scalar> {
    // SAFETY: `obj` is live, as the caller has just read it from its container.
    let ty = unsafe { ffi::Py_TYPE(obj) };
    // SAFETY: only the addresses of the singletons are taken.
    let (none, true_) = unsafe { (ffi::Py_None(), ffi::Py_True()) };
    let types = builtins();
    if ty == types.int {
        let mut overflow = 0;
        // SAFETY: an exact int; CPython reads its value without calling into Python or raising (past i64 it sets
        // `overflow`).
        let value = unsafe { ffi::PyLong_AsLongLongAndOverflow(obj, &raw mut overflow) };
        (overflow == 0).then_some(Scalar::Int(value))
    } else if ty == types.float {
        // SAFETY: an exact float.
        Some(Scalar::Float(unsafe { ffi::PyFloat_AsDouble(obj) }))
    } else if ty == types.bool {
        Some(Scalar::Bool(obj == true_))
    } else if obj == none {
        Some(Scalar::None)
    } else {
        None
    }
}

#[derive(Clone, Copy)]
enum Sequence {
    List,
    Tuple,
}

struct Encoder<'o, 'w, 'py> {
    py: Python<'py>,
    out: &'o mut Vec<u8>,
    /// Where this document starts in `out`: error positions count from here.
    base: usize,
    ascii: bool,
    ws: &'w mut Workspace,
    /// Set once a recursion error has been looked at, so the levels it unwinds through do not look again. It is
    /// turned into a `MarshalError` at the top: reading its message deep down would hit the limit once more.
    depth_checked: bool,
    /// Why the document, complete, could not be sent: lone surrogates where UTF-8 must carry them. awslambdaric
    /// only finds out when it encodes the finished str, so any error the encoding raises comes first.
    unsendable: Option<String>,
}

impl Drop for Encoder<'_, '_, '_> {
    fn drop(&mut self) {
        self.ws.release();
    }
}

impl<'py> Encoder<'_, '_, 'py> {
    fn value(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let ptr = obj.as_ptr();
        // SAFETY: `obj` is a live object.
        let ty = unsafe { ffi::Py_TYPE(ptr) };
        let types = builtins();
        if ty == types.str {
            self.string(obj)
        } else if let Some(scalar) = scalar(ptr) {
            self.scalar(scalar);
            Ok(())
        } else if ty == types.int {
            self.big_int(obj)
        } else if ty == types.dict {
            self.dict(obj)
        } else if ty == types.list {
            self.sequence(obj, Sequence::List)
        } else if ty == types.tuple {
            self.sequence(obj, Sequence::Tuple)
        } else {
            self.other(obj)
        }
    }

    /// A value borrowed from a container being walked: scalars are written from what they hold, a str kept by
    /// the memo is copied from it, anything else is owned first.
    #[inline]
    fn item(&mut self, obj: *mut ffi::PyObject) -> PyResult<()> {
        if let Some(scalar) = scalar(obj) {
            self.scalar(scalar);
            return Ok(());
        }
        // SAFETY: `obj` is live, with nothing run since it was read from its container.
        if unsafe { ffi::Py_TYPE(obj) } == builtins().str {
            if let Some(slot) = self.ws.strings.get(obj) {
                append_padded(self.out, &slot.text, slot.len);
                return Ok(());
            }
            // SAFETY: as above.
            let obj = unsafe { Bound::from_borrowed_ptr(self.py, obj) };
            let start = self.out.len();
            self.string(&obj)?;
            self.ws.strings.seen(&obj, &self.out[start..]);
            return Ok(());
        }
        // SAFETY: as above.
        let obj = unsafe { Bound::from_borrowed_ptr(self.py, obj) };
        self.value(&obj)
    }

    #[inline]
    fn scalar(&mut self, scalar: Scalar) {
        match scalar {
            Scalar::Int(value) => append(self.out, itoa::Buffer::new().format(value).as_bytes()),
            Scalar::Float(value) => self.float(value),
            Scalar::Bool(true) => append(self.out, b"true"),
            Scalar::Bool(false) => append(self.out, b"false"),
            Scalar::None => append(self.out, b"null"),
        }
    }

    /// Descends into a container, under Python's recursion limit as simplejson's C encoder is.
    fn enter(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.ws.path.len() >= MAX_ENCODE_DEPTH {
            return Err(self.too_deep(None));
        }
        // SAFETY: the GIL is held (there is a Bound) and the message is NUL-terminated.
        if unsafe { ffi::Py_EnterRecursiveCall(c" while encoding a JSON object".as_ptr()) } != 0 {
            return Err(self.too_deep(Some(PyErr::fetch(obj.py()))));
        }
        self.ws.path.push(obj.as_ptr());
        Ok(())
    }

    fn leave(&mut self) {
        self.ws.path.pop();
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
        let mut seen = self.ws.path.clone();
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
        self.out.reserve(utf8.len() + 2);
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

    /// An exact int, in `i64` or not.
    fn int(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        match scalar(obj.as_ptr()) {
            Some(scalar) => {
                self.scalar(scalar);
                Ok(())
            }
            None => self.big_int(obj),
        }
    }

    /// An exact int beyond `i64`: CPython's decimal text, subject to `sys.set_int_max_str_digits` as simplejson's
    /// `str()` is.
    fn big_int(&mut self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
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

    fn dict(&mut self, dict: &Bound<'py, PyAny>) -> PyResult<()> {
        // SAFETY: `dict` is a dict.
        if unsafe { ffi::PyDict_Size(dict.as_ptr()) } == 0 {
            self.out.extend_from_slice(b"{}");
            return Ok(());
        }
        self.enter(dict)?;
        self.ws.dicts += 1;
        let result = self.dict_items(dict);
        self.leave();
        result
    }

    fn dict_items(&mut self, dict: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = dict.py();
        let str_type = builtins().str;
        self.out.push(b'{');
        let mut pos: ffi::Py_ssize_t = 0;
        let mut key = ptr::null_mut();
        let mut value = ptr::null_mut();
        let mut first = true;
        // SAFETY: `dict` is a dict and the out-pointers are valid; the references it hands out are borrowed.
        while unsafe { ffi::PyDict_Next(dict.as_ptr(), &raw mut pos, &raw mut key, &raw mut value) } != 0 {
            if !first {
                append(self.out, b", ");
            }
            first = false;
            // An exact str key already written in this call is copied from the memo, and a scalar value written
            // from what it holds, without taking references. Anything else is owned first, so that code run while
            // encoding it (a `_asdict`, a `__float__`, or a finalizer run by the garbage collector when writing the
            // key allocates) cannot free it by changing the dict.
            // SAFETY: `key` is live: nothing has run since PyDict_Next handed it out.
            if unsafe { ffi::Py_TYPE(key) } == str_type {
                if let Some(slot) = self.ws.keys.get(key) {
                    append_padded(self.out, &slot.text, slot.len);
                    self.item(value)?;
                    continue;
                }
            }
            // SAFETY: borrowed references, with nothing run since they were handed out, owned from here on.
            let (key, value) = unsafe { (Bound::from_borrowed_ptr(py, key), Bound::from_borrowed_ptr(py, value)) };
            self.member_key(&key)?;
            self.value(&value)?;
        }
        self.out.push(b'}');
        Ok(())
    }

    /// A member's key, then the separator before its value.
    fn member_key(&mut self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        // SAFETY: `key` is live.
        let exact_str = unsafe { ffi::Py_TYPE(key.as_ptr()) } == builtins().str;
        let start = self.out.len();
        if exact_str || key.is_instance_of::<PyString>() {
            self.string(key)?;
        } else {
            self.key(key)?;
        }
        append(self.out, b": ");
        if exact_str && self.ws.dicts >= MEMO_AFTER_DICTS {
            self.ws.keys.put(key, &self.out[start..]);
        }
        Ok(())
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

    fn sequence(&mut self, seq: &Bound<'py, PyAny>, kind: Sequence) -> PyResult<()> {
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
            if i > 0 {
                append(self.out, b", ");
            }
            // A borrowed reference, owned by `item` unless it is a scalar, for the same reason as dict values.
            result = self.item(item);
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
    fn other(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
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

    fn other_kinds(&mut self, obj: &Bound<'py, PyAny>) -> PyResult<()> {
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
    fn iterated(&mut self, seq: &Bound<'py, PyAny>) -> PyResult<()> {
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
    fn mapping(&mut self, dict: &Bound<'py, PyAny>) -> PyResult<()> {
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
                _ => return Err(pyo3::exceptions::PyValueError::new_err("items must return 2-tuples")),
            };
            if i > 0 {
                self.out.extend_from_slice(b", ");
            }
            self.member_key(&pair.get_item(0)?)?;
            self.value(&pair.get_item(1)?)?;
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

    #[test]
    fn short_runs_are_appended_whole() {
        let text: Vec<u8> = (0..40u8).map(|b| b'a' + b % 26).collect();
        for start in 0..8 {
            for len in 0..=32 {
                let mut out = b"prefix".to_vec();
                append(&mut out, &text[start..start + len]);
                assert_eq!(&out[..6], b"prefix");
                assert_eq!(&out[6..], &text[start..start + len]);
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
    fn sequences_decode_to_their_code_points() {
        for code in [0xe9, 0x7ff, 0x800, 0x20ac, 0xffff, 0x1_0000, 0x1f600, 0x0010_ffff] {
            let text = char::from_u32(code).unwrap().to_string();
            assert_eq!(decode_sequence(text.as_bytes(), 0), (code, text.len()));
        }
        // A lone surrogate as surrogatepass writes it.
        assert_eq!(decode_sequence(b"\xed\xa0\x80", 0), (0xd800, 3));
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
}
