use crate::{Error, Result};

/// The state row of one Raft group's applied state machine, stored next to the data
/// it describes and written in the same batch.
///
/// For the metadata group only `applied_index` / `applied_term` are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionState {
    /// Last Raft log index whose effects are in this store.
    pub applied_index: u64,
    pub applied_term: u64,
    /// First offset a reader may fetch.
    pub log_start_offset: i64,
    /// Offset the next appended record gets (the high watermark once applied).
    pub next_offset: i64,
    /// Greatest record timestamp appended so far (time-index entries only grow).
    pub max_timestamp: i64,
    /// Bytes of stored batches (for size-based retention).
    pub size_bytes: u64,
}

const VERSION: u8 = 1;
const LEN: usize = 1 + 8 * 6;

impl PartitionState {
    pub fn encode(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[0] = VERSION;
        let fields = [
            self.applied_index,
            self.applied_term,
            self.log_start_offset as u64,
            self.next_offset as u64,
            self.max_timestamp as u64,
            self.size_bytes,
        ];
        for (i, field) in fields.iter().enumerate() {
            out[1 + i * 8..9 + i * 8].copy_from_slice(&field.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<PartitionState> {
        if bytes.len() != LEN || bytes[0] != VERSION {
            return Err(Error::CorruptState(format!(
                "expected {LEN} bytes of version {VERSION}, got {} bytes",
                bytes.len()
            )));
        }
        let field = |i: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&bytes[1 + i * 8..9 + i * 8]);
            u64::from_be_bytes(raw)
        };
        Ok(PartitionState {
            applied_index: field(0),
            applied_term: field(1),
            log_start_offset: field(2) as i64,
            next_offset: field(3) as i64,
            max_timestamp: field(4) as i64,
            size_bytes: field(5),
        })
    }
}
