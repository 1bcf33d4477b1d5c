#!/usr/bin/env bash
# Round 1 again with other data.pseudo settings, on the labels that round 0 made in a rounds run
# (benchmarks/rounds.sh), so only the student's settings change (README, "Rounds").
#   bash benchmarks/round1_settings.sh ROUNDS_NAME NAME "OVERRIDES" SEED...
#   bash benchmarks/round1_settings.sh power2 ratio1 "data.pseudo.power=2 data.pseudo.ratio=1" 42 1 2
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export BIRDCLEF_CPUS=${BIRDCLEF_CPUS:-1}
# the MelCNN these README tables were measured with: the default until 2026-11-28, before it took
# PCEN and mixup (README, "Real audio"); PREV="" runs today's default instead
PREV=${PREV-model.input_norm=dataset augment=none}
base=$1 name=$2 overrides=$3
rounds=data/rounds/$base
shift 3
mkdir -p data/rounds/${base}_$name
for s in "$@"; do
  dir=data/rounds/${base}_$name/s$s
  labels=$($PY -c "import json; print(json.load(open('$rounds/s$s/metrics.json'))['rounds'][1]['pseudo_labels'])")
  # shellcheck disable=SC2086  # the overrides are words
  [ -f $dir/metrics.json ] || $PY run.py seed=$s $PREV data.pseudo.labels=$labels $overrides hydra.run.dir=$dir > $dir.log 2>&1
  $PY - "$rounds/s$s" "$dir" <<'PYEOF'
import json, sys
rows = json.load(open(f"{sys.argv[1]}/metrics.json"))["rounds"]
new = json.load(open(f"{sys.argv[2]}/metrics.json"))["test/soundscape_auc"]
sup, r1 = rows[0]["test/soundscape_auc"], rows[1]["test/soundscape_auc"]
print(f"| {sys.argv[2]} | {sup:.3f} | {r1:.3f} | {new:.3f} | {new - sup:+.3f} |")
PYEOF
done
