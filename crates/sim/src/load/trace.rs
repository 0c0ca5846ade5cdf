//! JSONL request traces, including Mooncake-style traces whose prompts are given as
//! `hash_ids` (one id per block of shared content) instead of text.
//!
//! Each line is one request. Recognised fields (all optional but one source of input):
//!
//! ```json
//! {"timestamp": 1200, "input_length": 4096, "output_length": 128, "hash_ids": [1, 2, 3, 9]}
//! {"timestamp": 1500, "prompt": "some text", "max_tokens": 64}
//! ```
//!
//! `timestamp` is in milliseconds from the start of the trace. The prompt comes from
//! `prompt`, else from `hash_ids` (each id expands to `block_tokens` words drawn from a
//! generator seeded by the id, so equal ids give equal text, then the text is cut to
//! `input_length`), else from `input_length` fresh words.

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

use super::Error;
use super::text::words;

/// Tokens one Mooncake hash id stands for.
pub const MOONCAKE_BLOCK_TOKENS: usize = 512;

/// One request of a trace, with its prompt materialised.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEntry {
    /// Start time, ms from the start of the run.
    pub timestamp_ms: Option<f64>,
    /// Prompt text.
    pub prompt: String,
    /// Output tokens to ask for.
    pub output_len: usize,
}

#[derive(Debug, Deserialize)]
struct Line {
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    input_length: Option<usize>,
    #[serde(default)]
    hash_ids: Option<Vec<u64>>,
    #[serde(default, alias = "max_tokens")]
    output_length: Option<usize>,
}

/// Output length of a line that gives none.
const DEFAULT_OUTPUT_LEN: usize = 128;

/// Reads a JSONL trace; `block_tokens` is the content behind one hash id (512 for
/// Mooncake), `seed` seeds the text of lines given only by length.
///
/// # Errors
///
/// [`Error::Trace`] naming the file and line of the first problem.
pub fn load(path: &Path, block_tokens: usize, seed: u64) -> Result<Vec<TraceEntry>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Trace {
        path: path.display().to_string(),
        line: 0,
        reason: e.to_string(),
    })?;
    parse(&text, block_tokens, seed).map_err(|(line, reason)| Error::Trace {
        path: path.display().to_string(),
        line,
        reason,
    })
}

/// Parses JSONL trace text; errors carry the 1-based line number.
pub fn parse(
    text: &str,
    block_tokens: usize,
    seed: u64,
) -> Result<Vec<TraceEntry>, (usize, String)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (i, raw) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let line: Line = serde_json::from_str(raw).map_err(|e| (i + 1, e.to_string()))?;
        let prompt = match (line.prompt, line.hash_ids, line.input_length) {
            (Some(p), _, _) => p,
            (None, Some(ids), len) => {
                let mut all: Vec<String> = Vec::with_capacity(ids.len() * block_tokens);
                for id in ids {
                    let mut block_rng = ChaCha8Rng::seed_from_u64(id);
                    all.extend(
                        words(&mut block_rng, block_tokens)
                            .split(' ')
                            .map(str::to_owned),
                    );
                }
                all.truncate(len.unwrap_or(usize::MAX));
                all.join(" ")
            }
            (None, None, Some(len)) => words(&mut rng, len),
            (None, None, None) => {
                return Err((
                    i + 1,
                    "needs one of `prompt`, `hash_ids`, `input_length`".to_owned(),
                ));
            }
        };
        out.push(TraceEntry {
            timestamp_ms: line.timestamp,
            prompt,
            output_len: line.output_length.unwrap_or(DEFAULT_OUTPUT_LEN),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mooncake_lines_share_text_for_shared_hash_ids() {
        let text = r#"{"timestamp": 0, "input_length": 20, "output_length": 3, "hash_ids": [7, 8]}
{"timestamp": 10, "input_length": 15, "output_length": 3, "hash_ids": [7, 9]}
"#;
        let entries = parse(text, 10, 0).expect("valid");
        let a: Vec<&str> = entries[0].prompt.split(' ').collect();
        let b: Vec<&str> = entries[1].prompt.split(' ').collect();
        assert_eq!((a.len(), b.len()), (20, 15));
        assert_eq!(a[..10], b[..10]);
        assert_ne!(a[10..15], b[10..15]);
        assert_eq!(entries[1].timestamp_ms, Some(10.0));
    }

    #[test]
    fn a_line_without_input_is_reported_with_its_number() {
        let err = parse("{\"prompt\": \"hi\"}\n{\"timestamp\": 3}\n", 512, 0).expect_err("invalid");
        assert_eq!(err.0, 2);
    }
}
