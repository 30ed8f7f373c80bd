//! The YAML configuration model: parsed with serde, then validated as a whole.
//!
//! A config is only ever used once it has parsed and validated completely, so
//! a bad file can be reported without touching what is running.

mod error;
mod model;

pub use error::ConfigError;
pub use model::{Config, IfName, InstanceName, InterfaceConfig, Interfaces, XdpModeSetting};

use std::path::Path;

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| ConfigError::from_serde(file, e))
    }
}
