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
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.c_attn = nn.Linear(d, 3 * d)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt2(nn.Module):
    def __init__(self, vocab=50257, n_positions=1024, d=768, n_layer=12, n_head=12):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(n_positions, d)
        self.h = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, eps=1e-5)
        for p in self.parameters():
            nn.init.normal_(p, std=0.02)

    def forward(self, ids):
        t = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(t))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # tied LM head


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
