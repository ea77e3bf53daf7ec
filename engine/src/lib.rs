//! Chronik's storage engine: one RocksDB instance per node, synchronous.
//!
//! Layers: [`cf`] names the column families, [`keys`] encodes every key, [`Engine`]
//! reads, and [`WriteBatch`] is the only way to change state. The engine stores
//! bytes at offsets; it knows nothing of Kafka messages or Raft types.
//!
//! Architecture invariant: all applied state of a Raft round goes into one
//! [`WriteBatch`]. Those writes skip the RocksDB WAL (raft-engine holds the log),
//! so the column families are flushed atomically (`atomic_flush`): after a crash
//! the persisted applied index and the data it covers always match.

pub mod cf;
mod error;
pub mod keys;
mod state;

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DBCompressionType, Direction, Env, FlushOptions, IteratorMode, Options,
    ReadOptions, WriteOptions, DB,
};

pub use error::{Error, Result};
pub use state::PartitionState;

/// How durable a write must be before [`Engine::write`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Memtable only: the caller can rebuild the write (from the Raft log) after a crash.
    Memtable,
    /// RocksDB WAL, fsynced.
    Synced,
}

/// A node's store. Cheap to share behind an `Arc`; every method is thread-safe.
pub struct Engine {
    db: DB,
}

impl Engine {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Engine> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_atomic_flush(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        // Flushes and compactions run at nice 19, yielding the CPU to the Raft driver and
        // the connections: on two cores a flush otherwise held back acknowledgements for
        // hundreds of milliseconds. Starved for long, they stall writes, which frees the CPU.
        let mut env = Env::new()?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        opts.set_env(&env);
        let cfs = cf::ALL.iter().map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name)));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Engine { db })
    }

    /// Opens an existing store without the right to write (for offline tools).
    pub fn open_read_only(path: &Path) -> Result<Engine> {
        let opts = Options::default();
        let db = DB::open_cf_for_read_only(&opts, path, cf::ALL, false)?;
        Ok(Engine { db })
    }

    /// Opens the store of a possibly running node as a RocksDB secondary instance: it
    /// sees what the primary has flushed (applied writes skip the WAL, so memtables are
    /// invisible) and never writes to `path`. `scratch` holds the secondary's own files.
    pub fn open_secondary(path: &Path, scratch: &Path) -> Result<Engine> {
        let mut opts = Options::default();
        // A secondary must keep every file open: the primary may delete them at any time.
        opts.set_max_open_files(-1);
        let db = DB::open_cf_as_secondary(&opts, path, scratch, cf::ALL)?;
        db.try_catch_up_with_primary()?;
        Ok(Engine { db })
    }

    /// Writes a consistent copy of the store to `dir` (which must not exist, in a
    /// directory that does): flushes
    /// every column family atomically, then hard-links the immutable SST and blob files
    /// and copies the small metadata files. Every write made before the call is in it.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        self.flush()?;
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// Every state row of the `partition` column family, as (group id, state), in id order.
    pub fn partition_states(&self) -> Result<Vec<(u64, PartitionState)>> {
        let mut states = Vec::new();
        for item in self.db.iterator_cf(self.cf(cf::PARTITION), IteratorMode::Start) {
            let (key, value) = item?;
            // State rows are keyed by the bare uid; producer and epoch rows are longer.
            if let Ok(raw) = <[u8; 8]>::try_from(&key[..]) {
                states.push((u64::from_be_bytes(raw), PartitionState::decode(&value)?));
            }
        }
        Ok(states)
    }

    /// Rows of any column family with keys starting with `prefix`, in key order, for
    /// offline tools; `limit` caps how many are returned.
    pub fn scan(&self, cf_name: &str, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let handle = self.db.cf_handle(cf_name).ok_or(Error::UnknownColumnFamily(cf_name.to_string()))?;
        let mut rows = Vec::new();
        for item in self.db.iterator_cf(handle, IteratorMode::From(prefix, Direction::Forward)) {
            let (key, value) = item?;
            if !key.starts_with(prefix) || rows.len() >= limit {
                break;
            }
            rows.push((key.to_vec(), value.to_vec()));
        }
        Ok(rows)
    }

    /// The first key of a column family at or after `from`.
    pub fn next_key(&self, cf_name: &str, from: &[u8]) -> Result<Option<Vec<u8>>> {
        let handle = self.db.cf_handle(cf_name).ok_or(Error::UnknownColumnFamily(cf_name.to_string()))?;
        let mut iter = self.db.raw_iterator_cf(handle);
        iter.seek(from);
        iter.status()?;
        Ok(iter.key().map(<[u8]>::to_vec))
    }

    /// An empty batch of changes to this store.
    pub fn batch(&self) -> WriteBatch<'_> {
        WriteBatch { engine: self, inner: rocksdb::WriteBatch::default() }
    }

    /// A batch with room for `bytes` reserved, for large batches of known size (a batch
    /// that grows by doubling copies its contents each time).
    pub fn batch_with_capacity(&self, bytes: usize) -> WriteBatch<'_> {
        WriteBatch { engine: self, inner: rocksdb::WriteBatch::with_capacity_bytes(bytes) }
    }

    /// Applies `batch` atomically.
    pub fn write(&self, batch: WriteBatch, durability: Durability) -> Result<()> {
        let mut opts = WriteOptions::default();
        match durability {
            Durability::Memtable => opts.disable_wal(true),
            Durability::Synced => opts.set_sync(true),
        }
        self.db.write_opt(batch.inner, &opts)?;
        Ok(())
    }

    /// Flushes all memtables to SST files (atomically across column families) and waits.
    /// Everything written before the call is durable afterwards.
    pub fn flush(&self) -> Result<()> {
        let mut opts = FlushOptions::default();
        opts.set_wait(true);
        let handles: Vec<_> = cf::ALL.iter().map(|name| self.cf(name)).collect();
        self.db.flush_cfs_opt(&handles, &opts)?;
        Ok(())
    }

    /// Appends the stored batches of partition `uid` whose base offset is in
    /// `[batch containing from, end)` to `out`, stopping before `max_bytes` would be
    /// exceeded. With `min_one`, the first batch is appended even if it alone is larger.
    /// Returns the number of batches appended. Callers that read much size `out` first:
    /// growing it by doubling copies the data again.
    pub fn read_batches(
        &self,
        uid: u64,
        from: i64,
        end: i64,
        max_bytes: usize,
        min_one: bool,
        out: &mut Vec<u8>,
    ) -> Result<usize> {
        let Some(start) = self.batch_base_at(uid, from)? else {
            return Ok(0);
        };
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::log_key(uid, end.max(0)).to_vec());
        // Every batch carries its own CRC-32C, which consumers verify end to end; RocksDB's
        // block and blob checksums on top (a software CRC in this build) cost over half of
        // the fetch path's CPU (perf), so reads of record data skip them.
        opts.set_verify_checksums(false);
        // A raw iterator lends each value in place; the plain one copies it into a box.
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(cf::LOG), opts);
        iter.seek(keys::log_key(uid, start));
        let (mut count, mut used) = (0, 0usize);
        while let Some(value) = iter.value() {
            if used + value.len() > max_bytes && !(min_one && count == 0) {
                break;
            }
            used += value.len();
            out.extend_from_slice(value);
            count += 1;
            iter.next();
        }
        iter.status()?;
        Ok(count)
    }

    /// Base offset of the stored batch that contains `offset`: the greatest base offset
    /// `<= offset` (offsets are dense, so that batch holds it), or the first batch if
    /// `offset` lies before the log. `None` if the partition has no batches.
    pub fn batch_base_at(&self, uid: u64, offset: i64) -> Result<Option<i64>> {
        // Positioning the iterator loads the batch it lands on (a blob) although only
        // its key is used: at least skip the blob's checksum (9% of fetch CPU in perf).
        let mut opts = ReadOptions::default();
        opts.set_verify_checksums(false);
        let mut iter = self.db.raw_iterator_cf_opt(self.cf(cf::LOG), opts);
        iter.seek_for_prev(keys::log_key(uid, offset.max(0)));
        if let Some((owner, base)) = iter.key().and_then(keys::decode_log_key) {
            if owner == uid {
                return Ok(Some(base));
            }
        }
        iter.seek(keys::log_key(uid, 0));
        iter.status()?;
        Ok(iter.key().and_then(keys::decode_log_key).filter(|(owner, _)| *owner == uid).map(|(_, base)| base))
    }

    /// The stored batch at exactly `base_offset`.
    pub fn stored_batch(&self, uid: u64, base_offset: i64) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf::LOG), keys::log_key(uid, base_offset))?)
    }

    /// Stored batches of `uid` with base offset in `[from, end)`, as (base offset, size).
    pub fn batch_sizes(&self, uid: u64, from: i64, end: i64) -> Result<Vec<(i64, usize)>> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::log_key(uid, end.max(0)).to_vec());
        let lower = keys::log_key(uid, from.max(0));
        let iter = self.db.iterator_cf_opt(self.cf(cf::LOG), opts, IteratorMode::From(&lower, Direction::Forward));
        let mut sizes = Vec::new();
        for item in iter {
            let (key, value) = item?;
            let (_, base) = keys::decode_log_key(&key).ok_or(Error::CorruptKey(cf::LOG))?;
            sizes.push((base, value.len()));
        }
        Ok(sizes)
    }

    /// The first time-index entry of `uid` whose timestamp is `>= timestamp`, as
    /// (timestamp, base offset).
    pub fn time_index_seek(&self, uid: u64, timestamp: i64) -> Result<Option<(i64, i64)>> {
        let mut iter = self.db.raw_iterator_cf(self.cf(cf::TIME_INDEX));
        iter.seek(keys::time_index_key(uid, timestamp, 0));
        iter.status()?;
        Ok(iter.key().and_then(keys::decode_time_index_key).filter(|e| e.0 == uid).map(|e| (e.1, e.2)))
    }

    /// The last time-index entry of `uid` (the greatest timestamp), as (timestamp, base offset).
    pub fn time_index_last(&self, uid: u64) -> Result<Option<(i64, i64)>> {
        let mut iter = self.db.raw_iterator_cf(self.cf(cf::TIME_INDEX));
        iter.seek_for_prev(keys::time_index_key(uid, i64::MAX, i64::MAX));
        iter.status()?;
        Ok(iter.key().and_then(keys::decode_time_index_key).filter(|e| e.0 == uid).map(|e| (e.1, e.2)))
    }

    /// Time-index entries of `uid` whose base offset is below `offset`, in order.
    pub fn time_index_before(&self, uid: u64, offset: i64) -> Result<Vec<(i64, i64)>> {
        let prefix = keys::uid_prefix(uid);
        let iter = self.db.prefix_iterator_cf(self.cf(cf::TIME_INDEX), prefix);
        let mut entries = Vec::new();
        for item in iter {
            let (key, _) = item?;
            match keys::decode_time_index_key(&key) {
                Some((owner, ts, base)) if owner == uid && base < offset => entries.push((ts, base)),
                _ => break,
            }
        }
        Ok(entries)
    }

    /// The state row of partition (or Raft group) `uid`.
    pub fn partition_state(&self, uid: u64) -> Result<Option<PartitionState>> {
        match self.db.get_cf(self.cf(cf::PARTITION), keys::uid_prefix(uid))? {
            Some(bytes) => Ok(Some(PartitionState::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// All producer-state rows of partition `uid`, as (producer id, value).
    pub fn producer_states(&self, uid: u64) -> Result<Vec<(i64, Vec<u8>)>> {
        self.tagged_rows(uid, keys::decode_producer_key)
    }

    /// The leader epochs of partition `uid` with the offset each began at, in order.
    pub fn epoch_starts(&self, uid: u64) -> Result<Vec<(i64, i64)>> {
        let rows = self.tagged_rows(uid, keys::decode_epoch_key)?;
        rows.into_iter()
            .map(|(epoch, value)| {
                let raw: [u8; 8] = value.as_slice().try_into().map_err(|_| Error::CorruptKey(cf::PARTITION))?;
                Ok((epoch, i64::from_be_bytes(raw)))
            })
            .collect()
    }

    fn tagged_rows(&self, uid: u64, decode: fn(&[u8]) -> Option<(u64, i64)>) -> Result<Vec<(i64, Vec<u8>)>> {
        let prefix = keys::uid_prefix(uid);
        let mut rows = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(cf::PARTITION), prefix) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            if let Some((_, id)) = decode(&key) {
                rows.push((id, value.to_vec()));
            }
        }
        Ok(rows)
    }

    /// The group rows of partition `uid` whose key (after the uid) starts with `prefix`,
    /// as (key without the uid, value), in key order.
    pub fn group_rows(&self, uid: u64, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = [&keys::uid_prefix(uid)[..], prefix].concat();
        let mut rows = Vec::new();
        let iter = self.db.iterator_cf(self.cf(cf::GROUPS), IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(&start) {
                break;
            }
            rows.push((key[8..].to_vec(), value.to_vec()));
        }
        Ok(rows)
    }

    /// All rows of the `cluster` column family whose key starts with `prefix`.
    pub fn cluster_scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows = Vec::new();
        let iter = self.db.iterator_cf(self.cf(cf::CLUSTER), IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (key, value) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            rows.push((key.to_vec(), value.to_vec()));
        }
        Ok(rows)
    }

    /// One row of the `cluster` column family.
    pub fn cluster_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf::CLUSTER), key)?)
    }

    /// One row of the `meta` column family.
    pub fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf::META), key)?)
    }

    /// A RocksDB property of one column family (for metrics and the dump tool).
    pub fn property_u64(&self, cf_name: &str, name: &str) -> Result<Option<u64>> {
        Ok(self.db.property_int_value_cf(self.cf(cf_name), name)?)
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Every name in cf::ALL is opened in `open`, and callers only pass those constants.
        self.db.cf_handle(name).expect("column family opened at start-up")
    }
}

fn cf_options(name: &str) -> Options {
    let mut opts = Options::default();
    if name == cf::LOG {
        // Batches are stored as producers compressed them; compressing again buys little.
        opts.set_compression_type(DBCompressionType::None);
        opts.set_write_buffer_size(128 << 20);
        opts.set_target_file_size_base(128 << 20);
        // Batch bytes go to blob files when memtables flush; compactions then move only
        // keys. With many partitions interleaved in every flush, rewriting the values in
        // compaction cost a quarter of the CPU on the produce path (measured with perf).
        opts.set_enable_blob_files(true);
        opts.set_min_blob_size(4096);
        opts.set_blob_file_size(256 << 20);
        // Blob garbage collection relocates the live batches of the oldest blob files
        // when compaction passes their keys. The default age cutoff (the oldest quarter)
        // rewrote recent batches over and over in a young store: a third write of every
        // byte, 22% of the node's CPU in a 3 GB produce (perf). Only the oldest 5% of
        // blob files are collected now, where retention has left mostly garbage, and a
        // compaction is forced when more than half of theirs is garbage (a topic with
        // long retention pinning files that short-lived topics share with it).
        opts.set_enable_blob_gc(true);
        opts.set_blob_gc_age_cutoff(0.05);
        opts.set_blob_gc_force_threshold(0.5);
        let mut table = BlockBasedOptions::default();
        table.set_block_size(64 << 10);
        opts.set_block_based_table_factory(&table);
    } else {
        opts.set_compression_type(DBCompressionType::Lz4);
    }
    // Writes stop once three full memtables wait for their flush (RocksDB's default
    // stops at two), in every column family: an atomic flush switches all of them
    // together, so the small ones collect memtables waiting for a flush as fast as `log`
    // does. Each flush writes its batches into blob files in fresh page-cache memory;
    // where that is slow (this VM), a GiB on 16 partitions stopped every write at each
    // memtable switch until the flush before it finished (RocksDB's LOG: `time_index`
    // and `partition` at two). Not four: from four on RocksDB first slows writes to 16
    // MiB/s at three waiting, which put the 16-partition p99 at 15-59 ms (10-11 at three).
    // Peak: 512 MiB of `log` memtables.
    opts.set_max_write_buffer_number(3);
    opts.set_level_compaction_dynamic_level_bytes(true);
    opts
}

/// Changes to apply atomically with [`Engine::write`]; made by [`Engine::batch`].
pub struct WriteBatch<'a> {
    engine: &'a Engine,
    inner: rocksdb::WriteBatch,
}

impl WriteBatch<'_> {
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Bytes the batch holds (its encoded size).
    pub fn size_in_bytes(&self) -> usize {
        self.inner.size_in_bytes()
    }

    /// Writes what the batch holds so far (memtable only, like an apply write) and
    /// empties it, so that later reads see it. The next batch gets room for twice as
    /// much: a caller that writes once past a limit overshoots it by up to one value, and
    /// a batch that outgrows its room copies all it holds (profiled: a third of the
    /// apply's copies into write batches).
    pub fn write_now(&mut self) -> Result<()> {
        let size = self.inner.size_in_bytes();
        let batch = std::mem::replace(&mut self.inner, rocksdb::WriteBatch::with_capacity_bytes(2 * size));
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.engine.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// Stores one batch of partition `uid` at `base_offset`.
    pub fn put_batch(&mut self, uid: u64, base_offset: i64, data: &[u8]) {
        self.put(cf::LOG, &keys::log_key(uid, base_offset), data);
    }

    pub fn put_time_index(&mut self, uid: u64, timestamp: i64, base_offset: i64) {
        self.put(cf::TIME_INDEX, &keys::time_index_key(uid, timestamp, base_offset), &[]);
    }

    pub fn delete_time_index(&mut self, uid: u64, timestamp: i64, base_offset: i64) {
        let key = keys::time_index_key(uid, timestamp, base_offset);
        self.inner.delete_cf(self.engine.cf(cf::TIME_INDEX), key);
    }

    /// Deletes the batches of `uid` whose base offset is below `offset`.
    pub fn delete_batches_before(&mut self, uid: u64, offset: i64) {
        let (from, to) = (keys::log_key(uid, 0), keys::log_key(uid, offset.max(0)));
        self.inner.delete_range_cf(self.engine.cf(cf::LOG), from, to);
    }

    pub fn put_partition_state(&mut self, uid: u64, state: &PartitionState) {
        self.put(cf::PARTITION, &keys::uid_prefix(uid), &state.encode());
    }

    pub fn put_producer_state(&mut self, uid: u64, producer_id: i64, value: &[u8]) {
        self.put(cf::PARTITION, &keys::producer_key(uid, producer_id), value);
    }

    pub fn put_epoch_start(&mut self, uid: u64, epoch: i64, start_offset: i64) {
        self.put(cf::PARTITION, &keys::epoch_key(uid, epoch), &start_offset.to_be_bytes());
    }

    /// Stores a group row of partition `uid` (see [`Engine::group_rows`]).
    pub fn put_group_row(&mut self, uid: u64, key: &[u8], value: &[u8]) {
        self.put(cf::GROUPS, &[&keys::uid_prefix(uid)[..], key].concat(), value);
    }

    /// Deletes the group rows of partition `uid` whose key starts with `prefix`.
    pub fn delete_group_rows(&mut self, uid: u64, prefix: &[u8]) {
        let from = [&keys::uid_prefix(uid)[..], prefix].concat();
        match keys::prefix_end(&from) {
            Some(to) => self.inner.delete_range_cf(self.engine.cf(cf::GROUPS), from, to),
            None => self.inner.delete_cf(self.engine.cf(cf::GROUPS), from),
        }
    }

    /// Deletes everything stored for partition `uid`: batches, time index, state and group rows.
    pub fn delete_partition(&mut self, uid: u64) {
        let (from, to) = (keys::uid_prefix(uid), keys::uid_prefix(uid + 1));
        for name in [cf::LOG, cf::TIME_INDEX, cf::PARTITION, cf::GROUPS] {
            self.inner.delete_range_cf(self.engine.cf(name), from, to);
        }
    }

    pub fn put_cluster(&mut self, key: &[u8], value: &[u8]) {
        self.put(cf::CLUSTER, key, value);
    }

    pub fn delete_cluster(&mut self, key: &[u8]) {
        self.inner.delete_cf(self.engine.cf(cf::CLUSTER), key);
    }

    pub fn put_meta(&mut self, key: &[u8], value: &[u8]) {
        self.put(cf::META, key, value);
    }

    fn put(&mut self, cf_name: &str, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.engine.cf(cf_name), key, value);
    }
}

#[cfg(test)]
mod tests;
