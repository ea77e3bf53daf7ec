//! `chronik`: run a node (`start`), load-test one (`bench`), back it up (`backup`), or
//! read its data offline (`dump`). Wiring only; the work is in the library crates.

mod alloc;
mod backup_cli;
mod bench;
mod bench_groups;
mod cluster_cli;
mod dump_cli;
mod http;
mod rpc;
mod settings;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use chronik_engine::{Durability, Engine};
use chronik_kafka_api::{Broker, BrokerConfig, GroupConfig};
use chronik_replication::command::MetaCommand;
use chronik_replication::topic_config::TopicDefaults;
use chronik_replication::transport::{GrpcTransport, NoPeers, Transport};
use chronik_replication::{retention, MetaOutcome, NodeInfo, Replication, ReplicationConfig};
use clap::{Args, Parser, Subcommand};
use settings::{FileSettings, Settings};

#[global_allocator]
static GLOBAL: alloc::Allocator = alloc::Allocator;

#[derive(Parser)]
#[command(name = "chronik", version, about = "A Kafka-compatible streaming platform on Raft and RocksDB")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Start(Box<StartArgs>),
    /// Load-test a broker (this or any Kafka-compatible one).
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Create, list, verify, restore and prune backups.
    #[command(subcommand)]
    Backup(backup_cli::Backup),
    /// Print what a data dir holds (read-only), as JSON lines or a table.
    Dump(dump_cli::DumpArgs),
    /// List, promote or remove members of a running cluster.
    #[command(subcommand)]
    Cluster(cluster_cli::Cluster),
}

#[derive(Args)]
struct StartArgs {
    /// TOML settings file; flags and CHRONIK_* variables override it.
    #[arg(long, env = "CHRONIK_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "CHRONIK_NODE_ID")]
    node_id: Option<u64>,
    #[arg(long, env = "CHRONIK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "CHRONIK_KAFKA_ADDR")]
    kafka_addr: Option<String>,
    #[arg(long, env = "CHRONIK_ADVERTISE_KAFKA_ADDR")]
    advertise_kafka_addr: Option<String>,
    #[arg(long, env = "CHRONIK_RPC_ADDR")]
    rpc_addr: Option<String>,
    #[arg(long, env = "CHRONIK_HTTP_ADDR")]
    http_addr: Option<String>,
    #[arg(long, env = "CHRONIK_AUTO_CREATE_TOPICS_ENABLE")]
    auto_create_topics_enable: Option<bool>,
    #[arg(long, env = "CHRONIK_NUM_PARTITIONS")]
    num_partitions: Option<i32>,
    #[arg(long, env = "CHRONIK_LOG_RETENTION_MS")]
    log_retention_ms: Option<i64>,
    #[arg(long, env = "CHRONIK_LOG_RETENTION_BYTES")]
    log_retention_bytes: Option<i64>,
    #[arg(long, env = "CHRONIK_LOG_RETENTION_CHECK_INTERVAL")]
    log_retention_check_interval: Option<String>,
    #[arg(long, env = "CHRONIK_MESSAGE_MAX_BYTES")]
    message_max_bytes: Option<i64>,
    #[arg(long, env = "CHRONIK_OFFSETS_TOPIC_NUM_PARTITIONS")]
    offsets_topic_num_partitions: Option<i32>,
    #[arg(long, env = "CHRONIK_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    group_initial_rebalance_delay_ms: Option<u64>,
    #[arg(long, env = "CHRONIK_OFFSETS_RETENTION_MINUTES")]
    offsets_retention_minutes: Option<u64>,
    /// All nodes as ID@HOST:RPC_PORT,... (the same list on every node).
    #[arg(long, env = "CHRONIK_PEERS")]
    peers: Option<String>,
    /// Join a running cluster (as a learner of the metadata group) instead of forming one.
    #[arg(long, env = "CHRONIK_JOIN", num_args = 0..=1, default_missing_value = "true")]
    join: Option<bool>,
    #[arg(long, env = "CHRONIK_RACK")]
    rack: Option<String>,
    #[arg(long, env = "CHRONIK_DC")]
    dc: Option<String>,
    #[arg(long, env = "CHRONIK_DEFAULT_REPLICATION_FACTOR")]
    default_replication_factor: Option<i16>,
    #[arg(long, env = "CHRONIK_MIN_INSYNC_REPLICAS")]
    min_insync_replicas: Option<i64>,
    #[arg(long, env = "CHRONIK_REPLICA_LAG_TIME_MAX_MS")]
    replica_lag_time_max_ms: Option<u64>,
    #[arg(long, env = "CHRONIK_RAFT_TICK_INTERVAL")]
    raft_tick_interval: Option<String>,
}

impl StartArgs {
    fn settings(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => FileSettings::load(path)?,
            None => FileSettings::default(),
        };
        let flags = FileSettings {
            node_id: self.node_id,
            data_dir: self.data_dir,
            kafka_addr: self.kafka_addr,
            advertise_kafka_addr: self.advertise_kafka_addr,
            rpc_addr: self.rpc_addr,
            http_addr: self.http_addr,
            auto_create_topics_enable: self.auto_create_topics_enable,
            num_partitions: self.num_partitions,
            log_retention_ms: self.log_retention_ms,
            log_retention_bytes: self.log_retention_bytes,
            log_retention_check_interval: self.log_retention_check_interval,
            message_max_bytes: self.message_max_bytes,
            socket_request_max_bytes: None,
            offsets_topic_num_partitions: self.offsets_topic_num_partitions,
            group_initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            offsets_retention_minutes: self.offsets_retention_minutes,
            peers: self.peers,
            join: self.join,
            rack: self.rack,
            dc: self.dc,
            default_replication_factor: self.default_replication_factor,
            min_insync_replicas: self.min_insync_replicas,
            replica_lag_time_max_ms: self.replica_lag_time_max_ms,
            raft_tick_interval: self.raft_tick_interval,
        };
        file.overlay(flags).validate()
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CHRONIK_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Start(args) => {
            let settings = args.settings()?;
            tokio::runtime::Runtime::new()?.block_on(start(settings))
        }
        Command::Bench(bench) => bench::run(bench),
        Command::Backup(command) => backup_cli::run(command),
        Command::Cluster(command) => cluster_cli::run(command),
        Command::Dump(args) => dump_cli::run(args),
    }
}

async fn start(settings: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data dir {}", settings.data_dir.display()))?;
    let engine = Arc::new(
        Engine::open(&settings.data_dir.join("db"))
            .with_context(|| format!("cannot open the store in {}", settings.data_dir.display()))?,
    );
    let cluster_id = identify(&engine, settings.node_id)?;
    let mut replication_config = ReplicationConfig::new(settings.node_id, settings.data_dir.join("raft"));
    replication_config.tick_interval = settings.raft_tick_interval;
    replication_config.replica_lag_time = settings.replica_lag_time;
    let transport: Arc<dyn Transport> = if settings.peers.is_empty() {
        Arc::new(NoPeers)
    } else {
        let ids: Vec<u64> = settings.peers.iter().map(|(id, _)| *id).collect();
        replication_config = match settings.join {
            true => replication_config.joining(&ids),
            false => replication_config.with_cluster(&ids),
        };
        Arc::new(GrpcTransport::start(settings.node_id, &settings.peers)?)
    };
    // A node that is not a first voter asks to join (a no-op once it is a member).
    let join = settings
        .peers
        .iter()
        .find(|(id, _)| *id == settings.node_id && !replication_config.meta_voters.contains(id))
        .map(|(_, addr)| (addr.clone(), settings.peers.iter().map(|(id, _)| *id).collect()));
    let replication = Arc::new(Replication::start_with(replication_config, engine.clone(), transport)?);
    let rpc = tokio::net::TcpListener::bind(settings.rpc_addr)
        .await
        .with_context(|| format!("cannot listen for RPC on {}", settings.rpc_addr))?;
    let rpc_addr = rpc.local_addr()?;
    let (rpc_stop, rpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let rpc_router = rpc::router(
        rpc::AdminService::new(engine.clone(), replication.clone(), &settings.data_dir),
        replication.clone(),
    );
    let rpc_task = tokio::spawn(async move {
        if let Err(e) = rpc::serve(rpc_router, rpc, async move { rpc_stopped.await.unwrap_or(()) }).await {
            tracing::error!(error = %e, "rpc server failed");
        }
    });

    let kafka = tokio::net::TcpListener::bind(settings.kafka_addr)
        .await
        .with_context(|| format!("cannot listen for Kafka clients on {}", settings.kafka_addr))?;
    let http = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", settings.http_addr))?;
    let kafka_addr = kafka.local_addr()?;
    let http_addr = http.local_addr()?;
    // Port 0 binds any free port; advertise and report the one we got.
    let advertise_port = if settings.advertise_port == 0 { kafka_addr.port() } else { settings.advertise_port };
    write_listeners(&settings.data_dir, kafka_addr, http_addr, rpc_addr)?;

    let topic_defaults = TopicDefaults {
        retention_ms: settings.log_retention_ms,
        retention_bytes: settings.log_retention_bytes,
        max_message_bytes: settings.message_max_bytes,
        min_insync_replicas: settings.min_insync_replicas,
    };
    let broker = Broker::new(
        BrokerConfig {
            node_id: settings.node_id as i32,
            cluster_id: cluster_id.clone(),
            advertised_host: settings.advertise_host.clone(),
            advertised_port: advertise_port as i32,
            auto_create_topics: settings.auto_create_topics,
            num_partitions: settings.num_partitions,
            default_replication_factor: settings.default_replication_factor,
            topic_defaults: topic_defaults.clone(),
            max_request_bytes: settings.socket_request_max_bytes,
            max_inflight_per_connection: 32,
            groups: GroupConfig {
                offsets_partitions: settings.offsets_topic_num_partitions,
                initial_rebalance_delay: settings.group_initial_rebalance_delay,
                offsets_retention: settings.offsets_retention,
                ..GroupConfig::default()
            },
        },
        replication.clone(),
    );

    let http_task = tokio::spawn(http::serve(http));
    let me = NodeInfo {
        id: settings.node_id,
        kafka_host: settings.advertise_host.clone(),
        kafka_port: advertise_port,
        rack: settings.rack.clone(),
        dc: settings.dc.clone(),
        rpc_addr: settings.peers.iter().find(|(id, _)| *id == settings.node_id).map(|(_, addr)| addr.clone()),
    };
    let register_task = tokio::spawn(register(replication.clone(), me, cluster_id.clone(), join));
    let clustered = !settings.peers.is_empty();
    let leaders_task = tokio::spawn(report_leaders(replication.clone(), clustered));
    let retention_task = retention::spawn(replication.clone(), topic_defaults, settings.retention_check_interval);
    tracing::info!(
        node_id = settings.node_id,
        %cluster_id,
        kafka = %kafka_addr,
        advertised = %format!("{}:{}", settings.advertise_host, advertise_port),
        http = %http_addr,
        rpc = %rpc_addr,
        peers = settings.peers.len(),
        data_dir = %settings.data_dir.display(),
        "chronik node started"
    );

    chronik_kafka_api::serve(kafka, broker, shutdown_signal()).await;
    tracing::info!("stopped accepting; handing over leadership and flushing");
    if clustered {
        replication.step_down(std::time::Duration::from_secs(3)).await;
    }
    retention_task.abort();
    register_task.abort();
    leaders_task.abort();
    http_task.abort();
    // Peers keep their Raft streams open, so a graceful stop of the RPC server could
    // wait forever: give it a moment, then drop it.
    let _ = rpc_stop.send(());
    if tokio::time::timeout(std::time::Duration::from_secs(1), rpc_task).await.is_err() {
        tracing::debug!("rpc server did not stop within 1 s; dropping its connections");
    }
    replication.shutdown();
    tracing::info!("chronik node stopped");
    Ok(())
}

/// Joins the metadata group if this node is not one of its first voters (`join`: this
/// node's rpc address and the voters to ask), then announces this node's Kafka address,
/// rack and data centre through group 0, retrying until the metadata group has a leader.
async fn register(replication: Arc<Replication>, me: NodeInfo, cluster_id: String, join: Option<(String, Vec<u64>)>) {
    if let Some((rpc_addr, known)) = join {
        loop {
            match replication.join(&rpc_addr, &known).await {
                Ok(MetaOutcome::Joined(_)) => break,
                Ok(outcome) => tracing::warn!(?outcome, "joining the cluster was refused; retrying"),
                Err(e) => tracing::info!(error = %e, "joining the cluster: no answer yet; retrying"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
    loop {
        let cluster = replication.cluster();
        if cluster.nodes.get(&me.id) == Some(&me) && cluster.cluster_id.is_some() {
            return;
        }
        let command = match cluster.cluster_id {
            None => MetaCommand::InitCluster { cluster_id: cluster_id.clone() },
            Some(_) => MetaCommand::RegisterNode(me.clone()),
        };
        match replication.propose_meta(command).await {
            // Loop: the outcome is applied on the leader, maybe not here yet.
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            Err(e) => {
                tracing::debug!(error = %e, "node registration not done yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

/// In a cluster, keeps group 0's record of the partitions this node leads current, so
/// nodes without a replica can name the leader in Metadata.
async fn report_leaders(replication: Arc<Replication>, clustered: bool) {
    if !clustered {
        return;
    }
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(500));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        if let Err(e) = replication.report_leaders().await {
            tracing::debug!(error = %e, "leader report failed; retrying");
        }
    }
}

/// Records the bound addresses in `<data-dir>/listeners` (`kafka=HOST:PORT`,
/// `http=HOST:PORT`, `rpc=HOST:PORT`), so whoever started the node with port 0 can find it.
fn write_listeners(
    data_dir: &std::path::Path,
    kafka: std::net::SocketAddr,
    http: std::net::SocketAddr,
    rpc: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let path = data_dir.join("listeners");
    let tmp = data_dir.join("listeners.tmp");
    std::fs::write(&tmp, format!("kafka={kafka}\nhttp={http}\nrpc={rpc}\n"))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Checks the data dir belongs to this node id and returns the cluster id, creating
/// both on first start.
fn identify(engine: &Engine, node_id: u64) -> anyhow::Result<String> {
    use chronik_engine::keys::{META_CLUSTER_ID as CLUSTER_ID_KEY, META_NODE_ID as NODE_ID_KEY};
    if let Some(raw) = engine.meta_get(NODE_ID_KEY)? {
        let stored = u64::from_be_bytes(raw.as_slice().try_into().context("corrupt node id in meta")?);
        if stored != node_id {
            bail!("this data dir belongs to node {stored}, not {node_id}: pass --node-id {stored} or use another --data-dir");
        }
    }
    if let Some(raw) = engine.meta_get(CLUSTER_ID_KEY)? {
        return String::from_utf8(raw).context("corrupt cluster id in meta");
    }
    // Kafka cluster ids are 22-character URL-safe base64 of a UUID; a plain UUID string is accepted by clients.
    let cluster_id = uuid::Uuid::new_v4().simple().to_string();
    let mut wb = engine.batch();
    wb.put_meta(NODE_ID_KEY, &node_id.to_be_bytes());
    wb.put_meta(CLUSTER_ID_KEY, cluster_id.as_bytes());
    engine.write(wb, Durability::Synced)?;
    Ok(cluster_id)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
