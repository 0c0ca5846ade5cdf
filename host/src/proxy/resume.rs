//! Stream resumption: a streamed chat or completion whose backend fails mid-stream
//! (connection reset or closed early, an engine error event, no byte within
//! `proxy.stream_idle_timeout_ms`) or is drained past its deadline goes on on another
//! backend, and the client's stream continues unbroken.
//!
//! - [`SseFollower`] follows the text of a stream event by event: on the first leg it
//!   passes whole events through unchanged and only reads the few fields it needs (the
//!   text, tool calls, the finish reason, an error); on later legs it rewrites each event
//!   so that `id`, `model` and `created` stay the first leg's, drops the new leg's
//!   opening role chunk and makes `usage` cover the whole generation.
//! - [`Resumer`] picks the next backend with the tenant's pipeline (failed backends, other
//!   engine kinds than vLLM, SGLang and llama.cpp, and prefill-only backends excluded)
//!   and sends it the continuation: chat, the messages plus an assistant message holding
//!   the text so far with `continue_final_message: true, add_generation_prompt: false`
//!   (vLLM, SGLang and llama.cpp all read these); completions, the prompt plus the text
//!   so far; `max_tokens` / `max_completion_tokens` less the tokens already sent.
//! - Requests that cannot be continued faithfully are never resumed ([`unresumable`]):
//!   `n > 1`, `best_of > 1`, `logprobs`, `echo`, a prompt that is not one text, a
//!   constrained `response_format`; and, found while following, tool calls or reasoning
//!   in flight.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use bytes::{BufMut, BytesMut};
use serde::Deserialize;
use serde_json::{Map, Value};
use switchyard_openai::Chunk;

use super::decisions::{StreamLeg, StreamLegs};
use super::forward::{Attempt, Opened};
use super::request::{ClientHints, Endpoint, Parsed, PromptFacts};
use super::{App, Route, route};
use crate::policy::Role;
use crate::pool::{EngineKind, InFlight};
use crate::telemetry::ResumeLabels;

/// Why a leg of a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LegEnd {
    /// The backend finished the generation.
    Finished,
    /// Reading failed at the transport level (connection reset).
    Transport(String),
    /// The backend closed the stream before the generation finished.
    ClosedEarly,
    /// The backend sent an error event.
    EngineError(String),
    /// No byte within the idle limit.
    Idle,
    /// The backend's drain deadline passed.
    Drained,
}

impl LegEnd {
    /// The metric label.
    pub(super) fn label(&self) -> &'static str {
        match self {
            LegEnd::Finished => "finished",
            LegEnd::Transport(_) => "transport",
            LegEnd::ClosedEarly => "closed_early",
            LegEnd::EngineError(_) => "engine_error",
            LegEnd::Idle => "idle",
            LegEnd::Drained => "drained",
        }
    }
}

impl std::fmt::Display for LegEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LegEnd::Finished => f.write_str("finished"),
            LegEnd::Transport(e) => write!(f, "failed mid-stream: {e}"),
            LegEnd::ClosedEarly => f.write_str("closed the stream before it finished"),
            LegEnd::EngineError(e) => write!(f, "sent an error event: {e}"),
            LegEnd::Idle => f.write_str("sent nothing within stream_idle_timeout_ms"),
            LegEnd::Drained => f.write_str("drain deadline passed"),
        }
    }
}

/// Why a request can never be resumed, from its body; `None` when it can.
pub(super) fn unresumable(req: &Parsed) -> Option<&'static str> {
    #[derive(Deserialize)]
    struct Knobs {
        n: Option<u32>,
        best_of: Option<u32>,
        logprobs: Option<Value>,
        top_logprobs: Option<Value>,
        echo: Option<bool>,
        prompt: Option<Value>,
        response_format: Option<Value>,
    }
    let Ok(k) = serde_json::from_slice::<Knobs>(&req.body) else {
        return Some("body not readable");
    };
    let set = |v: &Option<Value>| {
        v.as_ref()
            .is_some_and(|v| !v.is_null() && v.as_bool() != Some(false))
    };
    if k.n.is_some_and(|n| n > 1) {
        Some("n > 1")
    } else if k.best_of.is_some_and(|n| n > 1) {
        Some("best_of > 1")
    } else if set(&k.logprobs) || set(&k.top_logprobs) {
        Some("logprobs")
    } else if k.echo == Some(true) {
        Some("echo")
    } else if req.endpoint == Endpoint::Completions && prompt_text(k.prompt.as_ref()).is_none() {
        Some("prompt is not one text")
    } else if k
        .response_format
        .as_ref()
        .is_some_and(|f| f.get("type").and_then(Value::as_str).unwrap_or("text") != "text")
    {
        Some("constrained response_format")
    } else {
        None
    }
}

/// A completion prompt's single text: a string or a one-string array.
fn prompt_text(prompt: Option<&Value>) -> Option<&str> {
    match prompt? {
        Value::String(s) => Some(s),
        Value::Array(a) if a.len() == 1 => a[0].as_str(),
        _ => None,
    }
}

/// Whether an engine kind reads the continuation flags the router sends.
fn continuable(kind: EngineKind) -> bool {
    matches!(
        kind,
        EngineKind::Vllm | EngineKind::Sglang | EngineKind::Llamacpp
    )
}

/// The continuation of `req` after `text` (`sent` tokens) was streamed: see the module
/// documentation. Nothing streamed yet: the request as it came.
fn continuation(req: &Parsed, text: &str, sent: u32) -> Result<Bytes, String> {
    if text.is_empty() {
        return Ok(req.body.clone());
    }
    let mut m: Map<String, Value> =
        serde_json::from_slice(&req.body).map_err(|e| format!("body not readable: {e}"))?;
    match req.endpoint {
        Endpoint::Chat => {
            let Some(Value::Array(messages)) = m.get_mut("messages") else {
                return Err("no messages".into());
            };
            messages.push(serde_json::json!({"role": "assistant", "content": text}));
            m.insert("continue_final_message".into(), true.into());
            m.insert("add_generation_prompt".into(), false.into());
        }
        Endpoint::Completions => {
            let prompt = prompt_text(m.get("prompt")).ok_or("prompt is not one text")?;
            let joined = format!("{prompt}{text}");
            m.insert("prompt".into(), joined.into());
        }
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(max) = m.get(field).and_then(Value::as_u64) {
            let left = max.saturating_sub(u64::from(sent));
            if left == 0 {
                return Err(format!("{field} already reached"));
            }
            m.insert(field.into(), left.into());
        }
    }
    serde_json::to_vec(&m)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// What following a chunk gave.
#[derive(Debug)]
pub enum Fed {
    /// Whole events to pass on (possibly none yet).
    Pass(Bytes),
    /// Whole events to pass on, then the backend's error event (not passed on).
    Error(Bytes, String),
}

/// The first leg's identity, kept on every later leg's events. Read from the first
/// event alone (its other fields skipped, not built into a map).
#[derive(Debug, Clone, Deserialize)]
struct Identity {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    model: Value,
    #[serde(default)]
    created: Value,
}

/// Follows the text of one SSE stream (chat or completions, choice 0): see the module
/// documentation. Public for the `resume_cost` example.
#[derive(Debug)]
pub struct SseFollower {
    partial: BytesMut,
    text: String,
    tokens: u32,
    leg_tokens: u32,
    finished: bool,
    done: bool,
    unresumable: Option<&'static str>,
    identity: Option<Identity>,
    /// Set on later legs: the tokens before this leg, for `usage`.
    rewrite: Option<u32>,
    last_token_at: Option<Instant>,
}

impl Default for SseFollower {
    fn default() -> Self {
        SseFollower::new()
    }
}

impl SseFollower {
    /// A follower for a stream's first leg.
    pub fn new() -> SseFollower {
        SseFollower {
            partial: BytesMut::new(),
            text: String::new(),
            tokens: 0,
            leg_tokens: 0,
            finished: false,
            done: false,
            unresumable: None,
            identity: None,
            rewrite: None,
            last_token_at: None,
        }
    }

    /// The text streamed so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Tokens streamed so far (events carrying text).
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    /// Whether the generation finished (a finish reason or `[DONE]` passed).
    pub fn finished(&self) -> bool {
        self.finished || self.done
    }

    /// Whether bytes of an unfinished event wait for the rest.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Whether `[DONE]` passed.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Follows `chunk`: returns the whole events in it (and in what earlier chunks left
    /// over) to pass on; a trailing partial event waits for the next chunk.
    pub fn feed(&mut self, chunk: Bytes) -> Fed {
        let data = if self.partial.is_empty() {
            chunk
        } else {
            self.partial.extend_from_slice(&chunk);
            self.partial.split().freeze()
        };
        let cut = data
            .windows(2)
            .rposition(|w| w == b"\n\n")
            .map_or(0, |i| i + 2);
        if cut < data.len() {
            self.partial.extend_from_slice(&data[cut..]);
        }
        let whole = data.slice(..cut);
        let mut out = self.rewrite.map(|_| BytesMut::with_capacity(whole.len()));
        let mut start = 0;
        while start < whole.len() {
            let end = find(&whole[start..], b"\n\n").map_or(whole.len(), |i| start + i + 2);
            let event = &whole[start..end];
            if let Some(error) = self.observe(event) {
                let passed = match out {
                    Some(o) => o.freeze(),
                    None => whole.slice(..start),
                };
                return Fed::Error(passed, error);
            }
            if let Some(o) = out.as_mut() {
                self.rewritten(event, o);
            }
            start = end;
        }
        Fed::Pass(out.map_or(whole, BytesMut::freeze))
    }

    /// Reads one whole event; returns the engine's error when it is one.
    fn observe(&mut self, event: &[u8]) -> Option<String> {
        let payload = data_of(event)?;
        if payload == b"[DONE]" {
            self.done = true;
            return None;
        }
        let Ok(e) = serde_json::from_slice::<Chunk<'_>>(payload) else {
            return None;
        };
        if e.error.is_some() || e.object.as_deref() == Some("error") {
            return Some(String::from_utf8_lossy(payload).chars().take(300).collect());
        }
        if self.identity.is_none() {
            self.identity = serde_json::from_slice::<Identity>(payload).ok();
        }
        let c = e.choices.into_iter().next()?;
        let piece = match c.delta {
            Some(d) => {
                if d.tool_calls.is_some_and(|t| !t.is_empty()) || d.function_call.is_some() {
                    self.unresumable = Some("tool calls in flight");
                }
                if d.reasoning_content.is_some_and(|r| !r.is_empty()) {
                    self.unresumable = Some("reasoning in flight");
                }
                d.content
            }
            None => c.text,
        };
        if let Some(p) = piece.filter(|p| !p.is_empty()) {
            self.text.push_str(&p);
            self.tokens += 1;
            self.leg_tokens += 1;
            self.last_token_at = Some(Instant::now());
        }
        if c.finish_reason.is_some() {
            self.finished = true;
        }
        None
    }

    /// Appends `event` to `out` as the client must see it on a later leg.
    fn rewritten(&self, event: &[u8], out: &mut BytesMut) {
        let before = self.rewrite.unwrap_or(0);
        let Some(payload) = data_of(event) else {
            return;
        };
        let Ok(mut m) = serde_json::from_slice::<Map<String, Value>>(payload) else {
            out.put_slice(event);
            return;
        };
        if let Some(id) = &self.identity {
            for (k, v) in [
                ("id", &id.id),
                ("model", &id.model),
                ("created", &id.created),
            ] {
                if m.contains_key(k) && !v.is_null() {
                    m.insert(k.into(), v.clone());
                }
            }
        }
        let opening = m.get("choices").and_then(|c| c.get(0)).is_some_and(|c| {
            let delta = c.get("delta");
            let empty = delta
                .and_then(|d| d.get("content"))
                .is_none_or(|t| t.as_str().is_some_and(str::is_empty) || t.is_null());
            delta.is_some_and(|d| d.get("role").is_some())
                && empty
                && c.get("finish_reason").is_none_or(Value::is_null)
        });
        if opening {
            return;
        }
        if let Some(Value::Object(u)) = m.get_mut("usage") {
            let get =
                |u: &Map<String, Value>, k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            let completion = get(u, "completion_tokens") + u64::from(before);
            let prompt = get(u, "prompt_tokens").saturating_sub(u64::from(before));
            u.insert("completion_tokens".into(), completion.into());
            u.insert("prompt_tokens".into(), prompt.into());
            u.insert("total_tokens".into(), (prompt + completion).into());
        }
        out.put_slice(b"data: ");
        // NB: serializing a map just parsed cannot fail.
        let _ = serde_json::to_writer((&mut *out).writer(), &m);
        out.put_slice(b"\n\n");
    }

    /// Starts a later leg: its events are rewritten from now on.
    fn next_leg(&mut self) {
        self.partial.clear();
        self.rewrite = Some(self.tokens);
        self.leg_tokens = 0;
        self.finished = false;
        self.done = false;
    }
}

/// The payload of an event's `data:` line.
fn data_of(event: &[u8]) -> Option<&[u8]> {
    event
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"data:").map(|p| p.trim_ascii()))
}

/// The first position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A new leg, opened on another backend.
pub(super) struct Leg {
    /// The claim on the new backend.
    pub claim: InFlight,
    /// Its answer, up to the first byte.
    pub opened: Opened,
}

/// Everything a stream needs to resume elsewhere. Held by the body stream.
pub(super) struct Resumer {
    app: App,
    tenant: String,
    req: Parsed,
    request_id: String,
    started: Instant,
    deadline: Instant,
    prompt: PromptFacts,
    resumes: u32,
    /// Backends a leg failed on or was moved from.
    excluded: Vec<String>,
    legs: StreamLegs,
    hints: ClientHints,
    /// When the old leg's last token passed, until the new leg's first one does.
    seam_from: Option<Instant>,
    /// The current leg's seam, once its first token passed.
    seam: Option<Duration>,
    /// Follows the stream's text.
    pub follow: SseFollower,
}

/// What [`Resumer::new`] is built from.
pub(super) struct ResumeContext {
    /// The client's request.
    pub req: Parsed,
    /// The request id.
    pub request_id: String,
    /// The tenant, whose pipeline picks the next backend.
    pub tenant: String,
    /// When the request arrived.
    pub started: Instant,
    /// When the whole request must end.
    pub deadline: Instant,
    /// The prompt: its tokens, and its keys for the KV index.
    pub prompt: PromptFacts,
    /// The decision record's legs.
    pub legs: StreamLegs,
    /// What the request's headers tell policies.
    pub hints: ClientHints,
}

impl Resumer {
    /// A resumer for a stream on its first leg.
    pub(super) fn new(app: App, ctx: ResumeContext) -> Resumer {
        Resumer {
            app,
            tenant: ctx.tenant,
            req: ctx.req,
            request_id: ctx.request_id,
            started: ctx.started,
            deadline: ctx.deadline,
            prompt: ctx.prompt,
            resumes: 0,
            excluded: Vec::new(),
            legs: ctx.legs,
            hints: ctx.hints,
            seam_from: None,
            seam: None,
            follow: SseFollower::new(),
        }
    }

    /// Records the last leg of a resumed stream, which finished.
    pub(super) fn finished(&mut self, backend: &str) {
        if self.resumes > 0 {
            let seam_ms = self.seam_ms();
            self.legs.push(StreamLeg {
                backend: backend.to_owned(),
                tokens: self.follow.leg_tokens,
                ended: LegEnd::Finished.label(),
                detail: None,
                seam_ms,
            });
        }
    }

    /// Goes on elsewhere after the leg on `from` ended with `end` ([`Resumer::reopen`]),
    /// and records that leg.
    ///
    /// # Errors
    ///
    /// Why the stream cannot go on elsewhere.
    pub(super) async fn resume_after(&mut self, from: &str, end: &LegEnd) -> Result<Leg, String> {
        let tokens = self.follow.leg_tokens;
        let result = self.reopen(from, end).await;
        let detail = match &result {
            Err(why) => Some(format!("{end}; not resumed: {why}")),
            Ok(_) => matches!(end, LegEnd::Transport(_) | LegEnd::EngineError(_))
                .then(|| end.to_string()),
        };
        let seam_ms = self.seam_ms();
        self.legs.push(StreamLeg {
            backend: from.to_owned(),
            tokens,
            ended: end.label(),
            detail,
            seam_ms,
        });
        result
    }

    /// Notes the passing of whole events after a resumption: the first token after the
    /// seam closes it.
    pub(super) fn passed(&mut self) {
        if let (Some(from), Some(at)) = (self.seam_from, self.follow.last_token_at)
            && at > from
        {
            self.seam_from = None;
            self.seam = Some(at - from);
            self.app
                .inner
                .metrics
                .resume_seam_seconds
                .observe((at - from).as_secs_f64());
        }
    }

    /// The current leg's seam for its record, and forgets it for the next leg.
    fn seam_ms(&mut self) -> Option<f64> {
        self.seam.take().map(|d| d.as_secs_f64() * 1000.0)
    }

    /// Opens the next leg after the one on `from` ended with `why`: picks a backend with
    /// the tenant's pipeline and sends it the continuation.
    ///
    /// # Errors
    ///
    /// Why the stream cannot go on elsewhere.
    async fn reopen(&mut self, from: &str, why: &LegEnd) -> Result<Leg, String> {
        let max = self.app.inner.settings.max_resumes;
        if self.resumes >= max {
            return Err(format!("max_resumes ({max}) reached"));
        }
        if let Some(reason) = self.follow.unresumable {
            return Err(format!("not resumable: {reason}"));
        }
        if !self.excluded.iter().any(|e| e == from) {
            self.excluded.push(from.to_owned());
        }
        let fleet = self.app.inner.pool.fleet();
        let candidates: Vec<_> = fleet
            .candidates(&self.req.model)
            .into_iter()
            .filter(|c| {
                fleet.backend(c.backend).is_some_and(|b| {
                    continuable(b.spec.engine)
                        && !self.excluded.iter().any(|e| e == b.spec.name.as_str())
                        && fleet
                            .facts
                            .backends
                            .get(c.backend as usize)
                            .is_none_or(|f| f.role != Role::Prefill)
                })
            })
            .collect();
        if candidates.is_empty() {
            return Err("no other vllm, sglang or llamacpp backend can take it over".into());
        }
        let sent = self.follow.tokens;
        let body = continuation(&self.req, &self.follow.text, sent)?;
        let prompt_tokens = self.prompt.prompt_tokens.saturating_add(sent);
        let max_tokens = self.app.policy_max_tokens(&self.req).saturating_sub(sent);
        let facts = self.hints.facts(
            &self.request_id,
            &self.tenant,
            &self.req,
            &self.prompt,
            prompt_tokens,
            max_tokens,
        );
        let pipeline = self.app.inner.policies.pipeline(&self.tenant);
        let decision = pipeline.decide(&fleet.facts, &facts, &candidates);
        let order = match route(&decision, &candidates, &fleet.facts) {
            Ok(Route::Single(order)) => order,
            // NB: a continuation is served whole, on the split's decode-capable backends.
            Ok(Route::Split(s)) => s.decode,
            Err(e) => return Err(format!("pipeline: {e}")),
        };
        let attempts = order
            .into_iter()
            .map(|backend| Attempt {
                backend,
                body: body.clone(),
                prefill_tokens: prompt_tokens,
                uncached_tokens: 0,
            })
            .collect();
        let (claim, opened) = self
            .app
            .open(
                &self.req,
                &self.request_id,
                self.started,
                self.deadline,
                &fleet,
                attempts,
                &self.prompt,
                true,
            )
            .await
            .map_err(|e| e.to_string())?;
        // NB: a resuming leg opens only with a success status: the backend now holds the
        // prompt (and the text so far).
        self.prompt.record_served(
            &self.app.inner.kv,
            self.app.inner.signals.as_ref(),
            &fleet,
            &claim,
        );
        let to = claim.backend().spec.name.clone();
        self.resumes += 1;
        self.seam_from = self.follow.last_token_at.or(Some(Instant::now()));
        self.follow.next_leg();
        self.app
            .inner
            .metrics
            .stream_resumes
            .get_or_create(&ResumeLabels {
                from: from.to_owned(),
                to: to.to_string(),
                reason: why.label().to_owned(),
            })
            .inc();
        tracing::warn!(from, to = %to, reason = %why, tokens = sent, resume = self.resumes, "stream resumed on another backend");
        Ok(Leg { claim, opened })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_event(content: &str) -> String {
        format!(
            "data: {}\n\n",
            serde_json::json!({"id": "c-1", "object": "chat.completion.chunk", "created": 7, "model": "m",
                "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
        )
    }

    fn passed(f: Fed) -> String {
        match f {
            Fed::Pass(b) => String::from_utf8(b.to_vec()).unwrap(),
            Fed::Error(..) => panic!("unexpected error event"),
        }
    }

    #[test]
    fn follower_passes_whole_events_and_holds_back_a_partial_one() {
        let mut f = SseFollower::new();
        let one = chat_event("Hel");
        let two = chat_event("lo");
        let stream = format!("{one}{two}");
        let (a, b) = stream.split_at(one.len() + 10);
        assert_eq!(passed(f.feed(Bytes::from(a.to_owned()))), one);
        assert_eq!(passed(f.feed(Bytes::from(b.to_owned()))), two);
        assert_eq!((f.text(), f.tokens()), ("Hello", 2));
        assert!(!f.finished());
    }

    #[test]
    fn follower_stops_at_an_engine_error_event() {
        let mut f = SseFollower::new();
        let chunk = format!(
            "{}data: {{\"error\":{{\"message\":\"engine died\"}}}}\n\n",
            chat_event("Hi")
        );
        match f.feed(Bytes::from(chunk)) {
            Fed::Error(before, e) => {
                assert_eq!(
                    String::from_utf8(before.to_vec()).unwrap(),
                    chat_event("Hi")
                );
                assert!(e.contains("engine died"), "{e}");
            }
            Fed::Pass(_) => panic!("error event passed on"),
        }
    }

    #[test]
    fn later_legs_keep_the_first_identity_and_whole_usage() {
        let mut f = SseFollower::new();
        passed(f.feed(Bytes::from(chat_event("a"))));
        f.next_leg();
        let opening = format!(
            "data: {}\n\n",
            serde_json::json!({"id": "other", "created": 9, "model": "m2",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})
        );
        let usage = format!(
            "data: {}\n\n",
            serde_json::json!({"id": "other", "created": 9, "model": "m2", "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}})
        );
        let out = passed(f.feed(Bytes::from(format!(
            "{opening}{}{usage}data: [DONE]\n\n",
            chat_event("b").replace("c-1", "other")
        ))));
        let events: Vec<Value> = out
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|p| *p != "[DONE]")
            .map(|p| serde_json::from_str(p).unwrap())
            .collect();
        assert_eq!(
            events.len(),
            2,
            "opening role chunk dropped, [DONE] passed: {out}"
        );
        assert_eq!(events[0]["id"], "c-1");
        assert_eq!(events[0]["created"], 7);
        assert_eq!(events[0]["model"], "m");
        assert_eq!(events[1]["usage"]["completion_tokens"], 4);
        assert_eq!(events[1]["usage"]["prompt_tokens"], 10);
        assert_eq!(events[1]["usage"]["total_tokens"], 14);
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        assert_eq!(f.text(), "ab");
    }

    #[test]
    fn tool_calls_in_flight_make_a_stream_unresumable() {
        let mut f = SseFollower::new();
        let ev = format!(
            "data: {}\n\n",
            serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}}]})
        );
        passed(f.feed(Bytes::from(ev)));
        assert_eq!(f.unresumable, Some("tool calls in flight"));
    }

    fn parsed(endpoint: Endpoint, body: Value) -> Parsed {
        Parsed::from_openai(endpoint, Bytes::from(body.to_string())).unwrap()
    }

    #[test]
    fn chat_continuation_adds_the_text_as_assistant_message_and_lowers_max_tokens() {
        let req = parsed(
            Endpoint::Chat,
            serde_json::json!({"model": "m", "stream": true, "max_tokens": 10, "max_completion_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]}),
        );
        let body: Value = serde_json::from_slice(&continuation(&req, "Hello", 4).unwrap()).unwrap();
        assert_eq!(
            body["messages"][1],
            serde_json::json!({"role": "assistant", "content": "Hello"})
        );
        assert_eq!(body["continue_final_message"], true);
        assert_eq!(body["add_generation_prompt"], false);
        assert_eq!(
            (
                body["max_tokens"].as_u64(),
                body["max_completion_tokens"].as_u64()
            ),
            (Some(6), Some(6))
        );
        assert!(continuation(&req, "Hello", 10).is_err(), "no tokens left");
    }

    #[test]
    fn completion_continuation_extends_the_prompt() {
        let req = parsed(
            Endpoint::Completions,
            serde_json::json!({"model": "m", "stream": true, "prompt": ["Once"], "max_tokens": 5}),
        );
        let body: Value = serde_json::from_slice(&continuation(&req, " upon", 1).unwrap()).unwrap();
        assert_eq!(body["prompt"], "Once upon");
        assert_eq!(body["max_tokens"], 4);
    }

    #[test]
    fn unresumable_requests_are_named() {
        let chat = |extra: Value| {
            let mut b = serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
            b.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            unresumable(&parsed(Endpoint::Chat, b))
        };
        assert_eq!(chat(serde_json::json!({})), None);
        assert_eq!(chat(serde_json::json!({"n": 2})), Some("n > 1"));
        assert_eq!(
            chat(serde_json::json!({"logprobs": true})),
            Some("logprobs")
        );
        assert_eq!(chat(serde_json::json!({"logprobs": false})), None);
        assert_eq!(
            chat(serde_json::json!({"response_format": {"type": "json_object"}})),
            Some("constrained response_format")
        );
        let comp = |body: Value| unresumable(&parsed(Endpoint::Completions, body));
        assert_eq!(
            comp(serde_json::json!({"model": "m", "prompt": "x", "echo": true})),
            Some("echo")
        );
        assert_eq!(
            comp(serde_json::json!({"model": "m", "prompt": [1, 2]})),
            Some("prompt is not one text")
        );
        assert_eq!(
            comp(serde_json::json!({"model": "m", "prompt": "x", "logprobs": 2})),
            Some("logprobs")
        );
    }
}
