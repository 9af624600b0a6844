//! Delivery of one stored message: email through SMTP (lettre's blocking transport, on
//! the outbox's sender thread), or a POST to a webhook (ureq). Each message carries a
//! stable key, sent as its `Message-ID` and as the webhook's `Idempotency-Key` header,
//! so a message sent again after a crash between "sent" and "recorded" can be told
//! apart from a new one.

use std::time::Duration;

use lettre::message::{header::ContentType, Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Message, SmtpTransport, Transport};

use super::config::{AlertsConfig, BodyFormat, Security, SmtpConfig, Webhook};

/// How a message goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Email,
    SmsEmail,
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::SmsEmail => "sms_email",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Some(match s {
            "email" => Channel::Email,
            "sms_email" => Channel::SmsEmail,
            "webhook" => Channel::Webhook,
            _ => return None,
        })
    }
}

/// A message ready to deliver.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Stable key: the `Message-ID` local part and the idempotency key.
    pub key: String,
    pub channel: Channel,
    pub contact: String,
    /// Email address, or the phone number for a webhook.
    pub recipient: String,
    /// Webhook name for [`Channel::Webhook`].
    pub via: String,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub png: Option<Vec<u8>>,
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    #[error("building the message: {0}")]
    Build(String),
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error("webhook {0}: {1}")]
    Webhook(String, String),
    #[error("no [[webhook]] named {0} any more")]
    NoWebhook(String),
}

/// The SMTP transport, built once (it keeps a pool of connections).
pub struct Mailer {
    transport: SmtpTransport,
    from: String,
}

impl Mailer {
    /// # Errors
    /// When the TLS settings cannot be built for `host`.
    pub fn new(cfg: &SmtpConfig, timeout: Duration) -> Result<Mailer, SendError> {
        let builder = match cfg.security {
            Security::Plain => SmtpTransport::builder_dangerous(&cfg.host),
            Security::StartTls => {
                SmtpTransport::starttls_relay(&cfg.host).map_err(|e| SendError::Smtp(e.to_string()))?
            }
            Security::Tls => SmtpTransport::relay(&cfg.host).map_err(|e| SendError::Smtp(e.to_string()))?,
        };
        let mut builder = builder.port(cfg.port).timeout(Some(timeout));
        if let Some((u, p)) = &cfg.credentials {
            builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
        }
        Ok(Mailer { transport: builder.build(), from: cfg.from.clone() })
    }

    fn message(&self, m: &Outgoing) -> Result<Message, SendError> {
        let bad = |e: &dyn std::fmt::Display| SendError::Build(e.to_string());
        let from: Mailbox = self.from.parse().map_err(|e| bad(&e))?;
        let to: Mailbox = m.recipient.parse().map_err(|e| bad(&e))?;
        let builder = Message::builder()
            .from(from)
            .to(to)
            .subject(m.subject.clone())
            .message_id(Some(format!("<{}@ganglion>", m.key)));
        let built = match (&m.html, &m.png) {
            (None, _) => builder.singlepart(SinglePart::plain(m.text.clone())),
            (Some(html), None) => builder.multipart(MultiPart::alternative_plain_html(m.text.clone(), html.clone())),
            (Some(html), Some(png)) => builder.multipart(
                MultiPart::alternative().singlepart(SinglePart::plain(m.text.clone())).multipart(
                    MultiPart::related().singlepart(SinglePart::html(html.clone())).singlepart(
                        Attachment::new_inline("graph".to_owned())
                            .body(png.clone(), ContentType::parse("image/png").map_err(|e| bad(&e))?),
                    ),
                ),
            ),
        };
        built.map_err(|e| bad(&e))
    }

    /// # Errors
    /// When the server cannot be reached or refuses the message.
    pub fn send(&self, m: &Outgoing) -> Result<(), SendError> {
        let msg = self.message(m)?;
        self.transport.send(&msg).map(|_| ()).map_err(|e| SendError::Smtp(e.to_string()))
    }
}

fn json_escape(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// The webhook body from its template.
pub fn webhook_body(w: &Webhook, m: &Outgoing) -> String {
    let esc = |s: &str| match w.format {
        BodyFormat::Json => json_escape(s),
        BodyFormat::Form => super::render::enc(s),
    };
    w.body
        .replace("{text}", &esc(&m.text))
        .replace("{phone}", &esc(&m.recipient))
        .replace("{contact}", &esc(&m.contact))
        .replace("{subject}", &esc(&m.subject))
        .replace("{id}", &esc(&m.key))
}

/// # Errors
/// When the endpoint cannot be reached or answers other than 2xx.
pub fn post_webhook(cfg: &AlertsConfig, m: &Outgoing) -> Result<(), SendError> {
    let w = cfg.webhooks.iter().find(|w| w.name == m.via).ok_or_else(|| SendError::NoWebhook(m.via.clone()))?;
    let agent = ureq::AgentBuilder::new().timeout(cfg.send_timeout).build();
    let mut req = agent.post(&w.url).set("Idempotency-Key", &m.key).set(
        "Content-Type",
        match w.format {
            BodyFormat::Json => "application/json",
            BodyFormat::Form => "application/x-www-form-urlencoded",
        },
    );
    for (k, v) in &w.headers {
        req = req.set(k, v);
    }
    match req.send_string(&webhook_body(w, m)) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, r)) => {
            let body = r.into_string().unwrap_or_default();
            Err(SendError::Webhook(
                w.name.clone(),
                format!("HTTP {code}: {}", body.chars().take(200).collect::<String>()),
            ))
        }
        Err(e) => Err(SendError::Webhook(w.name.clone(), e.to_string())),
    }
}

/// Delivers one message through its channel.
///
/// # Errors
/// [`SendError`] saying what failed; the caller retries.
pub fn deliver(cfg: &AlertsConfig, mailer: Option<&Mailer>, m: &Outgoing) -> Result<(), SendError> {
    match m.channel {
        Channel::Email | Channel::SmsEmail => match mailer {
            Some(x) => x.send(m),
            None => Err(SendError::Smtp("no SMTP transport".into())),
        },
        Channel::Webhook => post_webhook(cfg, m),
    }
}
