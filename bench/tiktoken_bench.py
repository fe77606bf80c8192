#!/usr/bin/env python3
"""Peer benchmark: OpenAI's tiktoken encoding the same text as `cargo bench -p llm-bpe`.

The GPT-2 `Encoding` is built offline from the repo's `assets/gpt2/vocab.json` (tiktoken's own
`gpt2()` would download the same files). Prints one JSON object with MB/s figures, and can
write the ids as little-endian u32 so the Rust side checks they are identical.

    pip install tiktoken
    python3 bench/tiktoken_bench.py assets/data/tinyshakespeare.txt --ids-out /tmp/ids.bin
"""

import argparse
import json
import pathlib
import statistics
import struct
import time

import tiktoken

# tiktoken's r50k_base / gpt2 pattern (tiktoken_ext/openai_public.py).
R50K_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def gpt2_encoding(vocab_path: pathlib.Path) -> tiktoken.Encoding:
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    ranks = {bytes(decoder[c] for c in tok): i for tok, i in vocab.items() if tok != "<|endoftext|>"}
    return tiktoken.Encoding(
        name="gpt2-offline",
        explicit_n_vocab=50257,
        pat_str=R50K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )


def measure(fn, n_bytes: int, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return n_bytes / statistics.median(times) / 1e6


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", type=pathlib.Path)
    ap.add_argument("--vocab", type=pathlib.Path, default=root / "assets/gpt2/vocab.json")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ids-out", type=pathlib.Path)
    args = ap.parse_args()

    enc = gpt2_encoding(args.vocab)
    text = args.corpus.read_text(encoding="utf-8")
    n_bytes = len(text.encode("utf-8"))
    docs = text.split("\n\n")  # the same documents the Rust bench batches

    ids = enc.encode_ordinary(text)
    if args.ids_out:
        args.ids_out.write_bytes(struct.pack(f"<{len(ids)}I", *ids))
    single = measure(lambda: enc.encode_ordinary(text), n_bytes, args.runs)
    batch = measure(lambda: enc.encode_ordinary_batch(docs, num_threads=args.threads), n_bytes, args.runs)
    print(json.dumps({
        "peer": f"tiktoken {tiktoken.__version__}",
        "bytes": n_bytes,
        "tokens": len(ids),
        "single_mb_s": single,
        "batch_mb_s": batch,
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
