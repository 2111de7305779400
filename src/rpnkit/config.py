"""Typed dataclass configurations: saved to JSON/YAML, read back, and their fields checked
(``check_ranges``, ``check_choices``: one wording for every config's errors)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

DEFAULT_PRESET = "effnet-lite0-fpn"
"""The model a run trains unless told otherwise (``fit``, ``rpnkit train``): EfficientNet-Lite0
with its packaged ImageNet weights and an FPN. Here, not in ``modeling.presets``, so that the
command line names it without importing torch."""
MAX_SEED = 2**32 - 1  # seeds: numpy takes none larger


def config_to_dict(config: Any) -> Any:
    """A dataclass (nested, with tuples) -> plain dicts and lists for JSON/YAML; paths become
    strings and numpy scalars Python numbers (fields that accept them)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: config_to_dict(v) for k, v in config.items()}
    return _plain(config)


def _plain(value: Any) -> Any:
    """A path as a string, a numpy scalar as the Python number (np.int64(5) -> 5: YAML and
    JSON write Python's numbers only); any other value as it is."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def plain_fields(config: Any) -> None:
    """A frozen dataclass config's fields given as paths or numpy scalars, turned into strings
    and Python numbers in place (from ``__post_init__``): what the code reading the config
    expects, and what it is saved as."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if (plain := _plain(value)) is not value:
            object.__setattr__(config, field.name, plain)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where) if len(args) == 1 else value
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def config_from_dict(cls: type[T], data: dict, *, where: str = "config") -> T:
    """Plain dict -> dataclass ``cls``; unknown keys raise a ValueError naming them."""
    if not isinstance(data, dict):
        raise ValueError(
            f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}"
        )
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # the class's own checks: name where it came from
        raise ValueError(f"{where}: {err}") from err


def save_config(config: Any, path: str | Path, *, comment: str = "") -> None:
    """Write a dataclass config as JSON (``.json``) or YAML (anything else); ``comment``
    heads a YAML file as ``#`` lines (JSON has none)."""
    path = Path(path)
    data = config_to_dict(config)
    if path.suffix == ".json":
        path.write_text(json.dumps(data, indent=2) + "\n")
    else:
        head = "".join(f"# {line}\n" for line in comment.splitlines())
        path.write_text(head + yaml.safe_dump(data, sort_keys=False))


def load_config(
    cls: type[T], path: str | Path, *, section: str | None = None, also_read: tuple = ()
) -> T | None:
    """Read a JSON or YAML file written by ``save_config`` into dataclass ``cls``; with
    ``section``, a file of named configs (``configs_to_yaml``, as ``rpnkit train
    --print-config`` prints) is read too: its ``section`` part, the others left with a
    warning that names them (but for the parts ``also_read`` by the caller). None for a file
    of those other parts alone (no ``section`` part)."""
    data = _read_config_file(path)
    own = {f.name for f in dataclasses.fields(cls)}
    if isinstance(data, dict) and data and section not in data and set(data) <= set(also_read):
        return None  # e.g. train's train: part alone
    if isinstance(data, dict) and isinstance(data.get(section), dict) and section not in own:
        if others := sorted(set(data) - {section, *also_read}):
            warnings.warn(f"{path}: only its {section}: part is read, not {others}", stacklevel=2)
        return config_from_dict(cls, data[section], where=f"{path}: {section}")
    return config_from_dict(cls, data, where=str(path))


def load_section(cls: type, path: str | Path, section: str) -> dict:
    """The fields that the ``section`` part of a file of named configs gives (checked as
    ``cls``'s: unknown names and bad values are errors naming the file); {} without one."""
    data = _read_config_file(path)
    part = data.get(section) if isinstance(data, dict) else None
    if part is None:
        return {}
    config = config_from_dict(cls, part, where=f"{path}: {section}")  # raises on anything wrong
    return {name: getattr(config, name) for name in part}


def _read_config_file(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: cannot read the config: {yaml_problem(err)}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = " ".join(str(err).split())
        raise ValueError(f"{path}: cannot read the config: {reason}") from err


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: its problem and line (its own text spans lines, quoting the
    source): ``malformed YAML: expected ',' or ']', but got '<stream end>', line 2``."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or " ".join(str(err).split())
    return f"malformed YAML: {problem}" + (f", line {mark.line + 1}" if mark else "")


def configs_to_yaml(**configs: Any) -> str:
    """Named dataclass configs as one YAML document (``rpnkit train --print-config``)."""
    return yaml.safe_dump({k: config_to_dict(v) for k, v in configs.items()}, sort_keys=False)


def check_ranges(
    config, names, *, low, high=None, low_open=False, integer=False, optional=False
) -> None:
    """Config validation: raise a ValueError naming the first of ``config``'s fields ``names``
    that is not a finite number (an integer with ``integer``; None is allowed with
    ``optional``) from ``low`` (excluded with ``low_open``) up to ``high``."""
    rule = {"low": low, "high": high, "low_open": low_open, "integer": integer}
    for name in names:
        check_number(f"{type(config).__name__}.{name}", getattr(config, name), **rule,
                     optional=optional)  # fmt: skip


def check_number(
    name: str, value: Any, *, low, high=None, low_open=False, integer=False, optional=False
) -> None:
    """A ValueError naming ``name`` unless ``value`` is a finite number (an integer with
    ``integer``; None allowed with ``optional``) from ``low`` (excluded with ``low_open``) up
    to ``high``: the one wording of every such rule (configs, a call's counts)."""
    if value is None and optional:
        return
    kind = "an integer" if integer else "a number"
    rule = (
        f"{kind} {'>' if low_open else '>='} {low}"
        if high is None
        else f"{kind} in {'(' if low_open else '['}{low}, {high}]"
    )
    ok = isinstance(value, Integral if integer else Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > low if low_open else value >= low)
    if not ok or (high is not None and value > high):
        raise ValueError(f"{name} must be {rule}{' or None' if optional else ''}, got {value!r}")


def check_choices(config, choices: dict[str, tuple]) -> None:
    """Config validation: each named field is one of its choices."""
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(
                f"{type(config).__name__}.{name} must be one of {', '.join(map(repr, allowed))}, "
                f"got {getattr(config, name)!r}"
            )


def check_count(name: str, value: Any, *, optional: bool = False) -> None:
    """A ValueError naming ``name`` unless ``value`` is an integer >= 1 (or None with
    ``optional``): a call's ``top``, ``batch_size``, ``max_detections``."""
    check_number(name, value, low=1, integer=True, optional=optional)


def check_compile(name: str, value: Any) -> None:
    """A ValueError naming ``name`` unless ``value`` says how to ``torch.compile``: True
    (inductor), False, or a backend's name."""
    if not (isinstance(value, bool) or (isinstance(value, str) and value.strip())):
        raise ValueError(f"{name} must be True, False or a backend's name, got {value!r}")
