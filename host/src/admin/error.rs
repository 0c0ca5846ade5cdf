//! [`Error`]: every way an admin call fails, mapped once to a status and an
//! OpenAI-shaped error body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::{policy, pool};

/// An admin call's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No bearer token, or the wrong one.
    #[error("missing or wrong admin token")]
    Unauthorized,
    /// The credential lacks the right the call needs.
    #[error("credential `{credential}` ({role}) may not {right}")]
    Forbidden {
        /// The credential's name.
        credential: String,
        /// Its role.
        role: &'static str,
        /// The right it lacks.
        right: String,
    },
    /// The audit log cannot be read.
    #[error("reading the audit log failed")]
    Audit(#[source] std::io::Error),
    /// The body is not what the route takes.
    #[error("invalid request body: {0}")]
    BadBody(String),
    /// No such route.
    #[error("no admin route {0}")]
    NoRoute(String),
    /// A tenant, backend or policy name in the path or body is not a valid name.
    #[error(transparent)]
    Name(#[from] crate::names::InvalidName),
    /// `DELETE /admin/state/damaged/{entry}` named an entry that is not damaged.
    #[error("no damaged stored entry `{0}`")]
    NotDamaged(String),
    /// Discarding a damaged entry failed.
    #[error(transparent)]
    State(#[from] crate::state::Error),
    /// A pool change failed.
    #[error(transparent)]
    Pool(#[from] pool::Error),
    /// A policy or pipeline change failed.
    #[error(transparent)]
    Policy(#[from] policy::Error),
    /// The KV index cannot answer (an unknown model, a prompt it cannot tokenize).
    #[error(transparent)]
    Kv(#[from] switchyard_kv::Error),
    /// A blocking task died.
    #[error("internal task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl Error {
    fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::Audit(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::BadBody(_) | Error::Name(_) => StatusCode::BAD_REQUEST,
            Error::NoRoute(_) | Error::NotDamaged(_) => StatusCode::NOT_FOUND,
            Error::State(e) => state_status(e),
            Error::Pool(e) => match e {
                pool::Error::NotFound(_) => StatusCode::NOT_FOUND,
                pool::Error::Exists(_) | pool::Error::NotDrained(_) => StatusCode::CONFLICT,
                pool::Error::Invalid(_) => StatusCode::BAD_REQUEST,
                pool::Error::State(e) => state_status(e),
            },
            Error::Policy(e) => match e {
                policy::Error::NoHistory(_)
                | policy::Error::Damaged { .. }
                | policy::Error::OverQuota { .. }
                | policy::Error::InUse { .. }
                | policy::Error::Shipped(_) => StatusCode::CONFLICT,
                policy::Error::NoSuchVersion(_) => StatusCode::NOT_FOUND,
                policy::Error::State(e) => state_status(e),
                _ => StatusCode::BAD_REQUEST,
            },
            Error::Kv(e) => match e {
                switchyard_kv::Error::UnknownModel { .. } => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            },
            Error::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A state failure's status: in cluster mode a lost compare-and-set is 409 and an
/// unreachable store 503 (both with their message); a local I/O failure is 500.
fn state_status(e: &crate::state::Error) -> StatusCode {
    match e {
        crate::state::Error::Conflict { .. } => StatusCode::CONFLICT,
        crate::state::Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let kind = match status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        // NB: the cluster being unreachable is no internal fault: the client is told why.
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %chain(&self), "admin call failed");
            "internal error; see the router's log".to_string()
        } else {
            self.to_string()
        };
        let code = status
            .canonical_reason()
            .unwrap_or("error")
            .to_lowercase()
            .replace(' ', "_");
        let body = crate::proxy::error_body(&message, kind, &code, None);
        (status, Json(body)).into_response()
    }
}

/// The error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
