//! Hostile bytes on the Kafka port: random garbage, truncated frames, negative and
//! huge lengths, unknown API keys and versions. Each closes only its own connection;
//! the node keeps serving and loses nothing.

use std::time::Duration;

use chronik_tests::raw::RawClient;
use chronik_tests::{consume, consumer, create_topic, producer, Node};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, ResponseHeader};
use kafka_protocol::protocol::Decodable;
use rdkafka::producer::FutureRecord;
use rdkafka::Offset;

/// A small deterministic generator, so a failure can be replayed from its seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_its_connection_and_loses_nothing() {
    let node = Node::start(&[]);
    create_topic(&node, "survivor", 1, &[]).await;
    let producer = producer(&node, &[]);
    for i in 0..20 {
        producer
            .send(FutureRecord::<(), _>::to("survivor").payload(&format!("before-{i}")), Duration::from_secs(10))
            .await
            .expect("acked");
    }
    // A healthy connection that stays open throughout.
    let mut healthy = RawClient::connect(&node.bootstrap());
    assert_eq!(healthy.request(3, &ApiVersionsRequest::default()).error_code, 0);

    let seed = 0x5eed_c0ffee_u64;
    println!("bad input seed {seed:#x}");
    let mut rng = XorShift(seed);
    let mut attacks: Vec<(String, Vec<u8>)> = vec![
        ("negative length".into(), (-1i32).to_be_bytes().to_vec()),
        ("zero length".into(), 0i32.to_be_bytes().to_vec()),
        ("huge length".into(), i32::MAX.to_be_bytes().to_vec()),
        ("length past the data".into(), [&1000i32.to_be_bytes()[..], b"short"].concat()),
        ("frame shorter than a header".into(), frame(&[0, 3])),
        ("unknown api key".into(), frame(&[0x7f, 0x00, 0, 1, 0, 0, 0, 7, 0, 0])),
        ("unsupported produce version".into(), frame(&[0, 0, 0x10, 0, 0, 0, 0, 7, 0, 0])),
        // kafka-protocol pre-allocates arrays by their wire count (2^31-1 topics here).
        ("array count of i32::MAX".into(), frame(&[0, 3, 0, 1, 0, 0, 0, 7, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff])),
        (
            "compact array count of u32::MAX".into(),
            frame(&[0, 3, 0, 12, 0, 0, 0, 7, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        ),
        ("metadata with garbage body".into(), frame(&[&[0u8, 3, 0, 9, 0, 0, 0, 7][..], &rng.bytes(64)].concat())),
        ("produce with garbage body".into(), frame(&[&[0u8, 0, 0, 9, 0, 0, 0, 7][..], &rng.bytes(300)].concat())),
    ];
    for i in 0..40 {
        let len = (rng.next() % 512) as usize;
        attacks.push((format!("random frame {i}"), frame(&rng.bytes(len))));
        attacks.push((format!("random bytes {i}"), rng.bytes(len + 4)));
    }
    for (name, bytes) in &attacks {
        let mut bad = RawClient::connect(&node.bootstrap());
        bad.send_raw(bytes).expect(name);
        // Either the broker closes the connection, or (for an incomplete frame) waits;
        // in both cases we hang up and the node must stay healthy.
        drop(bad);
        assert_eq!(healthy.request(12, &MetadataRequest::default()).brokers.len(), 1, "after {name}");
    }

    // An unsupported ApiVersions version gets UNSUPPORTED_VERSION and the list (KIP-511).
    let mut old = RawClient::connect(&node.bootstrap());
    let mut body = vec![0u8, 18, 0x00, 0x63, 0, 0, 0, 1, 0, 0];
    body.extend_from_slice(&[0, 0]);
    old.send_raw(&frame(&body)).expect("send");
    let mut response = old.read_frame();
    let header = ResponseHeader::decode(&mut response, 0).expect("v0 header");
    assert_eq!(header.correlation_id, 1);
    let versions = ApiVersionsResponse::decode(&mut response, 0).expect("v0 body");
    assert_eq!(versions.error_code, ResponseError::UnsupportedVersion.code());
    assert!(versions.api_keys.iter().any(|k| k.api_key == 0), "the list comes with the error");
    let mut client = RawClient::connect(&node.bootstrap());
    assert_eq!(client.request(0, &ApiVersionsRequest::default()).error_code, 0);

    // An unknown API key closes that connection.
    let mut unknown = RawClient::connect(&node.bootstrap());
    unknown.send_raw(&frame(&[0x7f, 0x00, 0, 1, 0, 0, 0, 7, 0, 0])).expect("send");
    assert!(unknown.is_closed(), "unknown api key closes the connection");

    let c = consumer(&node, "survivor", 0, Offset::Beginning, &[]);
    let got = consume(&c, 20, Duration::from_secs(10));
    assert_eq!(got.len(), 20, "nothing was lost");
    let delivery = producer
        .send(FutureRecord::<(), _>::to("survivor").payload("after"), Duration::from_secs(10))
        .await
        .expect("still accepting writes");
    assert_eq!(delivery.offset, 20);
}
