//! raft-engine's files, with all but the tail of each dropped from the page cache once
//! synced.
//!
//! The Raft log is written once and read back only at start-up, when a purge rewrites
//! entries a lagging replica still needs, or for a replica that fell behind. RocksDB holds
//! the same bytes, and that copy is the one consumers read: caching the log as well
//! would double the memory a node's recent data takes. So after each sync everything
//! but the last [`CACHED_TAIL`] bytes of the file leaves the page cache (PostgreSQL drops
//! its WAL the same way). The next writes then reuse those freed pages, which is much
//! cheaper than fresh memory on a VM that hands free pages back to its host.

use std::io::{Result, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use raft_engine::env::{DefaultFileSystem, FileSystem, Handle, Permission, WriteExt};

/// Bytes at the end of each file that stay cached: what a replica a few rounds behind,
/// or a purge of the newest file, reads back.
const CACHED_TAIL: usize = 16 << 20;

type PlainHandle = <DefaultFileSystem as FileSystem>::Handle;
type PlainFile = <DefaultFileSystem as FileSystem>::Writer;

/// The raft-engine file system of every Chronik Raft log: raft-engine's own, plus the
/// page-cache drop after each sync.
pub(crate) struct LogFiles;

pub(crate) struct LogFile {
    plain: Arc<PlainHandle>,
    /// A second descriptor of the same file, for the advice (raft-engine keeps its own private).
    advice: std::fs::File,
    /// Where the last write ended: the page-cache drop stops [`CACHED_TAIL`] before it.
    written: AtomicUsize,
}

impl LogFile {
    fn new(plain: PlainHandle, path: &Path) -> Result<LogFile> {
        Ok(LogFile { plain: Arc::new(plain), advice: std::fs::File::open(path)?, written: AtomicUsize::new(0) })
    }
}

impl Handle for LogFile {
    fn truncate(&self, offset: usize) -> Result<()> {
        self.plain.truncate(offset)
    }

    fn file_size(&self) -> Result<usize> {
        self.plain.file_size()
    }

    fn sync(&self) -> Result<()> {
        self.plain.sync()?;
        let synced = self.written.load(Ordering::Acquire);
        if synced > CACHED_TAIL {
            // From the start every time: a page the kernel could not drop at one sync (in
            // use, or on another CPU's LRU list) goes at a later one. Advising only the new
            // range left 27 of 48 MiB cached in the test.
            let len = (synced - CACHED_TAIL) as i64;
            // Advice only: if the kernel refuses, the pages stay cached and nothing is lost.
            if let Err(e) = posix_fadvise(self.advice.as_raw_fd(), 0, len, PosixFadviseAdvice::POSIX_FADV_DONTNEED) {
                tracing::debug!(error = %e, "raft log: page-cache drop refused");
            }
        }
        Ok(())
    }
}

/// raft-engine's writer, recording in the handle where each write ended.
pub(crate) struct LogFileWriter {
    plain: PlainFile,
    handle: Arc<LogFile>,
}

impl LogFileWriter {
    fn record_end(&mut self) -> Result<u64> {
        let end = self.plain.stream_position()?;
        self.handle.written.store(end as usize, Ordering::Release);
        Ok(end)
    }
}

impl Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        let n = self.plain.write(buf)?;
        self.record_end()?;
        Ok(n)
    }

    fn flush(&mut self) -> Result<()> {
        self.plain.flush()
    }
}

impl Seek for LogFileWriter {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        self.plain.seek(pos)?;
        self.record_end()
    }
}

impl WriteExt for LogFileWriter {
    fn truncate(&mut self, offset: usize) -> Result<()> {
        WriteExt::truncate(&mut self.plain, offset)?;
        self.record_end().map(drop)
    }

    fn allocate(&mut self, offset: usize, size: usize) -> Result<()> {
        self.plain.allocate(offset, size)
    }
}

impl FileSystem for LogFiles {
    type Handle = LogFile;
    type Reader = PlainFile;
    type Writer = LogFileWriter;

    fn create<P: AsRef<Path>>(&self, path: P) -> Result<LogFile> {
        LogFile::new(DefaultFileSystem.create(path.as_ref())?, path.as_ref())
    }

    fn open<P: AsRef<Path>>(&self, path: P, perm: Permission) -> Result<LogFile> {
        LogFile::new(DefaultFileSystem.open(path.as_ref(), perm)?, path.as_ref())
    }

    fn delete<P: AsRef<Path>>(&self, path: P) -> Result<()> {
        DefaultFileSystem.delete(path)
    }

    fn rename<P: AsRef<Path>>(&self, src_path: P, dst_path: P) -> Result<()> {
        DefaultFileSystem.rename(src_path, dst_path)
    }

    fn new_reader(&self, handle: Arc<LogFile>) -> Result<PlainFile> {
        DefaultFileSystem.new_reader(handle.plain.clone())
    }

    fn new_writer(&self, handle: Arc<LogFile>) -> Result<LogFileWriter> {
        Ok(LogFileWriter { plain: DefaultFileSystem.new_writer(handle.plain.clone())?, handle })
    }
}
