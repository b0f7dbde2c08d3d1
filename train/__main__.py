"""Command line of the training toolkit: ``python -m train <command> --help``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from rich.logging import RichHandler

from train.compare import DEFAULT_ARCHS
from train.fit import BALANCES, HEAD_INITS, TrainConfig, evaluate_run, run
from train.models import ARCHS
from train.recipe import RecipeError

EXAMPLES = """examples:
  # pretrain on the 8 FER+ emotions (soft crowd labels; never on an image the 4-class recipe holds out)
  python -m train fit --recipe train/recipes/ferplus_pretrain.toml --arch fast --out runs/pretrain \\
      --exclude-heldout-of train/recipes/four_class.toml --epochs 8 --balance none
  # fine-tune on the 4 classes from that checkpoint
  python -m train fit --recipe train/recipes/four_class.toml --arch fast --out runs/fast4 \\
      --init-from runs/pretrain/best.pt
  # re-calibrate and re-test a finished run (after a calibration change)
  python -m train evaluate --run runs/fast4
  # one network from the mean weights of several seeds of that fine-tuning (a uniform model soup)
  python -m train soup --runs runs/fast4 runs/fast4_s1 runs/fast4_s2 --out runs/fast4_soup
  # research toolkit (docs/RESEARCH.md): data report, architecture comparison, k-fold, bias
  python -m train report --recipe train/recipes/four_class.toml --out runs/report4
  python -m train compare --recipe train/recipes/four_class.toml --out runs/compare4
  python -m train kfold --recipe train/recipes/four_class.toml --arch fast --out runs/kfold4
  python -m train prelabel --recipe train/recipes/four_class.toml --sources affectnet4 --out runs/prelabel4
  python -m train bias --recipe train/recipes/four_class.toml --subgroups runs/prelabel4/subgroups.csv \\
      --mitigate --out runs/bias4
  # any research run again, exactly as it was configured
  python -m train compare --config runs/compare4/config.json
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Examples kept as written, and every option's default shown."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description="EduMood training toolkit",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="train one model from a data recipe", epilog=EXAMPLES,
                         formatter_class=_HelpFormatter)
    fit.add_argument("--recipe", required=True, help="data recipe TOML (train/recipes/)")
    fit.add_argument("--arch", default="fast", choices=sorted(ARCHS), help="network (train/models.py)")
    fit.add_argument("--data-root", default="../shared/datasets", help="folder holding the recipe's datasets")
    fit.add_argument("--out", default="runs/model", help="run folder (resumes when it has last.pt)")
    fit.add_argument("--epochs", type=int, default=40, help="epochs of the one-cycle schedule")
    fit.add_argument("--batch-size", type=int, default=128, help="images per step")
    fit.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (AdamW, one-cycle)")
    fit.add_argument("--weight-decay", type=float, default=5e-4, help="AdamW weight decay")
    fit.add_argument("--patience", type=int, default=8, help="stop after this many epochs without a "
                     "validation macro-F1 gain")
    fit.add_argument("--seed", type=int, default=0, help="seed of sampling and augmentation")
    fit.add_argument("--init-from", help="checkpoint to start from (its head is dropped)")
    fit.add_argument("--head-init", default="random", choices=HEAD_INITS,
                     help="random: a seeded random head; probe: a linear probe fitted on --init-from's frozen "
                          "features of the training images, the same for every seed (LP-FT)")
    fit.add_argument("--exclude-heldout-of", help="recipe whose val/test images are excluded from training")
    fit.add_argument("--source-weight", action="append", default=[], metavar="NAME=W",
                     help="sampling weight of a recipe source (repeatable)")
    fit.add_argument("--balance", default="class", choices=BALANCES,
                     help="class: sample every label equally often (default); source: that, and within a "
                          "label every source equally often; within_source: every source its share of the "
                          "mass (equal, times --source-weight), split equally over its own labels; none: "
                          "natural frequencies")
    fit.add_argument("--partial-labels", action="store_true",
                     help="train a source that holds only some labels with a softmax over its own labels only "
                          "(its look cannot become a label)")
    fit.add_argument("--ema-decay", type=float, default=0.995,
                     help="exponential moving average of the weights, validated and saved (0 = off)")
    fit.add_argument("--teacher", help="best.pt of a trained run to distil from (same labels)")
    fit.add_argument("--distill-weight", type=float, default=0.5, help="share of the teacher's soft targets")
    fit.add_argument("--distill-temperature", type=float, default=2.0, help="softmax temperature of distillation")
    fit.add_argument("--teacher-calibrated", action="store_true",
                     help="distil from the teacher's calibrated logits (what its exported model outputs)")
    fit.add_argument("--aux-recipe", help="recipe trained beside this one through its own head on the shared "
                     "features (its train split only), e.g. train/recipes/ferplus_pretrain.toml")
    fit.add_argument("--aux-weight", type=float, default=0.5,
                     help="weight of the auxiliary loss (its own head's, or with --aux-distill the distillation)")
    fit.add_argument("--aux-distill", action="store_true",
                     help="use the auxiliary recipe's images as an unlabelled transfer set: the main head "
                          "follows --teacher on them (their labels are not used)")
    fit.add_argument("--backbone-lr-scale", type=float, default=1.0,
                     help="learning rate of everything but the heads, as a share of --lr")
    fit.add_argument("--equalise-framing", action="store_true",
                     help="re-frame training crops so no label can be read off how much of a crop is padding; "
                          "select and calibrate on validation faces re-framed the same way (train/framing.py)")
    fit.add_argument("--max-train-images", type=int, help="cap on training images (quick runs, tests)")
    fit.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to train")
    fit.add_argument("--threads", type=int, default=2, help="CPU threads of torch")
    fit.add_argument("--crop-margin", type=float, default=TrainConfig.crop_margin,
                     help="crop margin every image is cut with (written into the exported model)")
    evaluate = sub.add_parser("evaluate", help="re-calibrate and re-test a finished run (same data, same split)")
    evaluate.add_argument("--run", required=True, help="run folder written by fit (config.json + best.pt)")
    soup = sub.add_parser("soup", help="average the weights of fine-tunings of one checkpoint on one recipe "
                          "(seeds) into one calibrated, tested run folder", formatter_class=_HelpFormatter)
    soup.add_argument("--runs", nargs="+", required=True, help="finished fit run folders (same recipe and start)")
    soup.add_argument("--out", required=True, help="run folder of the soup")
    _add_research_commands(sub)
    return parser


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _research_parser(sub: Any, name: str, help_text: str, recipe: bool = True) -> argparse.ArgumentParser:
    """A research subcommand: its options default to None so the config dataclass supplies defaults."""
    parser = sub.add_parser(name, help=help_text, description=f"{help_text}. Defaults: docs/RESEARCH.md.")
    parser.add_argument("--config", help="repeat a saved run: its config.json (only --out may be added)")
    parser.add_argument("--out", dest="out_dir", help="run folder")
    if recipe:
        parser.add_argument("--recipe", help="data recipe TOML (train/recipes/)")
        parser.add_argument("--data-root", help="folder the recipe's roots are relative to "
                            "(../shared/datasets)")
    return parser


def _training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, help="maximum epochs per model (40)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--patience", type=int, help="early-stopping patience in epochs (8)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-train-images", type=int, help="cap on training images (quick runs)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--fit-option", dest="fit_options", action="append", type=_key_value,
                        metavar="KEY=VALUE",
                        help="another TrainConfig field for every model, e.g. ema_decay=0 (repeatable)")


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def _add_research_commands(sub: Any) -> None:
    report = _research_parser(sub, "report",
                              "data report: class distribution, sample faces, intensity histograms")
    report.add_argument("--size", type=int, help="model input side in pixels (64)")
    report.add_argument("--samples-per-class", type=int, help="faces per label in the sample grid (8)")
    report.add_argument("--seed", type=int)

    compare = _research_parser(sub, "compare", "train, test and time several architectures; comparison table")
    compare.add_argument("--archs", type=_csv, help=f"comma-separated, from {', '.join(ARCHS)} "
                                                   f"(default: {','.join(DEFAULT_ARCHS)})")
    _training_options(compare)
    compare.add_argument("--timing-threads", type=int, help="CPU threads when timing ms/face (1)")
    compare.add_argument("--timing-repeats", type=int, help="timed forward passes per model (50)")

    kfold = _research_parser(sub, "kfold", "stratified, grouped k-fold cross-validation of one architecture")
    kfold.add_argument("--arch", choices=sorted(ARCHS), help="architecture (fast)")
    kfold.add_argument("--folds", type=int, help="number of folds (10)")
    kfold.add_argument("--no-single-split", dest="single_split", action="store_false", default=None,
                       help="skip the comparison run on the recipe's own split")
    kfold.add_argument("--only", type=_csv, help="train only these parts, e.g. 1,2,single, and stop (spread one "
                       "k-fold over processes); a later run without it into the same --out writes the tables")
    _training_options(kfold)

    bias = _research_parser(sub, "bias", "per-subgroup metrics, disparity and reweighting mitigation")
    bias.add_argument("--subgroups", help="CSV: path,<attribute>,... (python -m train prelabel writes one)")
    bias.add_argument("--attributes", type=_csv, help="comma-separated CSV columns (age_group,gender)")
    bias.add_argument("--checkpoint", help="evaluate this best.pt instead of training a baseline")
    bias.add_argument("--model", help="or evaluate this exported ONNX model (file, or default / fast), each "
                      "face cut with its crop and classified by the runtime's classifier")
    bias.add_argument("--split", choices=["val", "test"], help="split to evaluate (test)")
    bias.add_argument("--mitigate", action="store_true", default=None,
                      help="also train with subgroup-balanced sampling and compare before/after")
    bias.add_argument("--min-group-size", type=int, help="smallest group counted in the disparity (10)")
    bias.add_argument("--max-weight", type=float, help="clip of the mitigation weights (5)")
    bias.add_argument("--arch", choices=sorted(ARCHS), help="architecture when training (fast)")
    _training_options(bias)

    prelabel = _research_parser(sub, "prelabel",
                                "pre-label age group and gender of face crops for hand correction")
    prelabel.add_argument("--sources", type=_csv, help="comma-separated recipe sources (every crops source)")
    prelabel.add_argument("--limit-per-folder", type=int, help="first N files per label folder")


def _research_config(args: argparse.Namespace) -> Any:
    """The command's config: from --config (plus --out), or from the flags given over the defaults."""
    from train.bias import BiasConfig
    from train.compare import CompareConfig
    from train.kfold import KFoldConfig
    from train.prelabel import PrelabelConfig
    from train.report import ReportConfig
    from train.runfolder import load_config

    cls = {"report": ReportConfig, "compare": CompareConfig, "kfold": KFoldConfig, "bias": BiasConfig,
           "prelabel": PrelabelConfig}[args.command]
    names = {f.name for f in fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "fit_options" in given:
        given["fit_options"] = dict(given["fit_options"])
    if args.config:
        extra = sorted(set(given) - {"out_dir"})
        if extra:
            raise ValueError(f"--config repeats a saved run; only --out may be added, not {extra}")
        return load_config(Path(args.config), args.command, cls, out_dir=args.out_dir)
    required = [f.name for f in fields(cls)
                if f.default is MISSING and f.default_factory is MISSING and f.name not in given]
    if required:
        raise ValueError(f"{args.command} needs --{' --'.join(r.replace('_', '-') for r in required)} "
                         "(or --config of a saved run)")
    return cls(**given)


def _run_research(args: argparse.Namespace) -> None:
    from train.bias import run_bias
    from train.compare import run_compare
    from train.kfold import run_kfold
    from train.prelabel import run_prelabel
    from train.report import run_report

    cfg = _research_config(args)
    runner = {"report": run_report, "compare": run_compare, "kfold": run_kfold, "bias": run_bias,
              "prelabel": run_prelabel}[args.command]
    runner(cfg)
    print(f"run folder: {Path(cfg.out_dir).resolve()}")


def _source_weights(pairs: list[str]) -> dict[str, float]:
    weights = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"--source-weight expects NAME=NUMBER, got {pair!r}") from None
    return weights


def _print_summary(results: dict, out: Path) -> None:
    if results:  # empty on DDP ranks other than 0
        test = results["splits"].get("test") or results["splits"]["val"]
        print(json.dumps({k: test["all"][k] for k in ("accuracy", "macro_f1", "micro_f1")}, indent=2))
        print(f"run folder: {out.resolve()}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_path=False)])
    try:
        if args.command == "fit":
            cfg = TrainConfig(
                recipe=args.recipe, arch=args.arch, data_root=args.data_root, out_dir=args.out,
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                patience=args.patience, seed=args.seed, init_from=args.init_from, head_init=args.head_init,
                exclude_heldout_of=args.exclude_heldout_of,
                source_weights=_source_weights(args.source_weight), balance=args.balance,
                partial_labels=args.partial_labels, ema_decay=args.ema_decay,
                max_train_images=args.max_train_images, device=args.device, threads=args.threads,
                teacher=args.teacher, distill_weight=args.distill_weight,
                distill_temperature=args.distill_temperature, teacher_calibrated=args.teacher_calibrated,
                crop_margin=args.crop_margin,
                aux_recipe=args.aux_recipe, aux_weight=args.aux_weight, aux_distill=args.aux_distill,
                backbone_lr_scale=args.backbone_lr_scale, equalise_framing=args.equalise_framing,
            )
            _print_summary(run(cfg), Path(args.out))
        elif args.command == "evaluate":
            _print_summary(evaluate_run(Path(args.run)), Path(args.run))
        elif args.command == "soup":
            from train.soup import make_soup

            _print_summary(make_soup([Path(r) for r in args.runs], Path(args.out)), Path(args.out))
        else:
            _run_research(args)
    except (RecipeError, ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
