//! Row-level incremental tables: fourteen simulated days of changes, every generation restored
//! exactly, deltas that cost about what changed, compaction, and a lost local digest cache.

use std::path::{Path, PathBuf};

use reversa::seed::{simulate_day, Day, DayChanges, Scale};

use crate::common::{differences, Env};

const TENANT: &str = "comune-delta";
const SCALE: Scale = Scale { rows: 3_000, file_bytes: 3 << 20, incompressible: 0.7 };
const DAY: Day = Day { row_fraction: 0.01, file_fraction: 0.01 };

/// 02:00 in Rome on day `n` after 2026-03-20; the days cross the switch to summer time.
fn night_of(n: u64) -> String {
    let t: jiff::Timestamp = "2026-03-20T01:00:00Z".parse().unwrap();
    (t + jiff::SignedDuration::from_hours(24 * n as i64)).to_string()
}

fn backup_on(env: &Env, day: u64) -> serde_json::Value {
    let r: crate::common::Run = env
        .cmd(&["backup", "--tenant", TENANT, "--json"])
        .env(reversa::NOW_ENV, night_of(day))
        .output()
        .unwrap()
        .into();
    let r = r.ok();
    serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()[0].clone()
}

fn copy_tree(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap().success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

fn restore_generation(env: &Env, id: &str, day: u64) -> PathBuf {
    let to = env.path(&format!("restored-day-{day}"));
    env.run(&["restore", "--tenant", TENANT, "--generation", id, "--to", to.to_str().unwrap()]).ok();
    to
}

/// Fourteen days with a chain limit of 5, so the run writes deltas, compacts twice, and restores
/// every day exactly, whatever its place in its chain.
#[test]
fn fourteen_days_restore_exactly_and_store_about_what_changed() {
    let env = Env::new();
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{cfg}\n[backup]\nmax_delta_chain = 5\n")).unwrap();
    env.seed(TENANT, SCALE, 11);
    let source = env.tenant_dir(TENANT);

    let mut days: Vec<(String, PathBuf, DayChanges, serde_json::Value)> = Vec::new();
    for day in 0..14u64 {
        let changes = if day == 0 {
            DayChanges::default()
        } else {
            simulate_day(&env.path("source"), TENANT, DAY, 11, day).unwrap()
        };
        let m = backup_on(&env, day);
        let copy = env.path(&format!("day-{day}"));
        copy_tree(&source, &copy);
        days.push((m["id"].as_str().unwrap().to_string(), copy, changes, m));
    }

    let first_tables = days[0].3["summary"]["table_bytes"].as_u64().unwrap();
    for (day, (id, _, changes, m)) in days.iter().enumerate().skip(1) {
        let s = &m["summary"];
        // The backup saw exactly the rows the day changed.
        assert_eq!(s["rows_inserted"].as_u64(), Some(changes.inserted), "day {day}: {s}");
        assert_eq!(s["rows_updated"].as_u64(), Some(changes.updated), "day {day}: {s}");
        assert_eq!(s["rows_deleted"].as_u64(), Some(changes.deleted), "day {day}: {s}");
        let added = s["bytes_added"].as_u64().unwrap();
        // A base and five deltas, then a new base: days 6 and 12 compact; the others store about
        // what changed.
        if day % 6 != 0 {
            assert!(
                added < changes.compressed * 2 + (96 << 10),
                "day {day} ({id}) added {added} bytes for {} bytes of compressed changes",
                changes.compressed
            );
        } else {
            assert!(added > first_tables / 4, "day {day} should write a new base, added only {added} bytes");
        }
    }

    // Every generation restores to its own day, exactly.
    for (day, (id, copy, _, _)) in days.iter().enumerate() {
        let restored = restore_generation(&env, id, day as u64);
        assert_eq!(differences(copy, &restored), Vec::<String>::new(), "day {day} ({id})");
        assert_rowids_equal(copy, &restored);
        std::fs::remove_dir_all(&restored).unwrap();
    }
    env.run(&["check", "--tenant", TENANT, "--read-data"]).ok();

    // Keep four days: days 10 and 11 are deltas whose base (day 6) is forgotten. Prune must keep
    // what they reference, and they still restore exactly.
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!("{cfg}\n[retention]\nkeep_daily = 4\nallow_short_retention = true\n\n[prune]\ngrace_hours = 0\n"),
    )
    .unwrap();
    for verb in ["forget", "prune"] {
        let r: crate::common::Run =
            env.cmd(&[verb, "--tenant", TENANT]).env(reversa::NOW_ENV, night_of(14)).output().unwrap().into();
        r.ok();
    }
    let listing = env.run(&["generations", "--tenant", TENANT, "--json"]).ok();
    let left: Vec<String> = serde_json::from_str::<serde_json::Value>(&listing.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect();
    let kept: Vec<String> = days[10..].iter().map(|d| d.0.clone()).collect();
    assert_eq!(left, kept, "forget keeps the last four days");
    for (day, (id, copy, _, _)) in days.iter().enumerate().skip(10) {
        let restored = restore_generation(&env, id, day as u64);
        assert_eq!(differences(copy, &restored), Vec::<String>::new(), "day {day} after prune");
        std::fs::remove_dir_all(&restored).unwrap();
    }
    env.run(&["check", "--tenant", TENANT, "--read-data"]).ok();
}

/// Restore keeps rowids too (compare_tenant compares values); check the keyed tables' rowids.
fn assert_rowids_equal(a: &Path, b: &Path) {
    let db = rusqlite::Connection::open(a.join("database.sqlite")).unwrap();
    db.execute(&format!("ATTACH DATABASE '{}' AS r", b.join("database.sqlite").display()), []).unwrap();
    for t in ["pratiche", "log_eventi", "cittadini", "ricerca_atti"] {
        let q = format!("SELECT count(*) FROM (SELECT rowid, * FROM main.{t} EXCEPT SELECT rowid, * FROM r.{t})");
        let n: i64 = db.query_row(&q, [], |r| r.get(0)).unwrap();
        assert_eq!(n, 0, "table {t}: rowids differ");
    }
}

/// Without the local digest maps (a new agent host, a wiped state folder's cache), the next backup
/// rebuilds them from the store and still writes only a delta.
#[test]
fn a_lost_digest_cache_is_rebuilt_from_the_store() {
    let env = Env::new();
    env.seed(TENANT, SCALE, 12);
    backup_on(&env, 0);
    simulate_day(&env.path("source"), TENANT, DAY, 12, 1).unwrap();
    backup_on(&env, 1);
    let changes = simulate_day(&env.path("source"), TENANT, DAY, 12, 2).unwrap();
    let cache = env.path(&format!("state/cache/{TENANT}.rows"));
    assert!(cache.read_dir().unwrap().count() > 0, "the digest maps are cached");
    // Damage one copy and remove the others: neither may be trusted.
    let mut maps: Vec<PathBuf> = cache.read_dir().unwrap().map(|e| e.unwrap().path()).collect();
    maps.sort();
    let mut bytes = std::fs::read(&maps[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&maps[0], bytes).unwrap();
    for m in &maps[1..] {
        std::fs::remove_file(m).unwrap();
    }
    let m = backup_on(&env, 2);
    let s = &m["summary"];
    assert_eq!(s["rows_updated"].as_u64(), Some(changes.updated), "{s}");
    assert_eq!(s["rows_inserted"].as_u64(), Some(changes.inserted), "{s}");
    assert!(s["bytes_added"].as_u64().unwrap() < changes.compressed * 2 + (96 << 10), "{s}");
    let restored = env.restore(TENANT, None);
    assert_eq!(differences(&env.tenant_dir(TENANT), &restored), Vec::<String>::new());
}

/// Rows larger than the batches the row reader hands between its two threads (BLOBs of 0.5 to
/// 3 MiB, where a batch is 256 KiB) are read, digested and cut exactly, in a base and in a
/// delta, and the rows around them too.
#[test]
fn large_rows_go_through_a_base_and_a_delta_exactly() {
    let env = Env::new();
    env.seed(TENANT, SCALE, 13);
    let db_path = env.tenant_dir(TENANT).join("database.sqlite");
    let db = rusqlite::Connection::open(&db_path).unwrap();
    db.execute_batch(
        "CREATE TABLE scansioni (id INTEGER PRIMARY KEY, nota TEXT, pagina BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
         INSERT INTO scansioni SELECT i, 'pagina ' || i,
             CASE WHEN i % 5 = 0 THEN randomblob((1 + i % 3) << 20) ELSE randomblob(100) END FROM n;
         UPDATE scansioni SET pagina = randomblob(512 * 1024 + 1) WHERE id = 7;",
    )
    .unwrap();
    backup_on(&env, 0);
    db.execute_batch(
        "UPDATE scansioni SET pagina = randomblob(3 << 20) WHERE id IN (10, 21);
         DELETE FROM scansioni WHERE id = 15;
         INSERT INTO scansioni VALUES (41, 'nuova', randomblob(2 << 20));",
    )
    .unwrap();
    drop(db);
    let m = backup_on(&env, 1);
    let s = &m["summary"];
    assert_eq!(
        (s["rows_updated"].as_u64(), s["rows_inserted"].as_u64(), s["rows_deleted"].as_u64()),
        (Some(2), Some(1), Some(1)),
        "{s}"
    );
    // A delta: about the 8 MiB of changed rows (random, so incompressible), not the whole table
    // (about 18 MB).
    let added = s["bytes_added"].as_u64().unwrap();
    assert!(added < (9 << 20), "{added} bytes added for 8 MiB of changed rows: {s}");
    let restored = env.restore(TENANT, None);
    assert_eq!(differences(&env.tenant_dir(TENANT), &restored), Vec::<String>::new());
}

/// An export of a generation at the end of a delta chain holds that day's rows.
#[test]
fn an_export_of_a_delta_generation_has_that_days_rows() {
    let env = Env::new();
    env.seed(TENANT, SCALE, 13);
    backup_on(&env, 0);
    simulate_day(&env.path("source"), TENANT, DAY, 13, 1).unwrap();
    let m = backup_on(&env, 1);
    let id = m["id"].as_str().unwrap();
    let out = env.path("export-out");
    let pass = env.path("pass.txt");
    env.run(&[
        "export",
        "--tenant",
        TENANT,
        "--generation",
        id,
        "--out",
        out.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--format",
        "csv",
    ])
    .ok();
    let zip =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "zip"));
    let pw = std::fs::read_to_string(&pass).unwrap();
    let tree = crate::export::extract(&zip.expect("an archive"), pw.trim(), &env.path("x"));
    let csv = std::fs::read_to_string(tree.join("dati/csv/pratiche.csv")).unwrap();
    let db = rusqlite::Connection::open(env.tenant_dir(TENANT).join("database.sqlite")).unwrap();
    let n: i64 = db.query_row("SELECT count(*) FROM pratiche", [], |r| r.get(0)).unwrap();
    let newest: String = db
        .query_row("SELECT descrizione FROM pratiche WHERE descrizione LIKE '%giorno 1)' LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(csv.lines().count() as i64, n + 1, "header and one line per row");
    assert!(csv.contains(&newest), "the day's update is in the export");
}
