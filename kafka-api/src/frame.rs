//! Request framing and decoding on bytes; no I/O here.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
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

/// Encodes a response frame: length, header, body.
pub fn encode_response(key: ApiKey, version: i16, correlation_id: i32, body: &ResponseKind) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(64 + body_size_hint(body, version));
    buf.extend_from_slice(&[0; 4]);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header.encode(&mut buf, key.response_header_version(version))?;
    body.encode(&mut buf, version)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Bytes to reserve for a response body: exact for Fetch, whose megabytes of records
/// were otherwise copied again every time the buffer doubled (with fresh pages to fault
/// in each time); small bodies grow as needed.
fn body_size_hint(body: &ResponseKind, version: i16) -> usize {
    match body {
        ResponseKind::Fetch(fetch) => fetch.compute_size(version).unwrap_or(0),
        _ => 0,
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
}
