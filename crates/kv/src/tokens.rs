//! Prompts to token ids, as the engine will see them.
//!
//! [`Tokenizer`] wraps a Hugging Face `tokenizer.json` (the `tokenizers` crate) and the
//! model's chat template (from `tokenizer_config.json`, rendered with minijinja), both
//! read from local files once. Chat prompts are rendered and then encoded without added
//! special tokens (the template writes them), completion prompts with them, as vLLM does.
//!
//! **Prefix cache.** A long shared system prompt is encoded once: the text is cut at
//! *safe boundaries* (a newline followed by a non-space character, at most one per 1 KiB)
//! and each piece's ids are cached under a hash chained over the pieces before it. For
//! byte-level BPE tokenizers whose pre-tokenizer splits at newlines (GPT-2, Llama 3,
//! Qwen families, the shipped example), encoding piece by piece gives the same ids as
//! encoding the whole text; a test checks this on the shipped tokenizer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Minimum piece length, in bytes, between two cache boundaries.
const PIECE_BYTES: usize = 1024;

/// Pieces kept per cache generation (two generations are kept).
const CACHE_PIECES: usize = 8192;

/// Errors of tokenization and chat templates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizeError {
    /// The tokenizer file could not be loaded.
    #[error("cannot load tokenizer {path}")]
    Load {
        /// The `tokenizer.json` path.
        path: PathBuf,
        /// Why.
        #[source]
        source: tokenizers::Error,
    },
    /// The chat template file could not be read or parsed.
    #[error("cannot load chat template {path}: {reason}")]
    Template {
        /// The `tokenizer_config.json` or template path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The model has no chat template, so chat messages cannot be rendered.
    #[error("the model has no chat template")]
    NoTemplate,
    /// Rendering the chat template failed (an unknown role, a template error).
    #[error("chat template failed")]
    Render(#[source] minijinja::Error),
    /// The tokenizer rejected the text.
    #[error("tokenizer failed")]
    Encode(#[source] tokenizers::Error),
}

/// A prompt as the OpenAI API carries it.
#[derive(Clone, Copy, Debug)]
pub enum Prompt<'a> {
    /// A completion prompt (`/v1/completions`).
    Text(&'a str),
    /// Chat messages as `(role, content)` (`/v1/chat/completions`).
    Chat(&'a [(&'a str, &'a str)]),
}

/// A chat template and the special tokens it refers to.
#[derive(Debug)]
struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// A model's tokenizer, chat template and prefix cache; see the module doc.
#[derive(Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    template: Option<ChatTemplate>,
    cache: Mutex<PieceCache>,
}

/// Two-generation cache of piece ids: lookups promote from the old generation, and a
/// full new generation retires the old one (an LRU approximation in O(1)).
#[derive(Debug, Default)]
struct PieceCache {
    young: HashMap<u64, Arc<[u32]>>,
    old: HashMap<u64, Arc<[u32]>>,
}

impl PieceCache {
    fn get(&mut self, h: u64) -> Option<Arc<[u32]>> {
        if let Some(ids) = self.young.get(&h) {
            return Some(ids.clone());
        }
        let ids = self.old.remove(&h)?;
        self.put(h, ids.clone());
        Some(ids)
    }

    fn put(&mut self, h: u64, ids: Arc<[u32]>) {
        if self.young.len() >= CACHE_PIECES {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(h, ids);
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` and, if given, a chat template: a `tokenizer_config.json`
    /// (its `chat_template`, `bos_token`, `eos_token`) or a bare Jinja file.
    ///
    /// # Errors
    ///
    /// [`TokenizeError::Load`] or [`TokenizeError::Template`] naming the file.
    pub fn from_files(tokenizer: &Path, template: Option<&Path>) -> Result<Self, TokenizeError> {
        let inner =
            tokenizers::Tokenizer::from_file(tokenizer).map_err(|source| TokenizeError::Load {
                path: tokenizer.to_owned(),
                source,
            })?;
        let template = template.map(load_template).transpose()?;
        Ok(Self {
            inner,
            template,
            cache: Mutex::new(PieceCache::default()),
        })
    }

    /// The ids of `prompt`: chat messages rendered through the template first.
    ///
    /// # Errors
    ///
    /// [`TokenizeError`] when there is no template for a chat prompt, rendering fails,
    /// or the tokenizer fails.
    pub fn encode_prompt(&self, prompt: Prompt<'_>) -> Result<Vec<u32>, TokenizeError> {
        match prompt {
            Prompt::Text(text) => self.encode(text, true),
            Prompt::Chat(messages) => self.encode(&self.render(messages)?, false),
        }
    }

    /// Renders chat messages with the template, with the generation prompt appended.
    ///
    /// # Errors
    ///
    /// [`TokenizeError::NoTemplate`] or [`TokenizeError::Render`].
    pub fn render(&self, messages: &[(&str, &str)]) -> Result<String, TokenizeError> {
        let t = self.template.as_ref().ok_or(TokenizeError::NoTemplate)?;
        let messages: Vec<_> = messages
            .iter()
            .map(|(role, content)| minijinja::context! { role => role, content => content })
            .collect();
        let tmpl = t.env.get_template("chat").map_err(TokenizeError::Render)?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => &t.bos_token,
            eos_token => &t.eos_token,
        })
        .map_err(TokenizeError::Render)
    }

    /// The ids of `text`, reusing cached pieces of earlier prompts.
    ///
    /// # Errors
    ///
    /// [`TokenizeError::Encode`] when the tokenizer fails.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizeError> {
        let cuts = boundaries(text);
        let mut ids = Vec::with_capacity(text.len() / 3);
        let mut chain = u64::from(add_special_tokens);
        let mut start = 0;
        for (i, &end) in cuts.iter().chain(std::iter::once(&text.len())).enumerate() {
            let piece = &text[start..end];
            let first = i == 0 && add_special_tokens;
            if end == text.len() {
                // The request's own tail: not worth caching.
                ids.extend(self.encode_piece(piece, first)?);
                break;
            }
            chain = xxh3_64_with_seed(piece.as_bytes(), chain);
            let cached = self
                .cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(chain);
            let piece_ids = match cached {
                Some(c) => c,
                None => {
                    let fresh: Arc<[u32]> = self.encode_piece(piece, first)?.into();
                    self.cache
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .put(chain, fresh.clone());
                    fresh
                }
            };
            ids.extend_from_slice(&piece_ids);
            start = end;
        }
        Ok(ids)
    }

    /// The ids of `text` without the prefix cache.
    ///
    /// # Errors
    ///
    /// [`TokenizeError::Encode`] when the tokenizer fails.
    pub fn encode_uncached(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, TokenizeError> {
        self.encode_piece(text, add_special_tokens)
    }

    fn encode_piece(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, TokenizeError> {
        let enc = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(TokenizeError::Encode)?;
        Ok(enc.get_ids().to_vec())
    }
}

/// Byte offsets where the text may be cut without changing its tokens: just after a
/// newline that a non-whitespace character follows, at least [`PIECE_BYTES`] apart.
fn boundaries(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut cuts = Vec::new();
    let mut next = PIECE_BYTES;
    while next < bytes.len() {
        let found = bytes[next - 1..]
            .windows(2)
            .position(|w| w[0] == b'\n' && !w[1].is_ascii_whitespace());
        match found {
            Some(p) => {
                let cut = next + p;
                cuts.push(cut);
                next = cut + PIECE_BYTES;
            }
            None => break,
        }
    }
    cuts
}

fn load_template(path: &Path) -> Result<ChatTemplate, TokenizeError> {
    let fail = |reason: String| TokenizeError::Template {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let (source, bos_token, eos_token) = if path.extension().is_some_and(|e| e == "json") {
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let source = match &config["chat_template"] {
            serde_json::Value::String(s) => s.clone(),
            // A list of named templates: take "default".
            serde_json::Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| fail("no default chat_template".to_owned()))?,
            _ => return Err(fail("no chat_template".to_owned())),
        };
        (
            source,
            special_token(&config["bos_token"]),
            special_token(&config["eos_token"]),
        )
    } else {
        (text, String::new(), String::new())
    };
    let mut env = minijinja::Environment::new();
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template_owned("chat", source)
        .map_err(|e| fail(e.to_string()))?;
    Ok(ChatTemplate {
        env,
        bos_token,
        eos_token,
    })
}

/// A special token in a tokenizer config: a string or `{"content": ...}`.
fn special_token(v: &serde_json::Value) -> String {
    v.as_str()
        .or_else(|| v["content"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Tokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tokenizer");
        Tokenizer::from_files(
            &dir.join("tokenizer.json"),
            Some(&dir.join("tokenizer_config.json")),
        )
        .expect("the shipped tokenizer loads")
    }

    fn long_text() -> String {
        (0..400)
            .map(|i| {
                format!("Line {i}: the quick brown fox, don't stop; x={i}*2.\n  indented {i}\n")
            })
            .collect()
    }

    #[test]
    fn piecewise_encoding_equals_whole_encoding() {
        let tok = example();
        let text = long_text();
        assert!(boundaries(&text).len() > 10, "the text is cut into pieces");
        let whole = tok.encode_uncached(&text, true).expect("encodes");
        assert_eq!(tok.encode(&text, true).expect("encodes"), whole);
        // Second time through the cache, with a different tail.
        let other = format!("{text}and a different question?");
        let whole_other = tok.encode_uncached(&other, true).expect("encodes");
        assert_eq!(tok.encode(&other, true).expect("encodes"), whole_other);
        assert!(
            !tok.cache.lock().expect("lock").young.is_empty(),
            "pieces were cached"
        );
    }

    #[test]
    fn chat_prompts_render_through_the_template() {
        let tok = example();
        let messages = [("system", "You are terse."), ("user", "Hi")];
        let text = tok.render(&messages).expect("renders");
        assert!(text.starts_with("<SOS><META_START>system<META_END>\nYou are terse.<EOT>\n"));
        assert!(text.ends_with("<META_START>assistant<META_END>\n"));
        let ids = tok.encode_prompt(Prompt::Chat(&messages)).expect("encodes");
        assert_eq!(ids, tok.encode_uncached(&text, false).expect("encodes"));
        assert_eq!(ids[0], 4, "<SOS> is one special token");
        let bad = tok.render(&[("robot", "x")]).expect_err("unknown role");
        assert!(matches!(bad, TokenizeError::Render(_)));
    }

    #[test]
    fn missing_files_name_the_path() {
        let err = Tokenizer::from_files(Path::new("/nonexistent/tokenizer.json"), None)
            .expect_err("no such file");
        assert!(err.to_string().contains("/nonexistent/tokenizer.json"));
    }
}
