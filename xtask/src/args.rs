//! Value parsers for flags, so that a bad value is refused by name before any work
//! (`invalid value '0' for '--top-k <TOP_K>': must be at least 1`).

/// A count of at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (expected a whole number ≥ 1)")),
    }
}

/// A sampling temperature: a finite number ≥ 0, where 0 is greedy.
pub fn temperature(s: &str) -> Result<f32, String> {
    let t: f32 = s
        .parse()
        .map_err(|e| format!("{e} (expected a number ≥ 0)"))?;
    if t.is_finite() && t >= 0.0 {
        Ok(t)
    } else {
        Err("must be a finite number ≥ 0 (0 is greedy)".into())
    }
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
