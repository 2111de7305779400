"""The training loop: optimizer and schedule, mixed precision, progress, CSV and TensorBoard
logs, periodic evaluation, atomic checkpoints, exact resume, DistributedDataParallel, and a loud
stop on a diverging loss.

``Trainer.run`` is the loop; each of its parts is a method named after what it does (set-up,
resume, the data stream, one step, logging, checkpoints, evaluation).
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..config import MAX_SEED, check_choices, check_compile, check_ranges, plain_fields
from ..data import Batch, EmptyBatch, collate
from ..evaluation.detection import NO_GT, format_metric
from .checkpoint import (
    ModelSpec,
    RunState,
    check_resumable,
    check_run_state,
    load_checkpoint,
    load_weights,
    read_run_state,
    remove_stale_temporaries,
    resumed_in_place,
    save_checkpoint,
    set_rng_state,
    upgraded_settings,
)
from .device import (
    AMP_DTYPES,
    check_amp,
    check_backend,
    compile_backend,
    decodes_on_device,
    memory_layout_for,
)
from .distributed import ddp_buffer_options, distributed_context
from .divergence import EXPLODED_LOSS, DivergenceWatch
from .run_log import RunLog
from .sampling import EpochIndexed, StepBatchSampler
from .streaming import DevicePrefetcher

EVAL_SHOWN = ("AR@100", "AR@1000", "recall@100@0.5", "AP", "AP50")
BEST_FILE = "best.safetensors"
BEST_BY = ("AP", "AR@1000", "AR@100")  # the first an evaluation has: a detector's COCO AP,
# an RPN's AR@1000 (the proposal benchmarks' measure), AR@100 where 1000 are not kept


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``milestones`` are fractions of ``steps`` for the step schedule;
    ``batch_size`` is per process."""

    steps: int = 2000
    batch_size: int = 4
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: tuple[float, ...] = (0.67, 0.89)
    gamma: float = 0.1
    grad_clip: float | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    seed: int = 0
    # none by default: a script calling fit without an ``if __name__ == "__main__"`` guard
    # cannot start worker processes where they are spawned (macOS, Windows); the CLI uses 2
    num_workers: int = 0
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 500
    sync_bn: bool = False
    # torch.compile the training step's forward (and so its backward): True for inductor, or
    # a backend's name
    compile: bool | str = False
    # the convolutions in NHWC (True) or NCHW (False); None: by device, NHWC on the CPU, NCHW
    # on CUDA, where NHWC steps are faster but cost seconds of cuDNN set-up per new batch size
    # (engine.device.memory_layout_for)
    channels_last: bool | None = None
    # batches of wide or of tall images only (StepBatchSampler): less padding, fewer sizes
    group_by_aspect: bool = True
    # JPEGs decoded, resized, flipped and padded on the training device, a batch at a time
    # (data.device_images; nvJPEG on CUDA), the workers only reading files and planning boxes;
    # None: on CUDA (faster there: 1.15-2x with 2 workers, the same with 12), not on the CPU
    decode_on_device: bool | None = None

    def __post_init__(self) -> None:
        plain_fields(self)  # paths and numpy numbers given: strings and Python numbers
        counts = ("steps", "batch_size", "log_every")
        check_ranges(self, counts, low=1, integer=True)
        counts = ("warmup_steps", "num_workers", "eval_every", "checkpoint_every")
        check_ranges(self, counts, low=0, integer=True)
        check_ranges(self, ("seed",), low=0, high=MAX_SEED, integer=True)
        check_ranges(self, ("lr", "gamma"), low=0, low_open=True)
        check_ranges(self, ("momentum",), low=0, high=1)
        if self.momentum == 1:
            raise ValueError("TrainConfig.momentum must be below 1, got 1")
        check_ranges(self, ("weight_decay",), low=0)
        check_ranges(self, ("grad_clip",), low=0, low_open=True, optional=True)
        milestones = self.milestones
        ok = isinstance(milestones, (tuple, list)) and all(
            isinstance(m, Real) and not isinstance(m, bool) and 0 <= m <= 1 for m in milestones
        )
        if not ok:
            raise ValueError(
                f"TrainConfig.milestones must be fractions of steps in [0, 1], got {milestones!r}"
            )
        object.__setattr__(self, "milestones", tuple(milestones))  # a list given: hashable
        choices = {"optimizer": ("sgd", "adamw"), "schedule": ("cosine", "step", "constant")}
        check_choices(self, {**choices, "amp": ("none", "bf16", "fp16")})
        for name in ("sync_bn", "group_by_aspect", "channels_last", "decode_on_device"):
            value, optional = getattr(self, name), name in ("channels_last", "decode_on_device")
            if not (isinstance(value, bool) or (optional and value is None)):
                rule = "True, False or None" if optional else "True or False"
                raise ValueError(f"TrainConfig.{name} must be {rule}, got {value!r}")
        check_compile("TrainConfig.compile", self.compile)


@dataclass
class TrainSummary:
    """What a run did: steps, wall time, throughput, the last evaluation (with the step it
    was made after: the run's last with validation data; for a resumed run that took no step,
    its checkpoint's as logged then, the figures without the per-class tables) and the best
    one's checkpoint."""

    steps: int
    seconds: float
    images_per_s: float
    evaluation: dict = field(default_factory=dict)
    skipped_images: int = 0  # unreadable images left out (each reported when it happened)
    evaluated_at: int | None = None  # steps done when ``evaluation`` was made
    best: dict | None = None  # {"metric", "value", "step", "file"}: best.safetensors
    resumed_at: int = 0  # the step a resumed run started at (``seconds``: this run's alone)
    evaluation_read_back: bool = False  # ``evaluation``: the checkpoint's, as logged before


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


Evaluate = Callable[[nn.Module], dict]


class Trainer:
    """Trains ``model`` (a ``ProposalModel`` or a ``FasterRCNN``; any module whose forward
    takes a batch and returns ``.losses``) on ``dataset``, writing ``train_log.csv``,
    TensorBoard events and ``checkpoint.safetensors`` (with ``spec`` as its model spec) into
    ``out_dir``; under torchrun only rank 0 writes.

    ``resume`` continues from a checkpoint exactly: same weights, optimizer and scheduler
    state, RNG state and position in the data. ``evaluate`` is called every
    ``config.eval_every`` steps and after the last (rank 0); with ``eval_every``, the weights
    of the best evaluation (``BEST_BY``) are kept in ``best.safetensors`` (weights, spec and
    size, no optimizer state: a model to use, not a run to resume); ``max_loss``: a finite
    loss above it stops the run as diverged (None: only NaN and inf; the default suits
    rpnkit's mean-reduced losses, ``divergence.EXPLODED_LOSS``); ``on_step(steps_done, row)``
    after every logged step;
    ``input_size`` (short side, max size of the resized images) goes into the checkpoints, for
    inference to resize as training did.
    """

    def __init__(
        self,
        model: nn.Module,
        dataset: Dataset,
        config: TrainConfig,
        *,
        out_dir: str | Path,
        spec: ModelSpec | None = None,
        device: torch.device | str = "cpu",
        progress: bool = True,
        time_budget_s: float | None = None,
        resume: str | Path | None = None,
        evaluate: Evaluate | None = None,
        on_step: Callable[[int, dict], None] | None = None,
        input_size: tuple[int, int] | None = None,
        settings: dict | None = None,
        max_loss: float | None = EXPLODED_LOSS,
    ) -> None:
        self.model, self.dataset, self.config = model, dataset, config
        self.input_size = input_size  # (short side, max size) of the images, for checkpoints
        self.settings = settings  # the run's settings, kept in checkpoints (fit: resume checks)
        self.started: float | None = None  # when the run asked for its first batch
        self.seconds_before = 0.0  # of the run this one resumes (_set_up)
        self.saved: tuple[int, Path] | None = None  # the last checkpoint: (step, file)
        self.step_lr = 0.0  # the learning rate of the last step taken
        self.out_dir, self.spec = Path(out_dir), spec
        self.progress, self.time_budget_s = progress, time_budget_s
        self.resume, self.evaluate, self.on_step = resume, evaluate, on_step
        self.context = distributed_context()
        self.device = self.context.device(device)
        check_amp(config.amp, self.device)
        check_backend("TrainConfig.compile (--compile)", config.compile)
        if config.warmup_steps > config.steps and resume is None:
            peak = config.lr * max(lr_factor(step, config) for step in range(config.steps))
            warnings.warn(
                f"the warm-up ({config.warmup_steps} steps) is longer than the run "
                f"({config.steps} steps): the learning rate stays below {config.lr:g} (at most "
                f"{peak:.3g})",
                stacklevel=2,
            )
        self.evaluation: dict = {}
        self.evaluated_at: int | None = None
        self.read_back = False  # ``evaluation``: the checkpoint's, read back from the log
        self.best: dict | None = None  # {"metric", "value", "step"} of best.safetensors
        self.trained = False  # every step done and checkpointed (the final validation left)
        self.watch = DivergenceWatch(max_loss)

    # 1. Set-up: seeds, the model on its device, optimizer and schedule, resume, DDP.
    def _set_up(self) -> dict | None:
        config, context = self.config, self.context
        if context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for name in ("checkpoint.safetensors", BEST_FILE):
                remove_stale_temporaries(self.out_dir / name)
        seed_everything(config.seed + context.rank)
        memory_layout_for(self.model.to(self.device).train(), self.device, config.channels_last)
        if context.world > 1 and config.sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.optimizer = build_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(self._scheduled(s), config)
        )
        state = self._restore() if self.resume is not None else None
        self.start_step = int(state["step"]) if state is not None else 0
        self.saved = (self.start_step, Path(self.resume)) if state is not None else None
        # the seconds the run had trained before it was resumed: a time budget spans both
        self.seconds_before = state["run"].seconds if state else 0.0
        self.best = self._resumed_best(state)
        self.net = self.model
        if context.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, **ddp_buffer_options(self.model)
            )
        if config.compile:  # in place: checkpoints keep the model's own names
            self.net.compile(backend=compile_backend(config.compile))
        self.autocast_dtype = AMP_DTYPES.get(config.amp)  # None: float32, no autocast
        self.scaler = torch.amp.GradScaler(enabled=config.amp == "fp16")
        return state

    def _resumed_best(self, state: dict | None) -> dict | None:
        """The best evaluation so far of a run resumed in its own folder, as best.safetensors
        records it (the resumed checkpoint may predate it): kept when it was made at or
        before the step resumed from, on the same data (the ``data`` part of the settings:
        a resumed run may change its validation data). Otherwise the run keeps its best anew
        and an earlier run's best.safetensors there is removed, as measured on other terms."""
        path = self.out_dir / BEST_FILE
        if state is None or not self.context.is_main or not self.config.eval_every:
            return None  # rank 0 alone keeps it; without periodic validation there is none
        if not resumed_in_place(self.resume, self.out_dir) or not path.is_file():
            return None
        try:
            saved = read_run_state(path)
        except ValueError:  # a damaged file: kept anew
            saved = RunState()
        best = saved.best
        if best and best.get("step", math.inf) <= self.start_step and self._same_data(saved):
            return best
        path.unlink()
        return None

    def _same_data(self, state: RunState) -> bool:
        """Whether a checkpoint (its ``RunState``) was made on this run's data, its
        validation data included (the ``data`` part of the settings: a resumed run may change
        its validation data, and then its recorded figures are of other images)."""
        saved, own = (upgraded_settings(x) or {} for x in (state.settings, self.settings))
        return saved.get("data") == own.get("data")  # as this version stores them

    def _restore(self) -> dict:
        state = load_checkpoint(self.resume)
        if int(state["step"]) >= self.config.steps:
            raise ValueError(
                f"{self.resume}: the checkpoint is at step {state['step']} and the run has "
                f"{self.config.steps} steps: nothing is left to train (give more --steps, "
                "TrainConfig.steps)"
            )
        if self.spec is not None:
            check_resumable(state, self.spec, self.resume)
        check_run_state(self.resume, state)
        load_weights(self.model, state["model"], self.resume)
        try:
            if "optimizer" in state:
                self.optimizer.load_state_dict(state["optimizer"])
            if state.get("scheduler") is not None:
                self.scheduler.load_state_dict(state["scheduler"])
                self._reschedule()
        except (ValueError, KeyError) as err:
            raise ValueError(
                f"{self.resume}: its optimizer state does not fit this run ({err}): resume "
                "with the same --optimizer (TrainConfig.optimizer) and options"
            ) from err
        return state

    def _reschedule(self) -> None:
        """The learning rate of the step resumed at, from this run's schedule: the optimizer
        saved the next rate of the run's old one, which differs when ``steps`` grew."""
        scheduler = self.scheduler
        for group, base, rule in zip(
            self.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas
        ):
            group["lr"] = base * rule(scheduler.last_epoch)

    # 2. The data: a seeded stream that restarts at any step, sharded over processes.
    def _loader(self) -> DataLoader:
        config = self.config
        decode = decodes_on_device(config.decode_on_device, self.device)
        if hasattr(self.dataset, "decode_on_device"):
            self.dataset.decode_on_device = decode  # set before the workers start
        return DataLoader(
            EpochIndexed(self.dataset),
            batch_sampler=StepBatchSampler(
                len(self.dataset),
                config.batch_size,
                seed=config.seed,
                start_step=self.start_step,
                rank=self.context.rank,
                world=self.context.world,
                groups=self._aspect_groups(),
            ),
            collate_fn=collate,
            num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=config.num_workers > 0,
        )

    def _aspect_groups(self) -> list[int] | None:
        if not self.config.group_by_aspect:
            return None
        groups = getattr(self.dataset, "aspect_groups", None)
        return groups() if callable(groups) else None

    # 3. One step: forward under autocast, the divergence check (deferred: no sync), backward,
    #    clip, update. GPU->CPU syncs left: none in the RPN's or, on CUDA, the RoIAlign
    #    detector's step (GPU tests); RoIPool reads its per-level slice lengths once; fp16's
    #    GradScaler checks for infs once.
    def _step(self, batch: Batch, step: int) -> tuple[dict[str, Tensor], Tensor, Tensor | None]:
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            extra = {} if batch.proposals is None else {"proposals": batch.proposals}
            output = self.net(
                batch.images,
                batch.image_sizes,
                batch.targets,
                image_scales=batch.image_scales,
                **extra,
            )
        losses = {k: v.float() for k, v in output.losses.items()}
        loss = sum(losses.values())
        logged = {k: v.detach() for k, v in losses.items()}
        self.watch.push(step, loss, logged, batch)  # checked without a GPU->CPU sync
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        grad_norm = None  # the norm before clipping, logged: a collapse shows here first
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            if self.config.amp != "fp16":  # fp16's scaler skips steps with inf gradients itself
                self.watch.push(step, grad_norm, logged, batch, what="gradient norm")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step_lr = self.optimizer.param_groups[0]["lr"]  # this step's (a float: no sync)
        self.scheduler.step()
        return logged, loss.detach(), grad_norm

    # 4. Logging every ``log_every`` steps (rank 0).
    def _log(self, log: RunLog, bar: tqdm, done: int, loss, logged, grad_norm) -> None:
        """A row of ``train_log.csv`` for the step that made ``done`` steps: steps are counted
        as every message, checkpoint and validation counts them (the first is step 1)."""
        self.watch.flush()  # logging synchronises anyway
        row = {
            "step": done,
            "lr": self.step_lr,  # the rate this step trained at, not the next one's
            "loss": float(loss),
            **{k: float(v) for k, v in logged.items()},
            "grad_norm": "" if grad_norm is None else float(grad_norm),
            "images_per_s": self.images_seen / (time.perf_counter() - self.started),
        }
        log.write(row)
        bar.set_postfix(
            loss=f"{row['loss']:.3f}",
            img_s=f"{row['images_per_s']:.1f}",
            **{k.removeprefix("loss_")[:3]: f"{v:.3f}" for k, v in logged.items()},
        )
        if self.on_step is not None:
            self.on_step(done, row)

    # 5. Checkpoints (rank 0), atomic; best.safetensors without the optimizer's state.
    def checkpoint(self, steps_done: int, name: str = "checkpoint.safetensors") -> None:
        self.watch.flush()  # never a checkpoint after a step that diverged
        resumable = name != BEST_FILE
        if resumable:
            self.saved = (steps_done, self.out_dir / name)
        if self.context.is_main:
            save_checkpoint(
                self.out_dir / name,
                self.model,
                config=self.spec.to_dict() if self.spec is not None else {},
                optimizer=self.optimizer if resumable else None,
                scheduler=self.scheduler if resumable else None,
                step=steps_done,
                input_size=self.input_size,
                run=RunState(
                    seconds=self._seconds(),
                    time_budget_s=self.time_budget_s or None,
                    settings=self.settings or None,
                    best=self.best if name == BEST_FILE else None,  # what it is
                ),
            )

    # 6. Evaluation, every ``eval_every`` steps and after the last (rank 0); the best kept.
    def _evaluate(self, log: RunLog, bar: tqdm, done: int) -> None:
        self.watch.flush()
        self.evaluation, self.evaluated_at = self.evaluate(self.model), done
        self.read_back = False
        self.model.train()
        shown = ", ".join(
            f"{k} {format_metric(v)}" for k, v in self.evaluation.items() if k in EVAL_SHOWN
        )  # n/a: no GT to count (pycocotools' -1)
        bar.write(f"step {done}: {shown}")
        log.write_evaluation(self.evaluation, done)
        self._keep_best(done)

    def _keep_best(self, done: int) -> None:
        """best.safetensors: the weights of the best evaluation so far (ties: the earlier).
        Only with periodic evaluations: the one after the last step alone is the final
        checkpoint's."""
        metric = next((k for k in BEST_BY if k in self.evaluation), None)
        if metric is None or not self.config.eval_every:
            return
        value = float(self.evaluation[metric])
        if value == NO_GT or (self.best is not None and not value > self.best["value"]):
            return  # (no GT to count: no figure to keep a best by)
        self.best = {"metric": metric, "value": value, "step": done}
        self.checkpoint(done, name=BEST_FILE)

    def run(self) -> TrainSummary:
        main = self.context.is_main
        state = self._set_up()
        loader = self._loader()
        bar = tqdm(
            total=self.config.steps,
            initial=self.start_step,
            desc="training",
            disable=not (self.progress and main),
            dynamic_ncols=True,
        )
        if self.config.compile and main:  # else a silent first step of minutes on a CPU
            bar.write("torch.compile: the first steps compile the step (a minute or more)")
        batches = iter(loader)  # draws from the global RNG: restore the saved state after it
        if state is not None:
            set_rng_state(*state["rng"])
        batches = iter(DevicePrefetcher(batches, self.device))  # the next batch copied ahead
        log = RunLog(self.out_dir, resume_at=self.start_step if state else None) if main else None
        self.read_back = bool(log is not None and log.kept and self._same_data(state["run"]))
        if self.read_back:  # the checkpoint's weights were validated so: not again (a resumed
            # run that takes no step reports that validation: its logged figures)
            self.evaluation, self.evaluated_at = dict(log.kept), self.start_step
        self.started, self.images_seen = time.perf_counter(), 0  # the clock: after the log
        if state is not None and self.time_budget_s is not None:
            self._reschedule()  # the first step's rate paced by the seconds already spent
        self.steps_done, self.skipped = self.start_step, []
        try:
            self._train(batches, bar, log)
            elapsed = time.perf_counter() - self.started  # the training, not its evaluation
            self.checkpoint(self.steps_done)
            self.trained = True
            if self.evaluate is not None and main and self.evaluated_at != self.steps_done:
                self._evaluate(log, bar, self.steps_done)  # the final weights' validation
        except KeyboardInterrupt:
            if main:
                bar.write(self._interrupted(self.steps_done))
            raise
        finally:
            batches.close()  # the prefetching thread ends here, even when a step raised
            bar.close()
            if log is not None:
                log.close()
        rate = self.images_seen / max(elapsed, 1e-9)
        # an unreadable image is met again every epoch: count each once
        skipped = len(set(self.skipped))
        best = {**self.best, "file": self.out_dir / BEST_FILE} if self.best else None
        return TrainSummary(self.steps_done, elapsed, rate, self.evaluation, skipped,
                            self.evaluated_at, best, self.start_step, self.read_back)  # fmt: skip

    def _train(self, batches: Iterator[Batch], bar: tqdm, log: RunLog | None) -> None:
        """The steps from ``start_step`` on, with their logging, checkpoints and evaluations,
        until ``config.steps`` or the time budget."""
        config, main, empty = self.config, self.context.is_main, 0
        for step in range(self.start_step, config.steps):
            if self._out_of_time():  # before the step: a resumed run may have none left
                if main:
                    spent = f"{self._seconds():.0f} s of {self.time_budget_s:.0f}"
                    bar.write(f"step {step}: the time budget is spent ({spent}); a larger "
                              "--time-budget (time_budget_s=) goes on")  # fmt: skip
                return
            batch = next(batches)
            self.skipped += batch.skipped
            if isinstance(batch, EmptyBatch):  # every image unreadable (reported): no step
                empty += 1
                self._check_readable(empty)
                if main:
                    bar.write(f"step {step}: no image of its batch could be read: no update")
                continue
            empty = 0
            logged, loss, grad_norm = self._step(batch, step)
            self.images_seen += batch.images.shape[0] * self.context.world
            bar.update(1)
            self.steps_done = done = step + 1
            first, last = step == self.start_step, done == config.steps
            if main and (done % config.log_every == 0 or first or last):
                self._log(log, bar, done, loss, logged, grad_norm)
            if config.checkpoint_every and done % config.checkpoint_every == 0:
                self.checkpoint(done)
            due = config.eval_every and done % config.eval_every == 0
            if self.evaluate is not None and due and main:
                self._evaluate(log, bar, done)

    def _interrupted(self, steps_done: int) -> str:
        """What an interrupted run leaves: the checkpoint to resume, or none. No checkpoint is
        written then: a step cut short may have updated some weights only."""
        if self.trained:
            path = self.saved[1]
            return (
                f"training finished ({path}); its final validation was interrupted: "
                f"rpnkit eval --checkpoint {path}"
            )
        if self.saved is None:
            return f"interrupted after {steps_done} steps: no checkpoint yet (--checkpoint-every)"
        step, path = self.saved
        return f"interrupted after {steps_done} steps: resume from step {step}: --resume {path}"

    def _check_readable(self, empty_batches: int) -> None:
        """A whole epoch's worth of batches without one readable image: stop, not 'train'."""
        per_batch = self.config.batch_size * self.context.world
        if empty_batches * per_batch >= len(self.dataset):
            first = self.skipped[0] if self.skipped else "none reported"
            raise ValueError(
                f"no training image could be read: {len(self.skipped)} skipped in a row "
                f"(first: {first})"
            )

    def _scheduled(self, step: int) -> float:
        """Where the learning-rate schedule is: at ``step``, or, with a time budget, at the
        share of the budget spent times the planned steps where that is further on: a run
        that the budget stops ends its warm-up and decay with the budget, not at a step it
        never reaches. The clock runs from the first batch asked for (the workers' start
        counts), and a resumed run goes on from the seconds its checkpoint recorded. Not under
        torchrun, where each process would read its own clock."""
        if self.time_budget_s is None or self.started is None or self.context.world > 1:
            return step
        spent = self._seconds() / self.time_budget_s
        return max(step, min(1.0, spent) * self.config.steps)

    def _seconds(self) -> float:
        """Seconds of training so far, before a resume included (0 before the first batch)."""
        now = 0.0 if self.started is None else time.perf_counter() - self.started
        return self.seconds_before + now

    def _out_of_time(self) -> bool:
        budget = self.time_budget_s
        return budget is not None and self._seconds() > budget


def train(model: nn.Module, dataset: Dataset, config: TrainConfig, **options) -> TrainSummary:
    """``Trainer(model, dataset, config, **options).run()``."""
    return Trainer(model, dataset, config, **options).run()
