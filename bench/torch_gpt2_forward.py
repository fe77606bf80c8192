#!/usr/bin/env python3
"""Peer benchmark: GPT-2 124M forward pass in PyTorch eager, fp32, on the CPU.

The same model as llm-e2e's `Gpt2Config::gpt2()` (random weights, tied head, tanh GELU),
written directly in PyTorch with `scaled_dot_product_attention`. Prints one JSON object
with tokens/s per shape and the peak RSS. Run by `cargo bench -p llm-model --bench forward`.

    pip install torch
    python3 bench/torch_gpt2_forward.py --threads 2
"""

import argparse
import json
import math
import resource
import statistics
import time

import torch

from torch_gpt2_model import Gpt2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--shapes", default="1x256,4x128")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Gpt2().eval()
    n_params = sum(p.numel() for p in model.parameters())
    results = {}
    with torch.inference_mode():
        for shape in args.shapes.split(","):
            b, t = map(int, shape.split("x"))
            ids = torch.randint(0, 50257, (b, t))
            model(ids)  # warm-up
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                model(ids)
                times.append(time.perf_counter() - start)
            results[shape] = b * t / statistics.median(times)
    print(json.dumps({
        "peer": f"PyTorch {torch.__version__} eager fp32",
        "threads": torch.get_num_threads(),
        "params": n_params,
        "tokens_per_s": results,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
