//! Where a new partition's replicas go: spread over racks, and with the preferred
//! leader (the first replica) rotating over nodes so leaders balance.

use crate::metadata::NodeInfo;

/// Replica lists for `partitions` new partitions of `replication_factor` replicas each,
/// over `nodes`. `start` rotates the first node (pass the cluster's partition count so
/// successive topics do not all lead on the same node). Nodes are ordered so that
/// consecutive ones sit in different racks where possible: a partition's replicas are
/// consecutive nodes of that order, so they cover as many racks as there are.
pub fn assign(nodes: &[NodeInfo], partitions: usize, replication_factor: usize, start: usize) -> Vec<Vec<u64>> {
    let order = rack_interleaved(nodes);
    if order.is_empty() {
        return Vec::new();
    }
    let rf = replication_factor.min(order.len());
    (0..partitions).map(|p| (0..rf).map(|r| order[(start + p + r) % order.len()]).collect()).collect()
}

/// Node ids ordered by id within each rack, racks taken round-robin.
fn rack_interleaved(nodes: &[NodeInfo]) -> Vec<u64> {
    let mut racks: std::collections::BTreeMap<&str, Vec<u64>> = std::collections::BTreeMap::new();
    for n in nodes {
        racks.entry(n.rack.as_deref().unwrap_or("")).or_default().push(n.id);
    }
    for ids in racks.values_mut() {
        ids.sort_unstable();
    }
    let mut order = Vec::with_capacity(nodes.len());
    for round in 0.. {
        let before = order.len();
        order.extend(racks.values().filter_map(|ids| ids.get(round)));
        if order.len() == before {
            break;
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, rack: &str) -> NodeInfo {
        NodeInfo { id, kafka_host: "h".into(), kafka_port: 1, rack: Some(rack.into()), dc: None, rpc_addr: None }
    }

    #[test]
    fn replicas_span_racks_and_leaders_rotate() {
        let nodes = [node(1, "a"), node(2, "a"), node(3, "b"), node(4, "b"), node(5, "c"), node(6, "c")];
        let placed = assign(&nodes, 6, 3, 0);
        for replicas in &placed {
            let mut racks: Vec<_> =
                replicas.iter().map(|r| nodes.iter().find(|n| n.id == *r).and_then(|n| n.rack.clone())).collect();
            racks.sort();
            racks.dedup();
            assert_eq!(racks.len(), 3, "{replicas:?} should cover three racks");
        }
        let mut leaders: Vec<u64> = placed.iter().map(|r| r[0]).collect();
        leaders.sort_unstable();
        assert_eq!(leaders, vec![1, 2, 3, 4, 5, 6], "each node prefers one partition");
    }

    #[test]
    fn replication_factor_is_capped_by_nodes() {
        let placed = assign(&[node(1, "a")], 2, 3, 5);
        assert_eq!(placed, vec![vec![1], vec![1]]);
        assert!(assign(&[], 1, 1, 0).is_empty());
    }
}
