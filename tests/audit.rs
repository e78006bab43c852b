//! The job runner's evidence: every verb's start and end entries, tampering with the log and
//! its segments named, the chain proved from the store after the state folder is lost, no
//! tenant data in the log or the register, disclosures refused without a recipient, and jobs
//! that stop cleanly when cancelled or when their lock is stolen.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Env, FaultyPuts, PutAction, SMALL};

fn entries(env: &Env) -> Vec<Value> {
    let r = env.run(&["audit", "log", "--json"]).ok();
    r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The end entry of the job whose start is `start`.
fn end_of<'a>(all: &'a [Value], start: &Value) -> Option<&'a Value> {
    all.iter().find(|e| e["event"] == "end" && e["job"] == start["job"])
}

fn starts<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["event"] == "start" && e["kind"] == kind).collect()
}

#[test]
fn every_verb_leaves_a_start_and_an_end_entry_with_actor_tenant_options_and_outcome() {
    let env = Env::new();
    env.seed("t1", SMALL, 1);
    let actor = ["--actor", "maria.rossi@ops"];
    let with = |args: &[&str]| -> Vec<String> { args.iter().chain(actor.iter()).map(|s| s.to_string()).collect() };
    let run = |args: Vec<String>| env.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    run(with(&["backup", "--tenant", "t1"])).ok();
    let gen = env.backup("t1")["id"].as_str().unwrap().to_string();
    let to = env.path("restored");
    run(with(&["restore", "--tenant", "t1", "--to", to.to_str().unwrap(), "--recipient", "Ufficio IT"])).ok();
    run(with(&["check", "--tenant", "t1"])).ok();
    run(with(&["forget", "--tenant", "t1", "--dry-run"])).ok();
    run(with(&["prune", "--tenant", "t1", "--dry-run"])).ok();
    let out = env.path("out");
    run(with(&["export", "--tenant", "t1", "--out", out.to_str().unwrap(), "--recipient", "Comune di Pisa"])).ok();
    run(with(&[
        "generations",
        "hold",
        "--tenant",
        "t1",
        "--generation",
        &gen,
        "--reason",
        "RG 123/2026",
        "--ticket",
        "OPS-7",
    ]))
    .ok();
    run(with(&["generations", "release", "--tenant", "t1", "--generation", &gen])).ok();
    run(with(&["unlock", "--tenant", "t1"])).ok();
    // A failed job: the generation does not exist.
    let r = run(with(&["restore", "--tenant", "t1", "--generation", "20200101T000000.000000Z-00000000", "--to", "x"]));
    assert_eq!(r.code, 8, "{}", r.all());

    let all = entries(&env);
    for kind in ["init", "backup", "restore", "check", "forget", "prune", "export", "hold", "release", "unlock"] {
        let s = starts(&all, kind);
        assert!(!s.is_empty(), "no start entry for {kind}");
        for start in s {
            let end = end_of(&all, start).unwrap_or_else(|| panic!("{kind}: a start without its end: {start}"));
            assert_eq!(end["kind"], kind);
            assert_eq!(start["tenant"], end["tenant"]);
            if kind != "init" {
                assert_eq!(start["tenant"], "t1", "{start}");
            }
            assert!(start["options"].is_object(), "{kind}: no options: {start}");
            assert!(end["outcome"] == "ok" || end["outcome"] == "failed", "{end}");
        }
    }
    // The actor of each of the commands above; init ran as the OS user.
    let by_actor = all.iter().filter(|e| e["actor"] == "maria.rossi@ops" && e["event"] == "start").count();
    assert!(by_actor >= 10, "{by_actor} starts by the actor");
    let hold = starts(&all, "hold")[0];
    assert_eq!((&hold["reason"], &hold["ticket"]), (&Value::from("RG 123/2026"), &Value::from("OPS-7")));
    assert_eq!(hold["options"]["generation"], gen.as_str());
    let forget = starts(&all, "forget")[0];
    assert_eq!(forget["options"]["dry_run"], true);
    let backup_end = end_of(&all, starts(&all, "backup")[0]).unwrap();
    assert_eq!(backup_end["outcome"], "ok");
    assert!(backup_end["counts"]["rows"].as_u64().unwrap() > 0, "{backup_end}");
    assert_eq!(backup_end["produced"][0]["what"], "generation");
    let export_end = end_of(&all, starts(&all, "export")[0]).unwrap();
    assert_eq!(export_end["produced"][0]["sha256"].as_str().unwrap().len(), 64, "{export_end}");
    // The failed restore: its kind, never its message.
    let failed = all.iter().find(|e| e["event"] == "end" && e["outcome"] == "failed").expect("a failed end entry");
    assert_eq!((&failed["kind"], &failed["error_kind"]), (&Value::from("restore"), &Value::from("not_found")));
    assert!(all.iter().any(|e| e["event"] == "key" && e["kind"] == "key_created" && e["tenant"] == "t1"));
    // Filters: by kind, by tenant, by time; CSV for a spreadsheet.
    let r = env.run(&["audit", "log", "--kind", "hold", "--json"]).ok();
    assert_eq!(r.stdout.lines().count(), 2, "{}", r.stdout);
    let r = env.run(&["audit", "log", "--tenant", "t1", "--from", "2999-01-01", "--json"]).ok();
    assert_eq!(r.stdout, "");
    let csv = env.run(&["audit", "log", "--csv"]).ok().stdout;
    assert!(csv.starts_with("seq,time,agent,event,kind,job,tenant,actor,outcome,error_kind,"), "{csv}");
    assert_eq!(csv.lines().count(), all.len() + 1);
    env.run(&["audit", "verify"]).ok();
}

#[test]
fn a_failed_backup_ends_failed_and_a_killed_one_leaves_its_start_without_an_end() {
    let env = Env::new();
    env.seed("t1", SMALL, 2);
    std::fs::write(env.tenant_dir("t1").join("database.sqlite"), b"not a database").unwrap();
    assert_ne!(env.run(&["backup", "--tenant", "t1"]).code, 0);
    let all = entries(&env);
    let end = end_of(&all, starts(&all, "backup")[0]).expect("the failed backup's end entry");
    assert_eq!(end["outcome"], "failed");
    assert!(end["error_kind"].is_string(), "{end}");

    let env = Env::new();
    env.seed("big", reversa::seed::Scale { rows: 2_000, file_bytes: 120 << 20, incompressible: 0.9 }, 3);
    let mut child = env.cmd(&["backup", "--tenant", "big"]).spawn().unwrap();
    wait_for_lock(&env, "big");
    child.kill().unwrap();
    child.wait().unwrap();
    let all = entries(&env);
    let start = starts(&all, "backup")[0];
    assert!(end_of(&all, start).is_none(), "a killed backup has no end entry: {all:?}");
    // Its entries are sealed by the next run, and the chain holds.
    env.run(&["audit", "verify"]).ok();
}

fn wait_for_lock(env: &Env, tenant: &str) -> PathBuf {
    let lock = env.path("store").join(format!("tenants/{tenant}/locks/exclusive"));
    let started = Instant::now();
    while !lock.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "the backup never took its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    lock
}

/// An env with a log of several segments: a few runs, each sealed.
fn logged_env() -> Env {
    let env = Env::new();
    env.seed("t1", SMALL, 4);
    env.backup("t1");
    env.run(&["check", "--tenant", "t1"]).ok();
    env.run(&["forget", "--tenant", "t1", "--dry-run"]).ok();
    env
}

fn segments(env: &Env) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(env.path("state/audit/segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    s.sort();
    s
}

fn store_segments(env: &Env) -> Vec<PathBuf> {
    let mut s = env.store_files("audit");
    s.sort();
    s
}

/// Change a local segment with `f` (its lines in, lines out), verify, and put it back.
fn verify_tampered(env: &Env, segment: &Path, f: impl FnOnce(&mut Vec<String>)) -> crate::common::Run {
    let before = std::fs::read_to_string(segment).unwrap();
    let mut lines: Vec<String> = before.lines().map(String::from).collect();
    f(&mut lines);
    std::fs::write(segment, lines.join("\n") + "\n").unwrap();
    let r = env.run(&["audit", "verify"]);
    std::fs::write(segment, before).unwrap();
    r
}

/// A segment's id: the local file's name without `.jsonl`, the store object's whole name.
fn name(p: &Path) -> String {
    let n = p.file_name().unwrap().to_str().unwrap();
    n.strip_suffix(".jsonl").unwrap_or(n).to_string()
}

#[test]
fn tampering_with_the_local_log_or_its_segments_in_the_store_is_named() {
    let env = logged_env();
    env.run(&["audit", "verify"]).ok();
    let segs = segments(&env);
    assert!(segs.len() >= 3, "{segs:?}");
    let seg = &segs[1];
    let seg_name = name(seg);
    let damaged = |r: &crate::common::Run, what: &str| {
        assert_eq!(r.code, 6, "{what}: {}", r.all());
        assert!(r.stdout.contains(&format!("segment {seg_name}")), "{what}: names the segment: {}", r.stdout);
        assert!(r.stdout.contains("NOT INTACT"), "{}", r.stdout);
    };
    let first_seq =
        |lines: &[String]| -> u64 { serde_json::from_str::<Value>(&lines[0]).unwrap()["seq"].as_u64().unwrap() };
    let r = verify_tampered(&env, seg, |l| l[0] = l[0].replacen("\"actor\":\"", "\"actor\":\"mallory-", 1));
    damaged(&r, "an edited field");
    assert!(r.stdout.contains("it was edited"), "{}", r.stdout);
    let seq = first_seq(&std::fs::read_to_string(seg).unwrap().lines().map(String::from).collect::<Vec<_>>());
    assert!(r.stdout.contains(&format!("entry {seq}:")), "names the entry {seq}: {}", r.stdout);

    let r = verify_tampered(&env, seg, |l| {
        l.remove(0);
    });
    damaged(&r, "a deleted entry");
    assert!(r.stdout.contains("missing"), "{}", r.stdout);

    let r = verify_tampered(&env, seg, |l| {
        let copy = l[0].clone();
        l.insert(1, copy);
    });
    damaged(&r, "an inserted entry");

    let r = verify_tampered(&env, seg, |l| l.swap(0, 1));
    damaged(&r, "two entries swapped");

    let r = verify_tampered(&env, seg, |l| {
        let last = l.last_mut().unwrap();
        let at = last.find("\"signature\":\"").unwrap() + 13;
        let flipped = if &last[at..at + 1] == "0" { "1" } else { "0" };
        last.replace_range(at..at + 1, flipped);
    });
    damaged(&r, "a forged signature");
    assert!(r.stdout.contains("signature does not verify"), "{}", r.stdout);

    // A segment deleted here: the chain breaks at the next one, and the store still has it.
    let saved = std::fs::read(seg).unwrap();
    std::fs::remove_file(seg).unwrap();
    let r = env.run(&["audit", "verify"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stdout.contains("missing") && r.stdout.contains(&seg_name), "{}", r.stdout);
    std::fs::write(seg, saved).unwrap();
    env.run(&["audit", "verify"]).ok();

    // Uploaded segments: one changed in the store, one removed from it.
    let stored = store_segments(&env);
    let target = stored.iter().find(|p| name(p) == seg_name).unwrap().clone();
    let bytes = std::fs::read(&target).unwrap();
    let mut forged = bytes.clone();
    let mid = forged.len() / 2;
    forged[mid] ^= 1;
    std::fs::write(&target, &forged).unwrap();
    let r = env.run(&["audit", "verify"]);
    damaged(&r, "a segment changed in the store");
    let r = env.run(&["audit", "verify", "--from-store"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stdout.contains(&seg_name) && r.stdout.contains("does not open"), "{}", r.stdout);
    std::fs::remove_file(&target).unwrap();
    let r = env.run(&["audit", "verify"]);
    damaged(&r, "a segment removed from the store");
    assert!(r.stdout.contains("no longer holds it"), "{}", r.stdout);
    let r = env.run(&["audit", "verify", "--from-store"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stdout.contains("missing"), "{}", r.stdout);
    std::fs::write(&target, bytes).unwrap();
    env.run(&["audit", "verify", "--from-store"]).ok();
}

#[test]
fn a_log_cut_short_is_caught_against_the_head_kept_apart() {
    let env = logged_env();
    env.run(&["backup", "--tenant", "t1"]).ok();
    let head: Value = serde_json::from_str(&env.run(&["audit", "head", "--json"]).ok().stdout).unwrap();
    let hash = head["checkpoint"]["head"].as_str().unwrap().to_string();
    env.run(&["audit", "verify", "--expect-head", &hash]).ok();
    // The newest segment removed everywhere: the rest is a consistent, shorter log.
    let last = segments(&env).pop().unwrap();
    let last_name = name(&last);
    std::fs::remove_file(&last).unwrap();
    std::fs::remove_file(last.with_extension("uploaded")).unwrap();
    let in_store = store_segments(&env).into_iter().find(|p| name(p) == last_name).unwrap();
    std::fs::remove_file(in_store).unwrap();
    env.run(&["audit", "verify"]).ok();
    let r = env.run(&["audit", "verify", "--expect-head", &hash]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stdout.contains("expected head is not in the chain"), "{}", r.stdout);
    let r = env.run(&["audit", "verify", "--from-store", "--expect-head", &hash]);
    assert_eq!(r.code, 6, "{}", r.all());
}

#[test]
fn after_the_state_folder_is_lost_the_store_still_proves_the_whole_chain() {
    let env = logged_env();
    let before = entries(&env).len();
    let head: Value = serde_json::from_str(&env.run(&["audit", "head", "--json"]).ok().stdout).unwrap();
    let hash = head["checkpoint"]["head"].as_str().unwrap().to_string();
    std::fs::remove_dir_all(env.path("state")).unwrap();
    env.run(&["init"]).ok();
    let r = env.run(&["audit", "verify", "--from-store", "--expect-head", &hash, "--json"]).ok();
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let chains = v["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 2, "the lost agent's chain and the new one's: {v}");
    let old = chains.iter().find(|c| c["agent"] == head["checkpoint"]["agent"]).unwrap();
    assert_eq!(old["entries"].as_u64().unwrap() as usize, before, "{v}");
    assert_eq!(v["expected_head_found"], true);
    let from_store = env.run(&["audit", "log", "--from-store", "--json"]).ok().stdout;
    assert!(from_store.lines().count() > before);
}

#[test]
fn the_log_and_the_register_hold_no_file_name_no_value_and_no_key() {
    let env = Env::new();
    env.seed("t1", SMALL, 5);
    env.backup("t1");
    let out = env.path("out");
    let pass = env.path("pass.txt");
    env.run(&[
        "export",
        "--tenant",
        "t1",
        "--out",
        out.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--recipient",
        "Procura di Pisa",
        "--recipient-kind",
        "authority",
        "--legal-basis",
        "art. 256 c.p.p., decreto 44/2026",
    ])
    .ok();
    env.restore("t1", None);
    let mut secrets: Vec<String> = Vec::new();
    // File names (with their extension, long enough not to match a hash or a year by chance).
    let mut stack = vec![env.tenant_dir("t1").join("attachments"), env.tenant_dir("t1").join("documents")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let n = e.file_name().to_string_lossy().into_owned();
            match e.file_type().unwrap().is_dir() {
                true => stack.push(e.path()),
                false if n.len() >= 8 && n.contains('.') => secrets.push(n),
                false => {}
            }
        }
    }
    let db = rusqlite::Connection::open(env.tenant_dir("t1").join("database.sqlite")).unwrap();
    let mut st = db.prepare("SELECT codice_fiscale, email, nome || ' ' || cognome FROM cittadini LIMIT 50").unwrap();
    let rows = st
        .query_map([], |r| {
            Ok([r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default(), r.get::<_, String>(2)?])
        })
        .unwrap();
    for r in rows {
        secrets.extend(r.unwrap().into_iter().filter(|v| v.len() >= 6));
    }
    let key = std::fs::read(env.path("master.key")).unwrap();
    let agent_key = std::fs::read(env.path("state/agent.key")).unwrap();
    secrets.push(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &key));
    secrets.push(hex::encode(&key));
    secrets.push(hex::encode(&agent_key));
    secrets.push(std::fs::read_to_string(&pass).unwrap().trim().to_string());
    assert!(secrets.len() > 100, "{} sample values", secrets.len());

    let mut evidence = env.run(&["audit", "log", "--json"]).ok().stdout;
    evidence += &env.run(&["audit", "log", "--from-store", "--csv"]).ok().stdout;
    evidence += &env.run(&["disclosures", "--csv"]).ok().stdout;
    for seg in segments(&env) {
        evidence += &std::fs::read_to_string(seg).unwrap();
    }
    for s in &secrets {
        assert!(!evidence.contains(s.as_str()), "the audit log holds {s:?}");
    }
    // The register: both disclosures, the authority's with its legal basis, pending a notice.
    let csv = env.run(&["disclosures", "--csv"]).ok().stdout;
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.contains("Procura di Pisa,authority,\"art. 256 c.p.p., decreto 44/2026\""), "{csv}");
    let pending = env.run(&["disclosures", "--pending-notices", "--json"]).ok().stdout;
    let pending: Value = serde_json::from_str(&pending).unwrap();
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["disclosure"]["notify_customer"], true);
    assert_eq!(pending[0]["disclosure"]["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn a_disclosure_without_recipient_or_an_authoritys_without_legal_basis_is_refused_and_writes_nothing() {
    let env = Env::new();
    env.seed("t1", SMALL, 6);
    env.backup("t1");
    let out = env.path("out");
    let r = env.run_exact(&["export", "--tenant", "t1", "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--recipient NAME") && r.stderr.contains("nothing was written"), "{}", r.stderr);
    assert!(!out.exists(), "the export wrote something");
    let to = env.path("restored");
    let r = env.run_exact(&[
        "restore",
        "--tenant",
        "t1",
        "--to",
        to.to_str().unwrap(),
        "--recipient",
        "Questura",
        "--recipient-kind",
        "authority",
    ]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--legal-basis"), "{}", r.stderr);
    assert!(!to.exists());
    assert!(starts(&entries(&env), "export").is_empty() && starts(&entries(&env), "restore").is_empty());
}

fn interrupt(child: &std::process::Child) {
    // SAFETY: signalling a child this test started and still holds.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
}

fn generations(env: &Env, tenant: &str) -> usize {
    let r = env.run(&["generations", "--tenant", tenant, "--json"]);
    serde_json::from_str::<Value>(&r.stdout).map(|v| v.as_array().unwrap().len()).unwrap_or(0)
}

#[test]
fn a_cancelled_backup_stops_within_seconds_and_the_tenant_can_be_locked_at_once() {
    let env = Env::new();
    env.seed("big", reversa::seed::Scale { rows: 2_000, file_bytes: 150 << 20, incompressible: 0.9 }, 7);
    let child = env
        .cmd(&["backup", "--tenant", "big"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lock(&env, "big");
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    interrupt(&child);
    let r: crate::common::Run = child.wait_with_output().unwrap().into();
    assert!(sent.elapsed() < Duration::from_secs(10), "took {:?} to stop", sent.elapsed());
    assert_eq!(r.code, 130, "{}", r.all());
    assert!(r.stderr.contains("cancelled"), "{}", r.stderr);
    assert!(env.store_files("tenants/big/locks").is_empty(), "the lock is left");
    assert_eq!(generations(&env, "big"), 0);
    let end = entries(&env).into_iter().find(|e| e["event"] == "end" && e["kind"] == "backup").unwrap();
    assert_eq!(end["error_kind"], "cancelled");
    // At once: no stale lock to wait for.
    env.run(&["backup", "--tenant", "big"]).ok();
    let r = env.run(&["check", "--tenant", "big"]).ok();
    assert!(r.stdout.contains("no problems"), "{}", r.stdout);
}

/// The job whose lock is stolen stops; the other tenants of the same `--all` run go on.
#[test]
fn a_backup_whose_lock_is_stolen_stops_and_leaves_no_generation() {
    let env = Env::new();
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str("\n[lock]\nrefresh = 1\n");
    std::fs::write(&env.config, cfg).unwrap();
    env.seed("big", reversa::seed::Scale { rows: 2_000, file_bytes: 150 << 20, incompressible: 0.9 }, 8);
    env.seed("small", SMALL, 9);
    let child = env
        .cmd(&["backup", "--all"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lock = wait_for_lock(&env, "big");
    let mut info: Value = serde_json::from_slice(&std::fs::read(&lock).unwrap()).unwrap();
    info["nonce"] = "another-agent".into();
    info["host"] = "agent-2".into();
    info["purpose"] = "backup".into();
    std::fs::write(&lock, serde_json::to_vec(&info).unwrap()).unwrap();
    let r: crate::common::Run = child.wait_with_output().unwrap().into();
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(r.stderr.contains("taken over by backup") && r.stderr.contains("agent-2"), "{}", r.stderr);
    assert_eq!(generations(&env, "big"), 0);
    assert_eq!(generations(&env, "small"), 1, "the next tenant was not backed up: {}", r.all());
    // The thief's lock is not removed by the job that lost it.
    let now: Value = serde_json::from_slice(&std::fs::read(&lock).unwrap()).unwrap();
    assert_eq!(now["nonce"], "another-agent");
    std::fs::remove_file(&lock).unwrap();
    let r = env.run(&["check", "--tenant", "big"]).ok();
    assert!(r.stdout.contains("no problems"), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_lock_cannot_be_refreshed_stops_past_its_deadline() {
    let env = Env::new();
    let mut cfg = std::fs::read_to_string(&env.config).unwrap();
    cfg.push_str("\n[lock]\nrefresh = 1\n");
    std::fs::write(&env.config, cfg).unwrap();
    env.seed("t1", reversa::seed::Scale { rows: 500, file_bytes: 60 << 20, incompressible: 0.9 }, 10);
    let agent = reversa::commands::Agent::open(reversa::config::Config::load(&env.config).unwrap()).await.unwrap();
    // Lock refreshes fail, and pack uploads are slow enough that the backup outlives the lock's
    // deadline (three refresh periods) whatever the upload concurrency.
    let on_put = |key: &str| match key {
        k if k.contains("/locks/") => PutAction::Fail("connection reset by peer (injected)"),
        k if k.contains("/data/") => PutAction::Delay(Duration::from_secs(5)),
        _ => PutAction::Pass,
    };
    let store = std::sync::Arc::new(FaultyPuts { inner: agent.store.clone(), on_put: Box::new(on_put) });
    let agent = agent.with_store(store);
    let tenant = reversa::tenant::TenantId::parse("t1").unwrap();
    let started = Instant::now();
    let err = crate::common::run_job(&agent, reversa::jobs::Task::Backup(Default::default()), &tenant)
        .await
        .expect_err("a backup without its lock must stop");
    assert_eq!(err.kind(), reversa::commands::ErrorKind::Locked, "{err}");
    assert!(err.to_string().contains("could not be refreshed"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    drop(agent);
    assert_eq!(generations(&env, "t1"), 0);
    env.run(&["check", "--tenant", "t1"]).ok();
}

#[test]
fn a_state_folder_without_its_agent_key_is_refused_until_init_makes_a_new_agent() {
    let env = logged_env();
    std::fs::remove_file(env.path("state/agent.key")).unwrap();
    let r = env.run(&["backup", "--tenant", "t1"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("agent.key is missing") && r.stderr.contains("reversa init"), "{}", r.stderr);
    env.run(&["init"]).ok();
    env.run(&["backup", "--tenant", "t1"]).ok();
    // Two agents in the store now, both chains intact.
    let v: Value = serde_json::from_str(&env.run(&["audit", "verify", "--from-store", "--json"]).ok().stdout).unwrap();
    assert_eq!(v["chains"].as_array().unwrap().len(), 2, "{v}");
}
