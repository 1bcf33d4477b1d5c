#!/usr/bin/env bash
# GPU check: the gpu-marked tests, then trainer=gpu (bf16-mixed) against trainer=cpu on the same
# data and model, side by side on one machine (median epoch time of each run).
#   bash benchmarks/gpu_check.sh [OUT_DIR] [EPOCHS]
set -euo pipefail
out=${1:-outputs/gpu_check}
epochs=${2:-3}
py=${PYTHON:-python3}
mkdir -p "$out"
nvidia-smi -L || true
[ "${SKIP_TESTS:-0}" = 1 ] || $py -m pytest -q -m gpu -p no:cacheprovider tests/test_recipe.py 2>&1 | tail -3
common=(paths.data_dir="$out/data" trainer.max_epochs="$epochs" model=sed data.loader.batch_size=64)
$py run.py task=synth paths.data_dir="$out/data" > /dev/null
for trainer in gpu cpu; do
  $py run.py "${common[@]}" trainer=$trainer hydra.run.dir="$out/$trainer" > "$out/$trainer.log" 2>&1 \
    || { tail -30 "$out/$trainer.log"; exit 1; }
  $py - "$out/$trainer/metrics.json" "$trainer" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:>4}: {m['train/epoch_seconds']:.2f} s/epoch (median), val/auc {m['val/auc']:.3f}, "
      f"soundscape AUC {m['test/soundscape_auc']:.3f}")
PY
done
