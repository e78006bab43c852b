//! The daemon's HTTP API, as far as it is built: its bearer tokens (`[[api.tokens]]`), declared
//! by name, scope and the SHA-256 of the token, never the token itself.

pub mod tokens;

pub use tokens::{ApiConfig, Scope, TokenConfig};
