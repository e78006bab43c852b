//! The audit log: every job's start and end, key events and configuration changes, as one
//! hash-chained line each, in an append-only local log under `<state>/audit/` that is cut into
//! segments, each closed by a checkpoint signed with the agent key and sealed into the store
//! (`audit/<agent id>/<segment id>`) at the end of every run. docs/AUDIT.md is the format.
//!
//! An entry never holds tenant data: ids, counts and hashes only. What a job was asked is its
//! options struct, which names generations, folders of this host and flags, never a file of
//! the tenant or a value; what failed is the error's kind, never its message (a message may
//! name a tenant's file).
//!
//! The disclosure register is the end entries that carry a [`Disclosure`].

pub mod log;
pub mod read;
pub mod verify;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use log::{AuditLog, SealReport};

use crate::commands::ErrorKind;

/// The `prev` of an agent's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A job began: what was asked, by whom, why.
    Start,
    /// A job ended: its outcome, counts and what it produced.
    End,
    /// A key event: a tenant's data key made, or recovered from a keystore snapshot.
    Key,
    /// The configuration file changed since the last run (old and new SHA-256 in `produced`).
    Config,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
}

/// An object a job produced or changed, by id and hash: a generation, an export archive, a hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Produced {
    pub what: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Who received a disclosure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum RecipientKind {
    /// The customer (its designated administrator, or someone it named).
    #[default]
    Customer,
    /// A public authority's request (a court, the police, a data protection authority): needs
    /// the legal basis, and the customer is to be told.
    Authority,
    /// The provider itself (an operator recovering the tenant's service).
    Provider,
}

/// One entry of the disclosure register: what left the agent, to whom. The tenant, the time,
/// the actor, the reason and the ticket are the entry's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disclosure {
    pub recipient: String,
    pub recipient_kind: RecipientKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    /// A disclosure to an authority is to be notified to the customer (the lifecycle's notices
    /// send it); until then `reversa disclosures --pending-notices` lists it.
    pub notify_customer: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<String>,
    pub tables: u64,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// An extraordinary extraction's query, by its SHA-256 (its text is in the archive only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_sha256: Option<String>,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    /// UTC, from the system clock, never a simulated one: the log's order is real time.
    pub time: String,
    pub agent: String,
    pub host: String,
    pub event: Event,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The job's kind (`backup`, `restore`...) or the key event's (`key_created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// What was asked (start entries): the verb's options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub produced: Vec<Produced>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disclosure: Option<Disclosure>,
    /// The simulated clock the job ran on (`REVERSA_NOW`), when it did: drills and tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated_now: Option<String>,
    pub prev: String,
    /// SHA-256 of the entry's canonical form: the entry serialized without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl Entry {
    /// An entry of `event`, to be completed by the caller and numbered by [`AuditLog::append`].
    pub fn new(event: Event, actor: &str) -> Entry {
        Entry {
            seq: 0,
            time: String::new(),
            agent: String::new(),
            host: String::new(),
            event,
            actor: actor.to_string(),
            job: None,
            kind: None,
            tenant: None,
            options: None,
            outcome: None,
            error_kind: None,
            counts: BTreeMap::new(),
            produced: Vec::new(),
            reason: None,
            ticket: None,
            disclosure: None,
            simulated_now: None,
            prev: String::new(),
            hash: None,
        }
    }

    /// The hash of the entry's canonical form (its JSON without `hash`), hex.
    pub fn compute_hash(&self) -> String {
        if self.hash.is_some() {
            return Entry { hash: None, ..self.clone() }.compute_hash();
        }
        hex::encode(Sha256::digest(serde_json::to_vec(self).expect("an entry serializes")))
    }
}

/// The last line of a sealed segment: where the chain stood when it was cut, signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub agent: String,
    pub segment: String,
    /// The sequence number of the segment's first entry.
    pub first_seq: u64,
    /// The sequence number and hash of the segment's last entry: the chain's head.
    pub seq: u64,
    pub head: String,
    pub time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// Ed25519 over the checkpoint's JSON, by the agent key; hex.
    pub signature: String,
    /// The agent's public key, hex (its id is derived from it).
    pub public_key: String,
}

impl Checkpoint {
    pub fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a checkpoint serializes")
    }
}

/// A checkpoint line starts so; an entry line starts with `{"seq"`.
const CHECKPOINT_PREFIX: &str = "{\"checkpoint\":";

/// One line of a segment.
pub enum Line {
    Entry(Entry),
    Checkpoint(SignedCheckpoint),
}

impl Line {
    pub fn parse(text: &str) -> Result<Line, serde_json::Error> {
        if text.starts_with(CHECKPOINT_PREFIX) {
            serde_json::from_str(text).map(Line::Checkpoint)
        } else {
            serde_json::from_str(text).map(Line::Entry)
        }
    }
}

pub use crate::repository::layout::{agent_public_key as public_key_key, audit_segment as segment_key};
