//! DeleteTopics (key 20): deletes topics, named (v1-5) or by name or id (v6).

use std::sync::Arc;

use chronik_replication::command::MetaCommand;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use super::util;
use crate::broker::Broker;
use crate::coordinator::OFFSETS_TOPIC;
use crate::errors;

pub(crate) async fn handle(broker: &Arc<Broker>, version: i16, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    // (name, topic id) as asked.
    let asked: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)).collect()
    } else {
        req.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect()
    };
    let mut response = DeleteTopicsResponse::default();
    for (name, id) in asked {
        let mut result = DeletableTopicResult::default();
        result.name = name.as_deref().map(util::topic_name);
        result.topic_id = id;
        match delete(broker, name, id).await {
            Ok((name, id)) => {
                result.name = Some(util::topic_name(&name));
                result.topic_id = id;
            }
            Err((e, message)) => {
                result.error_code = errors::code(&e);
                result.error_message = message.as_deref().map(util::str_bytes);
            }
        }
        response.responses.push(result);
    }
    response
}

/// Deletes the topic named or identified; returns its name and id.
async fn delete(
    broker: &Broker,
    name: Option<String>,
    id: uuid::Uuid,
) -> Result<(String, uuid::Uuid), (ResponseError, Option<String>)> {
    let cluster = broker.replication.cluster();
    let topic = match (name, id.is_nil()) {
        (Some(name), true) => cluster.topics.get(&name).ok_or((ResponseError::UnknownTopicOrPartition, None))?,
        (None, false) => {
            let topic = cluster.topics.values().find(|t| t.id == *id.as_bytes());
            topic.ok_or((ResponseError::UnknownTopicId, None))?
        }
        (Some(_), false) => {
            return Err((ResponseError::InvalidRequest, Some("give a topic name or id, not both".into())))
        }
        (None, true) => return Err((ResponseError::InvalidRequest, Some("a topic name or id is required".into()))),
    };
    let (name, id) = (topic.name.clone(), uuid::Uuid::from_bytes(topic.id));
    if name == OFFSETS_TOPIC {
        // Deleting it would delete every committed offset of every group.
        return Err((ResponseError::InvalidTopicException, Some(format!("{OFFSETS_TOPIC} is internal"))));
    }
    util::propose_meta(broker, MetaCommand::DeleteTopic { name: name.clone() }).await?;
    Ok((name, id))
}
