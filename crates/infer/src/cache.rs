//! The KV cache of a running batch: for each layer, keys and values of every slot,
//! `[slots, n_kv_head, capacity, head_dim]`, allocated once, in f32 or f16 ([`KvDtype`]).
//! Each step writes its new positions in place; nothing grows, so its memory is known up
//! front ([`SlotCache::bytes`]).

use burn::tensor::{DType, Tensor, TensorPrimitive};
use llm_model::{Gpt2Config, KernelBackend, Segment};

/// How the cache stores keys and values. Attention itself runs in f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvDtype {
    #[default]
    F32,
    /// Half the memory (llama.cpp's default); keys and values rounded to f16.
    F16,
}

impl KvDtype {
    fn dtype(self) -> DType {
        match self {
            KvDtype::F32 => DType::F32,
            KvDtype::F16 => DType::F16,
        }
    }

    /// Bytes per stored value.
    pub fn size(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }
}

impl std::str::FromStr for KvDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(KvDtype::F32),
            "f16" => Ok(KvDtype::F16),
            _ => Err(format!("unknown KV cache type {s:?}: expected f32 or f16")),
        }
    }
}

/// Keys and values for `slots` sequences of at most `capacity` positions each.
#[derive(Debug)]
pub struct SlotCache<B: KernelBackend> {
    /// Per layer; `None` only while a step holds it.
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    slots: usize,
    capacity: usize,
    kv: KvDtype,
    bytes: usize,
}

impl<B: KernelBackend> SlotCache<B> {
    /// Zeroed f32 keys and values for `slots` sequences of `config.n_positions` positions.
    pub fn new(config: &Gpt2Config, slots: usize, device: &B::Device) -> Self {
        Self::with_dtype(config, slots, KvDtype::F32, device).expect("every backend has f32")
    }

    /// As [`SlotCache::new`], stored as `kv`; an error if the backend cannot store it
    /// (NdArray has no f16).
    pub fn with_dtype(
        config: &Gpt2Config,
        slots: usize,
        kv: KvDtype,
        device: &B::Device,
    ) -> crate::Result<Self> {
        Self::with_capacity(config, slots, config.n_positions, kv, device)
    }

    /// As [`SlotCache::with_dtype`], with room for `capacity` positions per slot (at most
    /// `n_positions`): a caller that knows its longest sequence need not hold the whole
    /// context. An engine on such a cache refuses requests that could outgrow it.
    pub fn with_capacity(
        config: &Gpt2Config,
        slots: usize,
        capacity: usize,
        kv: KvDtype,
        device: &B::Device,
    ) -> crate::Result<Self> {
        if !B::supports_dtype(device, kv.dtype()) {
            return Err(crate::InferError::Param {
                param: "kv_cache",
                message: format!("{kv:?}: this backend cannot store {:?} tensors", kv.dtype()),
            });
        }
        if capacity == 0 || capacity > config.n_positions {
            return Err(crate::InferError::Param {
                param: "cache_capacity",
                message: format!(
                    "must be in 1..={} (the model's n_positions), got {capacity}",
                    config.n_positions
                ),
            });
        }
        let (h, cap, d) = (config.kv_heads(), capacity, config.head_dim());
        let shape = [slots, h, cap, d];
        let zeros = || Tensor::<B, 4>::zeros(shape, (device, kv.dtype()));
        let layers = (0..config.n_layer)
            .map(|_| Some((zeros(), zeros())))
            .collect();
        Ok(SlotCache {
            layers,
            slots,
            capacity: cap,
            kv,
            bytes: 2 * config.n_layer * slots * cap * h * d * kv.size(),
        })
    }

    /// How keys and values are stored.
    pub fn kv_dtype(&self) -> KvDtype {
        self.kv
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Positions per slot: the model's context, unless built smaller.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Layer `layer`'s attention for the segments' tokens `qkv [n, (h + 2·kv)·d]`: writes
    /// their keys and values at the segments' positions, returns `[n, h·d]`, each token
    /// seeing the last `window` positions if given. Segments must fit the cache.
    pub fn attend(
        &mut self,
        layer: usize,
        qkv: Tensor<B, 2>,
        segments: &[Segment],
        window: Option<usize>,
    ) -> Tensor<B, 2> {
        let (k, v) = self.layers[layer]
            .take()
            .expect("a cache layer is held by one step at a time");
        let prim = |t: Tensor<B, 4>| t.into_primitive().tensor();
        let (y, k, v) = B::cached_attention(
            qkv.into_primitive().tensor(),
            prim(k),
            prim(v),
            segments,
            window,
        );
        let float = |t| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(t));
        self.layers[layer] = Some((float(k), float(v)));
        Tensor::from_primitive(TensorPrimitive::Float(y))
    }
}
