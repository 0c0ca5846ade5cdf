//! Two-phase requests, vLLM's prefill/decode protocol: the prefill backend computes the
//! prompt (`max_tokens: 1`, `stream: false`, `kv_transfer_params:
//! {"do_remote_decode": true}`) and answers with the `kv_transfer_params` that tell the
//! decode backend where to pull the KV cache from; the decode backend then serves the
//! client's request carrying them, streamed back like any single-backend request.
//!
//! Failures: a failed prefill is tried on the next prefill-capable candidate
//! ([`SplitFallback::Retry`]) or not at all ([`SplitFallback::DecodeOnly`]); without a
//! prefill the whole request goes to the decode backend. A decode backend failing before
//! its first byte is replaced by the next decode-capable one, serving the whole request.

use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Map, Value};

use super::decisions::Legs;
use super::forward::{Attempt, AttemptError, MIN_PREFILL_SAMPLE_TOKENS, Outgoing, uncached_tokens};
use super::request::edit_body;
use super::{ApiError, App, BACKEND_HEADER};
use crate::config::SplitFallback;
use crate::policy::Candidate;
use crate::pool::Fleet;

/// Response header naming the backend that served the prefill leg of a split.
pub const PREFILL_BACKEND_HEADER: HeaderName =
    HeaderName::from_static("x-switchyard-prefill-backend");

/// Why a prefill leg failed.
#[derive(Debug, thiserror::Error)]
enum PrefillError {
    /// The backend could not be reached or answered with a server error.
    #[error(transparent)]
    Attempt(#[from] AttemptError),
    /// The backend refused the request.
    #[error("returned {0}")]
    Refused(StatusCode),
    /// The answer had no `kv_transfer_params` object: the backend does not do P/D.
    #[error("answered without kv_transfer_params")]
    NoTransferParams,
    /// The backend took no new requests.
    #[error("unavailable")]
    Unavailable,
}

/// Where a split placement may run its legs, best first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitRoute {
    /// Prefill-capable backends; the first is the placement's choice.
    pub prefill: Vec<u32>,
    /// Decode-capable backends; the first is the placement's choice.
    pub decode: Vec<u32>,
}

impl App {
    /// Serves a request in two phases on `route`, recording what happened in `legs`.
    ///
    /// # Errors
    ///
    /// As [`App::send`] for the decode leg.
    pub(crate) async fn send_split(
        &self,
        out: Outgoing,
        fleet: &Fleet,
        candidates: &[Candidate],
        route: &SplitRoute,
        legs: &mut Legs,
    ) -> Result<Response, ApiError> {
        let tries = match self.inner.settings.split_fallback {
            SplitFallback::Retry => self.inner.settings.max_attempts as usize,
            SplitFallback::DecodeOnly => 1,
        };
        let prefill_body = leg_body(&out.req.body, |m| {
            m.insert("max_tokens".into(), 1.into());
            if m.contains_key("max_completion_tokens") {
                m.insert("max_completion_tokens".into(), 1.into());
            }
            m.insert("stream".into(), false.into());
            m.remove("stream_options");
            m.insert(
                "kv_transfer_params".into(),
                serde_json::json!({"do_remote_decode": true}),
            );
        });
        let mut failures = Vec::new();
        let mut prefilled = None;
        for &p in route.prefill.iter().take(tries) {
            let uncached = uncached_tokens(&out, p, candidates);
            match self.prefill(&out, fleet, p, &prefill_body, uncached).await {
                Ok(params) => {
                    prefilled = Some((p, params));
                    break;
                }
                Err(e) => failures.push(format!("prefill on {} {e}", name(fleet, p))),
            }
        }
        let Some((&decode, others)) = route.decode.split_first() else {
            return Err(ApiError::NoBackend(out.req.model));
        };
        let mut attempts = Vec::with_capacity(route.decode.len());
        if let Some((p, params)) = &prefilled {
            legs.prefill_served_by = Some(name(fleet, *p));
            attempts.push(Attempt {
                backend: decode,
                body: leg_body(&out.req.body, |m| {
                    m.insert("kv_transfer_params".into(), params.clone());
                }),
                prefill_tokens: 0,
                uncached_tokens: 0,
            });
        } else {
            legs.split_fallback = Some(failures.join("; "));
            attempts.push(Attempt::whole(&out, decode, candidates));
        }
        attempts.extend(others.iter().map(|&d| Attempt::whole(&out, d, candidates)));
        let mut resp = match self.send(out, fleet, attempts).await {
            Ok(resp) => resp,
            Err(e) => {
                if prefilled.is_some() {
                    legs.split_fallback = Some(format!("decode failed: {e}"));
                }
                return Err(e);
            }
        };
        let served = resp
            .headers()
            .get(&BACKEND_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        match &prefilled {
            Some((p, _)) if served == name(fleet, decode) => {
                legs.split = true;
                if let Ok(v) = HeaderValue::from_str(&name(fleet, *p)) {
                    resp.headers_mut().insert(PREFILL_BACKEND_HEADER, v);
                }
            }
            Some(_) => {
                legs.split_fallback = Some(format!(
                    "decode on {} did not answer before its first byte; served whole by {served}",
                    name(fleet, decode)
                ));
            }
            None => {}
        }
        Ok(resp)
    }

    /// The prefill leg on backend `index`: returns the `kv_transfer_params` its answer
    /// carried. The claim on the backend ends with the leg.
    async fn prefill(
        &self,
        out: &Outgoing,
        fleet: &Fleet,
        index: u32,
        body: &Bytes,
        uncached: u32,
    ) -> Result<Value, PrefillError> {
        let backend = fleet.backend(index).ok_or(PrefillError::Unavailable)?;
        let mut claim = backend
            .try_claim(out.prompt.prompt_tokens)
            .ok_or(PrefillError::Unavailable)?;
        let sent = std::time::Instant::now();
        let deadline = out.started + self.inner.settings.request_timeout;
        let read = async {
            let opened = self
                .attempt(&out.req, &out.request_id, &claim, body, deadline)
                .await?;
            if !opened.status.is_success() {
                return Err(PrefillError::Refused(opened.status));
            }
            let mut bytes = opened.first.map(Vec::from).unwrap_or_default();
            let mut rest = opened.rest;
            while let Some(chunk) = rest.next().await {
                bytes.extend_from_slice(&chunk.map_err(AttemptError::Read)?);
            }
            serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|mut v| v.get_mut("kv_transfer_params").map(Value::take))
                .filter(Value::is_object)
                .ok_or(PrefillError::NoTransferParams)
        };
        let limit = self.inner.settings.attempt_timeout;
        let result = tokio::time::timeout_at(deadline.min(sent + limit).into(), read)
            .await
            .unwrap_or(Err(AttemptError::Timeout(limit).into()));
        match result {
            Ok(params) => {
                claim.first_byte();
                claim.settle(true);
                if uncached >= MIN_PREFILL_SAMPLE_TOKENS {
                    backend.observe_prefill(uncached, sent.elapsed());
                }
                Ok(params)
            }
            Err(PrefillError::Attempt(e)) => {
                self.failed(&mut claim, &e);
                Err(PrefillError::Attempt(e))
            }
            Err(e) => {
                // NB: the backend answered; a refusal or a missing P/D connector is not a
                // fault for its circuit breaker.
                claim.settle(true);
                Err(e)
            }
        }
    }
}

/// The forwarded body with `edit` applied to its top-level object. The body was parsed
/// as a JSON object on arrival; were it not, it is passed on as it is.
fn leg_body(body: &Bytes, edit: impl FnOnce(&mut Map<String, Value>)) -> Bytes {
    edit_body(body, edit).unwrap_or_else(|| body.clone())
}

/// The name of backend `index`.
fn name(fleet: &Fleet, index: u32) -> String {
    fleet
        .backend(index)
        .map_or_else(|| format!("#{index}"), |b| b.spec.name.to_string())
}
