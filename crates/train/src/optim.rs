//! AdamW with GPT-2's parameter groups and global-norm gradient clipping.
//!
//! Burn 0.21's optimizers have no parameter groups and clip per tensor, so this wraps two
//! AdamWs: one with weight decay for the 2-D weights and embeddings, one without for
//! biases and LayerNorm parameters (nanoGPT's rule: decay a parameter iff it has 2 or more
//! dimensions). Before the update the gradients are scaled so that their global L2 norm is
//! at most `grad_clip`.
//!
//! Each AdamW is [`FusedAdamW`]: Burn's `AdamW` formula and state, its update computed by
//! the backend's [`KernelBackend::adamw_step`] (one pass per parameter on Flex).

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    AdamWState, AdaptiveMomentumState, GradientsParams, LearningRate, Optimizer, SimpleOptimizer,
};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor, TensorPrimitive};
use llm_model::kernels::AdamWStep;
use llm_model::{Gpt, KernelAutodiff, KernelBackend};

use crate::config::OptimizerConfig;
use crate::error::{Result, TrainError};

type Adam<B, M> = OptimizerAdaptor<FusedAdamW, M, B>;
type OptimRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// The optimizer of a GPT (or of any model with one, such as a classifier): AdamW in two
/// groups, plus clipping. It keeps moments only for parameters that get gradients, so a
/// frozen parameter costs no optimizer memory.
pub struct GptOptimizer<B: KernelAutodiff, M: AutodiffModule<B> = Gpt<B>> {
    decay: Adam<B, M>,
    no_decay: Adam<B, M>,
    decay_all: bool,
    grad_clip: f64,
}

/// Sum of squared gradients over every parameter, in f64.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.sum += g.square().sum().into_scalar().elem::<f64>();
        }
    }
}

/// Moves every gradient into the decay or no-decay group, scaled.
struct Split<'a> {
    all: &'a mut GradientsParams,
    decay: GradientsParams,
    no_decay: GradientsParams,
    scale: Option<f64>,
    decay_all: bool,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Split<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.all.remove::<B::InnerBackend, D>(param.id) {
            let g = match self.scale {
                Some(s) => g.mul_scalar(s),
                None => g,
            };
            if self.decay_all || D >= 2 {
                self.decay.register(param.id, g);
            } else {
                self.no_decay.register(param.id, g);
            }
        }
    }
}

impl<B: KernelAutodiff, M: AutodiffModule<B>> GptOptimizer<B, M> {
    pub fn new(c: &OptimizerConfig) -> Self {
        let adam = |weight_decay: f32| {
            OptimizerAdaptor::from(FusedAdamW {
                beta_1: c.beta1,
                beta_2: c.beta2,
                epsilon: c.eps,
                weight_decay,
            })
        };
        GptOptimizer {
            decay: adam(c.weight_decay),
            no_decay: adam(0.0),
            decay_all: c.decay_all,
            grad_clip: c.grad_clip,
        }
    }

    /// The global L2 norm of the gradients.
    pub fn grad_norm(model: &M, grads: &GradientsParams) -> f64 {
        let mut n = SquaredNorm { grads, sum: 0.0 };
        model.visit(&mut n);
        n.sum.sqrt()
    }

    /// One update at learning rate `lr`. Returns the model and the gradient norm before
    /// clipping.
    pub fn step(&mut self, lr: f64, model: M, grads: GradientsParams) -> (M, f64) {
        let norm = Self::grad_norm(&model, &grads);
        (self.apply(lr, model, grads, norm), norm)
    }

    /// One update at learning rate `lr`, given the gradients' global norm
    /// ([`Self::grad_norm`]), so a caller can judge the step before applying it.
    pub fn apply(&mut self, lr: f64, model: M, mut grads: GradientsParams, norm: f64) -> M {
        let scale =
            (self.grad_clip > 0.0 && norm > self.grad_clip).then(|| self.grad_clip / (norm + 1e-6));
        let mut split = Split {
            all: &mut grads,
            decay: GradientsParams::new(),
            no_decay: GradientsParams::new(),
            scale,
            decay_all: self.decay_all,
        };
        model.visit(&mut split);
        let (decay, no_decay) = (split.decay, split.no_decay);
        let model = self.decay.step(lr, model, decay);
        self.no_decay.step(lr, model, no_decay)
    }

    /// The optimizer state (moments and step counts of both groups), serialised.
    pub fn to_bytes(&self) -> Result<(Vec<u8>, Vec<u8>)> {
        let rec = OptimRecorder::default();
        let ser = |r| {
            rec.record(r, ())
                .map_err(|e| TrainError::Checkpoint(format!("optimizer state: {e}")))
        };
        Ok((
            ser(self.decay.to_record())?,
            ser(self.no_decay.to_record())?,
        ))
    }

    /// Restores the state saved by [`Self::to_bytes`].
    pub fn load_bytes(mut self, decay: &[u8], no_decay: &[u8], device: &B::Device) -> Result<Self> {
        let rec = OptimRecorder::default();
        let err = |e| TrainError::Checkpoint(format!("optimizer state: {e}"));
        self.decay = self
            .decay
            .load_record(rec.load(decay.to_vec(), device).map_err(err)?);
        self.no_decay = self
            .no_decay
            .load_record(rec.load(no_decay.to_vec(), device).map_err(err)?);
        Ok(self)
    }
}

/// Burn's `AdamW` (no AMSGrad, no cautious decay) with its whole update in one
/// [`KernelBackend::adamw_step`]. Its state is Burn's [`AdamWState`], so an optimizer
/// saved by either loads into the other.
#[derive(Clone, Debug)]
pub struct FusedAdamW {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl<B: KernelBackend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let time = state.as_ref().map_or(1, |s| s.momentum.time + 1);
        let step = AdamWStep {
            lr,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            time,
        };
        let float = |t: Tensor<B, D>| t.into_primitive().tensor();
        let moments = state.map(|s| (float(s.momentum.moment_1), float(s.momentum.moment_2)));
        let (param, moment_1, moment_2) = B::adamw_step(float(tensor), float(grad), moments, step);
        let tensor = |t| Tensor::from_primitive(TensorPrimitive::Float(t));
        let momentum = AdaptiveMomentumState::new(time, tensor(moment_1), tensor(moment_2));
        (tensor(param), Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
