//! Object storage services — `s3://bucket/prefix`, `gs://bucket/prefix`,
//! `az://container/prefix` — behind [`ObjectStore`], through the `object_store` crate.
//! Credentials, region and endpoint come from the usual environment variables
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`). That crate is async while the backup logic blocks,
//! so a remote store owns a small tokio runtime and waits on it.

use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, ObjectStoreExt as _, WriteMultipart};
use tokio::runtime::Runtime;

use crate::store::{check_key, ObjectStore};

/// Objects up to this size go up in one request; larger ones as a multipart upload of
/// parts this size.
const PART_SIZE: usize = 16 << 20;
/// Parts of one object uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A bucket (and optional prefix) of a remote object storage service.
pub struct RemoteStore {
    inner: Arc<dyn object_store::ObjectStore>,
    /// `""` or `"a/b/"`: prepended to every key.
    prefix: String,
    io: Arc<IoRuntime>,
}

impl RemoteStore {
    /// Opens `s3://`, `gs://` or `az://` URLs; the error says what is wrong with `url`.
    pub fn open(url: &str) -> Result<RemoteStore, String> {
        let (scheme, rest) = url.split_once("://").ok_or("not a URL")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("no bucket: use {scheme}://BUCKET/PREFIX"));
        }
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() {
            check_key(prefix)?;
        }
        let built = match scheme {
            "s3" => AmazonS3Builder::from_env().with_url(url).build().map(|s| Arc::new(s) as Arc<_>),
            "gs" => GoogleCloudStorageBuilder::from_env().with_url(url).build().map(|s| Arc::new(s) as Arc<_>),
            "az" => MicrosoftAzureBuilder::from_env().with_url(url).build().map(|s| Arc::new(s) as Arc<_>),
            other => return Err(format!("unknown scheme {other:?}")),
        };
        let inner = built.map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("backup-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start I/O threads: {e}"))?;
        let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        Ok(RemoteStore { inner, prefix, io: Arc::new(IoRuntime(Some(runtime))) })
    }

    fn path(&self, key: &str) -> io::Result<ObjectPath> {
        check_key(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        ObjectPath::parse(format!("{}{key}", self.prefix)).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }

    /// Uploads `size` bytes from `spool`: one request, or a multipart upload that is
    /// aborted if any part fails (no half object, no orphaned parts).
    async fn upload(&self, path: &ObjectPath, spool: &mut std::fs::File, size: u64) -> io::Result<()> {
        if size <= PART_SIZE as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            spool.read_to_end(&mut bytes)?;
            self.inner.put(path, Bytes::from(bytes).into()).await?;
            return Ok(());
        }
        let mut writer = WriteMultipart::new_with_chunk_size(self.inner.put_multipart(path).await?, PART_SIZE);
        let mut chunk = vec![0; 1 << 20];
        let sent: io::Result<()> = async {
            loop {
                let n = spool.read(&mut chunk)?;
                if n == 0 {
                    return Ok(());
                }
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.write(&chunk[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => writer.finish().await.map(drop).map_err(io::Error::from),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }
}

impl ObjectStore for RemoteStore {
    fn put(&self, key: &str, fill: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>) -> io::Result<u64> {
        let path = self.path(key)?;
        // The object's size is known only after `fill`: spool it to an unlinked file.
        let mut spool = tempfile::tempfile()?;
        let mut out = BufWriter::with_capacity(1 << 20, &mut spool);
        fill(&mut out)?;
        out.flush()?;
        drop(out);
        let size = spool.stream_position()?;
        spool.seek(SeekFrom::Start(0))?;
        self.io.block_on(self.upload(&path, &mut spool, size))?;
        Ok(size)
    }

    fn get(&self, key: &str) -> io::Result<Box<dyn Read + Send>> {
        let path = self.path(key)?;
        let stream = self.io.block_on(self.inner.get(&path))?.into_stream();
        Ok(Box::new(RemoteReader { stream, chunk: Bytes::new(), io: self.io.clone() }))
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        // The service lists by whole path segments: list the prefix's directory, then
        // keep the keys that start with it.
        let dir = format!("{}{}", self.prefix, prefix.rsplit_once('/').map_or("", |(dir, _)| dir));
        let dir = dir.trim_end_matches('/');
        let dir = if dir.is_empty() { None } else { Some(ObjectPath::from(dir)) };
        let found: Vec<_> = self.io.block_on(self.inner.list(dir.as_ref()).try_collect())?;
        let mut keys: Vec<String> = found
            .into_iter()
            .filter_map(|meta| meta.location.as_ref().strip_prefix(&self.prefix).map(str::to_string))
            .filter(|key| key.starts_with(prefix))
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        let path = self.path(key)?;
        match self.io.block_on(self.inner.delete(&path)) {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => Ok(other?),
        }
    }
}

/// Reads an object's body as it arrives.
struct RemoteReader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    io: Arc<IoRuntime>,
}

impl Read for RemoteReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.io.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(chunk) => self.chunk = chunk?,
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The runtime that drives remote requests. Dropped without waiting, so a store may be
/// dropped anywhere, an async context included.
struct IoRuntime(Option<Runtime>);

impl IoRuntime {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.0.as_ref().expect("runtime lives until drop").block_on(future)
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
