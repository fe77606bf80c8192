#!/usr/bin/env python3
"""llama.cpp peer for `cargo bench -p llm-infer --bench decode`.

Converts a GPT-2 Hugging Face directory (config.json + model.safetensors, as
`cargo xtask export` writes it) to GGUF, f32 or q8_0, with the `gguf` package, then measures
it through llama-cpp-python's low-level API (llama.cpp's own `llama_decode`, no Python
sampling loop beyond an argmax), with the same prompts as the Rust side:

- ttft_s: a 512-token prompt in one batch, logits of the last token, argmax (median of 3);
- decode_tok_s: batch 1, 128 new tokens after a 32-token prompt (median of 3);
- batch_tok_s: 8 sequences of 32-token prompts decoding 128 tokens each, one
  `llama_decode` of 8 tokens per step (aggregate new tokens / decode time);
- peak_rss_mb: this process's peak RSS (VmHWM) after the batch-1 work, the GGUF
  memory-mapped as llama.cpp does; peak_rss_batch_mb after batch 8.

Prints one JSON object. Needs `pip install llama-cpp-python gguf numpy`.
"""

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time

import numpy as np


def prompt_ids(n, salt, vocab=50257):
    """The bench's deterministic prompt: the same formula as decode.rs."""
    return [((i + salt) * 7919 + 13) % vocab for i in range(n)]


# ---------------------------------------------------------------------------- GGUF
def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{path}: {name} is {info['dtype']}, expected F32"
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[base + a : base + b], dtype=np.float32).reshape(info["shape"])
    return out


def gguf_name(hf):
    """HF GPT-2 key -> llama.cpp's GPT-2 tensor name (convert_hf_to_gguf's mapping)."""
    k = hf.removeprefix("transformer.")
    fixed = {
        "wte.weight": "token_embd.weight",
        "wpe.weight": "position_embd.weight",
        "ln_f.weight": "output_norm.weight",
        "ln_f.bias": "output_norm.bias",
        "lm_head.weight": "output.weight",
    }
    if k in fixed:
        return fixed[k]
    _, layer, rest = k.split(".", 2)
    parts = {
        "ln_1": "attn_norm",
        "attn.c_attn": "attn_qkv",
        "attn.c_proj": "attn_output",
        "ln_2": "ffn_norm",
        "mlp.c_fc": "ffn_up",
        "mlp.c_proj": "ffn_down",
    }
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{parts[module]}.{kind}"


def convert(hf_dir, vocab_dir, quant, out):
    import gguf

    cfg = json.load(open(os.path.join(hf_dir, "config.json")))
    tensors = read_safetensors(os.path.join(hf_dir, "model.safetensors"))
    w = gguf.GGUFWriter(out, "gpt2")
    w.add_context_length(cfg["n_positions"])
    w.add_embedding_length(cfg["n_embd"])
    w.add_feed_forward_length(cfg.get("n_inner") or 4 * cfg["n_embd"])
    w.add_block_count(cfg["n_layer"])
    w.add_head_count(cfg["n_head"])
    w.add_layer_norm_eps(cfg.get("layer_norm_epsilon", 1e-5))
    q8 = quant == "q8_0"
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8 else gguf.LlamaFileType.ALL_F32)
    # The tokenizer: GPT-2's byte-level BPE from vocab.json + merges.txt.
    vocab = json.load(open(os.path.join(vocab_dir, "vocab.json"), encoding="utf-8"))
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    n_vocab = cfg["vocab_size"]
    tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    merges = [
        line
        for line in open(os.path.join(vocab_dir, "merges.txt"), encoding="utf-8").read().splitlines()
        if line and not line.startswith("#version")
    ]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    types = [gguf.TokenType.NORMAL] * n_vocab
    types[50256] = gguf.TokenType.CONTROL
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(50256)
    w.add_eos_token_id(50256)
    for name, t in tensors.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        # Conv1D weights are [in, out]; GGUF wants [out, in] rows.
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            t = t.T
        t = np.ascontiguousarray(t, dtype=np.float32)
        g = gguf_name(name)
        # As convert_hf_to_gguf: 2-D weights quantized, position embeddings and 1-D kept f32.
        if q8 and t.ndim == 2 and g != "position_embd.weight":
            data = gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(g, data, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(g, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------------------- measuring
class Llama:
    """A model and a fresh context per measurement, through llama.cpp's C API."""

    def __init__(self, path, threads):
        import llama_cpp as L

        self.L = L
        self.threads = threads
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        load = getattr(L, "llama_model_load_from_file", None) or L.llama_load_model_from_file
        self.model = load(path.encode(), mp)
        if not self.model:
            raise SystemExit(f"llama.cpp could not load {path}")
        vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(vocab)

    def context(self, n_ctx, n_seq):
        L = self.L
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = 512
        cp.n_ubatch = 512
        cp.n_seq_max = n_seq
        cp.n_threads = self.threads
        cp.n_threads_batch = self.threads
        new = getattr(L, "llama_init_from_model", None) or L.llama_new_context_with_model
        ctx = new(self.model, cp)
        if not ctx:
            raise SystemExit("llama.cpp could not create a context")
        return ctx

    def decode(self, ctx, items):
        """items: (token, pos, seq, want_logits). Returns the argmax of each wanted row."""
        L = self.L
        batch = L.llama_batch_init(len(items), 0, 8)
        try:
            for i, (tok, pos, seq, logits) in enumerate(items):
                batch.token[i] = tok
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = 1 if logits else 0
            batch.n_tokens = len(items)
            rc = L.llama_decode(ctx, batch)
            if rc != 0:
                raise SystemExit(f"llama_decode returned {rc}")
            out = []
            for i, item in enumerate(items):
                if item[3]:
                    ptr = L.llama_get_logits_ith(ctx, i)
                    row = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
                    out.append(int(row.argmax()))
            return out
        finally:
            L.llama_batch_free(batch)

    def prefill(self, ctx, prompts):
        """Every prompt in one batch (chunks of 512 tokens); the next token of each."""
        items = []
        for s, p in enumerate(prompts):
            items += [(t, i, s, i == len(p) - 1) for i, t in enumerate(p)]
        out = []
        for at in range(0, len(items), 512):
            out += self.decode(ctx, items[at : at + 512])
        return out

    def free(self, ctx):
        self.L.llama_free(ctx)


def ttft(llm, prompt_len, n_ctx):
    times = []
    for r in range(3):
        ctx = llm.context(n_ctx, 1)
        start = time.perf_counter()
        llm.prefill(ctx, [prompt_ids(prompt_len, r)])
        times.append(time.perf_counter() - start)
        llm.free(ctx)
    return statistics.median(times)


def decode(llm, batch, prompt_len, new, n_ctx, runs):
    rates = []
    for r in range(runs):
        ctx = llm.context(n_ctx * batch, batch)
        prompts = [prompt_ids(prompt_len, 1000 * r + s) for s in range(batch)]
        nxt = llm.prefill(ctx, prompts)
        start = time.perf_counter()
        for step in range(new):
            items = [(nxt[s], prompt_len + step, s, True) for s in range(batch)]
            nxt = llm.decode(ctx, items)
        rates.append(batch * new / (time.perf_counter() - start))
        llm.free(ctx)
    return statistics.median(rates)


def peak_rss_mb():
    """This process's peak RSS (VmHWM). Not `ru_maxrss`: on Linux it also took the GGUF
    conversion child's 2.5 GB peak (measured), whatever llama.cpp itself used."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf-dir", required=True)
    ap.add_argument("--vocab-dir", required=True, help="a directory with vocab.json and merges.txt")
    ap.add_argument("--quant", choices=["f32", "q8_0"], required=True)
    ap.add_argument("--gguf", required=True, help="where to write the converted model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--decode-prompt-len", type=int, default=32)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--n-ctx", type=int, default=1024, help="context of the batch-1 runs")
    ap.add_argument("--batch-n-ctx", type=int, default=256, help="context per sequence at batch 8")
    ap.add_argument("--convert-only", action="store_true", help="write the GGUF and exit")
    args = ap.parse_args()

    if args.convert_only:
        convert(args.hf_dir, args.vocab_dir, args.quant, args.gguf)
        return
    # Converted in a child process, so that this process's peak RSS is llama.cpp's alone.
    subprocess.run(
        [sys.executable, __file__, "--convert-only", "--hf-dir", args.hf_dir,
         "--vocab-dir", args.vocab_dir, "--quant", args.quant, "--gguf", args.gguf],
        check=True,
    )
    import llama_cpp

    llm = Llama(args.gguf, args.threads)
    n_ctx = args.n_ctx
    result = {
        "peer": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
        "quant": args.quant,
        "gguf_bytes": os.path.getsize(args.gguf),
        "ttft_s": ttft(llm, args.prompt_len, n_ctx),
        "decode_tok_s": decode(llm, 1, args.decode_prompt_len, args.new, n_ctx, 3),
        "peak_rss_mb": peak_rss_mb(),
        "batch_tok_s": decode(llm, args.batch, args.decode_prompt_len, args.new, args.batch_n_ctx, 1),
        "peak_rss_batch_mb": peak_rss_mb(),
        "n_ctx": n_ctx,
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
