#!/usr/bin/env bash
# The GPU check of issue 15, shaped for the `device` tool (no Rust and no network on the
# GPU machine, 64 MiB carried, one command of under 10 minutes): see
# ../shared/docs/gpu-checks.md and docs/train.md, "On a GPU".
#
#   bench/gpu_check.sh build NANOGPT_DIR   # here: the stripped CUDA binary and the peer's files
#   bench/gpu_check.sh device              # there; writes to $OUT
#
# `build` puts `xtask` (built with --features cuda; cudarc loads libcuda and NVRTC at run
# time, so no toolkit is needed here) and nanoGPT's model.py, bench.py and configurator.py
# (from a checkout of karpathy/nanoGPT, never committed) under target/gpu/, and prints
# what the working tree plus target/gpu weigh: about 37 MiB of tracked files (the GPT-2
# fixture's three weight files are 19 MiB of it) plus 17 MiB carried, under the 64 MiB the
# tool carries.
#
# The carry is target/gpu/xtask.xz and target/gpu/nanogpt. `device` runs, each under its own timeout so that one slow part cannot eat the rest:
#   1. `xtask backends`: CUDA is found and its matmul is right;
#   2. GPT-2 124M pre-training on CUDA (fp32, 16 × 1024 tokens per step, dropout 0) for up
#      to 300 steps: tokens/s, MFU as nanoGPT's estimate_mfu computes it, peak GPU memory;
#   3. the peer, nanoGPT's bench.py with the same model and batch: fp32 eager (its TF32
#      matmuls on, as bench.py sets them), and its default, bf16 with torch.compile;
#   4. parity: the fixture's loss on a text, CUDA against Flex on the same machine (Flex
#      is checked against transformers by the CI's parity tests).
#
# CubeCL compiles and autotunes every kernel shape the first time it meets it: on a fresh
# machine the first training steps take one to three minutes, the eval another minute;
# its autotune cache (under target/) makes a second call on the same machine faster.
# Results of 2026-12-04 (H200): docs/train.md, "On a GPU".
set -euo pipefail
cd "$(dirname "$0")/.."

build() {
  local nanogpt=${1:?"usage: bench/gpu_check.sh build NANOGPT_DIR (a checkout of karpathy/nanoGPT)"}
  mkdir -p target/gpu/nanogpt
  cargo build --release -p xtask --features cuda
  cp target/release/xtask target/gpu/xtask
  strip target/gpu/xtask
  # About 110 MB stripped (Flex and CUDA in one binary); xz makes it about 17 MB.
  xz -T2 -6 -k -f target/gpu/xtask
  for f in model.py bench.py configurator.py; do cp "$nanogpt/$f" target/gpu/nanogpt/; done
  du -ch target/gpu/xtask.xz target/gpu/nanogpt | tail -1
  echo "working tree (tracked and untracked, not ignored):"
  git ls-files -co --exclude-standard -z | du -ch --files0-from=- | tail -1
  echo "carry: target/gpu/xtask.xz target/gpu/nanogpt"
}

# Samples the GPU's used memory (MiB) into $1 every 200 ms until killed.
sample_memory() {
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$1" 2>/dev/null
}

# The peak of a memory trace above the trace's first sample (MiB).
peak_above_start() {
  python3 -c "import sys; v=[int(l) for l in open(sys.argv[1]) if l.strip().isdigit()]; print(max(v)-v[0] if v else 'unknown')" "$1"
}

# Runs "$@" with the GPU's memory sampled into $OUT/mem-$name.txt; prints the peak.
with_memory() {
  local name=$1
  shift
  sample_memory "$OUT/mem-$name.txt" &
  local sampler=$!
  local rc=0
  "$@" || rc=$?
  kill "$sampler" 2>/dev/null || true
  echo "[$name] exit $rc; peak GPU memory above idle: $(peak_above_start "$OUT/mem-$name.txt") MiB"
}

device() {
  : "${OUT:?set OUT to a folder for the results}"
  local x=target/gpu/xtask work
  work=$(mktemp -d)
  exec > >(tee "$OUT/gpu_check.log") 2>&1
  set +e  # every part runs, whatever the one before did
  # CubeCL autotunes every new shape (seconds each) and logs it: keep it short and quiet.
  export RUST_LOG=warn CUBECL_AUTOTUNE_LEVEL=minimal
  python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
    "$x.xz" "$x"
  chmod +x "$x"
  echo "== 0. the machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__)"

  echo "== 1. backends"
  timeout 40 "$x" backends || echo "backends failed: $?"

  echo "== 2. GPT-2 124M pre-training on CUDA (fp32)"
  cat >"$work/gpt2-gpu.json" <<'EOF'
{
  "model": {"preset": "gpt2", "dropout": 0.0},
  "data": {"inputs": ["assets/data/tinyshakespeare.txt"]},
  "optimizer": {"lr": 6e-4, "weight_decay": 0.1, "grad_clip": 1.0},
  "schedule": {"max_steps": 300, "warmup_steps": 20, "min_lr": 6e-5},
  "run": {"name": "gpt2-gpu", "batch_size": 16, "tokens_per_step": 16384, "seed": 1337,
          "eval_every": 0, "eval_batches": 2, "sample_every": 0, "sample_tokens": 16,
          "checkpoint_every": 1000, "keep_last": 1, "log_every": 1}
}
EOF
  with_memory ours timeout 280 "$x" pretrain --config "$work/gpt2-gpu.json" --out "$work/run" --backend cuda
  python3 - "$work/run/metrics.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steady = [r["tokens_per_s"] for r in rows if r["step"] > 10 and r.get("tokens_per_s")]
# nanoGPT's estimate_mfu: 6N + 12·L·H·Q·T flops per token, N without the position table.
L, H, Q, T, V, C = 12, 12, 64, 1024, 50257, 768
N = V * C + L * (12 * C * C + 13 * C) + 2 * C
flops_per_token = 6 * N + 12 * L * H * Q * T
if steady:
    tps = statistics.median(steady)
    print(f"llm-e2e: {len(rows)} steps, last loss {rows[-1]['loss']:.3f}; median {tps:,.0f} tokens/s over steps 11-{rows[-1]['step']}")
    print(f"llm-e2e MFU: {tps * flops_per_token / 312e12 * 100:.2f}% of A100 bf16 peak (nanoGPT's 312 TFLOPS), "
          f"{tps * flops_per_token / 989e12 * 100:.2f}% of H200 bf16 dense peak (989 TFLOPS), "
          f"{tps * flops_per_token / 67e12 * 100:.1f}% of H200 fp32 non-tensor peak (67 TFLOPS)")
else:
    print("llm-e2e: fewer than 11 steps finished")
EOF

  echo "== 3. the peer: nanoGPT bench.py, GPT-2 124M, batch 16 x 1024, random data"
  local peer=target/gpu/nanogpt
  for run in "float32 False 60" "bfloat16 True 100"; do
    set -- $run
    echo "-- nanoGPT dtype=$1 compile=$2"
    (cd "$peer" && with_memory "nanogpt-$1" timeout "$3" python3 bench.py --real_data=False \
      --batch_size=16 --block_size=1024 --bias=True --dtype="$1" --compile="$2" 2>&1 | grep -v "/20 loss\|/10 loss")
  done
  echo "(bench.py's MFU is against the A100's 312 TFLOPS, as nanoGPT prints it)"
  echo "== 4. parity on the fixture: CUDA against Flex"
  local fixture=crates/model/tests/fixtures/tiny-gpt2 text=assets/data/the-verdict.txt
  for b in flex cuda; do
    timeout 90 "$x" eval --model "$fixture" --file "$text" --json --backend "$b" \
      >"$work/eval-$b.json" || echo "eval on $b failed: $?"
  done
  python3 - "$work" <<'EOF' || echo "parity: no result"
import json, sys
w = sys.argv[1]
flex, cuda = (json.load(open(f"{w}/eval-{b}.json")) for b in ("flex", "cuda"))
diff = abs(flex["loss"] - cuda["loss"])
print(f"eval loss: flex {flex['loss']:.6f}, cuda {cuda['loss']:.6f}, |diff| {diff:.2e}",
      "OK (<= 1e-4)" if diff <= 1e-4 else "DIFFERENT")
EOF

}

case "${1:-}" in
  build) shift; build "$@" ;;
  device) device ;;
  *) echo "usage: bench/gpu_check.sh build NANOGPT_DIR | device" >&2; exit 2 ;;
esac
