#!/usr/bin/env bash
# make ablate-tiny: distil every row of the ablation (two at a time, one thread each), then judge each student in
# real ComfyUI. Each row checkpoints in .swd_work/ablation/<row>/ and continues from there when run again; a row whose
# LoRA exists is not trained again. Rows: name, then the distill options that differ from the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=.swd_work/ablation
mkdir -p "$OUT"
ROWS=(
  "full-seed1 --seed 1"
  "patch-linear-seed1 --gan 0 --seed 1"
  "dmd-5-fake --gan 0 --patch none"
  "mmd-only --recipe mmd"
  "full-seed2 --seed 2"
  "patch-linear-seed2 --gan 0 --seed 2"
  "dmd-1-fake --gan 0 --patch none --fake-updates 1"
  "warm-start-only --warm-steps 500 --gan 0 --patch none"
  "full-seed3 --seed 3"
  "patch-linear-seed3 --gan 0 --seed 3"
  "full-no-warm-start --warm-steps 0"

)
"$PY" -m swd_distill samples --threads 2  # the shared teacher samples, made once
train() {
  name=$1; shift
  lora="$OUT/swd-tiny-$name.safetensors"
  [ -f "$lora" ] && return 0
  resume=(); [ -f "$OUT/swd-tiny-$name/student.ckpt.safetensors" ] && resume=(--resume)
  OMP_NUM_THREADS=1 "$PY" -m swd_distill distill --threads 1 "$@" --out "$lora" --work "$OUT" "${resume[@]}" \
    > "$OUT/$name.log" 2>&1 && echo "trained $name"
}
export -f train; export PY OUT
printf '%s\n' "${ROWS[@]}" | xargs -P 2 -I{} bash -c 'train {}'
for row in "${ROWS[@]}"; do
  name=${row%% *}
  [ -f "$OUT/$name.json" ] && continue
  OMP_NUM_THREADS=2 "$PY" -m swd_distill eval --student-only --student "$OUT/swd-tiny-$name.safetensors" \
    --json "$OUT/$name.json"
done
"$PY" -c "from pathlib import Path; from swd_distill.evaluate import ablation_table
print(ablation_table(Path('$OUT')))"
