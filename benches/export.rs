//! Export benchmark, three figures (issue 4):
//!
//! 1. rows/s of the export's XLSX path against bare rust_xlsxwriter in constant-memory mode,
//!    writing the same rows of 10 values in the same run (target: at least 0.8x). Two XLSX
//!    paths are timed: the sheet writer alone (`XlsxBook`: typing, text cleaning, widths, sheet
//!    rules) and the whole exporter without a source (canonical row decoding, side files, the
//!    inner ZIP);
//! 2. peak RSS of the `reversa export` process on a table of 5,000,000 rows (target: at most
//!    128 MiB), read by GNU time (see benches/measure.rs);
//! 3. end-to-end `reversa export` MB/s on the bench tenant of `benches/e2e.rs` (about 1 GB).
//!
//! Run: `cargo bench --bench export`. Environment:
//! - `BENCH_DIR`: where data goes (default `target/bench`);
//! - `BENCH_ROWS` (default 1000000), `BENCH_RSS_ROWS` (default 5000000), `BENCH_E2E_MB`
//!   (default 1000; 0 skips the end-to-end run).
//!
//! In a debug build (`cargo test --bench export`) use small counts; the ratios are only
//! meaningful in release. Figures are printed, never asserted.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
#[path = "measure.rs"]
mod measure;

use measure::measure;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use reversa::export::xlsx::{XValue, XlsxBook, SHEET_ROWS_MAX};
use reversa::export::{Counters, Event, Exporter, Formats, Settings, SourceInfo};
use reversa::generation::rows;
use reversa::seed::{seed_tenant, Scale};
use rusqlite::types::ValueRef;

const COLS: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name} is a number"))).unwrap_or(default)
}

/// The values of row `i`: integers, reals, short texts and ISO dates, as a town council's
/// table holds them.
struct Row {
    id: i64,
    amount: f64,
    kind: &'static str,
    date: String,
    year: i64,
    note: String,
    rate: f64,
    office: &'static str,
    count: i64,
    code: String,
}

const KINDS: [&str; 4] = ["TARI", "residenza", "SUAP", "accesso agli atti"];
const OFFICES: [&str; 3] = ["anagrafe", "tributi", "protocollo"];

fn row(i: usize) -> Row {
    Row {
        id: i as i64 + 1,
        amount: (i % 100_000) as f64 / 100.0,
        kind: KINDS[i % 4],
        date: format!("2025-{:02}-{:02}", i % 12 + 1, i % 28 + 1),
        year: 2020 + (i % 6) as i64,
        note: format!("pratica numero {i} del comune"),
        rate: (i % 977) as f64 / 977.0,
        office: OFFICES[i % 3],
        count: (i % 31) as i64,
        code: format!("CF{i:012}"),
    }
}

fn bare(n: usize, dir: &Path) -> f64 {
    let started = Instant::now();
    let mut wb = rust_xlsxwriter::Workbook::new();
    wb.set_tempdir(dir).unwrap();
    let mut sheet_row = SHEET_ROWS_MAX;
    for i in 0..n {
        if sheet_row == SHEET_ROWS_MAX {
            let ws = wb.add_worksheet_with_constant_memory().unwrap();
            for c in 0..COLS {
                ws.write_string(0, c as u16, format!("col{c}")).unwrap();
            }
            sheet_row = 0;
        }
        sheet_row += 1;
        let r = row(i);
        let last = wb.worksheets().len() - 1;
        let ws = wb.worksheet_from_index(last).unwrap();
        let y = sheet_row;
        ws.write_number(y, 0, r.id as f64).unwrap();
        ws.write_number(y, 1, r.amount).unwrap();
        ws.write_string(y, 2, r.kind).unwrap();
        ws.write_string(y, 3, r.date.as_str()).unwrap();
        ws.write_number(y, 4, r.year as f64).unwrap();
        ws.write_string(y, 5, r.note.as_str()).unwrap();
        ws.write_number(y, 6, r.rate).unwrap();
        ws.write_string(y, 7, r.office).unwrap();
        ws.write_number(y, 8, r.count as f64).unwrap();
        ws.write_string(y, 9, r.code.as_str()).unwrap();
    }
    wb.save(dir.join("bare.xlsx")).unwrap();
    started.elapsed().as_secs_f64()
}

fn book(n: usize, dir: &Path) -> f64 {
    let started = Instant::now();
    let mut b = XlsxBook::new(dir, SHEET_ROWS_MAX).unwrap();
    let cols: Vec<String> = (0..COLS).map(|c| format!("col{c}")).collect();
    b.begin_table("bench", &cols, vec![false; COLS]).unwrap();
    for i in 0..n {
        let r = row(i);
        b.write_row(&[
            XValue::Integer(r.id),
            XValue::Real(r.amount),
            XValue::Text(Cow::Borrowed(r.kind)),
            XValue::Text(Cow::Borrowed(&r.date)),
            XValue::Integer(r.year),
            XValue::Text(Cow::Borrowed(&r.note)),
            XValue::Real(r.rate),
            XValue::Text(Cow::Borrowed(r.office)),
            XValue::Integer(r.count),
            XValue::Text(Cow::Borrowed(&r.code)),
        ])
        .unwrap();
    }
    b.end_table().unwrap();
    b.save(&dir.join("book.xlsx")).unwrap();
    started.elapsed().as_secs_f64()
}

/// The whole writer side of an export (no source): rows in the canonical encoding, decoded,
/// typed, written to the workbook, which goes into the inner ZIP with the manifest.
fn exporter(n: usize, dir: &Path) -> f64 {
    let work = dir.join("exporter");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // Encode first: the timed part is what the exporter does with rows it is sent.
    let mut pieces = Vec::new();
    let mut buf = Vec::new();
    for i in 0..n {
        let r = row(i);
        for v in [
            ValueRef::Integer(r.id),
            ValueRef::Real(r.amount),
            ValueRef::Text(r.kind.as_bytes()),
            ValueRef::Text(r.date.as_bytes()),
            ValueRef::Integer(r.year),
            ValueRef::Text(r.note.as_bytes()),
            ValueRef::Real(r.rate),
            ValueRef::Text(r.office.as_bytes()),
            ValueRef::Integer(r.count),
            ValueRef::Text(r.code.as_bytes()),
        ] {
            rows::encode(v, &mut buf);
        }
        if buf.len() >= 1 << 20 {
            pieces.push(std::mem::take(&mut buf));
        }
    }
    pieces.push(buf);
    let started = Instant::now();
    let settings = Settings {
        tenant: "bench".into(),
        work: work.clone(),
        formats: Formats { xlsx: true, csv: false },
        sheet_rows: SHEET_ROWS_MAX,
        created_ns: 1_700_000_000_000_000_000,
        extraordinary: None,
        attachments: Vec::new(),
    };
    let mut ex = Exporter::new(settings, Arc::new(Counters::default())).unwrap();
    ex.apply(Event::Table {
        name: "bench".into(),
        columns: (0..COLS).map(|c| format!("col{c}")).collect(),
        rowid: false,
        rows: Some(n as u64),
    })
    .unwrap();
    for p in pieces {
        ex.apply(Event::Rows(p)).unwrap();
    }
    ex.apply(Event::End).unwrap();
    ex.finish(&SourceInfo::Live { time: "2026-01-01T00:00:00Z".into() }, "2026-01-01T00:00:00Z", &[]).unwrap();
    started.elapsed().as_secs_f64()
}

/// A configuration whose source root is `source` and whose store and state are in `run`.
fn agent(run: &Path, source: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(run);
    std::fs::create_dir_all(run).unwrap();
    let config = run.join("reversa.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"sqlite\"\nroot = \"{}\"\n[store]\nkind = \"dir\"\npath = \"store\"\n[keys]\nmaster_key_file = \"master.key\"\n[state]\ndir = \"state\"\n",
            std::path::absolute(source).unwrap().display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_reversa");
    let st = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .args(["init", "--generate-master-key", run.join("master.key").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    config
}

fn export_cmd(config: &Path, tenant: &str, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reversa"));
    c.arg("--config")
        .arg(config)
        .args(["export", "--tenant", tenant, "--out", out.to_str().unwrap(), "--recipient", "bench"])
        .arg("--passphrase-file")
        .arg(out.with_extension("pass"))
        .stdout(std::process::Stdio::null());
    let _ = std::fs::remove_dir_all(out);
    let _ = std::fs::remove_file(out.with_extension("pass"));
    c
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(std::env::var("BENCH_DIR").unwrap_or_else(|_| "target/bench".into()));
    std::fs::create_dir_all(&root).unwrap();
    let n = env_usize("BENCH_ROWS", 1_000_000);
    let rss_rows = env_usize("BENCH_RSS_ROWS", 5_000_000);
    let e2e_mb = env_usize("BENCH_E2E_MB", 1000) as u64;
    let profile = if cfg!(debug_assertions) {
        "debug build: ratios are not meaningful, run `cargo bench --bench export`"
    } else {
        "optimized build"
    };
    println!("export benchmark ({profile})");

    // 1. Rows per second, same rows, same run.
    let tmp = root.join("export-rows");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let t_bare = bare(n, &tmp);
    let t_book = book(n, &tmp);
    let t_ex = exporter(n, &tmp);
    let rate = |t: f64| n as f64 / t;
    println!("\n== {n} rows x {COLS} values");
    println!("bare rust_xlsxwriter (constant memory) {:>10.0} rows/s  {:>7.2} s", rate(t_bare), t_bare);
    println!(
        "export sheet writer (XlsxBook)         {:>10.0} rows/s  {:>7.2} s  ratio {:.2} (target >= 0.8)",
        rate(t_book),
        t_book,
        t_bare / t_book
    );
    println!(
        "exporter (decode, workbook, inner ZIP) {:>10.0} rows/s  {:>7.2} s  ratio {:.2}",
        rate(t_ex),
        t_ex,
        t_bare / t_ex
    );
    let _ = std::fs::remove_dir_all(&tmp);

    // 2. Peak RSS of a whole export of a table of many rows.
    if rss_rows > 0 {
        let src = root.join(format!("export-rss-{rss_rows}"));
        let t = src.join("righe");
        if !t.join("database.sqlite").exists() {
            std::fs::create_dir_all(&t).unwrap();
            let db = rusqlite::Connection::open(t.join("database.sqlite")).unwrap();
            db.execute_batch(&format!(
                "CREATE TABLE righe (id INTEGER PRIMARY KEY, importo REAL, tipo TEXT, data TEXT,
                    anno INTEGER, nota TEXT, tasso REAL, ufficio TEXT, numero INTEGER, codice TEXT);
                 WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {last})
                 INSERT INTO righe SELECT i + 1, (i % 100000) / 100.0,
                    CASE i % 4 WHEN 0 THEN 'TARI' WHEN 1 THEN 'residenza' WHEN 2 THEN 'SUAP' ELSE 'accesso agli atti' END,
                    printf('2025-%02d-%02d', i % 12 + 1, i % 28 + 1), 2020 + i % 6,
                    'pratica numero ' || i || ' del comune', (i % 977) / 977.0,
                    CASE i % 3 WHEN 0 THEN 'anagrafe' WHEN 1 THEN 'tributi' ELSE 'protocollo' END,
                    i % 31, printf('CF%012d', i) FROM c;",
                last = rss_rows - 1
            ))
            .unwrap();
        }
        let db_mb = std::fs::metadata(t.join("database.sqlite")).unwrap().len() as f64 / 1e6;
        let run = root.join("export-rss-run");
        let config = agent(&run, &src);
        let out = run.join("out");
        let m = measure(&mut export_cmd(&config, "righe", &out));
        println!(
            "\n== export of one table of {rss_rows} rows x {COLS} columns ({db_mb:.0} MB of SQLite), xlsx and csv"
        );
        println!(
            "reversa export  {:>7.2} s  {:>10.0} rows/s  peak RSS {:>6.1} MiB (target <= 128)",
            m.secs,
            rss_rows as f64 / m.secs,
            m.max_rss_mib
        );
        let _ = std::fs::remove_dir_all(&run);
    }

    // 3. End to end on the e2e bench tenant.
    if e2e_mb > 0 {
        let dir = root.join(format!("source-{e2e_mb}"));
        let tenant = dir.join("bench");
        if !tenant.join("database.sqlite").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            let rows = (e2e_mb as usize * 1_000_000 * 3 / 10) / 1_050;
            let scale = Scale { rows, file_bytes: e2e_mb * 1_000_000 * 7 / 10, incompressible: 0.9 };
            seed_tenant(&dir, "bench", scale, 42).expect("generate the bench tenant");
        }
        let bytes = reversa::commands::demo::du(&tenant);
        let run = root.join("export-e2e-run");
        let config = agent(&run, &dir);
        let out = run.join("out");
        let m = measure(&mut export_cmd(&config, "bench", &out));
        let archive = reversa::commands::demo::du(&out);
        println!("\n== export of the bench tenant ({:.0} MB: SQLite and files)", bytes as f64 / 1e6);
        println!(
            "reversa export  {:>7.1} MB/s  {:>7.2} s  peak RSS {:>6.1} MiB  archive {:.0} MB",
            bytes as f64 / 1e6 / m.secs,
            m.secs,
            m.max_rss_mib,
            archive as f64 / 1e6
        );
        let _ = std::fs::remove_dir_all(&run);
    }
}
