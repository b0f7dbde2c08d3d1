"""What every research command shares: its saved config, markdown tables and the console.

Each command (``report``, ``compare``, ``kfold``, ``bias``, ``prelabel``) writes into one run folder
whose ``config.json`` holds the command name and its resolved config, so
``python -m train <command> --config <run>/config.json`` repeats it exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console

if TYPE_CHECKING:
    from train.fit import TrainConfig

CONFIG_FILE = "config.json"
console = Console(stderr=True)

C = TypeVar("C")


def save_config(out: Path, command: str, cfg: Any) -> Path:
    """Create the run folder and write ``config.json`` = {"command": ..., **config}."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_FILE
    path.write_text(json.dumps({"command": command, **asdict(cfg)}, indent=2))
    return path


def load_config(path: Path, command: str, cls: type[C], **overrides: Any) -> C:
    """Rebuild a saved config; ``overrides`` with a value other than None replace saved fields."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    raw = json.loads(path.read_text())
    saved = raw.pop("command", None)
    if saved != command:
        raise ValueError(f"{path} is a config of command {saved!r}, not {command!r}")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; known: {', '.join(sorted(names))}")
    for key, value in raw.items():  # JSON turns tuples into lists; dataclasses here use tuples
        if isinstance(value, list):
            raw[key] = tuple(value)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**raw)


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """The training settings every research command hands to `TrainConfig`, plus free ``fit_options``."""

    data_root: str = "../shared/datasets"
    epochs: int = 40
    batch_size: int = 128
    lr: float = 3e-3
    patience: int = 8
    seed: int = 0
    max_train_images: int | None = None
    device: str = "auto"
    threads: int = 2
    fit_options: dict[str, Any] = field(default_factory=dict)  # further TrainConfig fields, e.g. ema_decay

    def fit_config(self, recipe: str, arch: str, out_dir: Path | str, **extra: Any) -> TrainConfig:
        """The `TrainConfig` of one training run of the command."""
        from train.fit import TrainConfig

        return TrainConfig(recipe=recipe, arch=arch, data_root=self.data_root, out_dir=str(out_dir),
                           epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, patience=self.patience,
                           seed=self.seed, max_train_images=self.max_train_images, device=self.device,
                           threads=self.threads, **extra, **self.fit_options)


def check_fit_options(options: dict[str, Any], managed: set[str]) -> None:
    """``fit_options`` may set any ``TrainConfig`` field the command does not set itself."""
    from train.fit import TrainConfig

    allowed = {f.name for f in fields(TrainConfig)} - managed
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"fit_options {unknown} are not allowed; choose from {', '.join(sorted(allowed))}")


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded, NaN as an em dash."""
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (numbers right-aligned)."""
    align = ["---:" if rows and isinstance(rows[0][i], int | float) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Plain CSV of a table (full precision) for spreadsheets and plots elsewhere."""
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
