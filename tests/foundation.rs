//! Issue 2: encrypted generations on the embedded default, and exact restore.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{differences, first_digest_map_blob, first_file_blob, run_job, Env, FaultyPuts, PutAction, SMALL};

/// A tenant with every edge case of the seed, plus links inside and outside the tenant.
fn edge_tenant(env: &Env, tenant: &str) {
    env.seed(tenant, SMALL, 11);
    let t = env.tenant_dir(tenant);
    std::os::unix::fs::symlink("../documents/=cmd|' calc'!A0.txt", t.join("attachments/link-inside")).unwrap();
    let outside = env.path("outside-secret.txt");
    std::fs::write(&outside, "not this tenant's data").unwrap();
    std::os::unix::fs::symlink(&outside, t.join("attachments/link-outside-absolute")).unwrap();
    std::os::unix::fs::symlink("../../../outside-secret.txt", t.join("attachments/link-outside-relative")).unwrap();
    std::os::unix::fs::symlink("../../", t.join("documents/link-to-root")).unwrap();
}

#[test]
fn round_trip_is_exact() {
    let env = Env::new();
    edge_tenant(&env, "comune-a");
    let m = env.backup("comune-a");
    let warnings = m["warnings"].to_string();
    for link in ["link-outside-absolute", "link-outside-relative", "link-to-root"] {
        assert!(warnings.contains(link), "no warning names {link}: {warnings}");
    }
    let to = env.restore("comune-a", None);

    // Links that leave the tenant never appear; the rest of the tree is identical.
    let src = env.tenant_dir("comune-a");
    for link in ["attachments/link-outside-absolute", "attachments/link-outside-relative", "documents/link-to-root"] {
        assert!(std::fs::symlink_metadata(to.join(link)).is_err(), "{link} was restored");
        std::fs::remove_file(src.join(link)).unwrap();
    }
    assert_eq!(differences(&src, &to), Vec::<String>::new());
    assert_eq!(
        std::fs::read_link(to.join("attachments/link-inside")).unwrap(),
        Path::new("../documents/=cmd|' calc'!A0.txt")
    );

    // Independent spot checks with plain SQLite.
    let db = rusqlite::Connection::open(to.join("database.sqlite")).unwrap();
    let (max, neg_zero, inf): (f64, f64, f64) = db
        .query_row(
            "SELECT (SELECT valore FROM valori_limite WHERE etichetta='massimo'), \
                    (SELECT valore FROM valori_limite WHERE etichetta='subnormale'), \
                    (SELECT valore FROM valori_limite WHERE etichetta='meno infinito')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((max, neg_zero, inf), (f64::MAX, 5e-324, f64::NEG_INFINITY));
    let uv: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(uv, 7);
    let empty: i64 = db.query_row("SELECT count(*) FROM sospesi", [], |r| r.get(0)).unwrap();
    assert_eq!(empty, 0);
    let dups: i64 = db.query_row("SELECT count(*) FROM log_eventi WHERE cosa = 'duplicato'", [], |r| r.get(0)).unwrap();
    assert_eq!(dups, 2);
    let typ: String =
        db.query_row("SELECT typeof(firma) FROM pratiche WHERE firma IS NOT NULL LIMIT 1", [], |r| r.get(0)).unwrap();
    assert_eq!(typ, "blob");
    // AUTOINCREMENT goes on from where the source was.
    let seq_src: i64 = rusqlite::Connection::open(src.join("database.sqlite"))
        .unwrap()
        .query_row("SELECT seq FROM sqlite_sequence WHERE name = 'cittadini'", [], |r| r.get(0))
        .unwrap();
    let seq: i64 = db.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'cittadini'", [], |r| r.get(0)).unwrap();
    assert_eq!(seq, seq_src);
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    // Full-text search answers the same, for an index with its own text and one over a table.
    let src_db = rusqlite::Connection::open(src.join("database.sqlite")).unwrap();
    for q in [
        "SELECT count(*) FROM ricerca_atti WHERE ricerca_atti MATCH 'comune'",
        "SELECT count(*) FROM cittadini_fts WHERE cittadini_fts MATCH 'Rossi'",
    ] {
        let (a, b): (i64, i64) =
            (src_db.query_row(q, [], |r| r.get(0)).unwrap(), db.query_row(q, [], |r| r.get(0)).unwrap());
        assert!(a > 0 && a == b, "{q}: {a} in the source, {b} restored");
    }
}

#[test]
fn second_backup_of_an_unchanged_tenant_uploads_almost_nothing() {
    let env = Env::new();
    env.seed("comune-b", SMALL, 2);
    let first = env.backup("comune-b");
    let second = env.backup("comune-b");
    let added1 = first["summary"]["bytes_added"].as_u64().unwrap();
    let added2 = second["summary"]["bytes_added"].as_u64().unwrap();
    let read2 = second["summary"]["bytes_read"].as_u64().unwrap();
    let files = first["summary"]["file_bytes"].as_u64().unwrap();
    println!(
        "first backup added {added1} bytes; second added {added2} bytes and read {read2} bytes (files: {files} bytes)"
    );
    assert!(added1 > 1_000_000);
    assert!(added2 * 100 < added1, "the second backup added {added2} bytes");
    // Unchanged files are not even read: only the database is.
    assert!(read2 < files / 2, "the second backup read {read2} bytes");
    assert_eq!(second["parent"], first["id"]);

    let out = env.run(&["generations", "--tenant", "comune-b", "--json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let text = env.run(&["generations", "--tenant", "comune-b"]).ok().stdout;
    assert!(text.contains(first["id"].as_str().unwrap()) && text.contains("ADDED"), "{text}");
    // The first generation still restores exactly after the second.
    let to = env.restore("comune-b", Some(first["id"].as_str().unwrap()));
    assert_eq!(differences(&env.tenant_dir("comune-b"), &to), Vec::<String>::new());
}

/// Each way the store can be damaged, detected by `check --read-data` and by restore, with the
/// object named. Pack damage is aimed through the index at a blob the restored generation reads
/// (a file's first blob), so which blob the sealers happened to write first never matters.
#[test]
fn tampering_is_detected_and_named() {
    type Tamper = fn(&Env) -> String;
    fn flip(path: &Path, at: usize) {
        let mut b = std::fs::read(path).unwrap();
        let at = at.min(b.len() - 1);
        b[at] ^= 0x10;
        std::fs::write(path, b).unwrap();
    }
    fn name(p: &Path) -> String {
        p.file_name().unwrap().to_string_lossy().into()
    }
    let cases: Vec<(&str, Tamper)> = vec![
        ("bit flipped in a blob that restore reads", |env| {
            let place = env.locate_blob("t1", first_file_blob);
            place.flip();
            name(&place.pack)
        }),
        ("pack truncated inside a blob that restore reads", |env| {
            let place = env.locate_blob("t1", first_file_blob);
            let b = std::fs::read(&place.pack).unwrap();
            std::fs::write(&place.pack, &b[..(place.offset + place.length as u64 / 2) as usize]).unwrap();
            name(&place.pack)
        }),
        ("pack deleted", |env| {
            let place = env.locate_blob("t1", first_file_blob);
            std::fs::remove_file(&place.pack).unwrap();
            name(&place.pack)
        }),
        ("pack emptied", |env| {
            let place = env.locate_blob("t1", first_file_blob);
            std::fs::write(&place.pack, b"").unwrap();
            name(&place.pack)
        }),
        ("pack of another tenant moved in", |env| {
            let mine = env.locate_blob("t1", first_file_blob).pack;
            let theirs = env.locate_blob("t2", first_file_blob).pack;
            std::fs::copy(&theirs, &mine).unwrap();
            name(&mine)
        }),
        ("index file damaged", |env| {
            let p = env.store_files("tenants/t1/index").into_iter().next().unwrap();
            flip(&p, 100);
            name(&p)
        }),
        ("manifest damaged", |env| {
            let p = env.store_files("tenants/t1/generations").into_iter().next().unwrap();
            flip(&p, 80);
            name(&p)
        }),
        ("manifest moved to another tenant", |env| {
            let p = env.store_files("tenants/t2/generations").into_iter().next().unwrap();
            let dest = env.path("store/tenants/t1/generations").join(p.file_name().unwrap());
            std::fs::copy(&p, &dest).unwrap();
            name(&dest)
        }),
    ];
    for (name, tamper) in cases {
        let env = Env::new();
        env.seed("t1", SMALL, 1);
        env.seed("t2", SMALL, 2);
        env.backup("t1");
        env.backup("t2");
        env.run(&["check", "--tenant", "t1", "--read-data"]).ok();
        let object = tamper(&env);
        let check = env.run(&["check", "--tenant", "t1", "--read-data"]);
        assert_eq!(check.code, 6, "{name}: check did not report damage:\n{}", check.all());
        assert!(check.all().contains(&object), "{name}: check does not name {object}:\n{}", check.all());
        let to = env.path("restore-target");
        // Restore the generation whose manifest was damaged or moved, or else the newest.
        let target: Vec<String> = env
            .store_files("tenants/t1/generations")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .filter(|g| *g == object)
            .collect();
        let mut args = vec!["restore", "--tenant", "t1", "--to", to.to_str().unwrap()];
        if let Some(g) = target.first() {
            args.extend(["--generation", g.as_str()]);
        }
        let restore = env.run(&args);
        assert_eq!(restore.code, 6, "{name}: restore did not fail as damaged:\n{}", restore.all());
        assert!(restore.all().contains(&object), "{name}: restore does not name {object}:\n{}", restore.all());
        // Nothing half-written under the final names.
        assert!(!to.join("database.sqlite").exists(), "{name}: a partial database was left");
        println!("{name}: detected, named {object}");
    }
}

/// Damage to a blob that restore does not read (a digest map, which only backup and check use):
/// restore rightly succeeds and is exact, and `check --read-data` names the damaged pack.
#[test]
fn damage_that_restore_does_not_read_is_found_by_check() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    env.backup("t1");
    let place = env.locate_blob("t1", first_digest_map_blob);
    place.flip();
    let pack = place.pack.file_name().unwrap().to_string_lossy().into_owned();
    let check = env.run(&["check", "--tenant", "t1", "--read-data"]);
    assert_eq!(check.code, 6, "{}", check.all());
    assert!(check.stdout.contains(&pack), "check does not name {pack}:\n{}", check.all());
    let to = env.restore("t1", None);
    assert_eq!(differences(&env.tenant_dir("t1"), &to), Vec::<String>::new());
}

#[test]
fn wrong_master_key_is_a_clear_error() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    env.backup("t1");
    let wrong = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
    let out = env.cmd(&["check", "--tenant", "t1"]).env("REVERSA_MASTER_KEY", &wrong).output().unwrap();
    let r: crate::common::Run = out.into();
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(r.stderr.contains("wrong master key"), "{}", r.stderr);
    assert!(!r.all().contains(&wrong), "the key was printed");
}

/// A file rewritten in place while it is read is either stored consistently or named in a
/// warning: never stored torn in silence.
#[test]
fn a_file_changing_during_backup_is_never_stored_torn_silently() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    let path = env.tenant_dir("t1").join("attachments/registro-in-scrittura.bin");
    const SIZE: usize = 24 << 20;
    std::fs::write(&path, vec![0u8; SIZE]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            // Rewrite the whole file with one byte value per round, in 1 MiB writes.
            let mut round = 0u8;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round = round.wrapping_add(1);
                let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                let block = vec![round; 1 << 20];
                for _ in 0..SIZE >> 20 {
                    f.write_all(&block).unwrap();
                }
            }
        })
    };
    let m = env.backup("t1");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let warned = m["warnings"].to_string().contains("registro-in-scrittura.bin");
    let to = env.restore("t1", None);
    let restored = std::fs::read(to.join("attachments/registro-in-scrittura.bin")).unwrap();
    let uniform = restored.len() == SIZE && restored.iter().all(|b| *b == restored[0]);
    println!("warned: {warned}, restored content uniform: {uniform}");
    assert!(warned || uniform, "a torn file was stored without a warning");
}

/// SIGKILL in the middle of a backup: the next backup succeeds, check is clean, and no half
/// generation is ever listed.
#[test]
fn a_backup_killed_midway_leaves_no_half_generation() {
    let env = Env::new();
    env.seed("big", reversa::seed::Scale { rows: 2_000, file_bytes: 160 << 20, incompressible: 0.9 }, 5);
    let mut child = env.cmd(&["backup", "--tenant", "big"]).spawn().unwrap();
    // Kill it once it has written at least one pack but before it finishes.
    let started = Instant::now();
    loop {
        if !env.store_files("tenants/big/data").is_empty() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the backup finished ({status}) before it could be killed; make the tenant bigger");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no pack appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let gens: serde_json::Value =
        serde_json::from_str(&env.run(&["generations", "--tenant", "big", "--json"]).ok().stdout).unwrap();
    assert_eq!(gens.as_array().unwrap().len(), 0, "a half generation is listed");
    // The lock left behind by the dead process does not block the next backup.
    let m = env.backup("big");
    let check = env.run(&["check", "--tenant", "big", "--read-data"]).ok();
    println!("{}", check.stdout);
    let to = env.restore("big", Some(m["id"].as_str().unwrap()));
    assert_eq!(differences(&env.tenant_dir("big"), &to), Vec::<String>::new());
}

/// Regression: a failed upload used to leave the reader blocked on the chunk channel, so the
/// backup hung with the tenant locked. It must fail, name the cause, write no generation, and
/// leave the tenant free for the next backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_fails_the_backup_without_hanging() {
    let env = Env::new();
    env.seed("t1", reversa::seed::Scale { rows: 2_000, file_bytes: 40 << 20, incompressible: 0.9 }, 9);
    let config = reversa::config::Config::load(&env.config).unwrap();
    let agent = reversa::commands::Agent::open(config).await.unwrap();
    // Every pack put after the first fails: what a full disk or an S3 outage looks like from the
    // pipeline.
    let packs = std::sync::atomic::AtomicUsize::new(0);
    let on_put = move |key: &str| {
        let later = key.contains("/data/") && packs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0;
        if later {
            PutAction::Fail("No space left on device (injected)")
        } else {
            PutAction::Pass
        }
    };
    let failing = std::sync::Arc::new(FaultyPuts { inner: agent.store.clone(), on_put: Box::new(on_put) });
    let agent = agent.with_store(failing);
    let tenant = reversa::tenant::TenantId::parse("t1").unwrap();
    let res = tokio::time::timeout(
        Duration::from_secs(120),
        run_job(&agent, reversa::jobs::Task::Backup(Default::default()), &tenant),
    )
    .await
    .expect("the backup hung after a failed upload");
    let err = res.expect_err("the backup must fail").to_string();
    assert!(err.contains("No space left on device (injected)"), "{err}");
    let gens: serde_json::Value =
        serde_json::from_str(&env.run(&["generations", "--tenant", "t1", "--json"]).ok().stdout).unwrap();
    assert_eq!(gens.as_array().unwrap().len(), 0);
    // The lock was released and the repository is sound.
    env.backup("t1");
    env.run(&["check", "--tenant", "t1", "--read-data"]).ok();
}

/// Losing the agent host loses nothing: with only the store and the master key, `init` on a new
/// state folder recovers the keystore, and every tenant restores exactly.
#[test]
fn a_lost_state_folder_is_recovered_from_the_store() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    env.seed("t2", SMALL, 2);
    env.backup("t1");
    env.backup("t2");
    std::fs::remove_dir_all(env.path("state")).unwrap();
    let r = env.run(&["init"]).ok();
    assert!(r.stdout.contains("recovered"), "{}", r.all());
    for t in ["t1", "t2"] {
        let to = env.restore(t, None);
        assert_eq!(differences(&env.tenant_dir(t), &to), Vec::<String>::new(), "{t}");
    }
    // A new store for the same agent gets a snapshot at init, before any backup.
    let cfg = std::fs::read_to_string(&env.config).unwrap().replace("path = \"store\"", "path = \"store2\"");
    std::fs::write(&env.config, cfg).unwrap();
    let r = env.run(&["init"]).ok();
    assert!(r.stdout.contains("snapshot uploaded"), "{}", r.all());
    assert_eq!(std::fs::read_dir(env.path("store2/keystore")).unwrap().count(), 1);
}
