//! Reading a policy's own configuration, a JSON document set in the tenant's pipeline.

use std::fmt;

/// A policy's configuration was rejected; the message reaches the operator verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl ConfigError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Parses `config` as JSON into `T`. An empty or all-whitespace config reads as `{}`, so a
/// struct whose fields all have serde defaults needs no config at all.
///
/// # Errors
///
/// The serde error, with line and column, when the JSON does not fit `T`.
pub fn from_json<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, ConfigError> {
    let text = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    serde_json::from_str(text).map_err(|e| ConfigError(format!("invalid policy config: {e}")))
}
