"""The record of a training run, ``config.yaml`` in its folder: what was trained (the model
spec), how (the training config and schedule) and on what (the data config, with the class
subset ``DataConfig.classes`` when the run trained on one). ``fit`` writes it; ``rpnkit
report`` reads it back to find the validation data. ``split`` names the run's
held-out images file (``split.json``, with ``DataConfig.val_fraction``) and ``proposals`` the
COCO results files the alternating schedule was given (``{"step1": path, "step3": path}``);
both are written only when set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import config_from_dict, config_to_dict, yaml_problem
from ..data import DataConfig
from ..data.config import SETTINGS_VERSION, stored_data_fields
from .checkpoint import ModelSpec
from .trainer import TrainConfig

RECORD_FILE = "config.yaml"


@dataclass(frozen=True)
class RunRecord:
    model: ModelSpec
    train: TrainConfig
    data: DataConfig
    schedule: str = "joint"
    split: str | None = None
    proposals: dict[str, str] | None = None

    def to_dict(self) -> dict:
        record = {
            "version": SETTINGS_VERSION,
            "model": self.model.to_dict(),
            "train": config_to_dict(self.train),
            "data": config_to_dict(self.data),
            "schedule": self.schedule,
        }
        if self.split is not None:
            record["split"] = self.split
        if self.proposals:
            record["proposals"] = dict(self.proposals)
        return record

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / RECORD_FILE
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> RunRecord | None:
        """The run's record, or None for a folder without one (a demo's, say)."""
        path = Path(run_dir) / RECORD_FILE
        return cls.from_file(path) if path.is_file() else None

    @classmethod
    def from_file(cls, path: str | Path) -> RunRecord:
        """A run record read from ``path`` (a ValueError naming it when it is not one)."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
            return cls(
                ModelSpec.from_dict(data["model"], where=str(path)),
                config_from_dict(TrainConfig, data["train"], where=f"{path} train"),
                config_from_dict(
                    DataConfig,
                    stored_data_fields(data["data"], data.get("version")),
                    where=f"{path} data",
                ),
                data.get("schedule", "joint"),
                data.get("split"),
                data.get("proposals"),
            )
        except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a readable run record ({_reason(err)})") from err

    @staticmethod
    def is_record(path: str | Path) -> bool:
        """Whether the YAML file ``path`` has a run record's shape (its model: part a spec,
        with a kind), not a model config's or --print-config's."""
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return False  # said by the reader of the config
        model = data.get("model") if isinstance(data, dict) else None
        return isinstance(model, dict) and "kind" in model and "class_names" in model


def _reason(err: Exception) -> str:
    """Why a run record could not be read, in one line: a YAML error's problem and line (its
    own text spans lines, with the source quoted), a missing entry's name."""
    if isinstance(err, yaml.YAMLError):
        return yaml_problem(err)
    if isinstance(err, KeyError):
        return f"no {err.args[0]!r} entry"
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return " ".join(str(err).split())
