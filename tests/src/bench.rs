//! `meshchat-bench`: the measurements behind docs/benchmarks.md, each in its own module, and
//! what they share (percentiles, plots).

pub mod chat;
pub mod cpu;
pub mod planner;
pub mod plot;
pub mod raw;

use serde::Serialize;

/// The numeric keys of `docs/benchmarks.json` meant for comparing runs.
pub const SUMMARY_KEYS: [&str; 14] = [
    "raw_msgs_per_s",
    "chat_msgs_per_s",
    "chat_over_raw",
    "chat_paced_msgs_per_s",
    "cpu_us_per_message",
    "p99_overhead_ms",
    "p99_overhead_ms_llm0",
    "rss_idle_mb",
    "bytes_per_conversation",
    "handoff_pause_p99_ms",
    "failover_s",
    "planner_max_over_mean",
    "planner_moved_fraction",
    "planner_decision_ms",
];

/// Puts `md` (which starts with `begin` and ends with `end`) into `file` in place of the text
/// between those markers, or appends it when the file has none yet.
pub fn write_section(file: &std::path::Path, begin: &str, end: &str, md: &str) -> std::io::Result<()> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let next = match (text.find(begin), text.find(end)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}{}{}",
            &text[..b],
            md.trim_end_matches('\n'),
            &text[e + end.len()..]
        ),
        _ => format!("{}\n\n{md}", text.trim_end()),
    };
    std::fs::write(file, next)
}

/// A `Key:   <n> kB` line of a `/proc` file (`/proc/meminfo`, `/proc/<pid>/status`), in KiB.
pub fn proc_kb(file: &str, key: &str) -> Option<f64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find(|l| l.split(':').next() == Some(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Percentiles of `v` (sorted in place); NaN when empty.
pub fn percentiles(v: &mut [f64]) -> Percentiles {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            v[((v.len() - 1) as f64 * q).round() as usize]
        }
    };
    Percentiles {
        n: v.len(),
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_sample() {
        let mut v: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
        let p = percentiles(&mut v);
        assert_eq!(
            (p.n, p.p50, p.p99, p.p999, p.max),
            (1000, 501.0, 990.0, 999.0, 1000.0)
        );
        assert!(percentiles(&mut []).p50.is_nan());
    }

    #[test]
    fn proc_kb_reads_a_named_line() {
        assert!(proc_kb("/proc/self/status", "VmRSS").is_some_and(|kb| kb > 0.0));
        assert!(proc_kb("/proc/meminfo", "MemTotal").is_some_and(|kb| kb > 0.0));
        // the key is the whole name before the colon, not a prefix
        assert_eq!(proc_kb("/proc/meminfo", "Mem"), None);
        assert_eq!(proc_kb("/proc/no-such-file", "VmRSS"), None);
    }
}
