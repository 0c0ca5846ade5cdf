//! One request against an OpenAI-compatible endpoint, streamed and timed.

use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::StreamExt;
use serde_json::{Value, json};
use switchyard_openai::{Chunk, ChunkChoice, Usage};
use tokio::time::Instant;

use super::Api;
use super::workload::Message;

/// Response header naming the backend that served a request (set by the router).
pub const BACKEND_HEADER: &str = "x-switchyard-backend";

/// What one request measured.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Why it failed, if it did (`http 500`, `timeout`, `broken stream`, ...).
    pub error: Option<String>,
    /// Time to the first content token.
    pub ttft: Option<Duration>,
    /// Gaps between consecutive content tokens.
    pub itls: Vec<Duration>,
    /// Time to the end of the response.
    pub e2e: Duration,
    /// Output tokens (from `usage`, else counted chunks).
    pub output_tokens: u64,
    /// Prompt tokens from `usage`.
    pub prompt_tokens: u64,
    /// Cached prompt tokens from `usage.prompt_tokens_details`.
    pub cached_tokens: u64,
    /// Value of [`BACKEND_HEADER`], if the server sent one.
    pub backend: Option<String>,
    /// Generated text (multi-turn sessions feed it back).
    pub text: String,
}

/// The request body for `messages` on `api`.
pub fn body(api: Api, model: &str, messages: &[Message], max_tokens: usize) -> Value {
    let mut body = json!({
        "model": model,
        "max_tokens": max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    match api {
        Api::Chat => {
            let wire: Vec<switchyard_openai::Message> = messages
                .iter()
                .map(|m| switchyard_openai::Message::text(m.role, m.content.as_str()))
                .collect();
            body["messages"] = serde_json::to_value(wire).expect("messages serialize");
        }
        Api::Completions => {
            let prompt: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
            body["prompt"] = Value::from(prompt.join("\n"));
        }
    }
    body
}

/// Sends one streaming request to `url` and measures it; never fails, errors are in the
/// sample.
pub async fn send(client: &reqwest::Client, url: &str, body: &Value, timeout: Duration) -> Sample {
    let start = Instant::now();
    let mut sample = Sample::default();
    let outcome =
        tokio::time::timeout(timeout, stream(client, url, body, start, &mut sample)).await;
    sample.e2e = start.elapsed();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => sample.error = Some(e),
        Err(_) => sample.error = Some("timeout".to_owned()),
    }
    sample
}

async fn stream(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    start: Instant,
    sample: &mut Sample,
) -> Result<(), String> {
    let resp = client
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    sample.backend = resp
        .headers()
        .get(BACKEND_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if !resp.status().is_success() {
        return Err(format!("http {}", resp.status().as_u16()));
    }
    let mut events = resp.bytes_stream().eventsource();
    let mut last: Option<Instant> = None;
    let mut chunks = 0u64;
    let mut usage = None;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| format!("broken stream: {e}"))?;
        let now = Instant::now();
        let data = event.data.trim();
        if data == "[DONE]" {
            finish(sample, usage, chunks);
            return Ok(());
        }
        let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|e| format!("bad chunk: {e}"))?;
        if let Some(u) = chunk.usage {
            usage = Some(u);
        }
        let content = chunk.choices.first().and_then(ChunkChoice::text);
        if let Some(text) = content.filter(|t| !t.is_empty()) {
            match last {
                None => sample.ttft = Some(now - start),
                Some(prev) => sample.itls.push(now - prev),
            }
            last = Some(now);
            chunks += 1;
            sample.text.push_str(text);
        }
    }
    Err("stream ended without [DONE]".to_owned())
}

fn finish(sample: &mut Sample, usage: Option<Usage>, chunks: u64) {
    match usage {
        Some(u) => {
            sample.output_tokens = u.completion_tokens;
            sample.prompt_tokens = u.prompt_tokens;
            sample.cached_tokens = u.cached_tokens();
        }
        None => sample.output_tokens = chunks,
    }
}
