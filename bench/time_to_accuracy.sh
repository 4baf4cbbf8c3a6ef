#!/usr/bin/env bash
# Time to a test accuracy on Fashion-MNIST (issue #19, goal 4): `cohort dev` training
# jobs/examples/fashion-cnn.yaml with 2 workers of 1 core and 2 shards (sync), against
# PyTorch DDP (bench/torch_tta.py: gloo, 2 processes x 1 thread, the same network, batch
# 64 per process, Adam 1e-3), one after the other on the same machine:
#   bench/time_to_accuracy.sh [EPOCHS] [TARGET]      (defaults 8 and 0.90)
# Both train on all 60,000 training images and measure accuracy on the 10,000 test
# images after every epoch: Cohort's job is given the test set as its validation set
# (data.validation.uri), so its per-epoch val_accuracy is the test accuracy; seconds
# count from the job's first epoch start (Cohort: its "epoch done" log lines' times less
# the first epoch's duration) including each evaluation pass. Writes
# bench/results/time_to_accuracy.csv (system, epoch, seconds, test_accuracy) and, with
# python3-matplotlib, BENCHMARKS-time-to-accuracy.png beside BENCHMARKS.md; prints each
# side's first time at or above TARGET, and both sides' peak resident sets (also in
# bench/results/time_to_accuracy_rss.txt). Needs bin/cohort, make data, python3-torch.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-8}
target=${2:-0.90}
py=${PYTHON:-/usr/bin/python3}
cohort=${COHORT:-bin/cohort}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
test_uri=file:///usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
sed -e "s/epochs: 8/epochs: $epochs/" -e "s/everySteps: 500/everySteps: 1000000/" \
  -e "s|validation: {fraction: 0.1, seed: 42, stratify: true}|validation: {uri: $test_uri}|" \
  -e "/^    test: /d" jobs/examples/fashion-cnn.yaml > "$tmp/job.yaml"
grep -q "validation: {uri:" "$tmp/job.yaml" || { echo "time_to_accuracy.sh: could not set the validation set" >&2; exit 2; }
mkdir -p bench/results
csv=bench/results/time_to_accuracy.csv
echo "system,epoch,seconds,test_accuracy" > "$csv"
echo "nproc $(nproc), $(uptime | sed 's/.*load/load/')"
/usr/bin/time -f "%M" -o "$tmp/cohort.maxrss" "$cohort" dev --run "$tmp/job.yaml" --data-dir "$tmp/data" --data-root /usr/share/datasets/fashion-mnist --data-root "$PWD" --log-level info -o json > "$tmp/out" 2> "$tmp/err"
# slog text lines: time=2026-12-07T19:20:00.123Z ... msg="epoch done" ... rank=0 epoch=N ...
# samples_per_s=S ... val_accuracy=A; the first epoch's start is its end less 60,000/S.
grep 'msg="epoch done"' "$tmp/err" | grep 'rank=0' | "$py" -c '
import re, sys, datetime
rows = []
for line in sys.stdin:
    t = datetime.datetime.fromisoformat(re.search(r"time=(\S+)", line).group(1).replace("Z", "+00:00")).timestamp()
    ep = int(re.search(r" epoch=(\d+)", line).group(1))
    sps = float(re.search(r" samples_per_s=([0-9.]+)", line).group(1))
    acc = float(re.search(r" val_accuracy=([0-9.]+)", line).group(1))
    rows.append((ep, t, sps, acc))
t0 = rows[0][1] - 60000 / rows[0][2]
for ep, t, _, acc in rows:
    print("cohort,%d,%.2f,%.4f" % (ep, t - t0, acc))
' >> "$csv"
echo "cohort: $(grep -o '"status":"[a-z]*"' "$tmp/out")"
# PyTorch runs fast or several times slower from one process to the next, and the
# environment may set OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE: run it as the environment has
# it (torch-ddp) and with both unset (torch-ddp-unset), and compare with the faster.
for variant in torch-ddp torch-ddp-unset; do
  unset_env=()
  [ "$variant" = torch-ddp-unset ] && unset_env=(-u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
  env "${unset_env[@]}" OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE MKL_NUM_THREADS=1 "$py" bench/torch_tta.py --procs 2 --threads 1 \
    --epochs "$epochs" --target "$target" > "$tmp/$variant.out"
  "$py" -c '
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    if "epoch" in d:
        print("%s,%d,%.2f,%.4f" % (sys.argv[2], d["epoch"], d["seconds"], d["test_accuracy"]))
' "$tmp/$variant.out" "$variant" >> "$csv"
done
# Goal 5, memory: peak resident sets. Cohort's is the whole `cohort dev` process (its
# coordinator, both workers and both shards in one process); PyTorch's, each rank's.
rss=bench/results/time_to_accuracy_rss.txt
{
  echo "cohort dev (coordinator, 2 workers, 2 shards in one process): max RSS $(( $(cat "$tmp/cohort.maxrss") / 1024 )) MiB"
  for variant in torch-ddp torch-ddp-unset; do
    echo "$variant per rank: max RSS $(grep -o '"max_rss_mib": \[[^]]*\]' "$tmp/$variant.out" | sed 's/.*\[//; s/\]//') MiB"
  done
} | tee "$rss"
echo "$(uptime | sed 's/.*load/load/')"
cat "$csv"
"$py" - "$csv" "$target" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
target = float(sys.argv[2])
first = {}
for r in rows:
    if float(r["test_accuracy"]) >= target and r["system"] not in first:
        first[r["system"]] = float(r["seconds"])
for s in ("cohort", "torch-ddp", "torch-ddp-unset"):
    print("%s: time to %.2f test accuracy: %s" % (s, target, "%.1f s" % first[s] if s in first else "not reached"))
torch = [first[s] for s in ("torch-ddp", "torch-ddp-unset") if s in first]
if "cohort" in first and torch:
    print("cohort / torch-ddp's best run: %.2f" % (first["cohort"] / min(torch)))
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("python3-matplotlib missing: CSV only (scripts/apt-install.sh python3-matplotlib)")
    sys.exit(0)
fig, ax = plt.subplots(figsize=(7, 4))
for s, label in (("cohort", "Cohort, 2 workers x 1 core"), ("torch-ddp", "PyTorch DDP, gloo, 2 x 1 thread"),
                 ("torch-ddp-unset", "PyTorch DDP, OPENBLAS_* unset")):
    pts = [(float(r["seconds"]), float(r["test_accuracy"])) for r in rows if r["system"] == s]
    if pts:
        ax.plot(*zip(*pts), marker="o", label=label)
ax.axhline(target, color="grey", linestyle="--", linewidth=1)
ax.set_xlabel("seconds")
ax.set_ylabel("Fashion-MNIST test accuracy")
ax.legend()
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig("BENCHMARKS-time-to-accuracy.png", dpi=100)
print("wrote BENCHMARKS-time-to-accuracy.png")
PY
