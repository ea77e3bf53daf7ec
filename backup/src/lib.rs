//! Backups of a node's RocksDB store to object storage.
//!
//! Layers: [`codec`] compresses and checksums byte streams, [`manifest`] describes a
//! backup, [`store`] holds objects (a local directory, or an object storage service
//! through [`remote`]), and [`BackupStore`] moves checkpoints to and from a location. Everything here blocks: async callers use `spawn_blocking`. Layout under
//! the location:
//!
//! ```text
//! backups/<id>/manifest.json          written last: a backup without it does not exist
//! backups/<id>/files/<name>[.zst|.gz] the files this backup uploaded
//! ```
//!
//! Invariant: a stored object is never rewritten. SST and blob files are immutable,
//! so a later backup refers to an earlier backup's object when a file of the same
//! name, size and CRC32 is already stored; `prune` deletes an object only when no
//! kept manifest refers to it.

pub mod codec;
mod error;
pub mod manifest;
pub mod remote;
pub mod store;

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use chronik_engine::{keys, Engine};

pub use error::{Error, Result};
pub use manifest::{Compression, FileEntry, GroupApplied, Manifest};
use remote::RemoteStore;
use store::{LocalStore, ObjectStore};

/// Files moved at once, each on its own thread (compression is the CPU cost).
const CONCURRENT_FILES: usize = 4;

/// Receives progress of a long operation. Every method has a no-op default.
pub trait Progress: Send + Sync {
    /// The operation will move `total_bytes` (plain) in `files` files.
    fn begin(&self, _total_bytes: u64, _files: usize) {}
    /// `bytes` more plain bytes were read or written.
    fn advance(&self, _bytes: u64) {}
    /// One file is done; `moved` is false when it was referred to, not transferred.
    fn file_done(&self, _name: &str, _moved: bool) {}
}

/// Progress that nobody watches.
pub struct NoProgress;

impl Progress for NoProgress {}

/// What verifying a backup found: every file checked, in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub files: usize,
    pub bytes: u64,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub backups: Vec<String>,
    pub objects: usize,
}

/// A backup location.
#[derive(Clone)]
pub struct BackupStore {
    store: Arc<dyn ObjectStore>,
    url: String,
}

impl BackupStore {
    /// Opens a location: a directory path, `file:///abs/dir`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix` or `az://container/prefix`.
    pub fn open(location: &str) -> Result<BackupStore> {
        let bad = |reason: String| Error::BadUrl { url: location.to_string(), reason };
        let dir = match location.split_once("://") {
            Some(("file", path)) if path.starts_with('/') => PathBuf::from(path),
            Some(("file", _)) => return Err(bad("a file:// URL needs an absolute path (file:///dir)".into())),
            Some(("s3" | "gs" | "az", _)) => {
                let store = RemoteStore::open(location).map_err(bad)?;
                return Ok(BackupStore { store: Arc::new(store), url: location.to_string() });
            }
            Some((scheme, _)) => {
                return Err(bad(format!("unknown scheme {scheme:?}; use a directory, file://, s3://, gs:// or az://")))
            }
            None if location.is_empty() => return Err(bad("empty location".into())),
            None => PathBuf::from(location),
        };
        let store =
            LocalStore::new(&dir).map_err(|e| bad(format!("cannot create directory {}: {e}", dir.display())))?;
        Ok(BackupStore { store: Arc::new(store), url: location.to_string() })
    }

    /// A location on a store built by the caller (remote stores, tests).
    pub fn with_store(store: Arc<dyn ObjectStore>, url: &str) -> BackupStore {
        BackupStore { store, url: url.to_string() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn store_err(&self, what: &str) -> impl Fn(io::Error) -> Error + '_ {
        let what = what.to_string();
        move |e| Error::Io { path: PathBuf::from(format!("{}/{what}", self.url)), source: e }
    }

    /// Every complete backup, oldest first.
    pub fn list(&self) -> Result<Vec<Manifest>> {
        let mut manifests = Vec::new();
        for key in self.store.list("backups/").map_err(self.store_err("backups"))? {
            let mut parts = key.split('/');
            if let (Some("backups"), Some(id), Some("manifest.json"), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            {
                manifests.push(self.manifest(id)?);
            }
        }
        manifests.sort_by(|a, b| (a.created_at_unix_ms, &a.id).cmp(&(b.created_at_unix_ms, &b.id)));
        Ok(manifests)
    }

    /// The manifest of backup `id`.
    pub fn manifest(&self, id: &str) -> Result<Manifest> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(Error::Invalid(format!("invalid backup id {id:?}")));
        }
        let object = format!("backups/{id}/manifest.json");
        let mut bytes = Vec::new();
        match self.store.get(&object) {
            Ok(mut reader) => reader.read_to_end(&mut bytes).map_err(self.store_err(&object))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound { id: id.to_string(), url: self.url.clone() })
            }
            Err(e) => return Err(self.store_err(&object)(e)),
        };
        let manifest = Manifest::from_json(&object, &bytes)?;
        if manifest.id != id {
            return Err(Error::BadManifest { object, detail: format!("it names backup {:?}", manifest.id) });
        }
        Ok(manifest)
    }

    /// Backs up `engine`: checkpoints it into `scratch/<id>` (same filesystem as the
    /// store, so SST files are hard links), uploads the files the location lacks, writes
    /// the manifest, and removes the checkpoint. The node keeps serving meanwhile.
    pub fn create(
        &self,
        engine: &Engine,
        scratch: &Path,
        compression: Compression,
        progress: &dyn Progress,
    ) -> Result<Manifest> {
        let (id, created_at, created_at_unix_ms) = new_id();
        let checkpoint = scratch.join(&id);
        std::fs::create_dir_all(scratch).map_err(Error::io(scratch))?;
        let result = self.create_from(engine, &checkpoint, &id, created_at, created_at_unix_ms, compression, progress);
        if checkpoint.exists() {
            if let Err(e) = std::fs::remove_dir_all(&checkpoint) {
                tracing::warn!(path = %checkpoint.display(), error = %e, "cannot remove the backup checkpoint");
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn create_from(
        &self,
        engine: &Engine,
        checkpoint: &Path,
        id: &str,
        created_at: String,
        created_at_unix_ms: u64,
        compression: Compression,
        progress: &dyn Progress,
    ) -> Result<Manifest> {
        engine.checkpoint(checkpoint)?;
        // Ids and applied indexes come from the checkpoint itself, not the live store.
        let (node_id, cluster_id, groups) = {
            let copy = Engine::open_read_only(checkpoint)?;
            let node_id = copy
                .meta_get(keys::META_NODE_ID)?
                .and_then(|raw| <[u8; 8]>::try_from(raw.as_slice()).ok())
                .map_or(0, u64::from_be_bytes);
            let cluster_id =
                copy.meta_get(keys::META_CLUSTER_ID)?.map(|raw| String::from_utf8_lossy(&raw).into_owned());
            let groups = copy
                .partition_states()?
                .into_iter()
                .map(|(group, s)| GroupApplied { group, applied_index: s.applied_index, applied_term: s.applied_term })
                .collect::<Vec<_>>();
            (node_id, cluster_id.unwrap_or_default(), groups)
        };

        let files = checkpoint_files(checkpoint)?;
        let known = self.known_objects()?;
        progress.begin(files.iter().map(|(_, size)| size).sum(), files.len());
        let entries = parallel(files.len(), |index| {
            let (name, size) = &files[index];
            let previous = known.get(&(name.clone(), *size)).cloned();
            self.store_file(id, &checkpoint.join(name), name, previous, compression, progress)
        })?;
        let manifest = Manifest {
            format_version: manifest::FORMAT_VERSION,
            id: id.to_string(),
            created_at,
            created_at_unix_ms,
            node_id,
            cluster_id,
            compression,
            groups,
            files: entries,
        };
        let object = format!("backups/{id}/manifest.json");
        let json = manifest.to_json();
        self.store.put(&object, &mut |w| w.write_all(&json)).map_err(self.store_err(&object))?;
        Ok(manifest)
    }

    /// Objects of earlier backups, by (file name, size); the newest backup's win.
    fn known_objects(&self) -> Result<HashMap<(String, u64), FileEntry>> {
        let mut known = HashMap::new();
        for manifest in self.list()? {
            for file in manifest.files {
                known.insert((file.name.clone(), file.size), file);
            }
        }
        Ok(known)
    }

    /// Refers to `previous` if the local file has its CRC and its object is still there,
    /// else uploads the file.
    fn store_file(
        &self,
        id: &str,
        path: &Path,
        name: &str,
        previous: Option<FileEntry>,
        compression: Compression,
        progress: &dyn Progress,
    ) -> Result<FileEntry> {
        if let Some(previous) = previous {
            let digest = std::fs::File::open(path).and_then(codec::digest).map_err(Error::io(path))?;
            // A lost object is uploaded again rather than referred to: a new backup heals.
            let stored = self.store.get(&previous.object).is_ok();
            if digest.crc32 == previous.crc32 && digest.size == previous.size && stored {
                progress.advance(digest.size);
                progress.file_done(name, false);
                return Ok(previous);
            }
        }
        let object = format!("backups/{id}/files/{name}{}", compression.extension());
        let mut digest = None;
        let mut read_error = None;
        let stored_size = self
            .store
            .put(&object, &mut |out| {
                let file = std::fs::File::open(path).inspect_err(|_| read_error = Some(()))?;
                let (d, _) = codec::compress(file, out, compression, |n| progress.advance(n))?;
                digest = Some(d);
                Ok(())
            })
            .map_err(|e| if read_error.is_some() { Error::io(path)(e) } else { self.store_err(&object)(e) })?;
        let digest = digest.ok_or_else(|| Error::Invalid(format!("{name} was not read")))?;
        progress.file_done(name, true);
        Ok(FileEntry {
            name: name.to_string(),
            size: digest.size,
            crc32: digest.crc32,
            compression,
            object,
            stored_size,
            uploaded_by: id.to_string(),
        })
    }

    /// Downloads every file of backup `id` and checks its size and CRC32; nothing is
    /// written locally. A bad file is the error, by name.
    pub fn verify(&self, id: &str, progress: &dyn Progress) -> Result<Verified> {
        let manifest = self.manifest(id)?;
        self.fetch_all(&manifest, None, progress)?;
        Ok(Verified { files: manifest.files.len(), bytes: manifest.total_bytes() })
    }

    /// Downloads backup `id` into `db_dir` (which must not exist), checking every file.
    /// On error `db_dir` may hold part of the files: restore into a staging directory
    /// and move it into place only on success.
    pub fn restore(&self, id: &str, db_dir: &Path, progress: &dyn Progress) -> Result<Manifest> {
        let manifest = self.manifest(id)?;
        if db_dir.exists() {
            return Err(Error::Invalid(format!("restore target {} already exists", db_dir.display())));
        }
        std::fs::create_dir_all(db_dir).map_err(Error::io(db_dir))?;
        self.fetch_all(&manifest, Some(db_dir), progress)?;
        Ok(manifest)
    }

    fn fetch_all(&self, manifest: &Manifest, dir: Option<&Path>, progress: &dyn Progress) -> Result<()> {
        progress.begin(manifest.total_bytes(), manifest.files.len());
        parallel(manifest.files.len(), |index| {
            let file = &manifest.files[index];
            let target = dir.map(|d| d.join(&file.name));
            self.fetch_file(&manifest.id, file, target.as_deref(), progress)
        })?;
        Ok(())
    }

    fn fetch_file(&self, backup: &str, file: &FileEntry, target: Option<&Path>, progress: &dyn Progress) -> Result<()> {
        let corrupt = |detail: String| Error::Corrupt {
            backup: backup.to_string(),
            file: file.name.clone(),
            object: file.object.clone(),
            detail,
        };
        let mut reader = match self.store.get(&file.object) {
            Ok(reader) => reader,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::Missing {
                    backup: backup.to_string(),
                    file: file.name.clone(),
                    object: file.object.clone(),
                })
            }
            Err(e) => return Err(self.store_err(&file.object)(e)),
        };
        let sink: Box<dyn Write + Send> = match target {
            Some(path) => {
                let f = std::fs::File::create(path).map_err(Error::io(path))?;
                Box::new(io::BufWriter::with_capacity(1 << 20, f))
            }
            None => Box::new(io::sink()),
        };
        let mut decoder = codec::Decompressor::new(sink, file.compression).map_err(|e| corrupt(e.to_string()))?;
        let mut stored = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.store_err(&file.object)(e)),
            };
            stored += n as u64;
            decoder.write_chunk(&buf[..n]).map_err(|e| corrupt(format!("cannot decompress: {e}")))?;
            progress.advance(n as u64 * file.size / file.stored_size.max(1));
        }
        let (digest, mut sink) = decoder.finish().map_err(|e| corrupt(format!("cannot decompress: {e}")))?;
        if stored != file.stored_size {
            return Err(corrupt(format!("stored object is {stored} bytes, the manifest says {}", file.stored_size)));
        }
        if digest.size != file.size {
            return Err(corrupt(format!("{} bytes after decompression, the manifest says {}", digest.size, file.size)));
        }
        if digest.crc32 != file.crc32 {
            return Err(corrupt(format!("CRC32 {:08x}, the manifest says {:08x}", digest.crc32, file.crc32)));
        }
        if let Some(path) = target {
            sink.flush().map_err(Error::io(path))?;
        }
        progress.file_done(&file.name, true);
        Ok(())
    }

    /// Keeps the newest `keep` backups and deletes the others, with every object of
    /// theirs that no kept backup refers to. Do not run it while a backup is created.
    pub fn prune(&self, keep: usize) -> Result<Pruned> {
        let manifests = self.list()?;
        let split = manifests.len().saturating_sub(keep);
        let (old, kept) = manifests.split_at(split);
        let referenced: BTreeSet<&str> = kept.iter().flat_map(|m| m.files.iter().map(|f| f.object.as_str())).collect();
        let mut pruned = Pruned::default();
        for manifest in old {
            // The manifest goes first: from then on the backup no longer exists.
            let object = format!("backups/{}/manifest.json", manifest.id);
            self.store.delete(&object).map_err(self.store_err(&object))?;
            let folder = format!("backups/{}/", manifest.id);
            for key in self.store.list(&folder).map_err(self.store_err(&folder))? {
                if !referenced.contains(key.as_str()) {
                    self.store.delete(&key).map_err(self.store_err(&key))?;
                    pruned.objects += 1;
                }
            }
            pruned.backups.push(manifest.id.clone());
        }
        Ok(pruned)
    }
}

/// Runs `work(0..count)` on up to `CONCURRENT_FILES` threads and returns the results in
/// index order; on failure, the error of the lowest failing index.
fn parallel<T: Send>(count: usize, work: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<T>>>> = Mutex::new((0..count).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..CONCURRENT_FILES.min(count) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    break;
                }
                let outcome = work(index);
                let failed = outcome.is_err();
                if let Ok(mut slots) = results.lock() {
                    slots[index] = Some(outcome);
                }
                if failed {
                    // Stop handing out work; files already started finish.
                    next.store(count, Ordering::Relaxed);
                }
            });
        }
    });
    let slots = results.into_inner().map_err(|_| Error::Invalid("a worker thread panicked".into()))?;
    let mut out = Vec::with_capacity(count);
    for slot in slots {
        match slot {
            Some(Ok(value)) => out.push(value),
            Some(Err(e)) => return Err(e),
            // Skipped after an earlier failure, which is reported instead.
            None => continue,
        }
    }
    if out.len() != count {
        return Err(Error::Invalid("work stopped early".into()));
    }
    Ok(out)
}

/// The files of a checkpoint directory with their sizes, by name. RocksDB's info logs
/// (`LOG*`) are not part of the data.
fn checkpoint_files(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let meta = entry.metadata().map_err(Error::io(entry.path()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if meta.is_file() && !name.starts_with("LOG") {
            files.push((name, meta.len()));
        }
    }
    files.sort();
    Ok(files)
}

/// A new backup id (`YYYYMMDDTHHMMSSZ-xxxxxx`, sortable by time), the time in RFC 3339
/// and in Unix milliseconds.
fn new_id() -> (String, String, u64) {
    let now = SystemTime::now();
    let unix_ms = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let rfc3339 = humantime::format_rfc3339_seconds(now).to_string();
    let compact: String = rfc3339.chars().filter(|c| *c != '-' && *c != ':').collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    (format!("{compact}-{}", &random[..6]), rfc3339, unix_ms)
}

#[cfg(test)]
mod tests;
