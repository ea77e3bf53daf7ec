//! The messages of `proto/chronik/raft/v1/raft.proto` and the tonic codec for them.
//!
//! The `prost::Message` impls are written out instead of derived: prost's derive macro
//! would change the features of RocksDB's build dependencies (itertools), which rebuilds
//! RocksDB. Field numbers and wire types follow the .proto exactly, so any protobuf
//! client can speak this service.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use self::proto3::{bytes_len, put_bytes, put_string, put_u64, string_len, u64_len};

/// One round's Raft messages from one node to another.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RaftBatch {
    /// Node id of the sender.
    pub from: u64,
    pub messages: Vec<GroupMessage>,
    pub floors: Vec<CompactFloor>,
}

/// A leader's word that every replica of `group` has the log up to `index`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompactFloor {
    pub group: u64,
    pub index: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupMessage {
    /// Raft group: 0 = metadata, otherwise the partition uid.
    pub group: u64,
    /// A raft-rs `eraftpb::Message`, encoded with rust-protobuf as raft-rs ships it.
    pub message: Bytes,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SendSummary {
    pub batches: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetaProposal {
    /// A metadata command as encoded in Raft entries (`command::encode_meta`).
    pub command: Bytes,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetaResult {
    /// JSON of the `MetaOutcome`, or empty with `error` set.
    pub outcome: Bytes,
    /// 0 = ok, 1 = not the group-0 leader, 2 = other failure (see `message`).
    pub error: u32,
    pub message: String,
}

/// proto3 scalar fields for hand-written `prost::Message` impls: a field at its default
/// value (0, empty) is not written. Also used by the admin API (`bin/src/rpc/wire.rs`).
/// A uint32 is written exactly like a uint64 of the same value, so the u64 helpers
/// serve both.
pub mod proto3 {
    use bytes::BufMut;
    use prost::encoding;

    pub fn put_u64(tag: u32, v: u64, buf: &mut impl BufMut) {
        if v != 0 {
            encoding::uint64::encode(tag, &v, buf);
        }
    }

    pub fn u64_len(tag: u32, v: u64) -> usize {
        if v == 0 {
            0
        } else {
            encoding::uint64::encoded_len(tag, &v)
        }
    }

    pub fn put_bytes(tag: u32, v: &bytes::Bytes, buf: &mut impl BufMut) {
        if !v.is_empty() {
            encoding::bytes::encode(tag, v, buf);
        }
    }

    pub fn bytes_len(tag: u32, v: &bytes::Bytes) -> usize {
        if v.is_empty() {
            0
        } else {
            encoding::bytes::encoded_len(tag, v)
        }
    }

    pub fn put_string(tag: u32, v: &String, buf: &mut impl BufMut) {
        if !v.is_empty() {
            encoding::string::encode(tag, v, buf);
        }
    }

    pub fn string_len(tag: u32, v: &String) -> usize {
        if v.is_empty() {
            0
        } else {
            encoding::string::encoded_len(tag, v)
        }
    }
}

impl Message for RaftBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_u64(1, self.from, buf);
        encoding::message::encode_repeated(2, &self.messages, buf);
        encoding::message::encode_repeated(3, &self.floors, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::uint64::merge(wire_type, &mut self.from, buf, ctx),
            2 => encoding::message::merge_repeated(wire_type, &mut self.messages, buf, ctx),
            3 => encoding::message::merge_repeated(wire_type, &mut self.floors, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        u64_len(1, self.from)
            + encoding::message::encoded_len_repeated(2, &self.messages)
            + encoding::message::encoded_len_repeated(3, &self.floors)
    }

    fn clear(&mut self) {
        *self = RaftBatch::default();
    }
}

impl Message for GroupMessage {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_u64(1, self.group, buf);
        put_bytes(2, &self.message, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::uint64::merge(wire_type, &mut self.group, buf, ctx),
            2 => encoding::bytes::merge(wire_type, &mut self.message, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        u64_len(1, self.group) + bytes_len(2, &self.message)
    }

    fn clear(&mut self) {
        *self = GroupMessage::default();
    }
}

impl Message for CompactFloor {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_u64(1, self.group, buf);
        put_u64(2, self.index, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::uint64::merge(wire_type, &mut self.group, buf, ctx),
            2 => encoding::uint64::merge(wire_type, &mut self.index, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        u64_len(1, self.group) + u64_len(2, self.index)
    }

    fn clear(&mut self) {
        *self = CompactFloor::default();
    }
}

impl Message for SendSummary {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_u64(1, self.batches, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::uint64::merge(wire_type, &mut self.batches, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        u64_len(1, self.batches)
    }

    fn clear(&mut self) {
        *self = SendSummary::default();
    }
}

impl Message for MetaProposal {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_bytes(1, &self.command, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::bytes::merge(wire_type, &mut self.command, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        bytes_len(1, &self.command)
    }

    fn clear(&mut self) {
        *self = MetaProposal::default();
    }
}

impl Message for MetaResult {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_bytes(1, &self.outcome, buf);
        put_u64(2, u64::from(self.error), buf);
        put_string(3, &self.message, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => encoding::bytes::merge(wire_type, &mut self.outcome, buf, ctx),
            2 => encoding::uint32::merge(wire_type, &mut self.error, buf, ctx),
            3 => encoding::string::merge(wire_type, &mut self.message, buf, ctx),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        bytes_len(1, &self.outcome) + u64_len(2, u64::from(self.error)) + string_len(3, &self.message)
    }

    fn clear(&mut self) {
        *self = MetaResult::default();
    }
}

/// tonic codec for hand-written `prost::Message` types: the messages above, and the
/// admin API's in `bin/src/rpc/wire.rs`.
pub struct ProstCodec<E, D>(PhantomData<(E, D)>);

impl<E, D> Default for ProstCodec<E, D> {
    fn default() -> Self {
        ProstCodec(PhantomData)
    }
}

impl<E, D> Codec for ProstCodec<E, D>
where
    E: Message + Send + 'static,
    D: Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = MessageEncoder<E>;
    type Decoder = MessageDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        MessageEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder(PhantomData)
    }
}

pub struct MessageEncoder<E>(PhantomData<E>);

impl<E: Message> Encoder for MessageEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // EncodeBuf grows as needed, so encoding cannot run out of space.
        item.encode(buf).map_err(|e| Status::internal(e.to_string()))
    }
}

pub struct MessageDecoder<D>(PhantomData<D>);

impl<D: Message + Default> Decoder for MessageDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(buf).map(Some).map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let batch = RaftBatch {
            from: 3,
            messages: vec![
                GroupMessage { group: 0, message: Bytes::from_static(b"m0") },
                GroupMessage { group: 77, message: Bytes::new() },
            ],
            floors: vec![CompactFloor { group: 5, index: 900 }],
        };
        assert_eq!(RaftBatch::decode(batch.encode_to_vec().as_slice()).expect("batch"), batch);
        let result = MetaResult { outcome: Bytes::from_static(b"{}"), error: 2, message: "no".into() };
        assert_eq!(MetaResult::decode(result.encode_to_vec().as_slice()).expect("result"), result);
        let proposal = MetaProposal { command: Bytes::from_static(b"\x03{}") };
        assert_eq!(MetaProposal::decode(proposal.encode_to_vec().as_slice()).expect("proposal"), proposal);
        assert_eq!(SendSummary::decode([8u8, 5].as_slice()).expect("summary"), SendSummary { batches: 5 });
    }
}
