//! Notices librdkafka saying a partition has no leader it knows. librdkafka 2.12–2.15 keeps
//! such a partition leaderless for good once a broker answer named leader -1 (the moment a
//! single broker is fenced after a freeze; confluentinc/librdkafka#5430): its log then says
//! `new leader-1 not found in cache`. Watches for a wedged client act sooner after that line
//! than on a stall alone. The client log reaches us through `tracing`, so the binaries feed
//! librdkafka's lines here from their subscriber.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What librdkafka logs when a metadata answer names a leader it does not know (-1).
const LEADERLESS: &str = "new leader-1 not found in cache";

/// When the line was last seen: milliseconds after [`origin`] plus one; 0 = never.
static SEEN: AtomicU64 = AtomicU64::new(0);

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Looks at one librdkafka log line.
pub fn note_client_log(line: &str) {
    if line.contains(LEADERLESS) {
        note_leaderless_at(Instant::now());
    }
}

fn note_leaderless_at(now: Instant) {
    let ms = now.saturating_duration_since(origin()).as_millis();
    SEEN.store(u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1, Ordering::Relaxed);
}

/// Whether a client of this process reported a leaderless partition within `window` of now.
pub fn leaderless_seen_within(window: Duration) -> bool {
    seen_within_at(window, Instant::now())
}

fn seen_within_at(window: Duration, now: Instant) -> bool {
    match SEEN.load(Ordering::Relaxed) {
        0 => false,
        at => {
            let seen = origin() + Duration::from_millis(at - 1);
            now.saturating_duration_since(seen) <= window
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_leaderless_line_counts_and_only_for_its_window() {
        // one test: the state is process-wide
        note_client_log("METADATAUPDATE [thrd:main]: Partition t.chat.messages[0]: leader 1");
        assert!(!leaderless_seen_within(Duration::from_secs(3600)));
        note_client_log(
            "METADATAUPDATE [thrd:main]: Partition t.chat.messages(x)[0]: new leader-1 not found in cache",
        );
        assert!(leaderless_seen_within(Duration::from_secs(1)));
        let later = Instant::now() + Duration::from_secs(90);
        assert!(!seen_within_at(Duration::from_secs(60), later));
        assert!(seen_within_at(Duration::from_secs(120), later));
    }
}
