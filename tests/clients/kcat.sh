#!/usr/bin/env bash
# kcat (librdkafka) against the broker at $CHRONIK_BOOTSTRAP: metadata listing, then
# produce lines with keys and headers under each codec and consume them back.
# Topics are auto-created by the produce (kcat has no admin commands).
set -euo pipefail
BOOTSTRAP=${CHRONIK_BOOTSTRAP:?set CHRONIK_BOOTSTRAP=host:port}
KCAT=(kcat -b "$BOOTSTRAP" -X client.id=compat-kcat -m 15)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failed=0 passed=0
ok()   { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

for codec in none gzip snappy lz4 zstd; do
  topic="kcat-$codec-$$-$RANDOM"
  for i in $(seq 1 50); do echo "key-$i:value $i $codec $(printf 'x%.0s' $(seq 1 $((i % 7))))"; done > "$TMP/in"
  if ! "${KCAT[@]}" -P -t "$topic" -p 0 -K: -H "codec=$codec" -H "empty=" \
       -X compression.codec="$codec" -X acks=all -l "$TMP/in" 2>"$TMP/err"; then
    fail "produce $codec: $(cat "$TMP/err")"; continue
  fi
  # -f: key:value|partition|offset|headers
  if ! "${KCAT[@]}" -C -t "$topic" -p 0 -o beginning -e -q -f '%k:%s|%p|%o|%h\n' > "$TMP/out" 2>"$TMP/err"; then
    fail "consume $codec: $(cat "$TMP/err")"; continue
  fi
  awk -v c="$codec" '{ print $0 "|0|" NR-1 "|codec=" c ",empty=" }' "$TMP/in" > "$TMP/want"
  if diff -u "$TMP/want" "$TMP/out" > "$TMP/diff"; then
    ok "round trip $codec (50 records)"
  else
    fail "round trip $codec"; head -20 "$TMP/diff"
  fi
done

# Metadata: one broker with id 1 at the bootstrap address; the last topic has one partition led by 1.
"${KCAT[@]}" -L -t "$topic" > "$TMP/meta" 2>&1 || true
if grep -q '^ 1 brokers:' "$TMP/meta" && grep -q "broker 1 at $BOOTSTRAP" "$TMP/meta" \
   && grep -q "topic \"$topic\" with 1 partitions:" "$TMP/meta" \
   && grep -q 'partition 0, leader 1, replicas: 1, isrs: 1' "$TMP/meta"; then
  ok "metadata (-L)"
else
  fail "metadata (-L):"; cat "$TMP/meta"
fi

echo "kcat: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
