//! The rpc listener (`--rpc-addr`): one tonic server carrying every gRPC service of a
//! node: the admin API (`chronik.admin.v1.Admin`, contract in
//! `bin/proto/chronik/admin/v1/admin.proto`) and the Raft transport between nodes
//! (`replication::transport`); another service is one more `add_service` line in [`router`].

pub mod wire;

use std::convert::Infallible;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use chronik_backup::{BackupStore, Compression, Progress};
use chronik_engine::Engine;
use chronik_replication::command::MetaCommand;
use chronik_replication::metadata::{MetaOutcome, MetaRejection};
use chronik_replication::{transport, Replication};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::transport::server::{Router, TcpIncoming};
use tonic::{Request, Response, Status};

use wire::{CreateBackupProgress, CreateBackupRequest, MembershipReply, MembershipRequest, WireCodec};

/// The gRPC path of `Admin.CreateBackup`.
pub const CREATE_BACKUP_PATH: &str = "/chronik.admin.v1.Admin/CreateBackup";
/// The gRPC path of `Admin.ChangeMembership`.
pub const CHANGE_MEMBERSHIP_PATH: &str = "/chronik.admin.v1.Admin/ChangeMembership";

/// Every gRPC service of a node, ready to serve: the admin API and the Raft transport.
pub fn router(admin: AdminService, replication: Arc<Replication>) -> Router {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Raft appends are large: HTTP/2's default 64 KiB windows would cap replication
        // at one window per round trip.
        .initial_stream_window_size(transport::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(transport::CONNECTION_WINDOW_BYTES)
        .add_service(AdminServer(Arc::new(admin)))
        .add_service(transport::service(replication))
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    router.serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown).await
}

/// The admin API: backups and cluster membership.
pub struct AdminService {
    engine: Arc<Engine>,
    replication: Arc<Replication>,
    /// Where checkpoints are made before upload (inside the data dir: hard links).
    scratch: PathBuf,
    backup_running: Arc<AtomicBool>,
}

impl AdminService {
    pub fn new(engine: Arc<Engine>, replication: Arc<Replication>, data_dir: &std::path::Path) -> AdminService {
        let scratch = data_dir.join("backup-staging");
        // Checkpoints left by a backup interrupted by a crash are useless now.
        if scratch.exists() {
            if let Err(e) = std::fs::remove_dir_all(&scratch) {
                tracing::warn!(path = %scratch.display(), error = %e, "cannot remove old backup checkpoints");
            }
        }
        AdminService { engine, replication, scratch, backup_running: Arc::new(AtomicBool::new(false)) }
    }

    /// Lists, promotes or removes a member of the metadata group.
    async fn change_membership(&self, request: MembershipRequest) -> Result<MembershipReply, Status> {
        let id = request.node_id;
        let command = match request.action.as_str() {
            "list" => None,
            "promote" => Some(MetaCommand::PromoteNode { id }),
            "remove" => Some(MetaCommand::RemoveNode { id }),
            other => {
                return Err(Status::invalid_argument(format!("unknown action {other:?}: list, promote or remove")))
            }
        };
        if command.is_some() && id == 0 {
            return Err(Status::invalid_argument("a node id is required"));
        }
        let message = match command {
            None => "members".to_string(),
            Some(command) => match self.replication.propose_meta(command).await {
                Ok(MetaOutcome::Rejected(MetaRejection::Membership(reason))) => {
                    return Err(Status::failed_precondition(reason))
                }
                Ok(_) => format!("{} node {id}: done", request.action),
                Err(e) => return Err(Status::unavailable(e.to_string())),
            },
        };
        // The change is applied on the leader; wait briefly until this node applied it too.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let members = loop {
            let (voters, learners) = self.replication.members();
            let applied = match request.action.as_str() {
                "promote" => voters.contains(&id),
                "remove" => !voters.contains(&id) && !learners.contains(&id),
                _ => true,
            };
            if applied || tokio::time::Instant::now() >= deadline {
                break (voters, learners);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let members_json = serde_json::json!({
            "voters": members.0,
            "learners": members.1,
            "leader": self.replication.controller(),
        })
        .to_string();
        Ok(MembershipReply { message, members_json })
    }

    /// Starts a backup and returns its progress stream; the last item carries the manifest.
    fn create_backup(&self, request: CreateBackupRequest) -> Result<ProgressStream, Status> {
        let compression = match request.compression.as_str() {
            "" => Compression::default(),
            name => name.parse().map_err(|e: chronik_backup::Error| Status::invalid_argument(e.to_string()))?,
        };
        let store = BackupStore::open(&request.to).map_err(|e| status(&e))?;
        if self.backup_running.swap(true, Ordering::AcqRel) {
            return Err(Status::failed_precondition("a backup of this node is already running"));
        }
        let running = RunningGuard(self.backup_running.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let (engine, scratch) = (self.engine.clone(), self.scratch.clone());
        // Checkpoint, compression and upload block: they run on the blocking pool.
        tokio::task::spawn_blocking(move || {
            let _running = running;
            let progress = StreamProgress::new(tx.clone());
            tracing::info!(to = %request.to, %compression, "backup started");
            let result = store.create(&engine, &scratch, compression, &progress);
            let last = match result {
                Ok(manifest) => {
                    tracing::info!(
                        id = %manifest.id,
                        files = manifest.files.len(),
                        uploaded_bytes = manifest.uploaded_bytes(),
                        "backup done"
                    );
                    let mut last = progress.snapshot();
                    last.manifest_json = String::from_utf8_lossy(&manifest.to_json()).into_owned();
                    Ok(last)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "backup failed");
                    Err(status(&e))
                }
            };
            let _ = tx.send(last);
        });
        Ok(Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })))
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<CreateBackupProgress, Status>> + Send>>;

/// `chronik.admin.v1.Admin` as a tower service: routes by gRPC path.
#[derive(Clone)]
struct AdminServer(Arc<AdminService>);

impl NamedService for AdminServer {
    const NAME: &'static str = "chronik.admin.v1.Admin";
}

impl tonic::codegen::Service<http::Request<Body>> for AdminServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.0.clone();
        match request.uri().path() {
            CREATE_BACKUP_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(WireCodec::<CreateBackupProgress, CreateBackupRequest>::default());
                Ok(grpc.server_streaming(CreateBackup(service), request).await)
            }),
            CHANGE_MEMBERSHIP_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(WireCodec::<MembershipReply, MembershipRequest>::default());
                Ok(grpc.unary(ChangeMembership(service), request).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

struct CreateBackup(Arc<AdminService>);

impl ServerStreamingService<CreateBackupRequest> for CreateBackup {
    type Response = CreateBackupProgress;
    type ResponseStream = ProgressStream;
    type Future = tonic::codegen::BoxFuture<Response<ProgressStream>, Status>;

    fn call(&mut self, request: Request<CreateBackupRequest>) -> Self::Future {
        let outcome = self.0.create_backup(request.into_inner()).map(Response::new);
        Box::pin(async move { outcome })
    }
}

struct ChangeMembership(Arc<AdminService>);

impl UnaryService<MembershipRequest> for ChangeMembership {
    type Response = MembershipReply;
    type Future = tonic::codegen::BoxFuture<Response<MembershipReply>, Status>;

    fn call(&mut self, request: Request<MembershipRequest>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.change_membership(request.into_inner()).await.map(Response::new) })
    }
}

/// Calls `Admin.ChangeMembership` on the node at `endpoint` (`http://HOST:PORT`).
pub async fn change_membership_call(endpoint: String, request: MembershipRequest) -> Result<MembershipReply, Status> {
    let mut grpc = tonic::client::Grpc::new(connect(endpoint).await?);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(CHANGE_MEMBERSHIP_PATH);
    let codec = WireCodec::<MembershipRequest, MembershipReply>::default();
    Ok(grpc.unary(Request::new(request), path, codec).await?.into_inner())
}

async fn connect(endpoint: String) -> Result<tonic::transport::Channel, Status> {
    tonic::transport::Endpoint::from_shared(endpoint)
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect: {e}")))
}

/// Calls `Admin.CreateBackup` on the node at `endpoint` (`http://HOST:PORT`).
pub async fn create_backup_call(
    endpoint: String,
    request: CreateBackupRequest,
) -> Result<tonic::Streaming<CreateBackupProgress>, Status> {
    let mut grpc = tonic::client::Grpc::new(connect(endpoint).await?);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = http::uri::PathAndQuery::from_static(CREATE_BACKUP_PATH);
    let codec = WireCodec::<CreateBackupRequest, CreateBackupProgress>::default();
    Ok(grpc.server_streaming(Request::new(request), path, codec).await?.into_inner())
}

/// The one mapping from backup errors to gRPC status codes.
pub fn status(e: &chronik_backup::Error) -> Status {
    use chronik_backup::Error as E;
    let message = e.to_string();
    match e {
        E::BadUrl { .. } | E::Invalid(_) => Status::invalid_argument(message),
        E::NotFound { .. } => Status::not_found(message),
        E::Missing { .. } | E::Corrupt { .. } | E::BadManifest { .. } => Status::data_loss(message),
        E::Io { .. } | E::Engine(_) => Status::internal(message),
    }
}

struct RunningGuard(Arc<AtomicBool>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Progress sent down the response stream, at most once per `STEP_BYTES` and per file.
struct StreamProgress {
    tx: mpsc::UnboundedSender<Result<CreateBackupProgress, Status>>,
    done: AtomicU64,
    total: AtomicU64,
    files_done: AtomicU64,
    files_total: AtomicU64,
    last_sent: AtomicU64,
}

const STEP_BYTES: u64 = 16 << 20;

impl StreamProgress {
    fn new(tx: mpsc::UnboundedSender<Result<CreateBackupProgress, Status>>) -> StreamProgress {
        StreamProgress {
            tx,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
            last_sent: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> CreateBackupProgress {
        CreateBackupProgress {
            bytes_done: self.done.load(Ordering::Relaxed),
            bytes_total: self.total.load(Ordering::Relaxed),
            files_done: self.files_done.load(Ordering::Relaxed) as u32,
            files_total: self.files_total.load(Ordering::Relaxed) as u32,
            manifest_json: String::new(),
        }
    }

    fn send(&self) {
        let _ = self.tx.send(Ok(self.snapshot()));
    }
}

impl Progress for StreamProgress {
    fn begin(&self, total_bytes: u64, files: usize) {
        self.total.store(total_bytes, Ordering::Relaxed);
        self.files_total.store(files as u64, Ordering::Relaxed);
        self.send();
    }

    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let last = self.last_sent.load(Ordering::Relaxed);
        if done >= last + STEP_BYTES
            && self.last_sent.compare_exchange(last, done, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.send();
        }
    }

    fn file_done(&self, _name: &str, _moved: bool) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
        self.send();
    }
}
