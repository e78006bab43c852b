//! The tenant id: the one name that reaches paths and object keys, so it is validated once, here.

use std::fmt;

/// A validated tenant id: `^[a-z0-9][a-z0-9_-]{0,62}$`. It can never be `..`, contain a slash or
/// be empty, so it is safe as one path segment and one object-key segment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

#[derive(Debug, thiserror::Error)]
#[error(
    "invalid tenant id {shown:?}: {why}; a tenant id is 1 to 63 characters of a-z, 0-9, '_' and \
     '-', starting with a letter or digit (for example \"comune-di-pisa\")"
)]
pub struct InvalidTenantId {
    shown: String,
    why: &'static str,
}

impl TenantId {
    pub fn parse(s: &str) -> Result<TenantId, InvalidTenantId> {
        let err = |why| InvalidTenantId { shown: s.chars().take(80).collect(), why };
        let first = s.bytes().next().ok_or_else(|| err("it is empty"))?;
        if s.len() > 63 {
            return Err(err("it is longer than 63 characters"));
        }
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(err("it must start with a lower-case letter or a digit"));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')) {
            return Err(if c.is_ascii_uppercase() {
                err("it contains an upper-case letter")
            } else {
                err("it contains a character outside a-z, 0-9, '_' and '-'")
            });
        }
        Ok(TenantId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

impl std::str::FromStr for TenantId {
    type Err = InvalidTenantId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantId::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_ids() {
        for ok in ["a", "0", "comune-di-pisa", "asl_3", &"a".repeat(63)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_path_fragments_and_bad_shapes() {
        for bad in ["", "../x", "..", "x/y", "Comune", "-a", "_a", "a b", "a.b", &"a".repeat(64), "è"] {
            let e = TenantId::parse(bad).unwrap_err().to_string();
            assert!(e.contains("invalid tenant id"), "{bad}: {e}");
        }
    }
}
