//! Sending a decided request: a visible retry loop over attempts, each on another
//! backend, until one produces its first body byte; then the body is passed through
//! chunk by chunk. Nothing reaches the client before that first byte, so a retry can
//! never duplicate a stream. Each [`Attempt`] carries its own body (a split's decode leg
//! adds `kv_transfer_params`); first bytes and finished streams are the samples of each
//! backend's measured prefill and decode speed.

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
use crate::policy::Candidate;
use crate::pool::{Fleet, InFlight};
use crate::telemetry::BackendLabels;

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum AttemptError {
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
pub(super) struct Opened {
    /// The backend's status.
    pub status: StatusCode,
    /// The backend's content type.
    pub content_type: Option<HeaderValue>,
    /// The first body chunk; `None` for an empty body.
    pub first: Option<Bytes>,
    /// The rest of the body.
    pub rest: BoxStream<'static, reqwest::Result<Bytes>>,
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

/// One attempt the send loop may make: a backend and what to send it.
pub(crate) struct Attempt {
    /// Fleet index.
    pub backend: u32,
    /// The request body for this backend.
    pub body: Bytes,
    /// Prompt tokens counted as in-flight prefill until the first byte.
    pub prefill_tokens: u32,
    /// Prompt tokens the backend has no cache for; the time to first token of a stream
    /// over them is a prefill speed sample. 0: no sample.
    pub uncached_tokens: u32,
}

impl Attempt {
    /// The whole request on `backend`.
    pub(crate) fn whole(out: &Outgoing, backend: u32, candidates: &[Candidate]) -> Attempt {
        Attempt {
            backend,
            body: out.req.body.clone(),
            prefill_tokens: out.prompt_tokens,
            uncached_tokens: uncached_tokens(out, backend, candidates),
        }
    }
}

/// The request's prompt tokens `backend` has no cached prefix for.
pub(crate) fn uncached_tokens(out: &Outgoing, backend: u32, candidates: &[Candidate]) -> u32 {
    let cached = candidates
        .iter()
        .find(|c| c.backend == backend)
        .map_or(0, |c| c.cached_prefix_tokens);
    out.prompt_tokens.saturating_sub(cached)
}

/// Fewest uncached prompt tokens whose time to first token is taken as a prefill speed
/// sample; below it, fixed overheads dominate.
pub(crate) const MIN_PREFILL_SAMPLE_TOKENS: u32 = 256;

/// Fewest streamed tokens whose pace is taken as a decode speed sample.
const MIN_DECODE_SAMPLE_TOKENS: u32 = 4;

impl App {
    /// Makes the `attempts` in order (best first) until one answers.
    ///
    /// # Errors
    ///
    /// [`ApiError::AllFailed`] naming each failed attempt; [`ApiError::NoBackend`] when
    /// none could even be tried.
    pub(crate) async fn send(
        &self,
        out: Outgoing,
        fleet: &Fleet,
        attempts: Vec<Attempt>,
    ) -> Result<Response, ApiError> {
        let settings = &self.inner.settings;
        let deadline = out.started + settings.request_timeout;
        let mut failures = Vec::new();
        let mut attempt = 0u32;
        for a in attempts {
            if attempt >= settings.max_attempts {
                break;
            }
            let Some(backend) = fleet.backend(a.backend) else {
                continue;
            };
            let Some(mut claim) = backend.try_claim(a.prefill_tokens) else {
                continue;
            };
            attempt += 1;
            let name = backend.spec.name.to_string();
            let span = tracing::info_span!("forward", backend = %name, attempt);
            let sent = Instant::now();
            match self
                .attempt(&out, &claim, &a.body, deadline)
                .instrument(span)
                .await
            {
                Ok(opened) => {
                    claim.first_byte();
                    if out.req.stream && a.uncached_tokens >= MIN_PREFILL_SAMPLE_TOKENS {
                        backend.observe_prefill(a.uncached_tokens, sent.elapsed());
                    }
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
                Err(e) => failures.push(self.failed(&mut claim, &e)),
            }
        }
        if failures.is_empty() {
            Err(ApiError::NoBackend(out.req.model))
        } else {
            Err(ApiError::AllFailed(failures))
        }
    }

    /// Books a failed attempt: breaker, health on transport errors, log, retry metric.
    /// Returns the failure's description.
    pub(super) fn failed(&self, claim: &mut InFlight, e: &AttemptError) -> String {
        claim.settle(false);
        let backend = claim.backend();
        let name = &backend.spec.name;
        if matches!(e, AttemptError::Transport(_)) {
            backend.mark_down("request failed at the transport level");
        }
        tracing::warn!(backend = %name, error = %e, "attempt failed");
        self.inner
            .metrics
            .retries
            .get_or_create(&BackendLabels {
                backend: name.to_string(),
            })
            .inc();
        format!("backend {name} {e}")
    }

    /// One attempt with `body`, up to the first body byte.
    pub(super) async fn attempt(
        &self,
        out: &Outgoing,
        claim: &InFlight,
        body: &Bytes,
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
                .body(body.clone())
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
    /// When the first byte was passed on, and SSE events seen since: the stream's pace
    /// is a decode speed sample.
    opened_at: Instant,
    events: u32,
    _admission: Admission,
}

impl Passing {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        if let Some(first) = self.first.take() {
            self.opened_at = Instant::now();
            return Some(Ok(first));
        }
        let failure = match tokio::time::timeout_at(self.deadline.into(), self.rest.next()).await {
            Ok(Some(Ok(chunk))) => {
                if self.sse {
                    let n = chunk.windows(5).filter(|w| w == b"data:").count();
                    self.events = self.events.saturating_add(n as u32);
                }
                return Some(Ok(chunk));
            }
            Ok(None) => {
                self.observe_decode();
                return None;
            }
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

impl Passing {
    /// Records the finished stream's pace. Events after the first chunk are tokens, less
    /// the final `[DONE]`.
    fn observe_decode(&self) {
        let tokens = self.events.saturating_sub(1);
        if self.sse && tokens >= MIN_DECODE_SAMPLE_TOKENS {
            self.claim
                .backend()
                .observe_decode(tokens, self.opened_at.elapsed());
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
        opened_at: Instant::now(),
        events: 0,
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
