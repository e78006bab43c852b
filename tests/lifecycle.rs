//! The reversibility timeline so far: the record, the dates, `lifecycle tick`, and what each
//! state allows, on a simulated clock with a second tenant active in the same store.

use reversa::signed::Signed;
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
    assert_eq!(status["allowed"], serde_json::json!(["backup", "export", "restore", "forget"]));

    // Day 5: the export window, recorded by the tick (run with --now, which the audit log
    // records); a second tick changes nothing.
    let r = env.run(&["lifecycle", "tick", "--now", &day(5)]).ok();
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
    let asked = entries.iter().find(|e| e["kind"] == "lifecycle_tick" && e["event"] == "start").unwrap();
    assert_eq!(asked["options"]["now"], day(5), "{asked}");
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

/// The S3 store of `cfg`, opened as the agent opens it.
fn s3(cfg: &reversa::config::S3StoreConfig) -> reversa::store::s3::S3Store {
    crate::s3_store::block_on(reversa::store::s3::S3Store::open(cfg, reversa::store::s3::OpenMode::Existing)).unwrap()
}

/// Every version and delete marker under `prefix`.
fn versions(store: &dyn reversa::store::Store, prefix: &str) -> Vec<reversa::store::ObjectVersion> {
    crate::s3_store::block_on(store.list_versions(prefix)).unwrap()
}

fn remove_all(store: &dyn reversa::store::Store, prefix: &str) {
    for v in versions(store, prefix) {
        crate::s3_store::block_on(store.delete_version(&v)).unwrap();
    }
}

fn put(store: &dyn reversa::store::Store, key: &str, bytes: bytes::Bytes) {
    crate::s3_store::block_on(store.put(key, reversa::store::Body::Bytes(bytes))).unwrap();
}

fn get(store: &dyn reversa::store::Store, key: &str) -> bytes::Bytes {
    crate::s3_store::block_on(store.get(key)).unwrap()
}

fn json(r: Run) -> Value {
    serde_json::from_str(&r.ok().stdout).unwrap()
}

#[test]
fn a_tenant_walks_100_days_to_a_confirmed_deletion_on_a_versioned_bucket() {
    let Some(srv) = crate::s3_store::server() else { return };
    let cfg = crate::s3_store::block_on(srv.bucket("lifecycle"));
    crate::s3_store::block_on(srv.enable_versioning(&cfg.bucket));
    let env = Env::with_store(&srv.store_section(&cfg));
    let logs = env.path("logs");
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!(
            "{text}\n[lifecycle]\npurge_source = true\nreplica_retention_days = 40\nextra_paths = [\"{}/{{tenant}}/**\"]\n",
            logs.display()
        ),
    )
    .unwrap();
    for t in ["t1", "t2"] {
        std::fs::create_dir_all(logs.join(t).join("2027")).unwrap();
        std::fs::write(logs.join(t).join("2027/app.log"), format!("log of {t}\n")).unwrap();
    }
    // Notices: a webhook receiver here that refuses the first request, and the SMTP server of
    // scripts/test.sh when there is one.
    let hooks = Hooks::start(1);
    let sender = format!("reversa-{:08x}@provider.example.eu", rand::random::<u32>());
    std::fs::write(env.path("hook.secret"), HOOK_SECRET).unwrap();
    let mut notices = format!("\n[notices]\nwebhook_url = \"{}\"\nwebhook_secret_file = \"hook.secret\"\n", hooks.url);
    let smtp = smtp_server();
    if let Some((addr, ca, _)) = &smtp {
        notices.push_str(&format!(
            "smtp_url = \"smtp://{addr}\"\nfrom = \"{sender}\"\nsmtp_ca_file = \"{}\"\n",
            ca.display()
        ));
    }
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{text}{notices}")).unwrap();
    env.seed("t1", SMALL, 41);
    env.seed("t2", SMALL, 42);
    let store = s3(&cfg);
    at(&env, "2027-01-01T10:00:00Z", &["backup", "--all"]).ok();
    at(&env, "2027-01-01T10:00:00Z", &["tenant", "set", "t1", "--admin", "it@comune-t1.it"]).ok();
    at(&env, "2027-01-01T10:00:00Z", &["tenant", "terminate", "t1", "--at", "2027-01-02"]).ok();

    // The export window: the customer's export, uploaded. The first webhook fails: the tick
    // says so (exit 3), the status shows it, and a later tick delivers it.
    let jan = "2027-01-05T10:00:00Z";
    let r = at(&env, jan, &["lifecycle", "tick"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("t1: active -> export_window") && r.stdout.contains("503"), "{}", r.stdout);
    let status = json(at(&env, jan, &["tenant", "status", "t1", "--json"]));
    let mut statuses = vec![status.clone()];
    let undelivered = status["undelivered_notices"].as_array().unwrap();
    assert_eq!(undelivered.len(), 1, "{status}");
    assert!(undelivered[0]["webhook"]["last_error"].as_str().unwrap().contains("503"), "{status}");
    let out = env.path("export-t1");
    let (o, p) = (out.to_str().unwrap().to_string(), out.join("p").to_str().unwrap().to_string());
    let customer = ["--recipient", "Ufficio IT del Comune t1", "--recipient-kind", "customer"];
    let args = [&["export", "--tenant", "t1", "--out", &o, "--passphrase-file", &p, "--upload"][..], &customer[..]];
    at(&env, jan, &args.concat()).ok();
    assert!(!versions(&store, "exports/t1/").is_empty());
    let early = extraordinary(&env, "early", &["--query", "SELECT 1"]);
    assert_eq!(at(&env, jan, &early.iter().map(String::as_str).collect::<Vec<_>>()).code, 9, "only in the safeguard");

    // A week before the window closes, the warning; the failed notice goes too.
    let r = at(&env, "2027-01-26T10:00:00Z", &["lifecycle", "tick"]).ok();
    assert!(r.stdout.contains("notices delivered, 0 failed"), "{}", r.stdout);
    let status = json(at(&env, "2027-01-26T10:00:00Z", &["tenant", "status", "t1", "--json"]));
    assert_eq!(status["undelivered_notices"], serde_json::json!([]), "{status}");

    // The safeguard: the tick takes the final generation; no export; the purge is not due yet.
    let feb = "2027-02-04T10:00:00Z";
    let r = at(&env, feb, &["lifecycle", "tick"]).ok();
    assert!(r.stdout.contains("t1: final_generation done"), "{}", r.stdout);
    let status = json(at(&env, feb, &["tenant", "status", "t1", "--json"]));
    let final_generation = status["final_generation"].as_str().unwrap().to_string();
    statuses.push(status);
    assert_eq!(export(&env, feb, "t1").code, 9);
    assert_eq!(at(&env, feb, &["forget", "--tenant", "t1"]).code, 9, "the final generation follows the lifecycle");
    let r = at(&env, feb, &["restore", "--tenant", "t1", "--to", env.path("r-feb").to_str().unwrap()]);
    assert!(r.code == 9 && r.stderr.contains("--extraordinary"), "{}", r.all());
    let r = at(&env, feb, &["backup", "--all"]).ok();
    assert!(r.stderr.contains("t1: skipped"), "{}", r.all());
    extraordinary_extractions(&env, feb, &final_generation);
    // The two disclosures to the Procura are to be told to the customer: pending until a tick.
    let pending = at(&env, feb, &["disclosures", "--tenant", "t1", "--pending-notices", "--json"]).ok().stdout;
    assert_eq!(serde_json::from_str::<Value>(&pending).unwrap().as_array().unwrap().len(), 2, "{pending}");
    let r = at(&env, feb, &["tenant", "purge", "t1"]);
    assert_eq!(r.code, 9, "{}", r.all());
    assert!(r.stderr.contains("due on 2027-03-03") && r.stderr.contains("--early"), "{}", r.stderr);
    assert!(env.tenant_dir("t1").exists(), "a refused purge deleted the source");

    // The purge: the source, its logs and its uploaded exports go; t2's stay. A partial
    // certificate: the key outlives the purge.
    let mar = "2027-03-04T10:00:00Z";
    let r = at(&env, mar, &["lifecycle", "tick"]).ok();
    assert!(r.stdout.contains("t1: purge done"), "{}", r.stdout);
    let pending = at(&env, mar, &["disclosures", "--tenant", "t1", "--pending-notices", "--json"]).ok().stdout;
    assert_eq!(serde_json::from_str::<Value>(&pending).unwrap(), serde_json::json!([]), "{pending}");
    assert!(!env.tenant_dir("t1").exists(), "the source is still there");
    assert!(
        !logs.join("t1").exists(),
        "{:?}",
        std::fs::read_dir(logs.join("t1")).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
    assert!(env.tenant_dir("t2").exists() && logs.join("t2/2027/app.log").exists());
    assert_eq!(versions(&store, "exports/t1/"), vec![], "every version of the exports is gone");
    assert_eq!(json(at(&env, mar, &["certificate", "show", "t1", "--json"]))["kind"], "partial");
    assert_eq!(json(at(&env, mar, &["tenant", "status", "t1", "--json"]))["state"], "expiring");
    assert_eq!(export(&env, mar, "t1").code, 9);
    // What is put back later to prove that a confirmation finds it: a pack, and a keystore
    // snapshot that holds the key.
    let pack = versions(&store, "tenants/t1/data/").into_iter().next().unwrap().key;
    let pack_bytes = get(&store, &pack);
    let snapshot = versions(&store, "keystore/").into_iter().last().unwrap().key;
    let snapshot_bytes = get(&store, &snapshot);
    at(
        &env,
        mar,
        &["generations", "hold", "--tenant", "t1", "--generation", &final_generation, "--reason", "ordine 7/2027"],
    )
    .ok();

    // The generations expire 30 days after the purge, not a minute before.
    let before = "2027-04-03T09:59:00Z";
    let r = at(&env, before, &["lifecycle", "tick"]).ok();
    assert!(!r.stdout.contains("expire"), "{}", r.stdout);
    let status = json(at(&env, before, &["tenant", "status", "t1", "--json"]));
    assert!(status["next"].as_str().unwrap().contains("expire on 2027-04-03T10:00:00Z"), "{status}");
    statuses.push(status);

    // The expiry date: the legal hold blocks it, named; once released, every version goes and
    // the key is shredded.
    let apr = "2027-04-04T10:00:00Z";
    let r = at(&env, apr, &["lifecycle", "tick"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("expire FAILED") && r.stdout.contains("legal hold"), "{}", r.stdout);
    let status = json(at(&env, apr, &["tenant", "status", "t1", "--json"]));
    assert!(status["blocked"].as_str().unwrap().contains(&final_generation), "{status}");
    statuses.push(status);
    at(&env, apr, &["generations", "release", "--tenant", "t1", "--generation", &final_generation]).ok();
    let r = at(&env, apr, &["lifecycle", "tick"]).ok();
    assert!(r.stdout.contains("t1: expire done"), "{}", r.stdout);
    assert_eq!(versions(&store, "tenants/t1/"), vec![], "every version and delete marker is gone");
    assert_eq!(json(at(&env, apr, &["tenant", "status", "t1", "--json"]))["state"], "shredded");
    assert_eq!(export(&env, apr, "t1").code, 9);

    // A pack put back cannot be read (check says shredded), and blocks the confirmation.
    put(&store, &pack, pack_bytes);
    let r = at(&env, apr, &["check", "--tenant", "t1"]).ok();
    assert!(r.stdout.contains("t1: shredded"), "{}", r.stdout);
    let r = at(&env, apr, &["expiry", "confirm", "t1"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stderr.contains(&pack) && r.stderr.contains("no certificate was issued"), "{}", r.stderr);
    // Deleted the plain way, it stays as an old version behind a delete marker: still there.
    crate::s3_store::block_on(reversa::store::Store::delete(&store, &pack)).unwrap();
    assert_eq!(versions(&store, &pack).iter().filter(|v| v.delete_marker).count(), 1);
    let r = at(&env, apr, &["expiry", "confirm", "t1"]);
    assert_eq!(r.code, 6, "an old version behind a delete marker: {}", r.all());
    assert!(r.stderr.contains(&pack) && r.stderr.contains("2 object versions"), "{}", r.stderr);
    remove_all(&store, &pack);
    // So does a keystore snapshot that still holds the key; `tenant shred` takes the key out
    // of it again, keeping t2's key that it holds too.
    put(&store, &snapshot, snapshot_bytes);
    let r = at(&env, apr, &["expiry", "confirm", "t1"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stderr.contains(&snapshot) && r.stderr.contains("still holds the key"), "{}", r.stderr);
    at(&env, apr, &["tenant", "shred", "t1"]).ok();
    let r = at(&env, apr, &["tenant", "shred", "t1"]);
    assert_eq!(r.code, 9, "nothing left to shred: {}", r.all());
    // Clean, but the VM replicas are pending until April 13th: a partial certificate.
    let r = at(&env, apr, &["expiry", "confirm", "t1"]).ok();
    assert!(r.stdout.contains("certificate") && r.stdout.contains("(partial)"), "{}", r.stdout);

    // The replicas' date: the tick confirms, with the final certificate.
    let late = "2027-04-20T10:00:00Z";
    let r = at(&env, late, &["lifecycle", "tick"]).ok();
    assert!(r.stdout.contains("t1: confirm_expiry done"), "{}", r.stdout);
    let status = json(at(&env, late, &["tenant", "status", "t1", "--json"]));
    assert_eq!(status["state"], "confirmed");
    statuses.push(status.clone());
    statuses.push(json(at(&env, late, &["tenant", "status", "t2", "--json"])));
    matches_schema(&env, "tenant-status", &statuses);
    assert_eq!(export(&env, late, "t1").code, 9);
    let cert = json(at(&env, late, &["certificate", "show", "t1", "--json"]));
    assert_eq!(cert["kind"], "final");
    assert_eq!(cert["verification"]["versioning"], "enabled");
    assert_eq!(cert["disclosures"].as_array().unwrap().len(), 1, "{cert}");
    verify_breaks_field_by_field(&env, &store, &cert);

    // The re-check: a stray export that reappeared fails it loudly.
    put(&store, "exports/t1/stray/part.zip", bytes::Bytes::from_static(b"stray"));
    let r = at(&env, late, &["expiry", "confirm", "t1"]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stderr.contains("re-check") && r.stderr.contains("exports/t1/"), "{}", r.stderr);
    remove_all(&store, "exports/t1/");
    at(&env, late, &["expiry", "confirm", "t1"]).ok();

    at(&env, late, &["lifecycle", "tick"]).ok();
    check_notices(&hooks, smtp.as_ref(), &sender);
    matches_schema(
        &env,
        "webhook",
        &hooks
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|v| {
                let mut v = v.clone();
                v.as_object_mut().unwrap().remove("verified");
                v
            })
            .collect::<Vec<_>>(),
    );

    // t2 was never touched: its backups, exports and restore go on, exactly.
    at(&env, late, &["backup", "--tenant", "t2"]).ok();
    export(&env, late, "t2").ok();
    at(&env, late, &["check", "--tenant", "t2", "--read-data"]).ok();
    let to = env.restore("t2", None);
    assert_eq!(crate::common::differences(&env.tenant_dir("t2"), &to), Vec::<String>::new());
    // A new host recovers t2's key from the store's snapshots (t1's shred kept it), not t1's.
    let other = env.path("new-host.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&env.config).unwrap().replace("dir = \"state\"", "dir = \"state-new\""),
    )
    .unwrap();
    let new_host = |args: &[&str]| -> Run {
        let mut c = std::process::Command::new(crate::common::bin());
        c.arg("--config").arg(&other).args(args).env("REVERSA_NOW", late);
        c.output().unwrap().into()
    };
    let r = new_host(&["init"]).ok();
    assert!(r.stdout.contains("key of t2: from") && r.stdout.contains("key of t1: shredded"), "{}", r.stdout);
    let to = env.path("t2-on-a-new-host");
    let args = [
        "restore",
        "--tenant",
        "t2",
        "--to",
        to.to_str().unwrap(),
        "--recipient",
        "ops",
        "--recipient-kind",
        "provider",
    ];
    new_host(&args).ok();
    assert_eq!(crate::common::differences(&env.tenant_dir("t2"), &to), Vec::<String>::new());
    let log = env.run(&["audit", "log", "--json"]).ok().stdout;
    assert!(!log.contains("it@comune-t1.it"), "the admin's address is in the audit log");
    let entries: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let failed_recheck = entries.iter().any(|e| e["kind"] == "confirm_expiry" && e["error_kind"] == "remains");
    assert!(failed_recheck, "the failed re-check is in the audit log");
    assert!(entries.iter().all(|e| e["tenant"] != "t2" || e["kind"] != "purge"));
}

/// `certificate verify` of the certificate passes; of a copy with any one field changed, or
/// one signed by another agent's key, it fails (exit 6).
fn verify_breaks_field_by_field(env: &Env, store: &dyn reversa::store::Store, cert: &Value) {
    let file = env.path("cert.json");
    std::fs::write(&file, serde_json::to_vec_pretty(cert).unwrap()).unwrap();
    let r = env.run(&["certificate", "verify", file.to_str().unwrap()]).ok();
    assert!(r.stdout.contains("signature good"), "{}", r.stdout);
    every_edit_fails(env, cert, &["certificate", "verify"]);
    // Signed by another agent, whose public key the store holds: no audit log has its issue.
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let public = hex::encode(key.verifying_key().to_bytes());
    let other = reversa::keys::agent_id_of(&public);
    put(store, &format!("agents/{other}.pub"), bytes::Bytes::from(public));
    let mut forged: reversa::certificate::Certificate = serde_json::from_value(cert.clone()).unwrap();
    forged.agent = other;
    forged.signature = hex::encode(key.sign(&forged.signed_bytes()).to_bytes());
    std::fs::write(&file, serde_json::to_vec(&forged).unwrap()).unwrap();
    let r = env.run(&["certificate", "verify", file.to_str().unwrap()]);
    assert_eq!(r.code, 6, "{}", r.all());
    assert!(r.stderr.contains("no audit log holds"), "{}", r.stderr);
}

/// `verify FILE` (the command `verify` names) fails, exit 6, on a copy of `doc` with any one
/// of its values changed: every leaf, every array grown.
pub(crate) fn every_edit_fails(env: &Env, doc: &Value, verify: &[&str]) {
    let file = env.path("edited.json");
    let mut leaves = Vec::new();
    collect_leaves(doc, String::new(), &mut leaves);
    assert!(leaves.len() > 30, "{leaves:?}");
    for pointer in &leaves {
        let mut edited = doc.clone();
        let v = edited.pointer_mut(pointer).unwrap();
        *v = match v.take() {
            Value::String(s) => Value::String(format!("{s}x")),
            Value::Number(n) => Value::from(n.as_f64().unwrap() + 1.0),
            Value::Bool(b) => Value::Bool(!b),
            Value::Array(mut a) => {
                a.push(Value::from("x"));
                Value::Array(a)
            }
            _ => Value::from("x"),
        };
        std::fs::write(&file, serde_json::to_vec_pretty(&edited).unwrap()).unwrap();
        let r = env.run(&[verify, &[file.to_str().unwrap()]].concat());
        assert_eq!(r.code, 6, "an edit of {pointer} passed: {}", r.all());
    }
}

/// The JSON pointer of every value that is not an object (arrays included as wholes, and each
/// of their elements).
fn collect_leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| collect_leaves(v, format!("{at}/{k}"), out)),
        Value::Array(a) => {
            out.push(at.clone());
            a.iter().enumerate().for_each(|(i, v)| collect_leaves(v, format!("{at}/{i}"), out));
        }
        _ => out.push(at),
    }
}

#[test]
fn an_early_attested_purge_shreds_at_once_and_a_dir_store_confirms_by_listing() {
    let env = Env::new();
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, format!("{text}\n[lifecycle]\nshred = \"at_purge\"\n")).unwrap();
    env.seed("t1", SMALL, 51);
    env.seed("t2", SMALL, 52);
    let jan = "2027-01-01T10:00:00Z";
    at(&env, jan, &["backup", "--all"]).ok();
    let text = std::fs::read_to_string(&env.config).unwrap().replace("dir = \"state\"", "dir = \"state2\"");
    std::fs::write(env.path("other.toml"), text).unwrap();
    let init = std::process::Command::new(crate::common::bin())
        .arg("--config")
        .arg(env.path("other.toml"))
        .arg("init")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    // Bad input, each refused with nothing changed: an active tenant is neither purged nor
    // shredded nor confirmed.
    for args in [&["tenant", "purge", "t2"][..], &["tenant", "shred", "t2"], &["expiry", "confirm", "t2"]] {
        let r = at(&env, jan, args);
        assert_eq!(r.code, 9, "{args:?}: {}", r.all());
        assert!(r.stderr.contains("t2"), "{}", r.stderr);
    }
    at(&env, jan, &["tenant", "terminate", "t1", "--at", "2027-01-02"]).ok();
    let r = at(&env, jan, &["tenant", "purge", "t1", "--early", "--reason", "x", "--confirmed-by", "y"]);
    assert_eq!(r.code, 9, "not even --early before the contract end: {}", r.all());
    let feb = "2027-02-04T10:00:00Z";
    at(&env, feb, &["lifecycle", "tick"]).ok();
    let r = at(&env, feb, &["tenant", "shred", "t1"]);
    assert_eq!(r.code, 9, "the safeguard still needs the key: {}", r.all());
    let r = at(&env, feb, &["tenant", "purge", "t1", "--early", "--confirmed-by", "Mario Rossi"]);
    assert_eq!(r.code, 9, "--early needs --reason: {}", r.all());
    let r = at(&env, feb, &["tenant", "purge", "t1", "--early", "--reason", "richiesta del comune"]);
    assert_eq!(r.code, 2, "reversa does not delete the source here: {}", r.all());
    assert!(r.stderr.contains("--confirmed-by"), "{}", r.stderr);
    assert!(at(&env, feb, &["tenant", "status", "t1"]).ok().stdout.contains("t1: safeguard"));

    // The purge, attested, shreds the key at once: what is left of t1 can no longer be read.
    let out = env.path("certs");
    let args =
        ["tenant", "purge", "t1", "--early", "--reason", "richiesta del comune", "--confirmed-by", "Mario Rossi"];
    let r = at(&env, feb, &[&args[..], &["--out", out.to_str().unwrap()]].concat()).ok();
    assert!(r.stdout.contains("key shredded") && r.stdout.contains("deleted by Mario Rossi"), "{}", r.stdout);
    assert!(env.tenant_dir("t1").exists(), "an attested purge leaves the source to the operator");
    let written: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(!env.store_files("tenants/t1/generations").is_empty(), "the generations wait for their expiry");
    let r = at(&env, feb, &["check", "--all"]).ok();
    assert!(r.stdout.contains("t1: shredded"), "{}", r.stdout);
    // A second agent on the same store, set up before the shred, still held the key: its next
    // check takes the shred from the store's snapshot instead of uploading the key again.
    let other = env.path("other.toml");
    let second = |args: &[&str]| -> Run {
        std::process::Command::new(crate::common::bin())
            .arg("--config")
            .arg(&other)
            .args(args)
            .env("REVERSA_NOW", feb)
            .output()
            .unwrap()
            .into()
    };
    second(&["check", "--tenant", "t2"]).ok();
    let listed: Value = serde_json::from_str(&second(&["tenant", "list", "--json"]).ok().stdout).unwrap();
    let t1 = listed.as_array().unwrap().iter().find(|t| t["tenant"] == "t1").unwrap().clone();
    assert_eq!(t1["key"], "shredded", "{listed}");
    let r = at(&env, feb, &["restore", "--tenant", "t1", "--to", env.path("r1").to_str().unwrap()]);
    assert_eq!(r.code, 9, "{}", r.all());

    // Thirty days later the generations expire; the tick confirms (the replicas' date is the
    // same), and the certificate records the attestation.
    let mar = "2027-03-07T10:00:00Z";
    let r = at(&env, mar, &["lifecycle", "tick"]).ok();
    assert!(r.stdout.contains("t1: expire done") && r.stdout.contains("t1: confirm_expiry done"), "{}", r.stdout);
    assert!(env.store_files("tenants/t1").is_empty());
    let cert =
        serde_json::from_str::<Value>(&at(&env, mar, &["certificate", "show", "t1", "--json"]).ok().stdout).unwrap();
    assert_eq!(cert["kind"], "final");
    assert_eq!(cert["attestations"][0]["by"], "Mario Rossi");
    assert_eq!(cert["verification"]["versioning"], "unversioned");
    let file = written.iter().find(|p| p.extension().is_some_and(|e| e == "json")).unwrap();
    env.run(&["certificate", "verify", file.to_str().unwrap()]).ok();
    let page = env.path(&format!("store/reports/t1/certificates/{}.html", cert["id"].as_str().unwrap()));
    let text = print_to_text(&env, &page);
    let fingerprint: reversa::certificate::Certificate = serde_json::from_value(cert.clone()).unwrap();
    for want in ["t1", "2027-01-02T00:00:00Z", "2027-03-06", "cryptographic erase", "Mario Rossi"] {
        assert!(text.contains(want), "the printed certificate lacks {want:?}:\n{text}");
    }
    assert!(text.contains(&fingerprint.signature_fingerprint()), "no signature fingerprint:\n{text}");
    let r = at(&env, mar, &["lifecycle", "tick"]).ok();
    assert!(r.stdout.contains("no tenant's date has come"), "a second tick changes nothing: {}", r.stdout);
    // The record is cached here: when the store cannot give it, the status says so and shows
    // the local copy.
    let record = env.path("store/reports/t1/lifecycle");
    std::fs::rename(&record, env.path("record.bak")).unwrap();
    std::fs::create_dir(&record).unwrap();
    let status: Value =
        serde_json::from_str(&at(&env, mar, &["tenant", "status", "t1", "--json"]).ok().stdout).unwrap();
    assert_eq!(status["state"], "confirmed");
    assert!(status["blocked"].as_str().unwrap().contains("local copy"), "{status}");
    std::fs::remove_dir(&record).unwrap();
    std::fs::rename(env.path("record.bak"), &record).unwrap();
    let to = env.restore("t2", None);
    assert_eq!(crate::common::differences(&env.tenant_dir("t2"), &to), Vec::<String>::new());
}

/// Print an HTML page to PDF in headless Chromium, as an auditor would, and read its text back
/// with pdftotext.
pub(crate) fn print_to_text(env: &Env, page: &std::path::Path) -> String {
    let pdf = env.path("page.pdf");
    let r: Run = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer"])
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (scripts/test.sh installs it)")
        .into();
    assert!(pdf.exists(), "chromium printed no PDF: {}", r.all());
    let out = std::process::Command::new("pdftotext").arg(&pdf).arg("-").output().expect("pdftotext runs");
    String::from_utf8(out.stdout).unwrap()
}

/// The arguments of an extraordinary extraction of t1 into a folder named `name`, by an
/// authority's request, with `what` (`--tables` or `--query` and their limits).
fn extraordinary(env: &Env, name: &str, what: &[&str]) -> Vec<String> {
    let out = env.path(name);
    let mut args: Vec<String> = ["export", "--tenant", "t1", "--extraordinary", "--out"].map(String::from).to_vec();
    args.push(out.to_str().unwrap().into());
    args.extend(["--passphrase-file".into(), env.path(&format!("{name}.pass")).to_str().unwrap().into()]);
    args.extend(what.iter().map(|s| s.to_string()));
    let by = ["--ticket", "PROC-12", "--reason", "richiesta della procura", "--recipient", "Procura di Pisa"];
    args.extend(by.map(String::from));
    args.extend(["--recipient-kind", "authority", "--legal-basis", "art. 254 c.p.p."].map(String::from));
    args
}

/// Run an extraordinary extraction and open its archive with 7-Zip: the tree inside.
fn extract_and_open(env: &Env, now: &str, name: &str, what: &[&str]) -> std::path::PathBuf {
    let args = extraordinary(env, name, what);
    at(env, now, &args.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    let zip = std::fs::read_dir(env.path(name))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "zip"));
    let pass = std::fs::read_to_string(env.path(&format!("{name}.pass"))).unwrap();
    crate::export::extract(&zip.unwrap(), pass.trim(), &env.path(&format!("{name}-open")))
}

/// During the safeguard: a query and chosen tables from the final generation, each in an
/// AES-256 archive; the query's text in the manifest and never in the audit log; a query that
/// writes or runs too long, or no ticket, refused with nothing written.
fn extraordinary_extractions(env: &Env, now: &str, final_generation: &str) {
    let source = rusqlite::Connection::open(env.tenant_dir("t1").join("database.sqlite")).unwrap();
    let count = |sql: &str| source.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    let query = "SELECT tipo, count(*) AS n FROM pratiche GROUP BY tipo ORDER BY tipo";
    let tree = extract_and_open(env, now, "extra-q", &["--query", query]);
    let manifest: Value = serde_json::from_slice(&std::fs::read(tree.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["extraordinary"]["query"], query);
    assert_eq!(
        (&manifest["source"]["kind"], &manifest["source"]["id"]),
        (&Value::from("generation"), &Value::from(final_generation))
    );
    let csv = std::fs::read_to_string(tree.join("dati/csv/risultato.csv")).unwrap();
    assert_eq!(csv.lines().count() as i64, 1 + count("SELECT count(DISTINCT tipo) FROM pratiche"), "{csv}");
    assert!(tree.join("dati/t1.xlsx").exists());

    let tree = extract_and_open(env, now, "extra-t", &["--tables", "pratiche,protocollo"]);
    let copy = rusqlite::Connection::open(tree.join("dati/t1.sqlite")).unwrap();
    for t in ["pratiche", "protocollo"] {
        let n: i64 = copy.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0)).unwrap();
        assert_eq!(n, count(&format!("SELECT count(*) FROM {t}")), "{t}");
        assert!(tree.join(format!("dati/csv/{t}.csv")).exists());
    }
    let others: i64 =
        copy.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'cittadini'", [], |r| r.get(0)).unwrap();
    assert_eq!(others, 0, "only the tables asked for");

    let log = env.run(&["audit", "log", "--json"]).ok().stdout;
    assert!(!log.contains(query) && !log.contains("GROUP BY"), "the query's text is in the audit log");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(query.as_bytes()));
    assert!(log.contains(&digest), "the query's SHA-256 is not in the audit log");
    let register = env.run(&["disclosures", "--tenant", "t1", "--json"]).ok().stdout;
    assert!(register.contains(&digest) && register.contains("Procura di Pisa"), "{register}");

    let refused = |name: &str, what: &[&str], why: &str| {
        let r = at(env, now, &extraordinary(env, name, what).iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(r.code, 2, "{name}: {}", r.all());
        assert!(r.stderr.contains(why), "{name}: {}", r.stderr);
        let written = std::fs::read_dir(env.path(name)).map_or(0, |d| d.count());
        assert_eq!(written, 0, "{name} wrote something");
    };
    refused("extra-w", &["--query", "DELETE FROM pratiche"], "read-only");
    let forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    refused("extra-l", &["--query", forever, "--time-limit", "1"], "time limit");
    refused("extra-r", &["--query", "SELECT * FROM pratiche", "--row-limit", "2"], "more than 2 rows");
    refused("extra-n", &["--tables", "nessuna"], "no table");
    let mut no_ticket = extraordinary(env, "extra-x", &["--tables", "pratiche"]);
    let i = no_ticket.iter().position(|a| a == "--ticket").unwrap();
    no_ticket.drain(i..i + 2);
    let r = at(env, now, &no_ticket.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("--ticket"), "{}", r.stderr);
    assert!(count("SELECT count(*) FROM pratiche") > 2, "the row limit was not crossed");
}

const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A webhook receiver on loopback: it checks each request's Standard Webhooks signature with
/// its own HMAC, and keeps each body with the verdict; it answers 503 to the first requests.
struct Hooks {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Hooks {
    fn start(fail_first: usize) -> Hooks {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = got.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(mut conn) = conn else { continue };
                let (headers, body) = read_request(&mut conn);
                use std::io::Write;
                if n < fail_first {
                    let _ = conn.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    continue;
                }
                let mut v: Value = serde_json::from_slice(&body).unwrap();
                v["verified"] = Value::Bool(signed(&headers, &body));
                keep.lock().unwrap().push(v);
                let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
            }
        });
        Hooks { url, got }
    }
}

fn read_request(conn: &mut std::net::TcpStream) -> (std::collections::HashMap<String, String>, Vec<u8>) {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let headers: std::collections::HashMap<String, String> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string())))
        .collect();
    let mut body = vec![0; headers.get("content-length").map_or(0, |n| n.parse().unwrap())];
    conn.read_exact(&mut body).unwrap();
    (headers, body)
}

/// Whether `webhook-signature` holds `v1,` + base64(HMAC-SHA256(secret, id.timestamp.body)).
fn signed(headers: &std::collections::HashMap<String, String>, body: &[u8]) -> bool {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(HOOK_SECRET.trim_start_matches("whsec_")).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", headers["webhook-id"], headers["webhook-timestamp"]).as_bytes());
    mac.update(body);
    let want = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    headers["webhook-signature"].split(' ').any(|s| s == want)
}

/// The SMTP test server of scripts/test.sh: its address, its CA certificate, its maildir.
fn smtp_server() -> Option<(String, std::path::PathBuf, std::path::PathBuf)> {
    let var = |k: &str| std::env::var(k).ok();
    match (var("REVERSA_TEST_SMTP"), var("REVERSA_TEST_SMTP_CA"), var("REVERSA_TEST_SMTP_MAILDIR")) {
        (Some(a), Some(c), Some(m)) => Some((a, c.into(), m.into())),
        _ if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") => {
            panic!("REVERSA_TEST_SMTP is not set under CI: run the tests with scripts/test.sh, which starts aiosmtpd")
        }
        _ => {
            eprintln!("skipping the emails: no SMTP test server (scripts/test.sh starts one)");
            None
        }
    }
}

/// Every webhook was signed, and every kind of notice came; every email reached the SMTP
/// server, in Italian and English, with the dates.
fn check_notices(hooks: &Hooks, smtp: Option<&(String, std::path::PathBuf, std::path::PathBuf)>, sender: &str) {
    let got = hooks.got.lock().unwrap().clone();
    assert!(got.iter().all(|v| v["verified"] == true), "a webhook's signature does not verify: {got:?}");
    assert!(got.iter().all(|v| v["data"]["tenant"] == "t1"), "t2 got a notice: {got:?}");
    let kinds: std::collections::BTreeSet<&str> = got.iter().filter_map(|v| v["type"].as_str()).collect();
    for want in [
        "tenant.state_changed",
        "tenant.export_window_closing",
        "tenant.disclosure_to_authority",
        "tenant.certificate_issued",
        "tenant.recheck_failed",
    ] {
        assert!(kinds.contains(want), "no {want} webhook: {kinds:?}");
    }
    let states: Vec<&str> = got
        .iter()
        .filter(|v| v["type"] == "tenant.state_changed")
        .filter_map(|v| v["data"]["event"]["state"].as_str())
        .collect();
    for s in ["active", "export_window", "safeguard", "purged", "expiring", "shredded", "confirmed"] {
        assert!(states.contains(&s), "no webhook for {s}: {states:?}");
    }
    let Some((_, _, maildir)) = smtp else { return };
    let mails: Vec<String> = std::fs::read_dir(maildir.join("new"))
        .unwrap()
        .flatten()
        .map(|e| read_mail(&e.path()))
        .filter(|m| m.contains(sender))
        .collect();
    assert_eq!(mails.len(), got.len(), "one email per notice: {mails:?}");
    assert!(mails.iter().all(|m| m.contains("To: it@comune-t1.it")), "{mails:?}");
    let closing =
        mails.iter().find(|m| m.contains("la finestra di esportazione si chiude")).expect("the warning's email");
    assert!(closing.contains("the export window closes") && closing.contains("2027-02-01"), "{closing}");
}

/// A message as Python's email package reads it: the headers, then the decoded text.
fn read_mail(path: &std::path::Path) -> String {
    let script = "import email, email.policy, sys\n\
                  m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)\n\
                  print('From:', m['From']); print('To:', m['To']); print('Subject:', m['Subject']); print(m.get_content())";
    let out = std::process::Command::new("python3").args(["-c", script]).arg(path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Every document matches docs/schemas/<name>.schema.json, as Python's jsonschema (from
/// scripts/test.sh's virtualenv) checks it, formats included.
fn matches_schema(env: &Env, name: &str, docs: &[Value]) {
    let Ok(python) = std::env::var("REVERSA_TEST_PYTHON") else {
        assert!(std::env::var("CI").is_err(), "REVERSA_TEST_PYTHON is not set under CI: run scripts/test.sh");
        eprintln!("skipping the schema check: no REVERSA_TEST_PYTHON (scripts/test.sh sets it)");
        return;
    };
    let file = env.path(&format!("{name}-docs.json"));
    std::fs::write(&file, serde_json::to_vec(docs).unwrap()).unwrap();
    let script = "import json, sys\n\
                  from jsonschema import Draft202012Validator\n\
                  from referencing import Registry, Resource\n\
                  d = sys.argv[1]\n\
                  schemas = {n: json.load(open(f'{d}/{n}.schema.json')) for n in ['tenant-status', 'webhook']}\n\
                  reg = Registry().with_resources([(s['$id'], Resource.from_contents(s)) for s in schemas.values()])\n\
                  v = Draft202012Validator(schemas[sys.argv[2]], registry=reg, format_checker=Draft202012Validator.FORMAT_CHECKER)\n\
                  bad = [f'{i}: {e.json_path}: {e.message}' for i, doc in enumerate(json.load(open(sys.argv[3]))) for e in v.iter_errors(doc)]\n\
                  print('\\n'.join(bad)); sys.exit(1 if bad else 0)";
    let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schemas");
    let out = std::process::Command::new(python).args(["-c", script, schemas, name]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
