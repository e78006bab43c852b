//! Row-level incremental tables.
//!
//! A table with a key (its rowid, or the primary key of a WITHOUT ROWID table) is stored as a
//! **base**, a full canonical row stream written by one generation, plus one **delta** for each
//! later generation that changed it ([`super::Keyed`]). Every generation's catalog lists its base
//! and all its deltas, so it restores on its own, whatever else is forgotten.
//!
//! **Digest map**: for every row, in key order, the key's values and a 16-byte keyed digest of the
//! whole row (a BLOB value), in the canonical row encoding. Backup compares the rows it reads with
//! the parent generation's map in one merge pass (both are in key order), so memory never depends
//! on the size of a table. The base's map is stored in the repository (`Keyed::digests`); a later
//! generation's map is the base's with the deltas applied ([`Merger`] rebuilds it), and a sealed
//! copy of the newest one is kept in the state folder ([`SealedFileWriter`]) and verified against
//! `Keyed::digest_mac` before it is trusted.
//!
//! **Delta records**, in key order, each key at most once:
//!
//! ```text
//! INTEGER 0, then the row's values     upsert (inserted or updated row)
//! INTEGER 1, then the key's values     delete
//! ```
//!
//! Key order is SQLite's BINARY order (the source reads keyed tables `ORDER BY ... COLLATE
//! BINARY`), reproduced by [`compare`]. Backup checks that the keys it reads strictly increase by
//! [`compare`]; a table where they do not is written whole instead of as a delta, so a mismatch
//! between the two orders costs space, never rows.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::types::ValueRef;

use super::rows::{self, DecodeError};
use crate::crypto::Kind;
use crate::keys::{RowDigest, RowDigester, TenantKeys};

pub const UPSERT: i64 = 0;
pub const DELETE: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Format(String),
}

type Result<T, E = DeltaError> = std::result::Result<T, E>;

/// SQLite's BINARY order of two values: NULL, then numbers (integers and reals compared by value),
/// then text (bytes), then BLOBs (bytes).
pub fn compare(a: ValueRef<'_>, b: ValueRef<'_>) -> Ordering {
    use ValueRef::*;
    fn class(v: ValueRef<'_>) -> u8 {
        match v {
            Null => 0,
            Integer(_) | Real(_) => 1,
            Text(_) => 2,
            Blob(_) => 3,
        }
    }
    match (a, b) {
        (Integer(x), Integer(y)) => x.cmp(&y),
        (Real(x), Real(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Integer(i), Real(r)) => int_real(i, r),
        (Real(r), Integer(i)) => int_real(i, r).reverse(),
        (Text(x), Text(y)) | (Blob(x), Blob(y)) => x.cmp(y),
        _ => class(a).cmp(&class(b)),
    }
}

/// An integer against a real, exactly (as SQLite does), without rounding the integer to f64.
fn int_real(i: i64, r: f64) -> Ordering {
    if r.is_nan() {
        return Ordering::Equal;
    }
    if r < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    if r >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    let t = r.trunc();
    match i.cmp(&(t as i64)) {
        // r - trunc(r) is exact; it says on which side of the integer the real lies.
        Ordering::Equal => 0.0f64.partial_cmp(&(r - t)).unwrap_or(Ordering::Equal),
        o => o,
    }
}

pub fn compare_keys(a: &[ValueRef<'_>], b: &[ValueRef<'_>]) -> Ordering {
    a.iter().zip(b).map(|(x, y)| compare(*x, *y)).find(|o| o.is_ne()).unwrap_or_else(|| a.len().cmp(&b.len()))
}

/// [`compare_keys`] of two encoded keys, without allocating: the merge pass of a backup does
/// this once or twice per row.
pub fn compare_encoded(a: &[u8], b: &[u8]) -> Result<Ordering, DecodeError> {
    let (mut i, mut j) = (0, 0);
    let cut = |offset| DecodeError { offset, what: "value is cut short" };
    loop {
        match (i < a.len(), j < b.len()) {
            (false, false) => return Ok(Ordering::Equal),
            (false, true) => return Ok(Ordering::Less),
            (true, false) => return Ok(Ordering::Greater),
            (true, true) => {}
        }
        let (x, xl) = rows::decode(&a[i..])?.ok_or(cut(i))?;
        let (y, yl) = rows::decode(&b[j..])?.ok_or(cut(j))?;
        match compare(x, y) {
            Ordering::Equal => (i, j) = (i + xl, j + yl),
            o => return Ok(o),
        }
    }
}

/// Append the key's values (at `positions` in a row's `values`), encoded.
pub fn encode_key(values: &[ValueRef<'_>], positions: &[u32], out: &mut Vec<u8>) {
    for &p in positions {
        rows::encode(values[p as usize], out);
    }
}

/// The length of the first `n` values at the start of `buf`, or `None` if it holds fewer.
pub fn values_len(buf: &[u8], n: usize) -> Result<Option<usize>, DecodeError> {
    let mut pos = 0;
    for _ in 0..n {
        match rows::decode(&buf[pos..]) {
            Ok(Some((_, len))) => pos += len,
            Ok(None) => return Ok(None),
            Err(e) => return Err(DecodeError { offset: pos + e.offset, what: e.what }),
        }
    }
    Ok(Some(pos))
}

/// Decode `n` complete values (as measured by [`values_len`]).
pub fn decode_values(buf: &[u8], n: usize) -> Result<Vec<ValueRef<'_>>, DecodeError> {
    let mut out = Vec::with_capacity(n);
    let mut pos = 0;
    for _ in 0..n {
        let (v, len) = rows::decode(&buf[pos..])?.ok_or(DecodeError { offset: pos, what: "value is cut short" })?;
        out.push(v);
        pos += len;
    }
    Ok(out)
}

fn key_of<'a>(values: &[ValueRef<'a>], key: &[u32]) -> Vec<ValueRef<'a>> {
    key.iter().map(|&p| values[p as usize]).collect()
}

fn borrowed(key: &[u8], n: usize) -> Vec<ValueRef<'_>> {
    decode_values(key, n).expect("keys are kept only after they decoded")
}

/// Reads encoded values from a byte stream, a given number at a time.
pub struct ValueReader<R> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> ValueReader<R> {
    pub fn new(src: R) -> ValueReader<R> {
        ValueReader { src, buf: vec![0; 64 << 10], start: 0, end: 0, eof: false }
    }

    /// The bytes of the next `n` values, or `None` at the end of the stream.
    pub fn next(&mut self, n: usize) -> Result<Option<&[u8]>> {
        loop {
            if let Some(len) = values_len(&self.buf[self.start..self.end], n)? {
                let s = self.start;
                self.start += len;
                return Ok(Some(&self.buf[s..s + len]));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                return Err(DeltaError::Format("the stream ends in the middle of a record".into()));
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> std::io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.end == self.buf.len() {
            // One record larger than the buffer (a big BLOB): grow to hold it.
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.src.read(&mut self.buf[self.end..])?;
        self.end += n;
        self.eof = n == 0;
        Ok(())
    }
}

/// One change of a delta: the new row, or `None` for a deleted row.
pub struct Change {
    /// The key's values, encoded.
    pub key: Vec<u8>,
    pub row: Option<Vec<u8>>,
}

/// Append a delta record to `out`.
pub fn encode_upsert(row: &[u8], out: &mut Vec<u8>) {
    rows::encode(ValueRef::Integer(UPSERT), out);
    out.extend_from_slice(row);
}

/// Append a delete record; `key` is the key's values, encoded.
pub fn encode_delete(key: &[u8], out: &mut Vec<u8>) {
    rows::encode(ValueRef::Integer(DELETE), out);
    out.extend_from_slice(key);
}

/// What a stream pushed to a [`RecordCount`] holds.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// A canonical row stream (a table, or a keyed table's base) of rows of `ncols` values.
    Rows { ncols: usize },
    /// A delta's records over rows of `ncols` values and keys of `key_len` values.
    Delta { ncols: usize, key_len: usize },
}

/// Counts the rows of a row stream, or the upserts and deletes of a delta, as the stream comes
/// in pieces of any size: `check --read-data` compares them with what the catalog says.
pub struct RecordCount {
    shape: Shape,
    carry: Vec<u8>,
    /// Rows of a row stream, or upserts of a delta.
    pub rows: u64,
    pub deletes: u64,
}

impl RecordCount {
    pub fn new(shape: Shape) -> RecordCount {
        RecordCount { shape, carry: Vec::new(), rows: 0, deletes: 0 }
    }

    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        let mut carry = std::mem::take(&mut self.carry);
        carry.extend_from_slice(data);
        let mut pos = 0;
        let counted = loop {
            match self.next_record(&carry[pos..]) {
                Ok(Some(n)) => pos += n,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        carry.drain(..pos);
        self.carry = carry;
        counted
    }

    /// The length of the complete record at the start of `buf`, counted, or `None`.
    fn next_record(&mut self, buf: &[u8]) -> Result<Option<usize>> {
        let (ncols, key_len) = match self.shape {
            Shape::Rows { ncols } => {
                let n = values_len(buf, ncols)?;
                self.rows += n.is_some() as u64;
                return Ok(n);
            }
            Shape::Delta { ncols, key_len } => (ncols, key_len),
        };
        let Some((op, at)) = rows::decode(buf)? else { return Ok(None) };
        let (values, count) = match op {
            ValueRef::Integer(UPSERT) => (ncols, &mut self.rows),
            ValueRef::Integer(DELETE) => (key_len, &mut self.deletes),
            _ => return Err(DeltaError::Format("a delta record does not start with a known operation".into())),
        };
        let n = values_len(&buf[at..], values)?;
        *count += n.is_some() as u64;
        Ok(n.map(|n| at + n))
    }

    /// The counts, once the whole stream was pushed: a record cut short is an error.
    pub fn finish(self) -> Result<(u64, u64)> {
        match self.carry.is_empty() {
            true => Ok((self.rows, self.deletes)),
            false => Err(DeltaError::Format(format!("the stream ends inside a record ({} bytes)", self.carry.len()))),
        }
    }
}

/// One delta's records, read in order from a local file.
struct DeltaReader {
    values: ValueReader<BufReader<File>>,
    ncols: usize,
    key: Vec<u32>,
    head: Option<Change>,
}

impl DeltaReader {
    fn advance(&mut self) -> Result<()> {
        let op = match self.values.next(1)? {
            None => {
                self.head = None;
                return Ok(());
            }
            Some(b) => match rows::decode(b)? {
                Some((ValueRef::Integer(op), _)) => op,
                _ => return Err(DeltaError::Format("a delta record does not start with its operation".into())),
            },
        };
        let missing = || DeltaError::Format("a delta record is cut short".into());
        self.head = Some(match op {
            UPSERT => {
                let row = self.values.next(self.ncols)?.ok_or_else(missing)?;
                let mut key = Vec::new();
                encode_key(&decode_values(row, self.ncols)?, &self.key, &mut key);
                Change { key, row: Some(row.to_vec()) }
            }
            DELETE => {
                let k = self.values.next(self.key.len())?.ok_or_else(missing)?;
                decode_values(k, self.key.len())?;
                Change { key: k.to_vec(), row: None }
            }
            _ => return Err(DeltaError::Format(format!("unknown delta operation {op}"))),
        });
        Ok(())
    }
}

/// The deltas of a chain, oldest first, read together in key order; for a key that several
/// deltas change, the newest change wins.
pub struct Deltas {
    readers: Vec<DeltaReader>,
    key_len: usize,
    /// The smallest key the heads hold, kept until a head moves: most base rows have no change,
    /// and this way they cost one comparison, not one per delta.
    min: Option<Vec<u8>>,
}

impl Deltas {
    pub fn open(files: Vec<File>, ncols: usize, key: &[u32]) -> Result<Deltas> {
        let mut readers = Vec::with_capacity(files.len());
        for f in files {
            let mut r =
                DeltaReader { values: ValueReader::new(BufReader::new(f)), ncols, key: key.to_vec(), head: None };
            r.advance()?;
            readers.push(r);
        }
        let mut d = Deltas { readers, key_len: key.len(), min: None };
        d.find_min();
        Ok(d)
    }

    fn find_min(&mut self) {
        let n = self.key_len;
        self.min = self
            .readers
            .iter()
            .filter_map(|r| r.head.as_ref().map(|c| c.key.as_slice()))
            .min_by(|a, b| compare_keys(&borrowed(a, n), &borrowed(b, n)))
            .map(<[u8]>::to_vec);
    }

    /// The newest change of `key`, which is the smallest key of the heads, skipping the older ones.
    fn take_min(&mut self, key: &[ValueRef<'_>]) -> Result<Option<Change>> {
        let mut newest = None;
        for r in &mut self.readers {
            if r.head.as_ref().is_some_and(|c| compare_keys(&borrowed(&c.key, key.len()), key).is_eq()) {
                newest = r.head.take();
                r.advance()?;
            }
        }
        self.find_min();
        Ok(newest)
    }

    /// The newest change of the smallest key the deltas hold, if that key is below `bound` (any
    /// key when `bound` is `None`).
    pub fn next_below(&mut self, bound: Option<&[ValueRef<'_>]>) -> Result<Option<Change>> {
        let Some(min) = self.min.clone() else { return Ok(None) };
        let min = borrowed(&min, self.key_len);
        if bound.is_some_and(|b| compare_keys(&min, b).is_ge()) {
            return Ok(None);
        }
        self.take_min(&min)
    }

    /// The newest change of exactly `key`, if a delta has one (call after `next_below(key)`).
    pub fn take(&mut self, key: &[ValueRef<'_>]) -> Result<Option<Change>> {
        match &self.min {
            Some(min) if compare_keys(&borrowed(min, self.key_len), key).is_eq() => self.take_min(key),
            _ => Ok(None),
        }
    }
}

/// What a [`Merger`] reads as its base and writes out.
pub enum Merge {
    /// Base rows of `ncols` values in, the table's current rows out (restore, export).
    Rows { ncols: usize, key: Vec<u32> },
    /// A base digest map in, the current digest map out (rebuilding a lost local copy). Delta
    /// rows are hashed with the digester.
    Digests { key: Vec<u32>, digester: RowDigester },
}

/// Applies a chain of deltas to a base pushed through it piece by piece, in one pass: the base
/// and every delta are in key order, so this is a merge and holds one record of each.
pub struct Merger {
    deltas: Deltas,
    merge: Merge,
    carry: Vec<u8>,
}

impl Merger {
    pub fn new(deltas: Deltas, merge: Merge) -> Merger {
        Merger { deltas, merge, carry: Vec::new() }
    }

    /// Values in one base record, and the positions of its key among them.
    fn base_shape(&self) -> (usize, Vec<u32>) {
        match &self.merge {
            Merge::Rows { ncols, key } => (*ncols, key.clone()),
            Merge::Digests { key, .. } => (key.len() + 1, (0..key.len() as u32).collect()),
        }
    }

    fn emit(merge: &Merge, change: Change, out: &mut Vec<u8>) -> Result<()> {
        let Some(row) = change.row else { return Ok(()) };
        match merge {
            Merge::Rows { .. } => out.extend_from_slice(&row),
            // The change's key is already encoded, and the digest map's record begins with it.
            Merge::Digests { digester, .. } => push_digest_record(&change.key, &digester.digest(&row), out),
        }
        Ok(())
    }

    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let (width, key_pos) = self.base_shape();
        self.carry.extend_from_slice(data);
        let Merger { deltas, merge, carry } = self;
        let mut pos = 0;
        while let Some(len) = values_len(&carry[pos..], width)? {
            let record = &carry[pos..pos + len];
            let values = decode_values(record, width)?;
            let key = key_of(&values, &key_pos);
            while let Some(c) = deltas.next_below(Some(&key))? {
                Self::emit(merge, c, out)?;
            }
            match deltas.take(&key)? {
                Some(c) => Self::emit(merge, c, out)?,
                None => out.extend_from_slice(record),
            }
            pos += len;
        }
        carry.drain(..pos);
        Ok(())
    }

    /// The changes after the last base record.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<()> {
        if !self.carry.is_empty() {
            return Err(DeltaError::Format("the base ends in the middle of a record".into()));
        }
        while let Some(c) = self.deltas.next_below(None)? {
            Self::emit(&self.merge, c, out)?;
        }
        Ok(())
    }
}

/// Append one digest-map record: the key's values (encoded) and the row digest.
pub fn push_digest_record(key: &[u8], digest: &RowDigest, out: &mut Vec<u8>) {
    out.extend_from_slice(key);
    rows::encode(ValueRef::Blob(digest), out);
}

/// Reads a digest map's records in order.
pub struct DigestMapReader<R> {
    values: ValueReader<R>,
    key_len: usize,
}

impl<R: Read> DigestMapReader<R> {
    pub fn new(src: R, key_len: usize) -> Self {
        DigestMapReader { values: ValueReader::new(src), key_len }
    }

    /// The next record's digest, with its key's values (encoded) put in `key`; `None` at the end.
    /// The caller's buffer is reused from record to record: this runs once per row of a table.
    pub fn next_record(&mut self, key: &mut Vec<u8>) -> Result<Option<RowDigest>> {
        let Some(rec) = self.values.next(self.key_len + 1)? else { return Ok(None) };
        let key_end = values_len(rec, self.key_len)?.expect("a record holds its key");
        match rows::decode(&rec[key_end..])? {
            Some((ValueRef::Blob(d), _)) if d.len() == 16 => {
                key.clear();
                key.extend_from_slice(&rec[..key_end]);
                Ok(Some(d.try_into().expect("16 bytes")))
            }
            _ => Err(DeltaError::Format("a digest-map record does not end with a 16-byte digest".into())),
        }
    }
}

/// Plaintext per sealed frame of a local file.
const FRAME: usize = 1 << 20;

/// A local file sealed under the tenant's key in frames, so it is written and read as a stream
/// and never holds tenant data in clear on the agent's disk. Frame `i` is sealed with the id
/// `<name>/<i>`, the last one `<name>/<i>/last`: a frame moved, dropped or cut off fails to open.
pub struct SealedFileWriter {
    out: BufWriter<File>,
    path: PathBuf,
    keys: Arc<TenantKeys>,
    name: String,
    frame: Vec<u8>,
    n: u64,
}

impl SealedFileWriter {
    pub fn create(path: &Path, keys: Arc<TenantKeys>, name: &str) -> std::io::Result<SealedFileWriter> {
        let out = BufWriter::new(File::create(path)?);
        Ok(SealedFileWriter { out, path: path.into(), keys, name: name.into(), frame: Vec::with_capacity(FRAME), n: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn flush_frame(&mut self, last: bool) -> std::io::Result<()> {
        let id = format!("{}/{}{}", self.name, self.n, if last { "/last" } else { "" });
        let sealed = self.keys.seal(Kind::LocalCache, &id, &self.frame);
        self.out.write_all(&(sealed.len() as u32).to_le_bytes())?;
        self.out.write_all(&sealed)?;
        self.frame.clear();
        self.n += 1;
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<PathBuf> {
        self.flush_frame(true)?;
        self.out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(self.path)
    }
}

impl Write for SealedFileWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(FRAME - self.frame.len());
        self.frame.extend_from_slice(&data[..n]);
        if self.frame.len() == FRAME {
            self.flush_frame(false)?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a file a [`SealedFileWriter`] wrote; any damage is an `InvalidData` error.
pub struct SealedFileReader {
    src: BufReader<File>,
    keys: Arc<TenantKeys>,
    name: String,
    frame: Vec<u8>,
    pos: usize,
    n: u64,
    done: bool,
}

impl SealedFileReader {
    pub fn open(path: &Path, keys: Arc<TenantKeys>, name: &str) -> std::io::Result<SealedFileReader> {
        Ok(SealedFileReader {
            src: BufReader::new(File::open(path)?),
            keys,
            name: name.into(),
            frame: Vec::new(),
            pos: 0,
            n: 0,
            done: false,
        })
    }

    fn next_frame(&mut self) -> std::io::Result<()> {
        let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let mut len = [0u8; 4];
        self.src.read_exact(&mut len).map_err(|_| bad("the file is cut short".into()))?;
        let len = u32::from_le_bytes(len) as usize;
        if len > crate::crypto::sealed_len(FRAME) {
            return Err(bad("a frame is longer than any this format writes".into()));
        }
        let mut sealed = vec![0u8; len];
        self.src.read_exact(&mut sealed).map_err(|_| bad("the file is cut short".into()))?;
        let id = format!("{}/{}", self.name, self.n);
        self.frame = match self.keys.open(Kind::LocalCache, &id, &sealed) {
            Ok(f) => f,
            Err(_) => {
                let f = self
                    .keys
                    .open(Kind::LocalCache, &format!("{id}/last"), &sealed)
                    .map_err(|e| bad(format!("frame {}: {e}", self.n)))?;
                self.done = true;
                f
            }
        };
        self.pos = 0;
        self.n += 1;
        Ok(())
    }
}

impl Read for SealedFileReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.frame.len() {
            if self.done {
                return Ok(0);
            }
            self.next_frame()?;
        }
        let n = buf.len().min(self.frame.len() - self.pos);
        buf[..n].copy_from_slice(&self.frame[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rusqlite::types::Value;

    /// Rows and delta records are counted whatever the pieces the stream comes in, and a
    /// stream that ends inside a record is an error.
    #[test]
    fn record_counts_do_not_depend_on_how_the_stream_is_cut() {
        let mut rows = Vec::new();
        for i in 0..50 {
            for v in [ValueRef::Integer(i), ValueRef::Text(b"nome"), ValueRef::Null] {
                rows::encode(v, &mut rows);
            }
        }
        let mut delta = Vec::new();
        for i in 0..7 {
            let mut row = Vec::new();
            for v in [ValueRef::Integer(i), ValueRef::Text(b"x"), ValueRef::Real(1.5)] {
                rows::encode(v, &mut row);
            }
            encode_upsert(&row, &mut delta);
        }
        for i in 0..3 {
            let mut key = Vec::new();
            rows::encode(ValueRef::Integer(100 + i), &mut key);
            encode_delete(&key, &mut delta);
        }
        for piece in [1, 2, 7, 64, 1 << 20] {
            let mut c = RecordCount::new(Shape::Rows { ncols: 3 });
            rows.chunks(piece).for_each(|p| c.push(p).unwrap());
            assert_eq!(c.finish().unwrap(), (50, 0), "pieces of {piece}");
            let mut c = RecordCount::new(Shape::Delta { ncols: 3, key_len: 1 });
            delta.chunks(piece).for_each(|p| c.push(p).unwrap());
            assert_eq!(c.finish().unwrap(), (7, 3), "pieces of {piece}");
        }
        let mut c = RecordCount::new(Shape::Rows { ncols: 3 });
        c.push(&rows[..rows.len() - 1]).unwrap();
        assert!(c.finish().is_err(), "a row cut short");
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            (-1e20f64..1e20).prop_map(Value::Real),
            (-10i64..10).prop_map(|i| Value::Real(i as f64 + 0.5)),
            "[a-c]{0,3}".prop_map(Value::Text),
            proptest::collection::vec(0u8..3, 0..3).prop_map(Value::Blob),
        ]
    }

    proptest! {
        /// `compare` sorts like SQLite's ORDER BY ... COLLATE BINARY.
        #[test]
        fn order_matches_sqlite(values in proptest::collection::vec(value(), 1..40)) {
            let db = rusqlite::Connection::open_in_memory().unwrap();
            db.execute_batch("CREATE TABLE t (v)").unwrap();
            for v in &values {
                db.execute("INSERT INTO t VALUES (?1)", [v]).unwrap();
            }
            let sorted: Vec<Value> = db
                .prepare("SELECT v FROM t ORDER BY v COLLATE BINARY").unwrap()
                .query_map([], |r| r.get(0)).unwrap()
                .collect::<Result<_, _>>().unwrap();
            for w in sorted.windows(2) {
                prop_assert!(compare(ValueRef::from(&w[0]), ValueRef::from(&w[1])).is_le(), "{:?} then {:?}", w[0], w[1]);
            }
        }
    }

    proptest! {
        /// Encoded keys compare as their values do.
        #[test]
        fn encoded_keys_compare_like_values(pairs in proptest::collection::vec((value(), value()), 1..4)) {
            let (a, b): (Vec<Value>, Vec<Value>) = pairs.into_iter().unzip();
            let a: Vec<ValueRef<'_>> = a.iter().map(ValueRef::from).collect();
            let b: Vec<ValueRef<'_>> = b.iter().map(ValueRef::from).collect();
            let all: Vec<u32> = (0..a.len() as u32).collect();
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            encode_key(&a, &all, &mut ea);
            encode_key(&b, &all, &mut eb);
            prop_assert_eq!(compare_encoded(&ea, &eb).unwrap(), compare_keys(&a, &b));
            prop_assert_eq!(compare_encoded(&ea, &ea).unwrap(), Ordering::Equal);
        }
    }

    #[test]
    fn integers_and_reals_compare_exactly() {
        use ValueRef::{Integer, Real};
        assert_eq!(compare(Integer(i64::MAX), Real(9_223_372_036_854_775_808.0)), Ordering::Less);
        assert_eq!(compare(Integer(3), Real(3.0)), Ordering::Equal);
        assert_eq!(compare(Integer(3), Real(3.5)), Ordering::Less);
        assert_eq!(compare(Integer(-3), Real(-3.5)), Ordering::Greater);
        assert_eq!(compare(Integer(i64::MIN), Real(-1e300)), Ordering::Greater);
    }

    fn row(id: i64, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        rows::encode(ValueRef::Integer(id), &mut out);
        rows::encode(ValueRef::Text(text.as_bytes()), &mut out);
        out
    }

    fn delta_file(records: &[(i64, Option<&str>)]) -> File {
        let mut buf = Vec::new();
        for (id, text) in records {
            match text {
                Some(t) => encode_upsert(&row(*id, t), &mut buf),
                None => {
                    let mut key = Vec::new();
                    rows::encode(ValueRef::Integer(*id), &mut key);
                    encode_delete(&key, &mut buf)
                }
            }
        }
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&buf).unwrap();
        use std::io::Seek;
        f.rewind().unwrap();
        f
    }

    #[test]
    fn a_chain_of_deltas_applies_newest_last() {
        let base: Vec<u8> = [(1, "a"), (2, "b"), (4, "d"), (6, "f")].iter().flat_map(|(i, t)| row(*i, t)).collect();
        let d1 = delta_file(&[(0, Some("new0")), (2, Some("b1")), (4, None), (5, Some("e"))]);
        let d2 = delta_file(&[(2, Some("b2")), (5, None), (7, Some("g")), (8, Some("h"))]);
        let d3 = delta_file(&[(4, Some("d again")), (8, None)]);
        let deltas = Deltas::open(vec![d1, d2, d3], 2, &[0]).unwrap();
        let mut m = Merger::new(deltas, Merge::Rows { ncols: 2, key: vec![0] });
        let mut out = Vec::new();
        // Pushed in uneven pieces, cutting through records.
        for piece in base.chunks(5) {
            m.push(piece, &mut out).unwrap();
        }
        m.finish(&mut out).unwrap();
        let want: Vec<u8> = [(0, "new0"), (1, "a"), (2, "b2"), (4, "d again"), (6, "f"), (7, "g")]
            .iter()
            .flat_map(|(i, t)| row(*i, t))
            .collect();
        assert_eq!(out, want);
    }

    #[test]
    fn sealed_files_round_trip_and_refuse_damage() {
        let keys = Arc::new(crate::keys::TenantKeys::for_tests("t1"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map");
        let data: Vec<u8> = (0..(FRAME * 2 + 1000)).map(|i| (i % 251) as u8).collect();
        let mut w = SealedFileWriter::create(&path, keys.clone(), "digests/x").unwrap();
        w.write_all(&data).unwrap();
        w.finish().unwrap();
        let mut back = Vec::new();
        SealedFileReader::open(&path, keys.clone(), "digests/x").unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        // Another name (another table's file) does not open.
        assert!(SealedFileReader::open(&path, keys.clone(), "digests/y")
            .unwrap()
            .read_to_end(&mut Vec::new())
            .is_err());
        // Dropping the last frame is noticed.
        let bytes = std::fs::read(&path).unwrap();
        let first = 4 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        let second = first + 4 + u32::from_le_bytes(bytes[first..first + 4].try_into().unwrap()) as usize;
        std::fs::write(&path, &bytes[..second]).unwrap();
        assert!(SealedFileReader::open(&path, keys, "digests/x").unwrap().read_to_end(&mut Vec::new()).is_err());
    }
}
