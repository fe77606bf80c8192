#!/usr/bin/env python3
"""Peer benchmark: GPT-2 training steps in PyTorch eager, fp32, on the CPU.

The same model as llm-e2e's `Gpt2Config` (tied head, tanh GELU, dropout as configured),
AdamW with betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on 2-D weights and embeddings,
global-norm clipping at 1.0 and a mean next-token cross-entropy, as `llm-train` does.
Prints one JSON object with tokens/s per config and the peak RSS; with --compile, also
the same steps under torch.compile. Run by `cargo bench -p llm-train --bench train`
(`-- --torch-compile` passes --compile).

    pip install torch
    python3 bench/torch_gpt2_train.py --threads 2 --configs gpt2:4x128
"""

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from torch_gpt2_model import Gpt2

# name: (n_layer, n_head, n_embd, n_positions, dropout)
PRESETS = {
    "gpt2": (12, 12, 768, 1024, 0.1),
    "shakespeare-small": (4, 4, 128, 128, 0.1),
}

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--configs", default="gpt2:4x128,shakespeare-small:8x128,shakespeare-small:16x128")
    ap.add_argument("--compile", action="store_true",
                    help="also time the model under torch.compile (inductor), as compiled_*")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for spec in args.configs.split(","):
        results[spec] = time_steps(spec, args.steps, compiled=False)
        if args.compile:
            c = time_steps(spec, args.steps, compiled=True)
            results[spec].update({f"compiled_{k}": v for k, v in c.items()})
    print(json.dumps({
        "peer": f"PyTorch {torch.__version__} eager fp32",
        "threads": torch.get_num_threads(),
        "results": results,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))

def time_steps(spec, steps, compiled):
    """Median step time of `steps` steps after warm-up (three for torch.compile, whose
    first steps compile the forward and backward graphs)."""
    name, shape = spec.split(":")
    b, t = map(int, shape.split("x"))
    n_layer, n_head, d, n_pos, p = PRESETS[name]
    torch.manual_seed(0)
    model = Gpt2(n_layer, n_head, d, n_pos, p).train()
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=6e-4, betas=(0.9, 0.95), eps=1e-8, foreach=True,
    )
    forward = torch.compile(model) if compiled else model
    ids = torch.randint(0, 50257, (b, t + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    warmup = 3 if compiled else 1
    times = []
    for i in range(steps + warmup):
        start = time.perf_counter()
        loss = F.cross_entropy(forward(x).view(-1, 50257), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {
        "tokens_per_s": b * t / statistics.median(times),
        "step_s": statistics.median(times),
        "loss": loss.item(),
    }

if __name__ == "__main__":
    main()
