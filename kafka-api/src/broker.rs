use std::sync::Arc;

use chronik_replication::topic_config::TopicDefaults;
use chronik_replication::Replication;

use crate::buffers::BufferPool;
use crate::coordinator::{Coordinator, GroupConfig};

/// Settings the Kafka layer needs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub cluster_id: String,
    /// Host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: i32,
    pub auto_create_topics: bool,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub topic_defaults: TopicDefaults,
    /// Largest request frame accepted, in bytes.
    pub max_request_bytes: usize,
    /// Requests of one connection being processed at once.
    pub max_inflight_per_connection: usize,
    pub groups: GroupConfig,
}

/// What every handler sees.
pub struct Broker {
    pub config: BrokerConfig,
    pub replication: Arc<Replication>,
    pub coordinator: Arc<Coordinator>,
    pub(crate) fetch_buffers: Arc<BufferPool>,
}

impl Broker {
    /// Creates the broker; starts the group coordinator's tasks on the current runtime.
    pub fn new(config: BrokerConfig, replication: Arc<Replication>) -> Arc<Broker> {
        let coordinator = Coordinator::start(config.node_id as u64, config.groups.clone(), replication.clone());
        Arc::new(Broker { config, replication, coordinator, fetch_buffers: Arc::default() })
    }
}
