//! The partition state machine: appends batches at dense offsets, deduplicates
//! idempotent producers and moves the log start. Apply is deterministic: it reads
//! only the command, the entry's index and term, and the state before it.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use chronik_engine::{Engine, PartitionState, WriteBatch};

use crate::record_batch::{self, BatchHeader};
use crate::{AppendError, AppendOutcome};

/// Batches remembered per producer for duplicate detection (as in Kafka).
const PRODUCER_BATCHES_KEPT: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchRecord {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchRecord>,
}

impl ProducerEntry {
    /// Remembers batch `h`, stored at `base_offset`; a new epoch forgets older batches.
    fn record(&mut self, h: &BatchHeader<'_>, base_offset: i64) {
        if self.epoch != h.producer_epoch() {
            self.epoch = h.producer_epoch();
            self.batches.clear();
        }
        self.batches.push_back(BatchRecord {
            first_sequence: h.base_sequence(),
            last_sequence: h.last_sequence(),
            base_offset,
        });
        if self.batches.len() > PRODUCER_BATCHES_KEPT {
            self.batches.pop_front();
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.batches.len() * 16);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        for b in &self.batches {
            out.extend_from_slice(&b.first_sequence.to_be_bytes());
            out.extend_from_slice(&b.last_sequence.to_be_bytes());
            out.extend_from_slice(&b.base_offset.to_be_bytes());
        }
        out
    }

    fn decode(raw: &[u8]) -> Option<ProducerEntry> {
        let epoch = i16::from_be_bytes(raw.get(..2)?.try_into().ok()?);
        let rest = &raw[2..];
        if !rest.len().is_multiple_of(16) {
            return None;
        }
        let batches = rest
            .chunks_exact(16)
            .map(|c| BatchRecord {
                first_sequence: i32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                last_sequence: i32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                base_offset: i64::from_be_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
            })
            .collect();
        Some(ProducerEntry { epoch, batches })
    }
}

/// What the idempotence check decided for one batch.
enum Sequencing {
    Fresh,
    Duplicate(i64),
}

pub(crate) struct PartitionMachine {
    pub uid: u64,
    pub state: PartitionState,
    /// Highest leader epoch whose start offset is recorded.
    last_epoch: i64,
    producers: HashMap<i64, ProducerEntry>,
    scratch: Vec<u8>,
}

impl PartitionMachine {
    pub fn load(engine: &Engine, uid: u64) -> chronik_engine::Result<PartitionMachine> {
        let state = engine.partition_state(uid)?.unwrap_or(PartitionState { max_timestamp: -1, ..Default::default() });
        let last_epoch = engine.epoch_starts(uid)?.last().map_or(-1, |e| e.0);
        let producers = engine
            .producer_states(uid)?
            .into_iter()
            .filter_map(|(pid, raw)| Some((pid, ProducerEntry::decode(&raw)?)))
            .collect();
        Ok(PartitionMachine { uid, state, last_epoch, producers, scratch: Vec::new() })
    }

    /// Records the entry as applied and notes a new leader epoch if `term` starts one.
    pub fn on_entry(&mut self, index: u64, term: u64, wb: &mut WriteBatch<'_>) {
        self.state.applied_index = index;
        self.state.applied_term = term;
        if term as i64 > self.last_epoch {
            self.last_epoch = term as i64;
            wb.put_epoch_start(self.uid, term as i64, self.state.next_offset);
        }
    }

    /// Appends every batch in `records`, or none of them.
    pub fn append(
        &mut self,
        records: &Bytes,
        term: u64,
        wb: &mut WriteBatch<'_>,
    ) -> Result<AppendOutcome, AppendError> {
        let headers = record_batch::produced_batches(records)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AppendError::CorruptBatch(e.to_string()))?;
        if headers.is_empty() {
            return Err(AppendError::CorruptBatch("no record batch".into()));
        }
        // Check every batch before changing anything, each against the producer state
        // left by the request's earlier batches (as Kafka does).
        let mut decisions = Vec::with_capacity(headers.len());
        let mut staged: HashMap<i64, ProducerEntry> = HashMap::new();
        let mut next_offset = self.state.next_offset;
        for h in &headers {
            let pid = h.producer_id();
            let current = staged.get(&pid).or_else(|| self.producers.get(&pid));
            let decision = check_sequence(current, h)?;
            if let Sequencing::Fresh = decision {
                if pid >= 0 {
                    let mut entry = current.cloned().unwrap_or_default();
                    entry.record(h, next_offset);
                    staged.insert(pid, entry);
                }
                next_offset += h.last_offset_delta() as i64 + 1;
            }
            decisions.push(decision);
        }
        let mut first_offset = None;
        for (h, decision) in headers.iter().zip(decisions) {
            let base = match decision {
                Sequencing::Duplicate(base) => base,
                Sequencing::Fresh => self.store(h, term, wb),
            };
            first_offset.get_or_insert(base);
        }
        wb.put_partition_state(self.uid, &self.state);
        Ok(AppendOutcome {
            base_offset: first_offset.unwrap_or(self.state.next_offset),
            log_start_offset: self.state.log_start_offset,
        })
    }

    fn store(&mut self, h: &BatchHeader<'_>, term: u64, wb: &mut WriteBatch<'_>) -> i64 {
        let base = self.state.next_offset;
        record_batch::rebase(h.bytes(), base, term as i32, &mut self.scratch);
        wb.put_batch(self.uid, base, &self.scratch);
        if h.max_timestamp() > self.state.max_timestamp {
            self.state.max_timestamp = h.max_timestamp();
            wb.put_time_index(self.uid, h.max_timestamp(), base);
        }
        self.state.next_offset += h.last_offset_delta() as i64 + 1;
        self.state.size_bytes += h.len() as u64;
        let pid = h.producer_id();
        if pid >= 0 {
            let entry = self.producers.entry(pid).or_default();
            entry.record(h, base);
            wb.put_producer_state(self.uid, pid, &entry.encode());
        }
        base
    }

    /// Moves the log start to `offset` (clamped to the log end) and deletes the batches
    /// wholly before it. Reads the store, so pending writes must be written first.
    pub fn trim(&mut self, engine: &Engine, offset: i64, wb: &mut WriteBatch<'_>) -> chronik_engine::Result<i64> {
        let target = offset.min(self.state.next_offset);
        if target <= self.state.log_start_offset {
            return Ok(self.state.log_start_offset);
        }
        // Keep the batch that contains the new start; delete whole batches before it.
        let keep_from = engine.batch_base_at(self.uid, target)?.unwrap_or(target).min(target);
        let freed: usize = engine.batch_sizes(self.uid, 0, keep_from)?.iter().map(|b| b.1).sum();
        wb.delete_batches_before(self.uid, keep_from);
        let dropped = engine.time_index_before(self.uid, keep_from)?;
        for (ts, base) in &dropped {
            wb.delete_time_index(self.uid, *ts, *base);
        }
        // The kept batches up to the next entry may hold timestamps up to the last
        // dropped entry's: point that entry at the first kept batch.
        if let Some((ts, _)) = dropped.last() {
            wb.put_time_index(self.uid, *ts, keep_from);
        }
        self.state.size_bytes = self.state.size_bytes.saturating_sub(freed as u64);
        self.state.log_start_offset = target;
        wb.put_partition_state(self.uid, &self.state);
        Ok(target)
    }
}

/// Decides whether `h` is new, a duplicate, or refused, given its producer's state.
fn check_sequence(entry: Option<&ProducerEntry>, h: &BatchHeader<'_>) -> Result<Sequencing, AppendError> {
    if h.producer_id() < 0 {
        return Ok(Sequencing::Fresh);
    }
    let Some(entry) = entry else {
        return Ok(Sequencing::Fresh);
    };
    let epoch = h.producer_epoch();
    if epoch < entry.epoch {
        return Err(AppendError::InvalidProducerEpoch);
    }
    if epoch > entry.epoch {
        return if h.base_sequence() == 0 { Ok(Sequencing::Fresh) } else { Err(AppendError::OutOfOrderSequence) };
    }
    if let Some(dup) =
        entry.batches.iter().find(|b| b.first_sequence == h.base_sequence() && b.last_sequence == h.last_sequence())
    {
        return Ok(Sequencing::Duplicate(dup.base_offset));
    }
    let expected = entry.batches.back().map_or(0, |b| next_sequence(b.last_sequence));
    if h.base_sequence() == expected {
        Ok(Sequencing::Fresh)
    } else {
        Err(AppendError::OutOfOrderSequence)
    }
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_entry_round_trips() {
        let entry = ProducerEntry {
            epoch: 3,
            batches: VecDeque::from([BatchRecord { first_sequence: 0, last_sequence: 9, base_offset: 100 }]),
        };
        assert_eq!(ProducerEntry::decode(&entry.encode()), Some(entry));
        assert_eq!(ProducerEntry::decode(&[0, 1, 2]), None);
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(next_sequence(i32::MAX), 0);
        assert_eq!(next_sequence(4), 5);
    }
}
