#!/usr/bin/env bash
# Reproduce the shipped default models from scratch (see BENCHMARKS.md for the wall times on a 2-core CPU):
#   scripts/train_defaults.sh            # both defaults and the prompt head, exported into src/recvos/weights/
# Needs ../shared/data/davis2016 (or edit data.root / val.root in the presets) and the installed package.
set -euo pipefail
cd "$(dirname "$0")/.."
RECVOS=${RECVOS:-recvos}
DATA="DAVIS-2016 train (25 videos; bmx-bumps, dance-jump, drift-turn, mallard-fly, stroller held out) + composite + synthetic clips"

# The one-shot stages all run at hidden_size 80 (the presets' value since 2026-11-30; the shipped default was
# trained by exactly these commands, in run folders runs/thin80_*: BENCHMARKS.md, "A thinner decoder").
# one-shot, stage 1: RVOS-ST, 400 steps of a 600-step schedule (Mask-ST+ from step 250)
$RECVOS train --config configs/default_oneshot.yaml --out runs/default_oneshot train.stop_at=400
# one-shot, stage 2: add the first-frame reference, warm-started from stage 1's step 400
$RECVOS train --config configs/default_oneshot_ref.yaml --out runs/default_oneshot_ref
# one-shot, stage 3: add a 3-frame matching memory, warm-started from stage 2's best (300 steps, backbone frozen)
$RECVOS train --config configs/default_oneshot_mem.yaml --out runs/default_oneshot_mem
# one-shot, stage 4: pseudo-videos from still frames and an EMA of the weights, from stage 3 (backbone frozen),
# trained from cached backbone features in bf16; decided on the 5 held-out videos (this run is the evidence)
$RECVOS train --config configs/default_oneshot_cached.yaml --out runs/default_oneshot_cached
# one-shot, final: the same recipe on all 30 training videos; its last EMA weights are shipped
$RECVOS train --config configs/default_oneshot_final.yaml --out runs/default_oneshot_final
# zero-shot, stage 1: 400 steps of a 600-step schedule
$RECVOS train --config configs/default_zeroshot.yaml --out runs/default_zeroshot train.stop_at=400
# zero-shot, stage 2: continue from stage 1's best held-out checkpoint on a fresh, lower-lr schedule
$RECVOS train --config configs/default_zeroshot_ft.yaml --out runs/default_zeroshot_ft

# trained with a 3-frame memory, shipped running with 6 (BENCHMARKS.md, "Memory frames at inference")
python -m recvos.training.export runs/default_oneshot_final/checkpoints/step_00000600.pt --kind one-shot \
    --preset configs/default_oneshot_final.yaml --memory 6 \
    --data "DAVIS-2016 train (all 30 videos) + composite + pseudo-videos (incl. the DAVIS-2017 test-dev first frames) + synthetic clips"
python -m recvos.training.export runs/default_zeroshot_ft/checkpoints/best.pt --kind zero-shot \
    --preset configs/default_zeroshot_ft.yaml --data "$DATA"

# the prompt head, on the backbone of the one-shot default just exported (read from src/recvos/weights/)
$RECVOS train --config configs/prompt_head.yaml --out runs/prompt_head
python -m recvos.training.export runs/prompt_head/checkpoints/best.pt --kind interactive \
    --preset configs/prompt_head.yaml \
    --data "single frames of the same 25 videos, pseudo stills from the DAVIS-2017 test-dev first frames, synthetic shapes"
