//! The rpc listener (`--rpc-addr`): one tonic server carrying every gRPC service of a
//! node. Today that is the admin API (`chronik.admin.v1.Admin`); another service is one
//! more `add_service` line in [`router`].

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use chronik_backup::{BackupStore, Compression, Progress};
use chronik_engine::Engine;
use futures::Stream;
use tokio::sync::mpsc;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::{Request, Response, Status};

pub mod proto {
    tonic::include_proto!("chronik.admin.v1");
}

use proto::admin_server::{Admin, AdminServer};
use proto::{CreateBackupProgress, CreateBackupRequest};

/// Every gRPC service of a node, ready to serve.
pub fn router(admin: AdminService) -> Router {
    tonic::transport::Server::builder().add_service(AdminServer::new(admin))
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    router: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    router.serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown).await
}

/// The admin API: backups for now.
pub struct AdminService {
    engine: Arc<Engine>,
    /// Where checkpoints are made before upload (inside the data dir: hard links).
    scratch: PathBuf,
    backup_running: Arc<AtomicBool>,
}

impl AdminService {
    pub fn new(engine: Arc<Engine>, data_dir: &std::path::Path) -> AdminService {
        let scratch = data_dir.join("backup-staging");
        // Checkpoints left by a backup interrupted by a crash are useless now.
        if scratch.exists() {
            if let Err(e) = std::fs::remove_dir_all(&scratch) {
                tracing::warn!(path = %scratch.display(), error = %e, "cannot remove old backup checkpoints");
            }
        }
        AdminService { engine, scratch, backup_running: Arc::new(AtomicBool::new(false)) }
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<CreateBackupProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    type CreateBackupStream = ProgressStream;

    async fn create_backup(
        &self,
        request: Request<CreateBackupRequest>,
    ) -> Result<Response<ProgressStream>, Status> {
        let request = request.into_inner();
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
        tokio::spawn(async move {
            let _running = running;
            let progress = Arc::new(StreamProgress::new(tx.clone()));
            tracing::info!(to = %request.to, %compression, "backup started");
            let result = store.create(engine, &scratch, compression, progress.clone()).await;
            let last = result.map(|manifest| {
                tracing::info!(id = %manifest.id, files = manifest.files.len(), uploaded_bytes = manifest.uploaded_bytes(), "backup done");
                let mut last = progress.snapshot();
                last.manifest_json = String::from_utf8_lossy(&manifest.to_json()).into_owned();
                last
            });
            if let Err(e) = &last {
                tracing::warn!(error = %e, "backup failed");
            }
            let _ = tx.send(last.map_err(|e| status(&e)));
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The one mapping from backup errors to gRPC status codes.
pub fn status(e: &chronik_backup::Error) -> Status {
    use chronik_backup::Error as E;
    let message = e.to_string();
    match e {
        E::BadUrl { .. } | E::Invalid(_) => Status::invalid_argument(message),
        E::NotFound { .. } => Status::not_found(message),
        E::Missing { .. } | E::Corrupt { .. } | E::BadManifest { .. } => Status::data_loss(message),
        E::Store { .. } => Status::unavailable(message),
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
