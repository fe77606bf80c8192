//! What the benchmarks share: this process's memory, and medians of timed runs.

use std::time::Instant;

/// Which resident set size [`rss_mib`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rss {
    /// `VmRSS`: resident now.
    Now,
    /// `VmHWM`: the peak so far.
    Peak,
}

/// This process's resident set size in MiB, from `/proc/self/status` (Linux); NaN where
/// there is none.
pub fn rss_mib(which: Rss) -> f64 {
    rss_mib_of("self", which)
}

/// As [`rss_mib`], for process `pid` (`"self"` or a number).
pub fn rss_mib_of(pid: &str, which: Rss) -> f64 {
    let field = match which {
        Rss::Now => "VmRSS:",
        Rss::Peak => "VmHWM:",
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets this process's peak resident set ([`Rss::Peak`]) to what is resident now, so a
/// measurement sees only its own peak (Linux: `/proc/self/clear_refs`); false where it
/// cannot.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The median of `values` (the upper middle one of an even count). Panics on none.
pub fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "the median of no values");
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median seconds of `runs` calls of `f`, after one warm-up call.
pub fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        let mut calls = 0;
        assert!(median_secs(3, || calls += 1) >= 0.0);
        assert_eq!(calls, 4);
        #[cfg(target_os = "linux")]
        {
            let now = rss_mib(Rss::Now); // read first: the peak read after cannot be lower
            assert!(now > 0.0 && rss_mib(Rss::Peak) >= now, "{now}");
        }
    }
}
