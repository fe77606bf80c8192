# llm-e2e tasks. `just --list` shows them all. Each is a plain cargo command you can run
# without just.

# Run every test (the README's test command).
test:
    cargo test --workspace

# Format check and clippy with warnings as errors, as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Format the code.
fmt:
    cargo fmt --all

# Pre-train the default small GPT on Shakespeare (configs/shakespeare-small.json, under 10 minutes on 2 cores).
pretrain *ARGS:
    cargo xtask pretrain {{ARGS}}

# FineWeb-Edu's 10B-token sample (build-nanogpt's data) into the HF cache, then shards; FILES=1 fetches one file.
fineweb FILES="":
    cargo xtask download --dataset HuggingFaceFW/fineweb-edu --name sample/10BT {{ if FILES == "" { "" } else { "--max-files " + FILES } }}
    cargo xtask prepare --input hf://datasets/HuggingFaceFW/fineweb-edu/sample/10BT --out data/fineweb-edu-10B --val-fraction 0.001

# Import a run into Weights & Biases (pip install wandb tensorboard).
wandb RUN *ARGS:
    python3 crates/train/scripts/wandb_import.py {{RUN}} {{ARGS}}

# Fine-tune a trained GPT on a task: classify, instruct or dpo (configs/finetune-<task>.json).
finetune TASK *ARGS:
    cargo xtask finetune --task {{TASK}} {{ARGS}}

# The architecture sweep of docs/experiments.md: GPT-2 against each variant, 12 short runs.
sweep NAME="architecture" *ARGS:
    cargo xtask sweep --config configs/sweeps/{{NAME}}.json {{ARGS}}

# Multiple choice (HellaSwag-style acc / acc_norm) of a model on a JSON-lines file.
eval-mc MODEL FILE="assets/eval/mc-sample.jsonl" *ARGS:
    cargo xtask eval-mc --model {{MODEL}} --file {{FILE}} {{ARGS}}

walk_prompt := "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nName the opposite of 'hot'.\n\n### Response:\n"

# The walk of docs/finetune.md: pre-train, then instruct, then DPO, with a generation for the
# same prompt before and after each stage, then spam classification.
walk:
    cargo xtask pretrain
    cargo xtask generate --model runs/shakespeare-small --prompt "{{walk_prompt}}" --max-new-tokens 30
    cargo xtask finetune --task instruct --json
    cargo xtask generate --model runs/instruct --prompt "{{walk_prompt}}" --max-new-tokens 30 --stop-at-eot
    cargo xtask finetune --task dpo --json
    cargo xtask generate --model runs/dpo --prompt "{{walk_prompt}}" --max-new-tokens 30 --stop-at-eot
    cargo xtask finetune --task classify --json

# Benchmarks: tokenizer vs tiktoken, data pipeline, GPT-2 forward and training vs PyTorch
# (pip install tiktoken torch), matmul per CPU backend and small-batch linear layers,
# token sampling, checkpoint checksums, fine-tuning
# steps (SFT, DPO, LoRA) vs PyTorch, decoding and serving vs llama.cpp
# (pip install llama-cpp-python[server] gguf numpy; LLAMA_SERVER=path/to/llama-server).
bench:
    cargo bench -p llm-bpe
    cargo bench -p llm-data
    cargo bench -p llm-model --bench forward
    cargo bench -p llm-model --bench matmul
    cargo bench -p llm-model --bench sampling
    cargo bench -p llm-model --bench checkpoint
    cargo bench -p llm-train --bench train
    cargo bench -p llm-train --bench finetune
    cargo bench -p llm-infer --bench decode
    cargo bench -p llm-infer --bench serve

# What a model attends to (docs/viz.md): attention.json, heatmaps, attention.html, summary.json in viz/.
viz-attention MODEL TEXT *ARGS:
    cargo xtask viz attention --model {{MODEL}} --text "{{TEXT}}" {{ARGS}}

# Training curves of one or several runs on shared axes (PNG and SVG).
viz-run +RUNS:
    cargo xtask viz run {{RUNS}}

# Serve a model over the OpenAI API on 127.0.0.1:8000 (docs/serve.md).
serve MODEL *ARGS:
    cargo xtask serve --model {{MODEL}} {{ARGS}}

# Chat with a model in the terminal.
chat MODEL *ARGS:
    cargo xtask chat --model {{MODEL}} {{ARGS}}

# Everything CI runs.
ci:
    .ci/run
