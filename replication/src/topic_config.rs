//! Topic configs: the keys Chronik understands, their broker-wide defaults, validation,
//! and resolution of a topic's effective values.

use std::collections::BTreeMap;

pub const RETENTION_MS: &str = "retention.ms";
pub const RETENTION_BYTES: &str = "retention.bytes";
pub const CLEANUP_POLICY: &str = "cleanup.policy";
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// Every topic config key Chronik accepts.
pub const KEYS: &[&str] = &[RETENTION_MS, RETENTION_BYTES, CLEANUP_POLICY, MAX_MESSAGE_BYTES, MIN_INSYNC_REPLICAS];

/// Broker-wide defaults (the `log.*` / broker settings a topic falls back to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDefaults {
    /// -1 keeps records forever.
    pub retention_ms: i64,
    /// -1 means no size limit.
    pub retention_bytes: i64,
    pub max_message_bytes: i64,
    pub min_insync_replicas: i64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1024 * 1024 + 12,
            min_insync_replicas: 1,
        }
    }
}

/// The values in force for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: i64,
    pub min_insync_replicas: i64,
}

/// One described config: its value and whether it is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigValue {
    pub name: &'static str,
    pub value: String,
    pub is_default: bool,
}

impl TopicDefaults {
    fn default_of(&self, key: &str) -> String {
        match key {
            RETENTION_MS => self.retention_ms.to_string(),
            RETENTION_BYTES => self.retention_bytes.to_string(),
            MAX_MESSAGE_BYTES => self.max_message_bytes.to_string(),
            MIN_INSYNC_REPLICAS => self.min_insync_replicas.to_string(),
            _ => "delete".to_string(),
        }
    }

    pub fn resolve(&self, configs: &BTreeMap<String, String>) -> TopicConfig {
        let num = |key: &str, default: i64| configs.get(key).and_then(|v| v.parse().ok()).unwrap_or(default);
        TopicConfig {
            retention_ms: num(RETENTION_MS, self.retention_ms),
            retention_bytes: num(RETENTION_BYTES, self.retention_bytes),
            max_message_bytes: num(MAX_MESSAGE_BYTES, self.max_message_bytes),
            min_insync_replicas: num(MIN_INSYNC_REPLICAS, self.min_insync_replicas),
        }
    }

    /// Every known config of a topic, set or default, in key order.
    pub fn describe(&self, configs: &BTreeMap<String, String>) -> Vec<ConfigValue> {
        KEYS.iter()
            .map(|key| match configs.get(*key) {
                Some(value) => ConfigValue { name: key, value: value.clone(), is_default: false },
                None => ConfigValue { name: key, value: self.default_of(key), is_default: true },
            })
            .collect()
    }

    /// Broker configs as DescribeConfigs shows them for the broker resource.
    pub fn describe_broker(&self) -> Vec<(&'static str, String)> {
        vec![
            ("log.retention.ms", self.retention_ms.to_string()),
            ("log.retention.bytes", self.retention_bytes.to_string()),
            ("log.cleanup.policy", "delete".to_string()),
            ("message.max.bytes", self.max_message_bytes.to_string()),
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
        ]
    }
}

/// Checks one topic config; the error says what is accepted.
pub fn validate(key: &str, value: &str) -> Result<(), String> {
    let int = |min: i64| match value.trim().parse::<i64>() {
        Ok(v) if v >= min => Ok(()),
        _ => Err(format!("{key} must be an integer >= {min}, got {value:?}")),
    };
    match key {
        RETENTION_MS | RETENTION_BYTES => int(-1),
        MAX_MESSAGE_BYTES => int(0),
        MIN_INSYNC_REPLICAS => int(1),
        CLEANUP_POLICY if value == "delete" => Ok(()),
        CLEANUP_POLICY => Err(format!("cleanup.policy {value:?} is not supported; only \"delete\"")),
        _ => Err(format!("unknown topic config {key:?}; known: {}", KEYS.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_values_override_defaults() {
        let defaults = TopicDefaults::default();
        let configs = BTreeMap::from([(RETENTION_MS.to_string(), "1000".to_string())]);
        let resolved = defaults.resolve(&configs);
        assert_eq!(resolved.retention_ms, 1000);
        assert_eq!(resolved.retention_bytes, -1);
        let described = defaults.describe(&configs);
        assert!(described.iter().any(|c| c.name == RETENTION_MS && c.value == "1000" && !c.is_default));
        assert!(described.iter().any(|c| c.name == CLEANUP_POLICY && c.value == "delete" && c.is_default));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(validate(RETENTION_MS, "-1").is_ok());
        assert!(validate(RETENTION_MS, "soon").expect_err("not a number").contains("retention.ms"));
        assert!(validate(CLEANUP_POLICY, "compact").is_err());
        assert!(validate("segment.bytes", "1").expect_err("unknown key").contains("unknown"));
    }
}
