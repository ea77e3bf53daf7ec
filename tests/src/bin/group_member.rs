//! A consumer-group member in its own process, for tests that kill it with SIGKILL:
//! `group_member BOOTSTRAP GROUP TOPIC` subscribes with the classic protocol and polls
//! until killed.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, group, topic] = args.as_slice() else {
        eprintln!("usage: group_member BOOTSTRAP GROUP TOPIC");
        std::process::exit(2);
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    loop {
        let _ = consumer.poll(Duration::from_millis(100));
    }
}
