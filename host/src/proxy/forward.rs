//! Sending a decided request: a visible retry loop over attempts, each on another
//! backend, until one produces its first body byte (a non-streamed one: its whole body);
//! then the body is passed through chunk by chunk. Nothing reaches the client before
//! that first byte, so a retry can never duplicate a stream; a stream that breaks later
//! goes on on another backend (`resume`). Each [`Attempt`] carries its own body (a split's decode leg
//! adds `kv_transfer_params`); first bytes and finished streams are the samples of each
//! backend's measured prefill and decode speed.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use futures::stream::BoxStream;
use tracing::Instrument;

use super::request::{ClientHints, Parsed, PromptFacts};
use super::resume::{Fed, Leg, LegEnd, ResumeContext, Resumer, StreamLegs, unresumable};
use super::tenant::Admission;
use super::{ApiError, App, BACKEND_HEADER, error_body};
use crate::policy::Candidate;
use crate::pool::{Fleet, InFlight, StreamSlot};
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

/// Fewest streamed tokens whose pace is taken as a decode speed sample.
const MIN_DECODE_SAMPLE_TOKENS: u32 = 4;

impl App {
    /// Makes the `attempts` in order (best first) until one answers, and streams its
    /// answer back.
    ///
    /// # Errors
    ///
    /// As [`App::open`].
    pub(crate) async fn send(
        &self,
        out: Outgoing,
        fleet: &Fleet,
        attempts: Vec<Attempt>,
    ) -> Result<Response, ApiError> {
        let deadline = out.started + self.inner.settings.request_timeout;
        let (claim, opened) = self
            .open(
                &out.req,
                &out.request_id,
                out.started,
                deadline,
                fleet,
                attempts,
                false,
            )
            .await?;
        if opened.status.is_success()
            && let Some(served) = fleet.index_of(claim.backend())
        {
            out.prompt.record_served(&self.inner.kv, served);
        }
        Ok(self.respond(out, claim, opened, deadline))
    }

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
        let work = async {
            let resp = self
                .inner
                .client
                .post(url)
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-request-id", request_id)
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
            let first = if req.stream {
                rest.next()
                    .await
                    .transpose()
                    .map_err(AttemptError::Transport)?
            } else {
                let mut whole = Vec::new();
                while let Some(chunk) = rest.next().await {
                    whole.extend_from_slice(&chunk.map_err(AttemptError::Transport)?);
                }
                (!whole.is_empty()).then(|| Bytes::from(whole))
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

/// Whether and how a stream may resume on another backend.
enum Resume {
    /// Not an SSE stream, or `proxy.max_resumes` is 0.
    Off,
    /// A stream that cannot be continued faithfully, and why.
    Refused(&'static str),
    /// A stream followed event by event.
    On(Box<Resumer>),
}

/// What one read of the backend stream gave.
enum Read {
    Chunk(Bytes),
    End,
    Failed(LegEnd),
    Timeout,
    Move,
}

/// State of a body being passed through. Dropping it (body done or client gone) drops
/// the backend stream, which closes the backend connection and so cancels the request,
/// and the claim, which returns the in-flight counts.
struct Passing {
    first: Option<Bytes>,
    rest: BoxStream<'static, reqwest::Result<Bytes>>,
    claim: InFlight,
    /// Counts an SSE stream on its backend and tells when a drain moves it.
    slot: Option<StreamSlot>,
    deadline: Instant,
    idle: Option<Duration>,
    sse: bool,
    done: bool,
    /// When the first byte was passed on, and SSE events seen since: the stream's pace
    /// is a decode speed sample.
    opened_at: Instant,
    events: u32,
    resume: Resume,
    /// What to handle once the current chunk's whole events passed: how the leg ended.
    pending: Option<Read>,
    /// A drain asked the stream to move and no backend could take it: it stays.
    stays: bool,
    _admission: Admission,
}

impl Passing {
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if self.done {
                return None;
            }
            let read = if let Some(first) = self.first.take() {
                Read::Chunk(first)
            } else if let Some(pending) = self.pending.take() {
                pending
            } else {
                self.read().await
            };
            let end = match read {
                Read::Chunk(chunk) => {
                    if self.sse {
                        let n = chunk.windows(5).filter(|w| w == b"data:").count();
                        self.events = self.events.saturating_add(n as u32);
                    }
                    let Resume::On(r) = &mut self.resume else {
                        return Some(Ok(chunk));
                    };
                    let passed = match r.follow.feed(chunk) {
                        Fed::Pass(b) => b,
                        Fed::Error(b, e) => {
                            self.pending = Some(Read::Failed(LegEnd::EngineError(e)));
                            b
                        }
                    };
                    r.passed();
                    if passed.is_empty() {
                        continue;
                    }
                    return Some(Ok(passed));
                }
                Read::End => match &self.resume {
                    Resume::On(r) if r.follow.has_partial() => {
                        // The last event lacked its blank line: end it, then end.
                        self.first = Some(Bytes::from_static(b"\n\n"));
                        self.pending = Some(Read::End);
                        continue;
                    }
                    Resume::On(r) if !r.follow.finished() => LegEnd::ClosedEarly,
                    _ => {
                        self.observe_decode();
                        self.finish();
                        return None;
                    }
                },
                Read::Failed(end) => end,
                Read::Timeout => {
                    self.done = true;
                    return self.cut("request timed out".into());
                }
                Read::Move => {
                    self.move_away().await;
                    continue;
                }
            };
            let backend = self.claim.backend().clone();
            if matches!(end, LegEnd::Transport(_)) {
                backend.mark_down("stream broke");
            }
            self.claim.settle(false);
            let name = backend.spec.name.clone();
            if let Resume::On(r) = &self.resume
                && r.follow.finished()
            {
                // The generation was whole; only the end of the stream was lost.
                let done = r.follow.done();
                tracing::warn!(backend = %name, error = %end, "stream broke after its finish");
                self.finish();
                return (!done).then(|| Ok(Bytes::from_static(b"data: [DONE]\n\n")));
            }
            let not_resumed = match &mut self.resume {
                Resume::On(r) => match r.resume_after(&name, &end).await {
                    Ok(leg) => {
                        self.switch(leg);
                        continue;
                    }
                    Err(why) => format!("; not resumed: {why}"),
                },
                Resume::Refused(why) => format!("; not resumed: {why}"),
                Resume::Off => String::new(),
            };
            self.done = true;
            return self.cut(format!("backend {name} {end}{not_resumed}"));
        }
    }

    /// Reads the backend stream: a chunk, its end, a failure, the request deadline, or
    /// a drain deadline asking the stream to move.
    async fn read(&mut self) -> Read {
        let limit = match self.idle {
            Some(idle) if self.sse => self.deadline.min(Instant::now() + idle),
            _ => self.deadline,
        };
        let idle_first = limit < self.deadline;
        let can_move = !self.stays && matches!(self.resume, Resume::On(_));
        let (rest, slot) = (&mut self.rest, &mut self.slot);
        let moving = async {
            match slot {
                Some(s) if can_move => s.move_asked().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = tokio::time::timeout_at(limit.into(), rest.next()) => match r {
                Ok(Some(Ok(chunk))) => Read::Chunk(chunk),
                Ok(None) => Read::End,
                Ok(Some(Err(e))) => Read::Failed(LegEnd::Transport(e.to_string())),
                Err(_) if idle_first => Read::Failed(LegEnd::Idle),
                Err(_) => Read::Timeout,
            },
            () = moving => Read::Move,
        }
    }

    /// Moves the stream off its draining backend: the old stream is closed only once
    /// the new backend produced its first byte; when none can take it, it stays.
    async fn move_away(&mut self) {
        let Resume::On(r) = &mut self.resume else {
            return;
        };
        let name = self.claim.backend().spec.name.clone();
        match r.resume_after(&name, &LegEnd::Drained).await {
            Ok(leg) => {
                if let Some(s) = &self.slot {
                    s.moved();
                }
                self.switch(leg);
            }
            Err(why) => {
                tracing::warn!(backend = %name, %why, "drain deadline: the stream stays");
                self.stays = true;
            }
        }
    }

    /// Goes on on a new leg; the old stream and claim drop here.
    fn switch(&mut self, leg: Leg) {
        self.claim = leg.claim;
        self.rest = leg.opened.rest;
        self.first = leg.opened.first;
        self.slot = Some(self.claim.backend().stream_slot());
        self.events = 0;
        self.opened_at = Instant::now();
    }

    /// The stream ended normally: records the last leg of a resumed stream.
    fn finish(&mut self) {
        self.done = true;
        if let Resume::On(r) = &mut self.resume {
            let name = self.claim.backend().spec.name.clone();
            r.finished(&name);
        }
    }

    /// Ends the response after `failure`: an SSE stream with a clean error event, any
    /// other body with an error.
    fn cut(&self, failure: String) -> Option<Result<Bytes, std::io::Error>> {
        tracing::warn!(error = %failure, "response cut short");
        if self.sse {
            let body = error_body(&failure, "server_error", "backend_failed", None);
            Some(Ok(Bytes::from(format!("data: {body}\n\n"))))
        } else {
            Some(Err(std::io::Error::other(failure)))
        }
    }

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

impl App {
    /// The response passing `opened` through, resumable when it is a stream that can be
    /// continued faithfully.
    fn respond(
        &self,
        out: Outgoing,
        claim: InFlight,
        opened: Opened,
        deadline: Instant,
    ) -> Response {
        let settings = &self.inner.settings;
        let backend = HeaderValue::from_str(&claim.backend().spec.name).ok();
        let sse = out.req.stream && opened.status.is_success();
        let resume = if !sse || settings.max_resumes == 0 {
            Resume::Off
        } else if let Some(why) = unresumable(&out.req) {
            Resume::Refused(why)
        } else {
            Resume::On(Box::new(Resumer::new(
                self.clone(),
                ResumeContext {
                    req: out.req,
                    request_id: out.request_id,
                    tenant: out.tenant,
                    started: out.started,
                    deadline,
                    prompt_tokens: out.prompt.prompt_tokens,
                    legs: out.legs,
                    hints: out.hints,
                },
            )))
        };
        let state = Passing {
            first: opened.first,
            rest: opened.rest,
            slot: sse.then(|| claim.backend().stream_slot()),
            claim,
            deadline,
            idle: settings.stream_idle_timeout,
            sse,
            done: false,
            opened_at: Instant::now(),
            events: 0,
            resume,
            pending: None,
            stays: false,
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
}
