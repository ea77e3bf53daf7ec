//! DeleteRecords (key 21): moves each partition's log start offset forward.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::util;
use crate::broker::Broker;
use crate::errors;

/// Request offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub(crate) async fn handle(broker: &Arc<Broker>, _version: i16, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let cluster = broker.replication.cluster();
    let mut response = DeleteRecordsResponse::default();
    for topic in req.topics {
        let name = topic.name.0.as_str();
        let mut result = DeleteRecordsTopicResult::default();
        result.name = util::topic_name(name);
        for p in topic.partitions {
            let mut out = DeleteRecordsPartitionResult::default();
            out.partition_index = p.partition_index;
            match trim(broker, cluster.topics.get(name), p.partition_index, p.offset).await {
                Ok(low_watermark) => out.low_watermark = low_watermark,
                Err(e) => {
                    out.error_code = errors::code(&e);
                    out.low_watermark = -1;
                }
            }
            result.partitions.push(out);
        }
        response.topics.push(result);
    }
    response
}

async fn trim(
    broker: &Broker,
    topic: Option<&Arc<chronik_replication::TopicMeta>>,
    partition: i32,
    offset: i64,
) -> Result<i64, ResponseError> {
    let (uid, view) = util::leader_view(broker, topic, partition)?;
    let high_watermark = view.high_watermark();
    let offset = if offset == HIGH_WATERMARK { high_watermark } else { offset };
    if !(0..=high_watermark).contains(&offset) {
        return Err(ResponseError::OffsetOutOfRange);
    }
    if offset <= view.log_start_offset() {
        return Ok(view.log_start_offset());
    }
    broker.replication.trim(uid, offset).await.map_err(|e| errors::replication(&e))
}
