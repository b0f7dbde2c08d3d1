"""Command line of the training toolkit: ``python -m train <command> --help``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rich.logging import RichHandler

from train.fit import TrainConfig, run
from train.models import ARCHS
from train.recipe import RecipeError

EXAMPLES = """examples:
  # pretrain on the 7 FER-2013 classes (never on an image held out by the 4-class recipe)
  python -m train fit --recipe train/recipes/fer2013_pretrain.toml --arch fast --out runs/pretrain \\
      --exclude-heldout-of train/recipes/four_class.toml --epochs 12
  # fine-tune on the 4 classes from that checkpoint
  python -m train fit --recipe train/recipes/four_class.toml --arch fast --out runs/fast4 \\
      --init-from runs/pretrain/best.pt
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description="EduMood training toolkit",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="train one model from a data recipe", epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    fit.add_argument("--recipe", required=True, help="data recipe TOML (train/recipes/)")
    fit.add_argument("--arch", default="fast", choices=sorted(ARCHS))
    fit.add_argument("--data-root", default="../shared/datasets")
    fit.add_argument("--out", default="runs/model", help="run folder (resumes when it has last.pt)")
    fit.add_argument("--epochs", type=int, default=40)
    fit.add_argument("--batch-size", type=int, default=128)
    fit.add_argument("--lr", type=float, default=3e-3)
    fit.add_argument("--weight-decay", type=float, default=5e-4)
    fit.add_argument("--patience", type=int, default=8)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--init-from", help="checkpoint to start from (its head is dropped)")
    fit.add_argument("--exclude-heldout-of", help="recipe whose val/test images are excluded from training")
    fit.add_argument("--source-weight", action="append", default=[], metavar="NAME=W",
                     help="sampling weight of a recipe source (repeatable)")
    fit.add_argument("--balance", default="class", choices=["class", "none"],
                     help="class: sample every label equally often (default); none: natural frequencies")
    fit.add_argument("--max-train-images", type=int)
    fit.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    fit.add_argument("--threads", type=int, default=2)
    return parser


def _source_weights(pairs: list[str]) -> dict[str, float]:
    weights = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"--source-weight expects NAME=NUMBER, got {pair!r}") from None
    return weights


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])
    try:
        if args.command == "fit":
            cfg = TrainConfig(
                recipe=args.recipe, arch=args.arch, data_root=args.data_root, out_dir=args.out,
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                patience=args.patience, seed=args.seed, init_from=args.init_from,
                exclude_heldout_of=args.exclude_heldout_of, source_weights=_source_weights(args.source_weight), balance=args.balance,
                max_train_images=args.max_train_images, device=args.device, threads=args.threads,
            )
            results = run(cfg)
            if results:
                test = results["splits"].get("test") or results["splits"]["val"]
                print(json.dumps({k: test["all"][k] for k in ("accuracy", "macro_f1", "micro_f1")}, indent=2))
                print(f"run folder: {Path(args.out).resolve()}")
    except (RecipeError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
