//! The response: the backend's body passed through to the client, event by event for a
//! stream, which resumes on another backend ([`super::resume`]) when its backend fails
//! mid-stream or is drained. Finished streams are the samples of each backend's measured
//! decode speed.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::StreamExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use super::forward::{Attempt, BackendBody, Opened, Outgoing};
use super::resume::{Fed, Leg, LegEnd, ResumeContext, Resumer, unresumable};
use super::tenant::Admission;
use super::{ApiError, App, BACKEND_HEADER, error_body};
use crate::pool::{Fleet, InFlight, StreamSlot};

/// Fewest streamed tokens whose pace is taken as a decode speed sample.
const MIN_DECODE_SAMPLE_TOKENS: u32 = 4;

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
    rest: BackendBody,
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

/// A non-streamed answer, read whole before the first byte reached the client: sent with
/// its length in one write, the claim and the admission held until it is sent (or the
/// client is gone).
struct Whole {
    data: Option<Bytes>,
    _held: (InFlight, Admission),
}

impl HttpBody for Whole {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

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
                &out.prompt,
                false,
            )
            .await?;
        if opened.status.is_success() {
            out.prompt
                .record_served(&self.inner.kv, self.inner.signals.as_ref(), fleet, &claim);
        }
        Ok(self.respond(out, claim, opened, deadline))
    }

    /// The response passing `opened` through: a non-streamed answer whole, a stream
    /// chunk by chunk, resumable when it can be continued faithfully.
    fn respond(
        &self,
        out: Outgoing,
        claim: InFlight,
        opened: Opened,
        deadline: Instant,
    ) -> Response {
        let backend = HeaderValue::from_str(&claim.backend().spec.name).ok();
        let sse = out.req.stream && opened.status.is_success();
        let body = if out.req.stream {
            self.passing(out, claim, opened.first, opened.rest, deadline, sse)
        } else {
            // NB: `attempt` read a non-streamed answer whole; `rest` is over.
            Body::new(Whole {
                data: opened.first,
                _held: (claim, out.admission),
            })
        };
        let mut resp = Response::new(body);
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

    /// A streamed answer's body, passed through as the backend sends it.
    fn passing(
        &self,
        out: Outgoing,
        claim: InFlight,
        first: Option<Bytes>,
        rest: BackendBody,
        deadline: Instant,
        sse: bool,
    ) -> Body {
        let settings = &self.inner.settings;
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
                    prompt: out.prompt,
                    legs: out.legs,
                    hints: out.hints,
                },
            )))
        };
        let state = Passing {
            first,
            rest,
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
        Body::from_stream(stream)
    }
}
