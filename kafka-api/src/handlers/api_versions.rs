//! ApiVersions (key 18), answered from the handler table.
//!
//! No tagged fields are ever set in the response: librdkafka 2.0.2 (Debian's kcat)
//! misparses an ApiVersions v3 response that carries them.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse, ResponseKind};

use super::supported_apis;

pub(crate) fn handle(_version: i16, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = versions();
    response
}

/// The KIP-511 answer to an ApiVersions request of a version we do not support,
/// encoded as v0 so that any client can read it.
pub(crate) fn unsupported() -> ResponseKind {
    let mut response = ApiVersionsResponse::default();
    response.error_code = ResponseError::UnsupportedVersion.code();
    response.api_keys = versions();
    ResponseKind::ApiVersions(response)
}

fn versions() -> Vec<ApiVersion> {
    supported_apis()
        .into_iter()
        .map(|(key, min, max)| {
            ApiVersion::default().with_api_key(key as i16).with_min_version(min).with_max_version(max)
        })
        .collect()
}
