//! Sizes as the config file writes them: a number of bytes (`33554432`) or a number with a
//! unit (`32MiB`, `64 KiB`, `1GiB`, `100MB`, `500kB`), units case-insensitive, binary
//! (`KiB`, `MiB`, `GiB`: powers of 1024) or decimal (`KB`, `MB`, `GB`: powers of 1000).
//!
//! Parsing only: which sizes are acceptable for a key (a minimum, a maximum) is decided by
//! the section validators, never here.

use serde::Deserialize;

/// A size as written: any TOML value, read by [`RawSize::bytes`] in the validator (a
/// wrong type included), so every error names the key and line.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(transparent)]
pub(super) struct RawSize(pub(super) toml::Value);

impl RawSize {
    /// The number of bytes: a TOML integer, or a string for [`parse_size`].
    ///
    /// # Errors
    /// A message quoting the value and showing the accepted forms.
    pub(super) fn bytes(&self) -> Result<u64, String> {
        match &self.0 {
            toml::Value::Integer(n) => {
                u64::try_from(*n).map_err(|_| format!("{n} is not a size: it is negative"))
            }
            toml::Value::String(s) => parse_size(s),
            other => Err(format!("{other} is not a size: {FORMS}")),
        }
    }
}

const FORMS: &str = "write it like \"32MiB\", \"64KiB\", \"100MB\" or a number of bytes";

/// Parses a size written like `32MiB`, `64 KiB`, `100MB` or `33554432` (bytes).
///
/// # Errors
/// A message quoting the text and showing the accepted forms.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size: {FORMS}");
    let text = s.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_and_without_units() {
        assert_eq!(parse_size("32MiB"), Ok(32 * 1024 * 1024));
        assert_eq!(parse_size(" 64 KiB "), Ok(64 * 1024));
        assert_eq!(parse_size("1gib"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("500kB"), Ok(500_000));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("12B"), Ok(12));
        for bad in ["", "MiB", "32 potatoes", "1.5GiB", "-1MiB", "32 MiB extra"] {
            let e = parse_size(bad).unwrap_err();
            assert!(
                e.contains("is not a size") && e.contains("32MiB"),
                "{bad:?}: {e}"
            );
        }
        assert!(
            parse_size("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
        let raw = |v: toml::Value| RawSize(v).bytes();
        assert_eq!(
            raw(toml::Value::Integer(-1)).unwrap_err(),
            "-1 is not a size: it is negative"
        );
        assert_eq!(raw(toml::Value::String("2MiB".into())), Ok(2 << 20));
        assert!(
            raw(toml::Value::Boolean(true))
                .unwrap_err()
                .starts_with("true is not a size: write it like")
        );
    }
}
