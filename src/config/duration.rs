//! Durations as the config file writes them (`40m`, `10s`, `2h`, `1h30m`, `500ms`).
//!
//! Parsing only: which durations are acceptable for a key (at least 1s, more than zero) is
//! decided by the section validators, never here.

use std::time::Duration;

use serde::Deserialize;

/// A duration written like `40m`, `10s`, `2h`, `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a duration written like `40m`, `10s`, `2h`, `1h30m`, `500ms`.
///
/// # Errors
/// A message quoting the text and showing the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("invalid duration {s:?}: write it like 40m, 10s, 2h or 1h30m"))
}
