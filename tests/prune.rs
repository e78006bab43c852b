//! Issue 5: prune frees what no generation references, never loses what one does, and refuses
//! to delete anything when its view of the repository is incomplete.

use std::path::{Path, PathBuf};

use crate::common::{differences, Env, Run, SMALL};

/// Add settings to the agent's configuration file.
fn configure(env: &Env, toml: &str) {
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str(toml);
    std::fs::write(&env.config, cfg).unwrap();
}

fn write_random(path: &Path, len: usize) {
    let mut b = vec![0u8; len];
    rand::fill(&mut b[..]);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b).unwrap();
}

/// A change to the tenant's database: a new row in a table of its own.
fn change_database(env: &Env, tenant: &str, note: &str) {
    let db = rusqlite::Connection::open(env.tenant_dir(tenant).join("database.sqlite")).unwrap();
    db.execute_batch("CREATE TABLE IF NOT EXISTS prova_prune (id INTEGER PRIMARY KEY, nota TEXT)").unwrap();
    db.execute("INSERT INTO prova_prune (nota) VALUES (?1)", [note]).unwrap();
}

/// A copy of the tenant's source folder as it is now, to compare a restore with later.
fn snapshot_source(env: &Env, tenant: &str, name: &str) -> PathBuf {
    let to = env.path(name);
    let ok = std::process::Command::new("cp").arg("-a").arg(env.tenant_dir(tenant)).arg(&to).status().unwrap();
    assert!(ok.success());
    to
}

/// Forget a generation the way a retention policy will: remove its manifest.
fn forget(env: &Env, tenant: &str, generation: &serde_json::Value) {
    let id = generation["id"].as_str().unwrap();
    std::fs::remove_file(env.path(&format!("store/tenants/{tenant}/generations/{id}"))).unwrap();
}

/// `prune --json` with extra arguments; the reports when it succeeded.
fn prune(env: &Env, args: &[&str]) -> (Run, Vec<serde_json::Value>) {
    let mut all = vec!["prune", "--json"];
    all.extend(args);
    prune_with(env.cmd(&all))
}

fn prune_with(mut cmd: std::process::Command) -> (Run, Vec<serde_json::Value>) {
    let r: Run = cmd.output().unwrap().into();
    let reports = if r.code == 0 { serde_json::from_str(&r.stdout).unwrap() } else { Vec::new() };
    (r, reports)
}

/// Bytes of the tenant's packs and index files in the `dir` store.
fn store_bytes(env: &Env, tenant: &str) -> u64 {
    ["data", "index"]
        .iter()
        .flat_map(|d| env.store_files(&format!("tenants/{tenant}/{d}")))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Every object of the store with its content.
/// The tenants' repositories, every object with its bytes. The audit segments a run uploads
/// (`audit/`, `agents/`) are its evidence, not a change to any tenant.
fn store_contents(env: &Env) -> Vec<(PathBuf, Vec<u8>)> {
    env.store_files("tenants").into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

fn n(report: &serde_json::Value, field: &str) -> u64 {
    report[field].as_u64().unwrap_or_else(|| panic!("no {field} in {report}"))
}

#[track_caller]
fn assert_check_clean(env: &Env, tenant: &str) {
    let r = env.run(&["check", "--tenant", tenant, "--read-data"]);
    assert!(r.code == 0 && r.stdout.contains("no problems"), "check is not clean:\n{}", r.all());
}

#[test]
fn prune_frees_space_and_every_remaining_generation_restores() {
    let env = Env::new();
    // Every pack holding an unreferenced blob is rewritten, so what is freed can be counted.
    configure(&env, "\n[prune]\ngrace_hours = 0\nrepack_unused_percent = 0\n");
    env.seed("t1", SMALL, 1);
    let big = |i: usize| env.tenant_dir("t1").join(format!("attachments/grande-{i}.bin"));
    for i in 0..4 {
        write_random(&big(i), 1 << 20);
    }
    let g1 = env.backup("t1");
    for i in 0..3 {
        std::fs::remove_file(big(i)).unwrap();
    }
    change_database(&env, "t1", "second");
    let g2 = env.backup("t1");
    let source2 = snapshot_source(&env, "t1", "source-g2");
    // A file that only the newest generation holds, which is then forgotten too: the file cache
    // of the next backup still names its blobs.
    write_random(&env.tenant_dir("t1").join("documents/solo-g3.bin"), 1 << 20);
    let g3 = env.backup("t1");
    forget(&env, "t1", &g1);
    forget(&env, "t1", &g3);
    // What an interrupted backup leaves: a pack that no index file lists.
    let some_pack = env.store_files("tenants/t1/data").remove(0);
    let leftover = env.path(&format!("store/tenants/t1/data/ee/{}", "e".repeat(64)));
    std::fs::create_dir_all(leftover.parent().unwrap()).unwrap();
    let leftover_len = std::fs::copy(&some_pack, &leftover).unwrap();

    let before = store_bytes(&env, "t1");
    let (r, reports) = prune(&env, &["--tenant", "t1"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report = &reports[0];
    println!("{}", r.stdout);
    let after = store_bytes(&env, "t1");
    // The report's numbers are the store's.
    assert_eq!((n(report, "bytes_before"), n(report, "bytes_after")), (before, after));
    assert_eq!(n(report, "bytes_freed"), before - after);
    // Three big files, the file of the forgotten newest generation, and the leftover pack.
    assert!(before - after > 4 * (1 << 20) + leftover_len, "only {} bytes freed", before - after);
    assert!(!leftover.exists(), "the unindexed pack is still there");
    assert!(n(report, "packs_deleted") >= 2 && n(report, "blobs_removed") >= 4, "{report}");
    assert_eq!(n(report, "generations"), 1);

    // Nothing is left to do, and the generation left is whole.
    let (r, again) = prune(&env, &["--tenant", "t1", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        (n(&again[0], "packs_deleted"), n(&again[0], "packs_repacked"), n(&again[0], "bytes_freed")),
        (0, 0, 0),
        "{}",
        again[0]
    );
    assert_check_clean(&env, "t1");
    let to = env.restore("t1", Some(g2["id"].as_str().unwrap()));
    assert_eq!(differences(&source2, &to), Vec::<String>::new());

    // The next backup reads again the file whose blobs prune removed, although the file cache
    // names them, and the new generation restores exactly.
    let g4 = env.backup("t1");
    assert!(n(&g4["summary"], "bytes_read") >= 1 << 20, "the file the cache names was not read again: {g4}");
    let to = env.restore("t1", None);
    assert_eq!(differences(&env.tenant_dir("t1"), &to), Vec::<String>::new());
    assert_check_clean(&env, "t1");
}

/// A tenant of many small files, each one blob, and a small database.
fn small_files_tenant(env: &Env, tenant: &str, files: usize) {
    let dir = env.tenant_dir(tenant);
    std::fs::create_dir_all(&dir).unwrap();
    let db = rusqlite::Connection::open(dir.join("database.sqlite")).unwrap();
    db.execute_batch(
        "CREATE TABLE registro (id INTEGER PRIMARY KEY, nota TEXT); INSERT INTO registro (nota) VALUES ('uno');",
    )
    .unwrap();
    for i in 0..files {
        write_random(&dir.join(format!("attachments/allegato-{i:03}.bin")), 4 << 10);
    }
}

#[test]
fn a_partly_used_pack_is_rewritten_with_only_its_used_blobs() {
    let env = Env::new();
    // The default threshold (repack above 50 % unused); only the grace period is off.
    configure(&env, "\n[prune]\ngrace_hours = 0\n");
    small_files_tenant(&env, "t1", 400);
    let g1 = env.backup("t1");
    // 360 of the 400 files go. Each sealer thread fills a pack of its own with the chunks it
    // happens to take, so the 40 files left are spread among packs that mostly hold removed
    // files (with hundreds of blobs, a pack of kept files only is out of the question): those
    // packs are repacked, and packs of removed files only are deleted.
    let file = |i: usize| env.tenant_dir("t1").join(format!("attachments/allegato-{i:03}.bin"));
    for i in (0..400).filter(|i| i % 10 != 3) {
        std::fs::remove_file(file(i)).unwrap();
    }
    env.backup("t1");
    forget(&env, "t1", &g1);
    let packs_before = env.store_files("tenants/t1/data");

    let (r, reports) = prune(&env, &["--tenant", "t1"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let report = &reports[0];
    println!("{}", r.stdout);
    assert!(n(report, "packs_repacked") >= 1, "no pack was repacked: {report}");
    assert_eq!(n(report, "packs_written"), 1, "the moved blobs fit in one pack: {report}");
    assert!(n(report, "blobs_moved") >= 1, "{report}");
    // A pack is kept only with at least as many used bytes as unused ones, and the used ones
    // are the 40 files and the database: all but about 40 of the 360 removed files are freed.
    assert!(n(report, "blobs_removed") >= 300, "{report}");
    assert!(n(report, "bytes_freed") >= 300 * (4 << 10), "{report}");
    let packs_after = env.store_files("tenants/t1/data");
    let written: Vec<_> = packs_after.iter().filter(|p| !packs_before.contains(p)).collect();
    assert_eq!(written.len(), 1, "{packs_after:?}");

    // No pack is left over the threshold, and everything still reads.
    let (r, again) = prune(&env, &["--tenant", "t1", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!((n(&again[0], "packs_deleted"), n(&again[0], "packs_repacked")), (0, 0), "{}", again[0]);
    assert_check_clean(&env, "t1");
    let to = env.restore("t1", None);
    assert_eq!(differences(&env.tenant_dir("t1"), &to), Vec::<String>::new());
    // The moved blobs dedup the next backup as before: no file is stored again.
    let g3 = env.backup("t1");
    assert!(n(&g3["summary"], "bytes_added") < 4 << 10, "{g3}");
}

#[test]
fn young_packs_wait_for_the_grace_period() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    env.seed("t2", SMALL, 2);
    env.backup("t2");
    env.backup("t1");
    let source1 = snapshot_source(&env, "t1", "source-g1");
    write_random(&env.tenant_dir("t1").join("documents/da-dimenticare.bin"), 1 << 20);
    let g2 = env.backup("t1");
    forget(&env, "t1", &g2);
    let untouched = store_contents(&env);

    // The default grace is 24 hours: the packs of the forgotten generation are minutes old.
    let in_hours = |h: i64| (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(h)).to_string();
    for now in [None, Some(in_hours(23))] {
        let mut cmd = env.cmd(&["prune", "--all", "--json"]);
        if let Some(now) = &now {
            cmd.env("REVERSA_NOW", now);
        }
        let (r, reports) = prune_with(cmd);
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(reports.len(), 2, "--all prunes both tenants: {}", r.stdout);
        let t1 = reports.iter().find(|r| r["tenant"] == "t1").unwrap();
        assert!(n(t1, "packs_kept_for_grace") >= 1, "{t1}");
        assert_eq!((n(t1, "packs_deleted"), n(t1, "packs_repacked"), n(t1, "bytes_freed")), (0, 0, 0), "{t1}");
        assert_eq!(store_contents(&env), untouched, "a prune within the grace period changed the store");
    }
    // A day later they go.
    let mut cmd = env.cmd(&["prune", "--tenant", "t1", "--json", "--dry-run"]);
    cmd.env("REVERSA_NOW", in_hours(25));
    let (r, reports) = prune_with(cmd);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(n(&reports[0], "packs_deleted") >= 1 && n(&reports[0], "packs_kept_for_grace") == 0, "{}", reports[0]);
    // And with grace_hours = 0 they go now.
    configure(&env, "\n[prune]\ngrace_hours = 0\n");
    let (r, reports) = prune(&env, &["--tenant", "t1"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(n(&reports[0], "bytes_freed") >= 1 << 20, "{}", reports[0]);
    assert_check_clean(&env, "t1");
    let to = env.restore("t1", None);
    assert_eq!(differences(&source1, &to), Vec::<String>::new());
}

#[test]
fn a_dry_run_changes_nothing_and_reports_what_prune_then_does() {
    let env = Env::new();
    // Every pack with an unreferenced blob is repacked, so the plan has new packs and a new
    // index whose sizes the dry run must predict.
    configure(&env, "\n[prune]\ngrace_hours = 0\nrepack_unused_percent = 0\n");
    env.seed("t1", SMALL, 3);
    let g1 = env.backup("t1");
    write_random(&env.tenant_dir("t1").join("attachments/nuovo.bin"), 1 << 20);
    std::fs::remove_dir_all(env.tenant_dir("t1").join("documents")).unwrap();
    change_database(&env, "t1", "second");
    env.backup("t1");
    forget(&env, "t1", &g1);

    let before = store_contents(&env);
    let (r, dry) = prune(&env, &["--tenant", "t1", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(store_contents(&env), before, "the dry run changed the store");
    assert!(n(&dry[0], "bytes_freed") > 0 && dry[0]["dry_run"] == true, "{}", dry[0]);
    assert!(n(&dry[0], "packs_repacked") >= 1 && n(&dry[0], "index_files_written") == 1, "{}", dry[0]);
    let text = env.run(&["prune", "--tenant", "t1", "--dry-run"]).ok().stdout;
    assert!(text.contains("dry run, nothing changed"), "{text}");
    assert_eq!(store_contents(&env), before, "the dry run changed the store");

    // The prune then does exactly what the dry run said, down to the bytes.
    let (r, real) = prune(&env, &["--tenant", "t1"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let mut expected = dry[0].clone();
    expected["dry_run"] = false.into();
    assert_eq!(real[0], expected);
    assert_eq!(n(&real[0], "bytes_after"), store_bytes(&env, "t1"));
    assert_check_clean(&env, "t1");
}

/// A tenant with something for prune to delete (a forgotten generation), in an agent whose
/// prune would delete it at once.
fn tenant_with_garbage() -> (Env, serde_json::Value) {
    let env = Env::new();
    configure(&env, "\n[prune]\ngrace_hours = 0\n");
    env.seed("t1", SMALL, 4);
    let g1 = env.backup("t1");
    write_random(&env.tenant_dir("t1").join("attachments/nuovo.bin"), 1 << 20);
    let g2 = env.backup("t1");
    forget(&env, "t1", &g1);
    (env, g2)
}

#[test]
fn an_incomplete_view_makes_prune_refuse_to_delete_anything() {
    type Damage = fn(&Env, &str) -> String;
    let cases: Vec<(&str, Damage)> = vec![
        ("manifest damaged", |env, g2| {
            let p = env.path(&format!("store/tenants/t1/generations/{g2}"));
            let mut b = std::fs::read(&p).unwrap();
            b[80] ^= 0x10;
            std::fs::write(&p, b).unwrap();
            g2.to_string()
        }),
        ("catalog blob damaged", |env, _| {
            let (pack, offset) = catalog_blob_location(env, "t1");
            let p = env.path(&format!("store/{pack}"));
            let mut b = std::fs::read(&p).unwrap();
            b[offset as usize + 100] ^= 0x10;
            std::fs::write(&p, b).unwrap();
            pack
        }),
        // Without the refusal, the packs that index file listed would look like leftovers of an
        // interrupted backup and be deleted with the newest generation's data.
        ("index file lost", |env, _| {
            let newest = env.store_files("tenants/t1/index").pop().unwrap();
            std::fs::remove_file(&newest).unwrap();
            "is not in the index".to_string()
        }),
    ];
    for (name, damage) in cases {
        let (env, g2) = tenant_with_garbage();
        let g2 = g2["id"].as_str().unwrap();
        let named = damage(&env, g2);
        let before = store_contents(&env);
        let (r, _) = prune(&env, &["--tenant", "t1"]);
        assert_eq!(r.code, 6, "{name}: prune did not refuse:\n{}", r.all());
        assert!(r.stderr.contains("refused, nothing was deleted"), "{name}:\n{}", r.stderr);
        assert!(r.stderr.contains(&named), "{name}: the error does not name {named}:\n{}", r.stderr);
        assert!(r.stderr.contains(g2), "{name}: the error does not name generation {g2}:\n{}", r.stderr);
        assert_eq!(store_contents(&env), before, "{name}: prune changed the store");
        println!("{name}: refused: {}", r.stderr.trim());
    }
}

/// The pack (store key) and offset of the newest generation's first catalog blob.
fn catalog_blob_location(env: &Env, tenant: &str) -> (String, u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let agent = reversa::commands::Agent::open(reversa::config::Config::load(&env.config).unwrap()).await.unwrap();
        let repo = agent.repository(&reversa::tenant::TenantId::parse(tenant).unwrap(), false).await.unwrap();
        let index = repo.load_index().await.unwrap();
        let m = repo.resolve_generation(None).await.unwrap();
        let loc = index.blobs[&reversa::repository::parse_blob_id(&m.catalog[0]).unwrap()];
        (repo.pack_key(&index.packs[loc.pack as usize]), loc.offset)
    })
}

/// Backups, forgets and prunes started together, again and again, with prune at its most eager
/// (no grace period): the tenant lock lets one of them through at a time, and nothing is lost.
#[test]
fn a_backup_racing_forget_and_prune_loses_nothing() {
    let env = Env::new();
    // All backups fall on one day: forget keeps only the newest, so every prune has work to do.
    configure(
        &env,
        "\n[prune]\ngrace_hours = 0\nrepack_unused_percent = 0\n\n[retention]\nkeep_daily = 1\nallow_short_retention = true\n",
    );
    env.seed("t1", SMALL, 5);
    env.backup("t1");
    let mut busy = Vec::new();
    let verbs: [&[&str]; 3] =
        [&["backup", "--tenant", "t1"], &["forget", "--tenant", "t1"], &["prune", "--tenant", "t1"]];
    for round in 0..6 {
        write_random(&env.tenant_dir("t1").join(format!("attachments/giro-{round}.bin")), 256 << 10);
        if round % 2 == 1 {
            std::fs::remove_file(env.tenant_dir("t1").join(format!("attachments/giro-{}.bin", round - 1))).unwrap();
        }
        change_database(&env, "t1", &format!("round {round}"));
        let start = |args: &[&str]| {
            let mut cmd = env.cmd(args);
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        };
        // Started in a different order each round, so that each gets to win the lock.
        let mut children: Vec<(usize, std::process::Child)> =
            (0..3).map(|k| (round + k) % 3).map(|v| (v, start(verbs[v]))).collect();
        children.sort_by_key(|c| c.0);
        let runs: Vec<Run> = children.into_iter().map(|(_, c)| c.wait_with_output().unwrap().into()).collect();
        for (v, r) in runs.iter().enumerate() {
            let what = verbs[v][0];
            assert!(r.code == 0 || r.code == 4, "round {round}: {what} failed:\n{}", r.all());
            if r.code == 4 {
                assert!(r.stderr.contains("is locked by"), "round {round}: {what}:\n{}", r.stderr);
                busy.push(format!("round {round}: {what}"));
            }
        }
        if runs[0].code == 4 {
            env.backup("t1");
        }
    }
    println!("found the tenant locked: {busy:?}");
    assert_check_clean(&env, "t1");
    let to = env.restore("t1", None);
    assert_eq!(differences(&env.tenant_dir("t1"), &to), Vec::<String>::new());
}
