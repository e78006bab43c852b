//! The human output of each verb, as snapshots (`tests/snapshots/`): a change to what an
//! operator reads shows up in review. Ids, times, hashes, sizes and durations differ from run to
//! run (a tenant's chunk boundaries follow its random key), so they are masked; the words, the
//! columns and the counts are what is compared. `INSTA_UPDATE=always cargo test snapshots`
//! rewrites them after a deliberate change.

use crate::common::{Env, SMALL};

fn filters(env: &Env) -> Vec<(String, &'static str)> {
    vec![
        (regex_escape(env.dir.path().to_str().unwrap()), "[DIR]"),
        (r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}".into(), "[ID]"),
        (r"\d{8}T\d{6}Z-[0-9a-f]{8}".into(), "[EXPORT-ID]"),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z".into(), "[TIME]"),
        (r"\d{8}T\d{6}Z".into(), "[STAMP]"),
        (r"\d{4}-\d{2}-\d{2}".into(), "[DATE]"),
        (r"\d+ -> \d+".into(), "[N] -> [N]"),
        (r"blobs: \d+ kept".into(), "blobs: [N] kept"),
        (r"[0-9a-f]{128}".into(), "[SIGNATURE]"),
        (r"[0-9a-f]{64}".into(), "[HASH]"),
        (r"\b[0-9a-f]{16}\b".into(), "[AGENT]"),
        (r"\d+\.\d+ MB/s".into(), "[RATE]"),
        (r"\d+\.\d+ MB".into(), "[MB]"),
        (r"\d+\.\d+ s\b".into(), "[SECONDS]"),
        (r"\d+\.\d+%".into(), "[PERCENT]"),
        (r"\d+ (packs|blobs|index files)".into(), "[N] $1"),
        (r"\b[\w.-]+@[\w.-]+\b".into(), "[USER@HOST]"),
    ]
}

fn regex_escape(s: &str) -> String {
    s.chars().map(|c| if c.is_alphanumeric() || c == '/' { c.to_string() } else { format!("\\{c}") }).collect()
}

#[test]
fn the_human_output_of_each_verb() {
    let env = Env::new();
    env.seed("comune-a", SMALL, 21);
    let as_ops = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--actor", "ops"]);
        env.run(&all).ok().stdout
    };
    let mut outputs: Vec<(&str, String)> = Vec::new();
    outputs.push(("backup", as_ops(&["backup", "--tenant", "comune-a"])));
    outputs.push(("generations", as_ops(&["generations", "--tenant", "comune-a"])));
    outputs.push(("check", as_ops(&["check", "--tenant", "comune-a", "--read-data"])));
    outputs.push(("forget", as_ops(&["forget", "--tenant", "comune-a", "--dry-run"])));
    outputs.push(("prune", as_ops(&["prune", "--tenant", "comune-a", "--dry-run"])));
    let to = env.path("restored");
    outputs.push(("restore", as_ops(&["restore", "--tenant", "comune-a", "--to", to.to_str().unwrap()])));
    let out = env.path("out");
    let pass = env.path("pass.txt");
    let export = ["export", "--tenant", "comune-a", "--out", out.to_str().unwrap(), "--passphrase-file"];
    outputs.push(("export", as_ops(&[&export[..], &[pass.to_str().unwrap()]].concat())));
    outputs.push(("tenant-list", as_ops(&["tenant", "list"])));
    let listing: serde_json::Value =
        serde_json::from_str(&env.run(&["generations", "--tenant", "comune-a", "--json"]).ok().stdout).unwrap();
    let gen = listing[0]["id"].as_str().unwrap().to_string();
    let hold = ["generations", "hold", "--tenant", "comune-a", "--generation", &gen, "--reason", "RG 1/2026"];
    outputs.push(("hold", as_ops(&hold)));
    outputs.push(("release", as_ops(&["generations", "release", "--tenant", "comune-a", "--generation", &gen])));
    outputs.push(("exports-list", as_ops(&["exports", "list"])));
    outputs.push(("exports-prune", as_ops(&["exports", "prune"])));
    outputs.push(("unlock", as_ops(&["unlock", "--tenant", "comune-a"])));
    outputs.push(("audit-verify", as_ops(&["audit", "verify"])));
    outputs.push(("disclosures", as_ops(&["disclosures"])));
    let log = as_ops(&["audit", "log"]);
    outputs.push(("audit-log", log));
    outputs.push(("audit-head", as_ops(&["audit", "head"])));
    let settings = {
        let mut s = insta::Settings::clone_current();
        for (re, with) in filters(&env) {
            s.add_filter(&re, with);
        }
        s.set_prepend_module_to_snapshot(false);
        s
    };
    settings.bind(|| {
        for (name, text) in outputs {
            insta::assert_snapshot!(name, text);
        }
    });
}
