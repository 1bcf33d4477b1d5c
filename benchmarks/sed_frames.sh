#!/usr/bin/env bash
# SED teacher -> pseudo-labels of train_soundscapes -> MelCNN students on its rows or on its frames,
# per seed on the synthetic set (README, "Training on pseudo-labels": rows against frames).
#   bash benchmarks/sed_frames.sh 42 1 2      (runs under data/models/, skips finished runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export BIRDCLEF_CPUS=${BIRDCLEF_CPUS:-1}
# the MelCNN these README tables were measured with: the default until 2026-11-28, before it took
# PCEN and mixup (README, "Real audio"); PREV="" runs today's default instead
PREV=${PREV-model.input_norm=dataset augment=none}
for s in "${@:-42}"; do
  teacher=data/models/syn_sed_s$s labels=data/models/pl_sed_s$s
  [ -f $teacher/metrics.json ] || $PY run.py seed=$s model=sed_lite0_imagenet hydra.run.dir=$teacher > $teacher.log 2>&1
  $PY run.py seed=$s task=pseudo_label "teacher.models=[$teacher/checkpoints/best.ckpt]" hydra.run.dir=$labels > $labels.log 2>&1
  csv=$($PY -c "import json; print(json.load(open('$labels/pseudo_label.json'))['output'])")/pseudo_labels.csv
  for kind in rows frames; do
    out=data/models/sed_${kind}_s$s
    extra=""; [ $kind = frames ] && extra="data.pseudo.frames=true"
    # shellcheck disable=SC2086  # extra is one word or none
    [ -f $out/metrics.json ] || $PY run.py seed=$s $PREV data.pseudo.labels=$csv data.pseudo.ratio=1 \
      data.pseudo.power=2 $extra hydra.run.dir=$out > $out.log 2>&1
  done
  $PY - "$teacher" "$labels" data/models/sed_rows_s$s data/models/sed_frames_s$s <<'PYEOF'
import json, sys
t, p, r, f = (json.load(open(f"{d}/metrics.json")) for d in sys.argv[1:])
key = "test/soundscape_auc"
print(f"{sys.argv[1]}: teacher {t[key]:.3f}, pseudo/auc {p['pseudo/auc']:.3f}, "
      f"rows {r[key]:.3f}, frames {f[key]:.3f}")
PYEOF
done
