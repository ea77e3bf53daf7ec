//! Background retention: on each pass, for every partition this node leads, find the
//! first offset to keep under the topic's `retention.ms` and `retention.bytes`, and
//! propose a `Trim` to it. The decision uses the clock; the apply does not.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::topic_config::TopicDefaults;
use crate::{Replication, ReplicationError};

/// Runs retention passes every `interval` until the returned task is aborted.
pub fn spawn(
    replication: Arc<Replication>,
    defaults: TopicDefaults,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticker.tick().await;
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let r = replication.clone();
            let d = defaults.clone();
            let plan = tokio::task::spawn_blocking(move || plan(&r, &d, now_ms)).await;
            for (uid, offset) in plan.unwrap_or_default() {
                match replication.trim(uid, offset).await {
                    Ok(start) => tracing::info!(partition = uid, log_start_offset = start, "retention trimmed"),
                    Err(e) => tracing::warn!(partition = uid, error = %e, "retention trim failed"),
                }
            }
        }
    })
}

/// The (partition, new log start) pairs one retention pass should propose.
pub fn plan(replication: &Replication, defaults: &TopicDefaults, now_ms: i64) -> Vec<(u64, i64)> {
    let cluster = replication.cluster();
    let mut trims = Vec::new();
    for topic in cluster.topics.values() {
        let config = defaults.resolve(&topic.configs);
        for p in &topic.partitions {
            let Some(view) = replication.partition(p.uid) else { continue };
            if view.leader() != Some(replication.node_id()) {
                continue;
            }
            match keep_from(replication, p.uid, config.retention_ms, config.retention_bytes, now_ms) {
                Ok(Some(offset)) if offset > view.log_start_offset() => trims.push((p.uid, offset)),
                Ok(_) => {}
                Err(e) => tracing::warn!(partition = p.uid, error = %e, "retention check failed"),
            }
        }
    }
    trims
}

fn keep_from(
    r: &Replication,
    uid: u64,
    retention_ms: i64,
    retention_bytes: i64,
    now_ms: i64,
) -> Result<Option<i64>, ReplicationError> {
    let mut keep = None;
    if retention_ms >= 0 {
        // The first batch whose records are not all older than the cutoff; if none,
        // everything up to the high watermark has expired.
        let cutoff = now_ms.saturating_sub(retention_ms);
        let view = r.partition(uid).ok_or(ReplicationError::UnknownPartition)?;
        // The time index is monotone, so its first entry at or after the cutoff is that batch.
        let first_kept = r.engine.time_index_seek(uid, cutoff)?.map_or(view.high_watermark(), |(_, base)| base);
        keep = Some(first_kept);
    }
    if retention_bytes >= 0 {
        let sizes = r.batch_sizes(uid)?;
        let mut total: u64 = sizes.iter().map(|s| s.1 as u64).sum();
        let mut by_size = None;
        for (base, size) in sizes {
            if total <= retention_bytes as u64 {
                by_size = Some(base);
                break;
            }
            total -= size as u64;
        }
        let by_size = by_size.or_else(|| r.partition(uid).map(|v| v.high_watermark()));
        keep = keep.max(by_size);
    }
    Ok(keep)
}
