//! `chronik dump ...`: the thin CLI over the `chronik-dump` library.

use std::path::PathBuf;

use anyhow::bail;
use chronik_dump::{DataDir, Format, Output, RecordsQuery};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Args)]
pub struct DumpArgs {
    /// The data dir of a stopped node, a restored backup, or a running node.
    #[arg(long, env = "CHRONIK_DATA_DIR", default_value = "./chronik-data")]
    data_dir: PathBuf,
    /// json: one JSON object per line; table: aligned columns for people.
    #[arg(long, value_enum, default_value = "json")]
    format: OutputFormat,
    #[command(subcommand)]
    what: What,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Json,
    Table,
}

#[derive(Subcommand)]
enum What {
    /// Topics with their ids, partition counts and configs.
    Topics,
    /// Partitions with their state rows (offsets, sizes, applied Raft index).
    Partitions,
    /// Records of one partition, as a consumer reads them.
    Records {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        #[arg(long)]
        from_offset: Option<i64>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Consumer groups: record and committed offsets, one row per offset.
    Groups,
    /// Entries of one Raft group's log (0 = metadata; a partition's uid otherwise).
    RaftLog {
        #[arg(long)]
        group: u64,
        #[arg(long, default_value_t = 10_000)]
        limit: usize,
    },
    /// Batch CRCs, dense offsets, state rows against the log, applied <= last Raft index.
    Check,
}

pub fn run(args: DumpArgs) -> anyhow::Result<()> {
    let data = DataDir::open(&args.data_dir)?;
    let format = match args.format {
        OutputFormat::Json => Format::JsonLines,
        OutputFormat::Table => Format::Table,
    };
    let mut out = Output::new(std::io::stdout().lock(), format);
    match args.what {
        What::Topics => chronik_dump::topics(&data, &mut out)?,
        What::Partitions => chronik_dump::partitions(&data, &mut out)?,
        What::Groups => chronik_dump::groups(&data, &mut out)?,
        What::Records { topic, partition, from_offset, limit } => {
            let query = RecordsQuery { topic, partition, from_offset, limit };
            chronik_dump::records(&data, &query, &mut out)?
        }
        What::RaftLog { group, limit } => chronik_dump::raft_log(&data, group, limit, &mut out)?,
        What::Check => {
            let problems = chronik_dump::check(&data, &mut out)?;
            drop(out.finish()?);
            if !problems.is_empty() {
                bail!("check found {} problems", problems.len());
            }
            eprintln!("check: no problems");
            return Ok(());
        }
    }
    drop(out.finish()?);
    Ok(())
}
