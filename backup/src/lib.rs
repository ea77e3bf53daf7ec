//! Backups of a node's RocksDB store to object storage.
//!
//! Layers: [`codec`] compresses and checksums byte streams, [`manifest`] describes a
//! backup, [`BackupStore`] moves checkpoints to and from an `object_store` location
//! (`file://`, `s3://`, `gs://`, `az://`). Layout under the location:
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

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chronik_engine::{keys, Engine};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::sync::{mpsc, Semaphore};

pub use error::{Error, Result};
pub use manifest::{Compression, FileEntry, GroupApplied, Manifest};

/// Files moved at once; each upload compresses on its own blocking thread.
const CONCURRENT_FILES: usize = 4;
/// Compressed bytes handed to the object store per part.
const PART_BYTES: usize = 8 << 20;

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

/// A backup location: an object store and a prefix inside it.
#[derive(Clone)]
pub struct BackupStore {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
}

impl BackupStore {
    /// Opens a location given as a URL (`file:///abs/dir`, `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix`) or a plain directory path.
    /// Credentials and endpoints come from the usual environment variables
    /// (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub fn open(location: &str) -> Result<BackupStore> {
        let bad = |reason: String| Error::BadUrl { url: location.to_string(), reason };
        let url = match url::Url::parse(location) {
            Ok(url) if url.scheme().len() > 1 => url,
            // No scheme (or a Windows drive letter): a local directory.
            _ => {
                let dir = PathBuf::from(location);
                std::fs::create_dir_all(&dir).map_err(|e| bad(format!("cannot create directory: {e}")))?;
                let abs = dir.canonicalize().map_err(|e| bad(e.to_string()))?;
                url::Url::from_directory_path(&abs).map_err(|_| bad("not an absolute path".into()))?
            }
        };
        if url.scheme() == "file" {
            let dir = url.to_file_path().map_err(|_| bad("not a local path".into()))?;
            std::fs::create_dir_all(&dir).map_err(|e| bad(format!("cannot create directory: {e}")))?;
        }
        let options = std::env::vars().map(|(k, v)| (k.to_ascii_lowercase(), v));
        let (store, prefix) = object_store::parse_url_opts(&url, options).map_err(|e| bad(e.to_string()))?;
        Ok(BackupStore { store: Arc::from(store), prefix, url: location.to_string() })
    }

    /// A location on a store built by the caller (tests, custom clients).
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &str, url: &str) -> BackupStore {
        BackupStore { store, prefix: ObjectPath::from(prefix), url: url.to_string() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, relative: &str) -> ObjectPath {
        relative.split('/').fold(self.prefix.clone(), |p, part| p.join(part))
    }

    fn store_err(&self) -> impl Fn(object_store::Error) -> Error + '_ {
        move |source| Error::Store { url: self.url.clone(), source }
    }

    /// Every complete backup, oldest first.
    pub async fn list(&self) -> Result<Vec<Manifest>> {
        let listing = self.store.list_with_delimiter(Some(&self.path("backups"))).await;
        let listing = match listing {
            Ok(listing) => listing,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(self.store_err()(e)),
        };
        let mut manifests = Vec::new();
        for dir in listing.common_prefixes {
            let Some(id) = dir.filename() else { continue };
            match self.manifest(id).await {
                Ok(m) => manifests.push(m),
                // No manifest: an interrupted backup, not a backup.
                Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        manifests.sort_by(|a, b| (a.created_at_unix_ms, &a.id).cmp(&(b.created_at_unix_ms, &b.id)));
        Ok(manifests)
    }

    /// The manifest of backup `id`.
    pub async fn manifest(&self, id: &str) -> Result<Manifest> {
        if id.is_empty() || id.contains('/') {
            return Err(Error::Invalid(format!("invalid backup id {id:?}")));
        }
        let object = format!("backups/{id}/manifest.json");
        let bytes = match self.store.get(&self.path(&object)).await {
            Ok(got) => got.bytes().await.map_err(self.store_err())?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound { id: id.to_string(), url: self.url.clone() })
            }
            Err(e) => return Err(self.store_err()(e)),
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
    pub async fn create(
        &self,
        engine: Arc<Engine>,
        scratch: &Path,
        compression: Compression,
        progress: Arc<dyn Progress>,
    ) -> Result<Manifest> {
        let (id, created_at, created_at_unix_ms) = new_id();
        let checkpoint = scratch.join(&id);
        std::fs::create_dir_all(scratch).map_err(Error::io(scratch))?;
        let result = self.create_from(engine, &checkpoint, id, created_at, created_at_unix_ms, compression, progress).await;
        if checkpoint.exists() {
            if let Err(e) = std::fs::remove_dir_all(&checkpoint) {
                tracing::warn!(path = %checkpoint.display(), error = %e, "cannot remove the backup checkpoint");
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_from(
        &self,
        engine: Arc<Engine>,
        checkpoint: &Path,
        id: String,
        created_at: String,
        created_at_unix_ms: u64,
        compression: Compression,
        progress: Arc<dyn Progress>,
    ) -> Result<Manifest> {
        let dir = checkpoint.to_path_buf();
        let (node_id, cluster_id, groups) = tokio::task::spawn_blocking(move || -> Result<_> {
            engine.checkpoint(&dir)?;
            // Read ids and applied indexes from the checkpoint itself, not the live store.
            let copy = Engine::open_read_only(&dir)?;
            let node_id = copy
                .meta_get(keys::META_NODE_ID)?
                .and_then(|raw| <[u8; 8]>::try_from(raw.as_slice()).ok())
                .map_or(0, u64::from_be_bytes);
            let cluster_id = copy.meta_get(keys::META_CLUSTER_ID)?.map(|raw| String::from_utf8_lossy(&raw).into_owned());
            let groups = copy
                .partition_states()?
                .into_iter()
                .map(|(group, s)| GroupApplied { group, applied_index: s.applied_index, applied_term: s.applied_term })
                .collect::<Vec<_>>();
            Ok((node_id, cluster_id.unwrap_or_default(), groups))
        })
        .await
        .map_err(|e| Error::Invalid(format!("checkpoint task failed: {e}")))??;

        let files = checkpoint_files(checkpoint)?;
        let known = self.known_objects().await?;
        progress.begin(files.iter().map(|(_, size)| size).sum(), files.len());

        let limit = Arc::new(Semaphore::new(CONCURRENT_FILES));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, (name, size)) in files.into_iter().enumerate() {
            let this = self.clone();
            let path = checkpoint.join(&name);
            let previous = known.get(&(name.clone(), size)).cloned();
            let (id, progress, limit) = (id.clone(), progress.clone(), limit.clone());
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let entry = this.store_file(&id, &path, &name, previous, compression, progress.as_ref()).await;
                entry.map(|e| (index, e))
            });
        }
        let mut entries = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            entries.push(joined.map_err(|e| Error::Invalid(format!("upload task failed: {e}")))??);
        }
        entries.sort_by_key(|(index, _)| *index);
        let manifest = Manifest {
            format_version: manifest::FORMAT_VERSION,
            id: id.clone(),
            created_at,
            created_at_unix_ms,
            node_id,
            cluster_id,
            compression,
            groups,
            files: entries.into_iter().map(|(_, e)| e).collect(),
        };
        let object = format!("backups/{id}/manifest.json");
        self.store.put(&self.path(&object), PutPayload::from(manifest.to_json())).await.map_err(self.store_err())?;
        Ok(manifest)
    }

    /// Objects of earlier backups, by (file name, size), the newest backup's last.
    async fn known_objects(&self) -> Result<HashMap<(String, u64), FileEntry>> {
        let mut known = HashMap::new();
        for manifest in self.list().await? {
            for file in manifest.files {
                known.insert((file.name.clone(), file.size), file);
            }
        }
        Ok(known)
    }

    /// Refers to `previous` if the local file has its CRC, else uploads the file.
    async fn store_file(
        &self,
        id: &str,
        path: &Path,
        name: &str,
        previous: Option<FileEntry>,
        compression: Compression,
        progress: &dyn Progress,
    ) -> Result<FileEntry> {
        if let Some(previous) = previous {
            let local = path.to_path_buf();
            let digest = tokio::task::spawn_blocking(move || {
                std::fs::File::open(&local).and_then(codec::digest).map_err(Error::io(&local))
            })
            .await
            .map_err(|e| Error::Invalid(format!("checksum task failed: {e}")))??;
            if digest.crc32 == previous.crc32 && digest.size == previous.size {
                progress.advance(digest.size);
                progress.file_done(name, false);
                return Ok(previous);
            }
        }
        let object = format!("backups/{id}/files/{name}{}", compression.extension());
        let (tx, mut rx) = mpsc::channel::<Bytes>(4);
        let local = path.to_path_buf();
        let (read_tx, mut read_rx) = mpsc::unbounded_channel::<u64>();
        let reader = tokio::task::spawn_blocking(move || -> Result<codec::Digest> {
            let file = std::fs::File::open(&local).map_err(Error::io(&local))?;
            let sink = ChunkSink { tx, buf: Vec::with_capacity(PART_BYTES) };
            let (digest, sink) = codec::compress(file, sink, compression, |n| {
                let _ = read_tx.send(n);
            })
            .map_err(Error::io(&local))?;
            sink.close().map_err(Error::io(&local))?;
            Ok(digest)
        });

        let target = self.path(&object);
        let mut stored_size = 0u64;
        let mut first: Option<Bytes> = None;
        let mut multipart: Option<WriteMultipart> = None;
        loop {
            tokio::select! {
                Some(n) = read_rx.recv() => progress.advance(n),
                chunk = rx.recv() => {
                    let Some(chunk) = chunk else { break };
                    stored_size += chunk.len() as u64;
                    // One chunk is stored with a single put; more go through a multipart upload.
                    match (&mut multipart, first.take()) {
                        (Some(upload), _) => {
                            upload.wait_for_capacity(2).await.map_err(self.store_err())?;
                            upload.put(chunk);
                        }
                        (None, None) => first = Some(chunk),
                        (None, Some(earlier)) => {
                            let mut upload =
                                WriteMultipart::new(self.store.put_multipart(&target).await.map_err(self.store_err())?);
                            upload.put(earlier);
                            upload.put(chunk);
                            multipart = Some(upload);
                        }
                    }
                }
            }
        }
        while let Ok(n) = read_rx.try_recv() {
            progress.advance(n);
        }
        let digest = match reader.await {
            Ok(Ok(digest)) => digest,
            Ok(Err(e)) => {
                if let Some(upload) = multipart {
                    let _ = upload.abort().await;
                }
                return Err(e);
            }
            Err(e) => return Err(Error::Invalid(format!("compression task failed: {e}"))),
        };
        match multipart {
            Some(upload) => {
                upload.finish().await.map_err(self.store_err())?;
            }
            None => {
                let payload = PutPayload::from(first.unwrap_or_default());
                self.store.put(&target, payload).await.map_err(self.store_err())?;
            }
        }
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
    /// written locally. The first bad file is the error, by name.
    pub async fn verify(&self, id: &str, progress: Arc<dyn Progress>) -> Result<Verified> {
        let manifest = self.manifest(id).await?;
        self.fetch_all(&manifest, None, progress).await?;
        Ok(Verified { files: manifest.files.len(), bytes: manifest.total_bytes() })
    }

    /// Downloads backup `id` into `db_dir` (which must not exist), checking every file.
    /// On error `db_dir` may hold part of the files: restore into a staging directory
    /// and move it into place only on success.
    pub async fn restore(&self, id: &str, db_dir: &Path, progress: Arc<dyn Progress>) -> Result<Manifest> {
        let manifest = self.manifest(id).await?;
        if db_dir.exists() {
            return Err(Error::Invalid(format!("restore target {} already exists", db_dir.display())));
        }
        std::fs::create_dir_all(db_dir).map_err(Error::io(db_dir))?;
        self.fetch_all(&manifest, Some(db_dir), progress).await?;
        Ok(manifest)
    }

    async fn fetch_all(&self, manifest: &Manifest, dir: Option<&Path>, progress: Arc<dyn Progress>) -> Result<()> {
        progress.begin(manifest.total_bytes(), manifest.files.len());
        let limit = Arc::new(Semaphore::new(CONCURRENT_FILES));
        let mut tasks = tokio::task::JoinSet::new();
        for (index, file) in manifest.files.iter().cloned().enumerate() {
            let this = self.clone();
            let (backup, progress, limit) = (manifest.id.clone(), progress.clone(), limit.clone());
            let target = dir.map(|d| d.join(&file.name));
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                this.fetch_file(&backup, &file, target.as_deref(), progress.as_ref()).await.map_err(|e| (index, e))
            });
        }
        // Report the failing file that comes first in the manifest, whatever finished first.
        let mut first_error: Option<(usize, Error)> = None;
        while let Some(joined) = tasks.join_next().await {
            let outcome = joined.map_err(|e| (usize::MAX, Error::Invalid(format!("download task failed: {e}"))));
            if let Err((index, e)) = outcome.and_then(|r| r) {
                if first_error.as_ref().is_none_or(|(i, _)| index < *i) {
                    first_error = Some((index, e));
                }
            }
        }
        match first_error {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    async fn fetch_file(
        &self,
        backup: &str,
        file: &FileEntry,
        target: Option<&Path>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let corrupt = |detail: String| Error::Corrupt {
            backup: backup.to_string(),
            file: file.name.clone(),
            object: file.object.clone(),
            detail,
        };
        let got = match self.store.get(&self.path(&file.object)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::Missing {
                    backup: backup.to_string(),
                    file: file.name.clone(),
                    object: file.object.clone(),
                })
            }
            Err(e) => return Err(self.store_err()(e)),
        };
        let sink: Box<dyn Write + Send> = match target {
            Some(path) => {
                let f = std::fs::File::create(path).map_err(Error::io(path))?;
                Box::new(std::io::BufWriter::with_capacity(1 << 20, f))
            }
            None => Box::new(std::io::sink()),
        };
        let mut decoder = codec::Decompressor::new(sink, file.compression).map_err(|e| corrupt(e.to_string()))?;
        let mut stream = got.into_stream();
        let mut stored = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(self.store_err())?;
            stored += chunk.len() as u64;
            decoder.write_chunk(&chunk).map_err(|e| corrupt(format!("cannot decompress: {e}")))?;
            progress.advance(chunk.len() as u64 * file.size / file.stored_size.max(1));
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
    pub async fn prune(&self, keep: usize) -> Result<Pruned> {
        let manifests = self.list().await?;
        let split = manifests.len().saturating_sub(keep);
        let (old, kept) = manifests.split_at(split);
        let referenced: BTreeSet<&str> = kept.iter().flat_map(|m| m.files.iter().map(|f| f.object.as_str())).collect();
        let mut pruned = Pruned::default();
        for manifest in old {
            // The manifest goes first: from then on the backup no longer exists.
            let object = format!("backups/{}/manifest.json", manifest.id);
            self.store.delete(&self.path(&object)).await.map_err(self.store_err())?;
            let folder = self.path(&format!("backups/{}", manifest.id));
            let mut listing = self.store.list(Some(&folder));
            let mut doomed = Vec::new();
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(self.store_err())?;
                let relative = relative_key(&self.prefix, &meta.location);
                if !referenced.contains(relative.as_str()) {
                    doomed.push(meta.location);
                }
            }
            for location in doomed {
                self.store.delete(&location).await.map_err(self.store_err())?;
                pruned.objects += 1;
            }
            pruned.backups.push(manifest.id.clone());
        }
        Ok(pruned)
    }
}

/// `location` relative to `prefix`, as stored in manifests.
fn relative_key(prefix: &ObjectPath, location: &ObjectPath) -> String {
    match location.prefix_match(prefix) {
        Some(parts) => parts.map(|p| p.as_ref().to_string()).collect::<Vec<_>>().join("/"),
        None => location.to_string(),
    }
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

/// Hands compressed bytes to the async uploader in parts of `PART_BYTES`.
struct ChunkSink {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChunkSink {
    fn send(&mut self) -> std::io::Result<()> {
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(PART_BYTES));
        self.tx
            .blocking_send(Bytes::from(part))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    fn close(mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PART_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
