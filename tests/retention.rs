//! Issue 5: retention (`forget`), legal holds, and rolling checks (`check --read-data-subset`),
//! on days simulated with REVERSA_NOW.

use std::path::PathBuf;

use reversa::seed::Scale;
use serde_json::Value;

use crate::common::{differences, Env, Run, SMALL};

/// Run reversa as if the clock said `now`.
fn at(env: &Env, now: &str, args: &[&str]) -> Run {
    env.cmd(args).env(reversa::NOW_ENV, now).output().expect("reversa runs").into()
}

fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", r.all()))
}

fn with_retention(env: &Env, section: &str) {
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{config}\n[retention]\n{section}\n")).unwrap();
}

/// Change the tenant a little (a row and a file), so each generation holds different data.
fn change(env: &Env, tenant: &str, n: usize) {
    let dir = env.tenant_dir(tenant);
    let db = rusqlite::Connection::open(dir.join("database.sqlite")).unwrap();
    db.execute("INSERT INTO sospesi (motivo) VALUES (?1)", [format!("sospensione {n}")]).unwrap();
    drop(db);
    std::fs::write(dir.join(format!("documents/giorno-{n}.txt")), format!("documento del giorno {n}\n")).unwrap();
}

/// A copy of the tenant as it is now (mtimes kept), to compare a restore with later.
fn snapshot(env: &Env, tenant: &str, n: usize) -> PathBuf {
    let to = env.path(&format!("as-of-{n}"));
    let ok = std::process::Command::new("cp").arg("-a").arg(env.tenant_dir(tenant)).arg(&to).status().unwrap();
    assert!(ok.success());
    to
}

fn generation_ids(env: &Env, tenant: &str) -> Vec<String> {
    let list = json(&env.run(&["generations", "--tenant", tenant, "--json"]).ok());
    list.as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap().to_string()).collect()
}

fn decisions(report: &Value) -> Vec<(String, bool, Vec<String>)> {
    report["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let reasons = d["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
            (d["id"].as_str().unwrap().to_string(), d["keep"].as_bool().unwrap(), reasons)
        })
        .collect()
}

#[test]
fn forget_applies_the_policy_once_and_what_remains_restores_exactly() {
    let env = Env::new();
    with_retention(&env, "keep_daily = 3\nkeep_weekly = 2\nallow_short_retention = true");
    env.seed("comune-r", SMALL, 5);
    // Rome is UTC+1 in November. Seven backups over two ISO weeks (W45, W46).
    let times = [
        "2026-11-02T01:00:00Z", // Mon 2 (W45)
        "2026-11-05T01:00:00Z", // Thu 5 (W45): the newest of W45
        "2026-11-09T01:00:00Z", // Mon 9 (W46)
        "2026-11-10T01:00:00Z", // Tue 10
        "2026-11-10T23:30:00Z", // Wed 11 at 00:30 in Rome (still the 10th in UTC)
        "2026-11-11T12:00:00Z", // Wed 11 at 13:00: the newest of the 11th
        "2026-11-12T02:00:00Z", // Thu 12: the newest
    ];
    let mut made = Vec::new();
    for (n, t) in times.iter().enumerate() {
        change(&env, "comune-r", n);
        let r = at(&env, t, &["backup", "--tenant", "comune-r", "--json"]).ok();
        let id = json(&r)[0]["id"].as_str().unwrap().to_string();
        made.push((id, snapshot(&env, "comune-r", n)));
    }
    assert_eq!(generation_ids(&env, "comune-r"), made.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    let packs_before = env.store_files("tenants/comune-r/data");
    let now = "2026-11-12T06:00:00Z";

    // A dry run says what would happen and deletes nothing.
    let dry = at(&env, now, &["forget", "--tenant", "comune-r", "--dry-run", "--json"]).ok();
    let report = &json(&dry)[0];
    assert_eq!(report["dry_run"], true);
    let d = decisions(report);
    let keep: Vec<bool> = d.iter().map(|(_, k, _)| *k).collect();
    assert_eq!(keep, [false, true, false, true, false, true, true], "{report:#}");
    assert_eq!(d[1].2, ["weekly 2026-W45"]);
    assert_eq!(d[3].2, ["daily 2026-11-10"]);
    assert_eq!(d[5].2, ["daily 2026-11-11"]);
    assert_eq!(d[6].2, ["newest", "daily 2026-11-12", "weekly 2026-W46"]);
    assert!(report["warnings"][0].as_str().unwrap().contains("less than 28 days"), "{report:#}");
    assert_eq!(generation_ids(&env, "comune-r").len(), 7, "a dry run deleted something");

    // The real run deletes the three manifests and no pack, and says why it keeps the others.
    let run = at(&env, now, &["forget", "--tenant", "comune-r"]).ok();
    println!("{}", run.stdout);
    assert!(run.stdout.contains("3 forgotten") && run.stdout.contains("4 kept"), "{}", run.all());
    assert!(run.stdout.contains("warning: the policy (keep_daily = 3, keep_weekly = 2)"), "{}", run.all());
    assert!(run.stdout.contains(&format!("forgot       {}", made[4].0)), "{}", run.all());
    let kept: Vec<String> = [1, 3, 5, 6].iter().map(|&i| made[i].0.clone()).collect();
    assert_eq!(generation_ids(&env, "comune-r"), kept);
    assert_eq!(env.store_files("tenants/comune-r/data"), packs_before, "forget touched the packs");

    // Stable: a second run forgets nothing more.
    let again = json(&at(&env, now, &["forget", "--tenant", "comune-r", "--json"]).ok());
    assert_eq!((again[0]["kept"].as_u64(), again[0]["forgotten"].as_u64()), (Some(4), Some(0)), "{again:#}");
    assert_eq!(generation_ids(&env, "comune-r"), kept);

    // What remains restores exactly, each as of its own day, and the repository is sound.
    for &i in &[1, 3, 5, 6] {
        let (id, as_of) = &made[i];
        let to = env.restore("comune-r", Some(id));
        assert_eq!(differences(as_of, &to), Vec::<String>::new(), "generation {id}");
    }
    let c = env.run(&["check", "--tenant", "comune-r", "--read-data"]).ok();
    assert!(c.stdout.contains("4 generations") && c.stdout.contains("no problems"), "{}", c.all());
}

#[test]
fn a_legal_hold_keeps_a_generation_until_it_is_released() {
    let env = Env::new();
    with_retention(&env, "keep_daily = 1\nallow_short_retention = true");
    env.seed("comune-h", SMALL, 6);
    let mut ids = Vec::new();
    for (n, t) in ["2026-11-02T09:00:00Z", "2026-11-03T09:00:00Z", "2026-11-04T09:00:00Z"].iter().enumerate() {
        change(&env, "comune-h", n);
        let r = at(&env, t, &["backup", "--tenant", "comune-h", "--json"]).ok();
        ids.push(json(&r)[0]["id"].as_str().unwrap().to_string());
    }
    let reason = "ricorso TAR Lazio 123/2026, Mario Rossi";
    let r = env.run(&["generations", "hold", "--tenant", "comune-h", "--generation", &ids[0], "--reason", reason]).ok();
    assert!(r.stdout.contains(&format!("on hold: {reason}")), "{}", r.all());
    // The reason may name people: the store holds it sealed only.
    let held = env.store_files("tenants/comune-h/holds");
    assert_eq!(held.len(), 1);
    assert!(held[0].ends_with(&ids[0]));
    let bytes = std::fs::read(&held[0]).unwrap();
    assert!(!bytes.windows(5).any(|w| w == b"Rossi"), "the hold reason is in clear in the store");

    // The listing shows the hold (text and JSON), and the listing's other columns.
    let text = env.run(&["generations", "--tenant", "comune-h"]).ok().stdout;
    assert!(text.contains("HOLD") && text.contains("INSERTED") && text.contains(&format!("hold: {reason}")), "{text}");
    let list = json(&env.run(&["generations", "--tenant", "comune-h", "--json"]).ok());
    assert_eq!(list[0]["hold"]["reason"], reason);
    assert_eq!(list[1]["hold"], Value::Null);
    assert!(list[1]["summary"]["bytes_added"].as_u64().unwrap() > 0);

    // Placing it again without a reason is refused, and the first reason stays; a new reason
    // keeps the old one, its time and who placed it in the hold's history.
    let again = ["generations", "hold", "--tenant", "comune-h", "--generation", &ids[0]];
    let r = env.cmd(&again).env("REVERSA_ACTOR", "ops-mario").output().unwrap();
    let r: Run = r.into();
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("already on hold since") && r.stderr.contains("--reason"), "{}", r.all());
    let second = "ricorso TAR Lazio 123/2026, appello";
    let mut with_reason = again.to_vec();
    with_reason.extend(["--reason", second]);
    let r: Run = env.cmd(&with_reason).env("REVERSA_ACTOR", "ops-lucia").output().unwrap().into();
    assert_eq!(r.code, 0, "{}", r.all());
    let list = json(&env.run(&["generations", "--tenant", "comune-h", "--json"]).ok());
    assert_eq!(list[0]["hold"]["reason"], second);
    assert_eq!(list[0]["hold"]["by"], "ops-lucia");
    assert_eq!(list[0]["hold"]["history"][0]["reason"], reason, "{:#}", list[0]["hold"]);
    assert!(list[0]["hold"]["history"][0]["by"].as_str().unwrap().contains('@'), "{:#}", list[0]["hold"]);

    let report = &json(&at(&env, "2026-11-04T10:00:00Z", &["forget", "--tenant", "comune-h", "--json"]).ok())[0];
    let d = decisions(report);
    assert_eq!(d[0], (ids[0].clone(), true, vec![format!("hold: {second}")]));
    assert!(!d[1].1);
    assert_eq!(generation_ids(&env, "comune-h"), [ids[0].clone(), ids[2].clone()]);

    // Released, it falls under the policy again.
    env.run(&["generations", "release", "--tenant", "comune-h", "--generation", &ids[0]]).ok();
    assert!(env.store_files("tenants/comune-h/holds").is_empty());
    at(&env, "2026-11-04T10:00:00Z", &["forget", "--tenant", "comune-h"]).ok();
    assert_eq!(generation_ids(&env, "comune-h"), [ids[2].clone()]);

    // Holding what does not exist, or releasing what is not held, is an error that names it.
    let r = env.run(&["generations", "hold", "--tenant", "comune-h", "--generation", &ids[0]]);
    assert_eq!(r.code, 8, "not found: {}", r.all());
    assert!(r.stderr.contains(&format!("generation {} does not exist", ids[0])), "{}", r.all());
    let r = env.run(&["generations", "release", "--tenant", "comune-h", "--generation", &ids[2]]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains(&format!("generation {} of tenant comune-h is not on hold", ids[2])), "{}", r.all());
    let r = env.run(&["generations", "hold", "--tenant", "comune-h", "--generation", "../../keystore"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("invalid generation id \"../../keystore\""), "{}", r.all());
    assert!(env.store_files("tenants/comune-h/holds").is_empty());
}

#[test]
fn policies_are_checked_when_the_configuration_loads() {
    let env = Env::new();
    env.seed("comune-p", SMALL, 7);
    env.backup("comune-p");
    let config = std::fs::read_to_string(&env.config).unwrap();
    for (section, needles) in [
        ("keep_daily = 7", &["retention", "less than 28 days", "allow_short_retention = true"][..]),
        ("keep_within = \"un mese\"", &["retention.keep_within", "\"un mese\"", "\"30d\""]),
        ("time_zone = \"Europe/Roma\"", &["retention.time_zone", "Europe/Roma", "Europe/Rome"]),
    ] {
        std::fs::write(&env.config, format!("{config}\n[retention]\n{section}\n")).unwrap();
        let r = env.run(&["forget", "--tenant", "comune-p"]);
        assert_eq!(r.code, 2, "{section}: {}", r.all());
        for n in needles {
            assert!(r.stderr.contains(n), "{section}: the error does not say {n:?}:\n{}", r.stderr);
        }
    }
    assert_eq!(env.store_files("tenants/comune-p/generations").len(), 1);
    // The default policy (28 days in Europe/Rome) needs no setting and warns of nothing.
    std::fs::write(&env.config, &config).unwrap();
    let r = env.run(&["forget", "--all"]).ok();
    assert!(r.stdout.contains("keep_daily = 28 (days in Europe/Rome)") && !r.stdout.contains("warning"), "{}", r.all());
    assert!(r.stdout.contains("comune-p: 1 kept, 0 forgotten"), "{}", r.all());
}

fn check_at(env: &Env, now: &str, args: &[&str]) -> (Run, Value) {
    let mut all = vec!["check", "--tenant", "comune-c", "--json"];
    all.extend(args);
    let r = at(env, now, &all);
    let v = json(&r)[0].clone();
    (r, v)
}

/// The packs the record says were verified (they have a verification time).
fn recorded(env: &Env) -> usize {
    let db = rusqlite::Connection::open(env.path("state/checks/comune-c.sqlite")).unwrap();
    db.query_row("SELECT count(*) FROM packs WHERE verified IS NOT NULL", [], |r| r.get::<_, i64>(0)).unwrap() as usize
}

#[test]
fn rolling_checks_cover_every_pack_and_the_run_that_reads_a_damaged_pack_reports_it() {
    let env = Env::new();
    // Incompressible files of about 40 MB: several packs of at most 8 MiB.
    env.seed("comune-c", Scale { rows: 500, file_bytes: 40 << 20, incompressible: 1.0 }, 8);
    env.backup("comune-c");
    let packs = env.store_files("tenants/comune-c/data");
    assert!(packs.len() >= 4, "only {} packs", packs.len());

    // Three runs of 34% read every pack once, and each says how much is covered.
    let mut shares = Vec::new();
    for (i, now) in ["2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"].iter().enumerate() {
        let (r, v) = check_at(&env, now, &["--read-data-subset", "34%"]);
        assert_eq!(r.code, 0, "{}", r.all());
        assert_eq!(v["subset"], "34%");
        assert!(v["packs_read"].as_u64().unwrap() >= 1 && v["problems"].as_array().unwrap().is_empty(), "{v:#}");
        shares.push(v["verified_recently_percent"].as_f64().unwrap());
        println!("run {i}: {} packs read, {:.1}% verified", v["packs_read"], shares[i]);
    }
    assert!(shares[0] >= 34.0 && shares[0] < 100.0 && shares[1] >= 68.0, "{shares:?}");
    assert_eq!(shares[2], 100.0);
    assert_eq!(recorded(&env), packs.len());
    let text = at(&env, "2026-11-03T01:00:00Z", &["check", "--tenant", "comune-c"]).ok().stdout;
    assert!(text.contains("verified in the last 30 days: 100.0% of the pack bytes"), "{text}");
    // 30 days on, none of it counts as recently verified.
    let (_, v) = check_at(&env, "2026-12-10T00:00:00Z", &[]);
    assert_eq!(v["verified_recently_percent"], 0.0);

    // Damage one pack; the rolling runs that follow (oldest first) reach it and name it.
    let victim = &packs[packs.len() / 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(victim, bytes).unwrap();
    let key = victim.strip_prefix(env.path("store")).unwrap().to_str().unwrap().to_string();
    let mut found = None;
    for (i, now) in ["2026-12-11T00:00:00Z", "2026-12-12T00:00:00Z", "2026-12-13T00:00:00Z"].iter().enumerate() {
        let (r, v) = check_at(&env, now, &["--read-data-subset", "34%"]);
        let problems = v["problems"].as_array().unwrap();
        if problems.is_empty() {
            assert_eq!(r.code, 0, "{}", r.all());
            continue;
        }
        assert_eq!(r.code, 6, "{}", r.all());
        // The pack, and what its damage costs (the generation and file using the blob).
        assert!(problems.iter().all(|p| p.as_str().unwrap().contains(&key)), "{v:#}");
        assert!(problems.iter().any(|p| p.as_str().unwrap().starts_with(&key)), "{v:#}");
        found = Some(i);
        break;
    }
    assert!(found.is_some(), "three runs of 34% never read the damaged pack {key}");
    // Recorded as failed, not verified: it is not covered, and the next run reads it first.
    assert_eq!(recorded(&env), packs.len() - 1);
    let (r, v) = check_at(&env, "2026-12-14T00:00:00Z", &["--read-data-subset", "1%"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert_eq!(v["packs_read"], 1);
    assert!(v["problems"][0].as_str().unwrap().starts_with(&key), "{v:#}");
    assert!(v["verified_recently_percent"].as_f64().unwrap() < 100.0);
}

#[test]
fn slices_of_a_rolling_check_cover_every_pack() {
    let env = Env::new();
    env.seed("comune-c", Scale { rows: 500, file_bytes: 40 << 20, incompressible: 1.0 }, 9);
    env.backup("comune-c");
    let packs = env.store_files("tenants/comune-c/data").len();
    let mut read = 0;
    for n in 1..=3 {
        let slice = format!("{n}/3");
        let (r, v) = check_at(&env, "2026-11-01T00:00:00Z", &["--read-data-subset", &slice]);
        assert_eq!(r.code, 0, "{}", r.all());
        read += v["packs_read"].as_u64().unwrap() as usize;
    }
    assert_eq!(read, packs, "the three slices read each pack once");
    assert_eq!(recorded(&env), packs);
}

#[test]
fn bad_subsets_are_usage_errors() {
    let env = Env::new();
    for bad in ["0%", "150%", "3/2", "abc"] {
        let r = env.run(&["check", "--tenant", "t1", "--read-data-subset", bad]);
        assert_eq!(r.code, 2, "{bad}: {}", r.all());
        assert!(
            r.stderr.contains(&format!("{bad:?} is not a subset")) && r.stderr.contains("1/20"),
            "{bad}: {}",
            r.stderr
        );
    }
    let r = env.run(&["check", "--tenant", "t1", "--read-data", "--read-data-subset", "5%"]);
    assert_eq!(r.code, 2, "{}", r.all());
}
