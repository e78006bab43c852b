//! Names that are safe where the export puts them: worksheet names that Excel accepts, and ZIP
//! paths that extract on Windows, macOS and Linux without escaping the target folder.
//!
//! Every rename is deterministic (the same input names give the same output names, in the same
//! order), so an export from the live source and one from a generation name everything alike.

use std::collections::{HashMap, HashSet};

/// Excel's limit on a worksheet name, in UTF-16 code units (what Excel counts).
pub const SHEET_NAME_MAX: usize = 31;
/// The index sheet's name; no table sheet may take it.
pub const INDEX_SHEET: &str = "Indice";
/// Longest file or folder name written into the archive, in bytes. Windows allows 255 UTF-16
/// units per component; 180 UTF-8 bytes stays under that with room for a `~N` suffix.
const COMPONENT_MAX_BYTES: usize = 180;

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The longest prefix of `s` that fits in `max` UTF-16 units, never splitting a character.
fn truncate_utf16(s: &str, max: usize) -> &str {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += c.len_utf16();
        if used > max {
            return &s[..i];
        }
    }
    s
}

/// The longest prefix of `s` of at most `max` bytes, never splitting a character.
fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Worksheet names of one workbook: at most 31 UTF-16 units, none of `[ ] : * ? / \`, not
/// starting or ending with an apostrophe, never `History` (Excel reserves it), and unique
/// case-insensitively, also after truncation. The index sheet's name is taken from the start.
pub struct SheetNames {
    used: HashSet<String>,
}

impl Default for SheetNames {
    fn default() -> Self {
        Self::new()
    }
}

impl SheetNames {
    pub fn new() -> SheetNames {
        let mut used = HashSet::new();
        used.insert(INDEX_SHEET.to_lowercase());
        SheetNames { used }
    }

    /// A table name with the characters Excel refuses replaced by `_`.
    pub fn clean(table: &str) -> String {
        let mut s: String = table
            .chars()
            .map(|c| match c {
                '[' | ']' | ':' | '*' | '?' | '/' | '\\' => '_',
                c if c.is_control() => '_',
                c => c,
            })
            .collect();
        if s.trim().is_empty() {
            s = "tabella".into();
        }
        s
    }

    /// A new unique name for the first sheet of `table`.
    pub fn first(&mut self, table: &str) -> String {
        self.unique(&Self::clean(table), "")
    }

    /// A new unique name for the `part`-th sheet (2, 3, ...) of the table whose first sheet is
    /// `first`: `first (2)`, `first (3)`, ... cut so that it fits.
    pub fn continuation(&mut self, first: &str, part: u32) -> String {
        self.unique(first, &format!(" ({part})"))
    }

    fn unique(&mut self, base: &str, suffix: &str) -> String {
        for n in 1u32.. {
            // A clash (after truncation, or with another table's name) gets `~2`, `~3`, ...
            // before the part suffix, so `(N)` keeps meaning "part N" and nothing else.
            let extra = if n == 1 { String::new() } else { format!("~{n}") };
            let room = SHEET_NAME_MAX.saturating_sub(utf16_len(&extra) + utf16_len(suffix));
            let mut cand = format!("{}{extra}{suffix}", truncate_utf16(base, room));
            if cand.starts_with('\'') {
                cand.replace_range(..1, "_");
            }
            if cand.ends_with('\'') {
                cand.pop();
                cand.push('_');
            }
            let key = cand.to_lowercase();
            if key == "history" || self.used.contains(&key) {
                continue;
            }
            self.used.insert(key);
            return cand;
        }
        unreachable!("some suffix is always free")
    }
}

/// Names Windows reserves for devices, with or without an extension.
fn is_reserved_device(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").trim_end().to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[3] != b'0')
}

/// One file or folder name made safe for every platform's unzip: valid UTF-8, no separator, no
/// character Windows refuses (`< > : " / \ | ? *` and control characters), no trailing dot or
/// space, not a device name, not `.` or `..`, not empty, not too long. Returns the safe name.
pub fn safe_component(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut s: String = text
        .chars()
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '/' | '\\' | '|' | '?' | '*' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    if s.is_empty() || s == "." || s == ".." {
        s = "_".repeat(s.len().max(1));
    }
    // Windows drops trailing dots and spaces, which would merge `a.` with `a`.
    let keep = s.trim_end_matches(['.', ' ']).len();
    if keep < s.len() {
        let tail = s.len() - keep;
        s.truncate(keep);
        s.push_str(&"_".repeat(tail));
    }
    if is_reserved_device(&s) {
        s.insert(0, '_');
    }
    if s.len() > COMPONENT_MAX_BYTES {
        // Keep the extension, which tells the customer's system how to open the file.
        let ext = match s.rfind('.') {
            Some(i) if i > 0 && s.len() - i <= 16 => s[i..].to_string(),
            _ => String::new(),
        };
        let stem = truncate_bytes(&s, COMPONENT_MAX_BYTES - ext.len()).to_string();
        s = stem + &ext;
    }
    s
}

/// `name` with `~n` before its extension: `foto.jpg` -> `foto~2.jpg`.
fn with_counter(name: &str, n: u32) -> String {
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{}~{n}{}", &name[..i], &name[i..]),
        _ => format!("{name}~{n}"),
    }
}

/// Maps the tenant's file paths (`attachments/...`, `documents/...`, as bytes) to safe archive
/// paths (`allegati/...`, `documenti/...`), unique case-insensitively so that nothing overwrites
/// anything on Windows or macOS. Folders are mapped once and their files follow them.
///
/// Memory grows with the number of folders and files (one lower-cased path each); the ZIP
/// writer's central directory grows the same way, so this does not change the order of what an
/// export holds in memory.
pub struct PathMap {
    dirs: HashMap<Vec<u8>, String>,
    used: HashSet<String>,
}

/// How the two file folders of a tenant are named in the archive.
pub const TOP_FOLDERS: [(&str, &str); 2] = [("attachments", "allegati"), ("documents", "documenti")];

impl Default for PathMap {
    fn default() -> Self {
        Self::new()
    }
}

impl PathMap {
    pub fn new() -> PathMap {
        let mut dirs = HashMap::new();
        let mut used = HashSet::new();
        for (from, to) in TOP_FOLDERS {
            dirs.insert(from.as_bytes().to_vec(), to.to_string());
            used.insert(to.to_string());
        }
        PathMap { dirs, used }
    }

    /// The archive path of the tenant path `rel`, or `None` if `rel` is not under one of the
    /// tenant's file folders (a damaged catalog; the caller reports it).
    pub fn map(&mut self, rel: &[u8], is_dir: bool) -> Option<String> {
        if let Some(done) = self.dirs.get(rel) {
            return Some(done.clone());
        }
        let cut = rel.iter().rposition(|&b| b == b'/')?;
        let (parent, name) = (&rel[..cut], &rel[cut + 1..]);
        let parent_safe = self.map(parent, true)?;
        let safe = safe_component(name);
        let mut n = 1;
        let path = loop {
            let cand = if n == 1 {
                format!("{parent_safe}/{safe}")
            } else {
                format!("{parent_safe}/{}", with_counter(&safe, n))
            };
            if self.used.insert(cand.to_lowercase()) {
                break cand;
            }
            n += 1;
        };
        if is_dir {
            self.dirs.insert(rel.to_vec(), path.clone());
        }
        Some(path)
    }

    /// Whether the archive path `path` differs from the tenant path `rel` by more than the
    /// documented names of the two top folders (`attachments` -> `allegati`, `documents` ->
    /// `documenti`); such files get their original path in the manifest.
    pub fn renamed(rel: &[u8], path: &str) -> bool {
        for (from, to) in TOP_FOLDERS {
            if let (Some(a), Some(b)) = (rel.strip_prefix(from.as_bytes()), path.strip_prefix(to)) {
                return a != b.as_bytes();
            }
        }
        true
    }
}

/// File-name stems for per-table files (`dati/csv/<stem>.csv`, `dati/blob/<stem>/...`): safe
/// and unique case-insensitively among the tables of one export.
#[derive(Default)]
pub struct Stems {
    used: HashSet<String>,
}

impl Stems {
    pub fn unique(&mut self, name: &str) -> String {
        let base = safe_component(name.as_bytes());
        let mut n = 1;
        loop {
            let cand = if n == 1 { base.clone() } else { format!("{base}~{n}") };
            if self.used.insert(cand.to_lowercase()) {
                return cand;
            }
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheet_names_follow_excel_rules() {
        let mut names = SheetNames::new();
        let long = "a".repeat(40);
        let cases = [
            ("pratiche", "pratiche"),
            ("Pratiche", "Pratiche~2"),
            ("a[b]c:d*e?f/g\\h", "a_b_c_d_e_f_g_h"),
            ("History", "History~2"),
            ("history", "history~3"),
            ("Indice", "Indice~2"),
            ("", "tabella"),
            ("'quoted'", "_quoted_"),
        ];
        for (table, want) in cases {
            assert_eq!(names.first(table), want, "{table:?}");
        }
        let first = names.first(&long);
        assert_eq!(first, "a".repeat(31));
        // The same 40 characters again clash after truncation and get a counter.
        let again = names.first(&long);
        assert_eq!(again, format!("{}~2", "a".repeat(29)));
        let cont = names.continuation(&first, 2);
        assert_eq!(cont, format!("{} (2)", "a".repeat(27)));
        assert!(names.continuation("pratiche", 12) == "pratiche (12)");
        // Non-BMP characters count twice, as Excel counts them, and are never split.
        let emoji = "🏛".repeat(20);
        let got = names.first(&emoji);
        assert_eq!(got, "🏛".repeat(15));
        for n in [first, again, cont, got] {
            assert!(rust_xlsxwriter::utility::check_sheet_name(&n).is_ok(), "{n}");
        }
    }

    #[test]
    fn never_history_even_after_counters() {
        let mut names = SheetNames::new();
        // A 7-letter prefix of a long name could only become "History" by truncation; make sure
        // the result is never that word in any case.
        for t in ["HISTORY", "History", "hIsToRy"] {
            let n = names.first(t);
            assert_ne!(n.to_lowercase(), "history");
        }
    }

    #[test]
    fn components_are_safe_everywhere() {
        let cases: &[(&[u8], &str)] = &[
            (b"certificato medico Mario Rossi.pdf", "certificato medico Mario Rossi.pdf"),
            (b"=cmd|' calc'!A0.txt", "=cmd_' calc'!A0.txt"),
            (b"a:b<c>d\"e\\f?g*h", "a_b_c_d_e_f_g_h"),
            (b"CON", "_CON"),
            (b"con.txt", "_con.txt"),
            (b"LPT1.log", "_LPT1.log"),
            (b"COM0", "COM0"),
            (b"trailing.", "trailing_"),
            (b"spaces  ", "spaces__"),
            (b"..", "__"),
            (b".", "_"),
            (b"", "_"),
            (b"tab\there", "tab_here"),
            (b"bad\xffbyte", "bad\u{fffd}byte"),
            (".hidden".as_bytes(), ".hidden"),
        ];
        for (raw, want) in cases {
            assert_eq!(safe_component(raw), *want, "{:?}", String::from_utf8_lossy(raw));
        }
        let long = format!("{}.pdf", "x".repeat(300));
        let s = safe_component(long.as_bytes());
        assert!(s.len() <= COMPONENT_MAX_BYTES && s.ends_with(".pdf"), "{s}");
    }

    #[test]
    fn paths_map_folders_once_and_stay_unique() {
        let mut m = PathMap::new();
        assert_eq!(m.map(b"attachments", true).unwrap(), "allegati");
        assert_eq!(m.map(b"attachments/a:b", true).unwrap(), "allegati/a_b");
        assert_eq!(m.map(b"attachments/a_b", true).unwrap(), "allegati/a_b~2");
        assert_eq!(m.map(b"attachments/a:b/Foto.JPG", false).unwrap(), "allegati/a_b/Foto.JPG");
        assert_eq!(m.map(b"attachments/a:b/foto.jpg", false).unwrap(), "allegati/a_b/foto~2.jpg");
        assert_eq!(m.map(b"attachments/a_b/x.txt", false).unwrap(), "allegati/a_b~2/x.txt");
        // A folder seen only through its files is mapped on the way.
        assert_eq!(m.map(b"documents/x/y/z.txt", false).unwrap(), "documenti/x/y/z.txt");
        assert!(m.map(b"database.sqlite", false).is_none());
        assert!(m.map(b"other/x", false).is_none());
        assert!(PathMap::renamed(b"attachments/a:b", "allegati/a_b"));
        assert!(!PathMap::renamed(b"attachments/a b", "allegati/a b"));
    }

    #[test]
    fn stems_are_unique_case_insensitively() {
        let mut s = Stems::default();
        assert_eq!(s.unique("Dati"), "Dati");
        assert_eq!(s.unique("dati"), "dati~2");
        assert_eq!(s.unique("a/b"), "a_b");
        assert_eq!(s.unique("a\\b"), "a_b~2");
    }
}
