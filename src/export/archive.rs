//! The two ZIP layers of an export and the passphrase.
//!
//! ZIP encryption hides contents but not entry names, and the names of a tenant's files are
//! often personal data. So the tree (with its real names) goes into a plain inner ZIP,
//! `contenuto.zip`, written to a temporary file; the archive the customer receives holds, in
//! clear, only `LEGGIMI.txt` and `README.txt`, and `contenuto.zip` as one WinZip AES-256 (AE-2)
//! entry. Without the passphrase nothing but those two texts and the word `contenuto.zip` can be
//! read.
//!
//! The outer archive is written as one byte stream cut into parts of at most `--split-size`
//! bytes. Concatenating the parts (`cat`, `copy /b`) gives back the one ZIP; renamed to
//! `NAME.zip.001`, `NAME.zip.002`, ... 7-Zip opens them as a set without joining them first.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};
use zip::write::SimpleFileOptions;
use zip::{AesMode, CompressionMethod, ZipWriter};

use super::ExportError;

/// Deflate level for compressible entries. Level 6 costs three to four times the CPU of level 1
/// for a few percent less on text; an export is a download made once, so speed wins.
const DEFLATE_LEVEL: i64 = 1;
/// Entries whose size may pass this get ZIP64 headers (the hard limit is 4 GiB).
const LARGE_FILE: u64 = 3 << 30;
const BUF: usize = 1 << 20;

/// A random passphrase: 24 characters from an alphabet without look-alikes (no `0 O 1 l I`), in
/// groups of four joined by `-`, about 119 bits. It zeroizes on drop and never prints: get the
/// text with [`Passphrase::expose`], only to hand it to the requester.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Passphrase(String);

const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

impl Passphrase {
    pub fn generate() -> Passphrase {
        let mut out = String::with_capacity(29);
        let mut n = 0;
        while n < 24 {
            let mut b = [0u8; 32];
            rand::fill(&mut b);
            for x in b {
                // Rejection sampling keeps every character equally likely.
                if (x as usize) < ALPHABET.len() * (256 / ALPHABET.len()) && n < 24 {
                    if n > 0 && n % 4 == 0 {
                        out.push('-');
                    }
                    out.push(ALPHABET[x as usize % ALPHABET.len()] as char);
                    n += 1;
                }
            }
            b.zeroize();
        }
        Passphrase(out)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// A ZIP timestamp (local time fields; ZIP has no zone, so UTC is written) for nanoseconds since
/// the epoch. Times ZIP cannot hold (before 1980, after 2107) give 1980-01-01.
pub fn zip_time(ns: i128) -> zip::DateTime {
    let Ok(ts) = jiff::Timestamp::from_nanosecond(ns) else {
        return zip::DateTime::default();
    };
    let t = ts.to_zoned(jiff::tz::TimeZone::UTC);
    zip::DateTime::from_date_and_time(
        t.year() as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .unwrap_or_default()
}

/// How an entry is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Deflate,
    Store,
}

/// Whether data that starts with `sample` is worth compressing: zstd at its fastest level on the
/// first 64 KiB is a cheap, good predictor (already-compressed files, scans and photos are not).
pub fn worth_compressing(sample: &[u8]) -> bool {
    let s = &sample[..sample.len().min(64 << 10)];
    if s.len() < 512 {
        return true;
    }
    match zstd::bulk::compress(s, 1) {
        Ok(c) => c.len() < s.len() * 9 / 10,
        Err(_) => true,
    }
}

/// What went into the archive for one entry.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

struct Open {
    path: String,
    hasher: Sha256,
    size: u64,
}

/// The inner ZIP (`contenuto.zip`), written to a local file. Every file entry is hashed as it is
/// written and listed in `SHA256SUMS`, which [`InnerZip::finish`] adds last.
pub struct InnerZip {
    zip: ZipWriter<BufWriter<File>>,
    file: PathBuf,
    sums: BufWriter<File>,
    sums_file: PathBuf,
    open: Option<Open>,
}

fn zerr(path: &Path) -> impl FnOnce(zip::result::ZipError) -> ExportError + '_ {
    move |e| ExportError::Zip { path: path.into(), cause: e.to_string() }
}

fn ioerr<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ExportError + 'a {
    move |cause| ExportError::Io { what, path: path.into(), cause }
}

impl InnerZip {
    /// Create the inner ZIP at `file`, spooling the checksums list to `sums_file`.
    pub fn create(file: &Path, sums_file: &Path) -> Result<InnerZip, ExportError> {
        let f = File::create(file).map_err(ioerr("cannot create", file))?;
        let s = File::create(sums_file).map_err(ioerr("cannot create", sums_file))?;
        Ok(InnerZip {
            zip: ZipWriter::new(BufWriter::with_capacity(BUF, f)),
            file: file.into(),
            sums: BufWriter::new(s),
            sums_file: sums_file.into(),
            open: None,
        })
    }

    fn options(method: Method, large: bool, mtime: zip::DateTime) -> SimpleFileOptions {
        let o = SimpleFileOptions::default().last_modified_time(mtime).large_file(large).unix_permissions(0o644);
        match method {
            Method::Deflate => o.compression_method(CompressionMethod::Deflated).compression_level(Some(DEFLATE_LEVEL)),
            Method::Store => o.compression_method(CompressionMethod::Stored),
        }
    }

    /// A folder entry, so that empty folders survive extraction.
    pub fn dir(&mut self, path: &str, mtime: zip::DateTime) -> Result<(), ExportError> {
        let o = SimpleFileOptions::default().last_modified_time(mtime).unix_permissions(0o755);
        self.zip.add_directory(path, o).map_err(zerr(&self.file))
    }

    /// Start a file entry; write it with [`InnerZip::write`] and close it with
    /// [`InnerZip::finish_entry`]. `size_hint` decides whether it needs ZIP64 headers.
    pub fn start(
        &mut self,
        path: &str,
        method: Method,
        size_hint: u64,
        mtime: zip::DateTime,
    ) -> Result<(), ExportError> {
        let o = Self::options(method, size_hint >= LARGE_FILE, mtime);
        self.zip.start_file(path, o).map_err(zerr(&self.file))?;
        self.open = Some(Open { path: path.to_string(), hasher: Sha256::new(), size: 0 });
        Ok(())
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), ExportError> {
        let open = self.open.as_mut().expect("an entry is open");
        open.hasher.update(data);
        open.size += data.len() as u64;
        self.zip.write_all(data).map_err(ioerr("cannot write", &self.file))
    }

    pub fn finish_entry(&mut self) -> Result<Recorded, ExportError> {
        let open = self.open.take().expect("an entry is open");
        let sha = hex::encode(open.hasher.finalize());
        // Two spaces: the text mode of `sha256sum -c`. Paths were made safe (no newline or
        // backslash), so no line needs sha256sum's escaping.
        writeln!(self.sums, "{sha}  {}", open.path).map_err(ioerr("cannot write", &self.sums_file))?;
        Ok(Recorded { path: open.path, size: open.size, sha256: sha })
    }

    /// A whole entry from bytes in memory (small texts, side files of one value).
    pub fn add_bytes(
        &mut self,
        path: &str,
        data: &[u8],
        method: Method,
        mtime: zip::DateTime,
    ) -> Result<Recorded, ExportError> {
        self.start(path, method, data.len() as u64, mtime)?;
        self.write(data)?;
        self.finish_entry()
    }

    /// A whole entry copied from a local file, in 1 MiB reads.
    pub fn add_file(
        &mut self,
        path: &str,
        from: &Path,
        method: Method,
        mtime: zip::DateTime,
    ) -> Result<Recorded, ExportError> {
        let mut f = File::open(from).map_err(ioerr("cannot read", from))?;
        let len = f.metadata().map_err(ioerr("cannot read", from))?.len();
        self.start(path, method, len, mtime)?;
        let mut buf = vec![0u8; BUF];
        loop {
            let n = f.read(&mut buf).map_err(ioerr("cannot read", from))?;
            if n == 0 {
                break;
            }
            self.write(&buf[..n])?;
        }
        self.finish_entry()
    }

    /// Add `SHA256SUMS` and write the central directory. Returns the inner ZIP's size.
    pub fn finish(mut self, mtime: zip::DateTime) -> Result<u64, ExportError> {
        self.sums.flush().map_err(ioerr("cannot write", &self.sums_file))?;
        let o = Self::options(Method::Deflate, false, mtime);
        self.zip.start_file("SHA256SUMS", o).map_err(zerr(&self.file))?;
        let mut s = File::open(&self.sums_file).map_err(ioerr("cannot read", &self.sums_file))?;
        io::copy(&mut s, &mut self.zip).map_err(ioerr("cannot write", &self.file))?;
        let mut w = self.zip.finish().map_err(zerr(&self.file))?;
        w.flush().map_err(ioerr("cannot write", &self.file))?;
        let f = w.into_inner().map_err(|e| ExportError::Io {
            what: "cannot write",
            path: self.file.clone(),
            cause: e.into_error(),
        })?;
        f.sync_all().map_err(ioerr("cannot write", &self.file))?;
        Ok(f.metadata().map_err(ioerr("cannot read", &self.file))?.len())
    }
}

/// A byte stream cut into files of at most `limit` bytes: `<prefix>.1`, `<prefix>.2`, ... in
/// `dir`. The first part is created at once, so an output folder that cannot be written is
/// found before any work is done.
pub struct SplitWriter {
    dir: PathBuf,
    prefix: String,
    limit: u64,
    parts: Vec<PathBuf>,
    current: File,
    in_part: u64,
    /// The SHA-256 of the whole stream: of the archive the parts join into.
    hasher: Sha256,
    /// The job's token: a cancelled export stops encrypting at its next write, so nothing is
    /// written after the job gave up (its parts are then removed).
    cancel: Option<tokio_util::sync::CancellationToken>,
}

impl SplitWriter {
    pub fn create(dir: &Path, prefix: &str, limit: u64) -> io::Result<SplitWriter> {
        let first = dir.join(format!("{prefix}.1"));
        let current = fs::OpenOptions::new().write(true).create_new(true).open(&first)?;
        Ok(SplitWriter {
            dir: dir.into(),
            prefix: prefix.into(),
            limit: limit.max(1),
            parts: vec![first],
            current,
            in_part: 0,
            hasher: Sha256::new(),
            cancel: None,
        })
    }

    /// The temporary part files so far (for cleaning up after a failure).
    pub fn parts(&self) -> &[PathBuf] {
        &self.parts
    }

    /// Flush every part to disk and return them in order, with the SHA-256 of their
    /// concatenation.
    pub fn finish(self) -> io::Result<(Vec<PathBuf>, String)> {
        self.current.sync_all()?;
        File::open(&self.dir)?.sync_all()?;
        Ok((self.parts, hex::encode(self.hasher.finalize())))
    }
}

impl SplitWriter {
    pub fn stop_on(mut self, cancel: tokio_util::sync::CancellationToken) -> SplitWriter {
        self.cancel = Some(cancel);
        self
    }
}

impl Write for SplitWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            // Not `Interrupted`, which `write_all` would retry.
            return Err(io::Error::other("the export was cancelled"));
        }
        if self.in_part == self.limit {
            self.current.sync_all()?;
            let next = self.dir.join(format!("{}.{}", self.prefix, self.parts.len() + 1));
            self.current = fs::OpenOptions::new().write(true).create_new(true).open(&next)?;
            self.parts.push(next);
            self.in_part = 0;
        }
        let room = (self.limit - self.in_part).min(buf.len() as u64) as usize;
        let n = self.current.write(&buf[..room])?;
        self.hasher.update(&buf[..n]);
        self.in_part += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current.flush()
    }
}

/// Write the outer archive to `out`: the two texts in clear, then the inner ZIP at `inner` as the
/// AES-256 entry `contenuto.zip` (stored: it is compressed already). `progress` is called with
/// the bytes encrypted so far.
pub fn write_outer(
    out: SplitWriter,
    inner: &Path,
    passphrase: &Passphrase,
    texts: &[(&str, String)],
    mtime: zip::DateTime,
    progress: &dyn Fn(u64),
) -> Result<(Vec<PathBuf>, String), ExportError> {
    let first = out.parts()[0].clone();
    let mut zip = ZipWriter::new_stream(BufWriter::with_capacity(BUF, out));
    for (name, text) in texts {
        let o = SimpleFileOptions::default()
            .last_modified_time(mtime)
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(DEFLATE_LEVEL));
        zip.start_file(*name, o).map_err(zerr(&first))?;
        zip.write_all(text.as_bytes()).map_err(ioerr("cannot write", &first))?;
    }
    let mut f = File::open(inner).map_err(ioerr("cannot read", inner))?;
    let len = f.metadata().map_err(ioerr("cannot read", inner))?.len();
    let o = SimpleFileOptions::default()
        .last_modified_time(mtime)
        .compression_method(CompressionMethod::Stored)
        .large_file(len >= LARGE_FILE)
        .with_aes_encryption(AesMode::Aes256, passphrase.expose());
    zip.start_file("contenuto.zip", o).map_err(zerr(&first))?;
    let mut buf = vec![0u8; BUF];
    loop {
        let n = f.read(&mut buf).map_err(ioerr("cannot read", inner))?;
        if n == 0 {
            break;
        }
        zip.write_all(&buf[..n]).map_err(ioerr("cannot write", &first))?;
        progress(n as u64);
    }
    let w = zip.finish().map_err(zerr(&first))?;
    let split = w.into_inner().into_inner().map_err(|e| ExportError::Io {
        what: "cannot write",
        path: first.clone(),
        cause: e.into_error(),
    })?;
    split.finish().map_err(ioerr("cannot write", &first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrases_are_long_random_and_never_printed() {
        let a = Passphrase::generate();
        let b = Passphrase::generate();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 29);
        assert!(a.expose().chars().filter(|c| *c != '-').count() >= 20);
        assert!(a.expose().bytes().all(|c| c == b'-' || ALPHABET.contains(&c)));
        assert_eq!(format!("{a:?}"), "Passphrase(<redacted>)");
    }

    #[test]
    fn split_writer_cuts_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SplitWriter::create(dir.path(), "x", 10).unwrap();
        w.write_all(&[1u8; 25]).unwrap();
        let (parts, sha) = w.finish().unwrap();
        assert_eq!(sha, hex::encode(Sha256::digest([1u8; 25])));
        let sizes: Vec<u64> = parts.iter().map(|p| fs::metadata(p).unwrap().len()).collect();
        assert_eq!(sizes, vec![10, 10, 5]);
        // Exactly the limit makes no empty trailing part.
        let mut w = SplitWriter::create(dir.path(), "y", 10).unwrap();
        w.write_all(&[1u8; 20]).unwrap();
        assert_eq!(w.finish().unwrap().0.len(), 2);
    }

    #[test]
    fn compressibility_probe() {
        assert!(worth_compressing(&b"il comune di Pisa ".repeat(1000)));
        let mut random = vec![0u8; 100_000];
        rand::fill(&mut random[..]);
        assert!(!worth_compressing(&random));
        assert!(worth_compressing(b"tiny"));
    }

    #[test]
    fn zip_times() {
        let t = zip_time(1_700_000_000_000_000_000);
        assert_eq!((t.year(), t.month(), t.day()), (2023, 11, 14));
        assert_eq!(zip_time(0), zip::DateTime::default());
    }
}
