//! AlterConfigs (key 33, replaces a topic's configs) and IncrementalAlterConfigs
//! (key 44, sets or deletes single keys). Only topic configs can change.

use std::collections::BTreeMap;
use std::sync::Arc;

use chronik_replication::command::MetaCommand;
use chronik_replication::topic_config;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{alter_configs_response, incremental_alter_configs_response};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::util;
use crate::broker::Broker;
use crate::errors;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

type Failure = (ResponseError, Option<String>);

/// One resource's requested change, decoded from either API.
struct Change {
    replace: bool,
    set: BTreeMap<String, String>,
    delete: Vec<String>,
}

pub(crate) async fn handle_alter(
    broker: &Arc<Broker>,
    _version: i16,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in req.resources {
        // A null value leaves the key out, which `replace` returns to its default.
        let set = resource.configs.iter().filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())));
        let change = Change { replace: true, set: set.collect(), delete: Vec::new() };
        let outcome =
            apply(broker, resource.resource_type, &resource.resource_name, Ok(change), req.validate_only).await;
        let mut out = alter_configs_response::AlterConfigsResourceResponse::default();
        (out.error_code, out.error_message) = reply(outcome);
        out.resource_type = resource.resource_type;
        out.resource_name = resource.resource_name;
        response.responses.push(out);
    }
    response
}

pub(crate) async fn handle_incremental(
    broker: &Arc<Broker>,
    _version: i16,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in req.resources {
        let ops = resource
            .configs
            .iter()
            .map(|c| (c.name.as_str(), c.config_operation, c.value.as_ref().map(|v| v.as_str())));
        let change = incremental_change(ops);
        let outcome = apply(broker, resource.resource_type, &resource.resource_name, change, req.validate_only).await;
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        (out.error_code, out.error_message) = reply(outcome);
        out.resource_type = resource.resource_type;
        out.resource_name = resource.resource_name;
        response.responses.push(out);
    }
    response
}

/// Decodes incremental operations (name, op, value) into a change.
fn incremental_change<'a>(ops: impl Iterator<Item = (&'a str, i8, Option<&'a str>)>) -> Result<Change, Failure> {
    let mut change = Change { replace: false, set: BTreeMap::new(), delete: Vec::new() };
    for (name, op, value) in ops {
        match (op, value) {
            (OP_SET, Some(value)) => {
                change.set.insert(name.to_string(), value.to_string());
            }
            (OP_SET, None) => return Err((ResponseError::InvalidRequest, Some(format!("null value for {name}")))),
            (OP_DELETE, _) => change.delete.push(name.to_string()),
            (OP_APPEND | OP_SUBTRACT, _) => {
                let m = format!("APPEND and SUBTRACT are not supported ({name}); use SET");
                return Err((ResponseError::InvalidConfig, Some(m)));
            }
            (other, _) => {
                return Err((ResponseError::InvalidRequest, Some(format!("unknown config operation {other}"))))
            }
        }
    }
    Ok(change)
}

async fn apply(
    broker: &Broker,
    resource_type: i8,
    resource_name: &StrBytes,
    change: Result<Change, Failure>,
    validate_only: bool,
) -> Result<(), Failure> {
    match resource_type {
        TOPIC => {}
        BROKER => {
            let m = "broker configs are static: set them in chronik.toml or flags";
            return Err((ResponseError::InvalidRequest, Some(m.into())));
        }
        other => {
            return Err((
                ResponseError::InvalidRequest,
                Some(format!("resource type {other} is not supported; only topics (2)")),
            ))
        }
    }
    let name = resource_name.as_str();
    if !broker.replication.cluster().topics.contains_key(name) {
        return Err((ResponseError::UnknownTopicOrPartition, Some(format!("topic {name:?} does not exist"))));
    }
    let Change { replace, set, delete } = change?;
    for (key, value) in &set {
        topic_config::validate(key, value).map_err(|m| (ResponseError::InvalidConfig, Some(m)))?;
    }
    if validate_only {
        return Ok(());
    }
    util::propose_meta(broker, MetaCommand::AlterTopicConfigs { name: name.to_string(), replace, set, delete }).await
}

fn reply(outcome: Result<(), Failure>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((e, message)) => (errors::code(&e), message.as_deref().map(util::str_bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_ops_decode() {
        let ops = [("retention.ms", OP_SET, Some("1000")), ("retention.bytes", OP_DELETE, None)];
        let change = incremental_change(ops.into_iter()).expect("valid");
        assert!(!change.replace);
        assert_eq!(change.set.get("retention.ms").map(String::as_str), Some("1000"));
        assert_eq!(change.delete, vec!["retention.bytes".to_string()]);
    }

    #[test]
    fn unsupported_ops_are_refused() {
        let append = incremental_change([("cleanup.policy", OP_APPEND, Some("delete"))].into_iter());
        assert_eq!(append.err().map(|e| e.0), Some(ResponseError::InvalidConfig));
        let null_set = incremental_change([("retention.ms", OP_SET, None)].into_iter());
        assert_eq!(null_set.err().map(|e| e.0), Some(ResponseError::InvalidRequest));
        let unknown = incremental_change([("retention.ms", 9, Some("1"))].into_iter());
        assert_eq!(unknown.err().map(|e| e.0), Some(ResponseError::InvalidRequest));
    }
}
