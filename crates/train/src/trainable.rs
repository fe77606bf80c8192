//! Which parameters train: all of them, the last N blocks and `ln_f`, or only the LoRA
//! adapters. A frozen parameter gets no gradient, so the optimizer keeps no state for it.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// What trains in a GPT (a task's own head always trains). Written `all`, `last:N` or
/// `lora` in recipes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Trainable {
    /// Every parameter.
    All,
    /// The last N blocks, `ln_f` and an untied LM head; embeddings and earlier blocks are
    /// frozen (the book's chapter 6 setting with N = 1).
    Last(usize),
    /// Only the LoRA adapters.
    Lora,
}

impl FromStr for Trainable {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Trainable::All),
            "lora" => Ok(Trainable::Lora),
            _ => match s.strip_prefix("last:").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(Trainable::Last(n)),
                _ => Err(format!("{s:?} is not `all`, `last:N` (N ≥ 1) or `lora`")),
            },
        }
    }
}

impl TryFrom<String> for Trainable {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Trainable> for String {
    fn from(t: Trainable) -> String {
        t.to_string()
    }
}

impl fmt::Display for Trainable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trainable::All => write!(f, "all"),
            Trainable::Last(n) => write!(f, "last:{n}"),
            Trainable::Lora => write!(f, "lora"),
        }
    }
}

impl Trainable {
    /// Whether the GPT parameter at `path` (`h.3.mlp.c_fc.weight`) trains, in a model of
    /// `n_layer` blocks.
    pub fn trains(&self, path: &str, n_layer: usize) -> bool {
        match self {
            Trainable::All => true,
            Trainable::Lora => path.contains(".lora."),
            Trainable::Last(n) => {
                if path.starts_with("ln_f.") || path.starts_with("lm_head.") {
                    return true;
                }
                let block = path
                    .strip_prefix("h.")
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|i| i.parse::<usize>().ok());
                block.is_some_and(|i| i + n >= n_layer)
            }
        }
    }

    /// `module` with every parameter frozen or not as [`Self::trains`] says.
    pub fn apply<B: Backend, M: Module<B>>(&self, module: M, n_layer: usize) -> M {
        module.map(&mut Freezer {
            rule: *self,
            n_layer,
            path: Vec::new(),
        })
    }
}

struct Freezer {
    rule: Trainable,
    n_layer: usize,
    path: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Freezer {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let trains = self.rule.trains(&self.path.join("."), self.n_layer);
        param.set_require_grad(trains)
    }
}

/// The number of parameters that train (that require a gradient).
pub fn count<B: Backend, M: Module<B>>(module: &M) -> usize {
    struct Counter(usize);
    impl<B: Backend> ModuleVisitor<B> for Counter {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let t = param.val();
            if t.is_require_grad() {
                self.0 += t.shape().num_elements();
            }
        }
    }
    let mut c = Counter(0);
    module.visit(&mut c);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_pick_the_right_parameters() {
        let last = Trainable::Last(1);
        assert!(last.trains("h.3.mlp.c_fc.weight", 4));
        assert!(!last.trains("h.2.mlp.c_fc.weight", 4));
        assert!(last.trains("ln_f.gamma", 4) && !last.trains("wte.weight", 4));
        assert!(Trainable::Lora.trains("h.0.attn.c_attn.lora.a", 4));
        assert!(!Trainable::Lora.trains("h.0.attn.c_attn.weight", 4));
        assert_eq!("last:2".parse::<Trainable>(), Ok(Trainable::Last(2)));
        assert!("last:0".parse::<Trainable>().is_err());
        assert!("some"
            .parse::<Trainable>()
            .unwrap_err()
            .contains("\"some\""));
    }
}
