"""Checkpoints: one safetensors file holding weights, optimizer tensors and a JSON header.

Nothing in a checkpoint is executed on load: tensors are read by safetensors and everything else
(the model config, optimizer hyper-parameters, scheduler and RNG states, the step) is JSON in the
file's metadata. Files are written to a temporary name and renamed, so a crash mid-write never
leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT = "rpnkit-checkpoint-1"


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


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    config: dict,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    step: int = 0,
    extra: dict | None = None,
) -> Path:
    """Write ``path`` atomically. ``config`` is the model's full configuration as a dict."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header: dict[str, Any] = {
        "format": FORMAT,
        "config": config,
        "step": step,
        "extra": extra or {},
    }
    if optimizer is not None:
        opt_tensors, header["optimizer"] = _flatten_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    if scheduler is not None:
        header["scheduler"] = scheduler.state_dict()
    rng_tensors, header["rng"] = rng_state()
    tensors.update(rng_tensors)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"rpnkit": json.dumps(header)})
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint without executing anything. Returns a dict with ``model`` (state dict),
    ``config``, ``step``, ``extra`` and, when saved, ``optimizer``, ``scheduler``, ``rng``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        header = json.loads(metadata["rpnkit"])
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{path}: not a readable rpnkit checkpoint ({type(err).__name__}: {err})"
        ) from err
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown checkpoint format {header.get('format')!r}")
    out = {
        "model": {k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
        "config": header["config"],
        "step": header["step"],
        "extra": header.get("extra", {}),
        "scheduler": header.get("scheduler"),
        "rng": ({k: v for k, v in tensors.items() if k.startswith("rng.")}, header["rng"]),
    }
    if "optimizer" in header:
        opt = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        out["optimizer"] = _unflatten_optimizer(opt, header["optimizer"])
    return out
