//! Exact decimal numbers for the keys that count something (bytes, parts, pages).
//!
//! One rule for every such key, whether SQL passed an INTEGER, a REAL or TEXT: a number is
//! written in decimal, optionally with a fraction and an exponent (`5242880`, `5.24288e6`,
//! `1e7`); SQL's REAL reaches us as Rust's shortest round-trip decimal text (`1e7` →
//! `10000000`, `1.5` → `1.5`), so the REAL and the text of the same value mean the same.
//! The value is computed exactly (no floating point): it must be a whole number (after a
//! size unit is applied), else it is an error, never rounded.
//!
//! Invariants:
//! - No input panics or overflows: digits are bounded by the input, exponents are clamped,
//!   every multiplication is checked.
//! - A leading `-` before a well-formed number is reported as negative, not as a syntax error.

/// Why a number was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NumberError {
    /// Not a number (or an unknown unit).
    Syntax,
    /// A well-formed number with a minus sign.
    Negative,
    /// Not a whole number (of bytes, parts, pages).
    Fraction,
    /// Above `u64::MAX`.
    TooLarge,
}

/// Exponents are clamped to this magnitude plus the number's length: far past anything that
/// fits a u64 (10^20) or leaves a whole number (10^-40 × 2^30 < 1), whatever zeros the
/// mantissa carries, and small enough that shifting the decimal point stays cheap.
const MAX_EXPONENT: i64 = 1000;

/// Splits `s` (already trimmed) into the number at its start and the rest (a unit, or junk).
/// The number is `digits[.digits][(e|E)[+|-]digits]`.
fn split_number(s: &str) -> Result<(&str, &str), NumberError> {
    let b = s.as_bytes();
    let digits_from = |i: usize| i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    let negative = b.first() == Some(&b'-');
    let start = usize::from(negative);
    let mut end = digits_from(start);
    if end == start {
        return Err(NumberError::Syntax);
    }
    if b.get(end) == Some(&b'.') {
        let frac_end = digits_from(end + 1);
        if frac_end == end + 1 {
            return Err(NumberError::Syntax);
        }
        end = frac_end;
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(b.get(end + 1), Some(b'+' | b'-')));
        let exp_end = digits_from(end + 1 + sign);
        if exp_end == end + 1 + sign {
            return Err(NumberError::Syntax);
        }
        end = exp_end;
    }
    if negative {
        return Err(NumberError::Negative);
    }
    Ok((&s[..end], &s[end..]))
}

/// The exact value of `number` (as split by [`split_number`]) times 2^`shift`, if that is a
/// whole number that fits a u64.
fn whole_times_pow2(number: &str, shift: u32) -> Result<u64, NumberError> {
    let (mantissa, exponent) = match number.find(['e', 'E']) {
        Some(i) => (&number[..i], &number[i + 1..]),
        None => (number, ""),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let exp_negative = exponent.starts_with('-');
    let length = i64::try_from(number.len()).unwrap_or(i64::MAX / 4);
    let exp_limit = MAX_EXPONENT + length;
    let mut exp: i64 = 0;
    for d in exponent.trim_start_matches(['+', '-']).bytes() {
        exp = (exp * 10 + i64::from(d - b'0')).min(exp_limit);
    }
    if exp_negative {
        exp = -exp;
    }
    let mut digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|d| d - b'0')
        .collect();
    // The decimal point sits before digits[point] (point may lie outside the digits).
    let mut point = i64::try_from(int_part.len()).unwrap_or(i64::MAX) + exp;
    let leading_zeros = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..leading_zeros);
    point -= i64::try_from(leading_zeros).unwrap_or(0);
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        return Ok(0);
    }
    // The first digit is non-zero: the value is at least 10^(point-1).
    if point > 20 {
        return Err(NumberError::TooLarge);
    }
    if point < -MAX_EXPONENT {
        return Err(NumberError::Fraction);
    }
    let (int_digits, mut frac_digits): (Vec<u8>, Vec<u8>) = if point <= 0 {
        let zeros = usize::try_from(-point).unwrap_or(0);
        (
            Vec::new(),
            std::iter::repeat_n(0, zeros).chain(digits).collect(),
        )
    } else {
        let point = usize::try_from(point).unwrap_or(0);
        if point >= digits.len() {
            let zeros = point - digits.len();
            (
                digits
                    .into_iter()
                    .chain(std::iter::repeat_n(0, zeros))
                    .collect(),
                Vec::new(),
            )
        } else {
            let frac = digits.split_off(point);
            (digits, frac)
        }
    };
    let mut whole: u64 = 0;
    for d in int_digits {
        whole = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add(u64::from(d)))
            .ok_or(NumberError::TooLarge)?;
    }
    if whole > (u64::MAX >> shift) {
        return Err(NumberError::TooLarge);
    }
    let whole = whole << shift;
    // 0.frac × 2^shift exactly: double the decimal fraction `shift` times, collecting the
    // carries out of the units digit; whatever fraction is left over is not a whole number.
    let mut frac_whole: u64 = 0;
    for _ in 0..shift {
        let mut carry = 0u8;
        for d in frac_digits.iter_mut().rev() {
            let v = *d * 2 + carry;
            *d = v % 10;
            carry = v / 10;
        }
        frac_whole = frac_whole * 2 + u64::from(carry);
    }
    if frac_digits.iter().any(|d| *d != 0) {
        return Err(NumberError::Fraction);
    }
    whole.checked_add(frac_whole).ok_or(NumberError::TooLarge)
}

/// A byte size: a number followed by nothing or B (bytes), K/KB/KiB, M/MB/MiB or G/GB/GiB
/// (1024-based, ASCII case-insensitive); surrounding whitespace is ignored.
pub(super) fn size(s: &str) -> Result<u64, NumberError> {
    let (number, unit) = split_number(s.trim())?;
    let shift: u32 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(NumberError::Syntax),
    };
    whole_times_pow2(number, shift)
}

/// A count: a number with nothing after it, which must be whole.
pub(super) fn whole_number(s: &str) -> Result<u64, NumberError> {
    match split_number(s.trim())? {
        (number, "") => whole_times_pow2(number, 0),
        _ => Err(NumberError::Syntax),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_in_every_notation() {
        for (text, n) in [
            ("0", 0),
            ("007", 7),
            ("5", 5),
            ("5.0", 5),
            ("5e0", 5),
            ("1e7", 10_000_000),
            ("1E7", 10_000_000),
            ("1e+7", 10_000_000),
            ("1.5e1", 15),
            ("150e-1", 15),
            ("0.00e5", 0),
            ("0e-99999", 0),
            ("18446744073709551615", u64::MAX),
            ("1.8446744073709551615e19", u64::MAX),
            (" 42 ", 42),
        ] {
            assert_eq!(whole_number(text), Ok(n), "{text}");
        }
    }

    #[test]
    fn refusals_say_why() {
        use NumberError::*;
        for (text, e) in [
            ("", Syntax),
            ("+5", Syntax),
            (".5", Syntax),
            ("5.", Syntax),
            ("5e", Syntax),
            ("5e+", Syntax),
            ("e5", Syntax),
            ("5 5", Syntax),
            ("0x10", Syntax),
            ("inf", Syntax),
            ("-1", Negative),
            ("-0", Negative),
            ("-1.5e3", Negative),
            ("1.5", Fraction),
            ("1e-1", Fraction),
            ("1.0000000000000000000000000000001", Fraction),
            ("1e-99999", Fraction),
            ("18446744073709551616", TooLarge),
            ("1e20", TooLarge),
            ("1e99999", TooLarge),
        ] {
            assert_eq!(whole_number(text), Err(e), "{text}");
        }
    }

    #[test]
    fn sizes_apply_the_unit_exactly() {
        assert_eq!(size("1.5MB"), Ok(1_572_864));
        assert_eq!(size("0.5K"), Ok(512));
        assert_eq!(size("5e-1KiB"), Ok(512));
        assert_eq!(size("1e3KB"), Ok(1_024_000));
        assert_eq!(size("1.0000001MB"), Err(NumberError::Fraction));
        assert_eq!(size("0.1K"), Err(NumberError::Fraction));
        assert_eq!(size("17179869183G"), Ok(17_179_869_183 << 30));
        assert_eq!(size("17179869184G"), Err(NumberError::TooLarge));
        assert_eq!(size("5TB"), Err(NumberError::Syntax));
        assert_eq!(size("-5MB"), Err(NumberError::Negative));
    }

    /// What SQLite hands over for a REAL is Rust's `f64` display text: the rule treats it
    /// exactly like the same number written as text.
    #[test]
    fn real_values_read_as_their_decimal_text() {
        for (real, n) in [
            (1e7, Some(10_000_000)),
            (5_242_880.0, Some(5_242_880)),
            (1.5, None),
        ] {
            assert_eq!(whole_number(&real.to_string()).ok(), n, "{real}");
        }
        assert_eq!(
            whole_number(&1e30_f64.to_string()),
            Err(NumberError::TooLarge)
        );
        assert_eq!(
            whole_number(&(-2.0_f64).to_string()),
            Err(NumberError::Negative)
        );
    }
}
