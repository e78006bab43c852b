//! The reversibility timeline so far: the record, the dates, `lifecycle tick`, and what each
//! state allows, on a simulated clock with a second tenant active in the same store.

use serde_json::Value;

use crate::common::{Env, Run, SMALL};

fn at(env: &Env, now: &str, args: &[&str]) -> Run {
    env.cmd(args).env("REVERSA_NOW", now).output().unwrap().into()
}

fn export(env: &Env, now: &str, tenant: &str) -> Run {
    let out = env.path(&format!("out-{tenant}-{}", now.replace(':', "")));
    at(
        env,
        now,
        &[
            "export",
            "--tenant",
            tenant,
            "--out",
            out.to_str().unwrap(),
            "--passphrase-file",
            out.join("p").to_str().unwrap(),
        ],
    )
}

#[test]
fn a_terminated_tenant_walks_its_timeline_while_another_stays_active() {
    let env = Env::new();
    env.seed("t1", SMALL, 31);
    env.seed("t2", SMALL, 32);
    let day = |n: u32| format!("2027-01-{:02}T10:00:00Z", n);
    at(&env, &day(1), &["backup", "--all"]).ok();
    at(&env, &day(1), &["tenant", "set", "t1", "--admin", "it@comune-t1.it", "--contact", "dpo@comune-t1.it"]).ok();
    at(&env, &day(1), &["tenant", "terminate", "t1", "--at", "2027-01-02", "--ticket", "CONTRATTO-9"]).ok();
    let status: Value =
        serde_json::from_str(&at(&env, &day(1), &["tenant", "status", "t1", "--json"]).ok().stdout).unwrap();
    assert_eq!(status["state"], "active");
    assert_eq!(status["timeline"]["export_window_end"], "2027-02-01T00:00:00Z");
    assert_eq!(status["timeline"]["safeguard_end"], "2027-03-03T00:00:00Z");
    assert_eq!(status["allowed"], serde_json::json!(["backup", "export"]));

    // Day 5: the export window, recorded by the tick; a second tick changes nothing.
    let r = at(&env, &day(5), &["lifecycle", "tick"]).ok();
    assert_eq!(r.stdout.trim(), "t1: active -> export_window", "{}", r.stdout);
    let r = at(&env, &day(5), &["lifecycle", "tick"]).ok();
    assert!(r.stdout.contains("no tenant's date has come"), "{}", r.stdout);
    export(&env, &day(5), "t1").ok();
    at(&env, &day(5), &["backup", "--tenant", "t1"]).ok();

    // Day 35 (February 4th): the safeguard. No export, no backup for t1; t2 goes on.
    let feb = "2027-02-04T10:00:00Z";
    at(&env, feb, &["lifecycle", "tick"]).ok();
    let r = export(&env, feb, "t1");
    assert_eq!(r.code, 9, "{}", r.all());
    assert!(r.stderr.contains("safeguard") && r.stderr.contains("tenant status t1"), "{}", r.stderr);
    assert_eq!(at(&env, feb, &["backup", "--tenant", "t1"]).code, 9);
    export(&env, feb, "t2").ok();
    at(&env, feb, &["backup", "--tenant", "t2"]).ok();
    let r = at(&env, feb, &["tenant", "cancel-termination", "t1"]);
    assert_eq!(r.code, 9, "too late to cancel: {}", r.all());
    let listed: Value =
        serde_json::from_str(&at(&env, feb, &["tenant", "list", "--state", "safeguard", "--json"]).ok().stdout)
            .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["tenant"], "t1");
    let status = at(&env, feb, &["tenant", "status", "t1"]).ok().stdout;
    assert!(status.contains("safeguard") && status.contains("the purge is due on 2027-03-03"), "{status}");

    // Every step is in the audit log, the simulated time with it, and no contact address.
    let log = env.run(&["audit", "log", "--json"]).ok().stdout;
    let entries: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ticks: Vec<&Value> = entries
        .iter()
        .filter(|e| e["kind"] == "lifecycle_tick" && e["event"] == "end" && e["counts"]["transitions"] == 1)
        .collect();
    assert_eq!(ticks.len(), 2, "{log}");
    assert!(ticks.iter().all(|e| e["simulated_now"].is_string()));
    let terminate = entries.iter().find(|e| e["kind"] == "terminate" && e["event"] == "start").unwrap();
    assert_eq!(
        (&terminate["ticket"], &terminate["options"]["at"]),
        (&Value::from("CONTRATTO-9"), &Value::from("2027-01-02T00:00:00Z"))
    );
    assert!(!log.contains("comune-t1.it"), "a contact address is in the audit log");
    assert!(entries.iter().any(|e| e["kind"] == "export" && e["error_kind"] == "not_allowed"));
    // t2 restores exactly at the end.
    let to = env.restore("t2", None);
    assert_eq!(crate::common::differences(&env.tenant_dir("t2"), &to), Vec::<String>::new());
}

#[test]
fn bad_terminations_are_refused_and_change_nothing() {
    let env = Env::new();
    env.seed("t1", SMALL, 33);
    env.seed("t2", SMALL, 34);
    let now = "2027-01-01T10:00:00Z";
    let r = at(&env, now, &["tenant", "terminate", "t1", "--at", "2027-02-01"]);
    assert_eq!(r.code, 2, "no repository yet: {}", r.all());
    assert!(r.stderr.contains("back it up first"), "{}", r.stderr);
    at(&env, now, &["backup", "--all"]).ok();
    let r = at(&env, now, &["tenant", "terminate", "t1", "--at", "2026-10-01"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--backdated"), "{}", r.stderr);
    let r = at(&env, now, &["tenant", "terminate", "t1", "--at", "2026-10-01", "--backdated"]);
    assert_eq!(r.code, 2, "--backdated needs --reason: {}", r.all());
    at(&env, now, &["tenant", "terminate", "t1", "--at", "2026-10-01", "--backdated", "--reason", "contratto scaduto"])
        .ok();
    let r = at(&env, now, &["tenant", "terminate", "t1", "--at", "2027-02-01"]);
    assert_eq!(r.code, 2, "already terminated: {}", r.all());
    let status: Value =
        serde_json::from_str(&at(&env, now, &["tenant", "status", "t1", "--json"]).ok().stdout).unwrap();
    assert_eq!(
        (&status["state"], &status["timeline"]["contract_end"]),
        (&Value::from("safeguard"), &Value::from("2026-10-01T00:00:00Z"))
    );
    // A termination in the export window can be undone; t2 was never touched.
    at(&env, now, &["tenant", "terminate", "t2", "--at", "2026-12-20"]).ok();
    at(&env, now, &["tenant", "cancel-termination", "t2"]).ok();
    let r = at(&env, now, &["tenant", "cancel-termination", "t2"]);
    assert_eq!(r.code, 2, "{}", r.all());
    export(&env, now, "t2").ok();
    let r = at(&env, now, &["tenant", "set", "t2", "--admin", "not-an-address"]);
    assert_eq!(r.code, 2, "{}", r.all());
    // A negative period is refused when the configuration loads.
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{cfg}\n[lifecycle]\nsafeguard_days = -1\n")).unwrap();
    let r = env.run(&["tenant", "status", "t2"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("safeguard_days"), "{}", r.stderr);
}
