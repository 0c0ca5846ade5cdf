//! Filler text for generated prompts.
//!
//! [`words`] draws hex words (one token each under the simulator's built-in tokenizer,
//! several under a real one); [`english`] draws common English words, about one token each
//! under both, for workloads meant to run the same on the simulator and a real engine.

use rand::Rng;

/// `n` pseudo-random words drawn from `rng`, space-separated.
pub fn words(rng: &mut impl Rng, n: usize) -> String {
    let mut s = String::with_capacity(n * 9);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{:x}", rng.random::<u32>()));
    }
    s
}

/// Common English words, each a single token in Llama-family vocabularies.
const ENGLISH: [&str; 64] = [
    "the", "of", "and", "to", "in", "is", "was", "that", "for", "on", "with", "as", "by", "at",
    "from", "his", "her", "they", "an", "be", "this", "which", "or", "are", "had", "not", "but",
    "have", "one", "were", "their", "all", "also", "new", "more", "first", "two", "time", "other",
    "year", "world", "city", "state", "school", "water", "house", "group", "part", "place", "case",
    "week", "company", "system", "program", "question", "work", "number", "night", "point", "home",
    "room", "market", "light", "money",
];

/// `n` common English words drawn from `rng`, space-separated.
pub fn english(rng: &mut impl Rng, n: usize) -> String {
    let mut s = String::with_capacity(n * 6);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(ENGLISH[rng.random_range(0..ENGLISH.len())]);
    }
    s
}
