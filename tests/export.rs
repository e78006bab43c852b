//! Issue 4: the customer export, checked with the tools a customer would use: 7-Zip opens and
//! tests the archive, `sha256sum -c` verifies the tree, LibreOffice reads the workbook.
//!
//! The tools are installed by scripts/test.sh. Outside CI a test whose tool is missing says so
//! and passes; with `CI` set it fails, so a CI run can never pass without really checking.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use reversa::export::xlsx::{clean_text, parse_iso, DateKind};
use rusqlite::types::Value;

use crate::common::{bin, Env, Run, SMALL};

// ---------------------------------------------------------------------------------------------
// Tools

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether `tool` is installed. Missing under CI is a failure, not a skip.
fn have(tool: &str) -> bool {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(!ci(), "{tool} is not installed and CI is set: run scripts/test.sh, which installs it");
        eprintln!("SKIPPED: {tool} is not installed (scripts/test.sh installs it)");
    }
    found
}

fn run_tool(cmd: &mut Command) -> Run {
    let r: Run = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")).into();
    r
}

fn sevenz(args: &[&str]) -> Run {
    run_tool(Command::new("7zz").args(args))
}

/// Extract an export (the outer archive with the passphrase, then contenuto.zip) under `dest`;
/// returns the folder of the tree.
pub(crate) fn extract(archive: &Path, pass: &str, dest: &Path) -> PathBuf {
    let outer = dest.join("outer");
    let tree = dest.join("tree");
    let r = sevenz(&["x", &format!("-p{pass}"), &format!("-o{}", outer.display()), "-y", archive.to_str().unwrap()]);
    assert_eq!(r.code, 0, "7zz x of the export failed:\n{}", r.all());
    let names: Vec<String> =
        std::fs::read_dir(&outer).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["LEGGIMI.txt", "README.txt", "contenuto.zip"]);
    let r = sevenz(&["x", &format!("-o{}", tree.display()), "-y", outer.join("contenuto.zip").to_str().unwrap()]);
    assert_eq!(r.code, 0, "7zz x of contenuto.zip failed:\n{}", r.all());
    tree
}

fn sha256sum_check(tree: &Path) {
    let r = run_tool(Command::new("sha256sum").args(["-c", "--strict", "SHA256SUMS"]).current_dir(tree));
    assert_eq!(r.code, 0, "sha256sum -c failed:\n{}", r.all());
}

/// LibreOffice's CSV of every sheet of `xlsx`, by sheet name: rows of (quoted, text).
///
/// The filter options are TESTING.md's, except token 7 ("quote all text cells") is true: a text
/// cell comes out quoted and a number or date does not, which is how this test tells a number
/// stored as a number from the same digits stored as text.
fn libreoffice(xlsx: &Path, out: &Path) -> HashMap<String, Vec<Vec<(bool, String)>>> {
    std::fs::create_dir_all(out).unwrap();
    // A private profile lets tests run LibreOffice in parallel.
    let profile = format!("-env:UserInstallation=file://{}/lo-profile", out.display());
    let r = run_tool(
        Command::new("soffice")
            .args([
                &profile,
                "--headless",
                "--convert-to",
                "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,true,true,false,false,false,-1",
                "--outdir",
                out.to_str().unwrap(),
                xlsx.to_str().unwrap(),
            ])
            .env("HOME", out),
    );
    assert_eq!(r.code, 0, "soffice failed:\n{}", r.all());
    let stem = xlsx.file_stem().unwrap().to_string_lossy().into_owned();
    let mut sheets = HashMap::new();
    for e in std::fs::read_dir(out).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(sheet) = name.strip_prefix(&format!("{stem}-")).and_then(|s| s.strip_suffix(".csv")) {
            let text = std::fs::read_to_string(e.path()).unwrap();
            sheets.insert(sheet.to_string(), parse_csv(&text));
        }
    }
    assert!(sheets.contains_key("Indice"), "LibreOffice wrote no Indice sheet:\n{}\n{:?}", r.all(), sheets.keys());
    sheets
}

/// RFC 4180, remembering whether each field was quoted. Accepts LF or CRLF line ends.
fn parse_csv(text: &str) -> Vec<Vec<(bool, String)>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if at_start && c == '"' {
            quoted = true;
            at_start = false;
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => panic!("unterminated quoted field"),
                }
            }
            continue;
        }
        at_start = false;
        match c {
            ',' => {
                row.push((quoted, std::mem::take(&mut field)));
                quoted = false;
                at_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                row.push((quoted, std::mem::take(&mut field)));
                rows.push(std::mem::take(&mut row));
                quoted = false;
                at_start = true;
            }
            c => field.push(c),
        }
    }
    if !at_start || !row.is_empty() {
        row.push((quoted, field));
        rows.push(row);
    }
    rows
}

// ---------------------------------------------------------------------------------------------
// Running exports

/// The passphrase the export printed (the line after the one that announces it).
fn printed_passphrase(r: &Run) -> String {
    let mut lines = r.stdout.lines();
    while let Some(l) = lines.next() {
        if l.starts_with("passphrase (shown only now") {
            return lines.next().expect("a passphrase line").trim().to_string();
        }
    }
    panic!("no passphrase printed:\n{}", r.all());
}

/// The archive paths an export printed (indented lines ending in .zip).
fn printed_parts(r: &Run) -> Vec<PathBuf> {
    r.stdout.lines().filter(|l| l.starts_with("  /") && l.ends_with(".zip")).map(|l| PathBuf::from(l.trim())).collect()
}

struct Exported {
    parts: Vec<PathBuf>,
    pass: String,
    run: Run,
}

fn export(env: &Env, tenant: &str, out: &str, extra: &[&str]) -> Exported {
    let out = env.path(out);
    let mut args = vec!["export", "--tenant", tenant, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = env.run(&args);
    assert_eq!(run.code, 0, "export failed:\n{}", run.all());
    let pass = if let Some(i) = extra.iter().position(|a| *a == "--passphrase-file") {
        let f = extra[i + 1];
        std::fs::read_to_string(f).unwrap().trim().to_string()
    } else {
        printed_passphrase(&run)
    };
    Exported { parts: printed_parts(&run), pass, run }
}

// ---------------------------------------------------------------------------------------------
// The edge-case tenant

const LONG_CHARS: usize = 40_000;

fn long_text() -> String {
    // Two-byte characters, so that bytes and characters differ.
    let mut s = String::new();
    while s.chars().count() < LONG_CHARS {
        s.push_str("è lunghissimo, ");
    }
    s.chars().take(LONG_CHARS).collect()
}

/// The seed's sample tenant plus everything the export must get right.
fn edge_tenant(env: &Env, tenant: &str) {
    env.seed(tenant, SMALL, 7);
    let t = env.tenant_dir(tenant);
    let db = rusqlite::Connection::open(t.join("database.sqlite")).unwrap();
    db.execute_batch(
        r#"
        CREATE TABLE "casi limite" (id INTEGER PRIMARY KEY, testo TEXT, attivo BOOLEAN,
            quando TEXT, numero REAL, grande INTEGER, dati BLOB);
        CREATE TABLE "History" (x TEXT);
        CREATE TABLE "Indice" (x TEXT);
        CREATE TABLE "a[b]:c*d?e/f\g" (x TEXT);
        CREATE TABLE "=1+2" (x TEXT);
        CREATE TABLE registro_delle_determinazioni_dirigenziali_2024 (x TEXT);
        CREATE TABLE registro_delle_determinazioni_dirigenziali_2025 (x TEXT);
        INSERT INTO "History" VALUES ('storia');
        INSERT INTO "Indice" VALUES ('non l''indice');
        INSERT INTO "a[b]:c*d?e/f\g" VALUES ('nome strano');
        INSERT INTO "=1+2" VALUES ('=1+2');
        INSERT INTO registro_delle_determinazioni_dirigenziali_2024 VALUES ('2024');
        INSERT INTO registro_delle_determinazioni_dirigenziali_2025 VALUES ('2025');
        "#,
    )
    .unwrap();
    let mut st = db.prepare(r#"INSERT INTO "casi limite" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"#).unwrap();
    let rows: Vec<[Value; 7]> = vec![
        [
            Value::Integer(1),
            Value::Text(long_text()),
            Value::Integer(1),
            Value::Text("2024-02-30".into()),
            Value::Real(1.5),
            Value::Integer(1_234_567_890_123_456_789),
            Value::Blob(b"%PDF-1.4 firma".to_vec()),
        ],
        [
            Value::Integer(2),
            Value::Text("a\u{1}b\u{7}c\u{1f}d\u{ffff}".into()),
            Value::Integer(0),
            Value::Text("2024-02-29T13:45:30Z".into()),
            Value::Real(f64::INFINITY),
            Value::Integer(42),
            Value::Blob(vec![0, 255, 0, 1]),
        ],
        [
            Value::Integer(3),
            Value::Text("=1+1".into()),
            Value::Null,
            Value::Text("2024-01-31 10:00:00.250".into()),
            Value::Real(f64::NEG_INFINITY),
            Value::Integer(-999_999_999_999_999),
            Value::Null,
        ],
        [
            Value::Integer(4),
            Value::Text("+39 050 123".into()),
            Value::Integer(1),
            Value::Text("2024-01-31T10:00:00+02:00".into()),
            Value::Real(0.1),
            Value::Integer(1_000_000_000_000_000),
            Value::Blob(Vec::new()),
        ],
        [
            Value::Integer(5),
            Value::Text("-5 gradi".into()),
            Value::Integer(0),
            Value::Text("1899-12-31".into()),
            Value::Real(-0.0),
            Value::Integer(0),
            Value::Null,
        ],
        [
            Value::Integer(6),
            Value::Text("@SOMMA(A1)".into()),
            Value::Integer(2),
            Value::Text("2024-01-31".into()),
            Value::Null,
            Value::Null,
            Value::Null,
        ],
        [
            Value::Integer(7),
            Value::Text(String::new()),
            Value::Null,
            Value::Text("2024-01-31T23:59".into()),
            Value::Real(1e300),
            Value::Null,
            Value::Null,
        ],
        [
            Value::Integer(8),
            Value::Text("riga\r\nnuova, \"citata\"".into()),
            Value::Null,
            Value::Text("31/01/2024".into()),
            Value::Real(5e-324),
            Value::Null,
            Value::Null,
        ],
        [
            Value::Integer(9),
            Value::Text("_x0041_ non è A".into()),
            Value::Null,
            Value::Text("2024-02-29".into()),
            Value::Real(-1.25e-7),
            Value::Null,
            Value::Null,
        ],
    ];
    for r in &rows {
        st.execute(rusqlite::params_from_iter(r.iter())).unwrap();
    }
    // Text that is not valid UTF-8 (SQLite does not check).
    db.execute(r#"INSERT INTO "casi limite" (id, testo) VALUES (10, CAST(x'41ff42' AS TEXT))"#, []).unwrap();
    drop(st);
    drop(db);

    let a = t.join("attachments");
    let write = |rel: &[u8], data: &[u8]| {
        let p = a.join(std::ffi::OsStr::from_bytes(rel));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    write(b"a:b.txt", b"colon");
    write(b"CON.txt", b"device name");
    write(b"fine.", b"trailing dot");
    write(b"back\\slash.txt", b"backslash");
    write(b"Foto.JPG", b"upper");
    write(b"foto.jpg", b"lower");
    write(b"ctl\x01name.txt", b"control");
    write(b"caf\xe9.txt", b"latin-1 name");
    write(b"cartella:strana/dentro.txt", b"inside a renamed folder");
    std::fs::create_dir_all(t.join("documents/vuota")).unwrap();
    std::os::unix::fs::symlink("certificato medico Mario Rossi.pdf", a.join("link-al-certificato.pdf")).unwrap();
}

fn manifest(tree: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(tree.join("manifest.json")).unwrap()).unwrap()
}

/// Every regular file under `root`, relative, sorted.
fn tree_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The workbook's parts (it is a ZIP), extracted with 7-Zip.
fn xlsx_parts(xlsx: &Path, dest: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let r = sevenz(&["x", &format!("-o{}", dest.display()), "-y", xlsx.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
    tree_files(dest)
        .into_iter()
        .map(|p| {
            let data = std::fs::read(dest.join(&p)).unwrap();
            (p, data)
        })
        .collect()
}

/// Two extracted exports hold the same data: every file is identical, except the manifest's
/// time and source fields, the workbook's creation time, and the checksums of those two files.
fn assert_same_data(a: &Path, b: &Path, scratch: &Path, tenant: &str) {
    let (fa, fb) = (tree_files(a), tree_files(b));
    assert_eq!(fa, fb, "the two exports hold different files");
    let xlsx = PathBuf::from(format!("dati/{tenant}.xlsx"));
    for f in &fa {
        let (da, db) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
        if f == Path::new("manifest.json") {
            let strip = |d: &[u8]| {
                let mut v: serde_json::Value = serde_json::from_slice(d).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("created").expect("a created field");
                o.remove("source").expect("a source field");
                // The workbook's own checksum differs by its creation time, checked below.
                let files = o["files"].as_array_mut().unwrap();
                for e in files.iter_mut() {
                    if e["kind"] == "xlsx" {
                        e.as_object_mut().unwrap().remove("sha256");
                        e.as_object_mut().unwrap().remove("size");
                    }
                }
                v
            };
            assert_eq!(strip(&da), strip(&db), "manifests differ beyond time and source");
        } else if f == Path::new("SHA256SUMS") {
            let keep = |d: &[u8]| -> Vec<String> {
                String::from_utf8(d.to_vec())
                    .unwrap()
                    .lines()
                    .filter(|l| !l.ends_with("  manifest.json") && !l.ends_with(".xlsx"))
                    .map(String::from)
                    .collect()
            };
            assert_eq!(keep(&da), keep(&db), "checksums differ");
        } else if *f == xlsx {
            let pa = xlsx_parts(&a.join(f), &scratch.join("xa"));
            let pb = xlsx_parts(&b.join(f), &scratch.join("xb"));
            assert_eq!(pa.keys().collect::<Vec<_>>(), pb.keys().collect::<Vec<_>>());
            for (k, v) in &pa {
                if k == Path::new("docProps/core.xml") {
                    continue;
                }
                assert!(v == &pb[k], "workbook part {} differs", k.display());
            }
        } else {
            assert!(da == db, "{} differs", f.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn live_and_generation_exports_are_the_same_and_open_in_7zip() {
    if !have("7zz") || !have("sha256sum") {
        return;
    }
    let env = Env::new();
    edge_tenant(&env, "comune-e");
    let g = env.backup("comune-e");
    let gen_id = g["id"].as_str().unwrap().to_string();

    let pass_file = env.path("pass-live.txt");
    let live = export(&env, "comune-e", "out-live", &["--passphrase-file", pass_file.to_str().unwrap()]);
    // The passphrase went to the file only: mode 0600, long enough, not on stdout or stderr.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&pass_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(live.pass.len() >= 20, "passphrase too short: {}", live.pass.len());
    assert!(!live.run.all().contains(&live.pass));

    // From the generation, with every log line on: the passphrase is printed once and logged
    // nowhere.
    let out = env.path("out-gen");
    let generation = env
        .cmd(&["export", "--tenant", "comune-e", "--generation", &gen_id, "--out", out.to_str().unwrap()])
        .env("REVERSA_LOG", "trace")
        .output()
        .unwrap();
    let generation: Run = generation.into();
    assert_eq!(generation.code, 0, "{}", generation.all());
    let gen_pass = printed_passphrase(&generation);
    assert_eq!(generation.stdout.matches(&gen_pass).count(), 1);
    assert!(!generation.stderr.contains(&gen_pass), "passphrase in the log");
    assert_ne!(gen_pass, live.pass);
    let gen_parts = printed_parts(&generation);
    assert!(generation.stdout.contains(&format!("generation {gen_id}")));

    for (parts, pass) in [(&live.parts, &live.pass), (&gen_parts, &gen_pass)] {
        assert_eq!(parts.len(), 1);
        let name = parts[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("comune-e-2") && name.ends_with("Z.zip") && name.len() == 29, "{name}");
        let r = sevenz(&["t", &format!("-p{pass}"), parts[0].to_str().unwrap()]);
        assert_eq!(r.code, 0, "7zz t failed:\n{}", r.all());
        assert!(r.stdout.contains("Everything is Ok"), "{}", r.stdout);
        // A wrong passphrase fails.
        let r = sevenz(&["t", "-pnot-the-passphrase-at-all", parts[0].to_str().unwrap()]);
        assert_ne!(r.code, 0, "7zz t accepted a wrong passphrase:\n{}", r.all());
        assert!(r.all().contains("Wrong password"), "{}", r.all());
    }
    // No temporary file is left next to the archives or in the state folder.
    for dir in ["out-live", "out-gen"] {
        let names: Vec<_> = std::fs::read_dir(env.path(dir)).unwrap().collect();
        assert_eq!(names.len(), 1, "{dir}: {names:?}");
    }
    let tmp = crate::common::files_under(&env.path("state/tmp"));
    assert!(tmp.is_empty(), "left in state/tmp: {tmp:?}");

    let a = extract(&live.parts[0], &live.pass, &env.path("x-live"));
    let b = extract(&gen_parts[0], &gen_pass, &env.path("x-gen"));
    sha256sum_check(&a);
    sha256sum_check(&b);
    assert_same_data(&a, &b, &env.path("x-cmp"), "comune-e");

    let ma = manifest(&a);
    let mb = manifest(&b);
    assert_eq!(ma["source"]["kind"], "live");
    assert_eq!(mb["source"]["kind"], "generation");
    assert_eq!(mb["source"]["id"], gen_id.as_str());
    assert_eq!(ma["tenant"], "comune-e");
    assert_eq!(ma["agent_version"], env!("CARGO_PKG_VERSION"));

    // Every table with its row count; every file with its size and SHA-256.
    let src = env.tenant_dir("comune-e");
    let db = rusqlite::Connection::open(src.join("database.sqlite")).unwrap();
    for t in ma["tables"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let n: i64 =
            db.query_row(&format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\"")), [], |r| r.get(0)).unwrap();
        assert_eq!(t["rows"].as_i64().unwrap(), n, "{name}");
    }
    let listed: HashMap<String, &serde_json::Value> =
        ma["files"].as_array().unwrap().iter().map(|f| (f["path"].as_str().unwrap().to_string(), f)).collect();
    for f in tree_files(&a) {
        let p = f.to_str().unwrap();
        if p == "manifest.json" || p == "SHA256SUMS" {
            continue;
        }
        let e = listed.get(p).unwrap_or_else(|| panic!("{p} is not in the manifest"));
        let data = std::fs::read(a.join(&f)).unwrap();
        assert_eq!(e["size"].as_u64().unwrap(), data.len() as u64, "{p}");
        use sha2::Digest;
        assert_eq!(e["sha256"].as_str().unwrap(), hex::encode(sha2::Sha256::digest(&data)), "{p}");
    }

    // Every source file is in the archive, byte for byte, under its safe name; renamed ones
    // are mapped back in the manifest.
    let renamed: HashMap<String, String> = ma["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f.get("original").is_some())
        .map(|f| {
            let o = &f["original"];
            let orig = match o.as_str() {
                Some(s) => s.to_string(),
                None => format!("b64:{}", o["b64"].as_str().unwrap()),
            };
            (orig, f["path"].as_str().unwrap().to_string())
        })
        .collect();
    let expect = [
        ("attachments/a:b.txt", "allegati/a_b.txt"),
        ("attachments/CON.txt", "allegati/_CON.txt"),
        ("attachments/fine.", "allegati/fine_"),
        ("attachments/back\\slash.txt", "allegati/back_slash.txt"),
        ("attachments/foto.jpg", "allegati/foto~2.jpg"),
        ("attachments/ctl\u{1}name.txt", "allegati/ctl_name.txt"),
        ("b64:YXR0YWNobWVudHMvY2Fm6S50eHQ=", "allegati/caf\u{fffd}.txt"),
        ("attachments/cartella:strana/dentro.txt", "allegati/cartella_strana/dentro.txt"),
        ("documents/=cmd|' calc'!A0.txt", "documenti/=cmd_' calc'!A0.txt"),
    ];
    for (orig, path) in expect {
        assert_eq!(renamed.get(orig).map(String::as_str), Some(path), "{orig}: {renamed:?}");
    }
    assert_eq!(std::fs::read(a.join("allegati/Foto.JPG")).unwrap(), b"upper".to_vec());
    assert_eq!(std::fs::read(a.join("allegati/foto~2.jpg")).unwrap(), b"lower".to_vec());
    assert_eq!(
        std::fs::read(a.join("allegati/certificato medico Mario Rossi.pdf")).unwrap(),
        std::fs::read(src.join("attachments/certificato medico Mario Rossi.pdf")).unwrap()
    );
    assert!(a.join("documenti/vuota").is_dir(), "empty folder lost");
    let links = ma["links"].as_array().unwrap();
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0]["target"], "certificato medico Mario Rossi.pdf");
    let mut source_files = 0;
    walk_files(&src.join("attachments"), &mut source_files);
    walk_files(&src.join("documents"), &mut source_files);
    let exported =
        ma["files"].as_array().unwrap().iter().filter(|f| f["kind"] == "allegato" || f["kind"] == "documento").count();
    assert_eq!(exported, source_files);
}

fn walk_files(dir: &Path, n: &mut usize) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk_files(&e.path(), n);
        } else if ft.is_file() {
            *n += 1;
        }
    }
}

#[test]
fn without_the_passphrase_nothing_of_the_tenant_is_readable() {
    if !have("7zz") {
        return;
    }
    let env = Env::new();
    edge_tenant(&env, "comune-h");
    let e = export(&env, "comune-h", "out", &[]);
    let archive = &e.parts[0];

    let r = sevenz(&["l", "-slt", archive.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
    let paths: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Path = "))
        .skip(1) // the archive itself
        .collect();
    assert_eq!(paths, ["LEGGIMI.txt", "README.txt", "contenuto.zip"]);
    assert!(r.stdout.contains("AES-256"), "{}", r.stdout);

    let bytes = std::fs::read(archive).unwrap();
    let needles: &[&str] = &[
        "certificato medico",
        "Mario Rossi",
        "cittadini",
        "pratiche",
        "valori_limite",
        "casi limite",
        "registro_delle",
        "=SOMMA(A1:A3)",
        "scritto dal cittadino",
        "lunghissimo",
        "delibera-",
        "scansione-",
        "allegati/",
        "manifest",
        "%PDF",
    ];
    for n in needles {
        assert!(
            !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
            "{n:?} is readable in the archive without the passphrase"
        );
    }
    // The clear texts name the tenant and nothing else of it.
    let dest = env.path("clear");
    let r = sevenz(&["x", &format!("-o{}", dest.display()), archive.to_str().unwrap(), "LEGGIMI.txt", "README.txt"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for f in ["LEGGIMI.txt", "README.txt"] {
        let text = std::fs::read_to_string(dest.join(f)).unwrap();
        assert!(text.contains("comune-h"), "{f}");
        assert!(text.contains("7-Zip"), "{f}");
        for n in needles {
            assert!(!text.contains(n), "{f} mentions {n}");
        }
    }
}

/// What LibreOffice shows for a source value: (quoted as text, text).
fn expected_cell(v: &Value, bool_col: bool) -> (bool, String) {
    match v {
        Value::Null => (false, String::new()),
        Value::Integer(i) if bool_col && (*i == 0 || *i == 1) => (false, if *i == 1 { "TRUE" } else { "FALSE" }.into()),
        Value::Integer(i) if i.unsigned_abs() <= 999_999_999_999_999 => (false, i.to_string()),
        Value::Integer(i) => (true, i.to_string()),
        Value::Real(f) if f.is_nan() => (true, "NaN".into()),
        Value::Real(f) if f.is_infinite() => (true, if *f > 0.0 { "inf" } else { "-inf" }.into()),
        Value::Real(f) => (false, format!("{f:e}")),
        Value::Text(t) if t.is_empty() => (false, String::new()),
        Value::Text(t) => match parse_iso(t) {
            Some((_, kind)) => {
                let date = &t[..10];
                let time = t.get(11..).unwrap_or("");
                let hms = |s: &str| {
                    let s = s.trim_end_matches('Z');
                    if s.len() == 5 {
                        format!("{s}:00")
                    } else {
                        s[..8].to_string()
                    }
                };
                let shown = match kind {
                    DateKind::Date => date.to_string(),
                    DateKind::DateTime => format!("{date} {}", hms(time)),
                    DateKind::DateTimeFraction => format!("{date} {}", &time[..12]),
                };
                (false, shown)
            }
            // The workbook keeps CR LF (as `_x000D_` and a newline); LibreOffice makes every line
            // break in a cell a single LF.
            None => (true, clean_text(t).replace("\r\n", "\n")),
        },
        Value::Blob(_) => (true, "<blob>".into()),
    }
}

/// The source table's rows, in the export's order (rowid, or the primary key).
fn source_rows(db: &rusqlite::Connection, table: &str) -> Vec<Vec<Value>> {
    let q = format!("\"{}\"", table.replace('"', "\"\""));
    let mut st = db
        .prepare(&format!("SELECT * FROM {q} ORDER BY rowid"))
        .or_else(|_| db.prepare(&format!("SELECT * FROM {q} ORDER BY 1, 2")))
        .unwrap();
    let n = st.column_count();
    // Text that is not UTF-8 reads as the export shows it: with U+FFFD.
    st.query_map([], |r| {
        (0..n)
            .map(|i| {
                use rusqlite::types::ValueRef;
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Integer(n),
                    ValueRef::Real(f) => Value::Real(f),
                    ValueRef::Text(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

#[test]
fn libreoffice_reads_the_source_values_from_the_workbook() {
    if !have("7zz") || !have("soffice") {
        return;
    }
    let env = Env::new();
    edge_tenant(&env, "comune-l");
    let e = export(&env, "comune-l", "out", &[]);
    let tree = extract(&e.parts[0], &e.pass, &env.path("x"));
    let m = manifest(&tree);
    let sheets = libreoffice(&tree.join("dati/comune-l.xlsx"), &env.path("lo"));
    let db = rusqlite::Connection::open(env.tenant_dir("comune-l").join("database.sqlite")).unwrap();

    // The index: one row per sheet, with its table, columns and row count.
    let index = &sheets["Indice"];
    assert_eq!(index[0], ["Foglio", "Tabella", "Colonne", "Righe", "Parte"].map(|s| (true, s.to_string())).to_vec());
    let tables = m["tables"].as_array().unwrap();
    assert_eq!(index.len() - 1, tables.len());
    for (row, t) in index[1..].iter().zip(tables) {
        assert_eq!(row[0].1, t["sheets"][0].as_str().unwrap());
        assert_eq!(row[1], (true, t["name"].as_str().unwrap().to_string()));
        let cols: Vec<&str> = t["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(row[2].1, cols.join(", "));
        assert_eq!(row[3], (false, t["rows"].to_string()));
        assert_eq!(row[4].1, "1 di 1");
    }

    // Sheet names: Excel's rules, unique case-insensitively, and never History.
    let names: HashMap<&str, &str> =
        tables.iter().map(|t| (t["name"].as_str().unwrap(), t["sheets"][0].as_str().unwrap())).collect();
    assert_eq!(names["History"], "History~2");
    assert_eq!(names["Indice"], "Indice~2");
    assert_eq!(names["a[b]:c*d?e/f\\g"], "a_b__c_d_e_f_g");
    assert_eq!(names["=1+2"], "=1+2");
    assert_eq!(names["registro_delle_determinazioni_dirigenziali_2024"], "registro_delle_determinazioni_d");
    assert_eq!(names["registro_delle_determinazioni_dirigenziali_2025"], "registro_delle_determinazioni~2");
    let mut lower: Vec<String> = names.values().map(|s| s.to_lowercase()).collect();
    lower.sort();
    lower.dedup();
    assert_eq!(lower.len(), names.len(), "sheet names clash: {names:?}");
    for s in names.values() {
        assert!(s.chars().map(char::len_utf16).sum::<usize>() <= 31, "{s}");
        assert!(!s.contains(['[', ']', ':', '*', '?', '/', '\\']), "{s}");
        assert_ne!(s.to_lowercase(), "history");
    }

    // Every table: header, then the source rows, typed. Formula-looking text is verbatim (a
    // formula would have been evaluated by LibreOffice: "=1+1" would read 2).
    let mut checked = 0;
    for t in tables {
        let table = t["name"].as_str().unwrap();
        let sheet = &sheets[t["sheets"][0].as_str().unwrap()];
        let cols: Vec<String> =
            t["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
        assert_eq!(sheet[0], cols.iter().map(|c| (true, c.clone())).collect::<Vec<_>>(), "{table}: header");
        let rows = source_rows(&db, table);
        // A row of NULLs is an empty row in a sheet; LibreOffice leaves empty rows at the end
        // of a sheet out of its CSV.
        let trailing_empty = rows.iter().rev().take_while(|r| r.iter().all(|v| *v == Value::Null)).count();
        assert_eq!(sheet.len() - 1, rows.len() - trailing_empty, "{table}: row count");
        let bools: Vec<bool> = cols.iter().map(|c| table == "casi limite" && c == "attivo").collect();
        for (i, (got, want)) in sheet[1..].iter().zip(&rows).enumerate() {
            for (c, v) in want.iter().enumerate() {
                let (wq, wt) = expected_cell(v, bools[c]);
                let (gq, gt) = &got[c];
                let at = format!("{table} row {} column {}", i + 1, cols[c]);
                match v {
                    Value::Real(f) if f.is_finite() => {
                        assert!(!gq, "{at}: a number came out as text");
                        let g: f64 = gt.parse().unwrap_or_else(|_| panic!("{at}: {gt}"));
                        let tol = f.abs() * 1e-13;
                        assert!((g - f).abs() <= tol, "{at}: {g} is not {f}");
                    }
                    Value::Blob(b) => {
                        assert!(*gq, "{at}");
                        assert!(gt.starts_with("dati/blob/"), "{at}: {gt}");
                        assert_eq!(&std::fs::read(tree.join(gt)).unwrap(), b, "{at}");
                    }
                    Value::Text(s) if s.chars().count() > 32_767 => {
                        let (prefix, pointer) = gt
                            .split_once(" … [testo completo in ")
                            .unwrap_or_else(|| panic!("{at}: not cut with a pointer"));
                        assert!(s.starts_with(prefix), "{at}");
                        let path = pointer.strip_suffix(']').unwrap();
                        assert!(path.starts_with("dati/celle-lunghe/"), "{at}: {path}");
                        assert_eq!(&std::fs::read_to_string(tree.join(path)).unwrap(), s, "{at}");
                    }
                    _ => assert_eq!((gq, gt), (&wq, &wt), "{at}"),
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 4_000, "only {checked} cells checked");

    // The edge rows, spelled out.
    let edge = &sheets[names["casi limite"]];
    let cell = |row: usize, col: usize| edge[row][col].clone();
    assert_eq!(cell(1, 3), (true, "2024-02-30".into()), "invalid date stays text");
    assert_eq!(cell(2, 3), (false, "2024-02-29 13:45:30".into()), "timestamp");
    assert_eq!(cell(3, 3), (false, "2024-01-31 10:00:00.250".into()));
    assert_eq!(cell(4, 3), (true, "2024-01-31T10:00:00+02:00".into()));
    assert_eq!(cell(6, 3), (false, "2024-01-31".into()), "date");
    assert_eq!(cell(3, 1), (true, "=1+1".into()), "formula-looking text");
    assert_eq!(cell(4, 1), (true, "+39 050 123".into()));
    assert_eq!(cell(5, 1), (true, "-5 gradi".into()));
    assert_eq!(cell(6, 1), (true, "@SOMMA(A1)".into()));
    assert_eq!(cell(2, 1), (true, "a␁b␇c␟d\u{fffd}".into()), "control characters");
    assert_eq!(cell(9, 1), (true, "_x0041_ non è A".into()));
    assert_eq!(cell(10, 1), (true, "A\u{fffd}B".into()));
    assert_eq!(cell(1, 2), (false, "TRUE".into()));
    assert_eq!(cell(2, 2), (false, "FALSE".into()));
    assert_eq!(cell(6, 2), (false, "2".into()), "not a boolean");
    assert_eq!(cell(2, 4), (true, "inf".into()));
    assert_eq!(cell(3, 4), (true, "-inf".into()));
    assert_eq!(cell(1, 5), (true, "1234567890123456789".into()), "too many digits");
    assert_eq!(cell(3, 5), (false, "-999999999999999".into()));
    assert_eq!(cell(1, 6), (true, "dati/blob/casi limite/1-dati.pdf".into()));
    assert_eq!(cell(4, 6), (true, "dati/blob/casi limite/4-dati.bin".into()));
    let formula_sheet = &sheets[names["=1+2"]];
    assert_eq!(formula_sheet[1][0], (true, "=1+2".into()));

    // The CSV files hold the database's values exactly.
    for t in tables {
        let table = t["name"].as_str().unwrap();
        let text = std::fs::read_to_string(tree.join(t["csv"].as_str().unwrap())).unwrap();
        assert!(text.ends_with("\r\n"), "{table}: CSV lines end with CRLF");
        let csv = parse_csv(&text);
        let rows = source_rows(&db, table);
        assert_eq!(csv.len() - 1, rows.len(), "{table}");
        for (got, want) in csv[1..].iter().zip(&rows) {
            for (c, v) in want.iter().enumerate() {
                let (gq, gt) = &got[c];
                match v {
                    Value::Null => assert_eq!((gq, gt.as_str()), (&false, ""), "{table}"),
                    Value::Integer(i) => assert_eq!(gt, &i.to_string()),
                    Value::Real(f) if f.is_nan() => assert_eq!(gt, "NaN"),
                    Value::Real(f) => {
                        let g: f64 = gt.parse().unwrap();
                        assert_eq!(g.to_bits(), f.to_bits(), "{table}: {gt}");
                    }
                    Value::Text(s) => assert_eq!(gt, s, "{table}"),
                    Value::Blob(b) => assert_eq!(&std::fs::read(tree.join(gt)).unwrap(), b),
                }
            }
        }
    }
    let edge_csv = parse_csv(&std::fs::read_to_string(tree.join("dati/csv/casi limite.csv")).unwrap());
    assert_eq!(edge_csv[7][1], (true, String::new()), "empty text is \"\"");
    assert_eq!(edge_csv[8][1], (true, "riga\r\nnuova, \"citata\"".into()));

    // Bold, frozen header with an autofilter; widths set.
    let parts = xlsx_parts(&tree.join("dati/comune-l.xlsx"), &env.path("xp"));
    let styles = String::from_utf8(parts[Path::new("xl/styles.xml")].clone()).unwrap();
    assert!(styles.contains("<b/>"), "no bold font");
    let workbook = String::from_utf8(parts[Path::new("xl/workbook.xml")].clone()).unwrap();
    assert!(workbook.find("name=\"Indice\"") < workbook.find("name=\"cittadini\""));
    for (p, data) in &parts {
        let s = p.to_str().unwrap();
        if s.starts_with("xl/worksheets/sheet") && s != "xl/worksheets/sheet1.xml" {
            let xml = String::from_utf8(data.clone()).unwrap();
            assert!(xml.contains("ySplit=\"1\"") && xml.contains("state=\"frozen\""), "{s}");
            assert!(xml.contains("<autoFilter ref=\"A1:"), "{s}");
            assert!(xml.contains("<col "), "{s}: no column widths");
            assert!(!xml.contains("<f>"), "{s}: a formula was written");
        }
    }
}

#[test]
fn tables_continue_on_further_sheets() {
    if !have("7zz") || !have("soffice") {
        return;
    }
    let env = Env::new();
    let t = env.tenant_dir("piccolo");
    std::fs::create_dir_all(&t).unwrap();
    let long = "una_tabella_dal_nome_molto_lungo_davvero";
    let db = rusqlite::Connection::open(t.join("database.sqlite")).unwrap();
    db.execute_batch(&format!(
        "CREATE TABLE piccola (n INTEGER, quando TEXT);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 250)
           INSERT INTO piccola SELECT x, '2024-01-01' FROM c;
         CREATE TABLE {long} (n INTEGER);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 101)
           INSERT INTO {long} SELECT x FROM c;"
    ))
    .unwrap();
    drop(db);

    // In process, with 100 data rows per sheet instead of 1,048,575.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async {
        let cfg = reversa::config::Config::load(&env.config).unwrap();
        let agent = reversa::commands::Agent::open(cfg).await.unwrap();
        let mut opts = reversa::commands::export::ExportOptions::new(&env.path("out"));
        opts.sheet_rows = 100;
        let tenant = reversa::tenant::TenantId::parse("piccolo").unwrap();
        let mut job = reversa::jobs::Job::new(reversa::jobs::Task::Export(opts), Some(tenant), "test");
        job.recipient =
            Some(reversa::jobs::Recipient { name: "test".into(), kind: Default::default(), legal_basis: None });
        let cancel = tokio_util::sync::CancellationToken::new();
        match reversa::jobs::run(&agent, &job, &cancel, &reversa::progress::Silent).await.unwrap() {
            reversa::jobs::Report::Export(r) => r,
            other => panic!("{other:?}"),
        }
    });
    let pass = report.passphrase.as_ref().unwrap().expose().to_string();
    assert_eq!(report.tables[0].sheets, ["piccola", "piccola (2)", "piccola (3)"]);
    assert_eq!(report.tables[1].sheets, ["una_tabella_dal_nome_molto_lung", "una_tabella_dal_nome_molto_ (2)"]);
    let tree = extract(&report.parts[0], &pass, &env.path("x"));
    let sheets = libreoffice(&tree.join("dati/piccolo.xlsx"), &env.path("lo"));
    let mut n = 0;
    for (sheet, rows) in [("piccola", 100), ("piccola (2)", 100), ("piccola (3)", 50)] {
        let s = &sheets[sheet];
        assert_eq!(s.len(), rows + 1, "{sheet}");
        assert_eq!(s[0], [(true, "n".into()), (true, "quando".into())], "{sheet}: header");
        for r in &s[1..] {
            n += 1;
            assert_eq!(r[0], (false, n.to_string()), "{sheet}");
            assert_eq!(r[1], (false, "2024-01-01".into()), "{sheet}");
        }
    }
    assert_eq!(sheets["una_tabella_dal_nome_molto_ (2)"].len(), 2);
    let index: Vec<Vec<String>> =
        sheets["Indice"][1..].iter().map(|r| r.iter().map(|c| c.1.clone()).collect()).collect();
    assert_eq!(
        index,
        [
            ["piccola", "piccola", "n, quando", "100", "1 di 3"],
            ["piccola (2)", "piccola", "n, quando", "100", "2 di 3"],
            ["piccola (3)", "piccola", "n, quando", "50", "3 di 3"],
            ["una_tabella_dal_nome_molto_lung", long, "n", "100", "1 di 2"],
            ["una_tabella_dal_nome_molto_ (2)", long, "n", "1", "2 di 2"],
        ]
        .map(|r| r.map(String::from).to_vec())
        .to_vec()
    );
    // The CSV is one file whatever the sheets.
    let csv = std::fs::read_to_string(tree.join("dati/csv/piccola.csv")).unwrap();
    assert_eq!(csv.lines().count(), 251);
}

#[test]
fn a_table_of_more_than_1048575_rows_continues_on_a_second_sheet() {
    if !have("7zz") {
        return;
    }
    const ROWS: u32 = 1_048_580;
    let env = Env::new();
    let t = env.tenant_dir("grande");
    std::fs::create_dir_all(&t).unwrap();
    let db = rusqlite::Connection::open(t.join("database.sqlite")).unwrap();
    // One narrow column keeps the test quick while really crossing Excel's limit.
    db.execute_batch(&format!(
        "CREATE TABLE grande (n INTEGER);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {ROWS})
           INSERT INTO grande SELECT x FROM c;"
    ))
    .unwrap();
    drop(db);
    let e = export(&env, "grande", "out", &["--format", "xlsx"]);
    let tree = extract(&e.parts[0], &e.pass, &env.path("x"));
    assert!(!tree.join("dati/csv").exists(), "--format xlsx wrote CSV files");
    let m = manifest(&tree);
    assert_eq!(m["tables"][0]["rows"], ROWS);
    assert_eq!(m["tables"][0]["sheets"], serde_json::json!(["grande", "grande (2)"]));
    let x = env.path("xlsx");
    let r = sevenz(&["x", &format!("-o{}", x.display()), tree.join("dati/grande.xlsx").to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
    let workbook = std::fs::read_to_string(x.join("xl/workbook.xml")).unwrap();
    assert!(workbook.contains("<sheet name=\"grande\" sheetId=\"2\""), "{workbook}");
    assert!(workbook.contains("<sheet name=\"grande (2)\" sheetId=\"3\""), "{workbook}");
    let first = std::fs::read_to_string(x.join("xl/worksheets/sheet2.xml")).unwrap();
    assert!(first.contains("<dimension ref=\"A1:A1048576\"/>"));
    assert!(first.contains("<row r=\"1048576\""));
    assert!(first.contains("<v>1048575</v></c></row></sheetData>"));
    let second = std::fs::read_to_string(x.join("xl/worksheets/sheet3.xml")).unwrap();
    assert!(second.contains("<dimension ref=\"A1:A6\"/>"), "{second}");
    assert!(second.contains("<t>n</t>"), "no header on the second sheet");
    for v in 1_048_576..=ROWS {
        assert!(second.contains(&format!("<v>{v}</v>")), "{v} missing");
    }
}

#[test]
fn split_parts_join_into_the_same_archive() {
    if !have("7zz") || !have("sha256sum") {
        return;
    }
    let env = Env::new();
    edge_tenant(&env, "comune-s");
    let whole = export(&env, "comune-s", "out-whole", &[]);
    let split = export(&env, "comune-s", "out-split", &["--split-size", "64KiB"]);
    let parts = &split.parts;
    assert!(parts.len() >= 10, "{} parts", parts.len());
    // Numbered with leading zeros, so that they sort by name; each at most 64 KiB.
    let width = parts.len().to_string().len();
    for (i, p) in parts.iter().enumerate() {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(&format!("-part{:0width$}.zip", i + 1)), "{name}");
        assert!(std::fs::metadata(p).unwrap().len() <= 64 << 10);
    }
    let mut names: Vec<PathBuf> = parts.clone();
    names.sort();
    assert_eq!(&names, parts);
    let base = parts[0].file_name().unwrap().to_string_lossy().replace(&format!("-part{:0width$}.zip", 1), "");
    let note = std::fs::read_to_string(env.path(&format!("out-split/{base}-LEGGIMI.txt"))).unwrap();
    let sha = split.run.stdout.lines().find_map(|l| l.trim().strip_prefix("SHA-256 ")).unwrap().to_string();
    assert!(note.contains(&sha) && note.contains("cat ") && note.contains("copy /b"));

    // `cat` of the parts is the archive.
    let joined = env.path("joined.zip");
    let mut out = std::fs::File::create(&joined).unwrap();
    for p in parts {
        std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut out).unwrap();
    }
    drop(out);
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(std::fs::read(&joined).unwrap())), sha);
    let r = sevenz(&["t", &format!("-p{}", split.pass), joined.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
    let a = extract(&joined, &split.pass, &env.path("x-split"));
    sha256sum_check(&a);
    let b = extract(&whole.parts[0], &whole.pass, &env.path("x-whole"));
    assert_same_data(&a, &b, &env.path("x-cmp"), "comune-s");

    // 7-Zip also opens the parts as a volume set, without joining them, once named .zip.001...
    let vols = env.path("vols");
    std::fs::create_dir_all(&vols).unwrap();
    for (i, p) in parts.iter().enumerate() {
        std::fs::copy(p, vols.join(format!("{base}.zip.{:03}", i + 1))).unwrap();
    }
    let r = sevenz(&["t", &format!("-p{}", split.pass), vols.join(format!("{base}.zip.001")).to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all());
}

#[test]
fn upload_puts_the_parts_in_the_store_and_prune_removes_old_exports() {
    let env = Env::new();
    env.seed("comune-u", SMALL, 3);
    let e = export(&env, "comune-u", "out", &["--upload", "--split-size", "1MiB"]);
    assert!(e.parts.len() > 1);
    let uploaded: Vec<String> =
        e.run.stdout.lines().filter_map(|l| l.trim().strip_prefix("uploaded ")).map(String::from).collect();
    assert_eq!(uploaded.len(), e.parts.len() + 1, "parts and the joining note");
    let id = uploaded[0].split('/').nth(2).unwrap().to_string();
    for (key, part) in uploaded.iter().zip(&e.parts) {
        assert!(key.starts_with(&format!("exports/comune-u/{id}/")), "{key}");
        assert_eq!(std::fs::read(env.path("store").join(key)).unwrap(), std::fs::read(part).unwrap(), "{key}");
    }
    // No link from a dir store: links are the S3 store's.
    assert!(!e.run.stdout.contains("download:"));

    let old = env.path("store/exports/comune-u/20200101T000000Z-00000000/comune-u-20200101T000000Z.zip");
    std::fs::create_dir_all(old.parent().unwrap()).unwrap();
    std::fs::write(&old, b"an export from long ago").unwrap();
    let list = env.run(&["exports", "list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let ids: Vec<&str> = v.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["20200101T000000Z-00000000", id.as_str()]);

    let r = env.run(&["exports", "prune"]).ok();
    assert!(r.stdout.contains("1 exports removed, 1 kept"), "{}", r.stdout);
    assert!(!old.exists(), "the old export is still there");
    for key in &uploaded {
        assert!(env.path("store").join(key).exists(), "{key} was pruned");
    }
}

/// Run the binary as an unprivileged user when the tests run as root, so that file modes
/// mean something; otherwise as is.
fn run_unprivileged(env: &Env, args: &[&str]) -> Run {
    if unsafe { libc::geteuid() } != 0 {
        return env.run(args);
    }
    let st = Command::new("chown").args(["-R", "65534:65534", env.dir.path().to_str().unwrap()]).status().unwrap();
    assert!(st.success());
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin())
        .arg("--config")
        .arg(&env.config)
        .args(args)
        .args(["--recipient", "test operator"])
        .env_remove("REVERSA_MASTER_KEY");
    c.output().unwrap().into()
}

#[test]
fn bad_input_is_named_and_leaves_no_archive() {
    let env = Env::new();
    env.seed("comune-b", SMALL, 5);
    let g = env.backup("comune-b");
    let gen_id = g["id"].as_str().unwrap().to_string();
    let out = env.path("out");
    let out_s = out.to_str().unwrap().to_string();
    let pass = env.path("pass.txt");
    let pass_s = pass.to_str().unwrap().to_string();

    let nothing_left = |name: &str| {
        let left: Vec<_> =
            std::fs::read_dir(&out).map(|rd| rd.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "{name}: left in the output folder: {left:?}");
        assert!(!pass.exists(), "{name}: the passphrase file was left");
        let tmp = crate::common::files_under(&env.path("state/tmp"));
        assert!(tmp.is_empty(), "{name}: left in state/tmp: {tmp:?}");
    };
    let base = ["export", "--out", &out_s, "--passphrase-file", &pass_s];
    let cases: Vec<(&str, Vec<&str>, i32, Vec<String>)> = vec![
        ("unknown tenant", vec!["--tenant", "nobody"], 8, vec!["tenant nobody does not exist".into()]),
        (
            "unknown tenant, from a generation",
            vec!["--tenant", "nobody", "--generation", &gen_id],
            8,
            vec!["tenant nobody has no repository in the store and no key".into()],
        ),
        (
            "generation that does not exist",
            vec!["--tenant", "comune-b", "--generation", "20200101T000000Z-00000000"],
            8,
            vec!["generation 20200101T000000Z-00000000 does not exist".into()],
        ),
        ("invalid tenant id", vec!["--tenant", "../x"], 2, vec!["invalid tenant id".into()]),
        (
            "bad split size",
            vec!["--tenant", "comune-b", "--split-size", "12 parsecs"],
            2,
            vec!["--split-size 12 parsecs".into()],
        ),
        (
            "split size too small",
            vec!["--tenant", "comune-b", "--split-size", "1KiB"],
            2,
            vec!["at least 64KiB".into()],
        ),
        ("bad format", vec!["--tenant", "comune-b", "--format", "xls"], 2, vec!["unknown format \"xls\"".into()]),
    ];
    for (name, extra, code, needles) in cases {
        let mut args = base.to_vec();
        args.extend(extra);
        let r = env.run(&args);
        assert_eq!(r.code, code, "{name}: exit code:\n{}", r.all());
        for n in &needles {
            assert!(r.stderr.contains(n.as_str()), "{name}: no {n:?} in:\n{}", r.stderr);
        }
        nothing_left(name);
    }

    // An existing passphrase file is never overwritten.
    std::fs::write(&pass, "an earlier passphrase\n").unwrap();
    let mut args = base.to_vec();
    args.extend(["--tenant", "comune-b"]);
    let r = env.run(&args);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&pass).unwrap(), "an earlier passphrase\n");
    std::fs::remove_file(&pass).unwrap();
    nothing_left("existing passphrase file");

    // An output "folder" that is a file.
    let file_out = env.path("a-file");
    std::fs::write(&file_out, "x").unwrap();
    let r = env.run(&["export", "--tenant", "comune-b", "--out", file_out.join("sub").to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("a-file/sub"), "{}", r.stderr);

    // Permissions: an unreadable file, and an output folder that cannot be written. Both run
    // as an unprivileged user (root reads and writes anything).
    use std::os::unix::fs::PermissionsExt;
    let secret = env.tenant_dir("comune-b").join("attachments/riservato.pdf");
    std::fs::write(&secret, b"%PDF-1.4 riservato").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut args = base.to_vec();
    args.extend(["--tenant", "comune-b"]);
    let r = run_unprivileged(&env, &args);
    assert_eq!(r.code, 1, "unreadable file: {}", r.all());
    assert!(r.stderr.contains("attachments/riservato.pdf") && r.stderr.contains("cannot read"), "{}", r.stderr);
    nothing_left("unreadable file");
    std::fs::remove_file(&secret).unwrap();

    std::fs::create_dir_all(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
    let r = run_unprivileged(&env, &args);
    assert_eq!(r.code, 2, "read-only output folder: {}", r.all());
    assert!(r.stderr.contains(&format!("cannot write the export into {out_s}")), "{}", r.stderr);
    nothing_left("read-only output folder");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();

    // And the same command works once the input is right.
    let r = run_unprivileged(&env, &args);
    assert_eq!(r.code, 0, "{}", r.all());
    let made: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().collect();
    assert_eq!(made.len(), 1);
}

#[test]
fn a_link_out_of_the_tenant_is_a_warning_and_never_followed() {
    if !have("7zz") {
        return;
    }
    let env = Env::new();
    env.seed("comune-w", SMALL, 9);
    let outside = env.path("segreto-di-un-altro.txt");
    std::fs::write(&outside, "not this tenant's data").unwrap();
    std::os::unix::fs::symlink(&outside, env.tenant_dir("comune-w").join("attachments/fuori")).unwrap();
    let out = env.path("out");
    let r = env.run(&["export", "--tenant", "comune-w", "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 3, "warnings exit with 3:\n{}", r.all());
    assert!(r.stdout.contains("warning: ") && r.stdout.contains("fuori"), "{}", r.stdout);
    let pass = printed_passphrase(&r);
    let tree = extract(&printed_parts(&r)[0], &pass, &env.path("x"));
    let m = manifest(&tree);
    let warnings = m["warnings"].to_string();
    assert!(warnings.contains("attachments/fuori"), "{warnings}");
    // The manifest is the customer's: it names paths in the tenant, not on the server.
    assert!(!warnings.contains(env.dir.path().to_str().unwrap()), "{warnings}");
    assert!(!tree.join("allegati/fuori").exists());
    let all = tree_files(&tree);
    for f in &all {
        let data = std::fs::read(tree.join(f)).unwrap();
        assert!(!data.windows(14).any(|w| w == b"not this tenan"), "{} holds the other file's data", f.display());
    }
}
