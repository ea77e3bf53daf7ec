//! Replication metrics, registered in the default Prometheus registry.

use std::sync::LazyLock;

use prometheus::{register_histogram, register_int_counter, Histogram, IntCounter};

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

fn histogram(name: &str, help: &str) -> Histogram {
    let buckets = prometheus::exponential_buckets(0.000_1, 2.0, 16).unwrap_or_default();
    register_histogram!(name, help, buckets.clone()).unwrap_or_else(|_| {
        Histogram::with_opts(prometheus::HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric")
    })
}

pub(crate) static PERSIST_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| histogram("chronik_raft_persist_seconds", "raft-engine write + fsync of one round"));
pub(crate) static APPLY_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| histogram("chronik_raft_apply_seconds", "Applying one round's committed entries to RocksDB"));
pub(crate) static RAFT_MESSAGES_SENT: LazyLock<IntCounter> =
    LazyLock::new(|| counter("chronik_raft_messages_sent_total", "Raft messages queued for another node"));
pub(crate) static RAFT_MESSAGES_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter("chronik_raft_messages_dropped_total", "Raft messages dropped: peer queue full or peer unreachable")
});
pub(crate) static RAFT_MESSAGES_RECEIVED: LazyLock<IntCounter> =
    LazyLock::new(|| counter("chronik_raft_messages_received_total", "Raft messages received from other nodes"));
