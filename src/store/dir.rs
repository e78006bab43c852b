//! The `dir` store: a local folder, the embedded default. Keys map to files under the root.
//! Writes go to a temporary file in `<root>/.tmp/` and are renamed (or hard-linked, for
//! conditional creates) into place, so an object is visible whole or not at all.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Body, ObjectInfo, Store, StoreError};

#[derive(Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// Open the folder `root`; with `create`, make it first (only `init` does).
    pub fn open(root: &Path, create: bool) -> Result<DirStore, StoreError> {
        let fail = |message: String| StoreError::Config { store: format!("dir:{}", root.display()), message };
        if create {
            fs::create_dir_all(root.join(".tmp")).map_err(|e| {
                fail(format!("cannot create the store folder: {e}; check [store] path and its permissions"))
            })?;
        } else if !root.is_dir() {
            return Err(fail("the store folder does not exist; run `reversa --config FILE init` first".into()));
        }
        Ok(DirStore { root: root.to_path_buf() })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        // Keys are built by reversa from validated parts; refuse anything that could escape.
        if key.is_empty() || key.starts_with('/') || key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(self.fail("resolve", key, "invalid object key"));
        }
        Ok(self.root.join(key))
    }

    fn fail(&self, op: &'static str, key: &str, source: impl Into<super::BoxError>) -> StoreError {
        StoreError::Failed { store: self.describe(), op, key: key.to_string(), source: source.into() }
    }

    fn io(&self, op: &'static str, key: &str, e: io::Error) -> StoreError {
        if e.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound { store: self.describe(), key: key.to_string() }
        } else {
            self.fail(op, key, e)
        }
    }

    fn temp_file(&self) -> io::Result<tempfile::NamedTempFile> {
        let dir = self.root.join(".tmp");
        tempfile::NamedTempFile::new_in(&dir).or_else(|_| {
            fs::create_dir_all(&dir)?;
            tempfile::NamedTempFile::new_in(&dir)
        })
    }
}

/// Write `data` to `path` atomically: a temporary file in the same folder, fsync, rename, fsync of
/// the folder. Used by the dir store and for every local state file (keystore, caches).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

fn sync_parent(path: &Path) -> io::Result<()> {
    File::open(path.parent().expect("object path has a parent"))?.sync_all()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("dir store worker panicked")
}

#[async_trait]
impl Store for DirStore {
    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    fn conditional_create(&self) -> bool {
        true
    }

    async fn put(&self, key: &str, body: Body) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let mut tmp = self.temp_file().map_err(|e| self.io("put", key, e))?;
        let this = self.clone();
        let key = key.to_string();
        blocking(move || {
            let res = (|| -> io::Result<()> {
                match body {
                    Body::Bytes(b) => tmp.write_all(&b)?,
                    Body::File { path: src, len } => {
                        let n = io::copy(&mut File::open(&src)?, &mut tmp)?;
                        if n != len {
                            return Err(io::Error::other(format!(
                                "{} changed size while uploading ({n} bytes, expected {len})",
                                src.display()
                            )));
                        }
                    }
                }
                tmp.as_file().sync_all()?;
                fs::create_dir_all(path.parent().expect("object path has a parent"))?;
                tmp.persist(&path).map_err(|e| e.error)?;
                sync_parent(&path)
            })();
            res.map_err(|e| this.io("put", &key, e))
        })
        .await
    }

    async fn create_if_absent(&self, key: &str, data: Bytes) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        let mut tmp = self.temp_file().map_err(|e| self.io("create", key, e))?;
        let this = self.clone();
        let key = key.to_string();
        blocking(move || {
            let res = (|| -> io::Result<bool> {
                tmp.write_all(&data)?;
                tmp.as_file().sync_all()?;
                fs::create_dir_all(path.parent().expect("object path has a parent"))?;
                // link(2) fails if the target exists: atomic create-if-absent, and the object
                // appears complete because the temporary file was written and synced first.
                match fs::hard_link(tmp.path(), &path) {
                    Ok(()) => {
                        sync_parent(&path)?;
                        Ok(true)
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                }
            })();
            res.map_err(|e| this.io("create", &key, e))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let this = self.clone();
        let key = key.to_string();
        blocking(move || fs::read(&path).map(Bytes::from).map_err(|e| this.io("get", &key, e))).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        let this = self.clone();
        let key = key.to_string();
        blocking(move || {
            let res = (|| -> io::Result<Vec<u8>> {
                let mut f = File::open(&path)?;
                f.seek(SeekFrom::Start(range.start))?;
                let want = (range.end - range.start) as usize;
                let mut buf = Vec::with_capacity(want);
                f.take(want as u64).read_to_end(&mut buf)?;
                Ok(buf)
            })();
            match res {
                Ok(buf) if buf.len() as u64 == range.end - range.start => Ok(Bytes::from(buf)),
                Ok(_) => Err(StoreError::PastEnd { store: this.describe(), key, start: range.start, end: range.end }),
                Err(e) => Err(this.io("get", &key, e)),
            }
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(info(key.to_string(), &m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("head", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let this = self.clone();
        blocking(move || {
            // Walk only the folder the prefix names (up to its last '/'), then filter by prefix.
            let base = match prefix.rfind('/') {
                Some(i) => root.join(&prefix[..i]),
                None => root.clone(),
            };
            let mut out = Vec::new();
            let mut stack = vec![base];
            while let Some(dir) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(this.io("list", &prefix, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| this.io("list", &prefix, e))?;
                    let path = entry.path();
                    let ft = entry.file_type().map_err(|e| this.io("list", &prefix, e))?;
                    let rel = path.strip_prefix(&root).expect("walk stays under the root");
                    let Some(rel) = rel.to_str() else { continue };
                    if rel.starts_with(".tmp") {
                        continue;
                    }
                    if ft.is_dir() {
                        stack.push(path);
                    } else if ft.is_file() && rel.starts_with(&prefix) {
                        let m = entry.metadata().map_err(|e| this.io("list", &prefix, e))?;
                        out.push(info(rel.to_string(), &m));
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io("delete", key, e)),
        }
    }
}

fn info(key: String, m: &fs::Metadata) -> ObjectInfo {
    use std::os::unix::fs::MetadataExt;
    ObjectInfo { key, size: m.len(), modified: m.mtime() }
}
