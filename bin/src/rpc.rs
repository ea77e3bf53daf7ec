//! The node's gRPC server on `--rpc-addr`: one tonic server for every RPC service.
//! Add a service with one `add_service` line.

use std::future::Future;
use std::sync::Arc;

use chronik_replication::{transport, Replication};
use tokio::net::TcpListener;

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    replication: Arc<Replication>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Raft appends are large: HTTP/2's default 64 KiB windows would cap replication
        // at one window per round trip.
        .initial_stream_window_size(transport::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(transport::CONNECTION_WINDOW_BYTES)
        .add_service(transport::service(replication))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
