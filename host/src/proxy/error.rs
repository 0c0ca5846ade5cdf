//! [`ApiError`]: every way a client request can fail, each mapped once to a status and
//! an OpenAI-shaped error body.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A client request's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not JSON of the expected shape.
    #[error("invalid JSON body: {0}")]
    BadJson(String),
    /// A required field is absent.
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    /// A request header the router reads for policies has a value it cannot use.
    #[error("header `{header}`: {why}")]
    BadHeader {
        /// The header's name.
        header: String,
        /// What is wrong with its value.
        why: &'static str,
    },
    /// The body is larger than the configured cap.
    #[error("request body is over the {max}-byte limit")]
    TooLarge {
        /// The cap, bytes.
        max: usize,
    },
    /// The body did not arrive within the listener's body read timeout.
    #[error("request body not received within {0:?}")]
    BodyTimeout(Duration),
    /// No API key, or one that belongs to no tenant, when keys are required.
    #[error("invalid or missing API key")]
    Unauthorized,
    /// The tenant header names a tenant that has API keys; only its key selects it.
    #[error("tenant `{0}` is selected by its API key only, not by the tenant header")]
    KeyRequired(String),
    /// No backend serves the model.
    #[error("model `{0}` is not served here")]
    UnknownModel(String),
    /// The tenant is over one of its limits.
    #[error("tenant `{tenant}` is over its {limit} limit")]
    RateLimited {
        /// Tenant name.
        tenant: String,
        /// Which limit: `concurrency`, `requests per second`, `tokens per second`.
        limit: &'static str,
        /// When to try again.
        retry_after: Duration,
    },
    /// Every backend serving the model is down, draining or has an open circuit.
    #[error("no healthy backend serves model `{0}`")]
    NoBackend(String),
    /// The pipeline that would decide for the tenant could not be restored from the
    /// state directory; an operator must set it again or discard it.
    #[error("tenant `{0}`'s routing pipeline is unavailable: its stored copy is damaged")]
    PipelineDamaged(String),
    /// The tenant's pipeline refused the request.
    #[error("{message}")]
    Rejected {
        /// Status chosen by the policy.
        status: StatusCode,
        /// Message chosen by the policy.
        message: String,
    },
    /// Every attempt failed before a byte reached the client.
    #[error("every attempt failed: {}", .0.join("; "))]
    AllFailed(Vec<String>),
    /// No such route.
    #[error("no route {0}")]
    NoRoute(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadJson(_) | ApiError::MissingField(_) | ApiError::BadHeader { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized | ApiError::KeyRequired(_) => StatusCode::UNAUTHORIZED,
            ApiError::UnknownModel(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NoBackend(_) | ApiError::PipelineDamaged(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Rejected { status, .. } => *status,
            ApiError::AllFailed(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// (`type`, `code`, `param`) of the OpenAI error body.
    fn kind(&self) -> (&'static str, &'static str, Option<&'static str>) {
        match self {
            ApiError::BadJson(_) => ("invalid_request_error", "invalid_json", None),
            ApiError::MissingField(f) => ("invalid_request_error", "missing_field", Some(*f)),
            ApiError::BadHeader { .. } => ("invalid_request_error", "invalid_header", None),
            ApiError::TooLarge { .. } => ("invalid_request_error", "body_too_large", None),
            ApiError::BodyTimeout(_) => ("invalid_request_error", "body_timeout", None),
            ApiError::Unauthorized | ApiError::KeyRequired(_) => {
                ("authentication_error", "invalid_api_key", None)
            }
            ApiError::UnknownModel(_) => {
                ("invalid_request_error", "model_not_found", Some("model"))
            }
            ApiError::NoRoute(_) => ("invalid_request_error", "not_found", None),
            ApiError::RateLimited { .. } => ("rate_limit_error", "rate_limit_exceeded", None),
            ApiError::NoBackend(_) => ("server_error", "no_healthy_backend", None),
            ApiError::PipelineDamaged(_) => ("server_error", "pipeline_unavailable", None),
            ApiError::Rejected { .. } => ("invalid_request_error", "rejected_by_policy", None),
            ApiError::AllFailed(_) => ("server_error", "backend_failed", None),
        }
    }

    /// The OpenAI error body for this error.
    pub fn body(&self) -> ErrorBody {
        let (kind, code, param) = self.kind();
        error_body(&self.to_string(), kind, code, param)
    }
}

/// The OpenAI error body, `{"error": {"message", "type", "param", "code"}}`, of the client
/// and admin APIs.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong, in OpenAI's shape.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// What happened, for people.
    pub message: String,
    /// The class: `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `rate_limit_error`, `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A stable machine-readable code, e.g. `model_not_found`, `forbidden`.
    pub code: String,
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let json = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&json)
    }
}

pub(crate) fn error_body(message: &str, kind: &str, code: &str, param: Option<&str>) -> ErrorBody {
    ErrorBody {
        error: ErrorDetail {
            message: message.to_owned(),
            kind: kind.to_owned(),
            param: param.map(str::to_owned),
            code: code.to_owned(),
        },
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, "request refused");
        }
        let retry_after = match &self {
            ApiError::RateLimited { retry_after, .. } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            ApiError::NoBackend(_) => Some(1),
            _ => None,
        };
        let mut resp = (status, Json(self.body())).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
