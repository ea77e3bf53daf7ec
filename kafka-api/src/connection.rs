//! One client connection: a reader that decodes and dispatches requests in order, and
//! a writer that awaits each reply and writes responses in the same order.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::broker::Broker;
use crate::frame::{self, FrameError, ResponseFrame};
use crate::handlers::{self, PendingResponse, Reply};

pub(crate) async fn run(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr, mut stop: watch::Receiver<bool>) {
    let span = tracing::debug_span!("connection", %peer);
    async move {
        let (read_half, mut write_half) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<PendingResponse>(broker.config.max_inflight_per_connection.max(1));
        let writer = tokio::spawn(async move {
            while let Some(pending) = rx.recv().await {
                match pending.await {
                    Ok(Some(mut frame)) => {
                        if write_half.write_all_buf(&mut frame).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(()) => break,
                }
            }
            let _ = write_half.shutdown().await;
        });
        let mut reader = BufReader::with_capacity(64 * 1024, read_half);
        let mut frames = BytesMut::new();
        loop {
            let frame = tokio::select! {
                frame = read_frame(&mut reader, &mut frames, broker.config.max_request_bytes) => frame,
                _ = stop.changed() => break,
            };
            let frame = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(error = %e, "closing connection");
                    break;
                }
            };
            match dispatch(&broker, frame, peer).await {
                Ok(pending) => {
                    if tx.send(pending).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, "closing connection");
                    break;
                }
            }
        }
        // Let the writer finish the responses already queued, then close.
        drop(tx);
        let _ = writer.await;
    }
    .instrument(span)
    .await
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one length-prefixed frame; `None` at a clean end of stream.
///
/// The frame is read into `buf`, which is reused: once the previous frames have been
/// dropped, `reserve` takes their memory back. A Produce's records travel on as slices
/// of their frame (into the Raft entry, without a copy), so under produce load `reserve`
/// allocates afresh; the allocator (jemalloc, purging off) hands back memory whose pages
/// are already mapped. A fresh, zeroed buffer per request made every produced byte fault
/// in and zero a page (a third of the node's page faults under produce load, perf).
async fn read_frame(
    reader: &mut BufReader<OwnedReadHalf>,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Bytes>, ReadError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = frame::check_length(i32::from_be_bytes(len), max)?;
    buf.clear();
    buf.reserve(len);
    let mut body = (&mut *reader).take(len as u64);
    while buf.len() < len {
        if body.read_buf(buf).await? == 0 {
            return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    Ok(Some(buf.split_to(len).freeze()))
}

/// Decodes and dispatches one request; an error closes the connection.
async fn dispatch(broker: &Arc<Broker>, frame: Bytes, peer: SocketAddr) -> Result<PendingResponse, FrameError> {
    let (key, version) = frame::peek_api(&frame)?;
    if !handlers::is_supported(key, version) {
        if key == ApiKey::ApiVersions {
            // KIP-511: answer with our versions so the client can pick one.
            let correlation_id = frame::peek_correlation_id(&frame).unwrap_or(0);
            return Ok(encoded(key, 0, correlation_id, handlers::api_versions::unsupported()));
        }
        return Err(FrameError::UnsupportedVersion { key, version });
    }
    let (header, request) = frame::decode_request(frame, key, version)?;
    let correlation_id = header.correlation_id;
    let span = tracing::debug_span!("request", api = ?key, version, correlation_id);
    let reply = handlers::dispatch(broker, &header, peer, request).instrument(span).await;
    Ok(match reply {
        Reply::Now(body) => encoded(key, version, correlation_id, *body),
        Reply::Later(body) => Box::pin(async move {
            match body.await {
                Some(body) => encode_or_log(key, version, correlation_id, &body).map(Some),
                None => Ok(None),
            }
        }),
        Reply::Nothing => Box::pin(async { Ok(None) }),
    })
}

fn encoded(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: kafka_protocol::messages::ResponseKind,
) -> PendingResponse {
    let frame = encode_or_log(key, version, correlation_id, &body).map(Some);
    Box::pin(async move { frame })
}

fn encode_or_log(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &kafka_protocol::messages::ResponseKind,
) -> Result<ResponseFrame, ()> {
    frame::encode_response(key, version, correlation_id, body).map_err(|e| {
        tracing::error!(api = ?key, version, error = %e, "cannot encode response; closing the connection");
    })
}
