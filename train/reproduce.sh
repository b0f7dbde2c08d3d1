#!/usr/bin/env bash
# Train and export the shipped classifiers exactly as they were made (CPU: about 3 h on 2 cores).
#   bash train/reproduce.sh [DATA_ROOT]      (default ../shared/datasets; run from the repository root)
# Each step resumes if interrupted (run folders under runs/). models/MODEL_CARD.md has each step's time.
set -euo pipefail
data=${1:-../shared/datasets}
py=${PYTHON:-python}
# 1. pretrain on the 7 FER-2013 classes (never on an image the 4-class recipe holds out), 6 epochs ...
$py -m train fit --recipe train/recipes/fer2013_pretrain.toml --data-root "$data" --arch fast \
  --out runs/pretrain_fast --exclude-heldout-of train/recipes/four_class.toml \
  --epochs 6 --patience 3 --lr 3e-3 --balance none
# 2. ... continued for 10 more epochs with a new one-cycle schedule
$py -m train fit --recipe train/recipes/fer2013_pretrain.toml --data-root "$data" --arch fast \
  --out runs/pretrain_fast2 --init-from runs/pretrain_fast/best.pt \
  --exclude-heldout-of train/recipes/four_class.toml --epochs 10 --patience 4 --lr 2e-3 --balance none
# 3. fine-tune on the 4 classes (class-balanced sampling, AffectNet weighted up, weight EMA), then
#    calibrate (temperature + class bias on validation) and test
$py -m train fit --recipe train/recipes/four_class.toml --data-root "$data" --arch fast \
  --out runs/fast4_pt2 --init-from runs/pretrain_fast2/best.pt --epochs 18 --patience 8 --lr 1.5e-3 \
  --source-weight affectnet4=4 --source-weight student_engagement=0.5
# 4. export with metadata, onnx.checker, parity against PyTorch, and the int8 comparison
$py -m export --run runs/fast4_pt2 --out models/edumood_classifier.onnx --version 0.2.0 --int8
$py -m export.card --run runs/fast4_pt2

# The fast model (`--model fast`): the same layers on a stride-2 stem at 48x48 (about 7x fewer
# multiply-adds per face than step 3's), started from step 2's weights and distilled from the models above.
# 5. adapt to the stride-2 stem on FER-2013 (7 classes), 6 epochs ...
$py -m train fit --recipe train/recipes/fer2013_pretrain.toml --data-root "$data" --arch fast_s2 \
  --out runs/pretrain_s2 --init-from runs/pretrain_fast2/best.pt \
  --exclude-heldout-of train/recipes/four_class.toml --epochs 6 --patience 3 --lr 2e-3 --balance none
# 6. ... then 12 epochs distilled from step 2's 7-class model
$py -m train fit --recipe train/recipes/fer2013_pretrain.toml --data-root "$data" --arch fast_s2 \
  --out runs/pretrain_s2b --init-from runs/pretrain_s2/best.pt --teacher runs/pretrain_fast2/best.pt \
  --exclude-heldout-of train/recipes/four_class.toml --epochs 12 --patience 4 --lr 2e-3 --balance none
# 7. ... then 8 epochs at 48x48 (FER-2013's own size), still distilled from step 2 (which sees 64x64)
$py -m train fit --recipe train/recipes/fer2013_pretrain.toml --data-root "$data" --arch fast_s2_48 \
  --out runs/pretrain_s2_48 --init-from runs/pretrain_s2b/best.pt --teacher runs/pretrain_fast2/best.pt \
  --exclude-heldout-of train/recipes/four_class.toml --epochs 8 --patience 3 --lr 2e-3 --balance none
# 8. fine-tune on the 4 classes as in step 3, distilled from step 3's model
$py -m train fit --recipe train/recipes/four_class.toml --data-root "$data" --arch fast_s2_48 \
  --out runs/s2_48_4d --init-from runs/pretrain_s2_48/best.pt --teacher runs/fast4_pt2/best.pt --epochs 18 \
  --patience 8 --lr 1.5e-3 --source-weight affectnet4=4 --source-weight student_engagement=0.5
# 9. export
$py -m export --run runs/s2_48_4d --out models/edumood_classifier_fast.onnx --name edumood-fast-s2-48 --version 0.2.0
$py -m export.card --run runs/s2_48_4d
