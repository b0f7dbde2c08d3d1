"""Declarative data recipes: which folders feed which label, how to group and split them.

A recipe is a TOML file (see ``train/recipes/``). Parsing validates everything up front so a typo
fails with one clear message before any image is read.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

KINDS = ("crops", "frames")
ROLES = ("train", "eval")  # eval: every image goes to the test split (a source the model never trains on)
ANY_FOLDER = "*"  # a label-map key that maps every folder (single-label sources laid out by subject)


class RecipeError(ValueError):
    """A recipe file is missing, malformed or refers to something that does not exist."""


@dataclass(frozen=True)
class SourceSpec:
    """One dataset folder set and the mapping of its folder labels onto recipe labels."""

    name: str
    roots: tuple[str, ...]
    kind: str
    group: str  # "file", "folder" (one person per folder) or "block:N" (consecutive frame numbers)
    label_map: dict[str, str]  # folder -> label; with ``votes``: vote column -> label
    role: str = "train"
    votes: str | None = None  # CSV of crowd votes per image (FER+), relative to the data root
    fractions: tuple[float, float] | None = None  # this source's (val, test) fractions; None = the recipe's
    @property
    def block_size(self) -> int | None:
        return int(self.group.split(":", 1)[1]) if self.group.startswith("block:") else None


@dataclass(frozen=True)
class Recipe:
    name: str
    labels: tuple[str, ...]
    seed: int
    val_fraction: float
    test_fraction: float
    sources: tuple[SourceSpec, ...]
    path: Path

    def resolve_roots(self, data_root: Path) -> dict[str, list[Path]]:
        """Absolute folders per source; a missing folder is an error naming it."""
        resolved: dict[str, list[Path]] = {}
        for source in self.sources:
            paths = [data_root / root for root in source.roots]
            for path in paths:
                if not path.is_dir():
                    raise RecipeError(
                        f"{self.path.name}: source '{source.name}': folder {path} does not exist")
            resolved[source.name] = paths
        return resolved


def _require(table: dict, key: str, kind: type, where: str) -> object:
    if key not in table:
        raise RecipeError(f"{where}: missing key '{key}'")
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RecipeError(f"{where}: '{key}' must be {kind.__name__}, got {value!r}")
    return value


def _fractions(table: dict, where: str) -> tuple[float, float]:
    """(val, test) fractions of a [split] or [[sources]] table (0.15 each unless given), checked."""
    val = float(table.get("val_fraction", 0.15))
    test = float(table.get("test_fraction", 0.15))
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise RecipeError(f"{where}: split fractions val={val}, test={test} must be in [0, 1) and sum below 1")
    return val, test


def _parse_source(raw: dict, labels: tuple[str, ...], where: str) -> SourceSpec:
    name = str(_require(raw, "name", str, where))
    where = f"{where} '{name}'"
    roots = _require(raw, "roots", list, where)
    if not roots or not all(isinstance(r, str) for r in roots):
        raise RecipeError(f"{where}: 'roots' must be a non-empty list of folder paths")
    kind = str(_require(raw, "kind", str, where))
    if kind not in KINDS:
        raise RecipeError(f"{where}: kind {kind!r} is not allowed; choose one of {', '.join(KINDS)}")
    group = str(raw.get("group", "file"))
    if group not in ("file", "folder"):
        size = group.removeprefix("block:")
        if not group.startswith("block:") or not size.isdigit() or int(size) < 1:
            raise RecipeError(
                f"{where}: group {group!r} is not allowed; use 'file', 'folder' or 'block:N' with N >= 1")
    role = str(raw.get("role", "train"))
    if role not in ROLES:
        raise RecipeError(f"{where}: role {role!r} is not allowed; choose one of {', '.join(ROLES)}")
    votes = raw.get("votes")
    if votes is not None and not isinstance(votes, str):
        raise RecipeError(f"{where}: 'votes' must be a CSV path, got {votes!r}")
    fractions = None
    if "val_fraction" in raw or "test_fraction" in raw:
        fractions = _fractions(raw, where)
    label_map = _require(raw, "labels", dict, where)
    if not label_map:
        raise RecipeError(f"{where}: 'labels' maps no folder onto a label")
    for folder, target in label_map.items():
        if target not in labels:
            raise RecipeError(
                f"{where}: {'vote column' if votes else 'folder'} '{folder}' maps to unknown label {target!r}; "
                f"known labels: {', '.join(labels)}"
            )
    return SourceSpec(name, tuple(roots), kind, group, dict(label_map), role, votes, fractions)


def load_recipe(path: Path) -> Recipe:
    """Parse and validate a recipe TOML file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path.name}: not valid TOML: {exc}") from exc
    where = path.name
    name = str(_require(raw, "name", str, where))
    labels_raw = _require(raw, "labels", list, where)
    labels = tuple(str(label) for label in labels_raw)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise RecipeError(f"{where}: 'labels' must list at least two distinct labels, got {labels_raw!r}")
    seed = int(_require(raw, "seed", int, where))
    val, test = _fractions(raw.get("split", {}), where)
    sources_raw = raw.get("sources")
    if not isinstance(sources_raw, list) or not sources_raw:
        raise RecipeError(f"{where}: needs at least one [[sources]] table")
    sources = tuple(_parse_source(s, labels, f"{where}: source #{i + 1}") for i, s in enumerate(sources_raw))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise RecipeError(f"{where}: source names must be unique, got {names}")
    return Recipe(name, labels, seed, val, test, sources, path)
