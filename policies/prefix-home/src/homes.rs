//! The homes the policy has given prefix groups, so that homes stay balanced: bounded
//! loads over groups (how many groups each backend is home to), not only over requests.
//!
//! NB: kept in the policy instance. The router may run a few instances side by side and
//! replaces them now and then; each one's table then differs for a while, which costs
//! balance, never correctness: a group whose prefix is cached somewhere goes there
//! whatever the table says.

use std::collections::HashMap;

/// Decisions between sweeps of groups not seen for `forget_after` decisions.
const SWEEP_EVERY: u64 = 256;

/// Group key → (fleet index of its home, decision it was last seen at).
#[derive(Debug, Default)]
pub struct Homes {
    by_group: HashMap<u64, (u32, u64)>,
    /// Groups homed on each fleet index.
    per_backend: Vec<u32>,
    /// Decisions made.
    clock: u64,
}

impl Homes {
    /// Starts a decision; forgets, now and then, groups not seen for `forget_after`
    /// decisions.
    pub fn tick(&mut self, forget_after: u64) {
        self.clock += 1;
        if self.clock.is_multiple_of(SWEEP_EVERY) {
            let cutoff = self.clock.saturating_sub(forget_after);
            let per_backend = &mut self.per_backend;
            self.by_group.retain(|_, &mut (b, last)| {
                let keep = last >= cutoff;
                if !keep {
                    per_backend[b as usize] -= 1;
                }
                keep
            });
        }
    }

    /// The home of `group`, if it has one.
    pub fn home(&self, group: u64) -> Option<u32> {
        self.by_group.get(&group).map(|&(b, _)| b)
    }

    /// Groups homed on `backend`.
    pub fn groups_on(&self, backend: u32) -> u32 {
        self.per_backend.get(backend as usize).copied().unwrap_or(0)
    }

    /// Groups with a home.
    pub fn groups(&self) -> u32 {
        u32::try_from(self.by_group.len()).unwrap_or(u32::MAX)
    }

    /// Marks `group` seen now.
    pub fn touch(&mut self, group: u64) {
        if let Some((_, last)) = self.by_group.get_mut(&group) {
            *last = self.clock;
        }
    }

    /// Makes `backend` the home of `group`, seen now.
    pub fn set(&mut self, group: u64, backend: u32) {
        if self.per_backend.len() <= backend as usize {
            self.per_backend.resize(backend as usize + 1, 0);
        }
        let clock = self.clock;
        let previous = self.by_group.insert(group, (backend, clock));
        if let Some((old, _)) = previous {
            self.per_backend[old as usize] -= 1;
        }
        self.per_backend[backend as usize] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_moves_and_forgetting() {
        let mut h = Homes::default();
        h.tick(1000);
        h.set(1, 0);
        h.set(2, 0);
        h.set(2, 3);
        assert_eq!((h.groups_on(0), h.groups_on(3), h.groups()), (1, 1, 2));
        assert_eq!(h.home(2), Some(3));
        for _ in 0..(2 * SWEEP_EVERY) {
            h.tick(100);
            h.touch(2);
        }
        assert_eq!(h.home(1), None, "group 1 unseen for over 100 decisions");
        assert_eq!((h.groups_on(0), h.groups_on(3), h.groups()), (0, 1, 1));
    }
}
