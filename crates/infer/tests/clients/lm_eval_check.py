#!/usr/bin/env python3
"""lm-evaluation-harness (`local-completions`) against `llm-serve` on the fixture model,
on a small multiple-choice task defined here (`mc_items.jsonl`, no downloads). Its
accuracy must equal a direct scoring of the same items by `numpy_gpt2` (itself checked
against the fixture's transformers losses), item by item.

    python3 lm_eval_check.py target/debug/llm-serve
"""

import glob
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

from numpy_gpt2 import Gpt2
from server import FIXTURE, MODEL, ROOT, Server

sys.path.insert(0, str(ROOT / "bench"))
from tiktoken_bench import gpt2_encoding  # noqa: E402  (GPT-2's BPE, built offline)

HERE = pathlib.Path(__file__).resolve().parent
TASK = "llm_e2e_mc"
# The fixture's context is 128 tokens; lm-eval asks for one token after the prompt.
MAX_LENGTH = 127


def task_yaml(items):
    return f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {items}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def run_lm_eval(addr, out):
    tasks = pathlib.Path(out) / "tasks"
    tasks.mkdir()
    (tasks / f"{TASK}.yaml").write_text(task_yaml(HERE / "mc_items.jsonl"))
    model_args = ",".join([
        f"model={MODEL}", f"base_url={addr}/v1/completions", "tokenizer_backend=remote",
        "tokenized_requests=True", f"max_length={MAX_LENGTH}", "num_concurrent=4", "max_retries=1",
    ])
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "lm_eval", "run", "--model", "local-completions", "--model_args", model_args,
           "--tasks", TASK, "--include_path", str(tasks), "--output_path", str(pathlib.Path(out) / "results"),
           "--log_samples"]
    subprocess.run(cmd, check=True, env=env, stdout=sys.stderr)
    results = json.load(open(glob.glob(f"{out}/results/**/results_*.json", recursive=True)[0]))
    samples = [json.loads(l) for f in glob.glob(f"{out}/results/**/samples_{TASK}_*.jsonl", recursive=True)
               for l in open(f)]
    return results["results"][TASK]["acc,none"], sorted(samples, key=lambda s: s["doc_id"])


def direct_scores(items):
    """Each choice's log-likelihood as lm-eval defines it: the continuation
    `" " + choice` after the question, tokenized as in its `_encode_pair`."""
    enc = gpt2_encoding(ROOT / "assets/gpt2/vocab.json")
    model = Gpt2(FIXTURE)
    model.check_against_reference(FIXTURE)
    scores, greedy = [], []
    for item in items:
        ctx = enc.encode_ordinary(item["question"])
        row, flags = [], []
        for choice in item["choices"]:
            whole = enc.encode_ordinary(item["question"] + " " + choice)
            lp = model.logprobs(np.array(whole))
            row.append(float(lp[len(ctx) - 1:].sum()))
            best = model.logits(np.array(whole))[len(ctx) - 1:-1].argmax(-1)
            flags.append(bool((best == np.array(whole[len(ctx):])).all()))
        scores.append(row)
        greedy.append(flags)
    return scores, greedy


def main():
    binary = sys.argv[1]
    items = [json.loads(l) for l in open(HERE / "mc_items.jsonl")]
    with Server(binary, FIXTURE, "--parallel", "4") as server, tempfile.TemporaryDirectory() as out:
        acc, samples = run_lm_eval(server.addr, out)
    scores, greedy = direct_scores(items)
    direct = [int(np.argmax(row)) for row in scores]
    direct_acc = float(np.mean([d == item["answer"] for d, item in zip(direct, items)]))
    assert len(samples) == len(items), len(samples)
    worst = 0.0
    for s, row, flags in zip(samples, scores, greedy):
        served = [float(r[0][0]) for r in s["resps"]]
        assert [r[0][1] == "True" for r in s["resps"]] == flags, (s["doc_id"], s["resps"], flags)
        worst = max(worst, max(abs(a - b) for a, b in zip(served, row)))
        assert int(np.argmax(served)) == int(np.argmax(row)), (s["doc_id"], served, row)
    assert worst < 1e-3, worst
    assert acc == direct_acc, (acc, direct_acc)
    print(f"lm-eval local-completions accuracy {acc:.4f} = direct numpy scoring {direct_acc:.4f} "
          f"over {len(items)} items, the same greedy flags (largest log-likelihood difference {worst:.2e})")


if __name__ == "__main__":
    main()
