//! The YAML configuration model: parsed with serde, then validated as a whole.
//!
//! A config is only ever used once it has parsed and validated completely, so
//! a bad file can be reported without touching what is running.

mod error;
pub mod fleet_health;
pub mod l4;
pub mod l7;
pub mod l7_plan;
pub mod lifecycle;
mod locate;
pub mod middleware;
mod model;
pub mod node;
pub mod observe;
pub mod resource;
pub mod units;
mod validate;

pub use error::{ConfigError, Issue, Located};
pub use model::{Config, IfName, InstanceName, InterfaceConfig, XdpModeSetting};

use std::{path::Path, sync::Arc};

use crate::l7::plan::L7Plan;

impl Config {
    /// This config, validated and with its L7 plan made (once: the daemon
    /// runs the plan it gets here), or every problem found.
    pub fn check(mut self) -> Result<Config, Vec<Issue>> {
        let mut issues = self.issues();
        issues.extend(node::issues(&self));
        issues.extend(fleet_health::issues(&self));
        if let Some(o) = &self.observe {
            issues.extend(o.issues());
        }
        match l7_plan::plan(&self.l7) {
            Ok(plan) => self.planned = model::Planned(Some(Arc::new(plan))),
            Err(l7) => issues.extend(l7),
        }
        if issues.is_empty() {
            Ok(self)
        } else {
            Err(issues)
        }
    }

    /// The L7 plan made by [`Config::check`] (`None` for a config that was
    /// not checked, or has no listeners).
    pub fn l7_plan(&self) -> Option<&Arc<L7Plan>> {
        self.planned.0.as_ref().filter(|p| !p.is_empty())
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `file` is only used in error messages.
    ///
    /// Syntax and type errors stop parsing, so only the first is reported;
    /// every semantic problem is reported, each with its position.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let config: Config =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::from_serde(file, e))?;
        let issues = match config.check() {
            Ok(config) => return Ok(config),
            Err(issues) => issues,
        };
        let positions = locate::Positions::of(text);
        let mut located: Vec<Located> = issues
            .into_iter()
            .map(|i| {
                let pos = positions.find(&i.path);
                Located {
                    file: file.to_path_buf(),
                    line: pos.map(|p| p.0),
                    column: pos.map(|p| p.1),
                    field: i.path,
                    message: i.message,
                }
            })
            .collect();
        if located.len() == 1 {
            Err(ConfigError::Invalid(located.remove(0)))
        } else {
            Err(ConfigError::Multiple(located))
        }
    }
}
