#!/usr/bin/env bash
# Client-compatibility suites against the Chronik broker binary. Builds nothing.
#
#   tests/clients/run.sh [python] [java] [kcat]      (default: all three)
#
# Binary: $CHRONIK_BIN, else $CARGO_TARGET_DIR/debug/chronik, else <repo>/target/debug/chronik.
# Each suite gets a fresh broker in a temp dir (pytest's conftest starts its own).
# With CHRONIK_BOOTSTRAP=host:port set, every suite targets that running broker
# instead (e.g. Apache Kafka, to check the tests themselves) and none is started.
# Needs what install-deps.sh installs.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"
export CHRONIK_BIN=${CHRONIK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/chronik}
EXTERNAL=${CHRONIK_BOOTSTRAP:-}
BROKER_PID='' BROKER_DIR=''

stop_broker() {
  if [ -n "$BROKER_PID" ]; then
    kill "$BROKER_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
  fi
  [ -n "$BROKER_DIR" ] && rm -rf "$BROKER_DIR"
  BROKER_PID='' BROKER_DIR=''
}
trap stop_broker EXIT
trap 'exit 130' INT TERM

# Starts a broker on free loopback ports and exports CHRONIK_BOOTSTRAP.
start_broker() {
  if [ -n "$EXTERNAL" ]; then export CHRONIK_BOOTSTRAP=$EXTERNAL; return 0; fi
  [ -x "$CHRONIK_BIN" ] || { echo "broker binary not found: $CHRONIK_BIN"; return 1; }
  local kafka http rpc
  read -r kafka http rpc < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
  BROKER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/chronik-clients.XXXXXX")
  "$CHRONIK_BIN" start --node-id 1 --data-dir "$BROKER_DIR/data" \
    --kafka-addr "127.0.0.1:$kafka" --advertise-kafka-addr "127.0.0.1:$kafka" \
    --http-addr "127.0.0.1:$http" --rpc-addr "127.0.0.1:$rpc" > "$BROKER_DIR/broker.log" 2>&1 &
  BROKER_PID=$!
  local deadline=$((SECONDS + ${CHRONIK_START_TIMEOUT:-90}))
  until curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$http/health" \
        && (exec 3<>"/dev/tcp/127.0.0.1/$kafka") 2>/dev/null; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      echo "chronik did not become ready; log tail:"; tail -50 "$BROKER_DIR/broker.log"
      stop_broker; return 1
    fi
    sleep 0.2
  done
  export CHRONIK_BOOTSTRAP="127.0.0.1:$kafka"
  echo "chronik ready at $CHRONIK_BOOTSTRAP (data $BROKER_DIR)"
}

suite_python() {
  # conftest.py starts its own broker unless CHRONIK_BOOTSTRAP is set.
  python3 -m pytest -q tests/clients/python
}
suite_java() {
  command -v mvn > /dev/null || { echo "mvn missing: run tests/clients/install-deps.sh"; return 1; }
  start_broker && mvn -B -ntp ${MVN_FLAGS:-} -f "$HERE/java/pom.xml" test
}
suite_kcat() {
  command -v kcat > /dev/null || { echo "kcat missing: run tests/clients/install-deps.sh"; return 1; }
  start_broker && "$HERE/kcat.sh"
}

suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(python java kcat)
summary=() passed=0 failed=0
for s in "${suites[@]}"; do
  declare -F "suite_$s" > /dev/null || { echo "unknown suite: $s (python, java, kcat)"; exit 2; }
  echo "==== $s"
  start=$SECONDS
  "suite_$s"; rc=$?
  if [ $rc -ne 0 ] && [ -n "$BROKER_DIR" ]; then
    echo "---- chronik log tail ($s failed)"; tail -40 "$BROKER_DIR/broker.log"
  fi
  stop_broker
  [ -n "$EXTERNAL" ] || unset CHRONIK_BOOTSTRAP
  if [ $rc -eq 0 ]; then result=PASS; passed=$((passed + 1)); else result="FAIL (exit $rc)"; failed=$((failed + 1)); fi
  summary+=("$(printf '%-7s %-16s %4ss' "$s" "$result" $((SECONDS - start)))")
done

echo "==== client compatibility summary (broker: ${EXTERNAL:-$CHRONIK_BIN})"
printf '%s\n' "${summary[@]}"
echo "clients: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
