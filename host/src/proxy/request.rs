//! The client's request, parsed once into [`Parsed`]: the fields routing needs, plus
//! the body forwarded: verbatim, unless it carries a field only the router may set
//! ([`ROUTER_OWNED_FIELDS`], removed) or two output limits that disagree (both set to the
//! one the token limit counted, [`output_tokens`]).

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName};
use serde_json::{Map, Value};

use super::ApiError;
use crate::cluster::Signals;
use crate::policy::{Candidate, RequestFacts};
use crate::pool::{Backend, Fleet, InFlight};
use switchyard_kv::{BackendId, KvIndex, PrefixGroup, Prompt, PromptKeys, Scope, SlotLease};

/// Which OpenAI endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completions,
}

impl Endpoint {
    /// The path on the backend.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
        }
    }
}

/// A parsed client request.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Requested model.
    pub model: String,
    /// Whether the client asked for SSE.
    pub stream: bool,
    /// Requested output tokens, as [`output_tokens`] reads them; 0 when absent.
    pub max_tokens: u32,
    /// Bytes of prompt text (message contents or the completion prompt).
    pub prompt_bytes: usize,
    /// The `user` field, used as the session.
    pub user: Option<String>,
    /// The prompt's text, for the KV index.
    pub prompt: PromptText,
    /// The `cache_salt` field, which scopes prefix caching on vLLM engines.
    pub cache_salt: Option<String>,
    /// The body forwarded to backends: as received, less [`ROUTER_OWNED_FIELDS`], with
    /// `max_tokens` and `max_completion_tokens` made equal when both were given.
    pub body: Bytes,
    /// The router-owned fields the client sent, removed from [`Parsed::body`].
    pub stripped: Vec<&'static str>,
}

/// Top-level body fields only the router may set: a client's are removed before
/// forwarding. `kv_transfer_params` tells a vLLM engine where to pull or push KV blocks
/// (remote hosts, block ids); the router sets it on the legs of a prefill/decode split.
pub const ROUTER_OWNED_FIELDS: &[&str] = &["kv_transfer_params"];

pub use switchyard_openai::output_tokens;

/// The session header: the client's session id, which policies may keep sticky.
pub const SESSION_HEADER: &str = "x-session-id";
/// The time-to-first-token objective header, milliseconds.
pub const SLO_TTFT_HEADER: &str = "x-slo-ttft-ms";
/// The time-per-output-token objective header, milliseconds.
pub const SLO_TPOT_HEADER: &str = "x-slo-tpot-ms";

/// Longest session id or label value taken from a header, bytes.
const MAX_HINT_BYTES: usize = 256;

/// What a request's headers tell its policies, read once: the session, the labels of
/// `proxy.label_headers`, and the latency objectives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHints {
    /// The `x-session-id` header.
    pub session: Option<String>,
    /// (label name, header value) for each configured label header present.
    pub labels: Vec<(String, String)>,
    /// The `x-slo-ttft-ms` header.
    pub slo_ttft_ms: Option<u32>,
    /// The `x-slo-tpot-ms` header.
    pub slo_tpot_ms: Option<u32>,
}

impl ClientHints {
    /// Reads the hints from `headers`, labels as `label_headers` maps them.
    ///
    /// # Errors
    ///
    /// [`ApiError::BadHeader`] for a value that is not visible ASCII of at most 256 bytes,
    /// or an objective that is not a whole number of milliseconds.
    pub fn from_headers(
        headers: &HeaderMap,
        label_headers: &[(HeaderName, String)],
    ) -> Result<ClientHints, ApiError> {
        let text = |name: &str| -> Result<Option<String>, ApiError> {
            let Some(value) = headers.get(name) else {
                return Ok(None);
            };
            let bad = |why| ApiError::BadHeader {
                header: name.to_owned(),
                why,
            };
            let value = value
                .to_str()
                .map_err(|_| bad("the value must be visible ASCII"))?;
            if value.len() > MAX_HINT_BYTES {
                return Err(bad("the value is over 256 bytes"));
            }
            Ok(Some(value.to_owned()))
        };
        let millis = |name: &str| -> Result<Option<u32>, ApiError> {
            text(name)?
                .map(|v| {
                    v.trim().parse::<u32>().map_err(|_| ApiError::BadHeader {
                        header: name.to_owned(),
                        why: "must be a whole number of milliseconds",
                    })
                })
                .transpose()
        };
        let mut labels = Vec::new();
        for (header, label) in label_headers {
            if let Some(value) = text(header.as_str())? {
                labels.push((label.clone(), value));
            }
        }
        Ok(ClientHints {
            session: text(SESSION_HEADER)?.filter(|s| !s.is_empty()),
            labels,
            slo_ttft_ms: millis(SLO_TTFT_HEADER)?,
            slo_tpot_ms: millis(SLO_TPOT_HEADER)?,
        })
    }

    /// The request as policies see it: `id` the request id's hash, the session from the
    /// header or else the body's `user`, and `max_tokens` the request's own or else
    /// `default_max_tokens` (never 0).
    pub fn facts(
        &self,
        request_id: &str,
        tenant: &str,
        req: &Parsed,
        prompt: &PromptFacts,
        prompt_tokens: u32,
        max_tokens: u32,
    ) -> RequestFacts {
        RequestFacts {
            id: xxhash_rust::xxh3::xxh3_64(request_id.as_bytes()),
            tenant: tenant.to_owned(),
            model: req.model.clone(),
            prompt_tokens,
            max_tokens: max_tokens.max(1),
            session: self.session.clone().or_else(|| req.user.clone()),
            labels: self.labels.clone(),
            slo_ttft_ms: self.slo_ttft_ms,
            slo_tpot_ms: self.slo_tpot_ms,
            prefix: prompt.prefix,
        }
    }
}

/// The body with `edit` applied to its top-level object; `None` when the body is not a
/// JSON object or does not serialise again.
pub(crate) fn edit_body(body: &[u8], edit: impl FnOnce(&mut Map<String, Value>)) -> Option<Bytes> {
    let mut m = serde_json::from_slice::<Map<String, Value>>(body).ok()?;
    edit(&mut m);
    serde_json::to_vec(&m).ok().map(Bytes::from)
}

/// The prompt's text as the engine will template and tokenize it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptText {
    /// A completion prompt.
    Text(String),
    /// Chat messages as (role, content text).
    Chat(Vec<(String, String)>),
}

impl Parsed {
    /// Parses `body` for `endpoint`.
    ///
    /// # Errors
    ///
    /// [`ApiError::BadJson`] for malformed JSON (a field given twice included),
    /// [`ApiError::MissingField`] when `model`, `messages` (chat) or `prompt`
    /// (completions) is absent.
    pub fn from_openai(endpoint: Endpoint, body: Bytes) -> Result<Parsed, ApiError> {
        let wire: switchyard_openai::Request =
            serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))?;
        let max_tokens = wire.output_tokens();
        let model = wire.model.ok_or(ApiError::MissingField("model"))?;
        let (prompt_bytes, prompt) = match endpoint {
            Endpoint::Chat => {
                let messages = wire.messages.ok_or(ApiError::MissingField("messages"))?;
                let bytes = messages
                    .iter()
                    .filter_map(|m| m.content.as_ref())
                    .map(|c| c.payload_bytes())
                    .sum();
                let chat = messages
                    .into_iter()
                    .map(|m| {
                        let text = m.text_content();
                        (m.role, text)
                    })
                    .collect();
                (bytes, PromptText::Chat(chat))
            }
            Endpoint::Completions => {
                let p = wire.prompt.ok_or(ApiError::MissingField("prompt"))?;
                (p.payload_bytes(), PromptText::Text(p.text()))
            }
        };
        // NB: a serde field, not a byte search, so an escaped key
        // (`"kv_transfer_param\u0073"`) is caught as the engine's JSON parser reads it. One
        // router-owned field today, so its presence stands for the list.
        let stripped: Vec<&'static str> = if wire.kv_transfer_params.is_some() {
            ROUTER_OWNED_FIELDS.to_vec()
        } else {
            Vec::new()
        };
        let limits_disagree = matches!(
            (wire.max_tokens, wire.max_completion_tokens),
            (Some(a), Some(b)) if a != b
        );
        let body = if stripped.is_empty() && !limits_disagree {
            body
        } else {
            edit_body(&body, |m| {
                for field in ROUTER_OWNED_FIELDS {
                    m.remove(*field);
                }
                if limits_disagree {
                    m.insert("max_tokens".into(), max_tokens.into());
                    m.insert("max_completion_tokens".into(), max_tokens.into());
                }
            })
            .ok_or_else(|| ApiError::BadJson("the body is not a JSON object".into()))?
        };
        Ok(Parsed {
            endpoint,
            model,
            stream: wire.stream.unwrap_or(false),
            max_tokens,
            prompt_bytes,
            user: wire.user,
            prompt,
            cache_salt: wire.cache_salt,
            body,
            stripped,
        })
    }
}

impl Parsed {
    /// Scopes the request's prefix caching to `salt`: the `cache_salt` forwarded (and
    /// the KV index's key) becomes `salt`, or `salt.<client's salt>` when the client sent
    /// one, so the client can still partition within its tenant but never leave it.
    ///
    /// # Errors
    ///
    /// When the body is not a JSON object (it parsed as one, so only on a defect).
    pub fn with_cache_salt(mut self, salt: &str) -> Result<Parsed, ApiError> {
        let scoped = match &self.cache_salt {
            Some(client) => format!("{salt}.{client}"),
            None => salt.to_owned(),
        };
        self.body = edit_body(&self.body, |m| {
            m.insert("cache_salt".into(), scoped.clone().into());
        })
        .ok_or_else(|| ApiError::BadJson("the body is not a JSON object".into()))?;
        self.cache_salt = Some(scoped);
        Ok(self)
    }
}

/// What the router knows of a prompt: its length, its block keys, and each
/// candidate's place in the KV index.
#[derive(Debug, Clone)]
pub struct PromptFacts {
    /// Prompt length, tokens (as the engine counts them with a tokenizer configured,
    /// else estimated).
    pub prompt_tokens: u32,
    /// The prompt's block keys, when the model is indexed.
    pub keys: Option<PromptKeys>,
    /// (fleet index, backend in the KV index) of each candidate the index tracks.
    pub kv_backends: Vec<(u32, BackendId)>,
    /// Where the prompt's own prefix starts, past the model's shared head.
    pub prefix: Option<PrefixGroup>,
}

impl PromptFacts {
    /// The request is being sent to the backend at fleet index `backend`: the slot its
    /// engine will run it in, when the engine holds one prompt per slot
    /// ([`KvIndex::occupy`]); other lookups see that slot busy while it is held.
    pub fn occupy(&self, kv: &KvIndex, backend: u32, claimed: &Backend) -> Option<SlotLease> {
        let (_, id) = self.kv_backends.iter().find(|(b, _)| *b == backend)?;
        kv.occupy(self.keys.as_ref()?, *id, claimed.kv_capacity())
    }

    /// Tells the index that the backend `claim` is on served the request, so it now
    /// holds the prompt (approximate mode learns from it; backends with events ignore
    /// it), within the backend's KV capacity when known, in the engine slot the claim
    /// holds, if any. Called once the backend answered, not when it was chosen: a request
    /// retried elsewhere is recorded where it ran. In cluster mode the record is also
    /// queued for the other replicas.
    pub fn record_served(
        &self,
        kv: &KvIndex,
        signals: Option<&Signals>,
        fleet: &Fleet,
        claim: &InFlight,
    ) {
        let Some(backend) = fleet.index_of(claim.backend()) else {
            return;
        };
        let id = self.kv_backends.iter().find(|(b, _)| *b == backend);
        if let (Some(keys), Some((_, id))) = (&self.keys, id) {
            let served = fleet.backend(backend);
            let capacity = served.and_then(|b| b.kv_capacity());
            // NB: only approximate-mode records are shared: with events, every replica
            // hears the engine itself.
            if kv.record(keys, *id, capacity, claim.slot())
                && let (Some(signals), Some(b)) = (signals, served)
            {
                signals.record(b.spec.name.as_str(), &keys.keys);
            }
        }
    }
}

/// Keys the prompt once and fills each candidate's `cached_prefix_tokens` from the KV
/// index in one pass, and a slot engine's `kv_usage` from its busy slots. A prompt the index cannot key (unknown model, tokenizer failure)
/// is estimated at 4 bytes a token, with nothing cached.
pub fn prompt_facts(
    req: &Parsed,
    fleet: &Fleet,
    kv: &KvIndex,
    candidates: &mut [Candidate],
) -> PromptFacts {
    let estimate = u32::try_from(req.prompt_bytes.div_ceil(4)).unwrap_or(u32::MAX);
    let scope = Scope {
        lora: None,
        cache_salt: req.cache_salt.as_deref(),
    };
    let chat: Vec<(&str, &str)>;
    let prompt = match &req.prompt {
        PromptText::Text(t) => Prompt::Text(t),
        PromptText::Chat(messages) => {
            chat = messages
                .iter()
                .map(|(r, c)| (r.as_str(), c.as_str()))
                .collect();
            Prompt::Chat(&chat)
        }
    };
    let keys = match kv.prepare(&req.model, prompt, scope) {
        Ok(k) => k,
        Err(e) => {
            tracing::debug!(error = %e, "prompt not keyed; prefix depth unknown");
            return PromptFacts {
                prompt_tokens: estimate,
                keys: None,
                kv_backends: Vec::new(),
                prefix: None,
            };
        }
    };
    let kv_backends = kv.backend_ids(candidates.iter().map(|c| {
        fleet
            .backend(c.backend)
            .map_or("", |b| b.spec.name.as_str())
    }));
    let ids: Vec<BackendId> = kv_backends.iter().flatten().copied().collect();
    let mut cached = vec![0u32; ids.len()];
    let mut busy = vec![None; ids.len()];
    kv.lookup(&keys, &ids, &mut cached, Some(&mut busy));
    let mut found = cached.into_iter().zip(busy);
    for (c, id) in candidates.iter_mut().zip(&kv_backends) {
        if id.is_some() {
            let (cached, busy) = found.next().unwrap_or_default();
            c.cached_prefix_tokens = cached.min(keys.prompt_tokens);
            // NB: a slot engine's KV cache in use is its busy slots, which the router
            // knows before the next scrape does.
            if let Some(busy) = busy {
                c.kv_usage = c.kv_usage.max(busy);
            }
        }
    }
    let kv_backends = candidates
        .iter()
        .zip(kv_backends)
        .filter_map(|(c, id)| Some((c.backend, id?)))
        .collect();
    PromptFacts {
        prompt_tokens: keys.prompt_tokens,
        prefix: kv.prefix_group(&keys),
        keys: Some(keys),
        kv_backends,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_fields_and_prompt_bytes() {
        let body = br#"{"model":"m","stream":true,"max_tokens":7,
            "messages":[{"role":"user","content":"abcd"},{"role":"user","content":[{"type":"text","text":"efgh"}]}]}"#;
        let p = Parsed::from_openai(Endpoint::Chat, Bytes::from_static(body)).unwrap();
        assert_eq!(p.model, "m");
        assert!(p.stream);
        assert_eq!(p.max_tokens, 7);
        assert_eq!(p.prompt_bytes, 8, "the text of both messages");
    }

    #[test]
    fn max_completion_tokens_takes_precedence_over_max_tokens() {
        let body = br#"{"model":"m","max_tokens":1,"max_completion_tokens":100000,"prompt":"x"}"#;
        let p = Parsed::from_openai(Endpoint::Completions, Bytes::from_static(body)).unwrap();
        assert_eq!(p.max_tokens, 100_000);
        // The engine is told the limit that was counted, whichever field it reads.
        let sent: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(sent["max_tokens"], 100_000);
        assert_eq!(sent["max_completion_tokens"], 100_000);

        let only = br#"{"model":"m","max_completion_tokens":9,"prompt":"x"}"#;
        let p = Parsed::from_openai(Endpoint::Completions, Bytes::from_static(only)).unwrap();
        assert_eq!(p.max_tokens, 9);
        assert_eq!(
            &p.body[..],
            &only[..],
            "a consistent body is forwarded verbatim"
        );
        assert_eq!(output_tokens(Some(7), None), 7);
        assert_eq!(output_tokens(None, None), 0);
    }

    #[test]
    fn client_kv_transfer_params_are_stripped_before_forwarding() {
        for body in [
            &br#"{"model":"m","prompt":"x","kv_transfer_params":{"remote_host":"10.0.0.9","remote_block_ids":[1,2]}}"#[..],
            br#"{"model":"m","prompt":"x","kv_transfer_params":null}"#,
            br#"{"model":"m","prompt":"x","kv_transfer_param\u0073":{"do_remote_prefill":true}}"#,
        ] {
            let p = Parsed::from_openai(Endpoint::Completions, Bytes::copy_from_slice(body))
                .unwrap();
            assert_eq!(p.stripped, ["kv_transfer_params"]);
            let sent: Map<String, Value> = serde_json::from_slice(&p.body).unwrap();
            assert!(!sent.contains_key("kv_transfer_params"), "{sent:?}");
            assert_eq!(sent["prompt"], "x");
        }
        let clean = br#"{"model":"m","prompt":"x"}"#;
        let p = Parsed::from_openai(Endpoint::Completions, Bytes::from_static(clean)).unwrap();
        assert!(p.stripped.is_empty());
        assert_eq!(&p.body[..], &clean[..]);
    }

    #[test]
    fn missing_fields_are_named() {
        let e = Parsed::from_openai(Endpoint::Chat, Bytes::from_static(br#"{"model":"m"}"#));
        assert!(matches!(e, Err(ApiError::MissingField("messages"))));
        let e = Parsed::from_openai(
            Endpoint::Completions,
            Bytes::from_static(br#"{"prompt":"x"}"#),
        );
        assert!(matches!(e, Err(ApiError::MissingField("model"))));
        let e = Parsed::from_openai(Endpoint::Chat, Bytes::from_static(b"{nope"));
        assert!(matches!(e, Err(ApiError::BadJson(_))));
    }
}
