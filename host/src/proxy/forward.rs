//! Sending a decided request: a visible retry loop over attempts, each on another
//! backend, until one produces its first body byte; then the body is passed through
//! chunk by chunk. Nothing reaches the client before that first byte, so a retry can
//! never duplicate a stream.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use futures::stream::BoxStream;
use tracing::Instrument;

use super::request::Parsed;
use super::tenant::Admission;
use super::{ApiError, App, BACKEND_HEADER, error_body};
use crate::pool::{Fleet, InFlight};
use crate::telemetry::BackendLabels;

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    /// Connecting or reading failed: the backend is likely gone.
    #[error("transport error: {0}")]
    Transport(#[source] reqwest::Error),
    /// The backend answered with a server error.
    #[error("returned {0}")]
    Status(StatusCode),
    /// No first byte before the attempt deadline.
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
}

/// What the first successful attempt hands to the response.
struct Opened {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    first: Option<Bytes>,
    rest: BoxStream<'static, reqwest::Result<Bytes>>,
}

/// The request, with everything the send loop and the body stream need.
pub(crate) struct Outgoing {
    /// The parsed request.
    pub req: Parsed,
    /// The request id, sent on as `x-request-id`.
    pub request_id: String,
    /// Estimated prompt tokens, counted as in-flight prefill.
    pub prompt_tokens: u32,
    /// When the request arrived.
    pub started: Instant,
    /// The tenant's admission, held until the body ends.
    pub admission: Admission,
}

impl App {
    /// Tries the backends in `order` (fleet indices, best first) until one answers.
    ///
    /// # Errors
    ///
    /// [`ApiError::AllFailed`] naming each failed attempt; [`ApiError::NoBackend`] when
    /// none could even be tried.
    pub(crate) async fn send(
        &self,
        out: Outgoing,
        fleet: &Fleet,
        order: &[u32],
    ) -> Result<Response, ApiError> {
        let settings = &self.inner.settings;
        let deadline = out.started + settings.request_timeout;
        let mut failures = Vec::new();
        let mut attempt = 0u32;
        for &index in order {
            if attempt >= settings.max_attempts {
                break;
            }
            let Some(backend) = fleet.backend(index) else {
                continue;
            };
            let Some(mut claim) = backend.try_claim(out.prompt_tokens) else {
                continue;
            };
            attempt += 1;
            let name = backend.spec.name.clone();
            let span = tracing::info_span!("forward", backend = %name, attempt);
            match self.attempt(&out, &claim, deadline).instrument(span).await {
                Ok(opened) => {
                    claim.first_byte();
                    self.inner
                        .metrics
                        .ttfb_seconds
                        .get_or_create(&BackendLabels {
                            backend: name.clone(),
                        })
                        .observe(out.started.elapsed().as_secs_f64());
                    // Any non-5xx answer is a success for the breaker; a 4xx is the
                    // client's fault and is passed through as it is.
                    claim.settle(true);
                    return Ok(respond(out, claim, opened, deadline));
                }
                Err(e) => {
                    claim.settle(false);
                    if matches!(e, AttemptError::Transport(_)) {
                        backend.mark_down("request failed at the transport level");
                    }
                    tracing::warn!(backend = %name, error = %e, "attempt failed");
                    self.inner
                        .metrics
                        .retries
                        .get_or_create(&BackendLabels {
                            backend: name.clone(),
                        })
                        .inc();
                    failures.push(format!("backend {name} {e}"));
                }
            }
        }
        if failures.is_empty() {
            Err(ApiError::NoBackend(out.req.model))
        } else {
            Err(ApiError::AllFailed(failures))
        }
    }

    /// One attempt, up to the first body byte.
    async fn attempt(
        &self,
        out: &Outgoing,
        claim: &InFlight,
        deadline: Instant,
    ) -> Result<Opened, AttemptError> {
        let limit = self.inner.settings.attempt_timeout;
        let attempt_deadline = deadline.min(Instant::now() + limit);
        let url = claim.backend().spec.endpoint(out.req.endpoint.path());
        let work = async {
            let resp = self
                .inner
                .client
                .post(url)
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-request-id", &out.request_id)
                .body(out.req.body.clone())
                .send()
                .await
                .map_err(AttemptError::Transport)?;
            let status = resp.status();
            if status.is_server_error() {
                return Err(AttemptError::Status(status));
            }
            let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
            let mut rest = resp.bytes_stream().boxed();
            let first = rest
                .next()
                .await
                .transpose()
                .map_err(AttemptError::Transport)?;
            Ok(Opened {
                status,
                content_type,
                first,
                rest,
            })
        };
        tokio::time::timeout_at(attempt_deadline.into(), work)
            .await
            .unwrap_or(Err(AttemptError::Timeout(limit)))
    }
}

/// State of a body being passed through. Dropping it (body done or client gone) drops
/// the backend stream, which closes the backend connection and so cancels the request,
/// and the claim, which returns the in-flight counts.
struct Passing {
    first: Option<Bytes>,
    rest: BoxStream<'static, reqwest::Result<Bytes>>,
    claim: InFlight,
    deadline: Instant,
    sse: bool,
    done: bool,
    _admission: Admission,
}

impl Passing {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        let failure = match tokio::time::timeout_at(self.deadline.into(), self.rest.next()).await {
            Ok(Some(Ok(chunk))) => return Some(Ok(chunk)),
            Ok(None) => return None,
            Ok(Some(Err(e))) => {
                let backend = self.claim.backend().clone();
                backend.mark_down("stream broke");
                self.claim.settle(false);
                format!("backend {} failed mid-stream: {e}", backend.spec.name)
            }
            Err(_) => "request timed out".to_string(),
        };
        self.done = true;
        tracing::warn!(error = %failure, "response cut short");
        if self.sse {
            // A clean SSE error event, then the stream ends normally.
            let body = error_body(&failure, "server_error", "backend_failed", None);
            Some(Ok(Bytes::from(format!("data: {body}\n\n"))))
        } else {
            Some(Err(std::io::Error::other(failure)))
        }
    }
}

fn respond(out: Outgoing, claim: InFlight, opened: Opened, deadline: Instant) -> Response {
    let backend = HeaderValue::from_str(&claim.backend().spec.name).ok();
    let sse = out.req.stream && opened.status.is_success();
    let state = Passing {
        first: opened.first,
        rest: opened.rest,
        claim,
        deadline,
        sse,
        done: false,
        _admission: out.admission,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        s.next().await.map(|item| (item, s))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = opened.status;
    let headers = resp.headers_mut();
    if let Some(ct) = opened.content_type {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    if sse {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    if let Some(b) = backend {
        headers.insert(BACKEND_HEADER, b);
    }
    resp
}
