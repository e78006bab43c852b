//! Delivering the notices queued in a tenant's lifecycle record: the webhook (a JSON POST
//! signed per Standard Webhooks) and the email (SMTP with STARTTLS, to the designated
//! administrator and the contacts). A failed try is kept with its error and retried with
//! backoff by a later tick; `tenant status` shows what is undelivered.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::{Agent, Result};
use crate::lifecycle::{self, Record, Timeline};
use crate::notices::{self, DeliveryState, Notice, NoticesConfig};
use crate::tenant::TenantId;

/// How long one try of one channel may take.
const TRY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a delivery run did for one tenant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivered {
    pub sent: u64,
    pub failed: u64,
    /// The errors of the tries that failed (no secret, no address: the receiver's answer).
    pub errors: Vec<String>,
}

/// Whether `record` has a notice whose delivery is due at `now`.
pub fn any_due(record: &Record, now: jiff::Timestamp) -> bool {
    record.notices.iter().any(|n| n.webhook.due(now) || n.email.due(now))
}

/// Try every notice of the tenant whose delivery is due, then save the record.
pub(crate) async fn deliver(agent: &Agent, tenant: &TenantId) -> Result<Delivered> {
    let mut record = agent.lifecycle_record(tenant).await?;
    let now = crate::now();
    let cfg = &agent.config.notices;
    let state = super::lifecycle::due_state(&record, &agent.config.lifecycle, now);
    let timeline = Timeline::of_record(&record, &agent.config.lifecycle);
    let allowed = lifecycle::allowed(tenant.as_str(), state);
    let to: Vec<String> = record.admin.iter().chain(&record.contacts).cloned().collect();
    let mut done = Delivered::default();
    for i in 0..record.notices.len() {
        let n = record.notices[i].clone();
        if n.webhook.due(now) {
            let result = match cfg.webhook_url.is_empty() {
                true => None,
                false => {
                    let body = notices::payload(&n, tenant.as_str(), state, timeline.as_ref(), &allowed);
                    Some(Box::pin(post(cfg, &n, &body)).await)
                }
            };
            settle(&mut record.notices[i].webhook, result, now, &mut done);
        }
        if n.email.due(now) {
            let result = match cfg.smtp_url.is_empty() || to.is_empty() {
                true => None,
                false => {
                    let (subject, text) = notices::email(&n, tenant.as_str(), state, timeline.as_ref());
                    Some(Box::pin(mail(cfg, &n, &to, subject, text)).await)
                }
            };
            settle(&mut record.notices[i].email, result, now, &mut done);
        }
    }
    // The tries took time: the record may have changed meanwhile (a notice queued, a contact
    // set). Only the deliveries are written, onto the record as it is now.
    let mut fresh = agent.lifecycle_record(tenant).await?;
    for n in &mut fresh.notices {
        if let Some(tried) = record.notices.iter().find(|t| t.id == n.id) {
            (n.webhook, n.email) = (tried.webhook.clone(), tried.email.clone());
        }
    }
    agent.save_lifecycle_record(&fresh).await?;
    Ok(done)
}

/// An error with its causes, for a delivery's `last_error`: hyper's own message says only
/// "client error (Connect)", the refused connection or the TLS failure is below it.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// Record one channel's try: `None` when the channel is off (or has no one to write to).
fn settle(
    d: &mut notices::Delivery,
    result: Option<std::result::Result<(), String>>,
    now: jiff::Timestamp,
    done: &mut Delivered,
) {
    match result {
        None => d.state = DeliveryState::Skipped,
        Some(Ok(())) => {
            d.delivered(now);
            done.sent += 1;
        }
        Some(Err(e)) => {
            d.failed(now, e.clone());
            done.failed += 1;
            done.errors.push(e);
        }
    }
}

/// The webhook's secret: the environment's, else the file's (read at each run, so a rotated
/// secret is used at once).
fn webhook_secret(cfg: &NoticesConfig) -> std::result::Result<crate::keys::KeyText, String> {
    if let Some(s) = &cfg.webhook_secret_env {
        return Ok(s.clone());
    }
    let path = cfg.webhook_secret_file.as_ref().ok_or("no webhook secret is configured")?;
    std::fs::read_to_string(path)
        .map(|s| crate::keys::KeyText::new(s.trim().to_string()))
        .map_err(|e| format!("cannot read the webhook secret file {}: {e}", path.display()))
}

/// POST the notice to the webhook. The timestamp is the real clock's, never a simulated one:
/// receivers refuse a signature whose time is far from theirs.
async fn post(cfg: &NoticesConfig, n: &Notice, body: &[u8]) -> std::result::Result<(), String> {
    use http_body_util::Full;
    use hyper_util::client::legacy::{connect::HttpConnector, Client};
    let uri: http::Uri = cfg.webhook_url.parse().map_err(|e| format!("notices.webhook_url: {e}"))?;
    let tls = crate::store::s3::idle::tls_config(uri.scheme_str() == Some("https"))?;
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    let client: Client<_, Full<Bytes>> = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    let timestamp = jiff::Timestamp::now().as_second();
    let secret = webhook_secret(cfg)?;
    let request = http::Request::post(uri)
        .header("content-type", "application/json")
        .header("webhook-id", &n.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", notices::signature(secret.expose(), &n.id, timestamp, body))
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(TRY_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("the webhook did not answer within {} s", TRY_TIMEOUT.as_secs()))?
        .map_err(|e| format!("the webhook could not be reached: {}", with_causes(&e)))?;
    match response.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("the webhook answered {s}")),
    }
}

/// Send the notice's email over SMTP, STARTTLS required.
async fn mail(
    cfg: &NoticesConfig,
    n: &Notice,
    to: &[String],
    subject: String,
    text: String,
) -> std::result::Result<(), String> {
    use lettre::message::{header::ContentType, Mailbox};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let (host, port) = notices::smtp_host_port(&cfg.smtp_url).ok_or("notices.smtp_url is not smtp://host:port")?;
    let mut tls = TlsParameters::builder(host.clone());
    if let Some(ca) = &cfg.smtp_ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read notices.smtp_ca_file {}: {e}", ca.display()))?;
        tls = tls.add_root_certificate(Certificate::from_pem(&pem).map_err(|e| format!("notices.smtp_ca_file: {e}"))?);
    }
    let tls = tls.build_rustls().map_err(|e| format!("TLS setup for {host} failed: {e}"))?;
    let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(Tls::Required(tls))
        .timeout(Some(TRY_TIMEOUT));
    if let Some((user, password)) = &cfg.smtp_credentials {
        transport = transport.credentials(Credentials::new(user.clone(), password.expose().to_string()));
    }
    let address = |a: &str| a.parse::<Mailbox>().map_err(|e| format!("{a:?} is not an address: {e}"));
    let mut message = Message::builder()
        .from(address(&cfg.from)?)
        .subject(subject)
        .message_id(Some(format!("<{}@reversa>", n.id)))
        .header(ContentType::TEXT_PLAIN);
    for a in to {
        message = message.to(address(a)?);
    }
    let message = message.body(text).map_err(|e| e.to_string())?;
    transport
        .build()
        .send(message)
        .await
        .map_err(|e| format!("the SMTP server refused the notice: {}", with_causes(&e)))?;
    Ok(())
}

/// The undelivered notices of a record, oldest first, for `tenant status`.
pub fn undelivered(record: &Record) -> Vec<&Notice> {
    record.notices.iter().filter(|n| n.undelivered()).collect()
}

/// Whether the notice of a disclosure to an authority (by its job id) reached the customer on
/// some channel: until then the register lists it as pending.
pub fn disclosure_notified(record: &Record, job: &str) -> bool {
    record.notices.iter().any(|n| {
        matches!(&n.event, notices::Event::DisclosureToAuthority { job: j, .. } if j == job)
            && (n.webhook.state == DeliveryState::Delivered || n.email.state == DeliveryState::Delivered)
    })
}
