"""The wheel holds every subpackage: an editable install reads the source tree and would hide a gap."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "edumood_live").rglob("__init__.py")
               if "__pycache__" not in init.parts}
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
    mapped = config["package-dir"]
    assert mapped["edumood_live.models"] == "models" and "edumood_live.models" in listed
    data = config["package-data"]
    assert {"*.onnx", "*.tflite"} <= set(data["edumood_live.models"]) and "*.mp4" in data["edumood_live.assets"]
