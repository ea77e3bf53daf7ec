//! A read-only view of the fixed header of a Kafka v2 record batch.
//!
//! Batches are stored as producers sent them; the broker only needs the header to
//! assign offsets, check the CRC and deduplicate producers. Decoding records (and
//! decompressing them) is left to `kafka-protocol` where it is really needed.

use std::fmt;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;
/// Bytes of the header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` and `batchLength` precede the length-counted part.
const LOG_OVERHEAD: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    Truncated { needed: usize, available: usize },
    BadLength(i32),
    UnsupportedMagic(i8),
    CrcMismatch { stored: u32, computed: u32 },
    BadRecordCount { count: i32, last_offset_delta: i32 },
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { needed, available } => {
                write!(f, "record batch truncated: needs {needed} bytes, {available} available")
            }
            BatchError::BadLength(len) => write!(f, "invalid record batch length {len}"),
            BatchError::UnsupportedMagic(m) => write!(f, "unsupported record batch magic {m} (only v2)"),
            BatchError::CrcMismatch { stored, computed } => {
                write!(f, "record batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            BatchError::BadRecordCount { count, last_offset_delta } => {
                write!(f, "record count {count} does not match last offset delta {last_offset_delta}")
            }
        }
    }
}

impl std::error::Error for BatchError {}

/// The header of one v2 batch at the front of a byte slice.
#[derive(Debug, Clone, Copy)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

impl<'a> BatchHeader<'a> {
    /// Parses the batch at the front of `bytes` (framing and magic only; no CRC check).
    pub fn parse(bytes: &'a [u8]) -> Result<BatchHeader<'a>, BatchError> {
        if bytes.len() < HEADER_LEN {
            return Err(BatchError::Truncated { needed: HEADER_LEN, available: bytes.len() });
        }
        let length = i32_at(bytes, BATCH_LENGTH);
        if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(BatchError::BadLength(length));
        }
        let total = LOG_OVERHEAD + length as usize;
        if bytes.len() < total {
            return Err(BatchError::Truncated { needed: total, available: bytes.len() });
        }
        let magic = bytes[MAGIC] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(BatchHeader { bytes: &bytes[..total] })
    }

    /// Parses and also checks the CRC-32C and the record count.
    pub fn parse_checked(bytes: &'a [u8]) -> Result<BatchHeader<'a>, BatchError> {
        let header = Self::parse_counted(bytes)?;
        let stored = u32::from_be_bytes(header.bytes[CRC..CRC + 4].try_into().unwrap_or_default());
        let computed = crc32c::crc32c(&header.bytes[ATTRIBUTES..]);
        if stored != computed {
            return Err(BatchError::CrcMismatch { stored, computed });
        }
        Ok(header)
    }

    /// Parses and also checks the record count, which offsets are assigned from.
    fn parse_counted(bytes: &'a [u8]) -> Result<BatchHeader<'a>, BatchError> {
        let header = Self::parse(bytes)?;
        let (count, last_offset_delta) = (header.records_count(), header.last_offset_delta());
        if count <= 0 || last_offset_delta != count - 1 {
            return Err(BatchError::BadRecordCount { count, last_offset_delta });
        }
        Ok(header)
    }

    /// The whole batch, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn base_offset(&self) -> i64 {
        i64_at(self.bytes, BASE_OFFSET)
    }

    pub fn attributes(&self) -> i16 {
        i16_at(self.bytes, ATTRIBUTES)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }

    pub fn last_offset_delta(&self) -> i32 {
        i32_at(self.bytes, LAST_OFFSET_DELTA)
    }

    pub fn base_timestamp(&self) -> i64 {
        i64_at(self.bytes, BASE_TIMESTAMP)
    }

    pub fn max_timestamp(&self) -> i64 {
        i64_at(self.bytes, MAX_TIMESTAMP)
    }

    pub fn producer_id(&self) -> i64 {
        i64_at(self.bytes, PRODUCER_ID)
    }

    pub fn producer_epoch(&self) -> i16 {
        i16_at(self.bytes, PRODUCER_EPOCH)
    }

    pub fn base_sequence(&self) -> i32 {
        i32_at(self.bytes, BASE_SEQUENCE)
    }

    pub fn records_count(&self) -> i32 {
        i32_at(self.bytes, RECORDS_COUNT)
    }

    pub fn partition_leader_epoch(&self) -> i32 {
        i32_at(self.bytes, PARTITION_LEADER_EPOCH)
    }

    /// The sequence number of the last record (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        let last = self.base_sequence() as i64 + self.last_offset_delta() as i64;
        (last % (i32::MAX as i64 + 1)) as i32
    }
}

/// Splits a `records` field into its batches, checking each one (CRC-32C included).
pub fn batches(records: &[u8]) -> impl Iterator<Item = Result<BatchHeader<'_>, BatchError>> {
    split(records, BatchHeader::parse_checked)
}

/// Splits batches that were checked when produced (a Raft entry's), checking framing
/// and record counts but not the CRC-32C again. A Kafka follower rechecks it and
/// refetches on a mismatch; a Raft apply cannot refuse a committed entry on one replica
/// without its state diverging, so the check belongs before the proposal (the produce
/// path), and raft-engine checksums the entries it stores.
pub fn produced_batches(records: &[u8]) -> impl Iterator<Item = Result<BatchHeader<'_>, BatchError>> {
    split(records, BatchHeader::parse_counted)
}

fn split<'a>(
    mut records: &'a [u8],
    parse: fn(&'a [u8]) -> Result<BatchHeader<'a>, BatchError>,
) -> impl Iterator<Item = Result<BatchHeader<'a>, BatchError>> {
    std::iter::from_fn(move || {
        if records.is_empty() {
            return None;
        }
        match parse(records) {
            Ok(header) => {
                records = &records[header.len()..];
                Some(Ok(header))
            }
            Err(e) => {
                records = &[];
                Some(Err(e))
            }
        }
    })
}

/// Copies a batch with its base offset and partition leader epoch replaced. Neither
/// field is covered by the CRC, which starts at `attributes`.
pub fn rebase(batch: &[u8], base_offset: i64, leader_epoch: i32, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(batch);
    out[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    out[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronik_tests::raw::TestBatch;
    use kafka_protocol::records::Compression;

    fn encode(count: usize, producer_id: i64, base_sequence: i32, compression: Compression) -> Vec<u8> {
        let values: Vec<String> = (0..count).map(|i| format!("value {i}")).collect();
        let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        let spec = TestBatch { producer_id, producer_epoch: 0, base_sequence, compression, first_timestamp: 1000 };
        spec.encode(&values).to_vec()
    }

    #[test]
    fn header_fields_match_what_the_encoder_wrote() {
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let bytes = encode(5, 42, 7, compression);
            let h = BatchHeader::parse_checked(&bytes).expect("valid batch");
            assert_eq!(h.len(), bytes.len());
            assert_eq!((h.records_count(), h.last_offset_delta()), (5, 4));
            assert_eq!((h.producer_id(), h.base_sequence(), h.last_sequence()), (42, 7, 11));
            assert_eq!((h.base_timestamp(), h.max_timestamp()), (1000, 1004));
            assert!(!h.is_transactional() && !h.is_control());
        }
    }

    #[test]
    fn rebasing_keeps_the_crc_valid() {
        let bytes = encode(3, -1, 0, Compression::Lz4);
        let mut out = Vec::new();
        rebase(&bytes, 1234, 9, &mut out);
        let h = BatchHeader::parse_checked(&out).expect("still valid");
        assert_eq!((h.base_offset(), h.partition_leader_epoch()), (1234, 9));
    }

    #[test]
    fn damage_is_detected_and_named() {
        let bytes = encode(3, -1, 0, Compression::None);
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(BatchHeader::parse_checked(&flipped), Err(BatchError::CrcMismatch { .. })));
        assert!(matches!(BatchHeader::parse(&bytes[..30]), Err(BatchError::Truncated { .. })));
        assert!(matches!(BatchHeader::parse(&bytes[..bytes.len() - 1]), Err(BatchError::Truncated { .. })));
        let mut magic = bytes.clone();
        magic[MAGIC] = 1;
        assert_eq!(BatchHeader::parse(&magic).map(|h| h.len()), Err(BatchError::UnsupportedMagic(1)));
        let mut negative = bytes;
        negative[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(BatchHeader::parse(&negative).map(|h| h.len()), Err(BatchError::BadLength(-5)));
    }

    #[test]
    fn batches_splits_concatenated_batches_and_stops_at_damage() {
        let mut two = encode(2, -1, 0, Compression::None);
        two.extend(encode(3, -1, 0, Compression::Gzip));
        let counts: Vec<i32> = batches(&two).map(|b| b.expect("valid").records_count()).collect();
        assert_eq!(counts, vec![2, 3]);
        two.push(0);
        assert!(batches(&two).last().expect("an item").is_err());
    }

    #[test]
    fn produced_batches_skip_the_crc_but_not_the_record_count() {
        let mut bytes = encode(3, -1, 0, Compression::None);
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        assert!(batches(&bytes).next().expect("an item").is_err());
        let counts: Vec<i32> = produced_batches(&bytes).map(|b| b.expect("framed").records_count()).collect();
        assert_eq!(counts, vec![3]);
        bytes[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&5i32.to_be_bytes());
        let error = produced_batches(&bytes).next().expect("an item");
        assert!(matches!(error, Err(BatchError::BadRecordCount { count: 5, last_offset_delta: 2 })), "{error:?}");
    }
}
