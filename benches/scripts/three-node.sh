#!/usr/bin/env bash
# Three-node produce benchmark on one machine: nodes on 127.0.9.2-4 (Kafka :9092, RPC
# :9093, HTTP :9644), RF=3 topic, `chronik bench produce` (librdkafka) against all three.
#   cargo build --release --bin chronik
#   benches/scripts/three-node.sh PARTITIONS COUNT [extra `chronik bench produce` flags]
set -e
B=${CHRONIK_BIN:-${CARGO_TARGET_DIR:-target}/release/chronik}
P=$1; N=$2; shift 2
D=/var/tmp/bench-cluster
rm -rf $D; mkdir -p $D
PEERS="1@127.0.9.2:9093,2@127.0.9.3:9093,3@127.0.9.4:9093"
PIDS=()
for i in 1 2 3; do
  ip=127.0.9.$((i+1))
  $B start --node-id $i --data-dir $D/n$i --kafka-addr $ip:9092 --rpc-addr $ip:9093 \
    --http-addr $ip:9644 --peers $PEERS > $D/n$i.log 2>&1 &
  PIDS+=($!)
done
trap 'kill ${PIDS[@]} 2>/dev/null; wait ${PIDS[@]} 2>/dev/null' EXIT
sleep 3
BOOT=127.0.9.2:9092,127.0.9.3:9092,127.0.9.4:9092
f0=$(curl -s 127.0.9.2:9644/metrics | awk '/^chronik_raft_fsyncs_total/{print $2}')
t0=$(date +%s.%N)
$B bench produce --bootstrap $BOOT --topic b --partitions $P --replication-factor 3 --count $N "$@"
t1=$(date +%s.%N)
f1=$(curl -s 127.0.9.2:9644/metrics | awk '/^chronik_raft_fsyncs_total/{print $2}')
echo "node 1 fsyncs: $((f1-f0)) in $(echo "$t1-$t0" | bc) s"
for i in 2 3 4; do curl -s 127.0.9.$i:9644/metrics | grep -E "^chronik_raft_messages_(sent|dropped)_total" | tr '\n' ' '; echo; done
