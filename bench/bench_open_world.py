"""Proposals for classes never seen in training, on the novel-class protocol of OLN: the vanilla
RPN, OLN's localization-quality objectness, OLN's full model and the Cascade RPN.

Modes (``MODES``, a name -> model mapping; ``--modes`` picks them):
    classification  the vanilla RPN (``--preset``'s, objectness learnt as classification)
    localization    OLN's RPN (``RPNConfig.objectness_mode="localization"``)
    oln-rcnn        OLN's full model (preset ``effnet-lite0-fpn-oln-rcnn``, a class-agnostic
                    Faster R-CNN with the IoU head): its final boxes are scored as proposals
    cascade         the Cascade RPN (preset ``effnet-lite0-fpn-cascade``)

Training: COCO128's train2017 images (COCO JSON) with the boxes of the seen classes only (the
20 VOC classes by default); every other object is unlabelled, absent from the GT, so it can
never become a positive. Every mode is class-agnostic. Test: COCO128's val2017 images (YOLO
labels), through the library's ``Predictor.evaluate_novel_classes``: AR@10/100/1000 on the
boxes of the other classes, proposals on seen-class objects (IoU >= 0.5) removed before the
budget, and the standard all-class AR@100/1000; every mode keeps ``--top`` boxes per image
(1500, OLN's ``max_per_img``). Each mode is trained with every seed; the script reports the
mean and the spread (sample standard deviation, min and max) over seeds, and each mode's cost:
training and inference images/s, and the proposal stage's ms per image on the device (the
first stage for the RPNs; the whole detector for oln-rcnn, whose proposals are its final
boxes; its first stage alone is reported too), timed on one batch after warm-up.

    # the CPU setting (2 cores, ~40 min): 2 modes x 3 seeds
    PYTHONPATH=src python bench/bench_open_world.py --out open_world.json
    # all four, on a GPU
    PYTHONPATH=src python bench/bench_open_world.py \\
        --modes classification,localization,oln-rcnn,cascade --steps 2000 --batch-size 8 \\
        --short-side 640 --max-size 1066 --seeds 0,1,2 --workers 8 --out open_world.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rpnkit.config import config_to_dict
from rpnkit.data import DetectionDataset, collate, eval_transforms, read_dataset, train_transforms
from rpnkit.engine.checkpoint import DETECTOR, RPN
from rpnkit.engine.fit import model_spec
from rpnkit.engine.runtime import Predictor
from rpnkit.engine.trainer import TrainConfig, train
from rpnkit.evaluation.open_world import keep_classes, seen_class_names
from rpnkit.modeling.presets import PRESETS, ModelConfig, preset_config, with_objectness_mode

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REPORTED = (
    "novel_AR@10", "novel_AR@100", "novel_AR@1000", "all_AR@100", "all_AR@1000",
    "train_images_per_s", "infer_images_per_s", "proposal_ms_per_image",
)  # fmt: skip


def _vanilla(args) -> tuple[str, ModelConfig]:
    return RPN, with_objectness_mode(preset_config(args.preset), "classification")


def _oln_rpn(args) -> tuple[str, ModelConfig]:
    config = with_objectness_mode(preset_config(args.preset), "localization")
    rpn = config.rpn
    localization = dataclasses.replace(rpn.localization, initial_score=args.initial_score)
    return RPN, dataclasses.replace(config, rpn=dataclasses.replace(rpn, localization=localization))


def _named_preset(name: str, mode: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(
            f"mode {mode!r} needs the preset {name!r}, which this rpnkit does not have (yet); "
            f"presets: {', '.join(sorted(PRESETS))}"
        )
    return preset_config(name)


def _oln_rcnn(args) -> tuple[str, ModelConfig]:
    return DETECTOR, _named_preset(f"{args.preset}-oln-rcnn", "oln-rcnn")


def _cascade(args) -> tuple[str, ModelConfig]:
    return RPN, _named_preset(f"{args.preset}-cascade", "cascade")


# mode -> its model: (kind, config) from the arguments; the class names are the training set's
MODES: dict[str, Callable[[argparse.Namespace], tuple[str, ModelConfig]]] = {
    "classification": _vanilla,
    "localization": _oln_rpn,
    "oln-rcnn": _oln_rcnn,
    "cascade": _cascade,
}


def datasets(args, seen: tuple[str, ...] | None):
    """COCO128's train2017 (COCO JSON) with the ``seen`` classes' boxes only (None: every
    class, the standard protocol) and its val2017 (YOLO labels)."""
    root = Path(args.data_root) / "coco128"
    train_index = read_dataset(root, split="train2017")
    if seen is not None:
        train_index = keep_classes(train_index, seen)
    val_index = read_dataset(root, split="val")  # YOLO labels, 80 names from data.yaml
    boxes = sum(len(r.boxes) for r in train_index.records)
    print(f"train: {len(train_index.records)} images, {boxes} seen-class boxes", flush=True)
    return train_index, val_index


@torch.no_grad()
def proposal_stage_ms(network, dataset, *, device, batch_size, repeats: int = 10) -> dict:
    """ms per image of the proposal stage on ``device``: one batch of ``dataset``, 3 warm-up
    passes, then ``repeats`` timed ones (synchronised). A detector's whole forward (its final
    boxes are its proposals) and its first stage alone."""
    batch = collate([dataset[i] for i in range(min(batch_size, len(dataset)))]).to(device)
    n = len(batch.image_ids)
    stages = {"proposal_ms_per_image": network}
    if hasattr(network, "first_stage"):
        stages["first_stage_ms_per_image"] = network.first_stage
    out = {}
    for name, module in stages.items():
        for _ in range(3):
            module(batch.images, batch.image_sizes, image_scales=batch.image_scales)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            module(batch.images, batch.image_sizes, image_scales=batch.image_scales)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out[name] = round(1000 * (time.perf_counter() - start) / (repeats * n), 3)
    return out


def measure(predictor: Predictor, val_set, seen, *, top, batch_size) -> dict:
    """One pass over the validation images (``Predictor.evaluate_novel_classes``): novel-class
    AR and the standard all-class AR, and the pass's images/s."""
    start = time.perf_counter()
    if seen is None:  # the standard protocol: every class seen, all-class AR only
        report = predictor.evaluate_proposals(val_set, top=top, batch_size=batch_size)
        out = {f"all_{k}": v for k, v in report.metrics.items() if k.startswith("AR@")}
    else:
        report = predictor.evaluate_novel_classes(val_set, seen, top=top, batch_size=batch_size)
        out = {f"novel_{k}": v for k, v in report.novel.items() if k.startswith(("AR", "recall"))}
        out.update({f"all_{k}": v for k, v in report.all.metrics.items() if k.startswith("AR@")})
        out["num_novel_boxes"] = int(report.novel["num_novel"])
    seconds = time.perf_counter() - start
    out["eval_seconds"] = round(seconds, 1)
    out["infer_images_per_s"] = round(len(val_set) / seconds, 2)
    return out


def spread(values: list[float]) -> dict:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": sd, "min": min(values), "max": max(values)}


def run_one(args, mode, seed, train_index, val_set, seen) -> dict:
    kind, model_config = MODES[mode](args)
    spec = model_spec(kind, model_config, train_index.class_names)
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, optimizer="sgd", lr=args.lr,
        warmup_steps=min(100, args.steps // 5), schedule="cosine", grad_clip=10.0,
        seed=seed, num_workers=args.workers, log_every=max(1, args.steps // 10),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = spec.build()
    train_set = DetectionDataset(
        train_index, train_transforms(args.short_side, args.max_size), seed=seed
    )
    start = time.perf_counter()
    summary = train(
        model, train_set, config, out_dir=Path(args.runs_dir) / f"{mode}-seed{seed}",
        spec=spec, device=args.device, progress=False,
    )  # fmt: skip
    result = {"train_seconds": round(time.perf_counter() - start, 1)}
    result["train_images_per_s"] = round(summary.images_per_s, 2)
    predictor = Predictor(model, spec, device=args.device, num_workers=args.workers)
    result.update(measure(predictor, val_set, seen, top=args.top, batch_size=args.eval_batch_size))
    result.update(
        proposal_stage_ms(
            predictor.network, val_set, device=predictor.device, batch_size=args.eval_batch_size
        )
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        default="effnet-lite0-fpn",
        help="base preset: the RPN modes' model; oln-rcnn and cascade use <preset>-oln-rcnn and "
        "<preset>-cascade",
    )
    parser.add_argument(
        "--modes", default="classification,localization", help=f"of {', '.join(MODES)}"
    )
    parser.add_argument(
        "--top", type=int, default=1500, help="boxes per image of every mode (OLN's 1500)"
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--short-side", type=int, default=384)
    parser.add_argument("--max-size", type=int, default=640)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--initial-score", type=float, default=0.5, help="localization: every anchor's first score"
    )
    parser.add_argument(
        "--seen", default="voc", help="seen class names, 'voc', or 'all' (the standard protocol)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--runs-dir", default="runs/open_world")
    parser.add_argument(
        "--deadline-s", type=float, default=float("inf"), help="start no run after this many s"
    )
    parser.add_argument("--data-root", default=str(DATA), help="folder holding coco128/")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    seen = None if args.seen == "all" else seen_class_names(args.seen)
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; modes: {', '.join(MODES)}")
    try:  # a missing preset fails here, before any training
        for mode in modes:
            MODES[mode](args)
    except ValueError as err:
        parser.error(str(err))
    train_index, val_index = datasets(args, seen)
    val_set = DetectionDataset(val_index, eval_transforms(args.short_side, args.max_size))
    results = {
        "preset": args.preset, "steps": args.steps, "batch_size": args.batch_size,
        "lr": args.lr, "short_side": args.short_side, "max_size": args.max_size,
        "top": args.top, "seen": sorted(seen) if seen else "all", "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if "cuda" in args.device else "cpu",
        "localization": config_to_dict(preset_config(args.preset).rpn)["localization"],
        "initial_score": args.initial_score, "runs": {},
    }  # fmt: skip
    started = time.perf_counter()
    for mode in modes:
        runs = results["runs"].setdefault(mode, {})
        for seed in [int(s) for s in args.seeds.split(",")]:
            if time.perf_counter() - started > args.deadline_s:  # a run cut short says so
                results.setdefault("skipped", []).append(f"{mode} seed {seed}: deadline")
                print(f"{mode} seed {seed}: skipped, past --deadline-s", flush=True)
                continue
            runs[seed] = run_one(args, mode, seed, train_index, val_set, seen)
            print(mode, seed, json.dumps(runs[seed]), flush=True)
            if args.out:  # partial results survive an interrupted run
                Path(args.out).write_text(json.dumps(results, indent=1))
    results["summary"] = {  # a detector also has its first stage's time
        mode: {
            k: spread([r[k] for r in runs.values()])
            for k in (*REPORTED, "first_stage_ms_per_image")
            if all(k in r for r in runs.values())
        }
        for mode, runs in results["runs"].items()
        if runs
    }
    for mode, summary in results["summary"].items():
        print(mode, "  ".join(f"{k} {v['mean']:.4f}±{v['std']:.4f}" for k, v in summary.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
