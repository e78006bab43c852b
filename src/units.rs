//! Sizes and durations as the configuration writes them: a whole number, or a string with a
//! unit. Every configuration section parses them through here.

use serde::Deserialize;

/// A TOML value written as a whole number, or as a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Int(u64),
    Text(String),
}

/// A size in bytes: an integer, or a string with a unit (`"512KiB"`, `"16MiB"`, `"1GiB"`, `"8MB"`).
pub(crate) fn byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumberOrText::deserialize(d)? {
        NumberOrText::Int(n) => Ok(n),
        NumberOrText::Text(s) => parse_byte_size(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not a size; write bytes (16777216) or a size such as \"16MiB\""))
        }),
    }
}

/// A whole number and the unit written after it (`"16MiB"` is 16 and `"MiB"`).
fn number_and_unit(s: &str) -> Option<(u64, &str)> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    Some((num.parse().ok()?, unit.trim()))
}

pub fn parse_byte_size(s: &str) -> Option<u64> {
    let (n, unit) = number_and_unit(s)?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A duration: whole seconds, or a string with a unit (`"90s"`, `"2m"`, `"1h"`).
pub(crate) fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    match NumberOrText::deserialize(d)? {
        NumberOrText::Int(n) => Ok(std::time::Duration::from_secs(n)),
        NumberOrText::Text(s) => parse_seconds(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("{s:?} is not a duration; write seconds (60) or e.g. \"60s\", \"2m\""))
        }),
    }
}

/// `"60"`, `"60s"`, `"2m"`, `"1h"` (also `"2 min"`): whole numbers only.
pub fn parse_seconds(s: &str) -> Option<std::time::Duration> {
    let (n, unit) = number_and_unit(s)?;
    let mult: u64 = match unit {
        "" | "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        _ => return None,
    };
    n.checked_mul(mult).map(std::time::Duration::from_secs)
}
