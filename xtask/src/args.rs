//! Value parsers for flags, so that a bad value is refused by name before any work
//! (`invalid value '0' for '--top-k <TOP_K>': must be at least 1`).

use llm_infer::SamplingParams;

/// A count of at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (expected a whole number ≥ 1)")),
    }
}

/// A sampling temperature, by the rule of `SamplingParams::validate` (finite, ≥ 0; 0 is
/// greedy).
pub fn temperature(s: &str) -> Result<f32, String> {
    let t: f32 = s
        .parse()
        .map_err(|e| format!("{e} (expected a number ≥ 0)"))?;
    let params = SamplingParams {
        temperature: t,
        ..Default::default()
    };
    params.validate().map(|()| t).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused() {
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").is_err() && positive("-2").is_err() && positive("x").is_err());
        assert_eq!(temperature("0.8"), Ok(0.8));
        for bad in ["-1", "NaN", "inf", "hot"] {
            assert!(temperature(bad).is_err(), "{bad}");
        }
    }
}
