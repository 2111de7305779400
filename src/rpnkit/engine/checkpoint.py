"""Checkpoints: one safetensors file holding weights, optimizer tensors and a JSON header, and
the schema of what the header says the model is (``ModelSpec``: kind, config, class names).

Nothing in a checkpoint is executed on load: tensors are read by safetensors and everything else
(the model spec, optimizer hyper-parameters, scheduler and RNG states, the step) is JSON in the
file's metadata. Files are written to a temporary name and renamed, so a crash mid-write never
leaves a truncated checkpoint behind.

Format 2 nests a detector's first stage under ``first_stage.``; format-1 files (a detector's
``backbone.*`` and ``rpn.*`` at the top) are read and renamed on load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import config_from_dict, config_to_dict
from ..data.config import SETTINGS_VERSION, stored_data_fields
from ..data.records import listed
from ..modeling.presets import (
    DetectorConfig,
    ModelConfig,
    build_detector,
    build_model,
    without_pretrained_weights,
)

FORMAT = "rpnkit-checkpoint-2"
READABLE_FORMATS = ("rpnkit-checkpoint-1", FORMAT)
RPN = "rpn"
DETECTOR = "faster-rcnn"
Kind = Literal["rpn", "faster-rcnn"]


@dataclass(frozen=True)
class ModelSpec:
    """What a checkpoint's model is: its ``kind`` (an RPN, ``ProposalModel``, or a Faster
    R-CNN), its full config, and the class names of its training set (label k is
    ``class_names[k - 1]``; an RPN keeps them for reference)."""

    kind: Kind
    config: ModelConfig | DetectorConfig
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in (RPN, DETECTOR):
            raise ValueError(f"unknown model kind {self.kind!r}: expected {RPN!r} or {DETECTOR!r}")
        expected = DetectorConfig if self.kind == DETECTOR else ModelConfig
        if not isinstance(self.config, expected):
            raise ValueError(
                f"a {self.kind!r} model needs a {expected.__name__}, got "
                f"{type(self.config).__name__}"
            )

    @property
    def is_detector(self) -> bool:
        return self.kind == DETECTOR

    @property
    def model_config(self) -> ModelConfig:
        """The first stage's config (the whole config of an RPN)."""
        return self.config.model if isinstance(self.config, DetectorConfig) else self.config

    def build(self, *, pretrained: bool = True) -> nn.Module:
        """A fresh ``ProposalModel`` or ``FasterRCNN``; ``pretrained=False`` skips loading
        backbone weights (a checkpoint's weights replace them)."""
        if self.is_detector:
            config = self.config
            if not pretrained:
                config = dataclasses.replace(config, model=without_pretrained_weights(config.model))
            return build_detector(config)
        return build_model(self.config if pretrained else without_pretrained_weights(self.config))

    def to_dict(self) -> dict:
        key = "detector" if self.is_detector else "model"
        return {
            "kind": self.kind,
            key: config_to_dict(self.config),
            "class_names": list(self.class_names),
        }

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "checkpoint") -> ModelSpec:
        """Read ``to_dict``'s form; a bare ``ModelConfig`` dict (format 1's RPN) is an RPN."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: the model config is not a mapping")
        try:
            kind = data.get("kind", RPN)
            if kind == DETECTOR:
                config = config_from_dict(DetectorConfig, data["detector"], where=where)
            elif "kind" in data:
                config = config_from_dict(ModelConfig, data["model"], where=where)
            else:
                config = config_from_dict(ModelConfig, data, where=where)
            return cls(kind, config, tuple(data.get("class_names", ())))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{where}: the checkpoint's model config is not usable: {err}"
            ) from err


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able remainder."""
    tensors, plain = {}, {}
    for param_id, param_state in state["state"].items():
        entry = {}
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                entry[key] = value
        plain[str(param_id)] = entry
    return tensors, {"state": plain, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {int(k): dict(v) for k, v in meta["state"].items()}
    for name, value in tensors.items():
        _, param_id, key = name.split(".", 2)
        state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Every random generator's state: torch (CPU and CUDA) as tensors, Python and NumPy as JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    plain = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    return tensors, plain


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


@dataclass(frozen=True)
class RunState:
    """What a checkpoint records of its training run besides the model (its header's
    ``extra``): the ``seconds`` trained so far, the run's ``time_budget_s``, its data and
    training ``settings`` (``resume.run_settings``: what a resumed run must keep), the
    ``best`` validation (best.safetensors: metric, value, step) and a demo's held-out
    ``metrics``. Fields a file lacks are the defaults; keys another version wrote are
    ignored."""

    seconds: float = 0.0
    time_budget_s: float | None = None
    settings: dict | None = None
    best: dict | None = None
    metrics: dict | None = None

    def to_json(self) -> dict:
        """The header's ``extra``: the fields that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v or k == "seconds"}

    @classmethod
    def from_json(cls, extra: Any) -> RunState:
        """The record of a header's ``extra``; a field of the wrong type is left unset."""
        extra = extra if isinstance(extra, dict) else {}

        def field(name: str, kind: type | tuple, default: Any = None) -> Any:
            value = extra.get(name)
            return value if isinstance(value, kind) and not isinstance(value, bool) else default

        return cls(
            seconds=float(field("seconds", (int, float), 0.0)),
            time_budget_s=field("time_budget_s", (int, float)),
            settings=field("settings", dict),
            best=field("best", dict),
            metrics=field("metrics", dict),
        )


def upgraded_settings(settings: dict | None) -> dict | None:
    """A checkpoint's stored ``run_settings`` as this version writes them (an earlier
    version's default split names: ``data.config.stored_data_fields``)."""
    if not settings or not isinstance(settings.get("data"), dict):
        return settings
    data = stored_data_fields(settings["data"], settings.get("version"))
    return {**settings, "version": SETTINGS_VERSION, "data": data}


def read_run_state(path: str | Path) -> RunState:
    """The ``RunState`` of the checkpoint at ``path``, its tensors left unread."""
    return RunState.from_json(read_header(path).get("extra"))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    config: dict,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    step: int = 0,
    run: RunState | None = None,
    input_size: tuple[int, int] | None = None,
) -> Path:
    """Write ``path`` atomically. ``config`` is the model's full configuration as a dict;
    ``run`` what it records of its training run; ``input_size`` the (short side, max size)
    its images were resized to in training, the size inference resizes to unless told
    otherwise (``load``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header: dict[str, Any] = {
        "format": FORMAT,
        "config": config,
        "step": step,
        "extra": (run or RunState()).to_json(),
    }
    if input_size is not None:
        header["input_size"] = [int(input_size[0]), int(input_size[1])]
    if optimizer is not None:
        opt_tensors, header["optimizer"] = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    if scheduler is not None:
        header["scheduler"] = scheduler.state_dict()
    rng_tensors, header["rng"] = rng_state()
    tensors.update(rng_tensors)
    _write_atomically(path, tensors, {"rpnkit": json.dumps(header)})
    return path


def _write_atomically(path: Path, tensors: dict, metadata: dict) -> None:
    """A temporary file beside ``path``, flushed to disk, then renamed over it: readers and a
    crash see the old file or the new one, never a part. Leftovers of earlier killed writes
    are removed first; the file gets the usual permissions (mkstemp's are 0600)."""
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
        os.replace(tmp, path)  # atomic on POSIX
        _fsync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(path: Path) -> None:
    """Delete ``.<name>.*.tmp`` files a killed write of ``path`` left behind."""
    for stale in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible everywhere: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint without executing anything. Returns a dict with ``model`` (state
    dict), ``config``, ``step``, ``run`` (``RunState``), ``input_size`` ((short side, max
    size) or None) and, when saved, ``optimizer``, ``scheduler``, ``rng``."""
    path = Path(path)
    header, tensors = _read(path, with_tensors=True)
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    if header["format"] == "rpnkit-checkpoint-1":
        weights = _upgrade_format_1(weights, header["config"])
    out = {
        "model": weights,
        "config": header["config"],
        "step": header["step"],
        "run": RunState.from_json(header.get("extra")),
        "input_size": _input_size(header.get("input_size"), path),
        "scheduler": header.get("scheduler"),
        "rng": ({k: v for k, v in tensors.items() if k.startswith("rng.")}, header["rng"]),
    }
    if "optimizer" in header:
        opt = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        out["optimizer"] = _unflatten_optimizer(opt, header["optimizer"])
    return out


def read_header(path: str | Path) -> dict:
    """A checkpoint's JSON header (config, step, extra, ...), its tensors left unread; a
    ValueError naming the file when it is no checkpoint."""
    return _read(Path(path), with_tensors=False)[0]


def _read(path: Path, *, with_tensors: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    """The checked header of the checkpoint at ``path`` and its tensors (none unless
    ``with_tensors``): every reader of a checkpoint path goes through here, so a folder, a
    missing file or a file that is no checkpoint gets the same one-line ValueError."""
    if path.is_dir():
        hint = path / "checkpoint.safetensors"
        raise ValueError(
            f"{path}: is a folder, not a checkpoint file"
            + (f" (did you mean {hint}?)" if hint.is_file() else "")
        )
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        tensors = load_file(str(path)) if with_tensors else {}
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})["rpnkit"])
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as err:
        raise _unreadable(path, err) from err
    _check_header(header, path)
    return header, tensors


def _check_header(header: Any, path: Path) -> None:
    """A ValueError naming the file for a header that is not the one ``save_checkpoint``
    writes: a known format, a ``config`` mapping, a ``step`` >= 0 and the RNG's state."""
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a readable rpnkit checkpoint (its header is no mapping)")
    if header.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{path}: unknown checkpoint format {header.get('format')!r}")
    missing = [key for key in ("config", "step", "rng") if key not in header]
    if missing:
        raise ValueError(
            f"{path}: not a readable rpnkit checkpoint (its header lacks {', '.join(missing)})"
        )
    if not isinstance(header["config"], dict):
        raise ValueError(f"{path}: its header's config is no mapping")
    step = header["step"]
    if type(step) is not int or step < 0:
        raise ValueError(f"{path}: its header's step {step!r} is not an integer >= 0")


def _unreadable(path: Path, err: Exception) -> ValueError:
    if is_onnx_file(path):
        return ValueError(
            f"{path}: an ONNX model (what rpnkit export writes), not an rpnkit checkpoint: run "
            "it in ONNX Runtime (docs/deploy.md), or give the .safetensors checkpoint it was "
            "exported from"
        )
    if isinstance(err, KeyError):  # a safetensors file, but none of rpnkit's
        why = "a safetensors file without rpnkit's header (weights saved by another tool?)"
    else:
        why = f"{type(err).__name__}: {err}"
    return ValueError(f"{path}: not a readable rpnkit checkpoint ({why})")


# the ModelProto fields that follow ir_version (field 1) in a serialised ONNX model: producer
# name and version, domain, model version, doc string, graph, opset imports, metadata
_ONNX_FIELD_TAGS = frozenset((0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72))


def is_onnx_file(path: str | Path) -> bool:
    """Whether ``path``, which reads as no checkpoint, is an ONNX model: named .onnx, or
    starting as a serialised ModelProto does (ir_version, field 1, a small varint: 0x08 NN,
    then another of its fields). A safetensors file starts with its header's length."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(3)
    except OSError:
        return False
    return len(head) == 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _ONNX_FIELD_TAGS


def resumed_in_place(resume: str | Path | None, folder: str | Path) -> bool:
    """Whether a run resumes a checkpoint of ``folder`` itself (then it goes on there, its
    files kept; resumed into another folder, it starts that one afresh)."""
    return resume is not None and Path(resume).resolve().parent == Path(folder).resolve()


def read_spec(path: str | Path) -> ModelSpec | None:
    """The ``ModelSpec`` a checkpoint records, its header alone read (None: saved without one,
    by a ``Trainer`` given none)."""
    config = read_header(path).get("config")
    return ModelSpec.from_dict(config, where=str(path)) if config else None


def _input_size(value: Any, path: Path) -> tuple[int, int] | None:
    """A header's ``input_size``, checked: two positive integers, or None (not recorded)."""
    if value is None:
        return None
    if not (
        isinstance(value, list) and len(value) == 2 and all(type(v) is int and v > 0 for v in value)
    ):
        raise ValueError(f"{path}: input_size {value!r} is not [short side, max size]")
    return value[0], value[1]


def _upgrade_format_1(weights: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """Format 1 kept a detector's backbone and RPN at the top of its state dict."""
    if not (isinstance(config, dict) and config.get("kind") == DETECTOR):
        return weights
    first = ("backbone.", "rpn.")
    return {("first_stage." + k if k.startswith(first) else k): v for k, v in weights.items()}


def save_model(
    path: str | Path, model: nn.Module, spec: ModelSpec, *, step: int = 0, **state: Any
) -> Path:
    """``save_checkpoint`` with the header's config written from ``spec``."""
    return save_checkpoint(path, model, config=spec.to_dict(), step=step, **state)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, ModelSpec]:
    """The model of a checkpoint (an RPN's ``ProposalModel`` or a ``FasterRCNN``, in eval mode
    on ``device``) and its spec. Nothing in the file is executed."""
    model, spec, _ = load_model_and_size(path, device)
    return model, spec


def load_model_and_size(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[nn.Module, ModelSpec, tuple[int, int] | None]:
    """``load_model``, and the (short side, max size) the model was trained at (None: not
    recorded, as in checkpoints before it was)."""
    state = load_checkpoint(path)
    spec = ModelSpec.from_dict(state["config"], where=f"{path}")
    try:
        model = spec.build(pretrained=False)  # every weight is in the checkpoint
    except (KeyError, TypeError, ValueError) as err:  # a config no build takes
        raise ValueError(f"{path}: its model config builds no model: {err}") from err
    check_class_names(model, spec.class_names, where=f"{path}:")
    load_weights(model, state["model"], path)
    return model.to(device).eval(), spec, state["input_size"]


def check_run_state(path: str | Path, header: dict | None = None) -> None:
    """A ValueError unless the checkpoint keeps a run's optimizer and schedule state (a
    ``best.safetensors`` keeps the weights alone). ``header``: its header or
    ``load_checkpoint``'s state, when read already."""
    header = read_header(path) if header is None else header
    if "optimizer" not in header or header.get("scheduler") is None:
        raise ValueError(
            f"{path}: a model to use (no optimizer or schedule state), not a run to resume: "
            "resume from the run's checkpoint.safetensors"
        )


def check_class_names(
    model: nn.Module, class_names: Sequence[str], *, where: str, head: str = "its box head"
) -> None:
    """A ValueError unless ``class_names`` names one class per class of ``model``'s box head
    (an RPN or a class-agnostic head labels "object": any names do). The message starts with
    ``where`` (the file, or what gave the names) and calls the head ``head``."""
    heads = getattr(model, "roi_heads", None)
    if heads is None or heads.config.class_agnostic:
        return
    classes = heads.config.num_classes - 1
    if len(class_names) != classes:
        raise ValueError(
            f"{where} names {len(class_names)} class(es) and {head} has {classes}: one name "
            "per class, background apart"
        )


def check_resumable(state: dict, spec: ModelSpec, path: str | Path) -> None:
    """A ``ValueError`` saying what differs when a checkpoint (``load_checkpoint``'s state)
    is not of the model ``spec`` describes: its kind, or the classes it was trained on (the
    weights alone would only say that some do not fit). A checkpoint saved without a spec
    (``Trainer`` without one) is left to the weights' own check."""
    if not state.get("config"):
        return
    saved = ModelSpec.from_dict(state["config"], where=f"{path}")
    if saved.kind != spec.kind:
        article = {RPN: "an", DETECTOR: "a"}
        raise ValueError(
            f"{path}: {article[saved.kind]} {saved.kind} checkpoint, and this run trains "
            f"{article[spec.kind]} {spec.kind}: resume it with --model {saved.kind} (kind=)"
        )
    if saved.is_detector and tuple(saved.class_names) != tuple(spec.class_names):
        shown = [listed(names) for names in (saved.class_names, spec.class_names)]
        raise ValueError(
            f"{path}: trained on {len(saved.class_names)} class(es) ({shown[0]}), and this "
            f"run's data has {len(spec.class_names)} ({shown[1]}): resume on the same data"
        )


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load a checkpoint's weights into ``model``, refusing NaN or infinite values (a run that
    had diverged) and weights of another model, each with a message naming the file."""
    for key, value in weights.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(
                f"{path}: weight {key} holds NaN or infinite values: the run that wrote this "
                "checkpoint had diverged; use an earlier checkpoint"
            )
    missing, unexpected = _key_differences(model, weights)
    if missing or unexpected:
        detail = ", ".join(
            f"{len(keys)} {what} (first: {keys[0]})"
            for what, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        )
        raise ValueError(
            f"{path}: the weights are those of another model ({detail} weight(s)); use the "
            "--model, --preset or --config (kind=, model=) that trained it"
        )
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:  # same names, other shapes
        line = next((x.strip() for x in str(err).splitlines() if "size mismatch" in x), "")
        raise ValueError(
            f"{path}: the weights are those of another model ({line[:200]}); use the "
            "--model, --preset or --config (kind=, model=) that trained it"
        ) from err


def _key_differences(model: nn.Module, weights: dict) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(weights)), sorted(set(weights) - expected)
