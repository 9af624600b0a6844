//! Definitions of a round-robin database: data sources and archives, and their
//! rrdtool command-line spelling (`DS:name:TYPE:hb:min:max`, `RRA:CF:xff:steps:rows`).

use std::fmt;

/// How a reading becomes a rate (rrd.md §1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DsType {
    /// The value is the rate.
    Gauge,
    /// Unsigned integer counter with 32/64-bit wrap (with rrdtool's 2^32-1 quirk).
    Counter,
    /// Signed integer counter, no wrap; a sign change gives an unknown interval.
    Derive,
    /// Counter that resets on read: rate = value / seconds.
    Absolute,
    /// Float counter; a decrease is a reset (unknown interval).
    DCounter,
    /// Float signed counter.
    DDerive,
}

impl DsType {
    /// The rrdtool spelling.
    pub fn name(self) -> &'static str {
        match self {
            DsType::Gauge => "GAUGE",
            DsType::Counter => "COUNTER",
            DsType::Derive => "DERIVE",
            DsType::Absolute => "ABSOLUTE",
            DsType::DCounter => "DCOUNTER",
            DsType::DDerive => "DDERIVE",
        }
    }

    /// Parses the rrdtool spelling.
    pub fn parse(s: &str) -> Option<DsType> {
        Some(match s {
            "GAUGE" => DsType::Gauge,
            "COUNTER" => DsType::Counter,
            "DERIVE" => DsType::Derive,
            "ABSOLUTE" => DsType::Absolute,
            "DCOUNTER" => DsType::DCounter,
            "DDERIVE" => DsType::DDerive,
            _ => return None,
        })
    }

    /// Stable on-disk code (docs/STORAGE.md).
    pub fn code(self) -> u8 {
        match self {
            DsType::Gauge => 0,
            DsType::Counter => 1,
            DsType::Derive => 2,
            DsType::Absolute => 3,
            DsType::DCounter => 4,
            DsType::DDerive => 5,
        }
    }

    /// Inverse of [`DsType::code`].
    pub fn from_code(c: u8) -> Option<DsType> {
        Some(match c {
            0 => DsType::Gauge,
            1 => DsType::Counter,
            2 => DsType::Derive,
            3 => DsType::Absolute,
            4 => DsType::DCounter,
            5 => DsType::DDerive,
            _ => return None,
        })
    }

    /// Whether a rate needs the previous reading (and so the first interval is unknown).
    pub fn needs_previous(self) -> bool {
        !matches!(self, DsType::Gauge | DsType::Absolute)
    }
}

impl fmt::Display for DsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Consolidation function of an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cf {
    Average,
    Min,
    Max,
    Last,
}

impl Cf {
    /// The rrdtool spelling.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Average => "AVERAGE",
            Cf::Min => "MIN",
            Cf::Max => "MAX",
            Cf::Last => "LAST",
        }
    }

    /// Parses the rrdtool spelling (case-insensitive, as rrdtool's `cf_conv` is not,
    /// but operators type `average` and mean it).
    pub fn parse(s: &str) -> Option<Cf> {
        Some(match s.to_ascii_uppercase().as_str() {
            "AVERAGE" => Cf::Average,
            "MIN" => Cf::Min,
            "MAX" => Cf::Max,
            "LAST" => Cf::Last,
            _ => return None,
        })
    }

    /// Stable on-disk code.
    pub fn code(self) -> u8 {
        match self {
            Cf::Average => 0,
            Cf::Min => 1,
            Cf::Max => 2,
            Cf::Last => 3,
        }
    }

    /// Inverse of [`Cf::code`].
    pub fn from_code(c: u8) -> Option<Cf> {
        Some(match c {
            0 => Cf::Average,
            1 => Cf::Min,
            2 => Cf::Max,
            3 => Cf::Last,
            _ => return None,
        })
    }
}

impl fmt::Display for Cf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One data source.
#[derive(Clone, Debug, PartialEq)]
pub struct DsDef {
    /// 1–19 characters of `[A-Za-z0-9_]`, as rrdtool allows.
    pub name: String,
    pub kind: DsType,
    /// Longest interval between two updates that still gives a known rate (seconds).
    pub heartbeat: u64,
    /// Rates below are unknown; NaN = no bound.
    pub min: f64,
    /// Rates above are unknown; NaN = no bound.
    pub max: f64,
}

/// One archive.
#[derive(Clone, Debug, PartialEq)]
pub struct RraDef {
    pub cf: Cf,
    /// Largest fraction of unknown PDPs that still gives a known row (strict `>` test).
    pub xff: f64,
    /// PDPs per row.
    pub pdp_cnt: u64,
    /// Rows kept.
    pub rows: u64,
}

/// A definition that rrdtool would refuse.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum DefError {
    #[error("invalid DS format: '{0}'")]
    Ds(String),
    #[error("invalid DS name: '{0}'")]
    DsName(String),
    #[error("unknown data source type: '{0}'")]
    DsType(String),
    #[error("min must be less than max in DS definition: '{0}'")]
    MinMax(String),
    #[error("invalid RRA format: '{0}'")]
    Rra(String),
    #[error("unrecognized consolidation function: '{0}'")]
    Cf(String),
    #[error("invalid xff: must be between 0 and 1: '{0}'")]
    Xff(String),
    #[error("you must define at least one Data Source")]
    NoDs,
    #[error("you must define at least one Round Robin Archive")]
    NoRra,
    #[error("duplicate DS name: {0}")]
    DuplicateDs(String),
    #[error("step size should be no less than one second")]
    Step,
}

/// Checks a DS name the way rrdtool does: 1–19 characters of `[A-Za-z0-9_]`.
pub fn valid_ds_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 19 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn parse_bound(s: &str) -> Option<f64> {
    if s == "U" {
        return Some(f64::NAN);
    }
    s.parse::<f64>().ok()
}

impl DsDef {
    /// Parses `DS:name:TYPE:heartbeat:min:max`.
    ///
    /// # Errors
    /// [`DefError`] naming what rrdtool would refuse.
    pub fn parse(spec: &str) -> Result<DsDef, DefError> {
        let parts: Vec<&str> = spec.split(':').collect();
        if parts.len() != 6 || parts[0] != "DS" {
            return Err(DefError::Ds(spec.to_string()));
        }
        if !valid_ds_name(parts[1]) {
            return Err(DefError::DsName(parts[1].to_string()));
        }
        let kind = DsType::parse(parts[2]).ok_or_else(|| DefError::DsType(parts[2].to_string()))?;
        let heartbeat: u64 = parts[3].parse().map_err(|_| DefError::Ds(spec.to_string()))?;
        if heartbeat == 0 {
            return Err(DefError::Ds(spec.to_string()));
        }
        let min = parse_bound(parts[4]).ok_or_else(|| DefError::Ds(spec.to_string()))?;
        let max = parse_bound(parts[5]).ok_or_else(|| DefError::Ds(spec.to_string()))?;
        if !min.is_nan() && !max.is_nan() && min >= max {
            return Err(DefError::MinMax(spec.to_string()));
        }
        Ok(DsDef { name: parts[1].to_string(), kind, heartbeat, min, max })
    }

    /// The rrdtool spelling, for `info` and error messages.
    pub fn spec(&self) -> String {
        format!("DS:{}:{}:{}:{}:{}", self.name, self.kind, self.heartbeat, fmt_bound(self.min), fmt_bound(self.max))
    }
}

fn fmt_bound(v: f64) -> String {
    if v.is_nan() {
        "U".to_string()
    } else {
        format!("{v}")
    }
}

impl RraDef {
    /// Parses `RRA:CF:xff:steps:rows`.
    ///
    /// # Errors
    /// [`DefError`] naming what rrdtool would refuse.
    pub fn parse(spec: &str) -> Result<RraDef, DefError> {
        let parts: Vec<&str> = spec.split(':').collect();
        if parts.len() != 5 || parts[0] != "RRA" {
            return Err(DefError::Rra(spec.to_string()));
        }
        let cf = Cf::parse(parts[1]).ok_or_else(|| DefError::Cf(parts[1].to_string()))?;
        let xff: f64 = parts[2].parse().map_err(|_| DefError::Xff(parts[2].to_string()))?;
        if !(0.0..1.0).contains(&xff) {
            return Err(DefError::Xff(parts[2].to_string()));
        }
        let pdp_cnt: u64 = parts[3].parse().map_err(|_| DefError::Rra(spec.to_string()))?;
        let rows: u64 = parts[4].parse().map_err(|_| DefError::Rra(spec.to_string()))?;
        if pdp_cnt == 0 || rows == 0 {
            return Err(DefError::Rra(spec.to_string()));
        }
        Ok(RraDef { cf, xff, pdp_cnt, rows })
    }

    /// The rrdtool spelling.
    pub fn spec(&self) -> String {
        format!("RRA:{}:{}:{}:{}", self.cf, self.xff, self.pdp_cnt, self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rrdtool_spellings() {
        let d = DsDef::parse("DS:g:GAUGE:120:0:100").unwrap();
        assert_eq!((d.kind, d.heartbeat, d.min, d.max), (DsType::Gauge, 120, 0.0, 100.0));
        let d = DsDef::parse("DS:c:COUNTER:120:U:U").unwrap();
        assert!(d.min.is_nan() && d.max.is_nan());
        let r = RraDef::parse("RRA:AVERAGE:0.5:24:244").unwrap();
        assert_eq!((r.cf, r.xff, r.pdp_cnt, r.rows), (Cf::Average, 0.5, 24, 244));
    }

    #[test]
    fn rejects_what_rrdtool_rejects() {
        assert!(DsDef::parse("DS:longername_abcdefghi:GAUGE:1:U:U").is_err());
        assert!(DsDef::parse("DS:a:GAUGE:1:5:1").is_err());
        assert!(DsDef::parse("DS:a:FOO:1:U:U").is_err());
        assert!(RraDef::parse("RRA:AVERAGE:1.0:1:1").is_err());
        assert!(RraDef::parse("RRA:AVERAGE:0.5:0:1").is_err());
        assert!(RraDef::parse("RRA:HWPREDICT:0.5:1:1").is_err());
    }
}
