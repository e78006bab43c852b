//! Notices: what the customer's administrator, its contacts and the SaaS application are told
//! of a tenant's lifecycle, by webhook (signed per the Standard Webhooks specification) and by
//! email (Italian and English). No I/O here: `commands::notices` delivers them.
//!
//! A notice is queued in the tenant's lifecycle record (sealed: it is addressed to people) by
//! the step that causes it, and delivered by the next tick; one that cannot be delivered stays
//! queued, with its error, and is retried with backoff. The lifecycle never waits on a notice.

use std::path::PathBuf;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::lifecycle::{State, Timeline};

/// `[notices]`. A channel with no address is off.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoticesConfig {
    /// Where the webhook POSTs: https, or http on loopback only.
    pub webhook_url: String,
    /// The webhook's signing secret (`whsec_…` base64, or raw text). `REVERSA_WEBHOOK_SECRET`
    /// overrides it.
    pub webhook_secret_file: Option<PathBuf>,
    /// `smtp://host:port`: always with STARTTLS. The credentials come from
    /// `REVERSA_SMTP_USERNAME` and `REVERSA_SMTP_PASSWORD`.
    pub smtp_url: String,
    /// The sender's address.
    pub from: String,
    /// A PEM file of the CA that signed the SMTP server's certificate, when the system does not
    /// trust it (a private CA).
    pub smtp_ca_file: Option<PathBuf>,
    /// The secret as the environment gave it (only the CLI reads it).
    #[serde(skip)]
    pub webhook_secret_env: Option<crate::keys::KeyText>,
    #[serde(skip)]
    pub smtp_credentials: Option<(String, crate::keys::KeyText)>,
}

impl std::fmt::Debug for NoticesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoticesConfig(webhook {:?}, smtp {:?}, from {:?})", self.webhook_url, self.smtp_url, self.from)
    }
}

impl NoticesConfig {
    /// Once the environment's secrets are in (the CLI puts them): a webhook is always signed.
    pub fn check_secrets(&self) -> Result<(), (&'static str, String)> {
        if !self.webhook_url.is_empty() && self.webhook_secret_file.is_none() && self.webhook_secret_env.is_none() {
            return Err((
                "notices.webhook_secret_file",
                "is not set, and neither is REVERSA_WEBHOOK_SECRET: a webhook is always signed".into(),
            ));
        }
        Ok(())
    }

    /// The first problem, by its key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.webhook_url.is_empty() {
            let loopback = ["http://127.0.0.1", "http://[::1]", "http://localhost"]
                .iter()
                .any(|p| self.webhook_url.strip_prefix(p).is_some_and(|r| r.is_empty() || r.starts_with([':', '/'])));
            if !(self.webhook_url.starts_with("https://") || loopback) {
                return Err((
                    "notices.webhook_url",
                    format!(
                        "{:?} is not https: a notice leaves the host only encrypted (http is for loopback)",
                        self.webhook_url
                    ),
                ));
            }
        }
        if !self.smtp_url.is_empty() {
            if !self.smtp_url.starts_with("smtp://") || smtp_host_port(&self.smtp_url).is_none() {
                return Err(("notices.smtp_url", format!("{:?} is not smtp://host:port", self.smtp_url)));
            }
            if !self.from.contains('@') {
                return Err(("notices.from", "is not an email address; set the sender of the notices".into()));
            }
        }
        Ok(())
    }
}

/// The host and port of `smtp://host:port`.
pub fn smtp_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("smtp://")?.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':')?;
    Some((host.trim_start_matches('[').trim_end_matches(']').to_string(), port.parse().ok()?))
}

/// What happened, as a notice tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// The tenant entered `state` (a termination, a cancelled one, or a step of the timeline).
    StateChanged {
        state: State,
        terminated: bool,
    },
    /// The export window closes soon.
    ExportWindowClosing,
    CertificateIssued {
        id: String,
        certificate: crate::certificate::Kind,
    },
    /// Data were given to an authority: the customer is told (job id, recipient, legal basis).
    DisclosureToAuthority {
        job: String,
        recipient: String,
        legal_basis: String,
    },
    /// A re-check found something of a confirmed deletion again.
    RecheckFailed,
}

impl Event {
    /// The webhook's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::StateChanged { .. } => "tenant.state_changed",
            Event::ExportWindowClosing => "tenant.export_window_closing",
            Event::CertificateIssued { .. } => "tenant.certificate_issued",
            Event::DisclosureToAuthority { .. } => "tenant.disclosure_to_authority",
            Event::RecheckFailed => "tenant.recheck_failed",
        }
    }
}

/// One notice and where its delivery stands on each channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    /// `msg_…`: the webhook-id, the same on every retry (receivers deduplicate on it).
    pub id: String,
    pub event: Event,
    pub created: jiff::Timestamp,
    pub webhook: Delivery,
    pub email: Delivery,
}

impl Notice {
    pub fn new(event: Event, at: jiff::Timestamp) -> Notice {
        Notice {
            id: format!("msg_{}", crate::sortable_id_at(jiff::Timestamp::now()).replace(['.', '-'], "")),
            event,
            created: at,
            webhook: Delivery::default(),
            email: Delivery::default(),
        }
    }

    /// Whether a channel still has it to deliver.
    pub fn undelivered(&self) -> bool {
        self.webhook.state.pending() || self.email.state.pending()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    #[default]
    Pending,
    Delivered,
    /// Tried and failed: retried at `next_try`.
    Failed,
    /// The channel is off, or has no one to send to.
    Skipped,
}

impl DeliveryState {
    pub fn pending(self) -> bool {
        matches!(self, DeliveryState::Pending | DeliveryState::Failed)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    pub state: DeliveryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_try: Option<jiff::Timestamp>,
    pub delivered: Option<jiff::Timestamp>,
}

impl Delivery {
    /// Whether a try is due at `now`.
    pub fn due(&self, now: jiff::Timestamp) -> bool {
        self.state.pending() && self.next_try.is_none_or(|t| t <= now)
    }

    /// Record a failed try: retried after 5 minutes, doubling up to 12 hours.
    pub fn failed(&mut self, now: jiff::Timestamp, error: String) {
        self.attempts += 1;
        self.state = DeliveryState::Failed;
        self.last_error = Some(error);
        let minutes = (5i64 << (self.attempts - 1).min(8)).min(12 * 60);
        self.next_try = Some(now + jiff::SignedDuration::from_mins(minutes));
    }

    pub fn delivered(&mut self, now: jiff::Timestamp) {
        self.attempts += 1;
        self.state = DeliveryState::Delivered;
        self.last_error = None;
        self.next_try = None;
        self.delivered = Some(now);
    }
}

/// The webhook's JSON body (docs/LIFECYCLE.md): the Standard Webhooks envelope, with the
/// tenant's state and timeline, which the SaaS application uses to block its users.
pub fn payload(n: &Notice, tenant: &str, state: State, timeline: Option<&Timeline>, allowed: &[&str]) -> Vec<u8> {
    let body = serde_json::json!({
        "type": n.event.type_name(),
        "timestamp": n.created,
        "data": {
            "tenant": tenant,
            "state": state,
            "event": n.event,
            "timeline": timeline,
            "allowed": allowed,
        }
    });
    serde_json::to_vec(&body).expect("a payload serializes")
}

/// The `webhook-signature` header per the Standard Webhooks specification: `v1,` then the
/// base64 HMAC-SHA256, under the secret, of `<webhook-id>.<webhook-timestamp>.<body>`. A secret
/// given as `whsec_<base64>` is the bytes it encodes.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = match secret.strip_prefix("whsec_").map(|s| b64.decode(s)) {
        Some(Ok(k)) => k,
        _ => secret.as_bytes().to_vec(),
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

/// The email: a subject and a plain text, in Italian then English, with the dates and what the
/// customer can still do.
pub fn email(n: &Notice, tenant: &str, state: State, timeline: Option<&Timeline>) -> (String, String) {
    // A transition is told as the state it entered, whatever the state is when it is sent.
    let state = match &n.event {
        Event::StateChanged { state, .. } => *state,
        _ => state,
    };
    let (it, en) = what_happened(&n.event, state, timeline);
    let subject = format!("[reversa] {tenant}: {}", subject_of(&n.event, state));
    let mut text = format!("Ente / Tenant: {tenant}\n\n{it}\n\n{en}\n");
    if let Some(t) = timeline {
        text.push_str("\nDate / Dates (UTC):\n");
        let rows = [
            ("Fine del contratto / Contract end", Some(t.contract_end)),
            ("Fine della finestra di esportazione / Export window ends", Some(t.export_window_end)),
            ("Fine della salvaguardia / Safeguard ends", Some(t.safeguard_end)),
            ("Cancellazione / Purge", t.purged.or(Some(t.safeguard_end))),
            ("Scadenza dei backup / Backups expire", Some(t.backups_expire)),
            ("Scadenza delle repliche / VM replicas expire", Some(t.replicas_expire)),
        ];
        for (label, at) in rows {
            if let Some(at) = at {
                text.push_str(&format!("  {label}: {}\n", at.strftime("%Y-%m-%d %H:%M")));
            }
        }
    }
    text.push_str("\nMessaggio automatico di reversa / An automatic message from reversa.\n");
    (subject, text)
}

fn subject_of(e: &Event, state: State) -> String {
    match e {
        Event::StateChanged { terminated: false, .. } => "cessazione annullata / termination cancelled".into(),
        Event::StateChanged { .. } => format!("stato {} / state {}", state.name(), state.name()),
        Event::ExportWindowClosing => "la finestra di esportazione si chiude / the export window closes".into(),
        Event::CertificateIssued { .. } => "certificato di cancellazione / deletion certificate".into(),
        Event::DisclosureToAuthority { .. } => "comunicazione a un'autorità / disclosure to an authority".into(),
        Event::RecheckFailed => "verifica della cancellazione fallita / deletion re-check failed".into(),
    }
}

fn day(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d").to_string()
}

/// What happened and what the customer can still do, in Italian and in English.
fn what_happened(e: &Event, state: State, t: Option<&Timeline>) -> (String, String) {
    let until = |f: fn(&Timeline) -> jiff::Timestamp| t.map(|t| day(f(t))).unwrap_or_default();
    match (e, state) {
        (Event::StateChanged { terminated: false, .. }, _) => (
            "La cessazione del contratto è stata annullata: il servizio prosegue.".into(),
            "The termination was cancelled: the service goes on.".into(),
        ),
        (Event::StateChanged { .. }, State::Active) => (
            format!("È registrata la fine del contratto al {}. Fino ad allora nulla cambia.", until(|t| t.contract_end)),
            format!("The contract end is recorded for {}. Until then nothing changes.", until(|t| t.contract_end)),
        ),
        (Event::StateChanged { .. }, State::ExportWindow) | (Event::ExportWindowClosing, _) => (
            format!(
                "Il contratto è terminato. Fino al {} l'amministratore designato può accedere in sola lettura e \
                 scaricare i dati (XLSX, documenti e allegati).",
                until(|t| t.export_window_end)
            ),
            format!(
                "The contract has ended. Until {} the designated administrator may log in read-only and download \
                 the data (XLSX, documents and attachments).",
                until(|t| t.export_window_end)
            ),
        ),
        (Event::StateChanged { .. }, State::Safeguard) => (
            format!(
                "La finestra di esportazione è chiusa: nessun accesso. Fino al {} i dati sono custoditi e sono possibili \
                 solo estrazioni straordinarie, su richiesta al fornitore.",
                until(|t| t.safeguard_end)
            ),
            format!(
                "The export window has closed: no access. Until {} the data are kept and only extraordinary \
                 extractions are possible, on request to the provider.",
                until(|t| t.safeguard_end)
            ),
        ),
        (Event::StateChanged { .. }, State::Purged | State::Expiring) => (
            format!(
                "I dati sono stati cancellati dal servizio. Le ultime copie di backup scadono il {}.",
                until(|t| t.backups_expire)
            ),
            format!("The data were deleted from the service. The last backup copies expire on {}.", until(|t| t.backups_expire)),
        ),
        (Event::StateChanged { .. }, State::Shredded | State::Confirmed) => (
            "Le copie di backup sono scadute e la chiave di cifratura è stata distrutta: i dati non sono più leggibili."
                .into(),
            "The backup copies have expired and the encryption key was destroyed: the data can no longer be read."
                .into(),
        ),
        (Event::CertificateIssued { id, certificate }, _) => (
            format!("È stato emesso il certificato di cancellazione {id} ({}).", certificate.name()),
            format!("Deletion certificate {id} ({}) was issued.", certificate.name()),
        ),
        (Event::DisclosureToAuthority { recipient, legal_basis, .. }, _) => (
            format!("Dati dell'ente sono stati consegnati a {recipient}, in base a: {legal_basis}."),
            format!("The tenant's data were given to {recipient}, under: {legal_basis}."),
        ),
        (Event::RecheckFailed, _) => (
            "La verifica periodica ha trovato di nuovo dati che dovevano essere cancellati; il fornitore interviene."
                .into(),
            "The periodic re-check found data again that had been deleted; the provider is acting on it.".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn the_signature_is_the_standard_webhooks_one() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_failed_delivery_backs_off_and_an_insecure_webhook_is_refused() {
        let now: jiff::Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let mut d = Delivery::default();
        assert!(d.due(now));
        d.failed(now, "refused".into());
        d.failed(now, "refused".into());
        assert_eq!(d.next_try, Some(now + jiff::SignedDuration::from_mins(10)));
        assert!(!d.due(now) && d.due(now + jiff::SignedDuration::from_mins(10)));
        let mut c = NoticesConfig { webhook_url: "http://saas.example.eu/hook".into(), ..Default::default() };
        assert_eq!(c.validate().unwrap_err().0, "notices.webhook_url");
        c.webhook_url = "http://127.0.0.1:9000/hook".into();
        c.validate().unwrap();
        assert_eq!(c.check_secrets().unwrap_err().0, "notices.webhook_secret_file");
    }
}
