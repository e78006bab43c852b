//! Retention: which generations of a tenant to keep. A pure policy engine (no I/O, no clock):
//! `forget` feeds it the generations, their times and the legal holds, and deletes the manifests
//! of what it forgets. The semantics are restic's `forget`:
//!
//! - `keep_daily = N`: the newest generation of each of the last N days that have one. Days,
//!   ISO weeks and months are counted in `time_zone` (Europe/Rome by default), so a backup at
//!   00:30 in Rome belongs to that Rome day whatever its UTC date, across both DST changes.
//! - `keep_weekly = N`, `keep_monthly = N`: the same with ISO weeks and calendar months.
//! - `keep_within = "30d"`: every generation at most that much older than the newest one. The
//!   reference is the newest generation, not the clock (as restic does): when backups stop, for a
//!   broken agent or a purged source, running `forget` does not eat into the history that is left.
//! - The newest generation is always kept, and so is every generation on legal hold.
//!
//! Every rule looks at all generations, held or not, so a held generation can also be the one a
//! bucket keeps. Applying the policy to what it keeps forgets nothing more: every bucket's newest
//! generation is still there and still the newest of its bucket.

use std::collections::HashMap;

use jiff::civil::Date;
use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// Which generations `forget` keeps (see `retention`). A generation is kept if any rule keeps it
/// or it is on legal hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// The newest generation of each of the last N days that have one.
    pub keep_daily: u32,
    /// The newest generation of each of the last N ISO weeks that have one.
    pub keep_weekly: u32,
    /// The newest generation of each of the last N months that have one.
    pub keep_monthly: u32,
    /// Every generation younger than this duration (e.g. "30d", "6w", "12h"); empty: none.
    pub keep_within: String,
    /// The time zone days, weeks and months are counted in.
    pub time_zone: String,
    /// A policy that may keep less than 28 days of history is refused unless this is set (see
    /// `retention::Policy::keeps_minimum_history` for what counts); when set, `forget` warns.
    pub allow_short_retention: bool,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_daily: 28,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_within: String::new(),
            time_zone: "Europe/Rome".into(),
            allow_short_retention: false,
        }
    }
}

/// The history (in days) the contracts promise: daily backups, kept at least 4 weeks.
pub const MIN_HISTORY_DAYS: i64 = 28;

/// A policy that the configuration does not allow; `key` is the configuration key to change.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyError {
    pub key: &'static str,
    pub message: String,
}

/// A validated retention policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    /// The `keep_within` duration and its text as configured (for reasons: `within 30d`).
    pub keep_within: Option<(SignedDuration, String)>,
    pub time_zone: TimeZone,
    /// Set when the policy may keep less than [`MIN_HISTORY_DAYS`] of history and
    /// `allow_short_retention` allowed it: the warning to give.
    pub short_warning: Option<String>,
}

/// One generation as the policy sees it.
#[derive(Debug, Clone)]
pub struct GenerationTime {
    pub id: String,
    pub time: Timestamp,
}

/// What the policy decided for one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    /// RFC 3339 UTC.
    pub time: String,
    pub keep: bool,
    /// Every rule that keeps it, with its bucket: `newest`, `hold: <reason>`, `within 30d`,
    /// `daily 2026-11-20`, `weekly 2026-W47`, `monthly 2026-11`. Empty when it is forgotten.
    pub reasons: Vec<String>,
}

/// A legal hold on one generation, sealed in the store at `tenants/<t>/holds/<generation id>`
/// (docs/FORMAT.md). The reason may name people, so it is only ever stored sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    pub generation: String,
    pub reason: Option<String>,
    /// RFC 3339 UTC, when the hold was placed (or last changed).
    pub created: String,
    /// Who placed it (or last changed it); absent in holds written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// What the hold said before each change, oldest first: a reason (a court case) is never
    /// lost by placing the hold again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HoldState>,
}

/// A hold as it was before a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldState {
    pub reason: Option<String>,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl Hold {
    /// How the hold reads as a reason to keep its generation.
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(r) => format!("hold: {r}"),
            None => "hold".into(),
        }
    }
}

/// `"30d"`, `"6w"`, `"12h"`, `"2w3d"`: whole numbers with a unit each (h hours, d days of 24
/// hours, w weeks). Months and years are not offered: their length varies, and `keep_monthly`
/// is the rule for calendar months.
pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let bad = |why: &str| {
        format!(
            "{text:?} is not a duration ({why}); write whole numbers with a unit each: h (hours), d (days), w \
             (weeks), for example \"30d\" or \"4w2d\""
        )
    };
    let mut total: i64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("it is empty"));
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("a number must come before each unit"));
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad("the number is too large"))?;
        let mut units = rest[digits..].chars();
        let hours = match units.next() {
            Some('h') => 1,
            Some('d') => 24,
            Some('w') => 24 * 7,
            Some(c) => return Err(bad(&format!("unknown unit {c:?}"))),
            None => return Err(bad("the last number has no unit")),
        };
        total = n.checked_mul(hours).and_then(|h| total.checked_add(h)).ok_or_else(|| bad("it is too long"))?;
        rest = units.as_str();
    }
    if total == 0 {
        return Err(bad("it is zero; leave keep_within empty for no within rule"));
    }
    // Bounded by i64 hours above, and well inside what a timestamp difference can be.
    SignedDuration::try_from_hours(total).ok_or_else(|| bad("it is too long"))
}

impl Policy {
    /// Validate the `[retention]` section. The time zone comes from the tz database bundled in
    /// the binary, so the same policy decides the same way on every machine.
    pub fn from_config(c: &RetentionConfig) -> Result<Policy, PolicyError> {
        let time_zone = TimeZoneDatabase::bundled().get(&c.time_zone).map_err(|_| PolicyError {
            key: "retention.time_zone",
            message: format!(
                "{:?} is not a known time zone; use an IANA name such as \"Europe/Rome\" or \"UTC\"",
                c.time_zone
            ),
        })?;
        let keep_within = match c.keep_within.trim() {
            "" => None,
            text => Some((
                parse_duration(text).map_err(|message| PolicyError { key: "retention.keep_within", message })?,
                text.to_string(),
            )),
        };
        let mut policy = Policy {
            keep_daily: c.keep_daily,
            keep_weekly: c.keep_weekly,
            keep_monthly: c.keep_monthly,
            keep_within,
            time_zone,
            short_warning: None,
        };
        if !policy.keeps_minimum_history() {
            let what = format!(
                "the policy ({}) may keep less than {MIN_HISTORY_DAYS} days of history, short of the \
                 contracts' 4 weeks",
                policy.rules()
            );
            if !c.allow_short_retention {
                return Err(PolicyError {
                    key: "retention",
                    message: format!(
                        "{what}; keep more (keep_daily >= 28, keep_within >= \"28d\", keep_weekly >= 6 or \
                         keep_monthly >= 3), or set allow_short_retention = true if that is really intended"
                    ),
                });
            }
            policy.short_warning = Some(format!("{what} (allowed by allow_short_retention = true)"));
        }
        Ok(policy)
    }

    /// Whether some rule, on its own, always keeps a generation from at least 28 calendar days
    /// (counted like `keep_daily`, both ends included) before the newest one, when backups run
    /// daily, whatever the time of day or the weekday they run. The rules add up as the longest
    /// of them, so one rule must reach that far:
    ///
    /// - `keep_daily >= 28`: the 28 newest days, one generation each;
    /// - `keep_within >= 28d`: everything in the 28 days before the newest;
    /// - `keep_weekly >= 6`: with the newest on a Monday and the oldest kept week's newest on
    ///   its Sunday, N weeks reach back (N - 2) * 7 + 2 days; 5 weeks reach only 23;
    /// - `keep_monthly >= 3`: with the newest on the 1st and the oldest kept month's newest on
    ///   its last day, 3 months reach at least 28 (February) + 2 days; 2 months only 2.
    ///
    /// Weekly and monthly rules keep one restore point a week or a month, not one a day.
    pub fn keeps_minimum_history(&self) -> bool {
        self.keep_daily as i64 >= MIN_HISTORY_DAYS
            || self.keep_within.as_ref().is_some_and(|(d, _)| *d >= SignedDuration::from_hours(MIN_HISTORY_DAYS * 24))
            || self.keep_weekly >= 6
            || self.keep_monthly >= 3
    }

    /// The policy in words, for output: `keep_daily = 28, keep_weekly = 4 (days in Europe/Rome)`.
    pub fn describe(&self) -> String {
        format!("{} (days in {})", self.rules(), self.time_zone.iana_name().unwrap_or("a fixed offset"))
    }

    /// The rules that keep something, `keep_daily = 28, keep_weekly = 4`.
    fn rules(&self) -> String {
        let mut parts = Vec::new();
        for (name, n) in
            [("keep_daily", self.keep_daily), ("keep_weekly", self.keep_weekly), ("keep_monthly", self.keep_monthly)]
        {
            if n > 0 {
                parts.push(format!("{name} = {n}"));
            }
        }
        if let Some((_, text)) = &self.keep_within {
            parts.push(format!("keep_within = {text:?}"));
        }
        if parts.is_empty() {
            parts.push("no rule: only the newest generation".into());
        }
        parts.join(", ")
    }

    /// Decide, for each generation, whether to keep it and why. `holds` maps a held generation's
    /// id to the reason shown for it (see [`Hold::describe`]). The decisions come oldest first.
    pub fn apply(&self, generations: &[GenerationTime], holds: &HashMap<String, String>) -> Vec<Decision> {
        let mut order: Vec<&GenerationTime> = generations.iter().collect();
        // Newest first; ids break ties, as they sort by time to the microsecond.
        order.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
        let newest = order.first().map(|g| g.time);
        let mut daily = Bucket::new(self.keep_daily);
        let mut weekly = Bucket::new(self.keep_weekly);
        let mut monthly = Bucket::new(self.keep_monthly);
        let mut decisions: Vec<Decision> = order
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let mut reasons = Vec::new();
                if i == 0 {
                    reasons.push("newest".to_string());
                }
                if let Some(h) = holds.get(&g.id) {
                    reasons.push(h.clone());
                }
                if let (Some((within, text)), Some(newest)) = (&self.keep_within, newest) {
                    if newest.duration_since(g.time) <= *within {
                        reasons.push(format!("within {text}"));
                    }
                }
                let date = self.time_zone.to_datetime(g.time).date();
                let week = date.iso_week_date();
                if daily.take(Label::Day(date)) {
                    reasons.push(format!("daily {}", date.strftime("%Y-%m-%d")));
                }
                if weekly.take(Label::Week(week.year(), week.week())) {
                    reasons.push(format!("weekly {}-W{:02}", week.year(), week.week()));
                }
                if monthly.take(Label::Month(date.year(), date.month())) {
                    reasons.push(format!("monthly {}", date.strftime("%Y-%m")));
                }
                Decision {
                    id: g.id.clone(),
                    time: g.time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    keep: !reasons.is_empty(),
                    reasons,
                }
            })
            .collect();
        decisions.reverse();
        decisions
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Day(Date),
    Week(i16, i8),
    Month(i16, i8),
}

/// One rule's count of buckets still to fill. Generations arrive newest first, so labels never
/// come back once left: the first generation with a new label is the newest of its bucket.
struct Bucket {
    left: u32,
    last: Option<Label>,
}

impl Bucket {
    fn new(count: u32) -> Bucket {
        Bucket { left: count, last: None }
    }

    fn take(&mut self, label: Label) -> bool {
        if self.left == 0 || self.last == Some(label) {
            return false;
        }
        self.left -= 1;
        self.last = Some(label);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(daily: u32, weekly: u32, monthly: u32, within: &str) -> Policy {
        let c = RetentionConfig {
            keep_daily: daily,
            keep_weekly: weekly,
            keep_monthly: monthly,
            keep_within: within.into(),
            allow_short_retention: true,
            ..RetentionConfig::default()
        };
        Policy::from_config(&c).unwrap()
    }

    /// Generations named by their UTC times, so the expectations read as times.
    fn gens(times: &[&str]) -> Vec<GenerationTime> {
        times.iter().map(|t| GenerationTime { id: t.to_string(), time: t.parse().unwrap() }).collect()
    }

    fn decide(p: &Policy, times: &[&str]) -> Vec<Decision> {
        p.apply(&gens(times), &HashMap::new())
    }

    fn kept(d: &[Decision]) -> Vec<&str> {
        d.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect()
    }

    fn reasons<'a>(d: &'a [Decision], id: &str) -> Vec<&'a str> {
        d.iter().find(|d| d.id == id).unwrap().reasons.iter().map(String::as_str).collect()
    }

    /// Applying the policy to what it keeps keeps all of it again.
    fn assert_stable(p: &Policy, times: &[&str], holds: &HashMap<String, String>) {
        let first = p.apply(&gens(times), holds);
        let kept: Vec<&str> = kept(&first);
        let second = p.apply(&gens(&kept), holds);
        assert!(second.iter().all(|d| d.keep), "a second pass forgets more: {second:?}");
        for d in &second {
            let before = first.iter().find(|f| f.id == d.id).unwrap();
            assert_eq!(d.reasons, before.reasons, "{}", d.id);
        }
    }

    #[test]
    fn daily_keeps_the_newest_of_each_of_the_last_days_that_have_one() {
        // 2026-11-10 .. 2026-11-20 with a gap of five days (12 to 16) and three generations on the
        // 18th; Rome is UTC+1 in November.
        let times = [
            "2026-11-10T02:00:00Z",
            "2026-11-11T02:00:00Z",
            "2026-11-17T02:00:00Z",
            "2026-11-18T02:00:00Z",
            "2026-11-18T09:00:00Z",
            "2026-11-18T15:00:00Z",
            "2026-11-19T02:00:00Z",
            "2026-11-20T02:00:00Z",
        ];
        let d = decide(&policy(5, 0, 0, ""), &times);
        // Five days that have one: 20, 19, 18, 17 and 11 (the gap is not counted).
        assert_eq!(
            kept(&d),
            [
                "2026-11-11T02:00:00Z",
                "2026-11-17T02:00:00Z",
                "2026-11-18T15:00:00Z",
                "2026-11-19T02:00:00Z",
                "2026-11-20T02:00:00Z"
            ]
        );
        assert_eq!(reasons(&d, "2026-11-20T02:00:00Z"), ["newest", "daily 2026-11-20"]);
        assert_eq!(reasons(&d, "2026-11-11T02:00:00Z"), ["daily 2026-11-11"]);
        assert_eq!(reasons(&d, "2026-11-18T09:00:00Z"), Vec::<&str>::new());
        assert!(!d.iter().find(|d| d.id == "2026-11-10T02:00:00Z").unwrap().keep);
        assert_stable(&policy(5, 0, 0, ""), &times, &HashMap::new());
    }

    #[test]
    fn days_follow_rome_across_the_march_dst_change() {
        // Rome moves from UTC+1 to UTC+2 on 2026-03-29 at 02:00 local (01:00 UTC).
        let times = [
            "2026-03-28T22:30:00Z", // 23:30 on the 28th in Rome (UTC+1)
            "2026-03-28T23:30:00Z", // 00:30 on the 29th in Rome, still the 28th in UTC
            "2026-03-29T21:30:00Z", // 23:30 on the 29th in Rome (UTC+2)
            "2026-03-29T22:30:00Z", // 00:30 on the 30th in Rome, still the 29th in UTC
        ];
        let d = decide(&policy(3, 0, 0, ""), &times);
        assert_eq!(reasons(&d, "2026-03-29T22:30:00Z"), ["newest", "daily 2026-03-30"]);
        assert_eq!(reasons(&d, "2026-03-29T21:30:00Z"), ["daily 2026-03-29"]);
        // 00:30 on the 29th is older than 23:30 the same day in Rome: forgotten.
        assert_eq!(reasons(&d, "2026-03-28T23:30:00Z"), Vec::<&str>::new());
        assert_eq!(reasons(&d, "2026-03-28T22:30:00Z"), ["daily 2026-03-28"]);
        // Counted in UTC, the days would be others: two generations on the 29th, two on the 28th.
        let utc = Policy { time_zone: TimeZone::UTC, ..policy(3, 0, 0, "") };
        assert_eq!(kept(&decide(&utc, &times)), ["2026-03-28T23:30:00Z", "2026-03-29T22:30:00Z"]);
        assert_stable(&policy(3, 0, 0, ""), &times, &HashMap::new());
    }

    #[test]
    fn days_follow_rome_across_the_october_dst_change() {
        // Rome moves from UTC+2 back to UTC+1 on 2026-10-25 at 03:00 local (01:00 UTC); the hour
        // from 02:00 to 03:00 happens twice, and the 25th lasts 25 hours.
        let times = [
            "2026-10-24T21:30:00Z", // 23:30 on the 24th in Rome (UTC+2)
            "2026-10-24T22:30:00Z", // 00:30 on the 25th in Rome
            "2026-10-25T00:30:00Z", // 02:30 CEST, the first 02:30 of the 25th
            "2026-10-25T01:30:00Z", // 02:30 CET, the second 02:30
            "2026-10-25T22:30:00Z", // 23:30 on the 25th in Rome (UTC+1)
            "2026-10-25T23:30:00Z", // 00:30 on the 26th in Rome, still the 25th in UTC
        ];
        let d = decide(&policy(3, 0, 0, ""), &times);
        assert_eq!(reasons(&d, "2026-10-25T23:30:00Z"), ["newest", "daily 2026-10-26"]);
        assert_eq!(reasons(&d, "2026-10-25T22:30:00Z"), ["daily 2026-10-25"]);
        assert_eq!(reasons(&d, "2026-10-24T21:30:00Z"), ["daily 2026-10-24"]);
        for forgotten in ["2026-10-24T22:30:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"] {
            assert_eq!(reasons(&d, forgotten), Vec::<&str>::new(), "{forgotten}");
        }
        assert_stable(&policy(3, 0, 0, ""), &times, &HashMap::new());
    }

    #[test]
    fn weekly_buckets_are_iso_weeks_and_monthly_buckets_calendar_months() {
        let times = [
            "2026-11-29T10:00:00Z", // Sunday, 2026-W48, November
            "2026-11-30T10:00:00Z", // Monday, 2026-W49, November
            "2026-12-06T10:00:00Z", // Sunday, 2026-W49, December
            "2026-12-31T10:00:00Z", // Thursday, 2026-W53 (2026 has 53 ISO weeks), December
            "2027-01-01T10:00:00Z", // Friday, still 2026-W53, January
            "2027-01-04T10:00:00Z", // Monday, 2027-W01, January
        ];
        let d = decide(&policy(0, 3, 0, ""), &times);
        assert_eq!(reasons(&d, "2027-01-04T10:00:00Z"), ["newest", "weekly 2027-W01"]);
        assert_eq!(reasons(&d, "2027-01-01T10:00:00Z"), ["weekly 2026-W53"]);
        assert_eq!(reasons(&d, "2026-12-31T10:00:00Z"), Vec::<&str>::new());
        assert_eq!(reasons(&d, "2026-12-06T10:00:00Z"), ["weekly 2026-W49"]);
        assert_eq!(kept(&d).len(), 3);

        let d = decide(&policy(0, 0, 2, ""), &times);
        assert_eq!(reasons(&d, "2027-01-04T10:00:00Z"), ["newest", "monthly 2027-01"]);
        assert_eq!(reasons(&d, "2026-12-31T10:00:00Z"), ["monthly 2026-12"]);
        assert_eq!(kept(&d).len(), 2);
        // Months are Rome's too: 23:30 UTC on 30 November is 1 December in Rome.
        let d = decide(&policy(0, 0, 2, ""), &["2026-11-30T22:00:00Z", "2026-11-30T23:30:00Z"]);
        assert_eq!(reasons(&d, "2026-11-30T23:30:00Z"), ["newest", "monthly 2026-12"]);
        assert_eq!(reasons(&d, "2026-11-30T22:00:00Z"), ["monthly 2026-11"]);

        let combined = policy(2, 2, 2, "");
        let d = decide(&combined, &times);
        assert_eq!(
            reasons(&d, "2027-01-04T10:00:00Z"),
            ["newest", "daily 2027-01-04", "weekly 2027-W01", "monthly 2027-01"]
        );
        assert_eq!(reasons(&d, "2027-01-01T10:00:00Z"), ["daily 2027-01-01", "weekly 2026-W53"]);
        assert_eq!(reasons(&d, "2026-12-31T10:00:00Z"), ["monthly 2026-12"]);
        assert_stable(&combined, &times, &HashMap::new());
    }

    #[test]
    fn keep_within_counts_back_from_the_newest_generation() {
        let times = ["2026-11-01T10:00:00Z", "2026-11-02T09:59:59Z", "2026-11-02T10:00:00Z", "2026-11-09T10:00:00Z"];
        let d = decide(&policy(0, 0, 0, "1w"), &times);
        // Exactly one week before the newest is still within; a second more is not.
        assert_eq!(kept(&d), ["2026-11-02T10:00:00Z", "2026-11-09T10:00:00Z"]);
        assert_eq!(reasons(&d, "2026-11-02T10:00:00Z"), ["within 1w"]);
        assert_eq!(reasons(&d, "2026-11-09T10:00:00Z"), ["newest", "within 1w"]);
        assert_stable(&policy(0, 0, 0, "1w"), &times, &HashMap::new());
    }

    #[test]
    fn holds_and_the_newest_are_always_kept() {
        let times = ["2026-01-05T10:00:00Z", "2026-06-05T10:00:00Z", "2026-11-05T10:00:00Z", "2026-11-05T11:00:00Z"];
        let holds = HashMap::from([("2026-01-05T10:00:00Z".to_string(), "hold: ricorso TAR 123/2026".to_string())]);
        let only_newest = policy(0, 0, 0, "");
        let d = only_newest.apply(&gens(&times), &holds);
        assert_eq!(kept(&d), ["2026-01-05T10:00:00Z", "2026-11-05T11:00:00Z"]);
        assert_eq!(reasons(&d, "2026-01-05T10:00:00Z"), ["hold: ricorso TAR 123/2026"]);
        assert_eq!(reasons(&d, "2026-11-05T11:00:00Z"), ["newest"]);
        assert_stable(&only_newest, &times, &holds);
        // A held generation is also its bucket's newest when it is.
        let d = policy(1, 0, 0, "").apply(&gens(&times[..1]), &holds);
        assert_eq!(reasons(&d, "2026-01-05T10:00:00Z"), ["newest", "hold: ricorso TAR 123/2026", "daily 2026-01-05"]);
        assert!(policy(3, 0, 0, "").apply(&[], &holds).is_empty());
    }

    #[test]
    fn a_long_series_is_stable_under_every_rule() {
        // Four months of backups at 00:30 and 12:30 Rome time, crossing the October DST change.
        let mut times = Vec::new();
        let tz = TimeZoneDatabase::bundled().get("Europe/Rome").unwrap();
        let mut day = jiff::civil::date(2026, 8, 1);
        while day < jiff::civil::date(2026, 12, 1) {
            for (h, m) in [(0, 30), (12, 30)] {
                let t = day.at(h, m, 0, 0).to_zoned(tz.clone()).unwrap().timestamp();
                times.push(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
            day = day.tomorrow().unwrap();
        }
        let times: Vec<&str> = times.iter().map(String::as_str).collect();
        let p = policy(28, 6, 3, "3d");
        let d = decide(&p, &times);
        // 28 days, plus weeks and months reaching past them.
        let daily = d.iter().filter(|d| d.reasons.iter().any(|r| r.starts_with("daily"))).count();
        assert_eq!(daily, 28);
        // Every daily keep is the 12:30 one, the newest of its Rome day, also across DST.
        for d in d.iter().filter(|d| d.reasons.iter().any(|r| r.starts_with("daily"))) {
            let local = tz.to_datetime(d.id.parse().unwrap());
            assert_eq!((local.hour(), local.minute()), (12, 30), "{}", d.id);
        }
        assert_eq!(d.iter().filter(|d| d.reasons.iter().any(|r| r.starts_with("monthly"))).count(), 3);
        assert_eq!(d.iter().filter(|d| d.reasons.iter().any(|r| r.starts_with("weekly"))).count(), 6);
        // Three days back from 30 November 12:30: six generations and the one at exactly 72 h.
        assert_eq!(d.iter().filter(|d| d.reasons.iter().any(|r| r.starts_with("within"))).count(), 7);
        assert_stable(&p, &times, &HashMap::new());
    }

    #[test]
    fn durations_parse_or_say_how_to_write_them() {
        assert_eq!(parse_duration("30d").unwrap(), SignedDuration::from_hours(720));
        assert_eq!(parse_duration("4w2d").unwrap(), SignedDuration::from_hours(30 * 24));
        assert_eq!(parse_duration("12h").unwrap(), SignedDuration::from_hours(12));
        for bad in ["30", "d", "30 days", "3m", "0d", "-1d", "99999999999999999999d"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")) && e.contains("\"30d\""), "{bad}: {e}");
        }
    }

    #[test]
    fn short_policies_are_refused_unless_allowed() {
        let check = |daily, weekly, monthly, within: &str| {
            let c = RetentionConfig {
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
                keep_within: within.into(),
                ..RetentionConfig::default()
            };
            Policy::from_config(&c).map(|_| ())
        };
        assert!(check(28, 0, 0, "").is_ok());
        assert!(check(0, 0, 0, "28d").is_ok());
        assert!(check(0, 0, 0, "4w").is_ok());
        assert!(check(7, 6, 0, "").is_ok());
        assert!(check(7, 0, 3, "").is_ok());
        for (d, w, m, within) in [(27, 0, 0, ""), (0, 0, 0, "27d"), (7, 5, 0, ""), (7, 4, 2, "2w"), (0, 0, 0, "")] {
            let e = check(d, w, m, within).unwrap_err();
            assert_eq!(e.key, "retention");
            assert!(e.message.contains("allow_short_retention = true"), "{e}");
        }
        let allowed = RetentionConfig { keep_daily: 7, allow_short_retention: true, ..RetentionConfig::default() };
        let p = Policy::from_config(&allowed).unwrap();
        assert!(p.short_warning.unwrap().contains("keep_daily = 7"));
        assert!(Policy::from_config(&RetentionConfig::default()).unwrap().short_warning.is_none());
    }

    #[test]
    fn time_zones_come_from_the_bundled_database() {
        let bad = RetentionConfig { time_zone: "Europe/Roma".into(), ..RetentionConfig::default() };
        let e = Policy::from_config(&bad).unwrap_err();
        assert_eq!(e.key, "retention.time_zone");
        assert!(e.message.contains("Europe/Roma"), "{e}");
        // The bundled copy answers whatever the machine has in /usr/share/zoneinfo.
        let rome = TimeZoneDatabase::bundled().get("Europe/Rome").unwrap();
        let summer = rome.to_datetime("2026-07-01T12:00:00Z".parse().unwrap());
        assert_eq!(summer.hour(), 14);
    }
}
