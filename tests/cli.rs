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
    assert_ne!(r.code, 0);
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
