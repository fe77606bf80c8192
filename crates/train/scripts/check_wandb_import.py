"""Checks wandb_import.py with the real `wandb` package, offline: imports RUN_DIR into an
offline W&B run, reads the run's history back from its `.wandb` file (a LevelDB-style log
of protobuf records), and compares train/loss and val/loss at every step with the run's
metrics.jsonl (to 1e-6 relative: TensorBoard stores f32).

    python crates/train/scripts/check_wandb_import.py runs/NAME
"""

import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768  # LevelDB log framing: 7-byte chunk headers (crc32, length, type) in 32 KiB blocks


def records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B run file"
    pos, chunk = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = pb.Record()
            record.ParseFromString(chunk)
            yield record
            chunk = b""


def history(run_file: Path):
    steps = {}
    for r in records(run_file):
        if r.WhichOneof("record_type") == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            step = row.get("_step", r.history.step.num)
            steps.setdefault(int(step), {}).update(row)
    return steps


def main():
    run_dir = Path(sys.argv[1]).resolve()
    importer = Path(__file__).with_name("wandb_import.py")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, WANDB_SILENT="true", WANDB_DIR=tmp)
        subprocess.run([sys.executable, str(importer), str(run_dir), "--offline"], cwd=tmp, env=env, check=True)
        run_files = list(Path(tmp).glob("wandb/offline-run-*/run-*.wandb"))
        assert len(run_files) == 1, run_files
        logged = history(run_files[0])
    expected = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    assert expected, "metrics.jsonl is empty"
    checked = 0
    for m in expected:
        row = logged.get(m["step"])
        assert row is not None, f"step {m['step']} is missing from the W&B run"
        for ours, theirs in [("loss", "train/loss"), ("val_loss", "val/loss")]:
            if m.get(ours) is None:
                continue
            got = row[theirs]
            assert abs(got - m[ours]) <= 1e-6 * abs(m[ours]), f"step {m['step']} {theirs}: {got} != {m[ours]}"
            checked += 1
    print(f"W&B offline run matches metrics.jsonl: {checked} values at {len(expected)} steps")


if __name__ == "__main__":
    main()
