#!/usr/bin/env bash
# Pseudo-label rounds on the synthetic set: one `task=rounds` run per seed, then the README table
# (README, "Rounds"). Each run resumes where it stopped; finished rounds are skipped.
#   bash benchmarks/rounds.sh NAME "OVERRIDES" SEED...      (runs under data/rounds/NAME/s<SEED>)
#   bash benchmarks/rounds.sh power2 "task.k=2 data.pseudo.power=2" 42 1 2
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export BIRDCLEF_CPUS=${BIRDCLEF_CPUS:-1}
# the MelCNN these README tables were measured with: the default until 2026-11-28, before it took
# PCEN and mixup (README, "Real audio"); PREV="" runs today's default instead
PREV=${PREV-model.input_norm=dataset augment=none}
name=$1 overrides=$2
shift 2
mkdir -p data/rounds/$name
for s in "${@:-42}"; do
  dir=data/rounds/$name/s$s
  # shellcheck disable=SC2086  # the overrides are words
  $PY run.py task=rounds seed=$s $PREV $overrides hydra.run.dir=$dir > $dir.log 2>&1 || echo "seed $s failed: $dir.log"
done
$PY - data/rounds/$name "$@" <<'PYEOF'
import json, sys
from pathlib import Path
import numpy as np
folder, seeds = Path(sys.argv[1]), sys.argv[2:]
runs = {s: json.loads((folder / f"s{s}" / "metrics.json").read_text())["rounds"] for s in seeds
        if (folder / f"s{s}" / "metrics.json").is_file()}
k = max(len(r) for r in runs.values()) - 1
head = ["seed", *[f"pseudo/auc r{r}" for r in range(1, k + 1)], "supervised",
        *[f"round {r}" for r in range(1, k + 1)], *[f"r{r} - sup." for r in range(1, k + 1)]]
print("| " + " | ".join(head) + " |\n|" + "---|" + "---:|" * (len(head) - 1))
cells = []
for s, rows in runs.items():
    auc = [r["test/soundscape_auc"] for r in rows]
    row = [r["pseudo/auc"] for r in rows[1:]] + auc + [a - auc[0] for a in auc[1:]]
    cells.append(row)
    print(f"| {s} | " + " | ".join(f"{v:.3f}" if i < len(row) - k else f"{v:+.3f}" for i, v in enumerate(row)) + " |")
m, sd = np.mean(cells, axis=0), np.std(cells, axis=0, ddof=1) if len(cells) > 1 else np.zeros(len(cells[0]))
print("| mean | " + " | ".join(f"{a:.3f}" if i < len(m) - k else f"{a:+.3f} ± {b:.3f}" for i, (a, b) in enumerate(zip(m, sd))) + " |")
PYEOF
