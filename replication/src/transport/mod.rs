//! Raft messages between nodes, over tonic.
//!
//! Outbound: the driver hands every round's messages for one node to [`Transport::send`]
//! as one batch. [`GrpcTransport`] puts the batch into a bounded queue per destination
//! and returns at once: when the queue is full (slow or dead peer) the batch is dropped,
//! which Raft tolerates (it resends on the next heartbeat or append). A tokio task per
//! peer keeps one client stream open and writes queued batches into it; HTTP/2 flow
//! control is the back-pressure that fills the queue.
//!
//! Inbound: [`RaftService`] decodes batches and hands them to the driver, holding a
//! permit of a bounded pool until the driver has stepped them, so a flood of messages
//! waits in the sender's queue instead of growing memory here.
//!
//! Architecture invariant: nothing here blocks the driver thread; `send` never waits.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::command;
use crate::metadata::MetaOutcome;
use crate::{metrics, Replication, ReplicationError};

mod generated;
pub mod wire;

use generated::raft_transport_client::RaftTransportClient;
use generated::raft_transport_server::RaftTransport;
pub use generated::raft_transport_server::RaftTransportServer;
use wire::{CompactFloor, GroupMessage, MetaProposal, MetaResult, RaftBatch, SendSummary};

/// Batches queued per destination node before new ones are dropped.
const PEER_QUEUE_BATCHES: usize = 256;
/// Wait between reconnection attempts to a peer.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 flow-control windows for Raft streams (both ends): large enough that a round's
/// appends to a follower are never held back by the window.
pub const STREAM_WINDOW_BYTES: u32 = 64 << 20;
pub const CONNECTION_WINDOW_BYTES: u32 = 128 << 20;

const FORWARD_OK: u32 = 0;
const FORWARD_NOT_LEADER: u32 = 1;
const FORWARD_FAILED: u32 = 2;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How the driver reaches other nodes; injected so tests can use a faulty network.
pub trait Transport: Send + Sync + 'static {
    /// Queues `messages` (group id, message) for node `to`. Must not block.
    fn send(&self, to: u64, messages: Vec<(u64, Message)>);
    /// Tells node `to` how far it may compact groups' logs: (group, index every replica
    /// has). Must not block; may be dropped.
    fn send_floors(&self, _to: u64, _floors: Vec<(u64, u64)>) {}

    /// Runs an encoded metadata command on node `to` (the group-0 leader).
    fn forward_meta(&self, to: u64, command: Vec<u8>) -> BoxFuture<Result<MetaOutcome, ReplicationError>>;

    /// Connects to node `id` at `addr` (a node that joined), or updates its address.
    fn add_peer(&self, _id: u64, _addr: &str) {}
    /// Stops sending to node `id` (a node that was removed).
    fn remove_peer(&self, _id: u64) {}
}

/// A node without peers: nothing to send.
pub struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, _to: u64, _messages: Vec<(u64, Message)>) {}

    fn forward_meta(&self, _to: u64, _command: Vec<u8>) -> BoxFuture<Result<MetaOutcome, ReplicationError>> {
        Box::pin(async { Err(ReplicationError::NotLeader) })
    }
}

/// The tonic transport: one queue, one task and one stream per peer node.
pub struct GrpcTransport {
    node_id: u64,
    peers: RwLock<HashMap<u64, Peer>>,
    runtime: tokio::runtime::Handle,
}

struct Peer {
    addr: String,
    queue: mpsc::Sender<RaftBatch>,
    client: tonic::transport::Channel,
}

impl GrpcTransport {
    /// Starts a sender task per peer on the current tokio runtime. `peers` maps node id
    /// to its RPC address (`host:port`); this node's own entry is skipped.
    pub fn start(node_id: u64, peers: &[(u64, String)]) -> Result<GrpcTransport, ReplicationError> {
        let transport =
            GrpcTransport { node_id, peers: RwLock::new(HashMap::new()), runtime: tokio::runtime::Handle::current() };
        for (id, addr) in peers {
            transport.connect(*id, addr)?;
        }
        Ok(transport)
    }

    fn connect(&self, id: u64, addr: &str) -> Result<(), ReplicationError> {
        if id == self.node_id || self.peers.read().get(&id).is_some_and(|p| p.addr == addr) {
            return Ok(());
        }
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ReplicationError::Internal(format!("bad peer address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let (queue, rx) = mpsc::channel(PEER_QUEUE_BATCHES);
        let _guard = self.runtime.enter();
        self.runtime.spawn(run_peer(id, endpoint.clone(), rx));
        let client = endpoint.connect_lazy();
        // Replacing a peer drops its old queue, which ends its sender task.
        self.peers.write().insert(id, Peer { addr: addr.to_string(), queue, client });
        Ok(())
    }

    fn queue(&self, to: u64) -> Option<mpsc::Sender<RaftBatch>> {
        self.peers.read().get(&to).map(|p| p.queue.clone())
    }
}

impl Transport for GrpcTransport {
    fn send(&self, to: u64, messages: Vec<(u64, Message)>) {
        let Some(queue) = self.queue(to) else {
            metrics::RAFT_MESSAGES_DROPPED.inc_by(messages.len() as u64);
            return;
        };
        let count = messages.len() as u64;
        let batch = RaftBatch {
            from: self.node_id,
            messages: messages
                .into_iter()
                .map(|(group, m)| GroupMessage { group, message: Bytes::from(m.write_to_bytes().unwrap_or_default()) })
                .collect(),
            floors: Vec::new(),
        };
        match queue.try_send(batch) {
            Ok(()) => metrics::RAFT_MESSAGES_SENT.inc_by(count),
            Err(_) => metrics::RAFT_MESSAGES_DROPPED.inc_by(count),
        }
    }

    fn send_floors(&self, to: u64, floors: Vec<(u64, u64)>) {
        if let Some(queue) = self.queue(to) {
            let floors = floors.into_iter().map(|(group, index)| CompactFloor { group, index }).collect();
            let _ = queue.try_send(RaftBatch { from: self.node_id, messages: Vec::new(), floors });
        }
    }

    fn forward_meta(&self, to: u64, command: Vec<u8>) -> BoxFuture<Result<MetaOutcome, ReplicationError>> {
        let client = self.peers.read().get(&to).map(|p| p.client.clone());
        Box::pin(async move {
            let channel = client.ok_or(ReplicationError::NotLeader)?;
            let mut client = RaftTransportClient::new(channel);
            let mut request = Request::new(MetaProposal { command: command.into() });
            request.set_timeout(FORWARD_TIMEOUT);
            // The grpc-timeout header only bounds the server; bound the wait here too.
            let call = tokio::time::timeout(FORWARD_TIMEOUT, client.propose_meta(request));
            let result = match call.await {
                Ok(Ok(response)) => response.into_inner(),
                Ok(Err(status)) => {
                    tracing::debug!(to, %status, "forwarding a metadata command failed");
                    return Err(ReplicationError::NotLeader);
                }
                Err(_) => {
                    tracing::debug!(to, "forwarding a metadata command timed out");
                    return Err(ReplicationError::NotLeader);
                }
            };
            match result.error {
                FORWARD_OK => serde_json::from_slice(&result.outcome)
                    .map_err(|e| ReplicationError::Internal(format!("bad forwarded outcome: {e}"))),
                FORWARD_NOT_LEADER => Err(ReplicationError::NotLeader),
                _ => Err(ReplicationError::Internal(result.message)),
            }
        })
    }

    fn add_peer(&self, id: u64, addr: &str) {
        if let Err(e) = self.connect(id, addr) {
            tracing::warn!(peer = id, error = %e, "cannot connect to a joined node");
        }
    }

    fn remove_peer(&self, id: u64) {
        self.peers.write().remove(&id);
    }
}

/// Keeps a stream open to one peer and feeds it from the queue. While the peer is
/// unreachable, queued batches are discarded: Raft resends what matters.
async fn run_peer(peer: u64, endpoint: tonic::transport::Endpoint, mut queue: mpsc::Receiver<RaftBatch>) {
    loop {
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(_) => {
                if discard_for(&mut queue, RECONNECT_DELAY).await {
                    return;
                }
                continue;
            }
        };
        tracing::debug!(peer, "raft stream connected");
        let (stream_tx, stream_rx) = mpsc::channel::<RaftBatch>(16);
        let mut client = RaftTransportClient::new(channel);
        let call = client.send(tokio_stream::wrappers::ReceiverStream::new(stream_rx));
        tokio::pin!(call);
        loop {
            tokio::select! {
                batch = queue.recv() => match batch {
                    Some(batch) => {
                        if stream_tx.send(batch).await.is_err() {
                            break;
                        }
                    }
                    None => return,
                },
                result = &mut call => {
                    if let Err(status) = result {
                        tracing::debug!(peer, %status, "raft stream ended");
                    }
                    break;
                }
            }
        }
        if discard_for(&mut queue, RECONNECT_DELAY).await {
            return;
        }
    }
}

/// Drops queued batches for `delay`; true when the queue is closed (shutdown).
async fn discard_for(queue: &mut mpsc::Receiver<RaftBatch>, delay: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        match tokio::time::timeout_at(deadline, queue.recv()).await {
            Ok(Some(batch)) => metrics::RAFT_MESSAGES_DROPPED.inc_by(batch.messages.len() as u64),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// The server side: hands incoming batches to this node's driver.
pub struct RaftService {
    replication: Arc<Replication>,
}

/// The tonic service to add to the node's RPC server.
pub fn service(replication: Arc<Replication>) -> RaftTransportServer<RaftService> {
    RaftTransportServer::new(RaftService { replication })
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn send(&self, request: Request<Streaming<RaftBatch>>) -> Result<Response<SendSummary>, Status> {
        let mut stream = request.into_inner();
        let mut batches = 0;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let mut messages = Vec::with_capacity(batch.messages.len());
            for m in batch.messages {
                match Message::parse_from_carllerche_bytes(&m.message) {
                    Ok(message) => messages.push((m.group, message)),
                    Err(e) => return Err(Status::invalid_argument(format!("undecodable raft message: {e}"))),
                }
            }
            if !batch.floors.is_empty() {
                let floors = batch.floors.iter().map(|f| (f.group, f.index)).collect();
                self.replication.set_compact_floors(floors).map_err(|_| Status::unavailable("shutting down"))?;
            }
            if !messages.is_empty() {
                self.replication.deliver(messages).await.map_err(|_| Status::unavailable("shutting down"))?;
            }
            batches += 1;
        }
        Ok(Response::new(SendSummary { batches }))
    }

    async fn propose_meta(&self, request: Request<MetaProposal>) -> Result<Response<MetaResult>, Status> {
        let Some(cmd) = command::decode_meta(&request.into_inner().command) else {
            return Err(Status::invalid_argument("undecodable metadata command"));
        };
        // A joining node knows only some nodes: its request is passed on to the leader
        // this node knows. Other commands were sent to the leader already.
        let outcome = match cmd {
            command::MetaCommand::AddNode { .. } => self.replication.propose_meta(cmd).await,
            _ => self.replication.propose_meta_here(cmd).await,
        };
        let result = match outcome {
            Ok(outcome) => MetaResult {
                outcome: serde_json::to_vec(&outcome).unwrap_or_default().into(),
                error: FORWARD_OK,
                message: String::new(),
            },
            Err(ReplicationError::NotLeader) => {
                MetaResult { outcome: Bytes::new(), error: FORWARD_NOT_LEADER, message: String::new() }
            }
            Err(e) => MetaResult { outcome: Bytes::new(), error: FORWARD_FAILED, message: e.to_string() },
        };
        Ok(Response::new(result))
    }
}
