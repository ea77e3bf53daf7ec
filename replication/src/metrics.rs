//! Replication metrics, registered in the default Prometheus registry.

use std::sync::LazyLock;

use prometheus::{register_int_counter, IntCounter};

fn counter(name: &str, help: &str) -> IntCounter {
    // Registration fails only on a duplicate name, which these constants rule out.
    register_int_counter!(name, help).unwrap_or_else(|_| IntCounter::new(name, help).expect("valid metric name"))
}

pub(crate) static ROUNDS: LazyLock<IntCounter> =
    LazyLock::new(|| counter("chronik_raft_rounds_total", "Driver rounds that persisted or applied something"));
pub(crate) static FSYNCS: LazyLock<IntCounter> =
    LazyLock::new(|| counter("chronik_raft_fsyncs_total", "raft-engine writes with fsync (one per round)"));
pub(crate) static PROPOSALS: LazyLock<IntCounter> =
    LazyLock::new(|| counter("chronik_raft_proposals_total", "Proposals accepted by a leader"));
pub(crate) static APPLIED_ENTRIES: LazyLock<IntCounter> =
    LazyLock::new(|| counter("chronik_raft_applied_entries_total", "Raft entries applied to the store"));
