//! API tokens: `reversa token new` makes one (shown once), the configuration holds only its
//! SHA-256, and a presented token is matched against every declared hash in constant time.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::tenant::TenantId;

/// `[api]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub tokens: Vec<TokenConfig>,
}

/// One `[[api.tokens]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Recorded as the actor in the audit log.
    pub name: String,
    pub scope: Scope,
    /// Hex of the SHA-256 of the token.
    pub sha256: String,
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Scope {
    /// Everything.
    Operator,
    /// Read-only: the audit log, the disclosure register, certificates and drill reports.
    Auditor,
    /// One tenant's designated administrator.
    Tenant(TenantId),
}

impl TryFrom<String> for Scope {
    type Error = String;
    fn try_from(s: String) -> Result<Scope, String> {
        match s.as_str() {
            "operator" => Ok(Scope::Operator),
            "auditor" => Ok(Scope::Auditor),
            _ => match s.strip_prefix("tenant:") {
                Some(t) => TenantId::parse(t).map(Scope::Tenant).map_err(|e| format!("scope {s:?}: {e}")),
                None => Err(format!("scope {s:?} is not operator, auditor or tenant:<id>")),
            },
        }
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        match s {
            Scope::Operator => "operator".into(),
            Scope::Auditor => "auditor".into(),
            Scope::Tenant(t) => format!("tenant:{t}"),
        }
    }
}

impl ApiConfig {
    /// The first problem, by its key: a name given twice, a hash that is not one.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let mut names = std::collections::BTreeSet::new();
        for t in &self.tokens {
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return Err((
                    "api.tokens.name",
                    format!("{:?} is empty or given twice: each token has its own name", t.name),
                ));
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err((
                    "api.tokens.sha256",
                    format!("of {:?} is not 64 hex digits: paste what `reversa token new` printed", t.name),
                ));
            }
        }
        Ok(())
    }

    /// The token `presented` is, or `None`. Every declared hash is compared, in constant time,
    /// so neither the answer's time nor its absence tells which token came close.
    pub fn authenticate(&self, presented: &str) -> Option<&TokenConfig> {
        let digest = Sha256::digest(presented.as_bytes());
        let mut found = None;
        for t in &self.tokens {
            let declared = hex::decode(&t.sha256).unwrap_or_default();
            if bool::from(declared.as_slice().ct_eq(digest.as_slice())) {
                found = Some(t);
            }
        }
        found
    }
}

/// A fresh token (256 random bits, `rvs_` then base64url) and the SHA-256 the configuration
/// keeps of it.
pub fn new_token() -> (crate::keys::KeyText, String) {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = format!("rvs_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let sha = hex::encode(Sha256::digest(token.as_bytes()));
    (crate::keys::KeyText::new(token), sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_found_by_its_hash_and_only_so() {
        let (token, sha) = new_token();
        let cfg: ApiConfig = toml::from_str(&format!(
            "[[tokens]]\nname = \"ops-team\"\nscope = \"operator\"\nsha256 = \"{sha}\"\n\
             [[tokens]]\nname = \"comune-a\"\nscope = \"tenant:comune-a\"\nsha256 = \"{}\"\n",
            "ab".repeat(32)
        ))
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.authenticate(token.expose()).map(|t| t.name.as_str()), Some("ops-team"));
        assert!(cfg.authenticate("rvs_wrong").is_none());
        assert_eq!(cfg.tokens[1].scope, Scope::Tenant(TenantId::parse("comune-a").unwrap()));
        assert!(token.expose().starts_with("rvs_") && token.expose().len() > 40);
    }

    #[test]
    fn bad_scopes_and_hashes_are_named() {
        let bad = toml::from_str::<ApiConfig>("[[tokens]]\nname = \"x\"\nscope = \"root\"\nsha256 = \"00\"\n");
        assert!(bad.unwrap_err().to_string().contains("operator, auditor or tenant:<id>"));
        let short: ApiConfig =
            toml::from_str("[[tokens]]\nname = \"x\"\nscope = \"auditor\"\nsha256 = \"00\"\n").unwrap();
        assert_eq!(short.validate().unwrap_err().0, "api.tokens.sha256");
        let twice = format!("[[tokens]]\nname = \"x\"\nscope = \"auditor\"\nsha256 = \"{0}\"\n[[tokens]]\nname = \"x\"\nscope = \"operator\"\nsha256 = \"{0}\"\n", "ab".repeat(32));
        assert_eq!(toml::from_str::<ApiConfig>(&twice).unwrap().validate().unwrap_err().0, "api.tokens.name");
    }
}
