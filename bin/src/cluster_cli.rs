//! `chronik cluster ...`: membership of the metadata group, through any node's admin API.
//! A new node joins by itself (start it with `--peers` listing the cluster and itself);
//! these commands list the members, promote a learner to voter and remove a node.

use anyhow::bail;
use clap::Subcommand;

use crate::rpc::wire::MembershipRequest;

#[derive(Subcommand)]
pub enum Cluster {
    /// Voters, learners and the leader of the metadata group.
    Members {
        /// Any node's rpc address (HOST:PORT).
        #[arg(long)]
        node: String,
    },
    /// Make a learner a voter of the metadata group (it must have caught up).
    Promote {
        #[arg(long)]
        node: String,
        /// The node to promote.
        #[arg(long)]
        id: u64,
    },
    /// Remove a node from the cluster (it must hold no partition replicas).
    Remove {
        #[arg(long)]
        node: String,
        /// The node to remove.
        #[arg(long)]
        id: u64,
    },
}

pub fn run(command: Cluster) -> anyhow::Result<()> {
    let (node, request) = match command {
        Cluster::Members { node } => (node, MembershipRequest { action: "list".into(), node_id: 0 }),
        Cluster::Promote { node, id } => (node, MembershipRequest { action: "promote".into(), node_id: id }),
        Cluster::Remove { node, id } => (node, MembershipRequest { action: "remove".into(), node_id: id }),
    };
    let endpoint = if node.contains("://") { node.clone() } else { format!("http://{node}") };
    let reply = tokio::runtime::Runtime::new()?.block_on(crate::rpc::change_membership_call(endpoint, request));
    match reply {
        Ok(reply) => {
            eprintln!("{}", reply.message);
            println!("{}", reply.members_json);
            Ok(())
        }
        Err(status) => bail!("{node}: {}", status.message()),
    }
}
