#!/usr/bin/env bash
# fashion-cnn.yaml end to end with parameterServers.replicas 1 and 2, interleaved: the
# chief's samples/s of epoch 2 of a 2-epoch run (cohort dev, 2 workers, --ps 2). Needs
# make data and bin/cohort (COHORT overrides); ROUNDS rounds (default 2).
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s/epochs: 8/epochs: 2/; s/everySteps: 500/everySteps: 1000000/" jobs/examples/fashion-cnn.yaml > $tmp/r1.yaml
sed "s/parameterServers: {shards: 2}/parameterServers: {shards: 2, replicas: 2}/" $tmp/r1.yaml > $tmp/r2.yaml
grep -q 'replicas: 2' $tmp/r2.yaml || { echo "no replicas line"; exit 1; }
echo "start $(uptime)"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for r in r1 r2; do
    rm -rf $tmp/data
    ${COHORT:-bin/cohort} dev --run $tmp/$r.yaml --data-dir $tmp/data --ps 2 --data-root /usr/share/datasets --data-root "$PWD" --log-level info -o json > $tmp/out 2> $tmp/err
    eps=$(sed -n 's/.*msg="epoch done".*rank=0 epoch=\([0-9]*\).* samples_per_s=\([0-9.]*\).*/\1 \2/p' $tmp/err | awk '$1 > 1 {print $2}')
    echo "round $round $r epoch-2 samples/s: $eps $(grep -o '"status":"[a-z]*"' $tmp/out) $(grep -o '"test_accuracy":[0-9.]*' $tmp/out)"
  done
done
echo "end $(uptime)"
