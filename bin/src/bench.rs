//! `chronik bench`: a librdkafka load generator for any Kafka-compatible broker.
//! Prints records/s, MB/s and produce latency percentiles (HdrHistogram).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Subcommand)]
pub enum Bench {
    /// Produce records as fast as the broker acknowledges them.
    Produce(ProduceArgs),
    /// Read a topic from the beginning of every partition.
    Consume(ConsumeArgs),
}

#[derive(Args)]
pub struct Common {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Partitions of the topic (created if missing).
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Replicas per partition of a created topic (-1: the broker's default).
    #[arg(long, default_value_t = 1)]
    replication_factor: i32,
    /// Print a JSON line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// -1 (all), 0 or 1.
    #[arg(long, default_value = "all")]
    acks: String,
    #[arg(long, default_value = "none")]
    compression: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: u32,
    /// Target records/s (0: as fast as possible). Latency is meaningful only below
    /// saturation; at full speed it mostly measures the client's own queue.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Extra librdkafka settings, KEY=VALUE.
    #[arg(long = "set")]
    settings: Vec<String>,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// Records to read in all.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
}

pub fn run(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Produce(args) => produce(args),
        Bench::Consume(args) => consume(args),
    }
}

struct Stats {
    latency_us: Mutex<Histogram<u64>>,
    acked: AtomicU64,
    errors: AtomicU64,
}

struct LatencyContext(Arc<Stats>);

impl ClientContext for LatencyContext {}

impl ProducerContext for LatencyContext {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        match result {
            Ok(_) => {
                let us = sent.elapsed().as_micros() as u64;
                if let Ok(mut h) = self.0.latency_us.lock() {
                    let _ = h.record(us.max(1));
                }
                self.0.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.0.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn ensure_topic(common: &Common) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &common.bootstrap).create()?;
    let topic = NewTopic::new(&common.topic, common.partitions, TopicReplication::Fixed(common.replication_factor));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = runtime.block_on(admin.create_topics([&topic], &AdminOptions::new()))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => anyhow::bail!("cannot create topic {t}: {e}"),
        }
    }
    Ok(())
}

fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    ensure_topic(&args.common)?;
    let stats = Arc::new(Stats {
        latency_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
        acked: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.common.bootstrap)
        .set("acks", &args.acks)
        .set("compression.codec", &args.compression)
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.size", args.batch_size.to_string())
        .set("queue.buffering.max.kbytes", "1048576")
        .set("queue.buffering.max.messages", "1000000");
    for kv in &args.settings {
        let (k, v) = kv.split_once('=').with_context(|| format!("--set {kv:?} must be KEY=VALUE"))?;
        config.set(k, v);
    }
    let producer: ThreadedProducer<LatencyContext> = config.create_with_context(LatencyContext(stats.clone()))?;
    let payload = vec![b'x'; args.record_size];
    let partitions = args.common.partitions.max(1);
    let start = Instant::now();
    for i in 0..args.count {
        if args.rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut record = BaseRecord::<[u8], [u8], _>::with_opaque_to(&args.common.topic, Box::new(Instant::now()))
            .payload(payload.as_slice())
            .partition((i % partitions as u64) as i32);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => anyhow::bail!("send failed: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let elapsed = start.elapsed().as_secs_f64();
    let acked = stats.acked.load(Ordering::Relaxed);
    let errors = stats.errors.load(Ordering::Relaxed);
    let h = stats.latency_us.lock().map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?;
    let mb = acked as f64 * args.record_size as f64 / (1 << 20) as f64;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    if args.common.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": "produce", "records": acked, "errors": errors, "seconds": elapsed,
                "records_per_s": acked as f64 / elapsed, "mib_per_s": mb / elapsed,
                "record_size": args.record_size, "partitions": partitions, "acks": args.acks,
                "latency_ms": {"p50": ms(0.5), "p95": ms(0.95), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1000.0}
            })
        );
    } else {
        println!(
            "produce: {acked} records ({errors} errors) of {} B to {partitions} partition(s), acks={}, in {elapsed:.2} s",
            args.record_size, args.acks
        );
        println!("  {:.0} records/s, {:.1} MiB/s", acked as f64 / elapsed, mb / elapsed);
        println!(
            "  latency ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            ms(0.5),
            ms(0.95),
            ms(0.99),
            ms(0.999),
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}

fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.common.bootstrap)
        .set("group.id", "chronik-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..args.common.partitions.max(1) {
        tpl.add_partition_offset(&args.common.topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let (mut records, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(300);
    while records < args.count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                bytes += m.payload().map_or(0, |p| p.len() as u64);
            }
            Some(Err(e)) => anyhow::bail!("consume failed: {e}"),
            None => {}
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mb = bytes as f64 / (1 << 20) as f64;
    if args.common.json {
        println!(
            "{}",
            serde_json::json!({"mode": "consume", "records": records, "seconds": elapsed,
                "records_per_s": records as f64 / elapsed, "mib_per_s": mb / elapsed})
        );
    } else {
        println!("consume: {records} records in {elapsed:.2} s");
        println!("  {:.0} records/s, {:.1} MiB/s", records as f64 / elapsed, mb / elapsed);
    }
    Ok(())
}
