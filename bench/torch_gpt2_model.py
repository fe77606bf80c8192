"""GPT-2 in PyTorch for the peer benchmarks: the same architecture as llm-e2e's `Gpt` (tied
LM head, tanh GELU, pre-LayerNorm, dropout `p`), written directly with
`scaled_dot_product_attention`, random weights N(0, 0.02). Imported by
`torch_gpt2_forward.py` and `torch_gpt2_train.py`."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, n_head, p):
        super().__init__()
        self.n_head, self.p = n_head, p
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.c_attn = nn.Linear(d, 3 * d)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.attn_proj(y.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")))

class Gpt2(nn.Module):
    def __init__(self, n_layer=12, n_head=12, d=768, n_positions=1024, p=0.0, vocab=50257):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(n_positions, d)
        self.drop = nn.Dropout(p)
        self.h = nn.ModuleList(Block(d, n_head, p) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, eps=1e-5)
        for p_ in self.parameters():
            nn.init.normal_(p_, std=0.02)

    def forward(self, ids):
        t = ids.shape[1]
        x = self.drop(self.wte(ids) + self.wpe(torch.arange(t)))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # tied LM head
