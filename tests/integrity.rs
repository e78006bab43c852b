//! Issue 13: damage that used to go unnoticed or mislead. Keystore snapshots (check, recovery
//! that merges, no new key for existing data), legal holds, the forged file cache, salvage
//! restore, and the messages for a crashed or busy SQLite writer.

use std::path::{Path, PathBuf};

use crate::common::{differences, first_file_blob, Env, Run, SMALL};

/// The keystore snapshots in the `dir` store, oldest first.
fn snapshots(env: &Env) -> Vec<PathBuf> {
    env.store_files("keystore")
}

fn flip(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x04;
    std::fs::write(path, b).unwrap();
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// A damaged newest snapshot, with this host's state kept: `check` names it (exit 6), and
/// `check --repair` replaces it with a fresh snapshot of the sound local keystore.
#[test]
fn a_damaged_newest_snapshot_is_named_by_check_and_repaired() {
    for damage in ["bit flip", "truncated", "empty"] {
        let env = Env::new();
        env.seed("t1", SMALL, 1);
        env.backup("t1");
        let newest = snapshots(&env).pop().unwrap();
        let bytes = std::fs::read(&newest).unwrap();
        match damage {
            "bit flip" => flip(&newest),
            "truncated" => std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap(),
            _ => std::fs::write(&newest, b"").unwrap(),
        }
        let c = env.run(&["check", "--tenant", "t1"]);
        assert_eq!(c.code, 6, "{damage}: {}", c.all());
        assert!(c.stdout.contains(&name(&newest)), "{damage}: the snapshot is not named:\n{}", c.all());
        let c = env.run(&["check", "--tenant", "t1", "--repair"]).ok();
        assert!(c.stdout.contains("uploaded a fresh snapshot"), "{damage}: {}", c.all());
        assert!(!newest.exists(), "{damage}: the damaged snapshot is still there");
        let c = env.run(&["check", "--tenant", "t1"]).ok();
        assert!(c.stdout.contains("holds every key of this agent"), "{damage}: {}", c.all());
    }
}

/// With the state folder lost and the newest snapshot damaged, `init` names the snapshot that
/// does not open, recovers what the older ones hold, and says plainly which tenant cannot be
/// read. `backup` of that tenant then refuses (exit 7) and no new key is made.
#[test]
fn recovery_names_a_damaged_snapshot_and_never_makes_a_key_for_existing_data() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    env.seed("t2", SMALL, 2);
    env.backup("t1");
    env.backup("t2");
    let newest = snapshots(&env).pop().unwrap();
    flip(&newest);
    std::fs::remove_dir_all(env.path("state")).unwrap();

    let r = env.run(&["init"]);
    assert_eq!(r.code, 7, "{}", r.all());
    assert!(r.stdout.contains(&format!("snapshot keystore/{}: DOES NOT OPEN", name(&newest))), "{}", r.all());
    assert!(r.stdout.contains("key of t1: from keystore/"), "{}", r.all());
    assert!(
        r.stdout.contains("tenant t2: its repository is in the store") && r.stdout.contains("CANNOT BE READ"),
        "{}",
        r.all()
    );

    let before = snapshots(&env);
    let b = env.run(&["backup", "--tenant", "t2"]);
    assert_eq!(b.code, 7, "{}", b.all());
    assert!(b.stderr.contains("tenant t2 has a repository in the store"), "{}", b.all());
    assert!(b.stderr.contains(&name(&newest)), "the snapshots tried are not named:\n{}", b.all());
    assert!(b.stderr.contains("never makes a new key"), "{}", b.all());
    let keystore = std::fs::read_to_string(env.path("state/keystore.json")).unwrap();
    assert!(!keystore.contains("\"t2\""), "a key was created for t2");
    assert_eq!(snapshots(&env), before, "a snapshot was uploaded");
    // Checking it says the same, not "damaged" generations.
    let c = env.run(&["check", "--tenant", "t2"]);
    assert_eq!(c.code, 7, "{}", c.all());
    assert!(!c.all().contains("commitment"), "{}", c.all());
    // The tenant whose key was recovered restores exactly.
    let to = env.restore("t1", None);
    assert_eq!(differences(&env.tenant_dir("t1"), &to), Vec::<String>::new());
}

/// A key held only by an older snapshot (the newest was written from a state folder restored
/// from an old copy) is found: by the backup that meets the tenant, and by recovery, which
/// says which snapshot each key came from.
#[test]
fn a_key_only_in_an_older_snapshot_is_recovered() {
    let env = Env::new();
    for (t, seed) in [("t1", 1), ("t2", 2), ("t3", 3)] {
        env.seed(t, SMALL, seed);
    }
    env.backup("t1");
    let old_state = env.path("state-copy");
    copy_dir(&env.path("state"), &old_state);
    env.backup("t2");
    let with_t2 = snapshots(&env).pop().unwrap();
    // The host comes back from the old copy: it knows t1 only.
    std::fs::remove_dir_all(env.path("state")).unwrap();
    std::fs::rename(&old_state, env.path("state")).unwrap();
    std::fs::remove_file(env.path("state/keystore.snapshot")).ok();
    env.backup("t3");
    let newest = snapshots(&env).pop().unwrap();
    assert_ne!(newest, with_t2);
    assert!(with_t2.exists(), "the snapshot that alone holds t2's key was removed");

    // Lost again; recovery merges: t1 and t3 from the newest, t2 from the older one.
    std::fs::remove_dir_all(env.path("state")).unwrap();
    let r = env.run(&["init"]).ok();
    assert!(r.stdout.contains(&format!("key of t2: from keystore/{}", name(&with_t2))), "{}", r.all());
    assert!(r.stdout.contains(&format!("key of t3: from keystore/{}", name(&newest))), "{}", r.all());
    for t in ["t1", "t2", "t3"] {
        let to = env.restore(t, None);
        assert_eq!(differences(&env.tenant_dir(t), &to), Vec::<String>::new(), "{t}");
    }
    let c = env.run(&["check", "--all"]).ok();
    assert!(c.stdout.contains("holds every key of this agent"), "{}", c.all());
}

/// Meeting a tenant whose key this host lost but a snapshot holds (its keystore.json came back
/// from a copy older than the tenant): backup takes that key, never a new one, so every earlier
/// generation still restores.
#[test]
fn backup_takes_a_lost_key_from_the_snapshots() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    let first = env.backup("t1");
    let path = env.path("state/keystore.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["tenants"].as_object_mut().unwrap().remove("t1");
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let b = env.run(&["backup", "--tenant", "t1"]);
    assert_eq!(b.code, 0, "{}", b.all());
    assert!(b.stderr.contains("recovered it from the store's keystore snapshot"), "{}", b.all());
    let to = env.restore("t1", Some(first["id"].as_str().unwrap()));
    assert_eq!(differences(&env.tenant_dir("t1"), &to), Vec::<String>::new());
    env.run(&["check", "--tenant", "t1", "--read-data"]).ok();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A new host recovering with the wrong master key is told so (exit 5), not "damaged".
#[test]
fn recovery_with_the_wrong_master_key_says_so() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    env.backup("t1");
    std::fs::remove_dir_all(env.path("state")).unwrap();
    let wrong = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
    let r: Run = env.cmd(&["init"]).env("REVERSA_MASTER_KEY", &wrong).output().unwrap().into();
    assert_eq!(r.code, 5, "{}", r.all());
    assert!(r.stderr.contains("wrong master key"), "{}", r.all());
    assert!(!r.all().contains("commitment"), "{}", r.all());
    assert!(!env.path("state/keystore.json").exists(), "a keystore was written under the wrong key");
}

/// A legal hold that does not open is damage `check` names (exit 6), whatever was done to it.
#[test]
fn check_names_a_damaged_legal_hold() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    env.seed("t2", SMALL, 2);
    let g1 = env.backup("t1")["id"].as_str().unwrap().to_string();
    let g2 = env.backup("t2")["id"].as_str().unwrap().to_string();
    env.run(&["generations", "hold", "--tenant", "t1", "--generation", &g1, "--reason", "case 12/2026"]).ok();
    env.run(&["generations", "hold", "--tenant", "t2", "--generation", &g2, "--reason", "case 13/2026"]).ok();
    let hold = env.path(&format!("store/tenants/t1/holds/{g1}"));
    let good = std::fs::read(&hold).unwrap();
    let theirs = std::fs::read(env.path(&format!("store/tenants/t2/holds/{g2}"))).unwrap();
    let damages: [(&str, Vec<u8>); 4] = [
        ("bit flip", {
            let mut b = good.clone();
            let at = b.len() - 5;
            b[at] ^= 1;
            b
        }),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("another tenant's", theirs),
    ];
    for (what, bytes) in damages {
        std::fs::write(&hold, bytes).unwrap();
        let c = env.run(&["check", "--tenant", "t1", "--read-data"]);
        assert_eq!(c.code, 6, "{what}: {}", c.all());
        assert!(c.stdout.contains(&format!("tenants/t1/holds/{g1}")), "{what}: {}", c.all());
    }
    std::fs::write(&hold, good).unwrap();
    env.run(&["check", "--tenant", "t1", "--read-data"]).ok();
}

/// Two files of the same size in one tenant, and the file cache of it.
fn two_same_size_files(env: &Env) -> (PathBuf, PathBuf) {
    let dir = env.tenant_dir("t1").join("attachments/same");
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.txt"), dir.join("b.txt"));
    std::fs::write(&a, vec![b'a'; 200_000]).unwrap();
    std::fs::write(&b, vec![b'b'; 200_000]).unwrap();
    (a, b)
}

fn cache(env: &Env) -> rusqlite::Connection {
    rusqlite::Connection::open(env.path("state/cache/t1.files.sqlite")).unwrap()
}

/// Swap two cache entries' blob lists (their MACs stay): the next backup notices, reads both
/// files again, and the generation restores exactly.
#[test]
fn a_forged_file_cache_entry_is_ignored_and_the_file_read_again() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    let (a, b) = two_same_size_files(&env);
    env.backup("t1");
    let swap = |db: &rusqlite::Connection| {
        let blobs = |p: &Path| -> String {
            let rel = p.strip_prefix(env.tenant_dir("t1")).unwrap().to_str().unwrap().as_bytes().to_vec();
            db.query_row("SELECT blobs FROM files WHERE path = ?1", [rel], |r| r.get(0)).unwrap()
        };
        let (ba, bb) = (blobs(&a), blobs(&b));
        assert_ne!(ba, bb);
        db.execute("UPDATE files SET blobs = ?1 WHERE blobs = ?2", [&bb, &ba]).unwrap();
        db.execute("UPDATE files SET blobs = ?1 WHERE blobs = ?2 AND path LIKE '%b.txt'", [&ba, &bb]).unwrap();
    };
    swap(&cache(&env));
    let r = env.run(&["backup", "--tenant", "t1", "--json"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.contains("does not match its MAC"), "{}", r.all());
    let manifest: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(manifest[0]["summary"]["bytes_read"].as_u64().unwrap() >= 400_000, "the two files were not read again");
    let to = env.restore("t1", None);
    assert_eq!(differences(&env.tenant_dir("t1"), &to), Vec::<String>::new());
    env.run(&["check", "--tenant", "t1", "--read-data"]).ok();
}

/// A file entry whose blobs do not add up to its size (made here with a cache entry forged
/// under the tenant's own key, as a bug could) is named by `check --read-data`.
#[test]
fn check_read_data_finds_a_file_whose_blobs_do_not_add_up() {
    let env = generation_with_a_file_that_does_not_add_up();
    let c = env.run(&["check", "--tenant", "t1", "--read-data"]);
    assert_eq!(c.code, 6, "{}", c.all());
    assert!(
        c.stdout.contains("file attachments/sizes/small.txt: its blobs hold 5000 bytes, the catalog says 1000"),
        "{}",
        c.all()
    );
}

/// A tenant whose newest generation says `attachments/sizes/small.txt` holds 1000 bytes while
/// its blobs hold 5000 (those of `large.txt`), through a cache entry forged under the tenant's
/// own key.
fn generation_with_a_file_that_does_not_add_up() -> Env {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    let dir = env.tenant_dir("t1").join("attachments/sizes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("small.txt"), vec![b's'; 1000]).unwrap();
    std::fs::write(dir.join("large.txt"), vec![b'L'; 5000]).unwrap();
    env.backup("t1");
    forge_cache_entry(&env, "attachments/sizes/small.txt", "attachments/sizes/large.txt");
    env.backup("t1");
    env
}

/// Give `victim`'s cache entry the blobs of `donor`, with a valid MAC computed with the
/// tenant's key through the library.
fn forge_cache_entry(env: &Env, victim: &str, donor: &str) {
    let db = cache(env);
    let get = |p: &str| -> (i64, String, String, i64, String) {
        db.query_row("SELECT size, mtime, ctime, inode, blobs FROM files WHERE path = ?1", [p.as_bytes()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
    };
    let (size, mtime, ctime, inode, _) = get(victim);
    let donor_blobs = get(donor).4;
    let (_rt, repo, _) = env.repository("t1");
    let le = |n: i64| n.to_le_bytes();
    let (mtime, ctime): (i64, i64) = (mtime.parse().unwrap(), ctime.parse().unwrap());
    let [a, b, c, d] = [le(size), le(mtime), le(ctime), le(inode)];
    let mac = repo.keys.state_mac("file-cache", &[victim.as_bytes(), &a, &b, &c, &d, donor_blobs.as_bytes()]);
    db.execute(
        "UPDATE files SET blobs = ?1, mac = ?2 WHERE path = ?3",
        rusqlite::params![donor_blobs, mac.as_slice(), victim.as_bytes()],
    )
    .unwrap();
}

/// One damaged pack: `check` says what it costs (the generation and the file), `restore` fails
/// as damaged, and `restore --partial` brings back everything else exactly, with a report.
#[test]
fn restore_partial_salvages_everything_intact_and_reports_the_rest() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    let gen = env.backup("t1")["id"].as_str().unwrap().to_string();
    let place = env.locate_blob("t1", first_file_blob);
    place.flip();
    let c = env.run(&["check", "--tenant", "t1", "--read-data"]);
    assert_eq!(c.code, 6, "{}", c.all());
    let line = c.stdout.lines().find(|l| l.contains(&format!("generation {gen}: file "))).unwrap_or_else(|| {
        panic!("check does not say which file the damage costs:\n{}", c.all());
    });
    let lost = line.split(": file ").nth(1).unwrap().split(": uses blob").next().unwrap().to_string();

    let to = env.path("whole");
    let r = env.run(&["restore", "--tenant", "t1", "--to", to.to_str().unwrap()]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(!to.join("database.sqlite").exists());

    let to = env.path("salvaged");
    let r = env.run(&["restore", "--tenant", "t1", "--to", to.to_str().unwrap(), "--partial"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stdout.contains(&format!("lost: file {lost}")), "{}", r.all());
    // The damaged blob may be shared by identical files: each is lost, and each is listed.
    let lost_files: Vec<&str> = r
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("lost: file "))
        .map(|l| l.split(": ").next().unwrap())
        .collect();
    assert!(!r.stdout.contains("lost: table"), "{}", r.all());
    let report = std::fs::read_to_string(to.join("RESTORE-REPORT.txt")).unwrap();
    assert!(report.contains(&format!("These {} entries could not be restored", lost_files.len())), "{report}");
    for f in &lost_files {
        assert!(report.contains(&format!("file {f}: ")), "{report}");
    }
    std::fs::remove_file(to.join("RESTORE-REPORT.txt")).unwrap();
    // The only differences are the lost files, absent (and so their folders' listings); every
    // table and every other file is back byte for byte.
    let diffs = differences(&env.tenant_dir("t1"), &to);
    let folder_of = |f: &str| f.rsplit_once('/').map(|(dir, _)| dir.to_string()).unwrap_or_default();
    let absent = diffs.iter().filter(|d| d.ends_with("exists on one side only")).count();
    assert_eq!(absent, lost_files.len(), "{diffs:#?} against {lost_files:?}");
    for d in &diffs {
        let lost_file = lost_files.iter().any(|f| d.contains(&format!("{f} exists on one side only")));
        let its_folder = lost_files.iter().any(|f| d.ends_with(&format!("/{}: different entries", folder_of(f))));
        assert!(lost_file || its_folder, "{d} is not about a lost file ({lost_files:?})");
    }
}

/// Another program writing the tenant's database: Python's sqlite3 runs `script` on `db`, and
/// this returns once the script printed `ready` (it then holds what it took).
fn sqlite_writer(db: &Path, script: &str) -> std::process::Child {
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, db.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

/// A writer that crashed mid-transaction leaves a hot journal: the backup names it, says a
/// writer crashed and what to do, and never suggests that reversa writes.
#[test]
fn a_hot_journal_is_named_with_what_to_do() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    let db = env.tenant_dir("t1").join("database.sqlite");
    // A writer that spills changed pages to the database file, then is killed.
    let script = "import sqlite3,sys,time\n\
        c=sqlite3.connect(sys.argv[1],isolation_level=None)\n\
        c.execute('PRAGMA journal_mode=DELETE')\n\
        c.execute('PRAGMA cache_size=1')\n\
        c.execute('BEGIN')\n\
        c.execute('CREATE TABLE spill(x)')\n\
        c.executemany('INSERT INTO spill VALUES (?)', [('x'*500,) for _ in range(4000)])\n\
        print('ready',flush=True)\n\
        time.sleep(60)\n";
    let mut child = sqlite_writer(&db, script);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(env.tenant_dir("t1").join("database.sqlite-journal").exists(), "no journal was left");
    let r = env.run(&["backup", "--tenant", "t1"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("database.sqlite-journal"), "{}", r.all());
    assert!(r.stderr.contains("a writer crashed in the middle of a transaction"), "{}", r.all());
    assert!(
        r.stderr.contains("PRAGMA integrity_check") && r.stderr.contains("never writes to the source"),
        "{}",
        r.all()
    );
    assert!(!r.stderr.contains("readonly database"), "{}", r.all());
}

/// A writer that holds `BEGIN EXCLUSIVE` past the busy timeout: the backup says how long it
/// waited and that the next run retries; with `--all` the other tenants go on.
#[test]
fn a_database_locked_past_the_busy_timeout_says_how_long_it_waited() {
    let env = Env::new();
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    let cfg = cfg.replace("root = \"source\"", "root = \"source\"\nbusy_timeout_secs = 1");
    std::fs::write(&env.config, cfg).unwrap();
    env.seed("t1", SMALL, 1);
    env.seed("t2", SMALL, 2);
    let db = env.tenant_dir("t1").join("database.sqlite");
    let script = "import sqlite3,sys,time\n\
        c=sqlite3.connect(sys.argv[1],isolation_level=None)\n\
        c.execute('PRAGMA journal_mode=DELETE')\n\
        c.execute('BEGIN EXCLUSIVE')\n\
        print('ready',flush=True)\n\
        time.sleep(30)\n";
    let mut child = sqlite_writer(&db, script);
    let r = env.run(&["backup", "--all"]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("error: t1: ") && r.stderr.contains("locked by a writer"), "{}", r.all());
    assert!(
        r.stderr.contains("the whole wait of 1 s") && r.stderr.contains("the next run will try again"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("t2: generation "), "t2 was not backed up:\n{}", r.all());
}

/// A damaged blob of a table: `restore --partial` leaves the table in the database, empty, lists
/// it, and brings every other table and every file back exactly.
#[test]
fn restore_partial_leaves_a_damaged_table_empty_and_lists_it() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    env.backup("t1");
    let place = env.locate_blob("t1", |e| match e {
        reversa::generation::Entry::Table { name, blobs, .. } if name == "protocollo" => blobs.first().cloned(),
        _ => None,
    });
    place.flip();
    let to = env.path("salvaged");
    let r = env.run(&["restore", "--tenant", "t1", "--to", to.to_str().unwrap(), "--partial"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stdout.contains("lost: table protocollo: "), "{}", r.all());
    let report = std::fs::read_to_string(to.join("RESTORE-REPORT.txt")).unwrap();
    assert!(report.contains("table protocollo: ") && report.contains("These 1 entries"), "{report}");
    std::fs::remove_file(to.join("RESTORE-REPORT.txt")).unwrap();
    let db = rusqlite::Connection::open(to.join("database.sqlite")).unwrap();
    let rows: i64 = db.query_row("SELECT count(*) FROM protocollo", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0, "the damaged table kept some rows");
    let diffs = differences(&env.tenant_dir("t1"), &to);
    assert!(!diffs.is_empty() && diffs.iter().all(|d| d.contains("protocollo")), "{diffs:#?}");
}

/// An entry whose data does not add up (a file whose blobs hold more than its size, from a
/// forged cache entry) is left out whole by `restore --partial`, never written cut short or
/// too long; `restore` without it fails as damaged.
#[test]
fn restore_partial_leaves_out_a_file_whose_data_does_not_add_up() {
    let env = generation_with_a_file_that_does_not_add_up();
    let whole = env.path("whole");
    let r = env.run(&["restore", "--tenant", "t1", "--to", whole.to_str().unwrap()]);
    assert_eq!(r.code, 6, "{}", r.all());
    let to = env.path("salvaged");
    let r = env.run(&["restore", "--tenant", "t1", "--to", to.to_str().unwrap(), "--partial"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stdout.contains("lost: file attachments/sizes/small.txt: "), "{}", r.all());
    assert!(!to.join("attachments/sizes/small.txt").exists(), "the file was written although it does not add up");
    assert_eq!(std::fs::read(to.join("attachments/sizes/large.txt")).unwrap(), vec![b'L'; 5000]);
}
