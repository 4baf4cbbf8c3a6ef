#!/usr/bin/env bash
# Peak resident set of a Cohort worker training the Fashion-MNIST CNN (issue #19, goal 5),
# to hold against a PyTorch DDP process's (bench/time_to_accuracy.sh prints each rank's,
# from the same data: all 60,000 training images, the 10,000 test images evaluated after
# every epoch, batch 64 per process):
#   bench/worker_rss.sh [EPOCHS]      (default 2)
# Starts a cluster of separate processes as the README's admin walkthrough does (one
# coordinator, two parameter-server nodes, two worker nodes of one core each, so each
# worker process runs exactly one of the job's two workers; mutual TLS throughout), runs
# jobs/examples/fashion-cnn.yaml with the test set as its validation set and no export,
# then prints every process's peak resident set (VmHWM) and writes them to
# bench/results/worker_rss.txt. Needs bin/cohort and make data.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-2}
cohort=${COHORT:-bin/cohort}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
data=/usr/share/datasets/fashion-mnist
[ -f "$data/train-images-idx3-ubyte.gz" ] || { echo "worker_rss.sh: no Fashion-MNIST in $data (make data)" >&2; exit 2; }
# Ports: a block the other benchmarks do not use.
p=$((27000 + RANDOM % 1000 * 10))
start() { # name, then the command's arguments
  local name=$1; shift
  "$cohort" "$@" > "$tmp/$name.log" 2>&1 &
  pids+=($!)
  echo $! > "$tmp/$name.pid"
}
wait_for() { # what, then a command that succeeds once it is there
  local what=$1; shift
  for _ in $(seq 600); do "$@" > /dev/null 2>&1 && return 0; sleep 0.1; done
  echo "worker_rss.sh: timed out waiting for $what" >&2
  for f in "$tmp"/*.log; do echo "== $f" >&2; tail -n 5 "$f" >&2; done
  "$cohort" node list >&2 || true
  exit 1
}
start c1 coordinator --node-id c1 --data-dir "$tmp/c1" --storage-dir "$tmp/storage" \
  --raft-addr 127.0.0.1:$p --grpc-addr 127.0.0.1:$((p + 1)) --http-addr 127.0.0.1:$((p + 2)) --bootstrap
wait_for "the bootstrap token" test -s "$tmp/c1/bootstrap-token"
export COHORT_ADDR=127.0.0.1:$((p + 1)) COHORT_TLS_DIR=$tmp/admin
wait_for "the admin login" "$cohort" login --address "$COHORT_ADDR" --token "$(cat "$tmp/c1/bootstrap-token")" --dir "$tmp/admin"
"$cohort" token create --role agent --ttl 1h > "$tmp/agent.token"
for i in 1 2; do
  start "ps$i" paramserver --node-id "ps$i" --join "$COHORT_ADDR" --token "$(cat "$tmp/agent.token")" \
    --tls-dir "$tmp/ps$i/tls" --storage-dir "$tmp/storage" --data-addr 127.0.0.1:$((p + 2 + 2 * i)) --http-addr 127.0.0.1:$((p + 3 + 2 * i))
  start "w$i" worker --node-id "w$i" --join "$COHORT_ADDR" --token "$(cat "$tmp/agent.token")" \
    --tls-dir "$tmp/w$i/tls" --storage-dir "$tmp/storage" --http-addr 127.0.0.1:$((p + 7 + i)) \
    --cpu-millis 1000 --data-root "$data"
done
nodes_ready() { [ "$("$cohort" node list | grep -c ' ready ')" -ge 4 ]; }
wait_for "4 ready nodes" nodes_ready
sed -e "s/epochs: 8/epochs: $epochs/" -e "s/everySteps: 500/everySteps: 1000000/" \
  -e "s|validation: {fraction: 0.1, seed: 42, stratify: true}|validation: {uri: file://$data/t10k-images-idx3-ubyte.gz}|" \
  -e "/^    test: /d" -e "/^  export: /d" jobs/examples/fashion-cnn.yaml > "$tmp/job.yaml"
grep -q "validation: {uri:" "$tmp/job.yaml" || { echo "worker_rss.sh: could not set the validation set" >&2; exit 2; }
echo "nproc $(nproc), $(uptime | sed 's/.*load/load/')"
"$cohort" job submit "$tmp/job.yaml" --wait -o json > "$tmp/job.json" 2> "$tmp/submit.err" ||
  { cat "$tmp/submit.err" "$tmp/job.json" >&2; exit 1; }
echo "job: $(grep -o '"status": *"[a-z]*"' "$tmp/job.json" | head -1)"
mkdir -p bench/results
out=bench/results/worker_rss.txt
{
  echo "fashion-cnn, $epochs epochs, 2 workers x 1 core, 2 shards, sync, mutual TLS; peak resident set (VmHWM):"
  for name in w1 w2 ps1 ps2 c1; do
    echo "$name: $(( $(awk '/^VmHWM/ {print $2}' "/proc/$(cat "$tmp/$name.pid")/status") / 1024 )) MiB"
  done
} | tee "$out"
