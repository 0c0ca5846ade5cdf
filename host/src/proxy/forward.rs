//! Sending a decided request: a visible retry loop over attempts, each on another
//! backend, until one produces its first body byte (a non-streamed one: its whole body).
//! Nothing reaches the client before that first byte, so a retry can never duplicate a
//! stream; the body is then passed through by `respond`, and a stream that breaks later
//! goes on on another backend (`resume`). Each [`Attempt`] carries its own body (a split's
//! decode leg adds `kv_transfer_params`); first bytes are the samples of each backend's
//! measured prefill speed.

use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderValue, Request, StatusCode, Uri, header};
use futures::StreamExt;
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tracing::Instrument;

use super::decisions::StreamLegs;
use super::request::{ClientHints, Parsed, PromptFacts};
use super::tenant::Admission;
use super::{ApiError, App, REQUEST_ID_HEADER};
use crate::policy::Candidate;
use crate::pool::{Fleet, InFlight};
use crate::telemetry::BackendLabels;

/// The outbound client: hyper's pooled HTTP/1.1 client (`TCP_NODELAY`, keep-alive),
/// bodies sent whole.
type Client = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

thread_local! {
    /// This thread's client. NB: a pooled connection is driven by a task on the runtime
    /// that opened it; a pool per thread keeps each client-API thread's requests on its
    /// own connections (see `listener::serve_threads`), never waking another thread.
    static CLIENT: Client = {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(256)
            .build(connector)
    };
}

/// A backend's response body, chunk by chunk.
pub(super) type BackendBody = BodyDataStream<Incoming>;

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum AttemptError {
    /// Connecting or sending the request failed: the backend is likely gone.
    #[error("transport error: {}", Chain(.0))]
    Send(#[source] hyper_util::client::legacy::Error),
    /// Reading the answer failed: the backend is likely gone.
    #[error("transport error: {}", Chain(.0))]
    Read(#[source] hyper::Error),
    /// The backend's address is not a valid URI.
    #[error("bad backend url {0}")]
    Url(String),
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
    pub rest: BackendBody,
}

/// An error and its sources, `: `-separated (hyper's own messages name only the layer).
struct Chain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// The request, with everything the send loop and the body stream need.
pub(crate) struct Outgoing {
    /// The parsed request.
    pub req: Parsed,
    /// The request id, sent on as `x-request-id`.
    pub request_id: String,
    /// The prompt: its tokens (counted as in-flight prefill) and its keys, recorded in
    /// the KV index for the backend that serves it.
    pub prompt: PromptFacts,
    /// When the request arrived.
    pub started: Instant,
    /// The tenant's admission, held until the body ends.
    pub admission: Admission,
    /// The tenant, whose pipeline picks the backend a broken stream resumes on.
    pub tenant: String,
    /// The decision record's stream legs, filled in when a stream resumes.
    pub legs: StreamLegs,
    /// What the request's headers tell policies, for the decision of a resumed leg.
    pub hints: ClientHints,
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

impl AttemptError {
    /// Whether the backend failed at the transport level (it is likely gone).
    pub(super) fn is_transport(&self) -> bool {
        matches!(self, AttemptError::Send(_) | AttemptError::Read(_))
    }
}

impl Attempt {
    /// The whole request on `backend`.
    pub(crate) fn whole(out: &Outgoing, backend: u32, candidates: &[Candidate]) -> Attempt {
        Attempt {
            backend,
            body: out.req.body.clone(),
            prefill_tokens: out.prompt.prompt_tokens,
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
    out.prompt.prompt_tokens.saturating_sub(cached)
}

/// Fewest uncached prompt tokens whose time to first token is taken as a prefill speed
/// sample; below it, fixed overheads dominate.
pub(crate) const MIN_PREFILL_SAMPLE_TOKENS: u32 = 256;

impl App {
    /// Makes the `attempts` in order (best first) until one answers up to its first
    /// byte. A `resuming` leg must be answered with a success status.
    ///
    /// # Errors
    ///
    /// [`ApiError::AllFailed`] naming each failed attempt; [`ApiError::NoBackend`] when
    /// none could even be tried.
    #[allow(clippy::too_many_arguments, reason = "the leg's pieces, borrowed")]
    pub(super) async fn open(
        &self,
        req: &Parsed,
        request_id: &str,
        started: Instant,
        deadline: Instant,
        fleet: &Fleet,
        attempts: Vec<Attempt>,
        prompt: &PromptFacts,
        resuming: bool,
    ) -> Result<(InFlight, Opened), ApiError> {
        let settings = &self.inner.settings;
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
            claim.hold_slot(prompt.occupy(&self.inner.kv, a.backend, backend));
            attempt += 1;
            let name = backend.spec.name.to_string();
            let span = tracing::info_span!("forward", backend = %name, attempt, resuming);
            let sent = Instant::now();
            let result = self
                .attempt(req, request_id, &claim, &a.body, deadline)
                .instrument(span)
                .await
                .and_then(|opened| {
                    if resuming && !opened.status.is_success() {
                        Err(AttemptError::Status(opened.status))
                    } else {
                        Ok(opened)
                    }
                });
            match result {
                Ok(opened) => {
                    claim.first_byte();
                    if req.stream && a.uncached_tokens >= MIN_PREFILL_SAMPLE_TOKENS {
                        backend.observe_prefill(a.uncached_tokens, sent.elapsed());
                    }
                    if !resuming {
                        self.inner
                            .metrics
                            .ttfb_seconds
                            .get_or_create(&BackendLabels {
                                backend: name.clone(),
                            })
                            .observe(started.elapsed().as_secs_f64());
                    }
                    // Any non-5xx answer is a success for the breaker; a 4xx is the
                    // client's fault and is passed through as it is.
                    claim.settle(true);
                    return Ok((claim, opened));
                }
                Err(e) => failures.push(self.failed(&mut claim, &e)),
            }
        }
        if failures.is_empty() {
            Err(ApiError::NoBackend(req.model.clone()))
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
        if e.is_transport() {
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

    /// One attempt with `body`, up to the first body byte of a stream, or the whole
    /// body of a non-streamed request (nothing has reached the client yet, so a body
    /// cut short fails the attempt and the request is tried whole elsewhere).
    pub(super) async fn attempt(
        &self,
        req: &Parsed,
        request_id: &str,
        claim: &InFlight,
        body: &Bytes,
        deadline: Instant,
    ) -> Result<Opened, AttemptError> {
        let limit = self.inner.settings.attempt_timeout;
        let attempt_deadline = deadline.min(Instant::now() + limit);
        let url = claim.backend().spec.endpoint(req.endpoint.path());
        let uri = Uri::try_from(url.as_str()).map_err(|_| AttemptError::Url(url.clone()))?;
        let mut request = Request::post(uri)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(Full::new(body.clone()))
            .map_err(|_| AttemptError::Url(url))?;
        if let Ok(id) = HeaderValue::from_str(request_id) {
            request.headers_mut().insert(REQUEST_ID_HEADER, id);
        }
        let work = async {
            let resp = CLIENT
                .with(|c| c.request(request))
                .await
                .map_err(AttemptError::Send)?;
            let status = resp.status();
            if status.is_server_error() {
                return Err(AttemptError::Status(status));
            }
            let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
            let mut rest = resp.into_body().into_data_stream();
            let first = if req.stream {
                rest.next().await.transpose().map_err(AttemptError::Read)?
            } else {
                // NB: a body in one chunk (the common case) is passed on without a copy.
                let mut chunks = Vec::new();
                while let Some(chunk) = rest.next().await {
                    chunks.push(chunk.map_err(AttemptError::Read)?);
                }
                match chunks.len() {
                    0 => None,
                    1 => chunks.pop(),
                    _ => Some(Bytes::from(chunks.concat())),
                }
            };
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
