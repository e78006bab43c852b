//! `audit verify`: every entry's hash, the chain from the first entry to the last, every
//! checkpoint's signature, and (for the local log) every sealed segment against its copy in the
//! store. The first bad entry is named by segment and sequence number.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Line, GENESIS};
use crate::keys;

/// One segment's text, as the local log or the store holds it. `id` is `None` for the local
/// log's open segment (entries not sealed yet).
pub struct Segment {
    pub id: Option<String>,
    pub text: String,
}

/// The first thing wrong in an agent's chain.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    pub agent: String,
    /// The segment id, or `open` for the local log's unsealed entries.
    pub segment: String,
    /// The sequence number of the bad entry (or of the entry expected there).
    pub seq: Option<u64>,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "agent {} segment {} entry {seq}: {}", self.agent, self.segment, self.what),
            None => write!(f, "agent {} segment {}: {}", self.agent, self.segment, self.what),
        }
    }
}

/// One agent's chain as verified.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Chain {
    pub agent: String,
    pub segments: usize,
    pub entries: u64,
    /// The last entry's sequence number and hash.
    pub last_seq: u64,
    pub head: String,
    /// The newest checkpoint's sequence number (entries after it are not sealed yet).
    pub checkpointed_seq: u64,
}

/// Verify one agent's segments, oldest first. `trusted_key` is the public key known for the
/// agent (its own, or the one published in the store); every checkpoint must carry it, and
/// every checkpoint's key must hash to the agent id. `expect_head` is looked for among the
/// entries' hashes. Returns the chain, and whether `expect_head` was found.
pub fn chain(
    agent: &str,
    trusted_key: Option<&str>,
    segments: &[Segment],
    expect_head: Option<&str>,
) -> Result<(Chain, bool), Problem> {
    let mut v = Verifier { agent, trusted_key, chain: Chain { agent: agent.into(), ..Chain::default() } };
    v.chain.head = GENESIS.to_string();
    let mut found = false;
    for seg in segments {
        v.segment(seg, expect_head, &mut found)?;
    }
    Ok((v.chain, found))
}

struct Verifier<'a> {
    agent: &'a str,
    trusted_key: Option<&'a str>,
    chain: Chain,
}

impl Verifier<'_> {
    fn problem(&self, seg: &Segment, seq: Option<u64>, what: String) -> Problem {
        let segment = seg.id.clone().unwrap_or_else(|| "open".into());
        Problem { agent: self.agent.to_string(), segment, seq, what }
    }

    fn segment(&mut self, seg: &Segment, expect_head: Option<&str>, found: &mut bool) -> Result<(), Problem> {
        if !seg.text.is_empty() && !seg.text.ends_with('\n') {
            let at = Some(self.chain.last_seq + 1);
            return Err(self.problem(seg, at, "the segment ends in the middle of a line (cut short)".into()));
        }
        let first_seq = self.chain.last_seq + 1;
        let mut sealed = false;
        for (n, line) in seg.text.lines().enumerate() {
            let expect = self.chain.last_seq + 1;
            if sealed {
                return Err(self.problem(seg, Some(expect), "a line follows the segment's checkpoint".into()));
            }
            match Line::parse(line) {
                Err(e) => {
                    let what = format!("line {} is neither an entry nor a checkpoint ({e}): it was edited", n + 1);
                    return Err(self.problem(seg, Some(expect), what));
                }
                Ok(Line::Entry(mut e)) => {
                    let Some(claimed) = e.hash.take() else {
                        return Err(self.problem(seg, Some(e.seq), "the entry has no hash".into()));
                    };
                    self.entry(seg, &e, &claimed)?;
                    *found |= expect_head == Some(claimed.as_str());
                    self.chain.last_seq = e.seq;
                    self.chain.entries += 1;
                    self.chain.head = claimed;
                }
                Ok(Line::Checkpoint(c)) => {
                    self.checkpoint(seg, &c, first_seq)?;
                    sealed = true;
                }
            }
        }
        if seg.id.is_some() && !sealed {
            let what = "the segment has no checkpoint: it was cut short".to_string();
            return Err(self.problem(seg, Some(self.chain.last_seq + 1), what));
        }
        self.chain.segments += 1;
        Ok(())
    }

    fn entry(&self, seg: &Segment, e: &super::Entry, claimed: &str) -> Result<(), Problem> {
        let expect = self.chain.last_seq + 1;
        if e.compute_hash() != claimed {
            return Err(self.problem(seg, Some(e.seq), "its content does not match its hash: it was edited".into()));
        }
        if e.seq > expect {
            let what = format!(
                "entries {expect} to {} are missing: deleted, or a segment before this one was removed",
                e.seq - 1
            );
            return Err(self.problem(seg, Some(e.seq), what));
        }
        if e.seq < expect {
            let what = format!("it comes after entry {}: entries were inserted or reordered", expect - 1);
            return Err(self.problem(seg, Some(e.seq), what));
        }
        if e.prev != self.chain.head {
            let what = format!(
                "its previous-entry hash does not match entry {}: an entry was inserted, removed or reordered",
                expect - 1
            );
            return Err(self.problem(seg, Some(e.seq), what));
        }
        if e.agent != self.agent {
            return Err(self.problem(seg, Some(e.seq), format!("it names agent {}, not this chain's", e.agent)));
        }
        Ok(())
    }

    fn checkpoint(&mut self, seg: &Segment, c: &super::SignedCheckpoint, first_seq: u64) -> Result<(), Problem> {
        let at = Some(c.checkpoint.seq);
        let cp = &c.checkpoint;
        if seg.id.is_none() {
            return Err(self.problem(seg, at, "a checkpoint in the open segment".into()));
        }
        if keys::agent_id_of(&c.public_key) != self.agent || self.trusted_key.is_some_and(|k| k != c.public_key) {
            return Err(self.problem(seg, at, "the checkpoint is signed with a key that is not this agent's".into()));
        }
        if !keys::verify_agent_signature(&c.public_key, &cp.signed_bytes(), &c.signature) {
            return Err(self.problem(seg, at, "the checkpoint's signature does not verify: it is forged".into()));
        }
        let what = if cp.segment != seg.id.clone().unwrap_or_default() {
            format!("the checkpoint belongs to segment {}, not this one", cp.segment)
        } else if cp.seq != self.chain.last_seq || cp.head != self.chain.head {
            format!(
                "the checkpoint seals entry {} with hash {}, but the segment ends at entry {} with hash {}",
                cp.seq, cp.head, self.chain.last_seq, self.chain.head
            )
        } else if cp.first_seq != first_seq {
            format!("the checkpoint says the segment starts at entry {}, it starts at {first_seq}", cp.first_seq)
        } else {
            self.chain.checkpointed_seq = cp.seq;
            return Ok(());
        };
        Err(self.problem(seg, at, what))
    }
}

/// The segments of every agent in a store listing (`audit/<agent>/<segment>` keys), grouped by
/// agent, each agent's in order.
pub fn group_store_keys(keys: impl IntoIterator<Item = String>) -> BTreeMap<String, Vec<String>> {
    let mut agents: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in keys {
        if let Some((agent, segment)) =
            key.strip_prefix(crate::repository::layout::AUDIT).and_then(|k| k.split_once('/'))
        {
            agents.entry(agent.to_string()).or_default().push(segment.to_string());
        }
    }
    for segments in agents.values_mut() {
        segments.sort();
    }
    agents
}
