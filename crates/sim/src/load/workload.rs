//! What a benchmark sends: sessions of one or more turns, with their text and lengths.
//!
//! A *session* is a sequence of *turns* sent one after another (a conversation); a
//! single-turn workload has one turn per session. Text is made of pseudo-random words,
//! one word per token under the simulator's built-in tokenizer, so lengths are exact
//! there and approximate under a real tokenizer.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::text::{english, words};
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

/// Chat sessions on shared documents: every prompt starts with one common head (a system
/// text), then its group's document, then the conversation's turns (each resends the
/// history, answers included, plus a new question). Sessions of all groups are shuffled
/// together. Text is common English words, about one token each under the simulator's
/// tokenizer and a Llama vocabulary alike.
///
/// A backend that keeps a group's document serves later turns and later conversations of
/// that group from cache; with more groups than one backend holds, a router has to give
/// each group a home to get the hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupedChat {
    /// Common head every prompt carries (chat template aside), tokens.
    pub head_len: usize,
    /// Prefix groups, each with its own document.
    pub groups: usize,
    /// Shortest document, tokens; lengths are drawn uniformly up to `doc_len_max`.
    pub doc_len_min: usize,
    /// Longest document, tokens.
    pub doc_len_max: usize,
    /// Conversations per group.
    pub conversations: usize,
    /// Turns per conversation.
    pub turns: usize,
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
    /// See [`GroupedChat`].
    GroupedChat(GroupedChat),
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
    /// The prefix group the session belongs to, if the workload has groups.
    pub group: Option<usize>,
    /// The turns, in order.
    pub turns: Vec<Turn>,
}

impl Workload {
    /// Requests one pass over the workload sends.
    pub fn len(&self) -> usize {
        match self {
            Workload::SharedPrefix(w) => w.groups * w.prompts_per_group,
            Workload::MultiTurn(w) => w.conversations * w.turns,
            Workload::GroupedChat(w) => w.groups * w.conversations * w.turns,
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
                        group: None,
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
                    group: None,
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
            Workload::GroupedChat(w) => w.sessions(&mut rng),
            Workload::Trace(entries) => entries
                .iter()
                .map(|e| Session {
                    at_ms: e.timestamp_ms,
                    group: None,
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

impl GroupedChat {
    /// The sessions of one pass: `conversations` per group, shuffled across groups.
    fn sessions(&self, rng: &mut ChaCha8Rng) -> Vec<Session> {
        let head = english(rng, self.head_len);
        let docs: Vec<String> = (0..self.groups)
            .map(|_| {
                let n = rng.random_range(self.doc_len_min..=self.doc_len_max.max(self.doc_len_min));
                english(rng, n)
            })
            .collect();
        let mut sessions = Vec::with_capacity(self.groups * self.conversations);
        for (group, doc) in docs.iter().enumerate() {
            for _ in 0..self.conversations {
                let turns = (0..self.turns)
                    .map(|t| {
                        let mut messages = Vec::new();
                        if t == 0 {
                            messages.push(Message {
                                role: "system",
                                content: format!("{head}\n\n{doc}"),
                            });
                        }
                        messages.push(Message {
                            role: "user",
                            content: english(rng, self.question_len),
                        });
                        Turn {
                            messages,
                            max_tokens: self.output_len,
                        }
                    })
                    .collect();
                sessions.push(Session {
                    at_ms: None,
                    group: Some(group),
                    turns,
                });
            }
        }
        sessions.shuffle(rng);
        sessions
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

    #[test]
    fn grouped_chat_shares_the_head_across_groups_and_the_document_within_one() {
        let w = Workload::GroupedChat(GroupedChat {
            head_len: 6,
            groups: 3,
            doc_len_min: 20,
            doc_len_max: 40,
            conversations: 2,
            turns: 3,
            question_len: 5,
            output_len: 4,
        });
        let sessions = w.sessions(9);
        assert_eq!((sessions.len(), w.len()), (6, 18));
        let system = |s: &Session| s.turns[0].messages[0].content.clone();
        let head = |s: &Session| {
            system(s)
                .split_whitespace()
                .take(6)
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(sessions.iter().all(|s| head(s) == head(&sessions[0])));
        for a in &sessions {
            for b in &sessions {
                assert_eq!(a.group == b.group, system(a) == system(b));
            }
            let words = system(a).split_whitespace().count();
            assert!((26..=46).contains(&words), "{words}");
            assert_eq!(a.turns.len(), 3);
            assert_eq!(
                a.turns[1].messages.len(),
                1,
                "later turns add a question only"
            );
        }
        let mut groups: Vec<_> = sessions.iter().filter_map(|s| s.group).collect();
        groups.sort_unstable();
        assert_eq!(groups, vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(w.sessions(9), sessions, "deterministic");
    }
}
