//! `chronik bench`: a librdkafka load generator for any Kafka-compatible broker.
//! Prints records/s, MB/s and latency percentiles (HdrHistogram), with a progress bar
//! on a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Subcommand)]
pub enum Bench {
    /// Produce records as fast as the broker acknowledges them.
    Produce(ProduceArgs),
    /// Read a topic from the beginning of every partition.
    Consume(ConsumeArgs),
    /// Produce and consume at once; latency is from send to receipt by the consumer.
    E2e(ProduceArgs),
    /// Synchronous offset commits: commits/s and latency.
    Commits(crate::bench_groups::CommitArgs),
    /// Time for a consumer group to consume again after a member joins.
    Rebalance(crate::bench_groups::RebalanceArgs),
}

#[derive(Args)]
pub struct Common {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Partitions of the topic (created if missing).
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Replicas per partition of a created topic (-1: the broker's default).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
    /// Print a JSON line instead of a table.
    #[arg(long)]
    pub json: bool,
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
        Bench::E2e(args) => e2e(args),
        Bench::Commits(args) => crate::bench_groups::commits(args),
        Bench::Rebalance(args) => crate::bench_groups::rebalance(args),
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

pub fn ensure_topic(common: &Common) -> anyhow::Result<()> {
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
    let producer: ThreadedProducer<LatencyContext> =
        producer_config(&args)?.create_with_context(LatencyContext(stats.clone()))?;
    let payload = vec![b'x'; args.record_size];
    let partitions = args.common.partitions.max(1);
    let progress = progress_bar(args.count, "produced");
    let start = Instant::now();
    for i in 0..args.count {
        pace(start, i, args.rate);
        let record = BaseRecord::<[u8], [u8], _>::with_opaque_to(&args.common.topic, Box::new(Instant::now()))
            .payload(payload.as_slice())
            .partition((i % partitions as u64) as i32);
        send(&producer, record)?;
        progress.set_position(stats.acked.load(Ordering::Relaxed));
    }
    producer.flush(Duration::from_secs(120))?;
    progress.finish_and_clear();
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

/// The librdkafka producer settings of a produce or e2e run.
fn producer_config(args: &ProduceArgs) -> anyhow::Result<ClientConfig> {
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
    Ok(config)
}

/// Sleeps until record `i` is due at `rate` records/s (0: never sleeps).
fn pace(start: Instant, i: u64, rate: u64) {
    if rate > 0 {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Queues a record, waiting while librdkafka's queue is full.
fn send<'a, C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'a, [u8], [u8], C::DeliveryOpaque>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => anyhow::bail!("send failed: {e}"),
        }
    }
}

/// A progress bar on a terminal; hidden when stdout is not one (logs, `--json`).
fn progress_bar(total: u64, what: &str) -> ProgressBar {
    if !std::io::stdout().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {what} {{per_sec}} eta {{eta}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

fn micros_since_epoch() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Produces and consumes at once: each payload starts with its send time (µs since the
/// epoch), and the consumer records receipt minus send time. Same-machine clocks only.
fn e2e(args: ProduceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.record_size >= 8, "--record-size must be at least 8: the payload carries its send time");
    ensure_topic(&args.common)?;
    let topic = args.common.topic.clone();
    let partitions = args.common.partitions.max(1);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.common.bootstrap)
        .set("group.id", "chronik-bench-e2e")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, end) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
        tpl.add_partition_offset(&topic, p, Offset::Offset(end))?;
    }
    consumer.assign(&tpl)?;

    let producer: ThreadedProducer<DefaultProducerContext> = producer_config(&args)?.create()?;
    let (count, rate, size) = (args.count, args.rate, args.record_size);
    let sending = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut payload = vec![b'x'; size];
        let start = Instant::now();
        for i in 0..count {
            pace(start, i, rate);
            payload[..8].copy_from_slice(&micros_since_epoch().to_be_bytes());
            let record =
                BaseRecord::<[u8], [u8]>::to(&topic).payload(&payload).partition((i % partitions as u64) as i32);
            send(&producer, record)?;
        }
        producer.flush(Duration::from_secs(120))?;
        Ok(())
    });

    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let progress = progress_bar(count, "consumed");
    let start = Instant::now();
    let mut last_receipt = Instant::now();
    let mut received = 0u64;
    while received < count && last_receipt.elapsed() < Duration::from_secs(30) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let sent =
                    m.payload().and_then(|p| p.get(..8)).map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default()));
                if let Some(sent) = sent {
                    latency.record(micros_since_epoch().saturating_sub(sent).max(1))?;
                }
                received += 1;
                last_receipt = Instant::now();
                progress.inc(1);
            }
            Some(Err(e)) => anyhow::bail!("consume failed: {e}"),
            None => {}
        }
    }
    progress.finish_and_clear();
    sending.join().map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
    anyhow::ensure!(received == count, "received {received} of {count} records (nothing for 30 s)");
    let elapsed = start.elapsed().as_secs_f64();
    let mb = received as f64 * size as f64 / (1 << 20) as f64;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    if args.common.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": "e2e", "records": received, "seconds": elapsed, "records_per_s": received as f64 / elapsed,
                "mib_per_s": mb / elapsed, "record_size": size, "partitions": partitions, "acks": args.acks,
                "latency_ms": {"p50": ms(0.5), "p95": ms(0.95), "p99": ms(0.99), "p999": ms(0.999), "max": latency.max() as f64 / 1000.0}
            })
        );
    } else {
        println!(
            "e2e: {received} records of {size} B over {partitions} partition(s), acks={}, in {elapsed:.2} s",
            args.acks
        );
        println!("  {:.0} records/s, {:.1} MiB/s", received as f64 / elapsed, mb / elapsed);
        println!(
            "  end-to-end latency ms: p50 {:.2}  p95 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            ms(0.5),
            ms(0.95),
            ms(0.99),
            ms(0.999),
            latency.max() as f64 / 1000.0
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
    let progress = progress_bar(args.count, "consumed");
    let start = Instant::now();
    let deadline = start + Duration::from_secs(300);
    while records < args.count && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                records += 1;
                progress.inc(1);
                bytes += m.payload().map_or(0, |p| p.len() as u64);
            }
            Some(Err(e)) => anyhow::bail!("consume failed: {e}"),
            None => {}
        }
    }
    progress.finish_and_clear();
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
