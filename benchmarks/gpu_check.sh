#!/usr/bin/env bash
# GPU check: the gpu-marked tests, then one epoch-time comparison of trainer=gpu (bf16-mixed)
# against trainer=cpu on the same data, in one run on one machine.
#   bash benchmarks/gpu_check.sh [OUT_DIR]
set -euo pipefail
out=${1:-outputs/gpu_check}
mkdir -p "$out"
nvidia-smi -L || true
python -m pytest -q -m gpu -p no:cacheprovider tests/test_recipe.py 2>&1 | tail -5
common=(paths.data_dir="$out/data" trainer.max_epochs=3 model=sed model.backbone=efficientnet_b0 data.batch_size=64)
python run.py task=synth paths.data_dir="$out/data" > /dev/null
for trainer in gpu cpu; do
  python run.py "${common[@]}" trainer=$trainer hydra.run.dir="$out/$trainer" > "$out/$trainer.log" 2>&1 \
    || { tail -30 "$out/$trainer.log"; exit 1; }
  python - "$out/$trainer/metrics.json" "$trainer" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:>4}: {m['train/epoch_seconds']:.2f} s/epoch (median of 3), val/auc {m['val/auc']:.3f}, "
      f"soundscape AUC {m['test/soundscape_auc']:.3f}")
PY
done
