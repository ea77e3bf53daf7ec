//! InitProducerId (key 22): allocates a producer id for an idempotent producer.
//! Transactional producers are refused until transactions exist.

use std::sync::Arc;

use chronik_replication::command::MetaCommand;
use chronik_replication::MetaOutcome;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::broker::Broker;
use crate::errors;

pub(crate) async fn handle(broker: &Arc<Broker>, _version: i16, req: InitProducerIdRequest) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    let outcome = match req.transactional_id {
        Some(_) => Err(ResponseError::TransactionalIdAuthorizationFailed),
        None => match broker.replication.propose_meta(MetaCommand::AllocateProducerId).await {
            Ok(MetaOutcome::ProducerId(id)) => Ok(id),
            Ok(MetaOutcome::Rejected(r)) => Err(errors::meta_rejection(&r)),
            Ok(MetaOutcome::Done | MetaOutcome::Joined(_)) => Err(ResponseError::UnknownServerError),
            Err(e) => Err(errors::replication(&e)),
        },
    };
    match outcome {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(e) => {
            response.error_code = errors::code(&e);
            response.producer_id = ProducerId(-1);
            response.producer_epoch = -1;
        }
    }
    response
}
