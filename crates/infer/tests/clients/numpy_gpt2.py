"""An independent GPT-2 forward pass in numpy (float64), to score text directly:
the oracle the server's log-likelihoods are compared with. It is checked against
the fixture's transformers reference losses before use (`check_against_reference`)."""

import gzip
import json
import struct

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{path}: {name} is {info['dtype']}"
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(info["shape"]).astype(np.float64)
    return out


class Gpt2:
    def __init__(self, model_dir):
        self.cfg = json.loads((model_dir / "config.json").read_text())
        self.w = load_safetensors(model_dir / "model.safetensors")

    def _ln(self, x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        eps = self.cfg["layer_norm_epsilon"]
        return (x - mu) / np.sqrt(var + eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def logits(self, ids):
        """`[t, vocab]` logits for token ids `[t]` (HF's Conv1D weights are `[in, out]`)."""
        w, h = self.w, self.cfg["n_head"]
        t = len(ids)
        x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][:t]
        mask = np.triu(np.full((t, t), -np.inf), 1)
        for i in range(self.cfg["n_layer"]):
            p = f"transformer.h.{i}."
            qkv = self._ln(x, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
            q, k, v = (a.reshape(t, h, -1).transpose(1, 0, 2) for a in np.split(qkv, 3, axis=-1))
            att = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1]) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            a = (att @ v).transpose(1, 0, 2).reshape(t, -1)
            x = x + a @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
            m = self._ln(x, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"]
            m = 0.5 * m * (1 + np.tanh(np.sqrt(2 / np.pi) * (m + 0.044715 * m**3)))  # gelu_new
            x = x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
        return self._ln(x, "transformer.ln_f") @ w["transformer.wte.weight"].T

    def logprobs(self, ids):
        """Log-probability of each token after the first, given the ones before."""
        l = self.logits(ids)[:-1]
        m = l.max(-1, keepdims=True)
        lse = (m + np.log(np.exp(l - m).sum(-1, keepdims=True)))[:, 0]
        return l[np.arange(len(ids) - 1), ids[1:]] - lse

    def check_against_reference(self, model_dir):
        """Mean NLL of every reference sequence equals transformers' loss (1e-5 relative)."""
        ref = json.load(gzip.open(model_dir / "reference.json.gz"))
        for s in ref["sequences"]:
            if s["loss"] is None:
                continue
            nll = -self.logprobs(np.array(s["input_ids"])).mean()
            assert abs(nll - s["loss"]) <= 1e-5 * s["loss"], (s["name"], nll, s["loss"])
