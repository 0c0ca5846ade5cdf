//! What a benchmark sends: sessions of one or more turns, with their text and lengths.
//!
//! A *session* is a sequence of *turns* sent one after another (a conversation); a
//! single-turn workload has one turn per session. Text is made of pseudo-random words,
//! one word per token under the simulator's built-in tokenizer, so lengths are exact
//! there and approximate under a real tokenizer.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::text::words;
use super::trace::TraceEntry;

/// SGLang's generated-shared-prefix workload: `groups` system prompts, each shared by
/// `prompts_per_group` different questions, sent in random order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedPrefix {
    /// Distinct system prompts.
    pub groups: usize,
    /// Questions per system prompt.
    pub prompts_per_group: usize,
    /// System prompt length, tokens.
    pub system_prompt_len: usize,
    /// Question length, tokens.
    pub question_len: usize,
    /// Output length, tokens.
    pub output_len: usize,
}

impl SharedPrefix {
    /// llm-d's prefix-cache benchmark shape: 150 groups × 5 users, a 6000-token system
    /// prompt, 1200-token questions, 1000-token answers.
    pub const LLM_D: Self = Self {
        groups: 150,
        prompts_per_group: 5,
        system_prompt_len: 6000,
        question_len: 1200,
        output_len: 1000,
    };
}

/// Conversations that grow turn by turn: each turn resends the whole history plus a new
/// question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiTurn {
    /// Conversations.
    pub conversations: usize,
    /// Turns per conversation.
    pub turns: usize,
    /// System prompt length per conversation, tokens.
    pub system_prompt_len: usize,
    /// Length of each question, tokens.
    pub question_len: usize,
    /// Output length of each answer, tokens.
    pub output_len: usize,
}

/// A workload.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// See [`SharedPrefix`].
    SharedPrefix(SharedPrefix),
    /// See [`MultiTurn`].
    MultiTurn(MultiTurn),
    /// Requests from a JSONL trace ([`super::trace::load`]), each a one-turn session.
    Trace(Vec<TraceEntry>),
}

/// One message of a session's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    /// Text.
    pub content: String,
}

/// The first message(s) of a turn, before the answers of earlier turns are known.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Messages this turn adds to the history (the system prompt on the first turn, then
    /// the question).
    pub messages: Vec<Message>,
    /// Output tokens to ask for.
    pub max_tokens: usize,
}

/// A planned session.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// When to start, ms after the run starts, if the workload fixes it (traces).
    pub at_ms: Option<f64>,
    /// The turns, in order.
    pub turns: Vec<Turn>,
}

impl Workload {
    /// Requests one pass over the workload sends.
    pub fn len(&self) -> usize {
        match self {
            Workload::SharedPrefix(w) => w.groups * w.prompts_per_group,
            Workload::MultiTurn(w) => w.conversations * w.turns,
            Workload::Trace(entries) => entries.len(),
        }
    }

    /// Whether one pass sends nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sessions of one pass, deterministic in `seed`.
    pub fn sessions(&self, seed: u64) -> Vec<Session> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        match self {
            Workload::SharedPrefix(w) => {
                let systems: Vec<String> = (0..w.groups)
                    .map(|_| words(&mut rng, w.system_prompt_len))
                    .collect();
                let mut sessions: Vec<Session> = systems
                    .iter()
                    .flat_map(|system| (0..w.prompts_per_group).map(move |_| system))
                    .map(|system| Session {
                        at_ms: None,
                        turns: vec![Turn {
                            messages: vec![
                                Message {
                                    role: "system",
                                    content: system.clone(),
                                },
                                Message {
                                    role: "user",
                                    content: words(&mut rng, w.question_len),
                                },
                            ],
                            max_tokens: w.output_len,
                        }],
                    })
                    .collect();
                sessions.shuffle(&mut rng);
                sessions
            }
            Workload::MultiTurn(w) => (0..w.conversations)
                .map(|_| Session {
                    at_ms: None,
                    turns: (0..w.turns)
                        .map(|t| {
                            let mut messages = Vec::new();
                            if t == 0 {
                                messages.push(Message {
                                    role: "system",
                                    content: words(&mut rng, w.system_prompt_len),
                                });
                            }
                            messages.push(Message {
                                role: "user",
                                content: words(&mut rng, w.question_len),
                            });
                            Turn {
                                messages,
                                max_tokens: w.output_len,
                            }
                        })
                        .collect(),
                })
                .collect(),
            Workload::Trace(entries) => entries
                .iter()
                .map(|e| Session {
                    at_ms: e.timestamp_ms,
                    turns: vec![Turn {
                        messages: vec![Message {
                            role: "user",
                            content: e.prompt.clone(),
                        }],
                        max_tokens: e.output_len,
                    }],
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_prefix_groups_share_their_system_prompt_exactly() {
        let w = Workload::SharedPrefix(SharedPrefix {
            groups: 3,
            prompts_per_group: 4,
            system_prompt_len: 50,
            question_len: 10,
            output_len: 5,
        });
        let sessions = w.sessions(1);
        assert_eq!(sessions.len(), 12);
        let mut systems: Vec<&str> = sessions
            .iter()
            .map(|s| s.turns[0].messages[0].content.as_str())
            .collect();
        assert!(systems.iter().all(|s| s.split(' ').count() == 50));
        systems.sort_unstable();
        systems.dedup();
        assert_eq!(systems.len(), 3);
        assert_eq!(w.sessions(1), sessions, "deterministic");
    }

    #[test]
    fn multi_turn_sends_the_system_prompt_once_per_conversation() {
        let w = Workload::MultiTurn(MultiTurn {
            conversations: 2,
            turns: 3,
            system_prompt_len: 8,
            question_len: 4,
            output_len: 2,
        });
        let sessions = w.sessions(0);
        assert_eq!(w.len(), 6);
        assert_eq!(sessions[0].turns.len(), 3);
        assert_eq!(sessions[0].turns[0].messages.len(), 2);
        assert_eq!(sessions[0].turns[1].messages.len(), 1);
    }
}
