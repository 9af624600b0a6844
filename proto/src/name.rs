//! Names that a collector accepts for clusters, hosts and metrics.
//!
//! Names end up in file paths, URLs and log lines, so they are restricted to
//! `A-Z a-z 0-9 _ - .` (metrics also `:`), 1 to 128 bytes, never starting with `.` or
//! `-` and never containing `..`. A name such as `../../etc/passwd` is refused here,
//! before anything else sees it.

/// Longest accepted name in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// What the name names; metric names also allow `:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Cluster,
    Host,
    Metric,
}

impl NameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Cluster => "cluster",
            NameKind::Host => "host",
            NameKind::Metric => "metric",
        }
    }
}

/// Why a name is refused. The message shows the name escaped, so control characters
/// never reach a terminal or a log file as they are.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {} name {}: {reason}", kind.as_str(), escaped(name))]
pub struct NameError {
    pub kind: NameKind,
    pub name: String,
    pub reason: &'static str,
}

/// Escapes a string from outside for a log line (`"a\u{1b}b"` → `"a\x1bb"`), cut to
/// a readable length.
pub fn escaped(s: &str) -> String {
    let cut: String = s.chars().take(MAX_NAME_LEN).collect();
    let mut out = format!("{:?}", cut);
    if cut.len() < s.len() {
        out.push('…');
    }
    out
}

/// Checks a name.
///
/// # Errors
/// [`NameError`] with the reason when the name is not allowed.
pub fn validate(kind: NameKind, name: &str) -> Result<(), NameError> {
    let fail = |reason| Err(NameError { kind, name: name.to_owned(), reason });
    if name.is_empty() {
        return fail("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail("longer than 128 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return fail("starts with '.' or '-'");
    }
    if name.contains("..") {
        return fail("contains '..'");
    }
    let ok =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') || (c == ':' && kind == NameKind::Metric);
    if !name.chars().all(ok) {
        return fail("has characters outside A-Z a-z 0-9 _ - .");
    }
    Ok(())
}

/// Turns free text (a device or mount path) into a string that passes [`validate`]:
/// `/var/lib` → `var_lib`, `/` → `root`.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches(|c| c == '_' || c == '-');
    let mut out = if trimmed.is_empty() { "root".to_owned() } else { trimmed.to_owned() };
    out.truncate(64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_path_tricks_and_control_characters() {
        for bad in ["../../etc/passwd", "a/b", "with space", "nul\0", "esc\x1b[31m", "..", ".hidden", "", "-x"] {
            assert!(validate(NameKind::Host, bad).is_err(), "{bad:?} accepted");
        }
        let err = validate(NameKind::Host, "esc\x1b[31m").unwrap_err().to_string();
        assert!(!err.contains('\x1b'), "{err}");
        assert!(validate(NameKind::Host, &"a".repeat(129)).is_err());
    }

    #[test]
    fn accepts_usual_names() {
        for good in ["web-01.example.com", "db_2", "load_one", "A"] {
            assert!(validate(NameKind::Host, good).is_ok(), "{good}");
        }
        assert!(validate(NameKind::Metric, "mysql:questions").is_ok());
        assert!(validate(NameKind::Host, "mysql:questions").is_err());
    }

    #[test]
    fn sanitizes_mount_points() {
        assert_eq!(sanitize("/"), "root");
        assert_eq!(sanitize("/var/lib/mysql"), "var_lib_mysql");
        assert_eq!(sanitize("/mnt/My Disk"), "mnt_My_Disk");
    }

    proptest! {
        #[test]
        fn sanitized_text_is_a_valid_name(s in ".{0,100}") {
            let name = sanitize(&s);
            prop_assert!(validate(NameKind::Metric, &name).is_ok(), "{:?} -> {:?}", s, name);
        }
    }
}
