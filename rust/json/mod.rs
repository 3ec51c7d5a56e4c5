//! The event decoder and the result encoder, with awslambdaric's observable rules.
//!
//! awslambdaric decodes an `application/json` event with `simplejson.loads` and encodes a result with a
//! `simplejson.JSONEncoder` (`allow_nan=True`, `use_decimal=False`, and a `default` that writes a `Decimal` as its
//! `str()`). The encoder here writes the bytes that encoder's output becomes, following its type dispatch order,
//! key rules and error messages; the decoder builds what `simplejson.loads` builds and words its errors the same
//! way. Neither imports a Python module: cold start pays for every import.
//!
//! `decode` is in `decode.rs`, `encode` in `encode.rs`, and float formatting, which must match `float.__repr__`
//! digit for digit, in `float.rs`. This module holds what both directions share: the exceptions, the byte scanning
//! of string bodies, and the Python-facing `loads` and `dumps`.

mod decode;
mod encode;
mod float;

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

pub use decode::decode;
pub use encode::encode;

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

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

// Each byte of an eight-byte word is tested at once (SWAR); a mask has the high bit of every byte that passes. A
// borrow or a carry between bytes can also mark a byte above a marked one, never below, so the lowest mark in a
// mask is always exact, and that is the only one read.

/// The bytes of `x` below `n` (`n` at most 128).
const fn less_mask(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * n as u64) & !x & HIGHS
}

/// The bytes of `x` equal to `b`.
const fn byte_mask(x: u64, b: u8) -> u64 {
    less_mask(x ^ (ONES * b as u64), 1)
}

/// The bytes of `x` above `n` (`n` at most 127).
const fn more_mask(x: u64, n: u8) -> u64 {
    (x.wrapping_add(ONES * (127 - n) as u64) | x) & HIGHS
}

/// The bytes a JSON string body cannot pass through as they are: quotes, backslashes and control characters.
const fn string_special(x: u64) -> u64 {
    less_mask(x, 0x20) | byte_mask(x, b'"') | byte_mask(x, b'\\')
}

/// As `string_special`, plus everything outside printable ASCII: what simplejson's `ensure_ascii` escapes.
const fn ascii_special(x: u64) -> u64 {
    string_special(x) | more_mask(x, 0x7e)
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

/// The first index at or after `i` whose byte `table` marks, or `data.len()`: eight bytes at a time, `special`
/// giving their mask, and the table only for the last few bytes of `data`.
#[inline]
fn skip_plain(data: &[u8], mut i: usize, table: &[bool; 256], special: fn(u64) -> u64) -> usize {
    while let Some(chunk) = data.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let mask = special(u64::from_le_bytes(*chunk));
        if mask != 0 {
            return i + (mask.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    // Fewer than eight bytes left, all of a short str the encoder writes: tested in one word (two overlapping
    // halves, or up to three bytes padded with a plain one), the table only when something needs attention.
    let rest = &data[i..];
    let word = if let (Some(head), Some(tail)) = (rest.first_chunk::<4>(), rest.last_chunk::<4>()) {
        u64::from(u32::from_le_bytes(*head)) | u64::from(u32::from_le_bytes(*tail)) << 32
    } else if let (Some(&first), Some(&last)) = (rest.first(), rest.last()) {
        let middle = rest[rest.len() / 2];
        u64::from(first) | u64::from(middle) << 8 | u64::from(last) << 16 | (ONES * u64::from(b'a')) << 24
    } else {
        return i;
    };
    if special(word) == 0 {
        return data.len();
    }
    while i < data.len() && !table[data[i] as usize] {
        i += 1;
    }
    i
}

fn count_chars(utf8: &[u8]) -> usize {
    utf8.iter().filter(|&&b| b & 0xc0 != 0x80).count()
}

/// The `UnicodeDecodeError` Python raises for bytes that are not UTF-8: simplejson lets it through as it is, so
/// its message is the one a caller of awslambdaric sees.
#[cold]
fn utf8_error(py: Python<'_>, data: &[u8], valid_up_to: usize) -> PyErr {
    // SAFETY: the pointer and length describe a live slice; a NULL error handler means strict.
    let decoded = unsafe { ffi::PyUnicode_DecodeUTF8(data.as_ptr().cast(), data.len() as isize, std::ptr::null()) };
    if decoded.is_null() {
        PyErr::fetch(py)
    } else {
        // SAFETY: an owned reference the call above returned.
        unsafe { ffi::Py_DecRef(decoded) };
        PyValueError::new_err(format!("invalid UTF-8 at byte {valid_up_to}"))
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

    /// A byte-by-byte statement of each SWAR mask: its lowest mark, where the first marked byte is.
    fn reference(x: u64, table: &[bool; 256]) -> Option<u32> {
        x.to_le_bytes()
            .iter()
            .position(|&b| table[b as usize])
            .map(|at| at as u32)
    }

    fn first(mask: u64) -> Option<u32> {
        (mask != 0).then(|| mask.trailing_zeros() / 8)
    }

    #[test]
    fn swar_masks_find_the_first_byte_the_tables_mark() {
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
            assert_eq!(first(string_special(x)), reference(x, &STRING_SPECIAL), "{bytes:?}");
            assert_eq!(first(ascii_special(x)), reference(x, &ASCII_SPECIAL), "{bytes:?}");
        }
        // Every pair of neighbouring bytes: a borrow or a carry from the lower one must not hide or fake a mark.
        for low in 0..=255u8 {
            for high in 0..=255u8 {
                let mut bytes = [b'a'; 8];
                bytes[3] = low;
                bytes[4] = high;
                let x = u64::from_le_bytes(bytes);
                assert_eq!(first(string_special(x)), reference(x, &STRING_SPECIAL), "{bytes:?}");
                assert_eq!(first(ascii_special(x)), reference(x, &ASCII_SPECIAL), "{bytes:?}");
            }
        }
        // Every length below eight, which ends in the one-word test, with every byte at every place.
        for len in 0..8 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = [b'a'; 8];
                    bytes[at] = b;
                    for table in [&STRING_SPECIAL, &ASCII_SPECIAL] {
                        let special = if table == &STRING_SPECIAL {
                            string_special
                        } else {
                            ascii_special
                        };
                        let expected = if table[b as usize] { at } else { len };
                        assert_eq!(skip_plain(&bytes[..len], 0, table, special), expected, "{len} {at} {b}");
                    }
                }
            }
        }
        for b in 0..=255u8 {
            for at in 0..8u32 {
                let mut bytes = [b'a'; 8];
                bytes[at as usize] = b;
                let x = u64::from_le_bytes(bytes);
                assert_eq!(first(string_special(x)), STRING_SPECIAL[b as usize].then_some(at));
                assert_eq!(first(ascii_special(x)), ASCII_SPECIAL[b as usize].then_some(at));
            }
        }
    }
}
