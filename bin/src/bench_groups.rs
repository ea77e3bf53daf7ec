//! `chronik bench commits|rebalance`: consumer-group load on any Kafka-compatible broker.
//!
//! - commits: synchronous OffsetCommits from N clients (each its own group, so groups
//!   spread over `__consumer_offsets` partitions); commits/s and latency percentiles.
//! - rebalance: N-1 members consume while a producer writes; one more member joins;
//!   the time until every partition delivers records again after the last rebalance
//!   callback and the new member consumes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::bench::{ensure_topic, Common};

#[derive(Args)]
pub struct CommitArgs {
    #[command(flatten)]
    common: Common,
    /// Commits per client.
    #[arg(long, default_value_t = 2000)]
    count: u64,
    /// Concurrent clients, each committing for its own group.
    #[arg(long, default_value_t = 4)]
    clients: usize,
}

#[derive(Args)]
pub struct RebalanceArgs {
    #[command(flatten)]
    common: Common,
    /// Members after the join (the last one joins during the measurement).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// partition.assignment.strategy, e.g. range or cooperative-sticky (classic only).
    #[arg(long, default_value = "range")]
    strategy: String,
    /// group.protocol: classic, or consumer (KIP-848: the broker assigns).
    #[arg(long, default_value = "classic")]
    protocol: String,
}

pub fn commits(args: CommitArgs) -> anyhow::Result<()> {
    ensure_topic(&args.common)?;
    let started = Instant::now();
    let threads: Vec<_> = (0..args.clients)
        .map(|client| {
            let bootstrap = args.common.bootstrap.clone();
            let topic = args.common.topic.clone();
            let (count, partitions) = (args.count, args.common.partitions.max(1));
            std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .set("group.id", format!("chronik-bench-commits-{client}"))
                    .set("enable.auto.commit", "false")
                    .create()?;
                let mut latency = Histogram::<u64>::new(3)?;
                for i in 0..count {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(&topic, (i % partitions as u64) as i32, Offset::Offset(i as i64))?;
                    let sent = Instant::now();
                    consumer.commit(&tpl, CommitMode::Sync).context("commit")?;
                    latency.record(sent.elapsed().as_micros().max(1) as u64)?;
                }
                Ok(latency)
            })
        })
        .collect();
    let mut latency = Histogram::<u64>::new(3)?;
    for thread in threads {
        let h = thread.join().map_err(|_| anyhow::anyhow!("commit thread panicked"))??;
        latency.add(&h)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let commits = latency.len();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    if args.common.json {
        println!(
            "{}",
            serde_json::json!({"mode": "commits", "commits": commits, "clients": args.clients,
                "commits_per_s": commits as f64 / elapsed, "p50_ms": ms(0.5), "p99_ms": ms(0.99)})
        );
    } else {
        println!("commits: {commits} synchronous commits from {} clients in {elapsed:.2} s", args.clients);
        println!("  {:.0} commits/s, latency p50 {:.2} ms, p99 {:.2} ms", commits as f64 / elapsed, ms(0.5), ms(0.99));
    }
    Ok(())
}

/// Records when the member's assignment last changed.
struct RebalanceClock(Arc<Mutex<Instant>>);

impl ClientContext for RebalanceClock {}

impl ConsumerContext for RebalanceClock {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            if let Ok(mut at) = self.0.lock() {
                *at = Instant::now();
            }
        }
    }
}

/// What every member saw: the last rebalance and, per partition, the last record time.
#[derive(Default)]
struct Observed {
    last_record: Mutex<HashMap<i32, Instant>>,
    member_records: Mutex<HashMap<usize, Instant>>,
}

pub fn rebalance(args: RebalanceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.members >= 2, "--members must be at least 2");
    ensure_topic(&args.common)?;
    let partitions = args.common.partitions.max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", &args.common.bootstrap).set("linger.ms", "1").create()?;
    let producing = {
        let (stop, topic) = (stop.clone(), args.common.topic.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let partition = (i % partitions as u64) as i32;
                let _ = producer.send(BaseRecord::<(), _>::to(&topic).payload("tick").partition(partition));
                i += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            let _ = producer.flush(Duration::from_secs(5));
        })
    };
    let observed = Arc::new(Observed::default());
    let rebalanced: Vec<Arc<Mutex<Instant>>> =
        (0..args.members).map(|_| Arc::new(Mutex::new(Instant::now()))).collect();
    let group = format!("chronik-bench-rebalance-{}", std::process::id());
    let start_member = |index: usize| -> anyhow::Result<std::thread::JoinHandle<()>> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &args.common.bootstrap)
            .set("group.id", &group)
            .set("group.protocol", &args.protocol)
            .set("auto.offset.reset", "latest");
        if args.protocol == "classic" {
            config
                .set("partition.assignment.strategy", &args.strategy)
                .set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "1000");
        }
        let consumer: BaseConsumer<RebalanceClock> =
            config.create_with_context(RebalanceClock(rebalanced[index].clone()))?;
        consumer.subscribe(&[&args.common.topic])?;
        let (stop, observed) = (stop.clone(), observed.clone());
        Ok(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(20)) {
                    let now = Instant::now();
                    observed.last_record.lock().map(|mut l| l.insert(m.partition(), now)).ok();
                    observed.member_records.lock().map(|mut l| l.insert(index, now)).ok();
                }
            }
        }))
    };
    let mut threads: Vec<_> = (0..args.members - 1).map(start_member).collect::<anyhow::Result<_>>()?;
    // Steady state first: every partition delivering to the first members.
    let settled = wait_consuming(&observed, &rebalanced, partitions, None, Duration::from_secs(60));
    anyhow::ensure!(settled.is_some(), "the first members never consumed every partition");
    let joined_at = Instant::now();
    threads.push(start_member(args.members - 1)?);
    let done = wait_consuming(
        &observed,
        &rebalanced,
        partitions,
        Some((args.members - 1, joined_at)),
        Duration::from_secs(120),
    );
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = producing.join();
    let seconds = done
        .context("the group did not consume every partition again within 120 s")?
        .duration_since(joined_at)
        .as_secs_f64();
    let how = if args.protocol == "classic" { args.strategy.as_str() } else { "KIP-848" };
    if args.common.json {
        let line = serde_json::json!({"mode": "rebalance", "protocol": args.protocol, "strategy": how,
            "members": args.members, "partitions": partitions, "seconds": seconds});
        println!("{line}");
    } else {
        println!(
            "rebalance ({how}, {} members, {partitions} partitions): all members consuming {seconds:.2} s after a member joined",
            args.members
        );
    }
    Ok(())
}

/// Waits until every partition delivered a record after every member's last
/// rebalance (and, with `joiner`, the joining member consumed after it joined).
fn wait_consuming(
    observed: &Observed,
    rebalanced: &[Arc<Mutex<Instant>>],
    partitions: i32,
    joiner: Option<(usize, Instant)>,
    timeout: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        let last_rebalance = rebalanced.iter().filter_map(|r| r.lock().ok().map(|t| *t)).max()?;
        let joined = joiner.is_none_or(|(index, at)| {
            observed.member_records.lock().ok().and_then(|m| m.get(&index).copied()).is_some_and(|t| t > at)
        });
        let records = observed.last_record.lock().ok()?;
        let all = (0..partitions).all(|p| records.get(&p).is_some_and(|t| *t > last_rebalance));
        if joined && all {
            return Some(Instant::now());
        }
    }
    None
}
