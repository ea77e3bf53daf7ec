//! `chronik backup ...`: create (online through a node's admin API, or offline on a
//! stopped node's data dir), list, verify, restore and prune backups.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use chronik_backup::{BackupStore, Compression, Manifest, Progress};
use chronik_engine::{keys, Engine};
use chronik_replication::{Replication, ReplicationConfig};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::rpc::wire::CreateBackupRequest;

#[derive(Subcommand)]
pub enum Backup {
    /// Back up a running node (--node) or a stopped node's data dir (--data-dir).
    Create(CreateArgs),
    /// List the backups at a location, oldest first.
    List {
        #[arg(long)]
        from: String,
        /// One JSON manifest per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download every file of a backup and check its size and CRC32.
    Verify {
        #[arg(long)]
        from: String,
        #[arg(long)]
        id: String,
    },
    /// Rebuild a data dir from a backup; the target must be missing or empty.
    Restore {
        #[arg(long)]
        from: String,
        #[arg(long)]
        id: String,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Delete all but the newest N backups, and the files only they used.
    Prune {
        #[arg(long)]
        from: String,
        #[arg(long)]
        keep: usize,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// A running node's rpc address (HOST:PORT); the node writes the backup itself.
    #[arg(long, conflicts_with = "data_dir", required_unless_present = "data_dir")]
    node: Option<String>,
    /// A stopped node's data dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Backup location: a directory, file:///dir, s3://bucket/prefix, gs://bucket/prefix
    /// or az://container/prefix (credentials from the AWS_*, GOOGLE_*, AZURE_* variables).
    #[arg(long)]
    to: String,
    /// zstd, gzip or none.
    #[arg(long, default_value = "zstd")]
    compression: String,
}

/// Runs a backup command. Store operations block (a remote store drives its own
/// runtime); only talking to a node is async.
pub fn run(command: Backup) -> anyhow::Result<()> {
    match command {
        Backup::Create(args) => create(args),
        Backup::List { from, json } => list(&from, json),
        Backup::Verify { from, id } => {
            let store = BackupStore::open(&from)?;
            let progress = CliProgress::new("verify");
            let verified = store.verify(&id, progress.as_ref())?;
            progress.finish();
            println!("backup {id} is intact: {} files, {} bytes", verified.files, verified.bytes);
            Ok(())
        }
        Backup::Restore { from, id, data_dir } => restore(&from, &id, &data_dir),
        Backup::Prune { from, keep } => {
            let pruned = BackupStore::open(&from)?.prune(keep)?;
            for id in &pruned.backups {
                println!("deleted backup {id}");
            }
            println!("pruned {} backups, {} objects", pruned.backups.len(), pruned.objects);
            Ok(())
        }
    }
}

fn create(args: CreateArgs) -> anyhow::Result<()> {
    let compression: Compression = args.compression.parse()?;
    let manifest = match (&args.node, &args.data_dir) {
        (Some(node), _) => tokio::runtime::Runtime::new()?.block_on(create_online(node, &args.to, compression))?,
        (None, Some(dir)) => create_offline(dir, &args.to, compression)?,
        (None, None) => bail!("pass --node HOST:PORT (running node) or --data-dir DIR (stopped node)"),
    };
    println!(
        "created backup {}: {} files, {} bytes; uploaded {} files, {} bytes stored",
        manifest.id,
        manifest.files.len(),
        manifest.total_bytes(),
        manifest.uploaded().count(),
        manifest.uploaded_bytes()
    );
    Ok(())
}

async fn create_online(node: &str, to: &str, compression: Compression) -> anyhow::Result<Manifest> {
    let endpoint = if node.contains("://") { node.to_string() } else { format!("http://{node}") };
    let request = CreateBackupRequest { to: to.to_string(), compression: compression.to_string() };
    let mut stream = crate::rpc::create_backup_call(endpoint, request)
        .await
        .map_err(|s| anyhow::anyhow!("{node}: {}", s.message()))?;
    let progress = CliProgress::new("backup");
    let mut files_done = 0;
    while let Some(message) = stream.message().await.map_err(|s| anyhow::anyhow!("{node}: {}", s.message()))? {
        progress.set(message.bytes_done, message.bytes_total);
        if message.files_done > files_done {
            files_done = message.files_done;
            progress.line(&format!("{files_done}/{} files", message.files_total));
        }
        if !message.manifest_json.is_empty() {
            progress.finish();
            return Ok(Manifest::from_json("the node's answer", message.manifest_json.as_bytes())?);
        }
    }
    bail!("{node} closed the backup stream without a manifest")
}

/// Backs up a stopped node. Its RocksDB may lag its Raft log (a SIGKILL leaves applied
/// writes unflushed), so the log is replayed first, exactly as `chronik start` would.
fn create_offline(dir: &Path, to: &str, compression: Compression) -> anyhow::Result<Manifest> {
    let store = BackupStore::open(to)?;
    let db = dir.join("db");
    if !db.join("CURRENT").is_file() {
        bail!("{} is not a Chronik data dir (no db/ inside)", dir.display());
    }
    let engine = Arc::new(Engine::open(&db).with_context(|| {
        format!("cannot open the store in {} (is the node running? then use --node)", db.display())
    })?);
    let node_id = node_id(&engine)?;
    let replication = Replication::start(ReplicationConfig::new(node_id, dir.join("raft")), engine.clone())
        .context("cannot replay the Raft log")?;
    replication.shutdown();
    drop(replication);
    let progress = CliProgress::new("backup");
    let manifest = store.create(&engine, &dir.join("backup-staging"), compression, progress.as_ref())?;
    progress.finish();
    Ok(manifest)
}

fn node_id(engine: &Engine) -> anyhow::Result<u64> {
    let raw = engine.meta_get(keys::META_NODE_ID)?.context("the store has no node id")?;
    Ok(u64::from_be_bytes(raw.as_slice().try_into().context("corrupt node id in the store")?))
}

fn list(from: &str, json: bool) -> anyhow::Result<()> {
    let manifests = BackupStore::open(from)?.list()?;
    if json {
        for m in &manifests {
            println!("{}", serde_json::to_string(m)?);
        }
        return Ok(());
    }
    println!(
        "{:<24} {:<20} {:>5} {:>6} {:>14} {:>14} {:>14}",
        "ID", "CREATED", "NODE", "FILES", "BYTES", "STORED", "UPLOADED"
    );
    for m in &manifests {
        println!(
            "{:<24} {:<20} {:>5} {:>6} {:>14} {:>14} {:>14}",
            m.id,
            m.created_at,
            m.node_id,
            m.files.len(),
            m.total_bytes(),
            m.stored_bytes(),
            m.uploaded_bytes()
        );
    }
    Ok(())
}

/// Restores into a staging dir next to the target, seeds the Raft log, and only then
/// moves it into place: a failure leaves the target as it was.
fn restore(from: &str, id: &str, target: &Path) -> anyhow::Result<()> {
    if target.exists() {
        let mut entries = std::fs::read_dir(target).with_context(|| format!("cannot read {}", target.display()))?;
        if entries.next().is_some() {
            bail!("restore target {} is not empty", target.display());
        }
    }
    let store = BackupStore::open(from)?;
    let name = target.file_name().context("the restore target needs a directory name")?.to_string_lossy();
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = parent.join(format!(".{name}.restoring"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    let result = restore_into(&store, id, &staging);
    let (manifest, node_id) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    if target.exists() {
        std::fs::remove_dir(target).with_context(|| format!("cannot replace {}", target.display()))?;
    }
    std::fs::rename(&staging, target).with_context(|| format!("cannot move the restore into {}", target.display()))?;
    println!(
        "restored backup {} ({} files, {} bytes) into {}; start it with: chronik start --node-id {node_id} --data-dir {}",
        manifest.id,
        manifest.files.len(),
        manifest.total_bytes(),
        target.display(),
        target.display()
    );
    Ok(())
}

fn restore_into(store: &BackupStore, id: &str, staging: &Path) -> anyhow::Result<(Manifest, u64)> {
    let progress = CliProgress::new("restore");
    let manifest = store.restore(id, &staging.join("db"), progress.as_ref())?;
    progress.finish();
    let engine = Engine::open(&staging.join("db")).context("cannot open the restored store")?;
    let node_id = node_id(&engine)?;
    chronik_replication::offline::seed_raft_log(&staging.join("raft"), &engine, node_id)?;
    Ok((manifest, node_id))
}

/// A progress bar with bytes and rate on a terminal; plain lines on stderr otherwise.
struct CliProgress {
    label: &'static str,
    bar: Option<ProgressBar>,
    done: AtomicU64,
    total: AtomicU64,
    started: Instant,
}

impl CliProgress {
    fn new(label: &'static str) -> Arc<CliProgress> {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label);
            bar
        });
        Arc::new(CliProgress { label, bar, done: AtomicU64::new(0), total: AtomicU64::new(0), started: Instant::now() })
    }

    fn set(&self, done: u64, total: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    }

    fn line(&self, what: &str) {
        match &self.bar {
            Some(bar) => bar.set_message(what.to_string()),
            None => {
                let done = self.done.load(Ordering::Relaxed);
                let secs = self.started.elapsed().as_secs_f64().max(1e-3);
                eprintln!(
                    "{}: {what}, {} of {} bytes, {:.1} MiB/s",
                    self.label,
                    done,
                    self.total.load(Ordering::Relaxed),
                    done as f64 / secs / (1 << 20) as f64
                );
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let done = self.done.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        eprintln!(
            "{}: {} bytes in {:.1} s, {:.1} MiB/s",
            self.label,
            done,
            secs,
            done as f64 / secs / (1 << 20) as f64
        );
    }
}

impl Progress for CliProgress {
    fn begin(&self, total_bytes: u64, _files: usize) {
        self.set(0, total_bytes);
    }

    fn advance(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    fn file_done(&self, name: &str, moved: bool) {
        self.line(&format!("{name} {}", if moved { "done" } else { "already stored" }));
    }
}
