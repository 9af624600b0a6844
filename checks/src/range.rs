//! Nagios threshold ranges (`10`, `10:`, `~:10`, `10:20`, `@10:20`) and the
//! warning/critical evaluation built on them.
//!
//! Semantics follow the monitoring-plugins developer guidelines, which match the legacy C
//! `check_range` of monitoring-plugins 2.3.3 (research/nagios.md §2):
//!
//! * `[@]start:end`, start ≤ end; `start:` may be omitted when it is 0; an empty end means
//!   +∞; `~` as start means −∞.
//! * Without `@` the range alerts when the value is **outside** `[start, end]`; with `@` when
//!   it is **inside**. Both ends are inclusive in both forms, so a value equal to an end never
//!   alerts without `@` and always alerts with it.
//!
//! Where the implementations disagree with the guidelines we follow the guidelines:
//! * monitoring-plugins 3.x treats the end of `~:N` as exclusive (open PR #2356 calls this a
//!   bug); here `~:10` does not alert at exactly 10.
//! * the 3.x parser reads a bare `N` as `(−∞, N]`; here it is `[0, N]`, so negatives alert.
//! * the 2.3.3 parser reads junk (`abc`, `''`) as `0:0` or `0:` through `strtod`; here junk,
//!   an empty string, a lone `~` and `start > end` are errors.
//!
//! Numbers are decimal with an optional sign, fraction and exponent (`10:1e1` is accepted as
//! the C code accepts it); `inf` and `nan` are rejected.

use std::fmt;
use std::str::FromStr;

use crate::state::ServiceState;

/// Why a string is not a range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// Nothing to parse (the C code would have read this as `0:`).
    #[error("empty range")]
    Empty,
    /// A bound is not a decimal number.
    #[error("range {range:?}: {part:?} is not a number")]
    NotANumber { range: String, part: String },
    /// The start is above the end (`20:10`, or `-5`, which means `0:-5`).
    #[error("range {range:?}: start {start} is greater than end {end}")]
    StartAboveEnd { range: String, start: f64, end: f64 },
}

/// One threshold range.
///
/// `start == f64::NEG_INFINITY` stands for `~`, `end == f64::INFINITY` for an empty end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Lower bound, inclusive; `-∞` for `~`.
    pub start: f64,
    /// Upper bound, inclusive; `+∞` when the text had nothing after `:`.
    pub end: f64,
    /// `@` prefix: alert inside the range instead of outside it.
    pub inside: bool,
}

impl Range {
    /// Parses a range as the plugin guidelines define it.
    ///
    /// # Errors
    /// [`RangeError`] for empty text, non-numeric bounds and `start > end`.
    pub fn parse(text: &str) -> Result<Range, RangeError> {
        let trimmed = text.trim();
        let (inside, body) = match trimmed.strip_prefix('@') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        if body.is_empty() {
            return Err(RangeError::Empty);
        }
        let (start, end) = match body.split_once(':') {
            Some((s, e)) => {
                let start = match s {
                    "~" => f64::NEG_INFINITY,
                    // `:10` is `0:10` in the C code (strtod of an empty string).
                    "" => 0.0,
                    _ => number(trimmed, s)?,
                };
                let end = if e.is_empty() { f64::INFINITY } else { number(trimmed, e)? };
                (start, end)
            }
            None => (0.0, number(trimmed, body)?),
        };
        if start > end {
            return Err(RangeError::StartAboveEnd { range: trimmed.to_owned(), start, end });
        }
        Ok(Range { start, end, inside })
    }

    /// Whether `value` raises an alert for this range. NaN never alerts (see
    /// [`Thresholds::evaluate`] for how a missing value is reported).
    pub fn alert(&self, value: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        let within = self.start <= value && value <= self.end;
        if self.inside {
            within
        } else {
            !within
        }
    }
}

fn number(range: &str, part: &str) -> Result<f64, RangeError> {
    let bad = || RangeError::NotANumber { range: range.to_owned(), part: part.to_owned() };
    // Rust's parser also takes "inf", "nan" and "infinity"; the guidelines only know digits.
    let ok_chars = part.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    if !ok_chars || !part.bytes().any(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match part.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(bad()),
    }
}

impl FromStr for Range {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Range::parse(s)
    }
}

impl fmt::Display for Range {
    /// Writes the shortest text that parses back to the same range (`10`, `10:`, `~:10`,
    /// `@10:20`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inside {
            f.write_str("@")?;
        }
        let end_infinite = self.end == f64::INFINITY;
        if self.start == 0.0 && !end_infinite {
            return write!(f, "{}", self.end);
        }
        if self.start == f64::NEG_INFINITY {
            f.write_str("~:")?;
        } else {
            write!(f, "{}:", self.start)?;
        }
        if !end_infinite {
            write!(f, "{}", self.end)?;
        }
        Ok(())
    }
}

impl serde::Serialize for Range {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Range {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Range;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Nagios range such as \"10\", \"10:\", \"~:10\" or \"@10:20\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Range, E> {
                Range::parse(v).map_err(E::custom)
            }
            // TOML users write `warning = 10` as often as `warning = "10"`.
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Range, E> {
                Range::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Range, E> {
                Range::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Range, E> {
                Range::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A warning and a critical range, as given to a plugin with `-w` and `-c`.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Range whose alert means WARNING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<Range>,
    /// Range whose alert means CRITICAL; checked before the warning range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<Range>,
}

impl Thresholds {
    /// Parses `-w`/`-c` style texts; an empty or absent text means "no range".
    ///
    /// # Errors
    /// The [`RangeError`] of the first text that does not parse.
    pub fn parse(warning: Option<&str>, critical: Option<&str>) -> Result<Thresholds, RangeError> {
        let one = |t: Option<&str>| match t.map(str::trim) {
            None | Some("") => Ok(None),
            Some(t) => Range::parse(t).map(Some),
        };
        Ok(Thresholds { warning: one(warning)?, critical: one(critical)? })
    }

    /// The plugin guidelines' `get_status`: CRITICAL if the critical range alerts, else
    /// WARNING if the warning range alerts, else OK. A NaN value (no data) is UNKNOWN.
    pub fn evaluate(&self, value: f64) -> ServiceState {
        if value.is_nan() {
            return ServiceState::Unknown;
        }
        if self.critical.is_some_and(|r| r.alert(value)) {
            ServiceState::Critical
        } else if self.warning.is_some_and(|r| r.alert(value)) {
            ServiceState::Warning
        } else {
            ServiceState::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const XS: [f64; 12] = [-11.0, -5.0, -0.1, 0.0, 0.5, 1.5, 9.99, 10.0, 10.01, 15.0, 20.0, 20.5];

    /// The table of research/nagios.md §2, measured on monitoring-plugins 2.3.3
    /// (A = alert, . = no alert) for the x values in `XS`.
    #[test]
    fn matches_the_measured_table() {
        let table = [
            ("10", "AAA.....AAAA"),
            ("10:", "AAAAAAA....."),
            ("~:10", "........AAAA"),
            ("10:20", "AAAAAAA....A"),
            ("@10:20", ".......AAAA."),
            ("-10:-5", "A.AAAAAAAAAA"),
            ("@-10:-5", ".A.........."),
            ("~:-5", "..AAAAAAAAAA"),
            ("-5:", "A..........."),
            ("1.5", "AAA...AAAAAA"),
            ("@0.5:1.5", "....AA......"),
            ("~:0", "....AAAAAAAA"),
            ("@~:0", "AAAA........"),
            ("0", "AAA.AAAAAAAA"),
            ("@0", "...A........"),
        ];
        for (text, expected) in table {
            let r = Range::parse(text).unwrap();
            let got: String = XS.iter().map(|&x| if r.alert(x) { 'A' } else { '.' }).collect();
            assert_eq!(got, expected, "range {text}");
        }
    }

    #[test]
    fn parses_every_form() {
        let p = |s: &str| Range::parse(s).unwrap();
        assert_eq!(p("10"), Range { start: 0.0, end: 10.0, inside: false });
        assert_eq!(p("10:"), Range { start: 10.0, end: f64::INFINITY, inside: false });
        assert_eq!(p("~:10"), Range { start: f64::NEG_INFINITY, end: 10.0, inside: false });
        assert_eq!(p("10:20"), Range { start: 10.0, end: 20.0, inside: false });
        assert_eq!(p("@10:20"), Range { start: 10.0, end: 20.0, inside: true });
        assert_eq!(p(":10"), p("0:10"));
        assert_eq!(p("-10.5:-0.25"), Range { start: -10.5, end: -0.25, inside: false });
        assert_eq!(p("10:1e1"), Range { start: 10.0, end: 10.0, inside: false });
        assert_eq!(p(" 5 "), p("5"));
        assert!(!p("~:").alert(1e300) && !p("~:").alert(-1e300));
        assert!(p("@~:").alert(0.0) && p("@~:").alert(-7.0));
        assert!(p("@5").alert(0.0) && p("@5").alert(5.0) && !p("@5").alert(5.1));
    }

    #[test]
    fn equal_values_never_exceed_a_bound() {
        // check_users -w 1 with exactly one user is OK (nagios-plugins#81).
        assert!(!Range::parse("1").unwrap().alert(1.0));
        // The `~:N` end is inclusive as in the guidelines, unlike monitoring-plugins 3.x.
        assert!(!Range::parse("~:2").unwrap().alert(2.0));
        assert!(Range::parse("@10:20").unwrap().alert(20.0));
    }

    #[test]
    fn rejects_junk_that_c_would_read_as_zero() {
        assert_eq!(Range::parse(""), Err(RangeError::Empty));
        assert_eq!(Range::parse("@"), Err(RangeError::Empty));
        for bad in ["abc", "~", "10:x", "inf", "nan", "1:inf", "--5", "1,5", "10::", "@@1"] {
            assert!(Range::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(matches!(Range::parse("-5"), Err(RangeError::StartAboveEnd { .. })));
        assert!(matches!(Range::parse("20:10"), Err(RangeError::StartAboveEnd { .. })));
        let msg = Range::parse("20:10").unwrap_err().to_string();
        assert!(msg.contains("start 20 is greater than end 10"), "{msg}");
    }

    #[test]
    fn displays_back_to_text() {
        for (input, shown) in [
            ("10", "10"),
            ("0:10", "10"),
            ("10:", "10:"),
            ("0:", "0:"),
            ("~:10", "~:10"),
            ("~:", "~:"),
            ("@10:20", "@10:20"),
            ("-0.5:1.25", "-0.5:1.25"),
            ("@~:0", "@~:0"),
        ] {
            assert_eq!(Range::parse(input).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn evaluates_warning_and_critical() {
        let t = Thresholds::parse(Some("10"), Some("20")).unwrap();
        assert_eq!(t.evaluate(5.0), ServiceState::Ok);
        assert_eq!(t.evaluate(10.0), ServiceState::Ok);
        assert_eq!(t.evaluate(15.0), ServiceState::Warning);
        assert_eq!(t.evaluate(25.0), ServiceState::Critical);
        // Below 0 both ranges alert: critical is checked first.
        assert_eq!(t.evaluate(-1.0), ServiceState::Critical);
        assert_eq!(t.evaluate(f64::NAN), ServiceState::Unknown);
        // check_procs -w 1:20 -c 1:30: WARNING above 20, CRITICAL at 0 or above 30.
        let procs = Thresholds::parse(Some("1:20"), Some("1:30")).unwrap();
        assert_eq!(procs.evaluate(0.0), ServiceState::Critical);
        assert_eq!(procs.evaluate(21.0), ServiceState::Warning);
        assert_eq!(procs.evaluate(31.0), ServiceState::Critical);
        assert_eq!(Thresholds::parse(None, Some("")).unwrap(), Thresholds::default());
    }

    #[test]
    fn deserializes_from_strings_and_numbers() {
        #[derive(serde::Deserialize)]
        struct C {
            t: Thresholds,
        }
        let c: C = toml::from_str("t = { warning = 10, critical = \"@1.5:2\" }").unwrap();
        assert_eq!(c.t.warning, Some(Range::parse("10").unwrap()));
        assert_eq!(c.t.critical, Some(Range::parse("@1.5:2").unwrap()));
        assert!(toml::from_str::<C>("t = { warning = \"20:10\" }").is_err());
        assert!(toml::from_str::<C>("t = { warn = \"1\" }").is_err());
    }

    fn bound() -> impl Strategy<Value = f64> {
        prop_oneof![(-1_000_000i64..1_000_000).prop_map(|v| v as f64), (-1e6f64..1e6), Just(0.0),]
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(a in bound(), b in bound(), inside: bool,
                                          open_start: bool, open_end: bool) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let r = Range {
                start: if open_start { f64::NEG_INFINITY } else { lo },
                end: if open_end { f64::INFINITY } else { hi },
                inside,
            };
            let text = r.to_string();
            prop_assert_eq!(Range::parse(&text).unwrap(), r, "text {}", text);
        }

        #[test]
        fn garbage_never_panics(s in "\\PC{0,24}") {
            let _ = Range::parse(&s);
        }

        #[test]
        fn inside_is_the_negation_of_outside(a in bound(), b in bound(), x in bound()) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let out = Range { start: lo, end: hi, inside: false };
            let ins = Range { inside: true, ..out };
            prop_assert_ne!(out.alert(x), ins.alert(x));
        }
    }
}
