//! The OpenAI API wire types Switchyard's router (`switchyard`), simulator and load
//! generator (`switchyard-sim`) share: what a chat or completion request carries, its
//! messages and prompts, the `usage` object and the streamed chunk's text. One
//! definition, so the three read a request the same way (which field wins between
//! `max_tokens` and `max_completion_tokens`, how content parts become text).
//!
//! Reading is lenient where engines are (unknown fields ignored, content parts without
//! text skipped) and strict where they are not (a field given twice, a wrong type).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The fields of a `/v1/chat/completions` or `/v1/completions` request that Switchyard
/// reads. Everything else passes through untouched.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Request {
    /// Requested model.
    pub model: Option<String>,
    /// Chat messages (`/v1/chat/completions`).
    pub messages: Option<Vec<Message>>,
    /// Completion prompt (`/v1/completions`).
    pub prompt: Option<Prompt>,
    /// Whether the client asked for SSE.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Output token limit (legacy name).
    pub max_tokens: Option<u32>,
    /// Output token limit; wins over `max_tokens` (see [`output_tokens`]).
    pub max_completion_tokens: Option<u32>,
    /// The end user, which the router uses as the session.
    pub user: Option<String>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// vLLM's `cache_salt`: prompts with different salts share no cached blocks.
    pub cache_salt: Option<String>,
    /// vLLM's `kv_transfer_params`, `Some` whenever the key is present, even as `null` or
    /// a value of the wrong shape: the router owns the field and strips a client's; an
    /// engine in a prefill/decode split reads its flags.
    #[serde(default, deserialize_with = "present")]
    pub kv_transfer_params: Option<KvTransferParams>,
}

/// vLLM's `kv_transfer_params`, as far as a prefill/decode split needs: which leg this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KvTransferParams {
    /// The prefill leg: keep the KV for a remote decode.
    #[serde(default)]
    pub do_remote_decode: bool,
    /// The decode leg: pull the prompt's KV from the prefill backend.
    #[serde(default)]
    pub do_remote_prefill: bool,
}

/// `Some` for any value, `null` included (the key was there); the flags of an object,
/// defaults for anything else.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<KvTransferParams>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(Some(serde_json::from_value(value).unwrap_or_default()))
}

impl Request {
    /// The output tokens the request may generate: see [`output_tokens`].
    pub fn output_tokens(&self) -> u32 {
        output_tokens(self.max_tokens, self.max_completion_tokens)
    }
}

/// The output tokens a request may generate, as engines read them:
/// `max_completion_tokens` when present (it supersedes `max_tokens` in the OpenAI API,
/// and vLLM reads it first), else `max_tokens`, else 0.
pub fn output_tokens(max_tokens: Option<u32>, max_completion_tokens: Option<u32>) -> u32 {
    max_completion_tokens.or(max_tokens).unwrap_or(0)
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, ...
    #[serde(default)]
    pub role: String,
    /// Its content; absent or null for an assistant message with tool calls.
    #[serde(default)]
    pub content: Option<Content>,
}

impl Message {
    /// A message with text content.
    pub fn text(role: impl Into<String>, text: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: Some(Content::Text(text.into())),
        }
    }

    /// The content's text (see [`Content::text`]); empty without content.
    pub fn text_content(&self) -> String {
        self.content.as_ref().map(Content::text).unwrap_or_default()
    }
}

/// A message's content: a string, or parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts (`{"type": "text", "text": ...}`, images, ...).
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text: the string, or the text parts joined by newlines (others skipped).
    pub fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Bytes of payload: the text's, plus each non-text part's other fields (an image
    /// URL) as serialized, for estimating tokens without a tokenizer.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Content::Text(t) => t.len(),
            Content::Parts(parts) => parts.iter().map(ContentPart::payload_bytes).sum(),
        }
    }
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPart {
    /// `text`, `image_url`, ...
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Whatever else the part carries.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl ContentPart {
    fn payload_bytes(&self) -> usize {
        let other: usize = self.other.values().map(value_bytes).sum();
        self.text.as_ref().map_or(0, String::len) + other
    }
}

/// Bytes of text inside a JSON value.
fn value_bytes(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.len(),
        serde_json::Value::Array(a) => a.iter().map(value_bytes).sum(),
        serde_json::Value::Object(o) => o.values().map(value_bytes).sum(),
        serde_json::Value::Number(_) => 4,
        _ => 0,
    }
}

/// A completion prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One string.
    Text(String),
    /// Several strings.
    Texts(Vec<String>),
    /// Token ids.
    Tokens(Vec<u32>),
    /// Several token-id lists.
    TokenLists(Vec<Vec<u32>>),
}

impl Prompt {
    /// The text: the string, or the strings joined by newlines; empty for token ids.
    pub fn text(&self) -> String {
        match self {
            Prompt::Text(t) => t.clone(),
            Prompt::Texts(ts) => ts.join("\n"),
            Prompt::Tokens(_) | Prompt::TokenLists(_) => String::new(),
        }
    }

    /// Bytes of payload, token ids counted at 4 bytes, for estimating tokens.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Prompt::Text(t) => t.len(),
            Prompt::Texts(ts) => ts.iter().map(String::len).sum(),
            Prompt::Tokens(ids) => 4 * ids.len(),
            Prompt::TokenLists(lists) => lists.iter().map(|l| 4 * l.len()).sum(),
        }
    }
}

/// `stream_options`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `usage`.
    #[serde(default)]
    pub include_usage: bool,
}

/// The `usage` object of a response or of a stream's last chunk.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Generated tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u64,
    /// Where the prompt's tokens came from.
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

impl Usage {
    /// Usage of `prompt` tokens, `cached` of them from the prefix cache, and
    /// `completion` generated ones.
    pub fn new(prompt: u64, cached: u64, completion: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: cached,
            }),
        }
    }

    /// Prompt tokens served from the prefix cache; 0 when not reported.
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details.map_or(0, |d| d.cached_tokens)
    }
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    #[serde(default)]
    pub cached_tokens: u64,
}

/// A streamed chunk (an SSE event's data) as a client or the router's stream follower
/// reads it: each choice's new text and how it ended, `usage` on the last chunk when
/// asked for, and an engine's in-band error. Strings borrow from the event when they
/// can.
#[derive(Debug, Deserialize)]
pub struct Chunk<'a> {
    /// The choices' deltas.
    #[serde(default, borrow)]
    pub choices: Vec<ChunkChoice<'a>>,
    /// Present on the final chunk with `stream_options.include_usage`; `None` as well
    /// when malformed, so a bad `usage` never hides the chunk's text.
    #[serde(default, deserialize_with = "lenient")]
    pub usage: Option<Usage>,
    /// An engine's error event (`{"error": {...}}`) instead of a chunk.
    #[serde(default)]
    pub error: Option<serde::de::IgnoredAny>,
    /// `chat.completion.chunk`, `text_completion`, ...
    #[serde(default, borrow)]
    pub object: Option<Cow<'a, str>>,
}

/// `T` when the value is one, `None` when it is not.
fn lenient<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// One choice of a streamed chunk.
#[derive(Debug, Deserialize)]
pub struct ChunkChoice<'a> {
    /// Chat: the delta.
    #[serde(default, borrow)]
    pub delta: Option<Delta<'a>>,
    /// Completions: the text.
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    /// Why the choice ended (`stop`, `length`, ...), on its last chunk.
    #[serde(default, borrow)]
    pub finish_reason: Option<Cow<'a, str>>,
}

impl ChunkChoice<'_> {
    /// The new text, chat or completion.
    pub fn text(&self) -> Option<&str> {
        self.delta
            .as_ref()
            .and_then(|d| d.content.as_deref())
            .or(self.text.as_deref())
    }
}

/// A chat chunk's delta.
#[derive(Debug, Deserialize)]
pub struct Delta<'a> {
    /// The new text.
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
    /// Tool calls being streamed.
    #[serde(default)]
    pub tool_calls: Option<Vec<serde::de::IgnoredAny>>,
    /// A (legacy) function call being streamed.
    #[serde(default)]
    pub function_call: Option<serde::de::IgnoredAny>,
    /// A reasoning model's thinking text.
    #[serde(default, borrow)]
    pub reasoning_content: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_completion_tokens_wins_and_absence_is_zero() {
        let r: Request =
            serde_json::from_str(r#"{"max_tokens": 10, "max_completion_tokens": 20}"#).unwrap();
        assert_eq!(r.output_tokens(), 20);
        assert_eq!(output_tokens(Some(10), None), 10);
        assert_eq!(output_tokens(None, None), 0);
    }

    #[test]
    fn content_parts_become_text_and_keep_their_other_fields() {
        let m: Message = serde_json::from_str(
            r#"{"role": "user", "content": [{"type": "text", "text": "a"},
                {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                {"type": "text", "text": "b"}]}"#,
        )
        .unwrap();
        assert_eq!(m.text_content(), "a\nb");
        let bytes = m.content.as_ref().unwrap().payload_bytes();
        assert_eq!(bytes, 2 + "http://x/y.png".len());
        let none: Message =
            serde_json::from_str(r#"{"role": "assistant", "content": null}"#).unwrap();
        assert_eq!(none.text_content(), "");
    }

    #[test]
    fn prompts_of_every_shape_parse() {
        let text = |s: &str| serde_json::from_str::<Prompt>(s).unwrap();
        assert_eq!(text(r#""hi""#).text(), "hi");
        assert_eq!(text(r#"["a", "b"]"#).text(), "a\nb");
        assert_eq!(text("[1, 2, 3]").payload_bytes(), 12);
        assert_eq!(text("[[1, 2], [3]]").payload_bytes(), 12);
        assert!(serde_json::from_str::<Prompt>("{}").is_err());
    }

    #[test]
    fn kv_transfer_params_are_present_whatever_their_value() {
        let r = |s: &str| {
            serde_json::from_str::<Request>(s)
                .unwrap()
                .kv_transfer_params
        };
        assert_eq!(r("{}"), None);
        assert_eq!(
            r(r#"{"kv_transfer_params": null}"#),
            Some(KvTransferParams::default())
        );
        assert_eq!(
            r(r#"{"kv_transfer_params": 7}"#),
            Some(KvTransferParams::default())
        );
        let p = r(r#"{"kv_transfer_params": {"do_remote_prefill": true, "remote_host": "h"}}"#);
        assert_eq!(p.map(|p| p.do_remote_prefill), Some(true));
    }

    #[test]
    fn a_field_given_twice_is_an_error() {
        assert!(serde_json::from_str::<Request>(r#"{"model": "a", "model": "b"}"#).is_err());
    }

    #[test]
    fn usage_round_trips_and_chunks_yield_their_text() {
        let u = Usage::new(100, 64, 8);
        let back: Usage = serde_json::from_str(&serde_json::to_string(&u).unwrap()).unwrap();
        assert_eq!((back, back.cached_tokens()), (u, 64));
        let c: Chunk =
            serde_json::from_str(r#"{"choices": [{"delta": {"content": "x"}}]}"#).unwrap();
        assert_eq!(c.choices[0].text(), Some("x"));
        let c: Chunk =
            serde_json::from_str(r#"{"choices": [{"text": "y"}], "usage": "?"}"#).unwrap();
        assert_eq!((c.choices[0].text(), c.usage), (Some("y"), None));
    }
}
