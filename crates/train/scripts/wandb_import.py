"""Imports an llm-e2e run into Weights & Biases: every scalar of its TensorBoard event files
(read with TensorBoard's own reader) at its step, and the resolved recipe as the config.

    pip install wandb tensorboard
    python crates/train/scripts/wandb_import.py runs/NAME [--project llm-e2e] [--offline]

Online, the run appears in the project at once. With --offline (or WANDB_MODE=offline) it is
written under ./wandb/offline-run-*/, for `wandb sync` to upload later. wandb 0.31 removed
`wandb sync --sync-tensorboard`, which used to do this. A resumed run's event files are read
in order and a step seen twice keeps its last value, as TensorBoard shows it.
"""

import argparse
import json
import sys
from pathlib import Path


def scalars(run_dir: Path):
    """{step: {tag: value}} from every event file of the run, oldest file first."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_dir.glob("events.out.tfevents.*"))
    if not files:
        sys.exit(f"{run_dir}: no events.out.tfevents.* files (is it an llm-e2e run directory?)")
    steps = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                steps.setdefault(event.step, {})[tag] = event.value
    return steps


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--project", default="llm-e2e")
    p.add_argument("--name", help="the W&B run name (default: the directory's name)")
    p.add_argument("--offline", action="store_true")
    args = p.parse_args()

    import wandb

    config_path = args.run_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    steps = scalars(args.run_dir)
    run = wandb.init(
        project=args.project,
        name=args.name or args.run_dir.resolve().name,
        config=config,
        mode="offline" if args.offline else None,
    )
    for step in sorted(steps):
        run.log(steps[step], step=step)
    run.finish()
    print(f"{sum(len(v) for v in steps.values())} scalars at {len(steps)} steps → {run.dir}")


if __name__ == "__main__":
    main()
