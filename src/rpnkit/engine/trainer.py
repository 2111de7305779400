"""The training loop: optimizer and schedule, mixed precision, progress, CSV and TensorBoard
logs, periodic evaluation, atomic checkpoints, exact resume, DistributedDataParallel, and a loud
stop on a diverging loss."""

from __future__ import annotations

import csv
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from ..data import collate
from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``milestones`` are fractions of ``steps`` for the step schedule;
    ``batch_size`` is per process."""

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
    eval_every: int = 0
    checkpoint_every: int = 0
    sync_bn: bool = False


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


class StepBatchSampler(Sampler[list[int]]):
    """Batches of a seeded stream of epochs, each a fresh permutation, cut so that global step
    ``s`` always gets the same images: the stream can restart at any step (exact resume) and is
    sharded over ``world`` processes. Indices are encoded ``epoch * n + i`` so that the dataset
    can seed its augmentation by epoch in any worker process."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if n == 0:
            raise ValueError("the training set is empty: no usable images were found")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.rank, self.world = start_step, rank, world

    def _epoch(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return [epoch * self.n + int(i) for i in torch.randperm(self.n, generator=g)]

    def __iter__(self) -> Iterator[list[int]]:
        global_batch = self.batch_size * self.world
        position = self.start_step * global_batch + self.rank * self.batch_size
        epoch, offset = divmod(position, self.n)
        stream = self._epoch(epoch)[offset:]
        while True:
            while len(stream) < global_batch:
                epoch += 1
                stream += self._epoch(epoch)
            yield stream[: self.batch_size]
            stream = stream[global_batch:]

    def __len__(self) -> int:  # endless: a large number for DataLoader's bookkeeping
        return 2**31


class _EpochIndexed(Dataset):
    """Decodes ``epoch * n + i`` and tells the dataset the epoch before fetching item i."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int):
        epoch, i = divmod(key, len(self.dataset))
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[i]


def distributed_context() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


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
    resume: str | Path | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    on_step: Callable[[int, dict], None] | None = None,
) -> dict:
    """Train ``model`` (a ProposalModel) on ``dataset``; write ``train_log.csv``, TensorBoard
    events and ``checkpoint.safetensors`` into ``out_dir`` (rank 0 only under torchrun).

    ``resume`` continues from a checkpoint exactly: same weights, optimizer and scheduler
    state, RNG state and position in the data. ``evaluate`` is called every ``eval_every``
    steps (rank 0). Returns a summary."""
    out_dir = Path(out_dir)
    rank, world, local_rank = distributed_context()
    if world > 1 and torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    main_process = rank == 0
    if main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed + rank)
    model.to(device).train()
    if world > 1 and config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, config))
    start_step, state = 0, None
    if resume is not None:
        state = load_checkpoint(resume)
        model.load_state_dict(state["model"])
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
        if state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        start_step = int(state["step"])
    net = model
    if world > 1:
        ids = [device.index] if torch.device(device).type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    scaler = torch.amp.GradScaler(enabled=config.amp == "fp16")
    device_type = torch.device(device).type

    loader = DataLoader(
        _EpochIndexed(dataset),
        batch_sampler=StepBatchSampler(
            len(dataset),
            config.batch_size,
            seed=config.seed,
            start_step=start_step,
            rank=rank,
            world=world,
        ),
        collate_fn=collate,
        num_workers=config.num_workers,
        pin_memory=device_type == "cuda",
        persistent_workers=config.num_workers > 0,
    )
    writer = _tensorboard(out_dir) if main_process else None
    # the loss terms are whatever the model returns: the RPN's two, a detector's four
    fields = ["step", "lr", "loss", *sorted(_loss_names(model)), "grad_norm", "images_per_s"]
    log_path = out_dir / "train_log.csv"
    log_file = None
    if main_process:
        new_log = resume is None or not log_path.exists()
        log_file = log_path.open("w" if new_log else "a", newline="")
        csv_writer = csv.DictWriter(log_file, fieldnames=fields, extrasaction="ignore")
        if new_log:
            csv_writer.writeheader()

    def checkpoint(step_done: int, name: str = "checkpoint.safetensors") -> None:
        if main_process:
            save_checkpoint(
                out_dir / name,
                model,
                config=model_config,
                optimizer=optimizer,
                scheduler=scheduler,
                step=step_done,
            )

    start = time.perf_counter()
    images_seen, step = 0, start_step
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        desc="training",
        disable=not (progress and main_process),
        dynamic_ncols=True,
    )
    batches = iter(loader)  # draws from the global RNG: restore the saved state after it
    if state is not None:
        set_rng_state(*state["rng"])
    evaluation: dict[str, float] = {}
    try:
        for step in range(start_step, config.steps):
            batch = next(batches)
            if batch is None:  # every image of the batch was unreadable (already reported)
                continue
            batch = batch.to(device)
            with torch.autocast(
                device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                extra = {} if batch.proposals is None else {"proposals": batch.proposals}
                output = net(
                    batch.images,
                    batch.image_sizes,
                    batch.targets,
                    image_scales=batch.image_scales,
                    **extra,
                )
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
            grad_norm = None  # the norm before clipping, logged: a collapse shows here first
            if config.grad_clip:
                scaler.unscale_(optimizer)
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            images_seen += batch.images.shape[0] * world
            bar.update(1)
            done = step + 1
            if main_process and (step % config.log_every == 0 or done == config.steps):
                elapsed = time.perf_counter() - start
                row = {
                    "step": step,
                    "lr": optimizer.param_groups[0]["lr"],
                    "loss": float(loss.detach()),
                    **{k: float(v) for k, v in logged.items()},
                    "grad_norm": "" if grad_norm is None else float(grad_norm),
                    "images_per_s": images_seen / elapsed,
                }
                csv_writer.writerow(row)
                log_file.flush()
                if writer is not None:
                    for key, value in row.items():
                        if key != "step" and value != "":
                            writer.add_scalar(f"train/{key}", value, step)
                bar.set_postfix(
                    loss=f"{row['loss']:.3f}",
                    img_s=f"{row['images_per_s']:.1f}",
                    **{k.removeprefix("loss_")[:3]: f"{v:.3f}" for k, v in logged.items()},
                )
                if on_step is not None:
                    on_step(step, row)
            if config.checkpoint_every and done % config.checkpoint_every == 0:
                checkpoint(done)
            due = config.eval_every and done % config.eval_every == 0
            if evaluate is not None and due and main_process:
                evaluation = evaluate(model)
                model.train()
                shown = ", ".join(f"{k} {v:.3f}" for k, v in evaluation.items() if k in EVAL_SHOWN)
                bar.write(f"step {done}: {shown}")
                if writer is not None:
                    for key, value in evaluation.items():
                        if isinstance(value, (int, float)):  # not the per-class tables
                            writer.add_scalar(f"eval/{key}", value, done)
            if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                break
        else:
            step = config.steps - 1
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
        if writer is not None:
            writer.close()
    elapsed = time.perf_counter() - start
    steps_done = step + 1
    checkpoint(steps_done)
    return {
        "steps": steps_done,
        "seconds": elapsed,
        "images_per_s": images_seen / max(elapsed, 1e-9),
        "evaluation": evaluation,
    }


EVAL_SHOWN = ("AR@100", "AR@1000", "recall@100@0.5", "AP", "AP50")


def _loss_names(model: nn.Module) -> list[str]:
    """The loss terms a ProposalModel or a FasterRCNN returns."""
    names = ["loss_objectness", "loss_rpn_box"]
    if hasattr(model, "roi_heads"):
        names += ["loss_classifier", "loss_box_reg"]
    return names


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the CSV log remains
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))
