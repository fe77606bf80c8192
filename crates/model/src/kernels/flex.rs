//! Flex's fused cross-entropy: rows in parallel, each row read twice from L2 (max, then
//! `Σ exp`) and, backward, written once in place. Nothing `[n, vocab]`-sized is allocated
//! besides the gradient, and not even that when the logits are no longer shared.

use burn::backend::Flex;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Device, FloatDType, Shape, TensorData};
use burn_flex::FlexTensor;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::gemv::{self, attend};
use super::q8::{quantize_rows, Q8Matrix};
use super::{adamw, cross_entropy, dropout, gelu, infer, simd, AdamWStep, KernelBackend, Segment};

/// Up to this many rows, a linear layer streams its weights once (decode, and a batch of
/// decodes with a short prompt joining); above, gemm. `cargo bench -p llm-model --bench
/// matmul -- linear_rows` measured the weight stream ahead of gemm up to 32 rows at GPT-2's
/// shapes (1.2× to 7× there), and gemm ahead on the MLP's first layer at 64.
const GEMV_MAX_ROWS: usize = 32;

/// Elements per parallel task in the element-wise training kernels (AdamW, dropout).
const CHUNK: usize = 1 << 14;

/// The same switch for int8 weights (measured at 16 rows when the int8 kernels were written).
const GEMV_Q8_MAX_ROWS: usize = 16;

impl KernelBackend for Flex {
    const ON_CPU: bool = true;

    fn lm_head_logits(hidden: FlexTensor, weight: FlexTensor) -> FlexTensor {
        if hidden.dtype() != DType::F32 || weight.dtype() != DType::F32 {
            return Flex::float_matmul(hidden, Flex::float_transpose(weight));
        }
        let (hidden, weight) = (contiguous(hidden), contiguous(weight));
        let ((n, d), (vocab, d_w)) = (rows(&hidden), rows(&weight));
        assert_eq!(
            d, d_w,
            "LM head: hidden [{n}, {d}] against weight [{vocab}, {d_w}]"
        );
        let (h, w): (&[f32], &[f32]) = (hidden.storage(), weight.storage());
        let mut logits: Vec<f32> = Vec::with_capacity(n * vocab);
        // SAFETY: `logits` has room for the n × vocab outputs, which gemm writes without
        // reading (`read_dst = false`) before `set_len`; `h` is [n, d] row-major and `w`
        // is [vocab, d] row-major, read as its transpose [d, vocab] by the strides.
        unsafe {
            gemm::gemm(
                n,
                vocab,
                d,
                logits.as_mut_ptr(),
                1,
                vocab as isize,
                false,
                h.as_ptr(),
                1,
                d as isize,
                w.as_ptr(),
                d as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
            logits.set_len(n * vocab);
        }
        FlexTensor::from_data(TensorData::new(logits, [n, vocab]))
    }

    fn cross_entropy_forward(logits: FlexTensor, targets: FlexTensor) -> (FlexTensor, FlexTensor) {
        if logits.dtype() != DType::F32 {
            return cross_entropy::forward_default::<Flex>(logits, targets);
        }
        let logits = contiguous(logits);
        let (n, vocab) = rows(&logits);
        let targets = target_ids(&targets, n, vocab);
        let x: &[f32] = logits.storage();
        let mut nll = vec![0f32; n];
        let mut lse = vec![0f32; n];
        x.par_chunks(vocab.max(1))
            .zip(nll.par_iter_mut().zip(lse.par_iter_mut()))
            .zip(targets.par_iter())
            .for_each(|((row, (nll, lse)), &target)| {
                let max = simd::max(row);
                let log_sum_exp = max + simd::sum_exp(row, max).ln() as f32;
                *lse = log_sum_exp;
                if target >= 0 {
                    *nll = log_sum_exp - row[target as usize];
                }
            });
        (vector(nll), vector(lse))
    }

    fn cross_entropy_backward(
        logits: FlexTensor,
        targets: FlexTensor,
        lse: FlexTensor,
        grad: FlexTensor,
    ) -> FlexTensor {
        if logits.dtype() != DType::F32 {
            return cross_entropy::backward_default::<Flex>(logits, targets, lse, grad);
        }
        let mut out = contiguous(logits);
        let (n, vocab) = rows(&out);
        let targets = target_ids(&targets, n, vocab);
        let lse = contiguous(lse);
        let grad = contiguous(grad);
        let (lse, grad): (&[f32], &[f32]) = (lse.storage(), grad.storage());
        // Copy-on-write: in place when the autodiff node held the last reference.
        let dx: &mut [f32] = out.storage_mut();
        dx.par_chunks_mut(vocab.max(1))
            .zip(targets.par_iter())
            .enumerate()
            .for_each(|(i, (row, &target))| {
                if target < 0 {
                    row.fill(0.0);
                    return;
                }
                simd::scaled_exp(row, lse[i], grad[i]); // grad · softmax
                row[target as usize] -= grad[i]; // − grad · one-hot
            });
        out
    }

    fn linear_nt(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>) -> FlexTensor {
        let all_f32 = [Some(&x), Some(&weight), bias.as_ref()]
            .iter()
            .flatten()
            .all(|t| t.dtype() == DType::F32);
        if !all_f32 {
            return infer::linear_nt::<Flex>(x, weight, bias);
        }
        let (x, weight) = (contiguous(x), contiguous(weight));
        let bias = bias.map(contiguous);
        let ((m, k), (n, k_w)) = (rows(&x), rows(&weight));
        assert_eq!(k, k_w, "linear: x [{m}, {k}] against weight [{n}, {k_w}]");
        let (xs, ws): (&[f32], &[f32]) = (x.storage(), weight.storage());
        let b = bias.as_ref().map(|b| b.storage::<f32>());
        let y = if m <= GEMV_MAX_ROWS {
            gemv::gemv_f32(xs, m, ws, n, k, b)
        } else {
            gemv::gemm_f32(xs, m, ws, n, k, b)
        };
        FlexTensor::from_data(TensorData::new(y, [m, n]))
    }

    fn linear_q8(x: FlexTensor, weight: &Q8Matrix, bias: Option<FlexTensor>) -> FlexTensor {
        let x = contiguous(x);
        let bias = bias.map(contiguous);
        let (m, k) = rows(&x);
        assert_eq!(
            k, weight.k,
            "linear: x [{m}, {k}] against weight [{}, {}]",
            weight.n, weight.k
        );
        let xs: &[f32] = x.storage();
        let b = bias.as_ref().map(|b| b.storage::<f32>());
        let y = if m <= GEMV_Q8_MAX_ROWS {
            gemv::gemv_q8(&quantize_rows(xs), m, weight, b)
        } else {
            gemv::gemm_q8(xs, m, weight, b)
        };
        FlexTensor::from_data(TensorData::new(y, [m, weight.n]))
    }

    fn gelu_tanh(x: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return gelu::forward_default::<Flex>(x);
        }
        // Copy-on-write: in place when the caller held the only reference.
        let mut x = contiguous(x);
        let values: &mut [f32] = x.storage_mut();
        values.par_chunks_mut(1 << 14).for_each(simd::gelu_tanh);
        x
    }

    fn gelu_tanh_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        if x.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return gelu::backward_default::<Flex>(x, grad);
        }
        let x = contiguous(x);
        // Copy-on-write: in place when autodiff handed over the only reference.
        let mut dx = contiguous(grad);
        let (xs, gs): (&[f32], &mut [f32]) = (x.storage(), dx.storage_mut());
        assert_eq!(
            xs.len(),
            gs.len(),
            "GELU backward: input and gradient sizes differ"
        );
        xs.par_chunks(CHUNK)
            .zip(gs.par_chunks_mut(CHUNK))
            .for_each(|(x, dy)| simd::gelu_tanh_backward(x, dy));
        dx
    }

    fn dropout_mask(
        shape: Shape,
        keep: f64,
        device: &Device<Flex>,
        dtype: FloatDType,
    ) -> FlexTensor {
        if dtype != FloatDType::F32 {
            return dropout::mask_default::<Flex>(shape, keep, device, dtype);
        }
        let seed = dropout::draw_seed::<Flex>(device);
        let (threshold, scale) = (dropout::threshold(keep), (1.0 / keep) as f32);
        let mut mask = vec![0f32; shape.num_elements()];
        mask.par_chunks_mut(CHUNK).enumerate().for_each(|(c, out)| {
            dropout::fill(out, seed, (c * CHUNK) as u64, threshold, scale);
        });
        FlexTensor::from_data(TensorData::new(mask, shape))
    }

    fn adamw_step(
        param: FlexTensor,
        grad: FlexTensor,
        moments: Option<(FlexTensor, FlexTensor)>,
        step: AdamWStep,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let moment_f32 = moments
            .as_ref()
            .is_none_or(|(m, v)| m.dtype() == DType::F32 && v.dtype() == DType::F32);
        if param.dtype() != DType::F32 || grad.dtype() != DType::F32 || !moment_f32 {
            return adamw::step_default::<Flex>(param, grad, moments, step);
        }
        let (mut p, g) = (contiguous(param), contiguous(grad));
        let n = p.layout().num_elements();
        // Fresh moments are written before they are read (`Coefficients::first`).
        let fresh =
            || FlexTensor::from_data(TensorData::new(vec![0f32; n], p.layout().shape().clone()));
        let (mut m, mut v) = match moments {
            Some((m, v)) => (contiguous(m), contiguous(v)),
            None => (fresh(), fresh()),
        };
        let sizes = [&p, &g, &m, &v].map(|t| t.layout().num_elements());
        assert!(
            sizes.iter().all(|&k| k == n),
            "AdamW: parameter, gradient and moments differ in size: {sizes:?}"
        );
        let c = step.coefficients();
        let gs: &[f32] = g.storage();
        // Copy-on-write: in place when the optimizer held the only references.
        let (ps, ms, vs): (&mut [f32], &mut [f32], &mut [f32]) =
            (p.storage_mut(), m.storage_mut(), v.storage_mut());
        (ps.par_chunks_mut(CHUNK))
            .zip(gs.par_chunks(CHUNK))
            .zip(ms.par_chunks_mut(CHUNK))
            .zip(vs.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| simd::adamw(p, g, m, v, &c));
        (p, m, v)
    }

    fn run_pass<R: Send>(pass: impl FnOnce() -> R + Send) -> R {
        rayon::scope(|_| pass())
    }

    fn cached_attention(
        qkv: FlexTensor,
        k_cache: FlexTensor,
        v_cache: FlexTensor,
        segments: &[Segment],
        window: Option<usize>,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let stored = k_cache.dtype();
        if qkv.dtype() != DType::F32
            || v_cache.dtype() != stored
            || !matches!(stored, DType::F32 | DType::F16)
        {
            return infer::cached_attention::<Flex>(qkv, k_cache, v_cache, segments, window);
        }
        let qkv = contiguous(qkv);
        let (mut kc, mut vc) = (contiguous(k_cache), contiguous(v_cache));
        let dims: [usize; 4] = kc
            .layout()
            .shape()
            .as_slice()
            .try_into()
            .expect("cache [slots, kv, cap, d]");
        let (kv, d) = (dims[1], dims[3]);
        let width = qkv.layout().shape().as_slice()[1];
        let heads = Heads {
            h: width / d - 2 * kv,
            kv,
            cap: dims[2],
            d,
            window,
        };
        let x: &[f32] = qkv.storage();
        let y = match stored {
            DType::F16 => attend_stored::<f16>(x, &mut kc, &mut vc, &heads, segments),
            _ => attend_stored::<f32>(x, &mut kc, &mut vc, &heads, segments),
        };
        let n_tokens = y.len() / (heads.h * d);
        let y = FlexTensor::from_data(TensorData::new(y, [n_tokens, heads.h * d]));
        (y, kc, vc)
    }
}

/// Writes the new keys and values into the caches (stored as `E`), then attends.
fn attend_stored<E: Stored>(
    x: &[f32],
    kc: &mut FlexTensor,
    vc: &mut FlexTensor,
    heads: &Heads,
    segments: &[Segment],
) -> Vec<f32> {
    // Copy-on-write: in place when the engine held the only reference.
    write_new(x, kc.storage_mut::<E>(), heads, segments, heads.h);
    write_new(
        x,
        vc.storage_mut::<E>(),
        heads,
        segments,
        heads.h + heads.kv,
    );
    attend_all(x, kc.storage::<E>(), vc.storage::<E>(), heads, segments)
}

/// How the cache stores a value: f32 as is, or f16 (read back by the attention kernels).
trait Stored: burn::tensor::Element + bytemuck::Pod + gemv::KvValue {
    fn store(src: &[f32], dst: &mut [Self]);
}

impl Stored for f32 {
    fn store(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
}

impl Stored for f16 {
    // F16C where the CPU has it (`half` checks at run time).
    fn store(src: &[f32], dst: &mut [f16]) {
        dst.convert_from_f32_slice(src);
    }
}

/// The attention's heads and its KV cache's `[slots, kv, cap, d]` (without the slots).
struct Heads {
    /// Query heads.
    h: usize,
    /// Key/value heads; each serves `h / kv` query heads.
    kv: usize,
    cap: usize,
    d: usize,
    window: Option<usize>,
}

impl Heads {
    /// Where position `p` of key/value head `head` in `slot` starts.
    fn at(&self, slot: usize, head: usize, p: usize) -> usize {
        ((slot * self.kv + head) * self.cap + p) * self.d
    }

    /// Width of a token's row of `qkv`.
    fn row(&self) -> usize {
        (self.h + 2 * self.kv) * self.d
    }
}

/// Copies the key (or value) heads of each new token of `qkv`, which start at head
/// `first`, into its cache rows.
fn write_new<E: Stored>(
    qkv: &[f32],
    cache: &mut [E],
    heads: &Heads,
    segments: &[Segment],
    first: usize,
) {
    let d = heads.d;
    let mut row = 0;
    for s in segments {
        for i in 0..s.len {
            let token = &qkv[(row + i) * heads.row() + first * d..][..heads.kv * d];
            for (head, part) in token.chunks_exact(d).enumerate() {
                let at = heads.at(s.slot, head, s.pos + i);
                E::store(part, &mut cache[at..at + d]);
            }
        }
        row += s.len;
    }
}

/// Every new token's every head: `[n_tokens, h·d]`. One parallel task per (segment, query
/// head) runs each of the segment's new tokens over its window of that head's cached rows.
fn attend_all<E: Stored>(
    qkv: &[f32],
    keys: &[E],
    values: &[E],
    heads: &Heads,
    segments: &[Segment],
) -> Vec<f32> {
    let (h, d) = (heads.h, heads.d);
    let (c, group) = (h * d, h / heads.kv);
    let first_row: Vec<usize> = segments
        .iter()
        .scan(0, |row, s| {
            *row += s.len;
            Some(*row - s.len)
        })
        .collect();
    let scale = (d as f32).sqrt().recip();
    let tasks: Vec<(usize, usize)> = (0..segments.len())
        .flat_map(|s| (0..h).map(move |head| (s, head)))
        .collect();
    let outs: Vec<Vec<f32>> = tasks
        .par_iter()
        .map_init(Vec::new, |scores, &(s, head)| {
            let seg = &segments[s];
            let from = heads.at(seg.slot, head / group, 0);
            let to = from + (seg.pos + seg.len) * d;
            let (k, v) = (&keys[from..to], &values[from..to]); // [pos + len, d]
            let mut out = vec![0f32; seg.len * d]; // [len, d]
            for (i, o) in out.chunks_exact_mut(d).enumerate() {
                let q = &qkv[(first_row[s] + i) * heads.row() + head * d..][..d];
                let at = seg.pos + i; // causal: positions up to `at`, the window's last ones
                let first = heads.window.map_or(0, |w| (at + 1).saturating_sub(w)) * d;
                let seen = (at + 1) * d;
                attend(q, &k[first..seen], &v[first..seen], scale, scores, o);
            }
            out
        })
        .collect();
    let n_tokens: usize = segments.iter().map(|s| s.len).sum();
    let mut y = vec![0f32; n_tokens * c];
    for (&(s, head), out) in tasks.iter().zip(&outs) {
        for (i, o) in out.chunks_exact(d).enumerate() {
            y[(first_row[s] + i) * c + head * d..][..d].copy_from_slice(o);
        }
    }
    y
}

/// A tensor whose storage is exactly its elements, in order.
fn contiguous(t: FlexTensor) -> FlexTensor {
    let exact = t.layout().num_elements() * std::mem::size_of::<f32>() == t.bytes().len();
    match t.is_contiguous() && t.layout().start_offset() == 0 && exact {
        true => t,
        false => t.to_contiguous(),
    }
}

fn rows(logits: &FlexTensor) -> (usize, usize) {
    let dims = logits.layout().shape().as_slice();
    assert_eq!(
        dims.len(),
        2,
        "expected a matrix [rows, columns], got {dims:?}"
    );
    (dims[0], dims[1])
}

/// The targets as i64, checked against the vocabulary (negative means ignored).
fn target_ids(targets: &FlexTensor, n: usize, vocab: usize) -> Vec<i64> {
    let ids: Vec<i64> = targets
        .clone()
        .into_data()
        .convert::<i64>()
        .to_vec()
        .unwrap();
    assert_eq!(
        ids.len(),
        n,
        "cross-entropy: {} targets for {n} rows",
        ids.len()
    );
    if let Some(bad) = ids.iter().find(|&&t| t >= vocab as i64) {
        panic!("cross-entropy: target {bad} is outside the vocabulary of {vocab}");
    }
    ids
}

fn vector(v: Vec<f32>) -> FlexTensor {
    let n = v.len();
    FlexTensor::from_data(TensorData::new(v, [n]))
}
