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

# Benchmarks: tokenizer vs tiktoken, data pipeline, GPT-2 forward and training vs PyTorch
# (pip install tiktoken torch), matmul per CPU backend, checkpoint checksums.
bench:
    cargo bench -p llm-bpe
    cargo bench -p llm-data
    cargo bench -p llm-model --bench forward
    cargo bench -p llm-model --bench matmul
    cargo bench -p llm-model --bench checkpoint
    cargo bench -p llm-train --bench train

# Everything CI runs.
ci:
    .ci/run
