//! Request framing and decoding on bytes; no I/O here.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};

/// Why a connection must be closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length {0} is negative or zero")]
    BadLength(i32),
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame too short for a request header")]
    Truncated,
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("unsupported version {version} of {key:?}")]
    UnsupportedVersion { key: ApiKey, version: i16 },
    #[error("malformed {key:?} v{version} request: {reason}")]
    Malformed { key: ApiKey, version: i16, reason: String },
}

/// Checks a frame's length prefix against the request size limit.
pub fn check_length(len: i32, max: usize) -> Result<usize, FrameError> {
    if len <= 0 {
        return Err(FrameError::BadLength(len));
    }
    let len = len as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// The API key and version at the front of a request frame, before decoding.
pub fn peek_api(frame: &[u8]) -> Result<(ApiKey, i16), FrameError> {
    if frame.len() < 8 {
        return Err(FrameError::Truncated);
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let key = ApiKey::try_from(raw_key).map_err(|_| FrameError::UnknownApiKey(raw_key))?;
    Ok((key, version))
}

/// The correlation id of a frame whose header could not be decoded (it always follows
/// the key and version).
pub fn peek_correlation_id(frame: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(frame.get(4..8)?.try_into().ok()?))
}

/// Decodes a whole request; the version must already be known to be supported.
pub fn decode_request(mut frame: Bytes, key: ApiKey, version: i16) -> Result<(RequestHeader, RequestKind), FrameError> {
    let malformed = |e: anyhow::Error| FrameError::Malformed { key, version, reason: e.to_string() };
    let header = decode_request_header_from_buffer(&mut frame).map_err(malformed)?;
    let request = RequestKind::decode(key, &mut frame, version).map_err(malformed)?;
    if frame.has_remaining() {
        // Some clients send bytes past the schema (librdkafka 2.16 with Metadata v12);
        // like Kafka, ignore them rather than drop the client.
        tracing::debug!(api = ?key, version, trailing = frame.remaining(), "ignored trailing request bytes");
    }
    Ok((header, request))
}

/// Encodes a response frame: length, header, body. The records of a Fetch answer are
/// referenced, not copied: they are most of its bytes, and copying megabytes into the
/// frame (with fresh pages to fault in) was a quarter of the fetch path's CPU in perf.
pub fn encode_response(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &ResponseKind,
) -> anyhow::Result<ResponseFrame> {
    let mut buf = FrameBuf::new(large_blobs(body));
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, key.response_header_version(version))?;
    match body {
        ResponseKind::Fetch(fetch) => fetch.encode(&mut buf, version)?,
        // Other bodies carry no large blobs; `ResponseKind` encodes into a `BytesMut` only.
        _ => body.encode(&mut buf.tail, version)?,
    }
    Ok(buf.finish())
}

/// Blobs smaller than this are copied into the frame (fewer, larger writes).
const SPLICE_MIN: usize = 16 * 1024;

/// The record sets of a Fetch response worth referencing rather than copying.
fn large_blobs(body: &ResponseKind) -> VecDeque<Bytes> {
    let ResponseKind::Fetch(fetch) = body else { return VecDeque::new() };
    fetch
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .filter_map(|p| p.records.clone())
        .filter(|r| r.len() >= SPLICE_MIN)
        .collect()
}

/// An encoded response as a sequence of byte segments (length prefix first), written
/// to the socket with vectored writes.
#[derive(Debug, Default)]
pub struct ResponseFrame {
    segments: VecDeque<Bytes>,
}

impl Buf for ResponseFrame {
    fn remaining(&self) -> usize {
        self.segments.iter().map(Bytes::len).sum()
    }

    fn chunk(&self) -> &[u8] {
        self.segments.front().map_or(&[], |s| s.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.segments.front_mut() else { break };
            let step = cnt.min(front.len());
            front.advance(step);
            cnt -= step;
            if front.is_empty() {
                self.segments.pop_front();
            }
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, segment) in dst.iter_mut().zip(&self.segments) {
            *slot = IoSlice::new(segment);
            n += 1;
        }
        n
    }
}

/// The encoder's output buffer: bytes are copied into `tail`, except a slice that is
/// exactly the next of `blobs` (same address and length, so the same bytes): the encoder
/// passes record sets by slice, in response order, and this recognises them and keeps a
/// reference instead.
struct FrameBuf {
    done: Vec<Bytes>,
    done_len: usize,
    tail: BytesMut,
    blobs: VecDeque<Bytes>,
}

impl FrameBuf {
    fn new(blobs: VecDeque<Bytes>) -> Self {
        FrameBuf { done: Vec::new(), done_len: 0, tail: BytesMut::with_capacity(1024), blobs }
    }

    fn cut(&mut self) {
        if !self.tail.is_empty() {
            let segment = self.tail.split().freeze();
            self.done_len += segment.len();
            self.done.push(segment);
        }
    }

    fn finish(mut self) -> ResponseFrame {
        self.cut();
        let len = self.done_len as i32;
        let mut segments = VecDeque::with_capacity(self.done.len() + 1);
        segments.push_back(Bytes::copy_from_slice(&len.to_be_bytes()));
        segments.extend(self.done);
        ResponseFrame { segments }
    }
}

// SAFETY: every method delegates to `tail`, a correct `BufMut`.
#[allow(unsafe_code)]
unsafe impl BufMut for FrameBuf {
    fn remaining_mut(&self) -> usize {
        self.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is `tail`'s.
        unsafe { self.tail.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.tail.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        // Every integer the encoder writes comes through here too: one comparison each.
        match self.blobs.front() {
            Some(next) if next.as_ptr() == src.as_ptr() && next.len() == src.len() => {
                let blob = next.clone();
                self.blobs.pop_front();
                self.cut();
                self.done_len += blob.len();
                self.done.push(blob);
            }
            _ => self.tail.put_slice(src),
        }
    }
}

// Gaps (`seek`/`range`) are used only by record batch encoding, which writes into its
// own buffer; for messages they stay within `tail`.
impl ByteBufMut for FrameBuf {
    fn offset(&self) -> usize {
        self.done_len + self.tail.len()
    }

    fn seek(&mut self, offset: usize) {
        self.tail.resize(offset.saturating_sub(self.done_len), 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        &mut self.tail[r.start - self.done_len..r.end - self.done_len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_bounded() {
        assert_eq!(check_length(-5, 100), Err(FrameError::BadLength(-5)));
        assert_eq!(check_length(0, 100), Err(FrameError::BadLength(0)));
        assert_eq!(check_length(101, 100), Err(FrameError::TooLarge { len: 101, max: 100 }));
        assert_eq!(check_length(100, 100), Ok(100));
    }

    #[test]
    fn unknown_keys_and_short_frames_are_rejected() {
        assert_eq!(peek_api(&[0, 1]), Err(FrameError::Truncated));
        assert_eq!(peek_api(&[0x7f, 0x7f, 0, 0, 0, 0, 0, 1]), Err(FrameError::UnknownApiKey(0x7f7f)));
        assert_eq!(peek_api(&[0, 18, 0, 3, 0, 0, 0, 1]), Ok((ApiKey::ApiVersions, 3)));
    }

    #[test]
    fn a_body_that_does_not_parse_is_malformed() {
        // Metadata v1: header (client id length -1), one topic whose name claims 300 bytes
        // but has 2.
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 9, 0xff, 0xff, 0, 0, 0, 1, 0x01, 0x2c, b'a', b'b']);
        assert!(matches!(decode_request(frame, ApiKey::Metadata, 1), Err(FrameError::Malformed { .. })));
    }

    #[test]
    fn fetch_records_are_referenced_and_the_bytes_match_a_plain_encoding() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::FetchResponse;

        let large = Bytes::from((0..40_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let small = Bytes::from_static(b"a small record set");
        let partition = |i, records: &Bytes| {
            PartitionData::default().with_partition_index(i).with_high_watermark(7).with_records(Some(records.clone()))
        };
        let topic = FetchableTopicResponse::default()
            .with_topic(kafka_protocol::messages::TopicName("t".into()))
            .with_partitions(vec![partition(0, &large), partition(1, &small), partition(2, &large)]);
        let body = ResponseKind::Fetch(FetchResponse::default().with_responses(vec![topic]));
        for version in [4, 11, 12, 16] {
            let mut frame = encode_response(ApiKey::Fetch, version, 42, &body).unwrap();

            let mut plain = BytesMut::new();
            ResponseHeader::default()
                .with_correlation_id(42)
                .encode(&mut plain, ApiKey::Fetch.response_header_version(version))
                .unwrap();
            body.encode(&mut plain, version).unwrap();
            let mut expected = (plain.len() as i32).to_be_bytes().to_vec();
            expected.extend_from_slice(&plain);

            let referenced = frame.segments.iter().filter(|s| s.as_ptr() == large.as_ptr()).count();
            assert_eq!(referenced, 2, "v{version}: both large record sets are referenced, not copied");
            assert_eq!(frame.remaining(), expected.len());
            let mut written = Vec::new();
            while frame.has_remaining() {
                // As a socket would: vectored, in uneven steps.
                let mut slices = [IoSlice::new(&[]); 3];
                let n = frame.chunks_vectored(&mut slices);
                let step: usize = slices[..n].iter().map(|s| s.len()).sum::<usize>().min(10_001);
                written.extend(slices[..n].iter().flat_map(|s| s.iter().copied()).take(step));
                frame.advance(step);
            }
            assert_eq!(written, expected, "v{version}");
        }
    }
}
