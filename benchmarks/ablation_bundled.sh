#!/usr/bin/env bash
# The measurements behind docs/ablation.md: for the bundled i3d-motion (on synth:motion) and i3d-appearance (on
# synth:appearance), measure stage3 and stage4 on one set of test clips (seed 1), then mask 10-90% of their channels
# selected as dynamic, static, joint, random and both random-least controls (3 draws each), in zero and mean mode, and
# score top-1 on 512 other test clips (seed 0). Resumable: a finished step is skipped.
# Usage: bash benchmarks/ablation_bundled.sh [OUT]   (default runs/ablation; about 15 min per model on 2 CPU cores)
set -euo pipefail
OUT=${1:-runs/ablation}
STLENS=${STLENS:-.venv/bin/stlens}
for name in motion appearance; do
  model=(--model stlens:i3d --weights "bundled:i3d-$name")
  if [ ! -f "$OUT/$name-measure/result.json" ]; then
    "$STLENS" measure "${model[@]}" --data "synth:$name?split=test&seed=1" --pairs 128 --layers stage3,stage4 \
      --bootstrap 200 --out "$OUT/$name-measure" --quiet
  fi
  if [ ! -f "$OUT/$name-ablate/ablation.csv" ]; then
    "$STLENS" ablate "${model[@]}" --data "synth:$name?split=test&n=512&seed=0" --from "$OUT/$name-measure" \
      --layers stage3,stage4 --select dynamic,static,joint,random,random-least-dynamic,random-least-static \
      --k 10,25,50,75,90 --draws 3 --mode zero,mean --batch-size 32 --device cpu --out "$OUT/$name-ablate"
  fi
done
