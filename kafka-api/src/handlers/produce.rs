//! Produce (key 0): validate each partition's batches, queue one Raft proposal per
//! partition (before the next request is read), answer when all are applied.

use std::sync::Arc;
use std::time::Duration;

use chronik_replication::record_batch;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, ResponseKind};

use super::{util, Reply};
use crate::broker::Broker;
use crate::coordinator::OFFSETS_TOPIC;
use crate::errors;

pub(crate) async fn handle(broker: &Arc<Broker>, _version: i16, request: ProduceRequest) -> Reply {
    let cluster = broker.replication.cluster();
    let timeout = Duration::from_millis(request.timeout_ms.max(1) as u64);
    let transactional = request.transactional_id.is_some();
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let name = topic.name.0.as_str().to_string();
        let meta = cluster.topics.get(&name);
        let config = meta.map(|m| broker.config.topic_defaults.resolve(&m.configs));
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let outcome = async {
                let (uid, view) = util::leader_view(broker, meta, p.index)?;
                if name == OFFSETS_TOPIC {
                    // Group state is written by the coordinator only (Kafka refuses the same).
                    return Err(ResponseError::InvalidTopicException);
                }
                let records = p.records.ok_or(ResponseError::InvalidRecord)?;
                let config = config.as_ref().ok_or(ResponseError::UnknownTopicOrPartition)?;
                validate(&records, config.max_message_bytes, transactional)?;
                if request.acks == -1 && (view.isr().len() as i64) < config.min_insync_replicas {
                    return Err(ResponseError::NotEnoughReplicas);
                }
                broker.replication.submit_append(uid, records).await.map_err(|e| errors::replication(&e))
            }
            .await;
            partitions.push((p.index, outcome));
        }
        topics.push((name, partitions));
    }
    if request.acks == 0 {
        return Reply::Nothing;
    }
    Reply::Later(Box::pin(async move {
        let mut response = ProduceResponse::default();
        for (name, partitions) in topics {
            let mut out = TopicProduceResponse::default().with_name(util::topic_name(&name));
            for (index, outcome) in partitions {
                let mut part = PartitionProduceResponse::default().with_index(index).with_log_append_time_ms(-1);
                let result = match outcome {
                    Ok(pending) => match tokio::time::timeout(timeout, pending).await {
                        Ok(Ok(appended)) => Ok(appended),
                        Ok(Err(e)) => Err(errors::replication(&e)),
                        Err(_) => Err(ResponseError::RequestTimedOut),
                    },
                    Err(code) => Err(code),
                };
                match result {
                    Ok(appended) => {
                        part.base_offset = appended.base_offset;
                        part.log_start_offset = appended.log_start_offset;
                    }
                    Err(code) => {
                        part.error_code = code.code();
                        part.base_offset = -1;
                        part.log_start_offset = -1;
                    }
                }
                out.partition_responses.push(part);
            }
            response.responses.push(out);
        }
        Some(ResponseKind::Produce(response))
    }))
}

/// Checks framing, CRC-32C, size and attributes of every batch.
fn validate(records: &[u8], max_message_bytes: i64, transactional: bool) -> Result<(), ResponseError> {
    let mut any = false;
    for batch in record_batch::batches(records) {
        let batch = batch.map_err(|_| ResponseError::CorruptMessage)?;
        if batch.len() as i64 > max_message_bytes {
            return Err(ResponseError::MessageTooLarge);
        }
        if batch.is_transactional() || batch.is_control() || transactional {
            // Transactions arrive with a later issue; refuse rather than store them wrongly.
            return Err(ResponseError::InvalidRecord);
        }
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(ResponseError::InvalidRecord)
    }
}
