//! Errors of the SCIM client.
//!
//! Every error names the app, and (when a request was involved) the HTTP method and the URL
//! path relative to the app's `base_url`: never the host, the query string or the token. A
//! SCIM error body (RFC 7644 §3.12) is parsed into `scimType` and `detail`, so the Display
//! reads like `app crm: POST /Users answered 409 uniqueness: User already exists`, which is
//! what an administrator needs to act on.

use std::fmt;
use std::time::Duration;

use crate::model::AppName;

/// An error talking to one SCIM app.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The app answered with a non-success HTTP status.
    #[error("app {app}: {method} {path} answered {status}{}", scim_suffix(scim_type.as_deref(), detail.as_deref()))]
    Status {
        /// App name.
        app: AppName,
        /// HTTP method.
        method: String,
        /// URL path relative to the app's base URL, without the query string.
        path: String,
        /// HTTP status code.
        status: u16,
        /// SCIM `scimType` of the error body, when present.
        scim_type: Option<String>,
        /// SCIM `detail` of the error body (or a short excerpt of a non-SCIM body).
        detail: Option<String>,
    },

    /// The app asked (429) to wait longer than `RetryPolicy::max_retry_after`.
    #[error(
        "app {app}: {method} {path} answered 429 and asked to retry after {}, more than the {} limit; giving up for now",
        Secs(*retry_after),
        Secs(*limit)
    )]
    RetryAfterTooLong {
        /// App name.
        app: AppName,
        /// HTTP method.
        method: String,
        /// URL path relative to the app's base URL.
        path: String,
        /// The wait the app asked for.
        retry_after: Duration,
        /// The longest wait the client accepts.
        limit: Duration,
    },

    /// The request did not complete within the per-request timeout.
    #[error("app {app}: {method} {path}: timed out after {}", Secs(*after))]
    Timeout {
        /// App name.
        app: AppName,
        /// HTTP method.
        method: String,
        /// URL path relative to the app's base URL.
        path: String,
        /// The configured per-request timeout.
        after: Duration,
        /// The underlying transport error (its URL stripped).
        #[source]
        source: reqwest::Error,
    },

    /// The connection to the app could not be established.
    #[error("app {app}: {method} {path}: cannot connect: {cause}")]
    Connect {
        /// App name.
        app: AppName,
        /// HTTP method.
        method: String,
        /// URL path relative to the app's base URL.
        path: String,
        /// The innermost cause, e.g. `Connection refused (os error 111)`.
        cause: String,
        /// The underlying transport error (its URL stripped).
        #[source]
        source: reqwest::Error,
    },

    /// Any other transport failure: connection reset, broken body, protocol error.
    #[error("app {app}: {method} {path}: request failed: {cause}")]
    Transport {
        /// App name.
        app: AppName,
        /// HTTP method.
        method: String,
        /// URL path relative to the app's base URL.
        path: String,
        /// The innermost cause.
        cause: String,
        /// The underlying transport error (its URL stripped).
        #[source]
        source: reqwest::Error,
    },

    /// The app answered with a success status but a body we cannot use.
    #[error("app {app}: {method} {path} answered {status} with an unusable body: {reason}")]
    InvalidResponse {
        /// App name.
        app: AppName,
        /// HTTP method.
        method: String,
        /// URL path relative to the app's base URL.
        path: String,
        /// HTTP status code.
        status: u16,
        /// What is wrong with the body.
        reason: String,
    },

    /// The app's answer was larger than `max_response`: refused without reading the rest,
    /// and never retried (asking again would read it again). It fails the one request, so
    /// the one object (like other unusable answers), never the app.
    #[error(
        "app {app}: {method} {path} answered {status}: {body}; refused (the limit is apps[{app}].max_response)"
    )]
    TooLarge {
        /// App name.
        app: AppName,
        /// HTTP method.
        method: String,
        /// URL path relative to the app's base URL, without the query string.
        path: String,
        /// The HTTP status of the refused answer (not acted on: see [`Error::status`]).
        status: u16,
        /// The limit and how much was seen.
        body: crate::http::TooLarge,
    },

    /// A lookup before adoption matched several resources, so none is adopted.
    #[error(
        "app {app}: {count} {kind} match {filter}; remove or rename the duplicates in the app so that one can be adopted"
    )]
    Ambiguous {
        /// App name.
        app: AppName,
        /// `users` or `groups`.
        kind: &'static str,
        /// The filter that matched, e.g. `userName eq "alice@contoso.example"`.
        filter: String,
        /// How many resources matched.
        count: usize,
    },

    /// The caller passed something the client cannot send (e.g. no value for the matching attribute).
    #[error("app {app}: {reason}")]
    InvalidInput {
        /// App name.
        app: AppName,
        /// What is wrong.
        reason: String,
    },

    /// The client options are unusable (bad base URL, token not valid in a header).
    #[error("app {app}: invalid SCIM client settings: {reason}")]
    Config {
        /// App name.
        app: AppName,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// The HTTP status the app answered, when the error comes from an answer. `None` for
    /// [`Error::TooLarge`]: a refused answer is not acted on (no 404 "already gone", no
    /// fallback on 501).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } | Error::InvalidResponse { status, .. } => Some(*status),
            Error::RetryAfterTooLong { .. } => Some(429),
            _ => None,
        }
    }

    /// The SCIM `scimType` of the error body (`uniqueness`, `invalidPath`, `noTarget`, …).
    pub fn scim_type(&self) -> Option<&str> {
        match self {
            Error::Status { scim_type, .. } => scim_type.as_deref(),
            _ => None,
        }
    }

    /// The SCIM `detail` of the error body, when present.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Error::Status { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }

    /// The app this error concerns.
    pub fn app(&self) -> &AppName {
        match self {
            Error::Status { app, .. }
            | Error::RetryAfterTooLong { app, .. }
            | Error::Timeout { app, .. }
            | Error::Connect { app, .. }
            | Error::Transport { app, .. }
            | Error::InvalidResponse { app, .. }
            | Error::TooLarge { app, .. }
            | Error::Ambiguous { app, .. }
            | Error::InvalidInput { app, .. }
            | Error::Config { app, .. } => app,
        }
    }

    /// Whether trying again later may succeed: 429, 5xx (except 501 Not Implemented),
    /// timeouts and connection failures. Other 4xx, unusable or too large answers and bad
    /// input are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Status { status, .. } => retryable_status(*status),
            Error::RetryAfterTooLong { .. }
            | Error::Timeout { .. }
            | Error::Connect { .. }
            | Error::Transport { .. } => true,
            Error::InvalidResponse { .. }
            | Error::TooLarge { .. }
            | Error::Ambiguous { .. }
            | Error::InvalidInput { .. }
            | Error::Config { .. } => false,
        }
    }
}

/// Statuses worth retrying: 429 and every 5xx except 501 Not Implemented and
/// 505 HTTP Version Not Supported, which will not change by asking again.
pub(crate) fn retryable_status(status: u16) -> bool {
    status == 429 || ((500..=599).contains(&status) && status != 501 && status != 505)
}

fn scim_suffix(scim_type: Option<&str>, detail: Option<&str>) -> String {
    match (scim_type, detail) {
        (Some(t), Some(d)) => format!(" {t}: {d}"),
        (Some(t), None) => format!(" {t}"),
        (None, Some(d)) => format!(": {d}"),
        (None, None) => String::new(),
    }
}

/// Formats a duration the way the config writes them (`30s`, `2m`, `1s500ms`).
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::clock::show_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_config_values() {
        assert_eq!(Secs(Duration::from_secs(30)).to_string(), "30s");
        assert_eq!(Secs(Duration::from_secs(120)).to_string(), "2m");
        assert_eq!(Secs(Duration::from_millis(1500)).to_string(), "1s500ms");
        assert_eq!(Secs(Duration::ZERO).to_string(), "0s");
    }

    #[test]
    fn status_display_names_scim_type_and_detail() {
        let e = Error::Status {
            app: AppName::new("crm"),
            method: "POST".into(),
            path: "/Users".into(),
            status: 409,
            scim_type: Some("uniqueness".into()),
            detail: Some("User already exists".into()),
        };
        assert_eq!(
            e.to_string(),
            "app crm: POST /Users answered 409 uniqueness: User already exists"
        );
        assert!(!e.is_transient());
        assert_eq!(e.status(), Some(409));
        assert_eq!(e.scim_type(), Some("uniqueness"));
    }

    #[test]
    fn too_large_names_app_path_and_limit_and_is_final() {
        let e = Error::TooLarge {
            app: AppName::new("crm"),
            method: "GET".into(),
            path: "/Users".into(),
            status: 200,
            body: crate::http::TooLarge {
                limit: 32 * 1024 * 1024,
                declared: None,
                received: 33_554_500,
            },
        };
        assert_eq!(
            e.to_string(),
            "app crm: GET /Users answered 200: response larger than 32 MiB (more than 33554432 bytes arrived); refused (the limit is apps[crm].max_response)"
        );
        assert!(!e.is_transient());
        assert_eq!(e.status(), None);
    }

    #[test]
    fn retryable_statuses() {
        assert!(retryable_status(429));
        assert!(retryable_status(500));
        assert!(retryable_status(503));
        assert!(!retryable_status(501));
        assert!(!retryable_status(404));
        assert!(!retryable_status(409));
    }
}
