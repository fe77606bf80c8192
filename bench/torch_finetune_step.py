#!/usr/bin/env python3
"""Peer benchmark: an instruction fine-tuning (SFT) step and a DPO step in PyTorch eager,
fp32, on the CPU, shaped as llm-e2e's (`cargo bench -p llm-train --bench finetune`).

- SFT: forward over `[b, t]`, cross-entropy with -100 targets on the padding after the
  first, backward, AdamW (betas 0.9/0.999, weight decay 0.1 on 2-D weights only).
- DPO: the policy's log-probabilities of the chosen and rejected responses (with autograd)
  and the reference's (no grad), the mean over response tokens, the loss
  -logsigmoid(beta * ((pc - rc) - (pr - rr))), backward, AdamW: four sequences a pair.

Tokens per step are `b * t` for SFT and `2 * b * t` (chosen and rejected) for DPO, as in the
Rust bench. Prints one JSON object with tokens/s and the peak RSS.

    pip install torch
    python3 bench/torch_finetune_step.py --threads 2 --batch 8 --seq 128
"""

import argparse
import copy
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from torch_gpt2_model import Gpt2


def optimizer(model):
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=5e-5, betas=(0.9, 0.999), eps=1e-8, foreach=True,
    )


def response_logprob(model, ids, mask):
    logits = model(ids[:, :-1])
    logp = logits.log_softmax(-1).gather(2, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    m = mask[:, 1:]
    return (logp * m).sum(-1) / m.sum(-1)


def timed(step, steps):
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        step()
        if i > 0:  # the first step is the warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, t = args.batch, args.seq
    # shakespeare-small: 4 layers, 4 heads, width 128, context 128; no dropout.
    model = Gpt2(4, 4, 128, 128, 0.0).train()
    opt = optimizer(model)
    ids = torch.randint(0, 50257, (b, t + 1))
    x, y = ids[:, :-1], ids[:, 1:].clone()
    y[:, t * 3 // 4 + 1:] = -100  # padding after the end token

    def sft():
        loss = F.cross_entropy(model(x).view(-1, 50257), y.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sft_s = timed(sft, args.steps)

    policy = Gpt2(4, 4, 128, 128, 0.0).train()
    reference = copy.deepcopy(policy).eval()
    for q in reference.parameters():
        q.requires_grad_(False)
    opt = optimizer(policy)
    chosen, rejected = torch.randint(0, 50257, (b, t)), torch.randint(0, 50257, (b, t))
    mask = torch.zeros(b, t)
    mask[:, t // 4:] = 1.0

    def dpo():
        with torch.no_grad():
            rc = response_logprob(reference, chosen, mask)
            rr = response_logprob(reference, rejected, mask)
        pc = response_logprob(policy, chosen, mask)
        pr = response_logprob(policy, rejected, mask)
        loss = -F.logsigmoid(0.1 * ((pc - rc) - (pr - rr))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    dpo_s = timed(dpo, args.steps)
    print(json.dumps({
        "peer": f"PyTorch {torch.__version__} eager fp32",
        "threads": torch.get_num_threads(),
        "sft_tokens_per_s": b * t / sft_s,
        "dpo_tokens_per_s": 2 * b * t / dpo_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
