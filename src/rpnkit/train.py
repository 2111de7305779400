"""The training loop: optimizer and schedule, mixed precision, progress, CSV log, checkpoints,
and a loud stop on a diverging loss."""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm import tqdm

from .checkpoint import save_checkpoint
from .data import collate


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``milestones`` are fractions of ``steps`` for the step schedule."""

    steps: int = 1000
    batch_size: int = 8
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[float, ...] = (0.67, 0.89)
    gamma: float = 0.1
    grad_clip: float | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    seed: int = 0
    num_workers: int = 0
    log_every: int = 10


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # no weight decay on norms and biases
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {config.optimizer!r}")


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rate at ``step``: linear warm-up, then the schedule."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0
    progress = step / max(1, config.steps)
    if config.schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if config.schedule == "step":
        return warm * config.gamma ** sum(progress >= m for m in config.milestones)
    return warm


def _batches(dataset: Dataset, config: TrainConfig) -> Iterator:
    """Endless shuffled batches; reproducible from the seed."""
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=RandomSampler(dataset, generator=generator),
        collate_fn=collate,
        num_workers=config.num_workers,
        drop_last=len(dataset) >= config.batch_size,
        persistent_workers=config.num_workers > 0,
    )
    while True:
        yield from loader


def train(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig,
    *,
    out_dir: str | Path,
    model_config: dict,
    device: torch.device | str = "cpu",
    progress: bool = True,
    time_budget_s: float | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train ``model`` (a ProposalModel) on ``dataset``; write ``train_log.csv`` and
    ``checkpoint.safetensors`` into ``out_dir``. Stops early, with a checkpoint, after
    ``time_budget_s`` seconds. Returns a summary."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    model.to(device).train()
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    scaler = torch.amp.GradScaler(enabled=config.amp == "fp16")
    device_type = torch.device(device).type

    log_path = out_dir / "train_log.csv"
    fields = ["step", "lr", "loss", "loss_objectness", "loss_rpn_box", "images_per_s"]
    start = time.perf_counter()
    images_seen, step = 0, 0
    bar = tqdm(total=config.steps, desc="training", disable=not progress, dynamic_ncols=True)
    with log_path.open("w", newline="") as log_file:
        writer = csv.DictWriter(log_file, fieldnames=fields)
        writer.writeheader()
        batches = _batches(dataset, config)
        for step in range(config.steps):
            batch = next(batches).to(device)
            with torch.autocast(
                device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                output = model(batch.images, batch.image_sizes, batch.targets)
            losses = {k: v.float() for k, v in output.losses.items()}
            loss = sum(losses.values())
            logged = {k: v.detach() for k, v in losses.items()}
            if not torch.isfinite(loss):  # one sync per step, to stop at the step that diverged
                terms = ", ".join(f"{k}={float(v):.4g}" for k, v in logged.items())
                raise FloatingPointError(
                    f"training diverged at step {step}: loss {float(loss.detach())} ({terms}) "
                    f"on images {batch.image_ids} ({', '.join(batch.file_names)}). Lower the "
                    "learning rate, add warm-up or gradient clipping, or check these boxes."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            images_seen += batch.images.shape[0]
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps - 1:
                elapsed = time.perf_counter() - start
                row = {
                    "step": step,
                    "lr": optimizer.param_groups[0]["lr"],
                    "loss": float(loss.detach()),
                    **{k: float(v) for k, v in logged.items()},
                    "images_per_s": images_seen / elapsed,
                }
                writer.writerow({k: row.get(k, "") for k in fields})
                log_file.flush()
                bar.set_postfix(
                    loss=f"{row['loss']:.3f}",
                    obj=f"{row['loss_objectness']:.3f}",
                    box=f"{row['loss_rpn_box']:.3f}",
                    img_s=f"{row['images_per_s']:.1f}",
                )
                if on_step is not None:
                    on_step(step, row)
            if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                break
    bar.close()
    elapsed = time.perf_counter() - start
    save_checkpoint(
        out_dir / "checkpoint.safetensors",
        model,
        config=model_config,
        optimizer=optimizer,
        scheduler=scheduler,
        step=step + 1,
    )
    return {"steps": step + 1, "seconds": elapsed, "images_per_s": images_seen / elapsed}
