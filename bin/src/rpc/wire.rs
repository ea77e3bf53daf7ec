//! The messages of `proto/chronik/admin/v1/admin.proto` as `prost::Message` impls,
//! carried by the same tonic codec as the Raft transport
//! (`chronik_replication::transport::wire::ProstCodec`). Written out instead of
//! derived: prost's derive macro changes the build-dependency features that RocksDB's
//! bindings are built with (a 25-minute rebuild). proto3 rules: default values are not
//! written, unknown fields are skipped.

use bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

use chronik_replication::transport::wire::proto3::{put_string, put_u64, string_len, u64_len};
pub use chronik_replication::transport::wire::ProstCodec as WireCodec;

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

impl Message for CreateBackupRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(1, &self.to, buf);
        put_string(2, &self.compression, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::string::merge(wire, &mut self.to, buf, ctx),
            2 => encoding::string::merge(wire, &mut self.compression, buf, ctx),
            _ => encoding::skip_field(wire, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        string_len(1, &self.to) + string_len(2, &self.compression)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for CreateBackupProgress {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_u64(1, self.bytes_done, buf);
        put_u64(2, self.bytes_total, buf);
        put_u64(3, u64::from(self.files_done), buf);
        put_u64(4, u64::from(self.files_total), buf);
        put_string(5, &self.manifest_json, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::uint64::merge(wire, &mut self.bytes_done, buf, ctx),
            2 => encoding::uint64::merge(wire, &mut self.bytes_total, buf, ctx),
            3 => encoding::uint32::merge(wire, &mut self.files_done, buf, ctx),
            4 => encoding::uint32::merge(wire, &mut self.files_total, buf, ctx),
            5 => encoding::string::merge(wire, &mut self.manifest_json, buf, ctx),
            _ => encoding::skip_field(wire, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        u64_len(1, self.bytes_done)
            + u64_len(2, self.bytes_total)
            + u64_len(3, u64::from(self.files_done))
            + u64_len(4, u64::from(self.files_total))
            + string_len(5, &self.manifest_json)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for MembershipRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(1, &self.action, buf);
        put_u64(2, self.node_id, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::string::merge(wire, &mut self.action, buf, ctx),
            2 => encoding::uint64::merge(wire, &mut self.node_id, buf, ctx),
            _ => encoding::skip_field(wire, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        string_len(1, &self.action) + u64_len(2, self.node_id)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for MembershipReply {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_string(1, &self.message, buf);
        put_string(2, &self.members_json, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::string::merge(wire, &mut self.message, buf, ctx),
            2 => encoding::string::merge(wire, &mut self.members_json, buf, ctx),
            _ => encoding::skip_field(wire, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        string_len(1, &self.message) + string_len(2, &self.members_json)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_protobuf_and_round_trips() {
        let request = CreateBackupRequest { to: "s3://b/p".into(), compression: String::new() };
        let bytes = request.encode_to_vec();
        // Field 1, length-delimited (0x0a), 8 bytes; the empty field 2 is omitted.
        assert_eq!(bytes, b"\x0a\x08s3://b/p");
        assert_eq!(CreateBackupRequest::decode(bytes.as_slice()).expect("decode"), request);

        let progress = CreateBackupProgress {
            bytes_done: 300,
            bytes_total: 1 << 40,
            files_done: 1,
            files_total: 2,
            manifest_json: "{}".into(),
        };
        let mut bytes = progress.encode_to_vec();
        assert_eq!(&bytes[..3], b"\x08\xac\x02", "field 1 varint 300");
        // An unknown fixed64 field 9 is skipped.
        bytes.extend_from_slice(&[0x49, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(CreateBackupProgress::decode(bytes.as_slice()).expect("decode"), progress);
        assert!(CreateBackupProgress::decode(b"\x2a\x05ab".as_slice()).is_err(), "truncated string");
        assert!(CreateBackupProgress::decode(b"\x08\xff".as_slice()).is_err(), "truncated varint");

        let request = MembershipRequest { action: "promote".into(), node_id: 4 };
        let bytes = request.encode_to_vec();
        assert_eq!(bytes, b"\x0a\x07promote\x10\x04");
        assert_eq!(MembershipRequest::decode(bytes.as_slice()).expect("decode"), request);
        let reply = MembershipReply { message: "ok".into(), members_json: "{}".into() };
        let bytes = reply.encode_to_vec();
        assert_eq!(MembershipReply::decode(bytes.as_slice()).expect("decode"), reply);
    }
}
