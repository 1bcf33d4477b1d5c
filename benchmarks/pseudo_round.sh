#!/usr/bin/env bash
# One pseudo-label round on the synthetic set per seed: supervised MelCNN -> its pseudo-labels of
# train_soundscapes -> a MelCNN trained with them (README, "Training on pseudo-labels").
#   bash benchmarks/pseudo_round.sh 42 1 2      (runs under data/models/, skips finished runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export BIRDCLEF_CPUS=${BIRDCLEF_CPUS:-1}
# the MelCNN these README tables were measured with: the default until 2026-11-28, before it took
# PCEN and mixup (README, "Real audio"); PREV="" runs today's default instead
PREV=${PREV-model.input_norm=dataset augment=none}
for s in "${@:-42}"; do
  sup=data/models/syn_melcnn_s$s r1=data/models/syn_melcnn_r1_s$s pl=data/pseudo_runs/s$s
  [ -f $sup/metrics.json ] || $PY run.py seed=$s $PREV hydra.run.dir=$sup > $sup.log 2>&1
  $PY run.py task=pseudo_label seed=$s "teacher.models=[$sup/checkpoints/best.ckpt]" hydra.run.dir=$pl > $pl.log 2>&1
  csv=$($PY -c "import json; print(json.load(open('$pl/pseudo_label.json'))['output'])")/pseudo_labels.csv
  [ -f $r1/metrics.json ] || $PY run.py seed=$s $PREV data.pseudo.labels=$csv data.pseudo.power=2 hydra.run.dir=$r1 > $r1.log 2>&1
  $PY - "$sup" "$r1" "$pl" <<'PYEOF'
import json, sys
sup, r1, pl = (json.load(open(f"{d}/metrics.json")) for d in sys.argv[1:])
print(f"{sys.argv[1]}: pseudo/auc {pl['pseudo/auc']:.3f}, supervised {sup['test/soundscape_auc']:.3f}, "
      f"round 1 {r1['test/soundscape_auc']:.3f}")
PYEOF
done
