//! Prompt tokens and generated text: a Hugging Face `tokenizer.json`, or a deterministic
//! built-in tokenizer when none is configured.
//!
//! The built-in tokenizer splits on whitespace and maps each word to
//! `xxh3_64(word) % 128256` (the Llama-3 vocabulary size), so identical text prefixes give
//! identical token prefixes and a router can reproduce the ids with [`builtin_token_id`].
//! Chat messages are rendered to one prompt by [`render_chat`].

use std::path::Path;

use rand::Rng;
use xxhash_rust::xxh3::xxh3_64;

/// Vocabulary size the built-in tokenizer maps words into.
pub const BUILTIN_VOCAB: u64 = 128_256;

/// Distinct output tokens a tokenizer samples generated text from.
const OUTPUT_TOKENS: usize = 1024;

/// Errors loading or running a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `tokenizer.json` could not be read or parsed.
    #[error("cannot load tokenizer {path}")]
    Load {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: tokenizers::Error,
    },
    /// Encoding a prompt failed.
    #[error("cannot tokenize the prompt")]
    Encode(#[source] tokenizers::Error),
}

/// Turns prompts into token ids and samples generated tokens with their text.
#[derive(Debug)]
pub struct Tokenizer {
    hf: Option<Box<tokenizers::Tokenizer>>,
    /// Output tokens to sample from: id and the text it adds to the completion.
    outputs: Vec<(u32, String)>,
}

/// The id the built-in tokenizer gives `word`.
pub fn builtin_token_id(word: &str) -> u32 {
    (xxh3_64(word.as_bytes()) % BUILTIN_VOCAB) as u32
}

/// One message of a chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The message text.
    pub content: String,
}

/// Renders chat messages into the prompt the engine tokenizes: `<|role|>` then the content
/// for each message, then `<|assistant|>` (a minimal template; a deployment's real
/// template would come from its tokenizer config).
pub fn render_chat(messages: &[ChatMessage]) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str("<|");
        out.push_str(&m.role);
        out.push_str("|>\n");
        out.push_str(&m.content);
        out.push('\n');
    }
    out.push_str("<|assistant|>\n");
    out
}

/// A pronounceable pseudo-word for output text, unique per `i`.
fn pseudo_word(mut i: usize) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ba", "de", "fi", "go", "hu", "ja", "pe",
        "zo",
    ];
    let mut w = String::new();
    loop {
        w.push_str(SYLLABLES[i % 16]);
        i /= 16;
        if i == 0 {
            return w;
        }
    }
}

impl Tokenizer {
    /// The built-in whitespace tokenizer.
    pub fn builtin() -> Self {
        let outputs = (0..OUTPUT_TOKENS)
            .map(|i| {
                let word = pseudo_word(i + 16);
                (builtin_token_id(&word), format!(" {word}"))
            })
            .collect();
        Self { hf: None, outputs }
    }

    /// Loads a Hugging Face `tokenizer.json`.
    ///
    /// # Errors
    ///
    /// [`Error::Load`] if the file cannot be read or parsed.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let hf = tokenizers::Tokenizer::from_file(path).map_err(|source| Error::Load {
            path: path.display().to_string(),
            source,
        })?;
        let vocab = hf.get_vocab_size(false).max(1);
        // Sample output ids spread over the vocabulary, skipping ones that decode to
        // nothing.
        let step = (vocab / OUTPUT_TOKENS).max(1);
        let outputs = (0..vocab)
            .step_by(step)
            .filter_map(|id| {
                let id = id as u32;
                let text = hf.decode(&[id], true).ok()?;
                (!text.is_empty()).then_some((id, text))
            })
            .take(OUTPUT_TOKENS)
            .collect();
        Ok(Self {
            hf: Some(Box::new(hf)),
            outputs,
        })
    }

    /// Token ids of `text`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if the Hugging Face tokenizer fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        match &self.hf {
            Some(hf) => Ok(hf
                .encode(text, false)
                .map_err(Error::Encode)?
                .get_ids()
                .to_vec()),
            None => Ok(text.split_whitespace().map(builtin_token_id).collect()),
        }
    }

    /// Samples one generated token: its id and the text it appends.
    pub fn sample(&self, rng: &mut impl Rng) -> (u32, &str) {
        match self.outputs.len() {
            0 => (0, ""),
            n => {
                let (id, text) = &self.outputs[rng.random_range(0..n)];
                (*id, text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn builtin_ids_are_per_word_and_stable() {
        let t = Tokenizer::builtin();
        let a = t.encode("the  quick\nbrown fox").expect("builtin");
        assert_eq!(a.len(), 4);
        assert_eq!(a[0], builtin_token_id("the"));
        assert_eq!(
            t.encode("the quick brown fox jumps").expect("builtin")[..4],
            a[..]
        );
    }

    #[test]
    fn sampled_text_tokenizes_back_to_its_id() {
        let t = Tokenizer::builtin();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            let (id, text) = t.sample(&mut rng);
            assert_eq!(t.encode(text).expect("builtin"), vec![id]);
        }
    }

    #[test]
    fn chat_rendering_keeps_a_shared_system_prompt_a_shared_prefix() {
        let sys = ChatMessage {
            role: "system".into(),
            content: "you are helpful".into(),
        };
        let a = render_chat(&[
            sys.clone(),
            ChatMessage {
                role: "user".into(),
                content: "hi".into(),
            },
        ]);
        let b = render_chat(&[
            sys,
            ChatMessage {
                role: "user".into(),
                content: "bye".into(),
            },
        ]);
        let t = Tokenizer::builtin();
        let (a, b) = (
            t.encode(&a).expect("builtin"),
            t.encode(&b).expect("builtin"),
        );
        assert_eq!(a[..5], b[..5]);
        assert_ne!(a, b);
    }
}
