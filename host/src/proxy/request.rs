//! The client's request, parsed once into [`Parsed`]: the fields routing needs, plus
//! the raw body forwarded verbatim.

use axum::body::Bytes;
use serde::Deserialize;

use super::ApiError;
use crate::pool::Fleet;

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
    /// Requested output tokens (`max_tokens` or `max_completion_tokens`), 0 when absent.
    pub max_tokens: u32,
    /// Bytes of prompt text (message contents or the completion prompt).
    pub prompt_bytes: usize,
    /// The `user` field, used as the session.
    pub user: Option<String>,
    /// The body as received, forwarded unchanged.
    pub body: Bytes,
}

#[derive(Deserialize)]
struct Wire {
    model: Option<String>,
    messages: Option<Vec<Message>>,
    prompt: Option<serde_json::Value>,
    #[serde(default)]
    stream: Option<bool>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    user: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: serde_json::Value,
}

/// Bytes of text in a prompt or message content: strings count their length, arrays
/// and objects the text inside them.
fn text_bytes(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.len(),
        serde_json::Value::Array(a) => a.iter().map(text_bytes).sum(),
        serde_json::Value::Object(o) => o.values().map(text_bytes).sum(),
        serde_json::Value::Number(_) => 4,
        _ => 0,
    }
}

impl Parsed {
    /// Parses `body` for `endpoint`.
    ///
    /// # Errors
    ///
    /// [`ApiError::BadJson`] for malformed JSON, [`ApiError::MissingField`] when
    /// `model`, `messages` (chat) or `prompt` (completions) is absent.
    pub fn from_openai(endpoint: Endpoint, body: Bytes) -> Result<Parsed, ApiError> {
        let wire: Wire =
            serde_json::from_slice(&body).map_err(|e| ApiError::BadJson(e.to_string()))?;
        let model = wire.model.ok_or(ApiError::MissingField("model"))?;
        let prompt_bytes = match endpoint {
            Endpoint::Chat => wire
                .messages
                .ok_or(ApiError::MissingField("messages"))?
                .iter()
                .map(|m| text_bytes(&m.content))
                .sum(),
            Endpoint::Completions => {
                text_bytes(&wire.prompt.ok_or(ApiError::MissingField("prompt"))?)
            }
        };
        Ok(Parsed {
            endpoint,
            model,
            stream: wire.stream.unwrap_or(false),
            max_tokens: wire.max_tokens.or(wire.max_completion_tokens).unwrap_or(0),
            prompt_bytes,
            user: wire.user,
            body,
        })
    }
}

/// What the router knows of a prompt: its length and how much of it each backend holds.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptFacts {
    /// Prompt length, tokens.
    pub prompt_tokens: u32,
    /// Cached-prefix tokens per fleet index.
    pub cached_prefix_tokens: Vec<u32>,
}

/// The prompt's facts for `fleet`.
///
/// NB: the single seam the KV index replaces. Until then the length is estimated as
/// bytes / 4 and no backend is known to hold any prefix.
pub fn prompt_facts(req: &Parsed, fleet: &Fleet) -> PromptFacts {
    PromptFacts {
        prompt_tokens: u32::try_from(req.prompt_bytes.div_ceil(4)).unwrap_or(u32::MAX),
        cached_prefix_tokens: vec![0; fleet.backends.len()],
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
        assert_eq!(p.prompt_bytes, 8 + "text".len());
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
