#!/usr/bin/env bash
# Compare the per-core training-step speed of Cohort and PyTorch on the example CNN and
# MLP, interleaved in one run so both see the same machine load:
#   bench/compare.sh [ROUNDS] [CNN_STEPS] [MLP_STEPS]
# Needs bin/cohort (make build) and Debian's python3-torch (scripts/apt-install.sh
# python3-torch). Both sides get one thread: OMP_NUM_THREADS=1, OMP_WAIT_POLICY=PASSIVE,
# torch.set_num_threads(1) for PyTorch; GOMAXPROCS=1 for Cohort. Prints each run's
# samples/s and, per model, the median samples/s and the ratio cohort/torch (>= 1.0
# means Cohort is at least as fast per core). Other processes on the machine skew
# absolute figures; the interleaving keeps the ratio fair.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cnn_steps=${2:-20}
mlp_steps=${3:-300}
py=${PYTHON:-/usr/bin/python3}
cohort=${COHORT:-bin/cohort}
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE MKL_NUM_THREADS=1
[ -x "$cohort" ] || { echo "compare.sh: $cohort missing (run make build)" >&2; exit 2; }
"$py" -c 'import torch' 2>/dev/null || { echo "compare.sh: python3-torch missing (scripts/apt-install.sh python3-torch)" >&2; exit 2; }
sps() { sed -n 's/.*"samples_per_s": *\([0-9.eE+-]*\).*/\1/p'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A runs
for r in $(seq "$rounds"); do
  for model in cnn mlp; do
    if [ $model = cnn ]; then job=jobs/examples/fashion-cnn.yaml steps=$cnn_steps; else job=jobs/examples/attrition-mlp.yaml steps=$mlp_steps; fi
    c=$(GOMAXPROCS=1 "$cohort" bench compute --job "$job" --steps "$steps" -o json)
    t=$("$py" bench/torch_ref.py $model --steps "$steps")
    echo "round $r $model cohort: $c"
    echo "round $r $model torch:  $t"
    runs[$model.cohort]+="$(echo "$c" | sps) "
    runs[$model.torch]+="$(echo "$t" | sps) "
  done
done
echo
printf '%-4s %14s %14s %8s\n' model cohort_sps torch_sps ratio
for model in cnn mlp; do
  c=$(echo ${runs[$model.cohort]} | tr ' ' '\n' | median)
  t=$(echo ${runs[$model.torch]} | tr ' ' '\n' | median)
  printf '%-4s %14.1f %14.1f %8.3f\n' $model "$c" "$t" "$(awk -v c="$c" -v t="$t" 'BEGIN {print c/t}')"
done
