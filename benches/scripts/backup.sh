#!/usr/bin/env bash
# Backup and restore throughput on a data dir of about GB gigabytes of log-like JSON
# records, and the stored size ratio with zstd (COMPRESSIONS="zstd gzip" adds gzip).
#   cargo build --bin chronik            (or --release, with CHRONIK_BIN set)
#   benches/scripts/backup.sh [GB]       (default 2)
# Needs python3 with confluent-kafka (tests/clients/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${CHRONIK_BIN:-${CARGO_TARGET_DIR:-target}/debug/chronik}
GB=${1:-2}
W=${BENCH_DIR:-/var/tmp/chronik-backup-bench}
rm -rf "$W"; mkdir -p "$W"
"$B" start --data-dir "$W/data" --kafka-addr 127.0.0.1:19310 --http-addr 127.0.0.1:19311 \
    --rpc-addr 127.0.0.1:19312 --num-partitions 4 --log-retention-ms=-1 > "$W/node.log" 2>&1 &
NODE=$!
trap 'kill $NODE 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -f "$W/data/listeners" ] && break; sleep 0.1; done
python3 benches/scripts/json_records.py 127.0.0.1:19310 bench-json "$GB"

seconds() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
field() { "$B" backup list --from "$1" --json | tail -1 | python3 -c "
import json, sys; m = json.load(sys.stdin)
print({'id': m['id'], 'total': sum(f['size'] for f in m['files']), 'stored': sum(f['stored_size'] for f in m['files'])}['$2'])"; }

for compression in ${COMPRESSIONS:-zstd}; do
    store="$W/store-$compression"
    t=$(seconds "$B" backup create --node 127.0.0.1:19312 --to "$store" --compression "$compression")
    total=$(field "$store" total); stored=$(field "$store" stored); id=$(field "$store" id)
    echo "$compression backup (online): $total bytes in $t s = $(echo "$total / $t / 1048576" | bc) MiB/s;" \
         "stored $stored bytes, ratio $(echo "scale=3; $stored / $total" | bc)"
    t=$(seconds "$B" backup verify --from "$store" --id "$id")
    echo "$compression verify: $(echo "$total / $t / 1048576" | bc) MiB/s"
    t=$(seconds "$B" backup restore --from "$store" --id "$id" --data-dir "$W/restored-$compression")
    echo "$compression restore: $total bytes in $t s = $(echo "$total / $t / 1048576" | bc) MiB/s"
done
# An incremental backup right after: only the files flushed since are uploaded.
t=$(seconds "$B" backup create --node 127.0.0.1:19312 --to "$W/store-zstd")
"$B" backup list --from "$W/store-zstd" --json | tail -1 | python3 -c "
import json, sys; m = json.load(sys.stdin)
up = [f for f in m['files'] if f['uploaded_by'] == m['id']]
print(f\"incremental backup: {len(up)} of {len(m['files'])} files uploaded, {sum(f['stored_size'] for f in up)} bytes, in $t s\")"
