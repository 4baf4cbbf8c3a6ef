#!/usr/bin/env bash
# Compare the training-step speed of Cohort and PyTorch on the example CNN, MLP and LSTM
# and on a CIFAR-shaped CNN, interleaved in one run so both see the same machine load:
#   [THREADS=N] [MODELS="cnn mlp lstm cifar"] bench/compare.sh [ROUNDS] [CNN_STEPS] [MLP_STEPS]
# The LSTM (performance-lstm.yaml against torch.nn.LSTM) runs MLP_STEPS/2 steps, the
# CIFAR-shaped CNN (bench/cifar-cnn.yaml, synthetic data made by bench/gen_cifar_synth.py)
# CNN_STEPS/4. PyTorch runs twice per round and model: with the environment as it is and
# with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (in that command only); torch_sps and
# best_ratio take the faster of each pair (torch_env and torch_unset in the log). Both
# sides also report their CPU time per step; cpu_ratio_med compares those (robust to
# load at THREADS=1), and gflops_cpu_med / peak_fraction put Cohort against the core's peak.
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
models=${MODELS:-cnn mlp lstm cifar}
export OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE MKL_NUM_THREADS=$threads
[ -x "$cohort" ] || { echo "compare.sh: $cohort missing (run make build)" >&2; exit 2; }
"$py" -c 'import torch' 2>/dev/null || { echo "compare.sh: python3-torch missing (scripts/apt-install.sh python3-torch)" >&2; exit 2; }
case " $models " in *" cifar "*) [ -f bench/data/cifar-synth-images-idx4-ubyte ] || "$py" bench/gen_cifar_synth.py ;; esac
sps() { sed -n 's/.*"samples_per_s": *\([0-9.eE+-]*\).*/\1/p'; }
cpums() { sed -n 's/.*"cpu_ms_per_step": *\([0-9.eE+-]*\).*/\1/p'; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
declare -A runs
for r in $(seq "$rounds"); do
  for model in $models; do
    case $model in
      cnn) job=jobs/examples/fashion-cnn.yaml steps=$cnn_steps ;;
      mlp) job=jobs/examples/attrition-mlp.yaml steps=$mlp_steps ;;
      lstm) job=jobs/examples/performance-lstm.yaml steps=$((mlp_steps / 2)) ;;
      cifar) job=bench/cifar-cnn.yaml steps=$(((cnn_steps + 3) / 4)) ;;
      *) echo "compare.sh: unknown model $model" >&2; exit 2 ;;
    esac
    c=$(GOMAXPROCS=$threads "$cohort" bench compute --job "$job" --steps "$steps" --threads "$threads" -o json)
    t1=$("$py" bench/torch_ref.py $model --steps "$steps" --threads "$threads")
    t2=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$py" bench/torch_ref.py $model --steps "$steps" --threads "$threads")
    echo "round $r $model cohort: $c"
    echo "round $r $model torch_env:   $t1"
    echo "round $r $model torch_unset: $t2"
    cs=$(echo "$c" | sps)
    ts=$(printf '%s\n%s\n' "$(echo "$t1" | sps)" "$(echo "$t2" | sps)" | sort -g | tail -1)
    # CPU time per step (the same batch on both sides): torch's least against Cohort's.
    runs[$model.cpu]+="$(printf '%s\n%s\n' "$(echo "$t1" | cpums)" "$(echo "$t2" | cpums)" | sort -g | head -1 | awk -v c="$(echo "$c" | cpums)" '{print $1/c}') "
    runs[$model.ccpu]+="$(echo "$c" | cpums) "
    runs[$model.tcpu]+="$(echo "$t1" | cpums) $(echo "$t2" | cpums) "
    runs[$model.gf]+="$(echo "$c" | sed -n 's/.*"gflops_per_cpu_s": *\([0-9.eE+-]*\).*/\1/p') "
    runs[$model.peak]+="$(echo "$c" | sed -n 's/.*"cpu_peak_fraction": *\([0-9.eE+-]*\).*/\1/p') "
    runs[$model.cohort]+="$cs "
    runs[$model.torch]+="$ts "
    runs[$model.ratio]+="$(awk -v c="$cs" -v t="$ts" 'BEGIN {print c/t}') "
  done
done
spread() { sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.0f-%.0f", lo, hi}'; }
rspread() { sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%.3f-%.3f", lo, hi}'; }
echo
echo "threads $threads, rounds $rounds, nproc $ncpu, $(uptime | sed 's/.*load/load/')"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-<unset>} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE-<unset>}"
printf '%-5s %12s %13s %12s %13s %8s %15s %17s %10s %13s %14s %14s %14s\n' model cohort_sps cohort_spread torch_sps torch_spread ratio round_ratio_med round_ratio_range best_ratio cpu_ratio_med cpu_best_ratio gflops_cpu_med peak_fraction
for model in $models; do
  c=$(echo ${runs[$model.cohort]} | tr ' ' '\n' | median)
  t=$(echo ${runs[$model.torch]} | tr ' ' '\n' | median)
  tbest=$(echo ${runs[$model.torch]} | tr ' ' '\n' | sort -g | tail -1)
  gf=$(echo ${runs[$model.gf]} | tr ' ' '\n' | median)
  pk=$(echo ${runs[$model.peak]} | tr ' ' '\n' | median)
  [ -n "$pk" ] || pk=0
  ccpu=$(echo ${runs[$model.ccpu]} | tr ' ' '\n' | median)
  tcpu=$(echo ${runs[$model.tcpu]} | tr ' ' '\n' | sort -g | head -1)
  printf '%-5s %12.1f %13s %12.1f %13s %8.3f %15.3f %17s %10.3f %13.3f %14.3f %14.1f %14.3f\n' $model "$c" "$(echo ${runs[$model.cohort]} | tr ' ' '\n' | spread)" \
    "$t" "$(echo ${runs[$model.torch]} | tr ' ' '\n' | spread)" "$(awk -v c="$c" -v t="$t" 'BEGIN {print c/t}')" \
    "$(echo ${runs[$model.ratio]} | tr ' ' '\n' | median)" "$(echo ${runs[$model.ratio]} | tr ' ' '\n' | rspread)" \
    "$(awk -v c="$c" -v t="$tbest" 'BEGIN {print c/t}')" "$(echo ${runs[$model.cpu]} | tr ' ' '\n' | median)" "$(awk -v c="$ccpu" -v t="$tcpu" 'BEGIN {print t/c}')" \
    "$gf" "$pk"
done
echo "cpu_ratio_med: PyTorch's CPU time per step (the less of its two runs) over Cohort's, median of rounds (>= 1.0: Cohort does a"
echo "step with less CPU; steadier than wall time on a loaded machine); cpu_best_ratio: PyTorch's least CPU time per step of all its"
echo "runs over Cohort's median (the conservative figure). gflops_cpu_med: Cohort's matrix-product GFLOP per CPU-second"
echo "(gflops_per_cpu_s), peak_fraction: that over one core's measured float32 FMA peak (cpu_peak_fraction, median)."
