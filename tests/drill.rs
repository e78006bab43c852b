//! Restore drills: a drill that passes, its signed report verified and broken field by field
//! and printed by a browser, a drill against a damaged pack that fails and names the object,
//! and the fleet's estimate.

use serde_json::Value;

use crate::common::{first_file_blob, Env, SMALL};

#[test]
fn a_drill_passes_and_its_report_is_signed_and_a_damaged_pack_fails_it() {
    let env = Env::new();
    env.seed("t1", SMALL, 61);
    env.seed("t2", SMALL, 62);
    env.run(&["backup", "--all"]).ok();

    // Before any drill the fleet estimate has nothing to go on.
    let r = env.run(&["drill", "--fleet-estimate"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(r.stdout.contains("no drill has measured"), "{}", r.stdout);

    let out = env.path("drills");
    let r = env.run(&["drill", "--tenant", "t1", "--out", out.to_str().unwrap(), "--json"]).ok();
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["outcome"], "pass", "{report}");
    let tests: Vec<(&str, &str)> = report["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["outcome"].as_str().unwrap()))
        .collect();
    for name in ["restore", "row_counts", "integrity_check", "foreign_key_check", "rto", "scratch_removed"] {
        assert!(tests.contains(&(name, "pass")), "{name} did not pass: {tests:?}");
    }
    let source = rusqlite::Connection::open(env.tenant_dir("t1").join("database.sqlite")).unwrap();
    for t in report["tables"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let n: i64 = source.query_row(&format!("SELECT count(*) FROM \"{name}\""), [], |r| r.get(0)).unwrap();
        assert_eq!((t["expected"].as_i64(), t["restored"].as_i64()), (Some(n), Some(n)), "{name}");
    }
    assert!(report["rpo_seconds"].as_i64().unwrap() >= 0 && report["bytes_read"].as_u64().unwrap() > 0);
    assert_eq!(crate::common::files_under(&env.path("state/tmp")), Vec::<std::path::PathBuf>::new());
    assert_eq!(env.store_files("reports/t1/drills").len(), 2, "the report's JSON and page are in the store");

    // The report verifies; any one field changed, it does not.
    let file = out.join(format!("{}.json", report["id"].as_str().unwrap()));
    let r = env.run(&["drill", "--verify", file.to_str().unwrap()]).ok();
    assert!(r.stdout.contains("signature good"), "{}", r.stdout);
    crate::lifecycle::every_edit_fails(&env, &report, &["drill", "--verify"]);
    let text = crate::lifecycle::print_to_text(&env, &out.join(format!("{}.html", report["id"].as_str().unwrap())));
    let signed: reversa::drill::Report = serde_json::from_value(report.clone()).unwrap();
    use reversa::signed::Signed;
    assert!(text.contains("t1") && text.contains(&signed.signature_fingerprint()), "{text}");

    // With a measured throughput the fleet estimate says whether the objective holds.
    let r = env.run(&["drill", "--fleet-estimate"]).ok();
    assert!(r.stdout.contains("within it"), "{}", r.stdout);

    // A damaged pack: the drill fails (exit 6), its report names the object and counts the
    // damage, and it is still signed and stored.
    let place = env.locate_blob("t1", first_file_blob);
    place.flip();
    let r = env.run(&["drill", "--tenant", "t1", "--json"]);
    assert_eq!(r.code, 6, "{}", r.all());
    let failed: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(failed["outcome"], "fail");
    let pack = place.pack.file_name().unwrap().to_str().unwrap().to_string();
    let lost = failed["lost"].to_string();
    assert!(lost.contains(&pack), "the damaged pack is not named: {lost}");
    assert!(failed["errors"]["checksum"].as_u64().unwrap() >= 1, "{failed}");
    assert_eq!(env.store_files("reports/t1/drills").len(), 4);
    let log = env.run(&["audit", "log", "--json"]).ok().stdout;
    let drills = log.lines().filter(|l| l.contains("\"kind\":\"drill\"") && l.contains("\"event\":\"end\"")).count();
    assert_eq!(drills, 2, "{log}");
}
