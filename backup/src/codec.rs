//! Streaming compression and decompression with a CRC32 of the plain bytes. Pure byte
//! transforms: callers supply the reader and the writer.

use std::io::{self, Read, Write};

use crate::manifest::Compression;

/// zstd level for backups: fast, and most of the ratio.
const ZSTD_LEVEL: i32 = 3;
const READ_CHUNK: usize = 1 << 20;

/// Plain size and CRC32 of what went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest {
    pub size: u64,
    pub crc32: u32,
}

/// Reads `input` to the end, writes it compressed to `output`, and returns the plain
/// bytes' digest. `on_read` sees each chunk's length (for progress).
pub fn compress<R: Read, W: Write>(
    mut input: R,
    output: W,
    compression: Compression,
    mut on_read: impl FnMut(u64),
) -> io::Result<(Digest, W)> {
    let mut encoder: Box<dyn FinishWrite<W>> = match compression {
        Compression::Zstd => Box::new(zstd::stream::write::Encoder::new(output, ZSTD_LEVEL)?),
        Compression::Gzip => Box::new(flate2::write::GzEncoder::new(output, flate2::Compression::fast())),
        Compression::None => Box::new(Plain(output)),
    };
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
        encoder.write_all(&buf[..n])?;
        on_read(n as u64);
    }
    let output = encoder.finish_into()?;
    Ok((Digest { size, crc32: hasher.finalize() }, output))
}

/// The CRC32 and size of everything `input` yields.
pub fn digest<R: Read>(mut input: R) -> io::Result<Digest> {
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Digest { size, crc32: hasher.finalize() })
}

/// A writer that takes compressed chunks and writes the plain bytes to `W`, keeping a
/// digest of them.
pub struct Decompressor<W: Write> {
    inner: Box<dyn FinishWrite<Counting<W>> + Send>,
}

impl<W: Write + Send + 'static> Decompressor<W> {
    pub fn new(output: W, compression: Compression) -> io::Result<Decompressor<W>> {
        let counting = Counting { inner: output, hasher: crc32fast::Hasher::new(), size: 0 };
        let inner: Box<dyn FinishWrite<Counting<W>> + Send> = match compression {
            Compression::Zstd => Box::new(zstd::stream::write::Decoder::new(counting)?),
            Compression::Gzip => Box::new(flate2::write::GzDecoder::new(counting)),
            Compression::None => Box::new(Plain(counting)),
        };
        Ok(Decompressor { inner })
    }

    pub fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.inner.write_all(chunk)
    }

    /// Ends the stream (a truncated one is an error) and returns the plain digest.
    pub fn finish(self) -> io::Result<(Digest, W)> {
        let mut counting = self.inner.finish_into()?;
        counting.inner.flush()?;
        Ok((Digest { size: counting.size, crc32: counting.hasher.finalize() }, counting.inner))
    }
}

/// Passes bytes on while hashing and counting them.
struct Counting<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    size: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer whose stream has an end that must be written (compression trailers).
trait FinishWrite<W>: Write {
    fn finish_into(self: Box<Self>) -> io::Result<W>;
}

struct Plain<W>(W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FinishWrite<W> for Plain<W> {
    fn finish_into(self: Box<Self>) -> io::Result<W> {
        Ok(self.0)
    }
}

impl<W: Write> FinishWrite<W> for zstd::stream::write::Encoder<'static, W> {
    fn finish_into(self: Box<Self>) -> io::Result<W> {
        self.finish()
    }
}

impl<W: Write> FinishWrite<W> for flate2::write::GzEncoder<W> {
    fn finish_into(self: Box<Self>) -> io::Result<W> {
        self.finish()
    }
}

impl<W: Write> FinishWrite<W> for zstd::stream::write::Decoder<'static, W> {
    fn finish_into(mut self: Box<Self>) -> io::Result<W> {
        self.flush()?;
        Ok(self.into_inner())
    }
}

impl<W: Write> FinishWrite<W> for flate2::write::GzDecoder<W> {
    fn finish_into(self: Box<Self>) -> io::Result<W> {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    #[test]
    fn every_compression_round_trips_with_the_same_digest() {
        let plain = sample();
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let mut read = 0;
            let (digest, stored) = compress(&plain[..], Vec::new(), c, |n| read += n).expect("compress");
            assert_eq!((digest.size, read), (plain.len() as u64, plain.len() as u64));
            assert_eq!(digest.crc32, crc32fast::hash(&plain));
            if c != Compression::None {
                assert!(stored.len() < plain.len() / 2, "{c}: compresses");
            }
            let mut d = Decompressor::new(Vec::new(), c).expect("decoder");
            for chunk in stored.chunks(7000) {
                d.write_chunk(chunk).expect("write");
            }
            let (back, out) = d.finish().expect("finish");
            assert_eq!(back, digest, "{c}");
            assert_eq!(out, plain, "{c}");
        }
    }

    #[test]
    fn a_flipped_byte_changes_the_digest_or_fails_decoding() {
        let plain = sample();
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let (digest, mut stored) = compress(&plain[..], Vec::new(), c, |_| {}).expect("compress");
            let middle = stored.len() / 2;
            stored[middle] ^= 0x55;
            let outcome = Decompressor::new(Vec::new(), c)
                .and_then(|mut d| d.write_chunk(&stored).map(|_| d))
                .and_then(|d| d.finish());
            if let Ok((back, _)) = outcome {
                assert_ne!(back, digest, "{c}: corruption is detected");
            }
        }
    }
}
