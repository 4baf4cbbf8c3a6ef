#!/usr/bin/env bash
# Compare the training-step speed of Cohort and PyTorch on the example CNN and MLP,
# interleaved in one run so both see the same machine load:
#   [THREADS=N] bench/compare.sh [ROUNDS] [CNN_STEPS] [MLP_STEPS]
# Needs bin/cohort (make build) and Debian's python3-torch (scripts/apt-install.sh
# python3-torch). Both sides get THREADS threads (default 1): OMP_NUM_THREADS=N,
# OMP_WAIT_POLICY=PASSIVE, torch.set_num_threads(N) for PyTorch; GOMAXPROCS=N and
# --threads N for Cohort. Prints each run's samples/s and, per model, the median
# samples/s, the spread (min-max) and the ratio cohort/torch of the medians (>= 1.0
# means Cohort is at least as fast on the same cores), and the median of the per-round
# ratios, and the ratio to PyTorch's best run (Debian's torch 1.13 is bimodal here: a
# process runs its CNN steps either at ~19 ms or ~95 ms, so the median of a few runs can
# flatter Cohort; best_ratio is the conservative figure). Other processes on the machine skew absolute figures; the interleaving keeps
# the ratio fair.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
cnn_steps=${2:-20}
mlp_steps=${3:-300}
py=${PYTHON:-/usr/bin/python3}
cohort=${COHORT:-bin/cohort}
threads=${THREADS:-1}
ncpu=$(nproc)
export OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE MKL_NUM_THREADS=$threads
[ -x "$cohort" ] || { echo "compare.sh: $cohort missing (run make build)" >&2; exit 2; }
"$py" -c 'import torch' 2>/dev/null || { echo "compare.sh: python3-torch missing (scripts/apt-install.sh python3-torch)" >&2; exit 2; }
sps() { sed -n 's/.*"samples_per_s": *\([0-9.eE+-]*\).*/\1/p'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A runs
for r in $(seq "$rounds"); do
  for model in cnn mlp; do
    if [ $model = cnn ]; then job=jobs/examples/fashion-cnn.yaml steps=$cnn_steps; else job=jobs/examples/attrition-mlp.yaml steps=$mlp_steps; fi
    c=$(GOMAXPROCS=$threads "$cohort" bench compute --job "$job" --steps "$steps" --threads "$threads" -o json)
    t=$("$py" bench/torch_ref.py $model --steps "$steps" --threads "$threads")
    echo "round $r $model cohort: $c"
    echo "round $r $model torch:  $t"
    cs=$(echo "$c" | sps) ts=$(echo "$t" | sps)
    runs[$model.cohort]+="$cs "
    runs[$model.torch]+="$ts "
    runs[$model.ratio]+="$(awk -v c="$cs" -v t="$ts" 'BEGIN {print c/t}') "
  done
done
spread() { sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.0f-%.0f", lo, hi}'; }
rspread() { sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.3f-%.3f", lo, hi}'; }
echo
echo "threads $threads, rounds $rounds, nproc $ncpu, $(uptime | sed 's/.*load/load/')"
printf '%-4s %12s %13s %12s %13s %8s %15s %17s %10s\n' model cohort_sps cohort_spread torch_sps torch_spread ratio round_ratio_med round_ratio_range best_ratio
for model in cnn mlp; do
  c=$(echo ${runs[$model.cohort]} | tr ' ' '\n' | median)
  t=$(echo ${runs[$model.torch]} | tr ' ' '\n' | median)
  tbest=$(echo ${runs[$model.torch]} | tr ' ' '\n' | sort -g | tail -1)
  printf '%-4s %12.1f %13s %12.1f %13s %8.3f %15.3f %17s %10.3f\n' $model "$c" "$(echo ${runs[$model.cohort]} | tr ' ' '\n' | spread)" \
    "$t" "$(echo ${runs[$model.torch]} | tr ' ' '\n' | spread)" "$(awk -v c="$c" -v t="$t" 'BEGIN {print c/t}')" \
    "$(echo ${runs[$model.ratio]} | tr ' ' '\n' | median)" "$(echo ${runs[$model.ratio]} | tr ' ' '\n' | rspread)" \
    "$(awk -v c="$c" -v t="$tbest" 'BEGIN {print c/t}')"
done
