#!/usr/bin/env bash
# Single-node produce/consume benchmark with `chronik bench` (librdkafka) against a
# release build of a fresh node; also reports fsyncs per second from /metrics.
#   cargo build --release --bin chronik
#   benches/scripts/single-node.sh PARTITIONS COUNT [extra `chronik bench produce` flags]
set -e
B=${CHRONIK_BIN:-${CARGO_TARGET_DIR:-target}/release/chronik}
P=$1; N=$2; shift 2
pkill -f "chronik start --data-dir /var/tmp/bench-data" || true; while pgrep -f "chronik start --data-dir /var/tmp/bench-data" >/dev/null; do sleep 0.2; done
rm -rf /var/tmp/bench-data
$B start --data-dir /var/tmp/bench-data --kafka-addr 127.0.0.1:19300 --http-addr 127.0.0.1:19301 --rpc-addr 127.0.0.1:19302 > /var/tmp/bench.log 2>&1 &
sleep 1.5
f0=$(curl -s 127.0.0.1:19301/metrics | awk '/^chronik_raft_fsyncs_total/{print $2}')
t0=$(date +%s.%N)
$B bench produce --bootstrap 127.0.0.1:19300 --topic b --partitions $P --count $N "$@"
t1=$(date +%s.%N)
f1=$(curl -s 127.0.0.1:19301/metrics | awk '/^chronik_raft_fsyncs_total/{print $2}')
echo "fsyncs: $((f1-f0)) in $(echo "$t1-$t0" | bc) s => $(echo "($f1-$f0)/($t1-$t0)" | bc) fsync/s"
curl -s 127.0.0.1:19301/metrics | grep -E "^chronik_raft_(rounds|proposals)"
$B bench consume --bootstrap 127.0.0.1:19300 --topic b --partitions $P --count $N
pkill -f "chronik start --data-dir /var/tmp/bench-data"; while pgrep -f "chronik start --data-dir /var/tmp/bench-data" >/dev/null; do sleep 0.2; done
