//! The Kafka listener: framing, `kafka-protocol` decode/encode, one handler per API.
//!
//! Layers: [`server`] accepts connections; `connection` reads frames, decodes them
//! (`frame`, no I/O) and dispatches through the one handler table in `handlers`, which
//! also answers ApiVersions, so advertised versions cannot drift from what is handled.
//! Handlers reach partitions only through `chronik_replication::Replication`.
//!
//! Architecture invariant: a request's proposals are queued before the next request
//! of the same connection is read, so pipelined produce requests keep their order while
//! their Raft rounds overlap; responses are written in request order.

mod broker;
mod buffers;
mod connection;
pub mod coordinator;
mod errors;
mod frame;
mod handlers;
mod server;

pub use broker::{Broker, BrokerConfig};
pub use coordinator::GroupConfig;
pub use frame::FrameError;
pub use handlers::supported_apis;
pub use server::serve;
