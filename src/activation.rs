//! The contract of activation intake (SPEC §4): what a request carries, why one is refused,
//! and what the answer says per app.
//!
//! These are plain types shared by everyone on either side of the intake: the service
//! (which decides), its drivers (the webhook, the PIM poller), and the command line's client
//! of a running service (`activate`), so that both ends of the wire read and write the same
//! types. This module decides nothing and does no IO.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::SourceId;

/// The origin of activations the webhook (`POST /v1/activations`) reports.
pub const WEBHOOK_ORIGIN: &str = "webhook";

/// The webhook body of SPEC §4.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationRequest {
    /// Source id of the group.
    pub group_id: SourceId,
    /// Source id of the user.
    pub user_id: SourceId,
    /// When the activation ends (default: now + `max_activation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Why the privilege is needed (at most [`JUSTIFICATION_MAX`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// The ticket the activation is for (at most [`TICKET_MAX`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_number: Option<String>,
    /// The system that ticket lives in (at most [`TICKET_MAX`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_system: Option<String>,
}

/// The longest `justification` the intake accepts, in characters (SPEC §4).
pub const JUSTIFICATION_MAX: usize = 1000;

/// The longest `ticket_number` or `ticket_system` the intake accepts, in characters (SPEC §4).
pub const TICKET_MAX: usize = 100;

/// Why an activation was refused. Nothing was recorded or sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: a field is missing or wrong.
    #[error("{0}")]
    Invalid(String),
    /// 403: the source does not list the user as eligible for the group.
    #[error("{0}")]
    NotEligible(String),
    /// 404: no app has the group assigned.
    #[error("{0}")]
    NotAssigned(String),
    /// 503: the source or the store cannot be read, so the request cannot be decided.
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    /// The HTTP status of SPEC §4.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Invalid(_) => 400,
            Refusal::NotEligible(_) => 403,
            Refusal::NotAssigned(_) => 404,
            Refusal::Unavailable(_) => 503,
        }
    }
}

/// What the intake did with an activation for one app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Sent to the app at once.
    Pushed,
    /// Recorded; the app's next cycle applies it.
    Deferred,
    /// A repeat: the app already holds (or is being sent) this live activation; nothing was
    /// sent and its expiry became the later of the two.
    Active,
}

impl Outcome {
    /// The JSON and metric label form.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pushed => "pushed",
            Outcome::Deferred => "deferred",
            Outcome::Active => "active",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The per-app outcome in the webhook's `202` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppOutcome {
    /// The app.
    pub app: String,
    /// Pushed at once, deferred to the app's next cycle, or already active (a repeat).
    pub outcome: Outcome,
    /// For a push the app confirmed: received → confirmed, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// For a push still unconfirmed when the answer was sent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unconfirmed: bool,
    /// Why an activation was deferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AppOutcome {
    /// Deferred to the app's next cycle, and why.
    pub fn deferred(app: impl ToString, why: String) -> Self {
        AppOutcome {
            app: app.to_string(),
            outcome: Outcome::Deferred,
            latency_ms: None,
            unconfirmed: false,
            detail: Some(why),
        }
    }
}

/// The webhook's `202` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// The recorded activation.
    pub activation_id: String,
    /// When it ends.
    pub expires_at: DateTime<Utc>,
    /// One entry per app with the group assigned.
    pub apps: Vec<AppOutcome>,
}

/// The body of every refusal the admin HTTP sends: `{"error": "…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Why the request was refused.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_keep_their_json_strings() {
        let json = serde_json::to_string(&[Outcome::Pushed, Outcome::Deferred]).unwrap();
        assert_eq!(json, r#"["pushed","deferred"]"#);
    }

    #[test]
    fn active_keeps_its_json_string() {
        assert_eq!(
            serde_json::to_string(&Outcome::Active).unwrap(),
            r#""active""#
        );
        assert_eq!(Outcome::Active.as_str(), "active");
    }

    #[test]
    fn audit_fields_are_optional_and_skipped_when_absent() {
        let req: ActivationRequest =
            serde_json::from_str(r#"{"group_id": "g", "user_id": "u"}"#).unwrap();
        assert_eq!(req.justification, None);
        let json = serde_json::to_value(&req).unwrap();
        assert!(json.get("justification").is_none(), "{json}");
        let req: ActivationRequest = serde_json::from_str(
            r#"{"group_id": "g", "user_id": "u", "justification": "why",
                "ticket_number": "INC-1", "ticket_system": "ServiceNow"}"#,
        )
        .unwrap();
        assert_eq!(req.justification.as_deref(), Some("why"));
        assert_eq!(req.ticket_number.as_deref(), Some("INC-1"));
        assert_eq!(req.ticket_system.as_deref(), Some("ServiceNow"));
    }
}
