//! A raw Kafka connection for tests that need exact control of the bytes: duplicate
//! batches, bad sequence numbers, malformed frames. Messages are still encoded by
//! `kafka-protocol`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{encode_request_header_into_buffer, Decodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

pub struct RawClient {
    stream: TcpStream,
    correlation_id: i32,
}

impl RawClient {
    pub fn connect(bootstrap: &str) -> RawClient {
        let stream = TcpStream::connect(bootstrap).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        RawClient { stream, correlation_id: 0 }
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response frame (without its length prefix).
    pub fn read_frame(&mut self) -> Bytes {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).expect("response length");
        let mut buf = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
        self.stream.read_exact(&mut buf).expect("response body");
        Bytes::from(buf)
    }

    /// True if the broker closed the connection (read returns EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.stream.read(&mut buf), Ok(0) | Err(_))
    }

    /// Sends a request and decodes its response.
    pub fn request<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        self.send_request(version, request).expect("send");
        self.read_response::<R::Response>(version)
    }

    /// Sends a request without waiting for its response (read it with `read_response`).
    pub fn send_request<R: Request>(&mut self, version: i16, request: &R) -> std::io::Result<()> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id);
        let mut body = BytesMut::new();
        encode_request_header_into_buffer(&mut body, &header).expect("header");
        request.encode(&mut body, version).expect("encode");
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.send_raw(&frame)
    }

    /// Reads the response to the last request sent.
    pub fn read_response<T: Decodable + HeaderVersion>(&mut self, version: i16) -> T {
        let mut bytes = self.read_frame();
        let header = ResponseHeader::decode(&mut bytes, T::header_version(version)).expect("response header");
        assert_eq!(header.correlation_id, self.correlation_id, "responses must come in request order");
        T::decode(&mut bytes, version).expect("response body")
    }
}

/// Produces `records` to partition 0 of `topic` (acks=all, Produce v9); returns the
/// partition's error code and base offset.
pub fn produce(client: &mut RawClient, topic: &str, records: Bytes) -> (i16, i64) {
    let partition = PartitionProduceData::default().with_index(0).with_records(Some(records));
    let request =
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![partition])]);
    let response = client.request(9, &request);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Encodes one v2 batch of `values` with the given producer identity.
pub fn batch(
    values: &[&[u8]],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    compression: Compression,
) -> Bytes {
    TestBatch { producer_id, producer_epoch, base_sequence, compression, ..TestBatch::default() }.encode(values)
}

/// A v2 record batch for tests, encoded by `kafka-protocol`: one record per value,
/// timestamps `first_timestamp`, `first_timestamp + 1`, ...
#[derive(Debug, Clone, Copy)]
pub struct TestBatch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub compression: Compression,
    pub first_timestamp: i64,
}

impl Default for TestBatch {
    fn default() -> Self {
        TestBatch {
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: 0,
            compression: Compression::None,
            first_timestamp: 1_700_000_000_000,
        }
    }
}

impl TestBatch {
    pub fn encode(&self, values: &[&[u8]]) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // Sequences must track offsets for the encoder to keep one batch.
                sequence: self.base_sequence + i as i32,
                timestamp: self.first_timestamp + i as i64,
                key: None,
                value: Some(Bytes::copy_from_slice(v)),
                headers: IndexMap::new(),
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression: self.compression };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode batch");
        buf.freeze()
    }
}
