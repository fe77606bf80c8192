//! The sliding-window next-token dataset of "LLMs from scratch" (`GPTDatasetV1`).

use std::sync::Arc;

use burn::data::dataset::Dataset;

use crate::error::{DataError, Result};

/// One training pair: `target` is `input` shifted left by one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPair {
    pub input: Vec<u32>,
    pub target: Vec<u32>,
}

/// Windows of `max_length + 1` tokens cut from one token stream every `stride` tokens.
///
/// Window `i` starts at `i · stride`; its input is `tokens[s .. s + max_length]` and its
/// target `tokens[s + 1 .. s + max_length + 1]`. As in the walkthrough's
/// `range(0, len(tokens) − max_length, stride)`, there are ⌈(len − max_length) / stride⌉
/// windows: a window starts only where its whole target fits. `stride == max_length` gives
/// non-overlapping inputs; a smaller stride, overlapping ones (more pairs, more correlation).
#[derive(Clone, Debug)]
pub struct SlidingWindow {
    tokens: Arc<[u32]>,
    max_length: usize,
    stride: usize,
}

impl SlidingWindow {
    /// Errors if `max_length` or `stride` is 0 or the stream is shorter than `max_length + 1`.
    pub fn new(tokens: impl Into<Arc<[u32]>>, max_length: usize, stride: usize) -> Result<Self> {
        let tokens = tokens.into();
        if max_length == 0 || stride == 0 {
            return Err(DataError::Invalid(format!(
                "max_length ({max_length}) and stride ({stride}) must be positive"
            )));
        }
        if tokens.len() < max_length + 1 {
            return Err(DataError::TooSmall(format!(
                "{} tokens cannot make a window of max_length {max_length}: at least {} are needed",
                tokens.len(),
                max_length + 1
            )));
        }
        Ok(SlidingWindow {
            tokens,
            max_length,
            stride,
        })
    }

    /// Number of windows: ⌈(len − max_length) / stride⌉.
    pub fn num_windows(&self) -> usize {
        (self.tokens.len() - self.max_length).div_ceil(self.stride)
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The token stream.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }
}

impl Dataset<TokenPair> for SlidingWindow {
    fn get(&self, index: usize) -> Option<TokenPair> {
        if index >= self.num_windows() {
            return None;
        }
        let s = index * self.stride;
        Some(TokenPair {
            input: self.tokens[s..s + self.max_length].to_vec(),
            target: self.tokens[s + 1..s + self.max_length + 1].to_vec(),
        })
    }

    fn len(&self) -> usize {
        self.num_windows()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_count_follows_python_range() {
        for (len, max_length, stride) in [(10, 4, 1), (10, 4, 4), (10, 4, 3), (5, 4, 4), (9, 4, 5)]
        {
            let w = SlidingWindow::new((0..len as u32).collect::<Vec<_>>(), max_length, stride)
                .unwrap();
            let python = (0..len - max_length).step_by(stride).count();
            assert_eq!(
                w.len(),
                python,
                "len {len} max_length {max_length} stride {stride}"
            );
            let last = w.get(w.len() - 1).unwrap();
            assert_eq!(last.target.len(), max_length);
            assert!(w.get(w.len()).is_none());
        }
    }

    #[test]
    fn too_short_or_zero_sizes_are_errors() {
        assert!(SlidingWindow::new(vec![1, 2, 3, 4], 4, 1).is_err());
        assert!(SlidingWindow::new(vec![1, 2, 3, 4, 5], 0, 1).is_err());
        assert!(SlidingWindow::new(vec![1, 2, 3, 4, 5], 4, 0).is_err());
    }
}
