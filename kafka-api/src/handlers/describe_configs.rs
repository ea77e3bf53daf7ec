//! DescribeConfigs (key 32): the configs of topics (set or default) and of this broker.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::util;
use crate::broker::Broker;
use crate::errors;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

pub(crate) fn handle(broker: &Arc<Broker>, _version: i16, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in req.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        result.error_message = None;
        match describe(broker, &resource) {
            Ok(configs) => {
                let wanted = |name: &str| {
                    resource.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
                };
                result.configs = configs.into_iter().filter(|c| wanted(c.name.as_str())).collect();
            }
            Err((e, message)) => {
                result.error_code = errors::code(&e);
                result.error_message = Some(util::str_bytes(&message));
            }
        }
        response.results.push(result);
    }
    response
}

fn describe(
    broker: &Broker,
    resource: &DescribeConfigsResource,
) -> Result<Vec<DescribeConfigsResourceResult>, (ResponseError, String)> {
    let defaults = &broker.config.topic_defaults;
    let name = resource.resource_name.as_str();
    match resource.resource_type {
        TOPIC => {
            let cluster = broker.replication.cluster();
            let topic = cluster
                .topics
                .get(name)
                .ok_or((ResponseError::UnknownTopicOrPartition, format!("topic {name:?} does not exist")))?;
            let configs = defaults.describe(&topic.configs).into_iter().map(|c| {
                let source = if c.is_default { util::SOURCE_DEFAULT } else { util::SOURCE_TOPIC };
                entry(c.name, c.value, source, false)
            });
            Ok(configs.collect())
        }
        BROKER => {
            let node = broker.config.node_id;
            if !name.is_empty() && name != node.to_string() {
                return Err((ResponseError::InvalidRequest, format!("this is broker {node}, not {name:?}")));
            }
            let configs = defaults.describe_broker().into_iter();
            Ok(configs.map(|(key, value)| entry(key, value, util::SOURCE_STATIC_BROKER, true)).collect())
        }
        other => Err((
            ResponseError::InvalidRequest,
            format!("resource type {other} is not supported; only topics (2) and brokers (4)"),
        )),
    }
}

fn entry(name: &str, value: String, source: i8, read_only: bool) -> DescribeConfigsResourceResult {
    let mut out = DescribeConfigsResourceResult::default();
    out.name = util::str_bytes(name);
    out.value = Some(util::str_bytes(&value));
    out.read_only = read_only;
    out.config_source = source;
    out.is_sensitive = false;
    out.config_type = util::config_type(name);
    out.documentation = None;
    out
}
