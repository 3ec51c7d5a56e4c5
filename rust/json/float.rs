//! Floats written as `float.__repr__` writes them, which is what simplejson's encoder writes.

/// The shortest decimal digits that read back as `value` (finite, not negative), as an integer `digits` without
/// trailing zeros and a power of ten `exp`: `value` reads back from `digits` × 10^`exp`. `text` is zmij's output
/// for it.
fn shortest(text: &[u8]) -> (u64, i32) {
    let mut digits = 0u64;
    let mut fraction = 0;
    let mut in_fraction = false;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'0'..=b'9' => {
                digits = digits * 10 + u64::from(b - b'0');
                fraction += i32::from(in_fraction);
            }
            b'.' => in_fraction = true,
            _ => break,
        }
        i += 1;
    }
    let mut exp = 0i32;
    if text.get(i) == Some(&b'e') {
        let (negative, magnitude) = match text.get(i + 1) {
            Some(b'-') => (true, &text[i + 2..]),
            Some(b'+') => (false, &text[i + 2..]),
            _ => (false, &text[i + 1..]),
        };
        exp = magnitude.iter().fold(0i32, |n, d| n * 10 + i32::from(d - b'0'));
        if negative {
            exp = -exp;
        }
    }
    if digits == 0 {
        return (0, 0);
    }
    let mut exp = exp - fraction;
    while digits % 10 == 0 {
        digits /= 10;
        exp += 1;
    }
    (digits, exp)
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
    format!("{digits}e{exp}").parse::<f64>() == Ok(value)
}

/// Writes a finite float as `float.__repr__` does. Both zmij and CPython's `dtoa` (mode 0) find the shortest
/// digits that read back as the same double; when two such candidates are equally near, `dtoa` takes the one
/// ending in an even digit, which is checked for here rather than assumed of zmij. repr then lays the digits out
/// positionally when the decimal point falls within 16 digits and 4 zeros after it, and with a signed exponent
/// of at least two digits otherwise.
pub(super) fn write_float_repr(out: &mut Vec<u8>, value: f64) {
    // zmij (Schubfach) finds the shortest digits several times faster than `{:e}`.
    let mut buffer = zmij::Buffer::new();
    let text = buffer.format_finite(value).as_bytes();
    let unsigned = text.strip_prefix(b"-").unwrap_or(text);
    // Without an exponent and within 16 characters (so at most 15 significant digits, where no two decimals
    // read back as the same double and so no tie can arise), zmij's layout is repr's, unless the number is below
    // 0.0001: repr writes that with an exponent.
    if unsigned.len() <= 16 && !unsigned.contains(&b'e') && !unsigned.starts_with(b"0.0000") {
        out.extend_from_slice(text);
        return;
    }
    let magnitude = value.abs();
    let (mut digits, mut exp) = shortest(unsigned);
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
            while digits != 0 && digits % 10 == 0 {
                digits /= 10;
                exp += 1;
            }
        }
    }
    let mut buffer = itoa::Buffer::new();
    let text = buffer.format(digits).as_bytes();
    if value.is_sign_negative() {
        out.push(b'-');
    }
    let point = exp + text.len() as i32;
    if -4 < point && point <= 16 {
        if point <= 0 {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + point.unsigned_abs() as usize, b'0');
            out.extend_from_slice(text);
        } else if (point as usize) < text.len() {
            out.extend_from_slice(&text[..point as usize]);
            out.push(b'.');
            out.extend_from_slice(&text[point as usize..]);
        } else {
            out.extend_from_slice(text);
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
        out.extend_from_slice(itoa::Buffer::new().format(exp.unsigned_abs()).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortest_digits_drop_trailing_zeros() {
        let digits = |value: f64| shortest(zmij::Buffer::new().format_finite(value).as_bytes());
        assert_eq!(digits(0.0), (0, 0));
        assert_eq!(digits(100.0), (1, 2));
        assert_eq!(digits(0.0001), (1, -4));
        assert_eq!(digits(0.00001), (1, -5));
        assert_eq!(digits(124.875), (124_875, -3));
        assert_eq!(digits(1e16), (1, 16));
        assert_eq!(digits(5e-324), (5, -324));
        assert_eq!(digits(1.797_693_134_862_315_7e308), (17_976_931_348_623_157, 292));
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
}
