"""What bf16 inference costs a trained detector: mAP in float32 against bf16 autocast, with the
backbone's batch norms folded or not (as ``rpnkit eval --amp bf16`` runs it).

    rpnkit demo --out runs/demo
    PYTHONPATH=src python bench/amp_accuracy.py --checkpoint runs/demo/checkpoint.safetensors

Without ``--data`` it evaluates on the demo's held-out synthetic images.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import rpnkit
from rpnkit.data import DataConfig, SyntheticShapes
from rpnkit.engine.device import resolve_device


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a Faster R-CNN checkpoint")
    parser.add_argument("--data", default=None, help="a dataset (default: the demo's images)")
    parser.add_argument("--split", default="val", help="the dataset's split")
    parser.add_argument("--num-val", type=int, default=200, help="synthetic images")
    parser.add_argument("--short-side", type=int, default=800)
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.data:
        data = DataConfig(args.data, split=args.split, short_side=args.short_side,
                          max_size=args.max_size)  # fmt: skip
        dataset = data.eval_dataset(data.read_train())
    else:
        dataset = SyntheticShapes(args.num_val, seed=1_000_003)  # the demo's held-out seed
    rows = {}
    for fold in (False, True):
        model = rpnkit.load(args.checkpoint, device, fold_bn=fold)
        for amp in ("none", "bf16"):
            m = model.evaluate_detections(dataset, batch_size=16, amp=amp).metrics
            name = f"{'folded' if fold else 'unfolded'} {amp}"
            rows[name] = {k: round(m[k], 4) for k in ("AP", "AP50", "AP75", "VOC07_mAP50")}
            print(f"{name:16s}", json.dumps(rows[name]), flush=True)
    print(json.dumps({"device": str(device), "torch": torch.__version__, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
