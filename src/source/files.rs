//! Walking a tenant's file folders. Symlinks are never followed: a link is recorded as a link when
//! it stays inside the tenant's folder, and skipped with a warning otherwise. Special files
//! (sockets, devices, FIFOs) are skipped with a warning.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::{Warning, FILE_FOLDERS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub dev: u64,
    pub mode: u32,
}

impl FileMeta {
    pub fn of(m: &std::fs::Metadata) -> FileMeta {
        FileMeta {
            size: m.len(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            inode: m.ino(),
            dev: m.dev(),
            mode: m.mode() & 0o7777,
        }
    }
}

/// Open a file the walk found, without following a link, and check that it is still the file
/// the walk saw (same device and inode). A file (or a parent folder) swapped for a link between
/// the walk and the open is never read through the link, so nothing outside the tenant's folder
/// can be read in its place.
pub fn open_walked(abs: &Path, walked: &FileMeta) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(abs)?;
    let m = f.metadata()?;
    if m.ino() != walked.inode || m.dev() != walked.dev {
        return Err(std::io::Error::other("it was replaced by another file or a link while it was being read"));
    }
    Ok(f)
}

pub enum Item {
    Dir { rel: Vec<u8>, meta: FileMeta },
    File { rel: Vec<u8>, abs: PathBuf, meta: FileMeta },
    Symlink { rel: Vec<u8>, target: Vec<u8> },
}

/// Walk `attachments/` and `documents/` under `tenant_dir` in a stable (sorted) order.
pub fn walk<E>(
    tenant_dir: &Path,
    mut visit: impl FnMut(Item) -> Result<(), E>,
    mut warn: impl FnMut(Warning),
) -> Result<(), E> {
    let canonical_root = match tenant_dir.canonicalize() {
        Ok(p) => p,
        Err(e) => {
            warn(Warning::other(format!("cannot resolve {}: {e}", tenant_dir.display())));
            return Ok(());
        }
    };
    for top in FILE_FOLDERS {
        let mut stack = vec![PathBuf::from(top)];
        while let Some(rel_dir) = stack.pop() {
            let abs_dir = tenant_dir.join(&rel_dir);
            let meta = match std::fs::symlink_metadata(&abs_dir) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel_dir.as_os_str() == top => break,
                Err(e) => {
                    warn(Warning::Unreadable { path: abs_dir, cause: e.to_string() });
                    continue;
                }
            };
            if !meta.is_dir() {
                // Only reachable for the top folder (sub-entries are classified below).
                warn(Warning::other(format!("{} is not a folder; skipped", abs_dir.display())));
                break;
            }
            visit(Item::Dir { rel: rel_dir.as_os_str().as_bytes().to_vec(), meta: FileMeta::of(&meta) })?;
            let mut entries: Vec<_> = match std::fs::read_dir(&abs_dir) {
                Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
                Err(e) => {
                    warn(Warning::Unreadable { path: abs_dir, cause: format!("cannot list it: {e}") });
                    continue;
                }
            };
            entries.sort_by_key(|e| e.file_name());
            let mut subdirs = Vec::new();
            for entry in entries {
                let rel = rel_dir.join(entry.file_name());
                let abs = entry.path();
                let m = match std::fs::symlink_metadata(&abs) {
                    Ok(m) => m,
                    Err(e) => {
                        warn(Warning::Unreadable { path: abs, cause: e.to_string() });
                        continue;
                    }
                };
                let ft = m.file_type();
                let rel_bytes = rel.as_os_str().as_bytes().to_vec();
                if ft.is_dir() {
                    subdirs.push(rel);
                } else if ft.is_file() {
                    visit(Item::File { rel: rel_bytes, abs, meta: FileMeta::of(&m) })?;
                } else if ft.is_symlink() {
                    match link_inside(&canonical_root, &rel, &abs) {
                        Ok(target) => visit(Item::Symlink { rel: rel_bytes, target })?,
                        Err(why) => warn(Warning::LinkOutOfTenant { path: abs, why }),
                    }
                } else {
                    warn(Warning::SpecialFile { path: abs });
                }
            }
            // Reverse so the stack pops them in sorted order.
            stack.extend(subdirs.into_iter().rev());
        }
    }
    Ok(())
}

/// The link's target if it stays inside the tenant folder, both as written (so it also stays
/// inside wherever the tree is restored) and as resolved now.
fn link_inside(canonical_root: &Path, rel: &Path, abs: &Path) -> Result<Vec<u8>, &'static str> {
    let target = std::fs::read_link(abs).map_err(|_| "cannot be read")?;
    if target.is_absolute() {
        return Err("has an absolute target");
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return Err("has an unusual target"),
        }
        if depth < 0 {
            return Err("points outside the tenant's folder");
        }
    }
    match abs.canonicalize() {
        Ok(resolved) if resolved.starts_with(canonical_root) => Ok(target.as_os_str().as_bytes().to_vec()),
        Ok(_) => Err("points outside the tenant's folder"),
        Err(_) => Err("is dangling"),
    }
}
