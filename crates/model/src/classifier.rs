//! [`Classifier`]: a GPT-2 with a classification head on its last real token (chapter 6 of
//! "Build a Large Language Model (From Scratch)").
//!
//! ```text
//! ids ─▶ gpt (… ─▶ ln_f) ─▶ hidden[b, last real token] ─▶ head ─▶ logits [b, n_classes]
//! ```

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::error::{ModelError, Result};
use crate::kernels::KernelBackend;
use crate::model::Gpt;
use crate::proj::Proj;

type HeadRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// What a classifier checkpoint records besides the weights (metadata key `classifier`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    /// Class names, by index (`["ham", "spam"]`).
    pub labels: Vec<String>,
    /// Messages are padded (and cut) to this many tokens.
    pub max_length: usize,
}

/// A GPT-2 body and a linear head `[n_embd, n_classes]` read at one position per row.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    pub gpt: Gpt<B>,
    /// `[n_embd, n_classes]`, with a bias (PyTorch's `nn.Linear` default).
    pub head: Proj<B>,
}

impl<B: KernelBackend> Classifier<B> {
    /// `gpt` with a fresh head of `n_classes` outputs, N(0, 0.02) weights and a zero bias.
    pub fn new(gpt: Gpt<B>, n_classes: usize, device: &B::Device) -> Self {
        let head = Proj::init(gpt.config().n_embd, n_classes, 0.02, true, device);
        Classifier { gpt, head }
    }

    /// Class logits `[b, n_classes]` from ids `[b, t]`, read at `last[i]` in row `i` (the
    /// last real token, since padding follows it).
    pub fn forward(&self, ids: Tensor<B, 2, Int>, last: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let [b, t] = ids.dims();
        let device = ids.device();
        let hidden = self.gpt.forward_hidden(ids); // [b, t, n_embd]
        let e = hidden.dims()[2];
        let rows = Tensor::<B, 1, Int>::arange(0..b as i64, &device) * t as i64 + last; // [b]
        let x = hidden.reshape([b * t, e]).select(0, rows); // [b, n_embd]
        let logits = self.head.forward(x.unsqueeze_dim::<3>(1)); // [b, 1, n_classes]
        logits.squeeze_dim::<2>(1) // [b, n_classes]
    }

    /// Adds the head (section `head`) and `info` (metadata `classifier`) to a checkpoint
    /// of the GPT ([`Checkpoint::from_model`], or [`Checkpoint::from_adapters`] with LoRA).
    pub fn add_head(&self, ckpt: &mut Checkpoint, info: &ClassifierInfo) -> Result<()> {
        let head = HeadRecorder::default()
            .record(self.head.clone().into_record(), ())
            .map_err(|e| ModelError::Input(format!("cannot serialise the head: {e}")))?;
        ckpt.set_section("head", head);
        ckpt.metadata["classifier"] = serde_json::to_value(info).expect("info serialises");
        Ok(())
    }

    /// The classifier a checkpoint holds, given its GPT (loaded from the same checkpoint,
    /// e.g. by `pretrained::load`, which also puts LoRA adapters on their base).
    pub fn from_checkpoint(
        gpt: Gpt<B>,
        ckpt: &Checkpoint,
        device: &B::Device,
    ) -> Result<(Self, ClassifierInfo)> {
        let info: ClassifierInfo = serde_json::from_value(ckpt.metadata["classifier"].clone())
            .map_err(|e| {
                ModelError::Input(format!(
                    "not a classifier checkpoint (metadata `classifier`: {e})"
                ))
            })?;
        let bytes = ckpt
            .section("head")
            .ok_or_else(|| ModelError::Input("the checkpoint has no head section".into()))?;
        let record = HeadRecorder::default()
            .load(bytes.to_vec(), device)
            .map_err(|e| ModelError::Input(format!("the head section is not a head: {e}")))?;
        let n_classes = info.labels.len();
        let head =
            Proj::init(gpt.config().n_embd, n_classes, 0.02, true, device).load_record(record);
        if head.dims()[1] != n_classes {
            return Err(ModelError::Input(format!(
                "the head has {} outputs but the checkpoint names {n_classes} labels",
                head.dims()[1]
            )));
        }
        Ok((Classifier { gpt, head }, info))
    }
}
