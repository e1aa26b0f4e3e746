#!/bin/bash
# Replays the bundled recordings at speed 0 against URL: 12 replay processes (3 files x 4),
# each sending its file ROUNDS times (default 10) as new players; prints readings/s.
# Usage: bench/edge/replay.sh http://127.0.0.1:18401   (see docs/benchmarks.md, "Edge ingest")
set -u
URL=$1
S=${SLUICE:-./target/release/sluice}
D=${DATA:-./examples/data}
OUT=$(mktemp -d)
start=$(date +%s.%N)
for i in 1 2 3 4; do
  for f in 20210119_run_garmin_fenix6 20210308_virtual_ride_with_power 20210323_yoga; do
    (for r in $(seq 1 ${ROUNDS:-10}); do $S replay --speed 0 --server $URL --player "$f-$i-$r" $D/$f.tcx; done > $OUT/replay-$f-$i.log 2>&1) &
  done
done
wait
end=$(date +%s.%N)
total=$(grep -ho "[0-9]* accepted" $OUT/replay-*.log | awk '{s+=$1} END {print s}')
echo "readings=$total wall_s=$(echo "$end - $start" | bc) readings_per_s=$(echo "$total / ($end - $start)" | bc)"
rm -rf "$OUT"
