//! The local log: `<state>/audit/open.jsonl` takes the entries of the runs going on; sealing
//! appends a signed checkpoint and moves it to `segments/<segment id>.jsonl`; uploading seals
//! each segment not yet in the store into `audit/<agent id>/<segment id>`.
//!
//! Several processes may share a state folder (a cron backup and an operator's hold): every
//! append and every seal happens under an exclusive `flock` of `audit/lock`, and reads the
//! chain's head from the file itself when another process wrote since, so the chain stays one
//! line of entries whichever process wrote them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;

use super::{Checkpoint, Entry, Line, SignedCheckpoint, GENESIS};
use crate::keys::{AgentKey, KeyError, MasterKey};
use crate::store::{Body, Store};

const OPEN: &str = "open.jsonl";
const SEGMENTS: &str = "segments";
/// Marks a segment the store holds (`<segment id>.uploaded`).
const UPLOADED: &str = "uploaded";
/// Marks that the agent's public key is in the store.
const PUBLISHED: &str = "published";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log: {what} {path}: {cause}; the job did not run unrecorded: check the state folder ([state] dir)")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("audit log: {0}; `reversa audit verify` names what is wrong")]
    Damaged(String),
    #[error(
        "the agent key {path} is missing; the audit log cannot go on without it. Run `reversa init` to make a \
         new agent (the old agent's chain stays verifiable with `reversa audit verify --from-store`)"
    )]
    NoAgentKey { path: PathBuf },
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AuditError + 'a {
    move |cause| AuditError::Io { what, path: path.to_path_buf(), cause }
}

/// The real time, UTC to the microsecond, always 27 characters wide (the log's columns align).
fn utc_now() -> String {
    let t = jiff::Timestamp::now();
    format!("{}.{:06}Z", t.strftime("%Y-%m-%dT%H:%M:%S"), t.subsec_microsecond())
}

/// Where the chain stands: the last entry's number and hash, and the open file as it was then
/// (so another process's append is noticed).
#[derive(Clone)]
struct Tail {
    ino: u64,
    len: u64,
    seq: u64,
    head: String,
    /// The first entry's number in the open file.
    first_seq: u64,
}

pub struct AuditLog {
    dir: PathBuf,
    key: AgentKey,
    agent: String,
    host: String,
    tail: Mutex<Option<Tail>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({}, agent {})", self.dir.display(), self.agent)
    }
}

/// What uploading the segments did.
#[derive(Debug, Default, serde::Serialize)]
pub struct SealReport {
    /// The segment sealed by this run, if it appended anything.
    pub sealed: Option<String>,
    pub uploaded: Vec<String>,
    /// Segments still only here, with why: the next run retries them.
    pub local_only: Vec<(String, String)>,
}

/// An exclusive `flock` on the log, held while it lives.
struct Flock(#[allow(dead_code)] File);

impl Flock {
    fn take(dir: &Path) -> Result<Flock, AuditError> {
        use std::os::fd::AsRawFd;
        let path = dir.join("lock");
        let f = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(&path)
        }
        .map_err(io("cannot open", &path))?;
        // SAFETY: flock on a file descriptor this function owns; it is released when `f` closes.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("cannot lock", &path)(std::io::Error::last_os_error()));
        }
        Ok(Flock(f))
    }
}

impl AuditLog {
    /// The log of the state folder, with the agent key (made now if there is none: returned
    /// `true` then).
    ///
    /// A new key is a new agent, whose chain starts at entry 1: a log left in the folder by
    /// the agent whose key was lost is moved aside (`audit.previous-<time>`; what it sealed is
    /// in the store under its own agent id), and the new chain's first entry names it.
    pub fn open(state_dir: &Path) -> Result<(AuditLog, bool), AuditError> {
        let (key, made) = AgentKey::load_or_create(state_dir)?;
        let dir = state_dir.join("audit");
        let mut previous = None;
        if made && dir.exists() {
            let aside = state_dir.join(format!("audit.previous-{}", crate::sortable_id_at(jiff::Timestamp::now())));
            std::fs::rename(&dir, &aside).map_err(io("cannot move", &dir))?;
            tracing::warn!(log = %aside.display(), "a new agent key: the previous agent's local audit log was moved aside");
            previous = aside.file_name().map(|n| n.to_string_lossy().into_owned());
        }
        let log = Self::with_key(state_dir, key)?;
        if made {
            let mut e = Entry::new(super::Event::Key, crate::commands::AGENT_ACTOR);
            e.kind = Some("agent_key_created".into());
            if let Some(p) = previous {
                e.produced.push(super::Produced { what: "previous_agent_log".into(), id: p, sha256: None });
            }
            log.append(e)?;
        }
        Ok((log, made))
    }

    /// The log of a state folder that `init` made: its agent key must be there. A new key
    /// would start a new agent, whose clean chain would hide the loss of the old one.
    pub fn open_existing(state_dir: &Path) -> Result<AuditLog, AuditError> {
        match AgentKey::load(state_dir)? {
            Some(key) => Self::with_key(state_dir, key),
            None => Err(AuditError::NoAgentKey { path: state_dir.join(crate::keys::AGENT_KEY_FILE) }),
        }
    }

    fn with_key(state_dir: &Path, key: AgentKey) -> Result<AuditLog, AuditError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state_dir.join("audit");
        let segments = dir.join(SEGMENTS);
        // Actors, reasons, tickets and recipients: readable by this user only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&segments)
            .map_err(io("cannot create", &segments))?;
        let agent = key.id();
        Ok(AuditLog { dir, key, agent, host: crate::repository::lock::hostname(), tail: Mutex::new(None) })
    }

    pub fn agent_id(&self) -> &str {
        &self.agent
    }

    pub fn public_key(&self) -> String {
        self.key.public()
    }

    /// Sign `message` with the agent key (reports and certificates; verified against the
    /// public key the agent published in the store).
    pub fn sign(&self, message: &[u8]) -> String {
        self.key.sign(message)
    }

    /// The sequence number and hash of the newest entry: the head a signed artifact names, so
    /// that it is anchored in the chain at the moment it was issued.
    pub fn head(&self) -> Result<(u64, String), AuditError> {
        let _lock = Flock::take(&self.dir)?;
        let path = self.dir.join(OPEN);
        self.recover_if_changed(&path)?;
        match OpenOptions::new().read(true).open(&path) {
            Ok(mut file) => {
                let tail = self.tail_of(&mut file, &path)?;
                Ok((tail.seq, tail.head))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.sealed_head(),
            Err(e) => Err(io("cannot open", &path)(e)),
        }
    }

    /// Number, chain and write `entry`. An end entry is on disk (fsynced, with every entry
    /// before it) when this returns. A start or key entry is written at once, so a process
    /// killed afterwards leaves it, and reaches the disk with its job's end: an fsync per entry
    /// doubled the log's cost (4.5% of `backup --all` over 200 new tenants, benches/audit.rs),
    /// and only a crash of the host itself can lose such an entry before then.
    pub fn append(&self, mut entry: Entry) -> Result<Entry, AuditError> {
        use std::os::unix::fs::OpenOptionsExt;
        let _lock = Flock::take(&self.dir)?;
        let path = self.dir.join(OPEN);
        self.recover_if_changed(&path)?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("cannot open", &path))?;
        let tail = self.tail_of(&mut file, &path)?;
        entry.seq = tail.seq + 1;
        entry.prev = tail.head.clone();
        entry.time = utc_now();
        entry.agent = self.agent.clone();
        entry.host = self.host.clone();
        entry.hash = None;
        let hash = entry.compute_hash();
        entry.hash = Some(hash.clone());
        let mut line = serde_json::to_vec(&entry).expect("an entry serializes");
        line.push(b'\n');
        file.write_all(&line).map_err(io("cannot append to", &path))?;
        if matches!(entry.event, super::Event::End | super::Event::Config) {
            file.sync_data().map_err(io("cannot sync", &path))?;
        }
        let first_seq = if tail.len == 0 { entry.seq } else { tail.first_seq };
        *self.tail.lock().expect("tail lock") =
            Some(Tail { ino: tail.ino, len: tail.len + line.len() as u64, seq: entry.seq, head: hash, first_seq });
        Ok(entry)
    }

    /// The chain's head for the open file `file`: remembered from this process's last append
    /// when the file is as it left it, else read from the file (or, when it is empty, from the
    /// newest sealed segment's checkpoint).
    fn tail_of(&self, file: &mut File, path: &Path) -> Result<Tail, AuditError> {
        let meta = file.metadata().map_err(io("cannot read", path))?;
        if let Some(t) = self.tail.lock().expect("tail lock").as_ref() {
            if t.ino == meta.ino() && t.len == meta.len() {
                return Ok(t.clone());
            }
        }
        if meta.len() == 0 {
            let (seq, head) = self.sealed_head()?;
            return Ok(Tail { ino: meta.ino(), len: 0, seq, head, first_seq: seq + 1 });
        }
        let mut text = String::new();
        file.seek(SeekFrom::Start(0)).map_err(io("cannot read", path))?;
        file.read_to_string(&mut text).map_err(io("cannot read", path))?;
        let entry_of = |line: &str| match Line::parse(line) {
            Ok(Line::Entry(e)) => Ok(e),
            _ => Err(AuditError::Damaged(format!("{} does not end with an entry", path.display()))),
        };
        let last = entry_of(text.lines().last().unwrap_or_default())?;
        let first = entry_of(text.lines().next().unwrap_or_default())?;
        let head = last.hash.ok_or_else(|| AuditError::Damaged(format!("{}: an entry has no hash", path.display())))?;
        Ok(Tail { ino: meta.ino(), len: meta.len(), seq: last.seq, head, first_seq: first.seq })
    }

    /// Unless the open file is as this process left it: finish what a process killed in the
    /// middle left there. A torn last line was never completed, so never acknowledged: it is
    /// cut off. A checkpoint at the end means a seal lacked only its rename, done now.
    fn recover_if_changed(&self, path: &Path) -> Result<(), AuditError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("cannot read", path)(e)),
        };
        let cached = self.tail.lock().expect("tail lock").as_ref().map(|t| (t.ino, t.len));
        if meta.len() == 0 || cached == Some((meta.ino(), meta.len())) {
            return Ok(());
        }
        let mut text = std::fs::read(path).map_err(io("cannot read", path))?;
        if !text.ends_with(b"\n") {
            let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            tracing::warn!(log = %path.display(), bytes = text.len() - keep, "cutting off the torn last line a killed process left in the audit log");
            let f = OpenOptions::new().write(true).open(path).map_err(io("cannot open", path))?;
            f.set_len(keep as u64).and_then(|()| f.sync_all()).map_err(io("cannot write", path))?;
            text.truncate(keep);
        }
        let last = text.split(|&b| b == b'\n').rfind(|l| !l.is_empty()).and_then(|l| std::str::from_utf8(l).ok());
        if let Some(Ok(Line::Checkpoint(c))) = last.map(Line::parse) {
            let to = self.segment_path(&c.checkpoint.segment);
            std::fs::rename(path, &to).map_err(io("cannot move", path))?;
        }
        Ok(())
    }

    /// The head recorded by the newest sealed segment's checkpoint; the genesis when none.
    fn sealed_head(&self) -> Result<(u64, String), AuditError> {
        Ok(match self.newest_checkpoint()? {
            Some(c) => (c.checkpoint.seq, c.checkpoint.head),
            None => (0, GENESIS.to_string()),
        })
    }

    /// The checkpoint that ends the newest sealed segment (`audit head`); `None` before the
    /// first seal.
    pub fn newest_checkpoint(&self) -> Result<Option<SignedCheckpoint>, AuditError> {
        let Some(newest) = self.sealed_segments()?.pop() else { return Ok(None) };
        let path = self.segment_path(&newest);
        let text = std::fs::read_to_string(&path).map_err(io("cannot read", &path))?;
        match text.lines().last().map(Line::parse) {
            Some(Ok(Line::Checkpoint(c))) => Ok(Some(c)),
            _ => Err(AuditError::Damaged(format!("segment {newest} does not end with a checkpoint"))),
        }
    }

    fn segment_path(&self, id: &str) -> PathBuf {
        self.dir.join(SEGMENTS).join(format!("{id}.jsonl"))
    }

    /// The sealed segments here, oldest first.
    pub fn sealed_segments(&self) -> Result<Vec<String>, AuditError> {
        let dir = self.dir.join(SEGMENTS);
        let mut ids: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io("cannot list", &dir))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".jsonl").map(String::from))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every segment's text, oldest first, with the open one last (`None` as its id). Under the
    /// log's lock, so a seal by another process cannot fall between the two reads.
    pub fn local_segments(&self) -> Result<Vec<(Option<String>, String)>, AuditError> {
        let _lock = Flock::take(&self.dir)?;
        let mut out = Vec::new();
        for id in self.sealed_segments()? {
            let path = self.segment_path(&id);
            out.push((Some(id), std::fs::read_to_string(&path).map_err(io("cannot read", &path))?));
        }
        let open = self.dir.join(OPEN);
        match std::fs::read_to_string(&open) {
            Ok(text) if !text.is_empty() => out.push((None, text)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("cannot read", &open)(e)),
        }
        Ok(out)
    }

    /// Whether the store holds segment `id` (as this log recorded when it uploaded it).
    pub fn is_uploaded(&self, id: &str) -> bool {
        self.dir.join(SEGMENTS).join(format!("{id}.{UPLOADED}")).exists()
    }

    /// Close the open segment with a signed checkpoint. Returns its id, `None` when nothing
    /// was appended since the last seal.
    pub fn seal(&self) -> Result<Option<String>, AuditError> {
        let _lock = Flock::take(&self.dir)?;
        let path = self.dir.join(OPEN);
        self.recover_if_changed(&path)?;
        let mut file = match OpenOptions::new().append(true).read(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("cannot open", &path)(e)),
        };
        let tail = self.tail_of(&mut file, &path)?;
        if tail.len == 0 {
            return Ok(None);
        }
        // Named by the number of its first entry, then the time: segments sort in chain order
        // even if the clock steps back.
        let segment = format!("{:012}-{}", tail.first_seq, crate::sortable_id_at(jiff::Timestamp::now()));
        let checkpoint = Checkpoint {
            agent: self.agent.clone(),
            segment: segment.clone(),
            first_seq: tail.first_seq,
            seq: tail.seq,
            head: tail.head,
            time: utc_now(),
        };
        let signature = self.key.sign(&checkpoint.signed_bytes());
        let signed = SignedCheckpoint { checkpoint, signature, public_key: self.key.public() };
        let mut line = serde_json::to_vec(&signed).expect("a checkpoint serializes");
        line.push(b'\n');
        file.write_all(&line).map_err(io("cannot append to", &path))?;
        file.sync_data().map_err(io("cannot sync", &path))?;
        let to = self.segment_path(&segment);
        std::fs::rename(&path, &to).map_err(io("cannot move", &path))?;
        if let Ok(d) = File::open(self.dir.join(SEGMENTS)) {
            let _ = d.sync_all();
        }
        *self.tail.lock().expect("tail lock") = None;
        Ok(Some(segment))
    }

    /// Seal the open segment, then put every segment the store does not hold yet, and the
    /// agent's public key once. A failed upload is reported, not an error: the segment stays
    /// here and the next run tries again.
    pub async fn seal_and_upload(&self, store: &dyn Store, master: &MasterKey) -> Result<SealReport, AuditError> {
        let mut report = SealReport { sealed: self.seal()?, ..SealReport::default() };
        let published = self.dir.join(PUBLISHED);
        if !published.exists() {
            let key = super::public_key_key(&self.agent);
            match store.put(&key, Body::Bytes(Bytes::from(format!("{}\n", self.key.public())))).await {
                Ok(()) => std::fs::write(&published, key.as_bytes()).map_err(io("cannot write", &published))?,
                Err(e) => report.local_only.push(("the agent's public key".into(), e.to_string())),
            }
        }
        for id in self.sealed_segments()? {
            if self.is_uploaded(&id) {
                continue;
            }
            let path = self.segment_path(&id);
            let bytes = std::fs::read(&path).map_err(io("cannot read", &path))?;
            let sealed = master.seal_audit_segment(&self.agent, &id, &bytes);
            match store.put(&super::segment_key(&self.agent, &id), Body::Bytes(Bytes::from(sealed))).await {
                Ok(()) => {
                    let marker = self.dir.join(SEGMENTS).join(format!("{id}.{UPLOADED}"));
                    std::fs::write(&marker, b"").map_err(io("cannot write", &marker))?;
                    report.uploaded.push(id);
                }
                Err(e) => report.local_only.push((id, e.to_string())),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{verify, Event};
    use crate::store::dir::DirStore;

    /// A store that cannot take the segment leaves it local and named; the next run uploads it,
    /// and the chain runs on across the runs.
    #[tokio::test]
    async fn a_segment_the_store_refused_is_uploaded_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(&dir.path().join("store"), true).unwrap();
        let master = MasterKey::generate();
        let (log, made) = AuditLog::open(&dir.path().join("state")).unwrap();
        assert!(made);
        // `audit` is a file: nothing can be written under it.
        std::fs::write(dir.path().join("store/audit"), b"in the way").unwrap();
        log.append(Entry::new(Event::Start, "ops")).unwrap();
        let first = log.seal_and_upload(&store, &master).await.unwrap();
        let sealed = first.sealed.clone().unwrap();
        assert_eq!(first.local_only.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), [sealed.as_str()]);
        assert!(!log.is_uploaded(&sealed));

        std::fs::remove_file(dir.path().join("store/audit")).unwrap();
        log.append(Entry::new(Event::End, "ops")).unwrap();
        let second = log.seal_and_upload(&store, &master).await.unwrap();
        assert_eq!(second.uploaded, [sealed.clone(), second.sealed.clone().unwrap()]);
        assert!(second.local_only.is_empty(), "{:?}", second.local_only);

        let segments: Vec<verify::Segment> =
            log.local_segments().unwrap().into_iter().map(|(id, text)| verify::Segment { id, text }).collect();
        let (chain, _) = verify::chain(log.agent_id(), Some(&log.public_key()), &segments, None).unwrap();
        // The agent key's own entry, then the two.
        assert_eq!((chain.segments, chain.entries, chain.checkpointed_seq), (2, 3, 3));
    }

    fn verified(log: &AuditLog) -> verify::Chain {
        let segments: Vec<verify::Segment> =
            log.local_segments().unwrap().into_iter().map(|(id, text)| verify::Segment { id, text }).collect();
        verify::chain(log.agent_id(), Some(&log.public_key()), &segments, None).unwrap().0
    }

    /// A process killed mid-append leaves a torn line; one killed mid-seal leaves a checkpoint
    /// in the open file. The next run repairs both and the chain goes on.
    #[test]
    fn what_a_killed_process_left_in_the_open_file_is_repaired_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (log, _) = AuditLog::open(&state).unwrap();
        log.append(Entry::new(Event::Start, "ops")).unwrap();
        let open = state.join("audit").join(OPEN);
        std::fs::OpenOptions::new().append(true).open(&open).unwrap().write_all(b"{\"seq\":2,\"ti").unwrap();
        let (log, _) = AuditLog::open(&state).unwrap();
        log.append(Entry::new(Event::End, "ops")).unwrap();
        // The agent key's own entry, then the two.
        assert_eq!(verified(&log).entries, 3);

        // Sealed, but the rename undone: as if the process died between the two.
        let id = log.seal().unwrap().unwrap();
        std::fs::rename(log.segment_path(&id), &open).unwrap();
        let (log, _) = AuditLog::open(&state).unwrap();
        log.append(Entry::new(Event::Start, "ops")).unwrap();
        let chain = verified(&log);
        assert_eq!((chain.segments, chain.entries, chain.checkpointed_seq), (2, 4, 3));
    }
}
