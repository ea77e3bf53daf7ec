//! The messages of `proto/chronik/admin/v1/admin.proto` in protobuf wire format, and a
//! tonic codec for them. Hand-written on purpose: the two messages are small, and
//! prost's derive macro changes the build-dependency features that RocksDB's bindings
//! are built with (a 25-minute rebuild). Unknown fields are skipped, as protobuf requires.

use std::marker::PhantomData;

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// A message that can cross the wire.
pub trait Message: Sized + Send + 'static {
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateBackupRequest {
    /// Field 1.
    pub to: String,
    /// Field 2.
    pub compression: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateBackupProgress {
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub files_done: u32,
    pub files_total: u32,
    pub manifest_json: String,
}

impl Message for CreateBackupRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        put_string(out, 1, &self.to);
        put_string(out, 2, &self.compression);
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut m = CreateBackupRequest::default();
        for_each_field(bytes, |field, value| {
            match (field, value) {
                (1, Value::Bytes(b)) => m.to = utf8(b)?,
                (2, Value::Bytes(b)) => m.compression = utf8(b)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

impl Message for CreateBackupProgress {
    fn encode(&self, out: &mut Vec<u8>) {
        put_varint_field(out, 1, self.bytes_done);
        put_varint_field(out, 2, self.bytes_total);
        put_varint_field(out, 3, u64::from(self.files_done));
        put_varint_field(out, 4, u64::from(self.files_total));
        put_string(out, 5, &self.manifest_json);
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut m = CreateBackupProgress::default();
        for_each_field(bytes, |field, value| {
            match (field, value) {
                (1, Value::Varint(v)) => m.bytes_done = v,
                (2, Value::Varint(v)) => m.bytes_total = v,
                (3, Value::Varint(v)) => m.files_done = v as u32,
                (4, Value::Varint(v)) => m.files_total = v as u32,
                (5, Value::Bytes(b)) => m.manifest_json = utf8(b)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembershipRequest {
    /// Field 1: `list`, `promote` or `remove`.
    pub action: String,
    /// Field 2.
    pub node_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembershipReply {
    /// Field 1: what was done.
    pub message: String,
    /// Field 2: `{"voters": [..], "learners": [..], "leader": N}` after the change.
    pub members_json: String,
}

impl Message for MembershipRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        put_string(out, 1, &self.action);
        put_varint_field(out, 2, self.node_id);
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut m = MembershipRequest::default();
        for_each_field(bytes, |field, value| {
            match (field, value) {
                (1, Value::Bytes(b)) => m.action = utf8(b)?,
                (2, Value::Varint(v)) => m.node_id = v,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

impl Message for MembershipReply {
    fn encode(&self, out: &mut Vec<u8>) {
        put_string(out, 1, &self.message);
        put_string(out, 2, &self.members_json);
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut m = MembershipReply::default();
        for_each_field(bytes, |field, value| {
            match (field, value) {
                (1, Value::Bytes(b)) => m.message = utf8(b)?,
                (2, Value::Bytes(b)) => m.members_json = utf8(b)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn utf8(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    // proto3: default values are not written.
    if v != 0 {
        put_varint(out, u64::from(field) << 3);
        put_varint(out, v);
    }
}

fn put_string(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_varint(out, (u64::from(field) << 3) | 2);
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
}

fn get_varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or("truncated varint")?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn for_each_field<'a>(
    mut bytes: &'a [u8],
    mut visit: impl FnMut(u32, Value<'a>) -> Result<(), String>,
) -> Result<(), String> {
    while !bytes.is_empty() {
        let key = get_varint(&mut bytes)?;
        let field = (key >> 3) as u32;
        let value = match key & 7 {
            0 => Value::Varint(get_varint(&mut bytes)?),
            2 => {
                let len = usize::try_from(get_varint(&mut bytes)?).map_err(|_| "length too large")?;
                if len > bytes.len() {
                    return Err(format!("field {field} needs {len} bytes, {} left", bytes.len()));
                }
                let (value, rest) = bytes.split_at(len);
                bytes = rest;
                Value::Bytes(value)
            }
            wire @ (1 | 5) => {
                let len = if wire == 1 { 8 } else { 4 };
                if len > bytes.len() {
                    return Err(format!("field {field} truncated"));
                }
                bytes = &bytes[len..];
                Value::Fixed
            }
            other => return Err(format!("unsupported wire type {other} in field {field}")),
        };
        visit(field, value)?;
    }
    Ok(())
}

/// A tonic codec that encodes `E` and decodes `D`.
pub struct WireCodec<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for WireCodec<E, D> {
    fn default() -> Self {
        WireCodec(PhantomData)
    }
}

impl<E: Message, D: Message> Codec for WireCodec<E, D> {
    type Encode = E;
    type Decode = D;
    type Encoder = WireEncoder<E>;
    type Decoder = WireDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(PhantomData)
    }
}

pub struct WireEncoder<E>(PhantomData<fn(E)>);

impl<E: Message> Encoder for WireEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let mut bytes = Vec::new();
        item.encode(&mut bytes);
        dst.put_slice(&bytes);
        Ok(())
    }
}

pub struct WireDecoder<D>(PhantomData<fn() -> D>);

impl<D: Message> Decoder for WireDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        D::decode(&bytes).map(Some).map_err(|e| Status::invalid_argument(format!("malformed message: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_protobuf_and_round_trips() {
        let request = CreateBackupRequest { to: "s3://b/p".into(), compression: String::new() };
        let mut bytes = Vec::new();
        request.encode(&mut bytes);
        // Field 1, length-delimited (0x0a), 8 bytes; the empty field 2 is omitted.
        assert_eq!(bytes, b"\x0a\x08s3://b/p");
        assert_eq!(CreateBackupRequest::decode(&bytes).expect("decode"), request);

        let progress = CreateBackupProgress {
            bytes_done: 300,
            bytes_total: 1 << 40,
            files_done: 1,
            files_total: 2,
            manifest_json: "{}".into(),
        };
        let mut bytes = Vec::new();
        progress.encode(&mut bytes);
        assert_eq!(&bytes[..3], b"\x08\xac\x02", "field 1 varint 300");
        // An unknown fixed64 field 9 is skipped.
        bytes.extend_from_slice(&[0x49, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(CreateBackupProgress::decode(&bytes).expect("decode"), progress);
        assert!(CreateBackupProgress::decode(b"\x2a\x05ab").is_err(), "truncated string");
        assert!(CreateBackupProgress::decode(b"\x08\xff").is_err(), "truncated varint");

        let request = MembershipRequest { action: "promote".into(), node_id: 4 };
        let mut bytes = Vec::new();
        request.encode(&mut bytes);
        assert_eq!(bytes, b"\x0a\x07promote\x10\x04");
        assert_eq!(MembershipRequest::decode(&bytes).expect("decode"), request);
        let reply = MembershipReply { message: "ok".into(), members_json: "{}".into() };
        let mut bytes = Vec::new();
        reply.encode(&mut bytes);
        assert_eq!(MembershipReply::decode(&bytes).expect("decode"), reply);
    }
}
