//! Rate-limited logging of warnings that come in bursts.

/// Rate limit for a warning that can come in bursts (one per bad message, say): the first
/// occurrence is logged at once, the rest of the burst as one count on the next line
/// allowed, at most one line per period.
#[derive(Debug)]
pub struct Burst {
    start: std::time::Instant,
    period_ms: u64,
    /// Milliseconds since `start` before which nothing more is logged.
    next_ms: std::sync::atomic::AtomicU64,
    /// Occurrences not logged since the last line.
    quiet: std::sync::atomic::AtomicU64,
}

impl Burst {
    /// At most one line per `period`.
    pub fn new(period: std::time::Duration) -> Self {
        Burst {
            start: std::time::Instant::now(),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            next_ms: std::sync::atomic::AtomicU64::new(0),
            quiet: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Counts one occurrence; `Some(n)` when it is to be logged, `n` being how many
    /// went unlogged since the last line.
    pub fn admit(&self) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(self.period_ms), Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.quiet.swap(0, Relaxed))
        } else {
            self.quiet.fetch_add(1, Relaxed);
            None
        }
    }
}

impl Default for Burst {
    /// One line per 10 s.
    fn default() -> Self {
        Burst::new(std::time::Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::Burst;

    #[test]
    fn a_burst_logs_its_first_line_then_counts_the_rest() {
        let burst = Burst::new(std::time::Duration::from_secs(3600));
        assert_eq!(burst.admit(), Some(0));
        assert_eq!((0..99).filter_map(|_| burst.admit()).count(), 0);
        let quick = Burst::new(std::time::Duration::ZERO);
        assert_eq!(quick.admit(), Some(0));
        assert_eq!(quick.admit(), Some(0), "a period of zero logs every time");
    }
}
