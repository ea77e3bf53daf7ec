#!/usr/bin/env bash
# Runs every test: the Rust workspace (librdkafka via the rdkafka crate, real
# processes and sockets), then the other real clients (kafka-python, confluent-kafka,
# the Java kafka-clients, Debian's kcat) against a freshly built node.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

cargo build --workspace --bins
cargo test --workspace
bash tests/clients/run.sh
