#!/usr/bin/env bash
# Train, export and score the shipped classifiers exactly as they were made (CPU: about 2.5 h on 2 cores).
#   bash train/reproduce.sh [DATA_ROOT]      (default ../shared/datasets; run from the repository root)
# Each step resumes if interrupted (run folders under runs/). models/MODEL_CARD.md has each step's time.
# Every image of every step is found by the runtime's detector and cut with the runtime's crop
# (train/data.py); the crop (margin 0.3) is written into the exported models and read by the runtime.
set -euo pipefail
data=${1:-../shared/datasets}
py=${PYTHON:-python}
heldout=train/recipes/four_class.toml
# 1. pretrain on the 8 FER+ emotions with the crowd's vote distributions as soft targets; never on a
#    pixel the 4-class recipe holds out (its FER-2013 evaluation images included)
$py -m train fit --recipe train/recipes/ferplus_pretrain.toml --data-root "$data" --arch fast \
  --out runs/ferplus_fast32 --exclude-heldout-of $heldout --epochs 32 --patience 6 --lr 3e-3 --balance none
# 2. fine-tune on the 4 classes four times, seeds 0-3 (AffectNet only: the one source with all four labels;
#    class-balanced), each early-stopped on validation macro-F1; every batch re-framed so that no label can be
#    read off how much of a crop is padding, and validation faces re-framed once the same way
#    (--equalise-framing, train/framing.py); the default model is the mean of their weights (a uniform soup:
#    one network, no seed picked by validation), calibrated (temperature + class bias) on validation
for seed in 0 1 2 3; do
  $py -m train fit --recipe $heldout --data-root "$data" --arch fast --out runs/edu4_eqf_s$seed \
    --init-from runs/ferplus_fast32/best.pt --epochs 30 --patience 10 --lr 1.5e-3 --seed $seed --equalise-framing
done
$py -m train soup --runs runs/edu4_eqf_s{0,1,2,3} --out runs/edu4_eqf_soup
# 3. export the default model with its metadata (crop included), checker and parity
$py -m export --run runs/edu4_eqf_soup --out models/edumood_classifier.onnx --name edumood-default --version 0.6.0

# The fast model (`--model fast`): the same layers on a stride-2 stem at 48x48 (about 7x fewer multiply-adds).
# 4. adapt step 1's weights to the stride-2 stem at 48x48 on FER+, distilled from step 1's network
$py -m train fit --recipe train/recipes/ferplus_pretrain.toml --data-root "$data" --arch fast_s2_48 \
  --out runs/ferplus_s2_48_pt32 --init-from runs/ferplus_fast32/best.pt --teacher runs/ferplus_fast32/best.pt \
  --exclude-heldout-of $heldout --epochs 5 --patience 3 --lr 2e-3 --balance none
# 5. fine-tune on the 4 classes as step 2 (framing equalised), distilled from the default model (step 2's soup),
#    with FER+ training faces as an unlabelled transfer set (their labels unused: the student follows its
#    teacher on them)
$py -m train fit --recipe $heldout --data-root "$data" --arch fast_s2_48 --out runs/edu4_s2_48_eqf \
  --init-from runs/ferplus_s2_48_pt32/best.pt --teacher runs/edu4_eqf_soup/best.pt --epochs 30 --patience 10 \
  --lr 1.5e-3 --aux-recipe train/recipes/ferplus_pretrain.toml --aux-distill --aux-weight 1.0 --equalise-framing
# 6. export
$py -m export --run runs/edu4_s2_48_eqf --out models/edumood_classifier_fast.onnx --name edumood-fast --version 0.6.0

# 7. the model card's tables: both shipped models, scored as the product runs them, per source
$py -m export.evaluate --data-root "$data" --model default --model fast --json runs/evaluation.json
