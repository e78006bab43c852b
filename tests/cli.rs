//! Bad input at the command line: a clear error that names the input, and nothing written.

use crate::common::{bin, Env, Run, SMALL};

const GOOD: &str = "[source]\nkind = \"sqlite\"\nroot = \"source\"\n\n[store]\nkind = \"dir\"\npath = \"store\"\n\n\
                    [keys]\nmaster_key_file = \"master.key\"\n\n[state]\ndir = \"state\"\n";

fn init_with(config: &str, key_mode: u32) -> (tempfile::TempDir, Run) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reversa.toml"), config).unwrap();
    let key = dir.path().join("master.key");
    std::fs::write(&key, [9u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(key_mode)).unwrap();
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(dir.path().join("reversa.toml"))
        .arg("init")
        .env_remove("REVERSA_MASTER_KEY")
        .output()
        .unwrap();
    (dir, out.into())
}

#[test]
fn broken_configs_are_named_and_write_nothing() {
    let cases = [
        (
            "unknown key",
            GOOD.replace("dir = \"state\"", "dir = \"state\"\nretention_days = 3"),
            0o600,
            "retention_days",
        ),
        ("missing field", GOOD.replace("root = \"source\"\n", ""), 0o600, "root"),
        ("unknown store kind", GOOD.replace("kind = \"dir\"", "kind = \"ftp\""), 0o600, "ftp"),
        ("not TOML", "[source\nkind=".to_string(), 0o600, "reversa.toml"),
        ("key file readable by others", GOOD.to_string(), 0o644, "chmod 600"),
    ];
    for (name, config, mode, needle) in cases {
        let (dir, r) = init_with(&config, mode);
        assert_eq!(r.code, 2, "{name}: exit code {}:\n{}", r.code, r.all());
        assert!(r.stderr.contains(needle), "{name}: the error does not name {needle:?}:\n{}", r.stderr);
        assert!(!dir.path().join("store").exists(), "{name}: the store was created");
        assert!(!dir.path().join("state").exists(), "{name}: the state folder was created");
        println!("{name}: {}", r.stderr.trim());
    }
    // And the good config works, as a control.
    let (dir, r) = init_with(GOOD, 0o600);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(dir.path().join("store/reversa.json").exists());
}

#[test]
fn bad_tenant_ids_are_refused_and_write_nothing() {
    let env = Env::new();
    env.seed("ok", SMALL, 1);
    std::fs::create_dir_all(env.path("x")).unwrap();
    let keystore_before = std::fs::read(env.path("state/keystore.json")).unwrap();
    for bad in ["../x", "", "Comune", "a/b", "-a"] {
        let arg = format!("--tenant={bad}");
        let r = env.run(&["backup", &arg]);
        assert_eq!(r.code, 2, "{bad:?}: {}", r.all());
        assert!(r.stderr.contains("invalid tenant id"), "{bad:?}: {}", r.stderr);
        let r = env.run(&["restore", &arg, "--to", env.path("r").to_str().unwrap()]);
        assert_eq!(r.code, 2, "{bad:?}: {}", r.all());
    }
    assert!(!env.path("store/tenants").exists(), "something was written under tenants/");
    assert!(!env.path("r").exists());
    assert_eq!(std::fs::read(env.path("state/keystore.json")).unwrap(), keystore_before);
}

#[test]
fn unknown_tenant_and_missing_generation_are_clear() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    let r = env.run(&["backup", "--tenant", "nobody"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("tenant nobody does not exist"), "{}", r.stderr);
    env.backup("t1");
    let to = env.path("r");
    let r = env.run(&[
        "restore",
        "--tenant",
        "t1",
        "--generation",
        "20200101T000000Z-00000000",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("generation 20200101T000000Z-00000000 does not exist"), "{}", r.stderr);
    assert!(!to.join("database.sqlite").exists());
}

#[test]
fn commands_need_an_initialized_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reversa.toml"), GOOD).unwrap();
    let out = std::process::Command::new(bin())
        .args(["--config", dir.path().join("reversa.toml").to_str().unwrap(), "backup", "--all"])
        .env("REVERSA_MASTER_KEY", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8; 32]))
        .output()
        .unwrap();
    let r: Run = out.into();
    assert_eq!(r.code, 2, "a store never initialized is bad input: {}", r.all());
    assert!(r.stderr.contains("init"), "{}", r.stderr);
    assert!(!dir.path().join("store").exists());
}

/// With `--all`, a tenant whose repository cannot be read is named on stderr and the others are
/// still backed up, checked and pruned; the exit code says that one failed.
#[test]
fn all_goes_on_past_a_tenant_that_fails() {
    let env = Env::new();
    env.seed("comune-a", SMALL, 1);
    env.seed("comune-b", SMALL, 2);
    env.run(&["backup", "--all"]).ok();
    // comune-a's index folder becomes a file: listing it fails.
    let index = env.path("store/tenants/comune-a/index");
    std::fs::remove_dir_all(&index).unwrap();
    std::fs::write(&index, "not a folder").unwrap();
    for verb in [&["backup", "--all"][..], &["check", "--all"], &["prune", "--all"]] {
        let r = env.run(verb);
        assert_ne!(r.code, 0, "{verb:?}: {}", r.all());
        assert!(r.stderr.contains("error: comune-a:"), "{verb:?} names the tenant that failed: {}", r.all());
        assert!(r.stdout.contains("comune-b:"), "{verb:?} went on to comune-b: {}", r.all());
        assert!(!r.stdout.contains("comune-a:"), "{verb:?} reports nothing done for comune-a: {}", r.all());
    }
    // Damage in the tenant that could be checked outranks the other's failure in the exit code.
    let pack = env.store_files("tenants/comune-b/data").into_iter().next().expect("comune-b has packs");
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&pack, bytes).unwrap();
    let r = env.run(&["check", "--all", "--read-data"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stderr.contains("error: comune-a:") && r.stdout.contains("comune-b:"), "{}", r.all());
}

/// Diagnostics on stderr carry no colour codes when stderr is not a terminal (cron mail,
/// journald), whatever the log level.
#[test]
fn diagnostics_are_plain_text_when_stderr_is_not_a_terminal() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    let r: Run = env.cmd(&["backup", "--tenant", "t1"]).env("REVERSA_LOG", "debug").output().unwrap().into();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stderr.lines().count() > 3, "no diagnostics to look at:\n{}", r.stderr);
    assert!(!r.stderr.contains('\u{1b}'), "colour codes on a pipe:\n{:?}", r.stderr);
}

/// `reversa generations --json | head -1`: a reader that goes away ends the process quietly,
/// never with a panic (exit 101).
#[test]
fn a_closed_stdout_ends_the_process_quietly() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    env.backup("t1");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = env.cmd(&["generations", "--tenant", "t1", "--json"]).stdout(writer).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "ended by a signal or an error: {stderr}");
}

/// `--version` names the commit; the help describes the shared flags and the environment;
/// a verb over tenants without a tenant says that --all is the other choice.
#[test]
fn version_help_and_a_missing_tenant_say_what_to_give() {
    let run = |args: &[&str]| -> Run { std::process::Command::new(bin()).args(args).output().unwrap().into() };
    let v = run(&["--version"]);
    assert!(v.stdout.starts_with("reversa ") && v.stdout.contains("(commit "), "{}", v.all());
    assert!(!v.stdout.contains("(commit unknown"), "built from a git checkout: {}", v.all());
    let help = run(&["--help"]).ok().stdout;
    assert!(help.contains("REVERSA_MASTER_KEY") && help.contains("REVERSA_LOG"), "{help}");
    for verb in ["backup", "check", "forget", "prune"] {
        let h = run(&[verb, "--help"]).ok().stdout;
        assert!(
            h.contains("The tenant id") && h.contains("--all") && h.contains("Print the report as JSON"),
            "{verb}: {h}"
        );
        let r = run(&[verb]);
        assert_eq!(r.code, 2, "{verb}: {}", r.all());
        assert!(r.stderr.contains("--tenant") && r.stderr.contains("--all"), "{verb}: {}", r.stderr);
    }
    let h = run(&["restore", "--help"]).ok().stdout;
    assert!(h.contains("The generation id") && h.contains("The folder to restore into"), "{h}");
}

/// What does not exist is "not found" (exit 8) everywhere: an unknown tenant, a generation that
/// does not exist, a tenant with none yet. A key file that exists is bad input (2), named as a
/// key file.
#[test]
fn what_does_not_exist_is_not_found_everywhere() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    env.seed("t2", SMALL, 2);
    env.backup("t1");
    let to = env.path("to");
    let to = to.to_str().unwrap();
    let missing = "20200101T000000.000000Z-00000000";
    let cases: [(&str, Vec<&str>); 6] = [
        ("restore of an unknown tenant", vec!["restore", "--tenant", "nobody", "--to", to]),
        ("check of an unknown tenant", vec!["check", "--tenant", "nobody"]),
        ("restore of a missing generation", vec!["restore", "--tenant", "t1", "--generation", missing, "--to", to]),
        ("hold of a missing generation", vec!["generations", "hold", "--tenant", "t1", "--generation", missing]),
        ("generations of an unknown tenant", vec!["generations", "--tenant", "nobody"]),
        ("backup of a tenant not in the source", vec!["backup", "--tenant", "nobody"]),
    ];
    for (what, args) in cases {
        let r = env.run(&args);
        assert_eq!(r.code, 8, "{what}: {}", r.all());
    }
    let key = env.path("master.key");
    let r = env.run(&["init", "--generate-master-key", key.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("the key file") && !r.stderr.contains("keystore"), "{}", r.all());
}

/// One human form of a size in every verb's output (decimal MB); `--json` has bytes.
#[test]
fn sizes_read_the_same_in_every_verb() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    let backup = env.run(&["backup", "--tenant", "t1"]).ok().stdout;
    assert!(backup.contains(" MB") && !backup.contains("MiB"), "{backup}");
    let listing = env.run(&["generations", "--tenant", "t1"]).ok().stdout;
    let row = listing.lines().nth(1).unwrap();
    assert_eq!(row.matches(" MB").count(), 2, "size and added in MB: {row}");
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["generations", "--tenant", "t1", "--json"]).ok().stdout).unwrap();
    assert!(json[0]["summary"]["bytes_added"].as_u64().unwrap() > 1000, "{json}");
}

/// Backup, restore, export and `generations` count the same tables and rows for the same data
/// (SQLite's own `sqlite_sequence` is kept, and counted by none of them).
#[test]
fn every_verb_counts_the_same_tables_and_rows() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    let m = env.backup("t1");
    let (tables, rows) = (m["summary"]["tables"].as_u64().unwrap(), m["summary"]["rows"].as_u64().unwrap());
    let db = rusqlite::Connection::open(env.tenant_dir("t1").join("database.sqlite")).unwrap();
    let sequences: i64 = db.query_row("SELECT count(*) FROM sqlite_sequence", [], |r| r.get(0)).unwrap();
    assert!(sequences > 0, "the seed has AUTOINCREMENT counters, so the case is real");
    let counted = format!("{tables} tables, {rows} rows");
    let to = env.path("to");
    let r = env.run(&["restore", "--tenant", "t1", "--to", to.to_str().unwrap()]).ok();
    assert!(r.stdout.contains(&counted), "restore: {}\nbackup said {counted}", r.stdout);
    let out = env.path("out");
    let pass = env.path("pass");
    let r = env.run(&[
        "export",
        "--tenant",
        "t1",
        "--out",
        out.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains(&counted), "export: {}\nbackup said {counted}", r.stdout);
    let listing = env.run(&["generations", "--tenant", "t1", "--json"]).ok();
    let list: serde_json::Value = serde_json::from_str(&listing.stdout).unwrap();
    assert_eq!(list[0]["summary"]["rows"].as_u64(), Some(rows));
    assert_eq!(list[0]["summary"]["rows_inserted"].as_u64(), Some(rows), "a first generation inserts every row");
}

/// `reversa unlock` removes a lock whose process is gone, and refuses a live one.
#[test]
fn unlock_removes_a_stale_lock_and_refuses_a_live_one() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    env.backup("t1");
    let lock = env.path("store/tenants/t1/locks/exclusive");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let write_lock = |pid: u32| {
        let info = serde_json::json!({
            "host": std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(),
            "pid": pid,
            "purpose": "backup",
            "created": "2026-12-01T00:00:00Z",
            "refreshed": jiff::Timestamp::now().as_second(),
            "nonce": "00",
            "boot": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim(),
        });
        std::fs::write(&lock, serde_json::to_vec(&info).unwrap()).unwrap();
    };
    // Held by this test process, which is alive: refused, and the lock stays.
    write_lock(std::process::id());
    let r = env.run(&["unlock", "--tenant", "t1"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("is locked by backup") && r.stderr.contains("reversa unlock"), "{}", r.all());
    assert!(lock.exists());
    let b = env.run(&["backup", "--tenant", "t1"]);
    assert_eq!(b.code, 4, "{}", b.all());
    // Held by a process that is gone: removed, and the tenant can be backed up again.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    write_lock(gone);
    let r = env.run(&["unlock", "--tenant", "t1"]).ok();
    assert!(r.stdout.contains("removed the stale lock tenants/t1/locks/exclusive of backup"), "{}", r.all());
    assert!(!lock.exists());
    assert!(env.run(&["unlock", "--tenant", "t1"]).ok().stdout.contains("t1: not locked"));
    env.backup("t1");
}

/// `reversa completions bash` prints a completion script that knows the verbs.
#[test]
fn completions_are_printed_for_a_shell() {
    let r: Run = std::process::Command::new(bin()).args(["completions", "bash"]).output().unwrap().into();
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("_reversa") && r.stdout.contains("backup") && r.stdout.contains("--tenant"),
        "{}",
        r.stdout
    );
    let r: Run = std::process::Command::new(bin()).args(["completions", "tcsh"]).output().unwrap().into();
    assert_eq!(r.code, 2, "{}", r.all());
}

/// `tenant list`: the tenants of the source and of the store, each with what the store holds.
#[test]
fn tenant_list_shows_the_source_and_the_store() {
    let env = Env::new();
    for (t, seed) in [("t1", 1), ("t2", 2), ("t3", 3)] {
        env.seed(t, SMALL, seed);
    }
    let g1 = env.backup("t1")["id"].as_str().unwrap().to_string();
    env.backup("t3");
    std::fs::remove_dir_all(env.tenant_dir("t3")).unwrap();
    let r = env.run(&["tenant", "list", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let names: Vec<&str> = v.as_array().unwrap().iter().map(|t| t["tenant"].as_str().unwrap()).collect();
    assert_eq!(names, ["t1", "t2", "t3"]);
    assert_eq!(v[0]["in_source"], true);
    assert_eq!(v[0]["in_store"], true);
    assert_eq!(v[0]["key"], "present");
    assert_eq!(v[0]["generations"], 1);
    assert_eq!(v[0]["last_generation"], g1.as_str());
    assert!(v[0]["repository_bytes"].as_u64().unwrap() > 100_000, "{v:#}");
    assert_eq!(
        (v[1]["in_source"].as_bool(), v[1]["in_store"].as_bool(), v[1]["key"].as_str()),
        (Some(true), Some(false), Some("none"))
    );
    assert_eq!(v[1]["repository_bytes"], 0);
    assert_eq!((v[2]["in_source"].as_bool(), v[2]["in_store"].as_bool()), (Some(false), Some(true)));
    let text = env.run(&["tenant", "list"]).ok().stdout;
    assert!(text.contains("TENANT") && text.contains(&g1) && text.contains(" MB"), "{text}");
}

/// The environment is read at the binary's edge only (`cli`, `main`): the library takes a
/// clock and a key source from its caller, as the daemon will give them.
#[test]
fn the_library_reads_no_environment_variable() {
    let mut stack = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
    let mut readers = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let edge = path.to_string_lossy().contains("src/cli/") || path.ends_with("src/main.rs");
            let text = std::fs::read_to_string(&path).unwrap();
            if !edge && (text.contains("env::var") || text.contains("env::vars")) {
                readers.push(path.display().to_string());
            }
        }
    }
    assert!(readers.is_empty(), "environment read below the CLI in {readers:?}");
}

#[test]
fn a_new_api_token_is_shown_once_and_its_hash_goes_into_the_configuration() {
    let env = Env::new();
    let r = env.run_exact(&["token", "new", "--name", "comune-a-admin", "--scope", "tenant:comune-a"]).ok();
    let token = r.stdout.lines().find_map(|l| l.strip_prefix("# rvs_")).map(|t| format!("rvs_{t}")).unwrap();
    let lines: String = r.stdout.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
    assert!(
        lines.contains(&format!("sha256 = \"{want}\"")) && lines.contains("scope = \"tenant:comune-a\""),
        "{lines}"
    );
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{text}\n{lines}")).unwrap();
    env.run(&["tenant", "list"]).ok();
    let cfg = reversa::config::Config::load(&env.config).unwrap();
    assert_eq!(cfg.api.authenticate(&token).map(|t| t.name.as_str()), Some("comune-a-admin"));
    assert!(cfg.api.authenticate("rvs_not-it").is_none());
    // A scope that is none, and a hash that is not one, are named.
    let r = env.run_exact(&["token", "new", "--name", "x", "--scope", "tenant:Bad"]);
    assert_eq!(r.code, 2, "{}", r.all());
    std::fs::write(
        &env.config,
        format!("{text}\n[[api.tokens]]\nname = \"x\"\nscope = \"auditor\"\nsha256 = \"00\"\n"),
    )
    .unwrap();
    let r = env.run(&["tenant", "list"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("api.tokens.sha256"), "{}", r.stderr);
}
