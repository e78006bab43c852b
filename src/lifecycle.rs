//! The reversibility lifecycle as a pure engine: a tenant's record (contract end, contacts,
//! the transitions so far) and the configured periods in, the state at a time, every date of
//! the timeline and what the state allows out. No I/O: `commands::lifecycle` reads and writes
//! the record (sealed under the master key, `reports/<tenant>/lifecycle`).

use serde::{Deserialize, Serialize};

/// Where a tenant is on the reversibility timeline (DESIGN.md, "Lifecycle").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum State {
    Active,
    /// After the contract end: the designated administrator may still export.
    ExportWindow,
    /// No customer access; extraordinary extractions by operators only.
    Safeguard,
    Purged,
    Expiring,
    Shredded,
    Confirmed,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Active => "active",
            State::ExportWindow => "export_window",
            State::Safeguard => "safeguard",
            State::Purged => "purged",
            State::Expiring => "expiring",
            State::Shredded => "shredded",
            State::Confirmed => "confirmed",
        }
    }
}

/// `[lifecycle]`: every period of the timeline, in days. 0 is allowed (drills, tests); a
/// negative period is refused when the configuration loads ([`LifecycleConfig::validate`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    pub export_window_days: i64,
    pub safeguard_days: i64,
    pub backup_expiry_days: i64,
    pub replica_retention_days: i64,
    pub recheck_days: i64,
    pub notice_days_before: i64,
    /// Whether the purge deletes the tenant's source itself (else an operator attests it).
    pub purge_source: bool,
    /// Paths the purge also deletes and verifies gone (application logs): glob patterns, each
    /// absolute and naming `{tenant}`, so one tenant's purge never reaches another's files.
    pub extra_paths: Vec<String>,
    /// When the tenant's data key is destroyed.
    pub shred: ShredWhen,
}

/// `[lifecycle] shred`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShredWhen {
    /// Once the last generations have expired (the key outlives the purge, so the final
    /// generation stays readable for extraordinary extractions until then).
    #[default]
    AfterExpiry,
    /// With the purge: what is left in the store becomes unreadable at once.
    AtPurge,
}

impl LifecycleConfig {
    /// The first negative period, by its key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let periods = [
            ("lifecycle.export_window_days", self.export_window_days),
            ("lifecycle.safeguard_days", self.safeguard_days),
            ("lifecycle.backup_expiry_days", self.backup_expiry_days),
            ("lifecycle.replica_retention_days", self.replica_retention_days),
            ("lifecycle.recheck_days", self.recheck_days),
            ("lifecycle.notice_days_before", self.notice_days_before),
        ];
        if let Some((key, d)) = periods.into_iter().find(|(_, d)| *d < 0) {
            return Err((key, format!("is {d}: a period is a whole number of days, 0 or more")));
        }
        for p in &self.extra_paths {
            let why = if !p.starts_with('/') {
                "is not an absolute path"
            } else if !p.split('/').any(|c| c == "{tenant}") {
                "does not have {tenant} as a whole path component (…/{tenant}/…): it could reach other tenants' files"
            } else if glob::Pattern::new(&p.replace("{tenant}", "t")).is_err() {
                "is not a valid glob pattern"
            } else {
                continue;
            };
            return Err(("lifecycle.extra_paths", format!("{p:?} {why}; write e.g. \"/var/log/saas/{{tenant}}/**\"")));
        }
        Ok(())
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            export_window_days: 30,
            safeguard_days: 30,
            backup_expiry_days: 30,
            replica_retention_days: 30,
            recheck_days: 30,
            notice_days_before: 7,
            purge_source: false,
            extra_paths: Vec::new(),
            shred: ShredWhen::AfterExpiry,
        }
    }
}

/// One step the tenant took, and who made it (or `reversa` for a tick).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    pub state: State,
    pub at: jiff::Timestamp,
    pub by: String,
}

/// A tenant's lifecycle record. Its contacts name people, so it is sealed; it outlives the
/// tenant's data (the certificates point at it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub tenant: String,
    /// The customer's designated administrator (an email address).
    #[serde(default)]
    pub admin: Option<String>,
    #[serde(default)]
    pub contacts: Vec<String>,
    /// When the contract ends (or ended): the export window starts then.
    #[serde(default)]
    pub contract_end: Option<jiff::Timestamp>,
    /// Every transition so far, oldest first; the last is the recorded state.
    #[serde(default)]
    pub history: Vec<Transition>,
    /// The generation taken when the safeguard began: what extraordinary extractions read,
    /// and what the purge checks before deleting the source.
    #[serde(default)]
    pub final_generation: Option<String>,
    #[serde(default)]
    pub purge: Option<Purge>,
    #[serde(default)]
    pub expiry: Option<Expiry>,
    #[serde(default)]
    pub shred: Option<Shred>,
    /// When the deletion was first confirmed clean (the final certificate), and every
    /// re-check since.
    #[serde(default)]
    pub confirmed: Vec<jiff::Timestamp>,
    /// Every notice queued for the tenant, delivered or not (`commands::notices`).
    #[serde(default)]
    pub notices: Vec<crate::notices::Notice>,
}

/// What the purge did: the certificate's account of the source's deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    pub at: jiff::Timestamp,
    pub by: String,
    /// Set when it ran before the safeguard ended (`--early`): why.
    #[serde(default)]
    pub early_reason: Option<String>,
    pub source: SourceDeletion,
    /// Paths of `[lifecycle] extra_paths` deleted (files and folders matched), all verified gone.
    pub extra_paths_deleted: u64,
    /// Object versions of uploaded exports deleted.
    pub exports_deleted: u64,
    pub final_generation: String,
}

/// How the tenant's source went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceDeletion {
    /// reversa deleted it (`purge_source = true`) and verified it gone.
    DeletedByReversa,
    /// An operator deleted it and says so (`--confirmed-by NAME`).
    ConfirmedBy(String),
}

/// What the expiry of the last generations deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expiry {
    pub at: jiff::Timestamp,
    pub generations: u64,
    /// Object versions and delete markers removed under `tenants/<tenant>/`.
    pub versions_deleted: u64,
}

/// The cryptographic erase of the tenant's data key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shred {
    pub at: jiff::Timestamp,
    pub by: String,
    /// The keystore snapshot written without the key (verified to open).
    pub snapshot: String,
    /// The snapshot versions that held the key, deleted.
    pub snapshots_deleted: Vec<String>,
}

impl Record {
    pub fn new(tenant: &str) -> Record {
        Record {
            tenant: tenant.to_string(),
            admin: None,
            contacts: Vec::new(),
            contract_end: None,
            history: Vec::new(),
            final_generation: None,
            purge: None,
            expiry: None,
            shred: None,
            confirmed: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// Record that the tenant entered `state`, and queue the notice that says so.
    pub fn enter(&mut self, state: State, at: jiff::Timestamp, by: &str) {
        self.history.push(Transition { state, at, by: by.to_string() });
        let terminated = self.contract_end.is_some();
        self.notify(crate::notices::Event::StateChanged { state, terminated }, at);
    }

    /// Queue a notice.
    pub fn notify(&mut self, event: crate::notices::Event, at: jiff::Timestamp) {
        self.notices.push(crate::notices::Notice::new(event, at));
    }

    /// The state the record says the tenant is in (a tick moves it on as dates pass).
    pub fn state(&self) -> State {
        self.history.last().map_or(State::Active, |t| t.state)
    }
}

/// Every date of a terminated tenant's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeline {
    pub contract_end: jiff::Timestamp,
    pub export_window_end: jiff::Timestamp,
    /// Also when the purge is due.
    pub safeguard_end: jiff::Timestamp,
    /// When the purge ran, once it has.
    pub purged: Option<jiff::Timestamp>,
    /// When the last generations expire: the purge's date (its due date until it runs) plus
    /// `backup_expiry_days`.
    pub backups_expire: jiff::Timestamp,
    /// When the provider's own VM replicas of the source expire (attested, not seen): the
    /// purge plus `replica_retention_days`.
    pub replicas_expire: jiff::Timestamp,
    /// Before this, a notice tells the admin and the contacts that the export window closes.
    pub export_window_notice: jiff::Timestamp,
    /// When the confirmed deletion is checked again: the last confirmation plus `recheck_days`.
    pub recheck: Option<jiff::Timestamp>,
}

fn days(n: i64) -> jiff::SignedDuration {
    jiff::SignedDuration::from_hours(24 * n)
}

impl Timeline {
    /// The dates of a contract that ended (or ends) at `contract_end`, before any purge.
    pub fn of(contract_end: jiff::Timestamp, cfg: &LifecycleConfig) -> Timeline {
        let export_window_end = contract_end + days(cfg.export_window_days);
        let safeguard_end = export_window_end + days(cfg.safeguard_days);
        Timeline {
            contract_end,
            export_window_end,
            safeguard_end,
            purged: None,
            backups_expire: safeguard_end + days(cfg.backup_expiry_days),
            replicas_expire: safeguard_end + days(cfg.replica_retention_days),
            export_window_notice: export_window_end - days(cfg.notice_days_before.min(cfg.export_window_days)),
            recheck: None,
        }
    }

    /// The dates of `record`'s timeline, with what its jobs did (the purge's real date moves
    /// the expiries); `None` for a tenant never terminated.
    pub fn of_record(record: &Record, cfg: &LifecycleConfig) -> Option<Timeline> {
        let mut t = Timeline::of(record.contract_end?, cfg);
        if let Some(p) = &record.purge {
            t.purged = Some(p.at);
            t.backups_expire = p.at + days(cfg.backup_expiry_days);
            t.replicas_expire = p.at + days(cfg.replica_retention_days);
        }
        t.recheck = record.confirmed.last().map(|c| *c + days(cfg.recheck_days));
        Some(t)
    }

    /// The state the dates alone lead to at `now`: the purge and the steps after it are jobs
    /// that move the record on, never a date by itself.
    pub fn state_at(&self, now: jiff::Timestamp) -> State {
        if now < self.contract_end {
            State::Active
        } else if now < self.export_window_end {
            State::ExportWindow
        } else {
            State::Safeguard
        }
    }
}

/// What a job asks to do with a tenant, as the lifecycle gates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A scheduled or asked backup.
    Backup,
    /// The customer's export (the designated administrator's).
    Export,
    /// A restore: data given to someone, like an export; from the safeguard on, an operator
    /// makes an extraordinary extraction instead (ticket, reason, only what was asked).
    Restore,
    /// The daily retention policy (`forget`): a terminated tenant's generations expire with its
    /// lifecycle instead, and the final one is kept until then.
    Forget,
}

/// What `state` allows, by name, as `tenant status` and the webhook say it: `backup`,
/// `export` and `forget` until the export window ends, `extraordinary_export` in the safeguard.
pub fn allowed(tenant: &str, state: State) -> Vec<&'static str> {
    let uses = [("backup", Use::Backup), ("export", Use::Export), ("restore", Use::Restore), ("forget", Use::Forget)];
    let mut out: Vec<&'static str> =
        uses.iter().filter(|(_, u)| allows(tenant, state, *u).is_ok()).map(|(n, _)| *n).collect();
    if state == State::Safeguard {
        out.push("extraordinary_export");
    }
    out
}

/// Whether `state` allows `what`; the refusal says why and what is still possible.
pub fn allows(tenant: &str, state: State, what: Use) -> Result<(), String> {
    match (what, state) {
        (_, State::Active | State::ExportWindow) => Ok(()),
        (Use::Forget, _) => Err(format!(
            "tenant {tenant} is in its {} state: its generations are kept until they expire with its lifecycle, \
             not under the daily policy; `reversa tenant status {tenant}` shows when",
            state.name()
        )),
        (Use::Backup, _) => Err(format!(
            "tenant {tenant} is in its {} state: it gets no new generation (the final one was taken when the \
             safeguard began); `reversa tenant status {tenant}` shows its timeline",
            state.name()
        )),
        (Use::Restore, _) => Err(format!(
            "tenant {tenant} is in its {} state: its data are not restored any more; during the safeguard an \
             operator makes an extraordinary extraction (`reversa export --extraordinary`); `reversa tenant status \
             {tenant}` shows its timeline",
            state.name()
        )),
        (Use::Export, _) => Err(format!(
            "tenant {tenant} is in its {} state: its export window is over, so the customer gets no export; \
             `reversa tenant status {tenant}` shows its timeline",
            state.name()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_dates_follow_the_periods_and_lead_the_state() {
        let t = Timeline::of(at("2026-12-31T23:00:00Z"), &LifecycleConfig::default());
        assert_eq!(t.export_window_end, at("2027-01-30T23:00:00Z"));
        assert_eq!(t.safeguard_end, at("2027-03-01T23:00:00Z"));
        assert_eq!(t.backups_expire, at("2027-03-31T23:00:00Z"));
        assert_eq!(t.export_window_notice, at("2027-01-23T23:00:00Z"));
        assert_eq!(t.state_at(at("2026-12-31T22:59:59Z")), State::Active);
        assert_eq!(t.state_at(at("2026-12-31T23:00:00Z")), State::ExportWindow);
        assert_eq!(t.state_at(at("2027-01-30T23:00:00Z")), State::Safeguard);
        assert_eq!(t.state_at(at("2099-01-01T00:00:00Z")), State::Safeguard, "a date never purges");
        let zero = LifecycleConfig { export_window_days: 0, safeguard_days: 0, ..LifecycleConfig::default() };
        let t = Timeline::of(at("2026-12-31T23:00:00Z"), &zero);
        assert_eq!(t.state_at(at("2026-12-31T23:00:00Z")), State::Safeguard);
    }

    #[test]
    fn exports_and_backups_stop_with_the_export_window() {
        for s in [State::Active, State::ExportWindow] {
            allows("t", s, Use::Export).unwrap();
            allows("t", s, Use::Backup).unwrap();
        }
        let e = allows("t", State::Safeguard, Use::Export).unwrap_err();
        assert!(e.contains("safeguard") && e.contains("tenant status"), "{e}");
        assert!(allows("t", State::Purged, Use::Backup).is_err());
    }

    #[test]
    fn a_negative_period_is_named() {
        let cfg = toml::from_str::<LifecycleConfig>("safeguard_days = -1").unwrap();
        let (key, why) = cfg.validate().unwrap_err();
        assert_eq!(key, "lifecycle.safeguard_days");
        assert!(why.contains("-1") && why.contains("0 or more"), "{why}");
        toml::from_str::<LifecycleConfig>("export_window_days = 0").unwrap().validate().unwrap();
        // `comune` must never reach `comune-a`'s logs: {tenant} is a whole path component.
        let cfg = toml::from_str::<LifecycleConfig>(r#"extra_paths = ["/var/log/{tenant}-*.log"]"#).unwrap();
        assert_eq!(cfg.validate().unwrap_err().0, "lifecycle.extra_paths");
        let cfg = toml::from_str::<LifecycleConfig>(r#"extra_paths = ["/var/log/saas/{tenant}/**"]"#).unwrap();
        cfg.validate().unwrap();
    }
}
