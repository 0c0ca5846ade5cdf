//! Filler text for generated prompts.

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
