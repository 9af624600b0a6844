//! rrdtool's `rrd_diff`: the difference of two integer readings given as decimal
//! strings, computed exactly and then rounded to a double once.
//!
//! rrdtool does this digit by digit on strings so that 64-bit counters keep every digit
//! until the subtraction; an exact `i128` subtraction gives the same result. Its quirks
//! are kept because they change what is stored: leading non-digits are skipped (a `-`
//! among them marks the number negative), trailing garbage is cut off, operands of
//! different sign give NaN (the DERIVE zero-crossing quirk, rrd.md §1.2), and operands
//! longer than 30 digits give NaN.

/// Maximum reading length rrdtool keeps (`LAST_DS_LEN`).
pub const LAST_DS_LEN: usize = 30;

struct Operand<'a> {
    negative: bool,
    digits: &'a [u8],
}

fn operand(s: &str) -> Operand<'_> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut negative = false;
    while i < b.len() && !b[i].is_ascii_digit() {
        if b[i] == b'-' {
            negative = true;
        }
        i += 1;
    }
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    Operand { negative, digits: &b[start..i] }
}

fn magnitude(digits: &[u8]) -> u128 {
    // At most LAST_DS_LEN (30) digits reach here, and 10^30 < 2^128.
    digits.iter().fold(0u128, |acc, d| acc * 10 + u128::from(d - b'0'))
}

/// rrdtool 1.7 turns the exact decimal result into a double with its own parser, which
/// accumulates digit by digit in doubles (`r = r·10 + d`) instead of rounding once. For
/// 20-digit results that differs from correct rounding in the last bits, and the 64-bit
/// wrap arithmetic that follows makes those bits visible (found by the differential test:
/// 0 after 18446744073709223001 is 164864/s over 2 s in rrdtool, 163840 when rounded once).
fn to_double(m: u128) -> f64 {
    m.to_string().bytes().fold(0.0, |acc, d| acc * 10.0 + f64::from(d - b'0'))
}

/// `a - b` as rrdtool computes it for COUNTER and DERIVE readings.
pub fn rrd_diff(a: &str, b: &str) -> f64 {
    let a = operand(a);
    let b = operand(b);
    if a.digits.is_empty() || b.digits.is_empty() || a.negative != b.negative {
        return f64::NAN;
    }
    if a.digits.len().max(b.digits.len()) > LAST_DS_LEN {
        return f64::NAN;
    }
    let (ma, mb) = (magnitude(a.digits), magnitude(b.digits));
    let r = if ma >= mb { to_double(ma - mb) } else { -to_double(mb - ma) };
    if a.negative {
        -r
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_decimal_difference() {
        assert_eq!(rrd_diff("200", "4294967000"), -4294966800.0);
        assert_eq!(rrd_diff("18446744073709551000", "200"), 18446744073709550800.0);
        assert_eq!(rrd_diff("-20", "-80"), 60.0);
        assert!(rrd_diff("-20", "40").is_nan());
        assert!(rrd_diff("0", "-90").is_nan());
        assert_eq!(rrd_diff("12abc", "2"), 10.0);
    }
}
