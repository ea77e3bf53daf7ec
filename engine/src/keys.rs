//! Key encodings. Integers are big-endian so that byte order is numeric order;
//! signed values are stored with the sign bit flipped for the same reason.

/// `meta`: this node's id (u64 BE), written once at first start.
pub const META_NODE_ID: &[u8] = b"node_id";
/// `meta`: the cluster id (UTF-8), written once at first start.
pub const META_CLUSTER_ID: &[u8] = b"cluster_id";

/// Flips the sign bit so that signed integers sort correctly as unsigned bytes.
fn order_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn unorder_i64(bytes: &[u8]) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(bytes);
    (u64::from_be_bytes(raw) ^ (1 << 63)) as i64
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(bytes);
    u64::from_be_bytes(raw)
}

/// `uid` alone: the partition state row, and the prefix of every per-partition key.
pub fn uid_prefix(uid: u64) -> [u8; 8] {
    uid.to_be_bytes()
}

/// `log`: uid ++ base offset.
pub fn log_key(uid: u64, base_offset: i64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&uid.to_be_bytes());
    key[8..].copy_from_slice(&order_i64(base_offset));
    key
}

pub fn decode_log_key(key: &[u8]) -> Option<(u64, i64)> {
    (key.len() == 16).then(|| (read_u64(&key[..8]), unorder_i64(&key[8..])))
}

/// `time_index`: uid ++ timestamp ++ base offset.
pub fn time_index_key(uid: u64, timestamp: i64, base_offset: i64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..8].copy_from_slice(&uid.to_be_bytes());
    key[8..16].copy_from_slice(&order_i64(timestamp));
    key[16..].copy_from_slice(&order_i64(base_offset));
    key
}

pub fn decode_time_index_key(key: &[u8]) -> Option<(u64, i64, i64)> {
    (key.len() == 24).then(|| (read_u64(&key[..8]), unorder_i64(&key[8..16]), unorder_i64(&key[16..])))
}

const PRODUCER_TAG: u8 = b'p';
const EPOCH_TAG: u8 = b'e';

/// `partition`: uid ++ 'p' ++ producer id (a producer-state row).
pub fn producer_key(uid: u64, producer_id: i64) -> [u8; 17] {
    tagged_key(uid, PRODUCER_TAG, producer_id)
}

pub fn decode_producer_key(key: &[u8]) -> Option<(u64, i64)> {
    decode_tagged_key(key, PRODUCER_TAG)
}

/// `partition`: uid ++ 'e' ++ leader epoch (the offset at which that epoch began).
pub fn epoch_key(uid: u64, epoch: i64) -> [u8; 17] {
    tagged_key(uid, EPOCH_TAG, epoch)
}

pub fn decode_epoch_key(key: &[u8]) -> Option<(u64, i64)> {
    decode_tagged_key(key, EPOCH_TAG)
}

fn tagged_key(uid: u64, tag: u8, value: i64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..8].copy_from_slice(&uid.to_be_bytes());
    key[8] = tag;
    key[9..].copy_from_slice(&order_i64(value));
    key
}

fn decode_tagged_key(key: &[u8], tag: u8) -> Option<(u64, i64)> {
    (key.len() == 17 && key[8] == tag).then(|| (read_u64(&key[..8]), unorder_i64(&key[9..])))
}

/// The smallest key greater than every key that starts with `prefix` (exclusive end of
/// a prefix range); `None` when no such key exists (all bytes 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn log_key_round_trips_and_sorts(uid in any::<u64>(), a in any::<i64>(), b in any::<i64>()) {
            prop_assert_eq!(decode_log_key(&log_key(uid, a)), Some((uid, a)));
            prop_assert_eq!(log_key(uid, a).cmp(&log_key(uid, b)), a.cmp(&b));
        }

        #[test]
        fn time_index_key_round_trips_and_sorts(uid in any::<u64>(), t1 in any::<i64>(), t2 in any::<i64>(), o in any::<i64>()) {
            prop_assert_eq!(decode_time_index_key(&time_index_key(uid, t1, o)), Some((uid, t1, o)));
            prop_assert_eq!(time_index_key(uid, t1, o).cmp(&time_index_key(uid, t2, o)), t1.cmp(&t2));
        }
    }

    #[test]
    fn tagged_keys_round_trip_and_do_not_collide() {
        assert_eq!(decode_producer_key(&producer_key(3, -5)), Some((3, -5)));
        assert_eq!(decode_epoch_key(&epoch_key(3, 9)), Some((3, 9)));
        assert_eq!(decode_epoch_key(&producer_key(3, 9)), None);
        assert!(epoch_key(3, i64::MAX) < producer_key(3, i64::MIN));
    }

    #[test]
    fn partitions_do_not_interleave() {
        assert!(log_key(1, i64::MAX) < log_key(2, -1));
        assert!(uid_prefix(1).as_slice() < log_key(1, i64::MIN).as_slice());
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        let end = prefix_end(b"ab\xff").unwrap();
        assert!(b"ab\xff\xff\xff".as_slice() < end.as_slice());
    }

    #[test]
    fn wrong_lengths_do_not_decode() {
        assert_eq!(decode_log_key(&[0; 15]), None);
        assert_eq!(decode_time_index_key(&[0; 16]), None);
    }
}
