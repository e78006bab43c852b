//! `reversa drill`: restore a generation into the tenant's scratch folder, check it, time it,
//! remove it, and sign the report (`reports/<tenant>/drills/`).

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::lifecycle::Step;
use super::restore::{self, RestoreOptions};
use super::{Agent, Error, Result};
use crate::drill::{self, Errors, Outcome, Report, TableCount, Test};
use crate::generation::Entry;
use crate::progress::Progress;
use crate::repository::{layout, RepoError, Repository};
use crate::signed::Signed;

/// What `drill` is asked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillOptions {
    /// The generation; the newest when absent.
    #[serde(default)]
    pub generation: Option<String>,
}

pub(crate) async fn drill(
    step: &Step<'_>,
    repo: &Repository,
    opts: &DrillOptions,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<Report> {
    let agent = step.agent;
    let tenant = repo.tenant();
    let manifest = repo.resolve_generation(opts.generation.as_deref()).await?;
    let to = agent.scratch(tenant).join(format!("drill-{}", crate::time_sortable_id()));
    let scratch = super::Scratch::create(&to)?;
    let clock = Instant::now();
    let ropts = RestoreOptions { generation: Some(manifest.id.clone()), to: to.clone(), force: false, partial: true };
    let restored = Box::pin(restore::restore(agent, repo, &ropts, cancel, progress)).await?;
    let restore_seconds = clock.elapsed().as_secs_f64();
    let mut errors = Errors::default();
    for l in &restored.lost {
        drill::classify(&l.cause, &mut errors);
    }
    let expected = expected_tables(agent, repo, &manifest).await?;
    let db = to.join(crate::source::DATABASE_FILE);
    let checks = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || database_checks(&db, &expected)).await.expect("drill checks panicked")?
    };
    drop(scratch);
    let rto = agent.config.drill.rto_seconds();
    let (tables, mut tests) = checks;
    tests.insert(0, restore_test(&restored));
    tests.push(Test {
        name: "rto".into(),
        outcome: if restore_seconds <= rto { Outcome::Pass } else { Outcome::Fail },
        detail: format!("restored in {restore_seconds:.1} s; the objective is {rto:.0} s"),
    });
    tests.push(Test {
        name: "scratch_removed".into(),
        outcome: if to.exists() { Outcome::Fail } else { Outcome::Pass },
        detail: "the restored copy was removed".into(),
    });
    let generation_time = manifest.time.parse::<jiff::Timestamp>().ok();
    let (seq, hash) = agent.audit.head()?;
    let mut report = Report {
        format: drill::FORMAT,
        id: crate::sortable_id_at(jiff::Timestamp::now()),
        tenant: tenant.to_string(),
        generation: manifest.id.clone(),
        generation_time: manifest.time.clone(),
        started: step.now,
        finished: crate::now(),
        restore_seconds,
        rto_seconds: rto,
        rpo_seconds: generation_time.map_or(0, |t| step.now.duration_since(t).as_secs()),
        bytes_read: restored.bytes,
        files: restored.files,
        outcome: drill::outcome(&tests),
        tables,
        tests,
        errors,
        lost: restored.lost.iter().map(|l| format!("{}: {}", l.what, l.cause)).collect(),
        actor: step.actor.to_string(),
        agent: agent.audit.agent_id().to_string(),
        audit_head: crate::certificate::AuditHead { seq, hash },
        signature: String::new(),
    };
    report.signature = agent.audit.sign(&report.signed_bytes());
    store(agent, &report).await?;
    Ok(report)
}

fn restore_test(r: &restore::RestoreReport) -> Test {
    match r.lost.len() {
        0 => Test {
            name: "restore".into(),
            outcome: Outcome::Pass,
            detail: format!("{} tables, {} files; every blob read was verified", r.tables, r.files),
        },
        n => Test {
            name: "restore".into(),
            outcome: Outcome::Fail,
            detail: format!("{n} entries could not be restored"),
        },
    }
}

/// Every table of the generation with the rows its manifest records.
async fn expected_tables(
    agent: &Agent,
    repo: &Repository,
    manifest: &crate::generation::Manifest,
) -> Result<Vec<(String, u64)>> {
    let index = repo.load_index_tolerant().await?.0;
    let catalog = repo.fetch_catalog(&index, manifest, &agent.scratch(repo.tenant())).await?;
    let mut out = Vec::new();
    for e in catalog.entries()? {
        if let Entry::Table { name, rows, .. } = e? {
            out.push((name, rows));
        }
    }
    Ok(out)
}

/// The restored database: each table's rows against the manifest, then SQLite's own checks.
fn database_checks(db: &Path, expected: &[(String, u64)]) -> Result<(Vec<TableCount>, Vec<Test>)> {
    let damaged = |cause: String| {
        Error::Repo(RepoError::Damaged { what: "restored database", key: db.display().to_string(), cause })
    };
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| damaged(e.to_string()))?;
    let count = |t: &str| -> rusqlite::Result<u64> {
        let sql = format!("SELECT count(*) FROM {}", crate::source::sqlite::quote(t));
        conn.query_row(&sql, [], |r| r.get::<_, i64>(0)).map(|n| n.max(0) as u64)
    };
    let tables: Vec<TableCount> = expected
        .iter()
        .map(|(name, rows)| TableCount { name: name.clone(), expected: *rows, restored: count(name).unwrap_or(0) })
        .collect();
    let off: Vec<String> = tables
        .iter()
        .filter(|t| t.expected != t.restored)
        .map(|t| format!("{} {} of {}", t.name, t.restored, t.expected))
        .collect();
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| damaged(e.to_string()))?;
    let foreign: usize = conn
        .prepare("PRAGMA foreign_key_check")
        .and_then(|mut s| Ok(s.query_map([], |_| Ok(()))?.count()))
        .map_err(|e| damaged(e.to_string()))?;
    let tests = vec![
        Test {
            name: "row_counts".into(),
            outcome: if off.is_empty() { Outcome::Pass } else { Outcome::Fail },
            detail: match off.is_empty() {
                true => format!("{} tables as the manifest records them", tables.len()),
                false => off.join(", "),
            },
        },
        Test {
            name: "integrity_check".into(),
            outcome: if integrity == ["ok"] { Outcome::Pass } else { Outcome::Fail },
            detail: integrity.into_iter().take(5).collect::<Vec<_>>().join("; "),
        },
        // A violation the source had is restored as it was: a warning, not a failed restore.
        Test {
            name: "foreign_key_check".into(),
            outcome: if foreign == 0 { Outcome::Pass } else { Outcome::Warn },
            detail: format!("{foreign} rows violate a foreign key"),
        },
    ];
    Ok((tables, tests))
}

async fn store(agent: &Agent, r: &Report) -> Result<()> {
    let tenant = crate::tenant::TenantId::parse(&r.tenant)?;
    let (json, html) = (layout::drill_report(&tenant, &r.id, "json"), layout::drill_report(&tenant, &r.id, "html"));
    super::certificate::put_signed(agent, r, &json, &html).await
}

/// `drill --verify FILE`: the report's signature and the audit entry of the drill that made it.
pub async fn verify(agent: &Agent, name: &str, bytes: &[u8]) -> Result<(Report, (String, u64, String))> {
    let damaged =
        |cause: String| Error::Repo(RepoError::Damaged { what: "drill report", key: name.to_string(), cause });
    let report: Report =
        serde_json::from_slice(bytes).map_err(|e| damaged(format!("it is not a reversa drill report: {e}")))?;
    if report.format != drill::FORMAT {
        return Err(damaged(format!("its format {} is not one this reversa reads", report.format)));
    }
    let entry = super::certificate::check_signed(agent, &report, &report.agent, "drill_report", &report.id)
        .await?
        .map_err(damaged)?;
    Ok((report, entry))
}

/// `drill --fleet-estimate`: could every tenant be restored within the recovery time objective,
/// with `[drill] parallel` restores at once, at the throughput the drills measured?
#[derive(Debug, Serialize)]
pub struct FleetEstimate {
    pub tenants: Vec<FleetLine>,
    /// The median restore throughput of the tenants' latest drills, bytes per second.
    pub throughput: Option<f64>,
    pub parallel: u32,
    /// The time to restore every tenant, the largest first, `parallel` at a time.
    pub estimate_seconds: Option<f64>,
    pub rto_seconds: f64,
    pub within_rto: bool,
}

#[derive(Debug, Serialize)]
pub struct FleetLine {
    pub tenant: String,
    /// What its newest generation restores (tables and files), in bytes.
    pub bytes: u64,
    /// Its latest drill's throughput, bytes per second, when it has one.
    pub throughput: Option<f64>,
}

pub async fn fleet_estimate(agent: &Agent) -> Result<FleetEstimate> {
    let mut tenants = Vec::new();
    for t in agent.store.list_folders(layout::TENANTS).await? {
        let Ok(tenant) = crate::tenant::TenantId::parse(&t) else { continue };
        let repo = match agent.repository(&tenant, false).await {
            Ok(r) => r,
            Err(Error::Key(crate::keys::KeyError::Shredded { .. })) => continue,
            Err(e) => return Err(e),
        };
        let Some(newest) = repo.list_generations().await?.pop() else { continue };
        let m = repo.resolve_generation(Some(&newest)).await?;
        tenants.push(FleetLine {
            tenant: t,
            bytes: m.summary.table_bytes + m.summary.file_bytes,
            throughput: latest_throughput(agent, &tenant).await?,
        });
    }
    let mut rates: Vec<f64> = tenants.iter().filter_map(|t| t.throughput).collect();
    rates.sort_by(f64::total_cmp);
    let throughput = rates.get(rates.len() / 2).copied();
    let parallel = agent.config.drill.parallel;
    let estimate_seconds =
        throughput.map(|rate| makespan(tenants.iter().map(|t| t.bytes).collect(), parallel) as f64 / rate);
    let rto_seconds = agent.config.drill.rto_seconds();
    let within_rto = estimate_seconds.is_some_and(|s| s <= rto_seconds);
    Ok(FleetEstimate { tenants, throughput, parallel, estimate_seconds, rto_seconds, within_rto })
}

/// The bytes of the busiest of `lanes` restores running at once, each tenant given, largest
/// first, to the least loaded (the longest-processing-time rule).
fn makespan(mut sizes: Vec<u64>, lanes: u32) -> u64 {
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let mut load = vec![0u64; lanes.max(1) as usize];
    for s in sizes {
        let least = load.iter_mut().min().expect("at least one lane");
        *least += s;
    }
    load.into_iter().max().unwrap_or(0)
}

async fn latest_throughput(agent: &Agent, tenant: &crate::tenant::TenantId) -> Result<Option<f64>> {
    let listed = agent.store.list(&layout::drill_reports(tenant)).await?;
    let Some(newest) = listed.iter().rev().find(|o| o.key.ends_with(".json")) else { return Ok(None) };
    let Ok(r) = serde_json::from_slice::<Report>(&agent.store.get(&newest.key).await?) else { return Ok(None) };
    Ok((r.restore_seconds > 0.0).then(|| r.bytes_read as f64 / r.restore_seconds))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_busiest_lane_is_the_fleet_estimate() {
        // Largest first to the least loaded: 5, 4 | 3 onto 4, 3 onto 5, 3 onto 7 = 10.
        assert_eq!(super::makespan(vec![5, 4, 3, 3, 3], 2), 10);
        assert_eq!(super::makespan(vec![10, 1, 1], 4), 10);
        assert_eq!(super::makespan(vec![], 4), 0);
    }
}
