#!/usr/bin/env bash
# Side-by-side benchmark: the same `chronik bench` load against Apache Kafka 4.x (KRaft,
# single node) and then against a Chronik node, one after the other, on loopback.
# Prints each figure for both and the ratio Chronik/Kafka.
#   cargo build --release --bin chronik
#   benches/compare/run.sh [--kafka-fsync]       e.g. COUNT=300000 RUNS=3 benches/compare/run.sh
# --kafka-fsync adds a Kafka run with log.flush.interval.messages=1 (fsync every write).
# RUNS=N measures every system N times, in turn (Kafka, Kafka fsync, Chronik, Kafka, ...),
# and reports the median of each figure: single runs on a small VM vary by tens of percent.
# Env: COUNT (1000000), RUNS (1), RATE (20000 records/s for latency), LATENCY_FLAGS (see below),
# CHRONIK_BIN, KAFKA_VERSION (4.1.1), CHRONIK_COMPARE_CACHE (/var/tmp/chronik-compare:
# Kafka jars; scratch data).
set -euo pipefail
shopt -s inherit_errexit

KAFKA_FSYNC=false
case ${1:-} in
  --kafka-fsync) KAFKA_FSYNC=true ;;
  "") ;;
  *) echo "usage: $0 [--kafka-fsync]" >&2; exit 2 ;;
esac
COUNT=${COUNT:-1000000}
RUNS=${RUNS:-1}
RATE=${RATE:-20000}
# Latency runs cap in-flight requests at the Java client's default (5): with librdkafka's
# default (1000000) and linger.ms=0, every record is its own pipelined request and Kafka,
# which serves one request per connection at a time, queues them for hundreds of ms.
read -ra LAT <<<"${LATENCY_FLAGS:---linger-ms 0 --set max.in.flight.requests.per.connection=5}"
BIN=${CHRONIK_BIN:-${CARGO_TARGET_DIR:-target}/release/chronik}
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
CACHE=${CHRONIK_COMPARE_CACHE:-/var/tmp/chronik-compare}
KAFKA_PORT=19492    # and +1: KRaft controller
CHRONIK_PORT=19592  # and +1: http, +2: rpc
LIMIT=600           # seconds allowed for each bench command

[[ -x $BIN ]] || { echo "no chronik binary at $BIN (cargo build --release --bin chronik)" >&2; exit 1; }
for tool in java mvn jq timeout column; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
mkdir -p "$CACHE"
RUN=$(mktemp -d "$CACHE/run.XXXXXX")  # node data dirs and logs, removed on exit
PID=                                   # the node currently running
cleanup() { if [[ -n $PID ]]; then stop; fi; rm -rf "$RUN"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "error: $1" >&2; [[ -f ${2:-} ]] && tail -n 30 "$2" >&2; exit 1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop() {  # SIGTERM the node and wait for it to exit (SIGKILL after 60 s)
  kill "$PID" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
}

kafka_libs() {  # Kafka and its runtime dependencies from Maven Central, cached
  local dir=$CACHE/kafka-$KAFKA_VERSION
  if [[ ! -e $dir/libs/.complete ]]; then
    echo "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION into $dir" >&2
    mkdir -p "$dir"
    cat >"$dir/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
EOF
    rm -rf "$dir/libs"
    mvn -B -q -f "$dir/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir/libs" >&2
    touch "$dir/libs/.complete"
  fi
  echo "$dir/libs"
}

start_kafka() {  # FSYNC_EVERY_WRITE(true|false)
  local dir=$RUN/kafka cp
  cp="$(kafka_libs)/*"
  mkdir -p "$dir"
  cat >"$dir/server.properties" <<EOF
node.id=1
process.roles=broker,controller
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$((KAFKA_PORT + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.bootstrap.servers=127.0.0.1:$((KAFKA_PORT + 1))
log.dirs=$dir/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
EOF
  if $1; then echo "log.flush.interval.messages=1" >>"$dir/server.properties"; fi
  java -cp "$cp" kafka.tools.StorageTool format --standalone -c "$dir/server.properties" \
    -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null)" >"$dir/format.log" 2>&1 \
    || die "kafka storage format failed" "$dir/format.log"
  # JVM flags as in Kafka's kafka-server-start.sh / kafka-run-class.sh
  java -Xms1g -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -cp "$cp" kafka.Kafka "$dir/server.properties" >"$dir/kafka.log" 2>&1 &
  PID=$!
  LOG=$dir/kafka.log
}

start_chronik() {
  "$BIN" start --data-dir "$RUN/chronik" --kafka-addr "127.0.0.1:$CHRONIK_PORT" \
    --advertise-kafka-addr "127.0.0.1:$CHRONIK_PORT" --http-addr "127.0.0.1:$((CHRONIK_PORT + 1))" \
    --rpc-addr "127.0.0.1:$((CHRONIK_PORT + 2))" >"$RUN/chronik.log" 2>&1 &
  PID=$!
  LOG=$RUN/chronik.log
}

bench() {  # KIND EXPECTED_RECORDS ARGS...: one `chronik bench` run; prints its JSON line
  local kind=$1 n=$2 out
  shift 2
  sync  # so that the previous run's page-cache writeback does not land in this one
  out=$(timeout "$LIMIT" "$BIN" bench "$kind" --json "$@" 2>>"$RUN/bench.err" | tail -n 1) \
    || die "chronik bench $kind $* failed" "$RUN/bench.err"
  jq -e --argjson n "$n" '.records == $n and (.errors // 0) == 0' <<<"$out" >/dev/null \
    || echo "warning: incomplete run (bench $kind $*): $out" >&2
  jq -r --arg k "$kind" '"  \($k): \(.mib_per_s) MiB/s, p99 \(.latency_ms.p99 // "-") ms"' <<<"$out" >&2
  echo "$out"
}

declare -A J  # [system,figure,partitions,run] -> JSON line
measure() {  # SYSTEM PORT RUN: the node is starting; wait until it takes writes, then measure
  local sys=$1 b=127.0.0.1:$2 run=$3 p ready=false
  for _ in $(seq 60); do  # the warm-up doubles as readiness check (a topic can be created)
    kill -0 "$PID" 2>/dev/null || die "$sys exited" "$LOG"
    if listening "$2" && timeout 120 "$BIN" bench produce --bootstrap "$b" --topic warmup \
      --count $((COUNT / 10)) --json >/dev/null 2>"$RUN/warmup.err"; then ready=true; break; fi
    sleep 2
  done
  $ready || die "$sys did not take writes within 2 minutes" "$RUN/warmup.err"
  bench consume $((COUNT / 10)) --bootstrap "$b" --topic warmup --count $((COUNT / 10)) >/dev/null
  for p in 1 16; do  # create the topics up front so that no timed run waits for a new leader
    bench produce 0 --bootstrap "$b" --topic "tput-$p" --partitions "$p" --count 0 >/dev/null
    bench produce 0 --bootstrap "$b" --topic "lat-$p" --partitions "$p" --count 0 >/dev/null
  done
  sleep 2
  for p in 1 16; do
    echo "$sys: $p partition(s), run $run of $RUNS" >&2
    J[$sys,produce,$p,$run]=$(bench produce "$COUNT" --bootstrap "$b" --topic "tput-$p" --partitions "$p" \
      --count "$COUNT" --acks all)
    J[$sys,consume,$p,$run]=$(bench consume "$COUNT" --bootstrap "$b" --topic "tput-$p" --partitions "$p" \
      --count "$COUNT")
    J[$sys,latency,$p,$run]=$(bench produce $((COUNT / 5)) --bootstrap "$b" --topic "lat-$p" --partitions "$p" \
      --count $((COUNT / 5)) --acks all --rate "$RATE" "${LAT[@]}")
  done
  stop
  rm -rf "$RUN/kafka" "$RUN/chronik"
  sync
}

for port in "$KAFKA_PORT" $((KAFKA_PORT + 1)) "$CHRONIK_PORT" $((CHRONIK_PORT + 1)) $((CHRONIK_PORT + 2)); do
  if listening "$port"; then die "port $port already in use"; fi
done
SYSTEMS=(kafka)
NAMES=("Kafka $KAFKA_VERSION")
if $KAFKA_FSYNC; then
  SYSTEMS+=(kafka-fsync)
  NAMES+=("Kafka fsync")
fi
SYSTEMS+=(chronik)
NAMES+=(Chronik)
# Every system starts with the same page cache: the previous one's written data, still
# being written back, otherwise slows the next one's writes (by up to 2x, measured).
drop_page_cache() {
  sync
  if [[ -w /proc/sys/vm/drop_caches ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}
for run in $(seq "$RUNS"); do
  for sys in "${SYSTEMS[@]}"; do
    drop_page_cache
    case $sys in
      kafka) start_kafka false; measure kafka "$KAFKA_PORT" "$run" ;;
      kafka-fsync) start_kafka true; measure kafka-fsync "$KAFKA_PORT" "$run" ;;
      chronik) start_chronik; measure chronik "$CHRONIK_PORT" "$run" ;;
    esac
  done
done

# Table: one column per system, then Chronik divided by each Kafka column.
cols=("${NAMES[@]}" "Chronik/Kafka")
if $KAFKA_FSYNC; then cols+=("Chronik/Kafka fsync"); fi
line() { local IFS='|'; echo "$*"; }
median() {  # SYSTEM FIGURE JQ_FIELD PARTITIONS: the median over the runs
  local run
  for run in $(seq "$RUNS"); do jq -r "$3" <<<"${J[$1,$2,$4,$run]}"; done \
    | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
row() {  # LABEL FIGURE JQ_FIELD DECIMALS PARTITIONS
  local sys v c cells=() vals=()
  for sys in "${SYSTEMS[@]}"; do
    v=$(median "$sys" "$2" "$3" "$5")
    vals+=("$v")
    cells+=("$(printf '%.*f' "$4" "$v")")
  done
  c=${vals[-1]}
  for v in "${vals[@]:0:${#vals[@]}-1}"; do
    cells+=("$(awk -v a="$c" -v b="$v" 'BEGIN { if (b <= 0) printf "n/a"; else printf (a / b < 0.1 ? "%.2g" : "%.2f"), a / b }')")
  done
  line "$1" "${cells[@]}"
}
echo
echo "Single node, loopback, $(nproc) cores, 1 KiB records, acks=all, COUNT=$COUNT, load: chronik bench (librdkafka)."
if ((RUNS > 1)); then echo "Each figure: the median of $RUNS runs per system, taken in turn."; fi
echo "Throughput: linger.ms=5. Latency (lower is better): $((COUNT / 5)) records at $RATE records/s, ${LAT[*]}."
echo
{
  line figure "${cols[@]}"
  for p in 1 16; do
    row "produce MiB/s, $p partition(s)" produce .mib_per_s 1 "$p"
    row "produce records/s, $p partition(s)" produce .records_per_s 0 "$p"
    row "consume MiB/s, $p partition(s)" consume .mib_per_s 1 "$p"
    row "produce p50 ms @ $RATE/s, $p partition(s)" latency .latency_ms.p50 2 "$p"
    row "produce p99 ms @ $RATE/s, $p partition(s)" latency .latency_ms.p99 2 "$p"
  done
} | column -t -s '|' -o ' | ' -R "$(seq -s, 2 $((${#cols[@]} + 1)))"
echo
echo "fsync policy:"
echo "  Kafka:       OS page cache (default: log.flush.interval.messages=Long.MAX)"
if $KAFKA_FSYNC; then echo "  Kafka fsync: fsync every write (log.flush.interval.messages=1)"; fi
echo "  Chronik:     fsync every acknowledged write (raft-engine)"
