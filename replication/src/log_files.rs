//! raft-engine's files, written with `O_DIRECT` where the file system allows it.
//!
//! The Raft log is written once and read back only at start-up, when a purge rewrites
//! entries a lagging replica still needs, or for a replica that fell behind. RocksDB holds
//! the same bytes, and that copy is the one consumers read. Writing the log through the
//! page cache cost a copy of every byte into page-cache memory, the largest single item
//! in a produce profile (22-27% of the node's samples; docs/PERFORMANCE.md). With
//! `O_DIRECT` the device reads the bytes from a small buffer of ours instead, and the
//! page cache keeps room for the data consumers read.
//!
//! `O_DIRECT` wants block-aligned memory, offsets and lengths; raft-engine appends batches
//! of any length and syncs after each. So every write goes out at once from the start of
//! the block its first byte falls in: [`DirectWrites`] keeps the file's bytes from there
//! up to the write position, copies the new bytes behind them, and pads the last block
//! with zeros, which the next write overwrites. Where the file system refuses `O_DIRECT`
//! (tmpfs before Linux 6.6), writes go through the page cache as raft-engine's own do.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Result, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use nix::libc;
use raft_engine::env::{DefaultFileSystem, FileSystem, Handle, Permission, WriteExt};

/// `O_DIRECT`'s alignment: 4 KiB covers every logical block size in use.
const BLOCK: usize = 4096;
/// The buffer's size, and the most one direct write sends: 4 MiB and a block (the head
/// of the block a write starts in), a few writes per Raft round.
const WINDOW: usize = (4 << 20) + BLOCK;

type PlainHandle = <DefaultFileSystem as FileSystem>::Handle;
type PlainFile = <DefaultFileSystem as FileSystem>::Writer;

/// The raft-engine file system of every Chronik Raft log: raft-engine's own, with writes
/// through `O_DIRECT`.
pub(crate) struct LogFiles;

pub(crate) struct LogFile {
    plain: Arc<PlainHandle>,
    /// The same file opened with `O_DIRECT`, if its file system allows it.
    direct: Option<File>,
}

impl LogFile {
    fn new(plain: PlainHandle, path: &Path, perm: Permission) -> Result<LogFile> {
        if matches!(perm, Permission::ReadOnly) {
            return Ok(LogFile { plain: Arc::new(plain), direct: None });
        }
        let direct = match OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path) {
            Ok(file) => Some(file),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::warn!(path = %path.display(), "no O_DIRECT here: the Raft log is written through the page cache");
                None
            }
            Err(e) => return Err(e),
        };
        Ok(LogFile { plain: Arc::new(plain), direct })
    }
}

impl Handle for LogFile {
    /// raft-engine truncates through the handle only in recovery, before any writer
    /// exists; writers' truncates go through [`LogFileWriter`], which drops what its
    /// buffer holds.
    fn truncate(&self, offset: usize) -> Result<()> {
        self.plain.truncate(offset)
    }

    fn file_size(&self) -> Result<usize> {
        self.plain.file_size()
    }

    fn sync(&self) -> Result<()> {
        // fdatasync on either descriptor: it syncs the file, which also commits the
        // extents that direct writes filled.
        self.plain.sync()
    }
}

/// raft-engine's writer. raft-engine only appends (after a seek to the file's end, or to
/// its start to write a new header), truncates, and preallocates.
pub(crate) struct LogFileWriter {
    /// Keeps the write position and does everything but the direct writes.
    plain: PlainFile,
    handle: Arc<LogFile>,
    direct: Option<DirectWrites>,
}

impl Write for LogFileWriter {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        let Some(direct) = self.direct.as_mut() else { return self.plain.write(buf) };
        let at = self.plain.stream_position()? as usize;
        direct.write_at(&self.handle.plain, at, buf)?;
        self.plain.seek(SeekFrom::Start((at + buf.len()) as u64))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<()> {
        self.plain.flush()
    }
}

impl Seek for LogFileWriter {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        self.plain.seek(pos)
    }
}

impl WriteExt for LogFileWriter {
    fn truncate(&mut self, offset: usize) -> Result<()> {
        if let Some(direct) = self.direct.as_mut() {
            direct.forget();
        }
        WriteExt::truncate(&mut self.plain, offset)
    }

    fn allocate(&mut self, offset: usize, size: usize) -> Result<()> {
        self.plain.allocate(offset, size)
    }
}

/// raft-engine recognizes a full disk by "nospace" in the message (its own files write
/// it on `ENOSPC`), and then moves to a recycled file, whose space is allocated, and
/// retries.
fn as_raft_engine_error(e: std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => std::io::Error::new(e.kind(), "nospace"),
        _ => e,
    }
}

/// One file's direct writes: its `O_DIRECT` descriptor, the buffer, and what the buffer
/// holds of the file.
struct DirectWrites {
    file: File,
    /// `WINDOW` bytes from the first block-aligned address of an allocation one block
    /// larger.
    buf: Vec<u8>,
    /// Where the aligned window starts in `buf`.
    aligned: usize,
    /// File offset of the window's first byte (a multiple of `BLOCK`).
    start: usize,
    /// How many bytes at the front of the window are the file's: `start + held` is
    /// where the next write continues without reading anything back.
    held: usize,
}

impl DirectWrites {
    fn new(file: File) -> DirectWrites {
        let buf = vec![0; WINDOW + BLOCK];
        let aligned = buf.as_ptr().align_offset(BLOCK);
        DirectWrites { file, buf, aligned, start: 0, held: 0 }
    }

    /// What the buffer holds may no longer be the file's (it was truncated).
    fn forget(&mut self) {
        self.held = 0;
        self.start = usize::MAX;
    }

    /// Writes `data` at offset `at` of the file (`plain` is its buffered descriptor), as
    /// `pwrite` would, except that the rest of the last block written becomes zeros:
    /// raft-engine never reads past what it wrote.
    fn write_at(&mut self, plain: &PlainHandle, at: usize, mut data: &[u8]) -> Result<()> {
        if self.start.checked_add(self.held) != Some(at) {
            self.load_head(plain, at)?;
        }
        let size_before = plain.file_size()?;
        let end = at + data.len();
        let mut padded_end = at;
        while !data.is_empty() {
            let n = data.len().min(WINDOW - self.held);
            let (held, start) = (self.held, self.start);
            let bytes = &mut self.buf[self.aligned..self.aligned + WINDOW];
            bytes[held..held + n].copy_from_slice(&data[..n]);
            let filled = held + n;
            let padded = filled.next_multiple_of(BLOCK);
            bytes[filled..padded].fill(0);
            self.file.write_all_at(&bytes[..padded], start as u64).map_err(as_raft_engine_error)?;
            padded_end = start + padded;
            // Keep the last, partly filled block: the next write starts in it.
            let whole = filled / BLOCK * BLOCK;
            bytes.copy_within(whole..filled, 0);
            self.start = start + whole;
            self.held = filled - whole;
            data = &data[n..];
        }
        // The padding must not make the file longer than a plain write would have.
        if padded_end > size_before.max(end) {
            plain.truncate(size_before.max(end))?;
        }
        Ok(())
    }

    /// Reads back the file's bytes between the start of `at`'s block and `at`.
    fn load_head(&mut self, plain: &PlainHandle, at: usize) -> Result<()> {
        let start = at / BLOCK * BLOCK;
        let head = &mut self.buf[self.aligned..self.aligned + at - start];
        let read = plain.read(start, head)?;
        if read != head.len() {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "raft log: write past the end of its file"));
        }
        self.start = start;
        self.held = at - start;
        Ok(())
    }
}

impl FileSystem for LogFiles {
    type Handle = LogFile;
    type Reader = PlainFile;
    type Writer = LogFileWriter;

    fn create<P: AsRef<Path>>(&self, path: P) -> Result<LogFile> {
        LogFile::new(DefaultFileSystem.create(path.as_ref())?, path.as_ref(), Permission::ReadWrite)
    }

    fn open<P: AsRef<Path>>(&self, path: P, perm: Permission) -> Result<LogFile> {
        LogFile::new(DefaultFileSystem.open(path.as_ref(), perm)?, path.as_ref(), perm)
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
        let direct = handle.direct.as_ref().map(File::try_clone).transpose()?.map(DirectWrites::new);
        Ok(LogFileWriter { plain: DefaultFileSystem.new_writer(handle.plain.clone())?, handle, direct })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `data` at the writer's position, as raft-engine does.
    fn append(writer: &mut LogFileWriter, data: &[u8], expected: &mut Vec<u8>) {
        let at = writer.stream_position().expect("position") as usize;
        writer.write_all(data).expect("write");
        expected.truncate(at);
        expected.extend_from_slice(data);
    }

    fn noise(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn a_full_disk_reads_as_raft_engines_nospace() {
        let full = as_raft_engine_error(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(full.to_string().contains("nospace"), "{full}");
        let other = as_raft_engine_error(std::io::Error::from_raw_os_error(libc::EIO));
        assert!(!other.to_string().contains("nospace"), "{other}");
    }

    #[test]
    fn direct_writes_leave_a_file_exactly_as_plain_writes_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0000000000000001.raftlog");
        let handle = Arc::new(LogFiles.create(&path).expect("create"));
        assert!(handle.direct.is_some(), "the temp dir's file system (TMPDIR) has no O_DIRECT");
        let mut expected = Vec::new();

        // Unaligned sizes and ends, a write larger than the buffer, a preallocated tail.
        let mut writer = LogFiles.new_writer(handle.clone()).expect("writer");
        writer.allocate(0, 3 * BLOCK + 5).expect("allocate");
        for (i, len) in [7, 1, BLOCK - 8, 5000, WINDOW + BLOCK + 123, 3].into_iter().enumerate() {
            append(&mut writer, &noise(len, i as u8), &mut expected);
        }
        handle.sync().expect("sync");
        assert_eq!(std::fs::read(&path).expect("read"), expected, "after appends");

        // A second writer continues at the end (it reads back the head of the last block),
        // and a preallocated tail stays zeros up to its end.
        let mut writer = LogFiles.new_writer(handle.clone()).expect("writer");
        writer.seek(SeekFrom::End(0)).expect("seek");
        let end = expected.len();
        writer.allocate(end, 2 * BLOCK).expect("allocate");
        append(&mut writer, &noise(100, 9), &mut expected);
        let mut with_tail = expected.clone();
        with_tail.resize(end + 2 * BLOCK, 0);
        assert_eq!(std::fs::read(&path).expect("read"), with_tail, "after a reopen and preallocation");

        // Truncated back into a block the buffer holds, then written over from the start.
        let cut = end - 10;
        WriteExt::truncate(&mut writer, cut).expect("truncate");
        expected.truncate(cut);
        append(&mut writer, &noise(BLOCK + 1, 10), &mut expected);
        assert_eq!(std::fs::read(&path).expect("read"), expected, "after a truncate");
        writer.rewind().expect("rewind");
        append(&mut writer, &noise(20, 11), &mut expected);
        expected.truncate(20);
        let file = std::fs::read(&path).expect("read");
        assert_eq!(file[..20], expected[..], "a header written over the start");
        assert_eq!(file.len(), cut + BLOCK + 1, "the file keeps its length");
    }
}
