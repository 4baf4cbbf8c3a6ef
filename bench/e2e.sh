#!/usr/bin/env bash
# End-to-end data-parallel training speed of jobs/examples/fashion-cnn.yaml on this
# machine: `cohort dev` (2 workers of 1 core each, 2 parameter-server shards, sync) next
# to PyTorch DistributedDataParallel (bench/torch_ddp.py: gloo, 2 processes x 1 thread),
# interleaved so both see the same load:
#   bench/e2e.sh [ROUNDS] [EPOCHS] [DDP_STEPS]
# Cohort's figure is the chief's samples/s of each epoch after the first (the training
# rows of the epoch over its wall time, validation pass included); the job runs EPOCHS
# epochs (default 3) with checkpoints off. Needs bin/cohort, make data and
# python3-torch; COHORT and PYTHON override the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
epochs=${2:-3}
ddp_steps=${3:-300}
py=${PYTHON:-/usr/bin/python3}
cohort=${COHORT:-bin/cohort}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s/epochs: 8/epochs: $epochs/; s/everySteps: 500/everySteps: 1000000/" jobs/examples/fashion-cnn.yaml > "$tmp/job.yaml"
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "nproc $(nproc), $(uptime | sed 's/.*load/load/')"
cs="" ts=""
for r in $(seq "$rounds"); do
  rm -rf "$tmp/data"
  "$cohort" dev --run "$tmp/job.yaml" --data-dir "$tmp/data" --data-root /usr/share/datasets/fashion-mnist --data-root "$PWD" --log-level info -o json > "$tmp/out" 2> "$tmp/err"
  eps=$(sed -n 's/.*msg="epoch done".*rank=0 epoch=\([0-9]*\).* samples_per_s=\([0-9.]*\).*/\1 \2/p' "$tmp/err" | awk '$1 > 1 {print $2}')
  echo "round $r cohort epochs 2..$epochs samples/s: $(echo $eps) $(grep -o '"status":"[a-z]*","metrics":{[^}]*}' "$tmp/out")"
  cs+="$(echo "$eps" | median) "
  t=$(OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE MKL_NUM_THREADS=1 "$py" bench/torch_ddp.py --procs 2 --threads 1 --steps "$ddp_steps")
  echo "round $r torch ddp: $t"
  ts+="$(echo "$t" | sed -n 's/.*"samples_per_s": *\([0-9.eE+-]*\).*/\1/p') "
done
c=$(echo $cs | tr ' ' '\n' | median)
t=$(echo $ts | tr ' ' '\n' | median)
echo "$(uptime | sed 's/.*load/load/')"
printf 'cohort %s samples/s (median; per round %s), torch ddp %s samples/s (per round %s), ratio %.2f\n' \
  "$c" "$(echo $cs)" "$t" "$(echo $ts)" "$(awk -v c="$c" -v t="$t" 'BEGIN {print c/t}')"
