//! Configuration errors that name the file, the line and column, and the
//! field, so an operator can go straight to the mistake.
use std::{fmt, path::PathBuf};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read: {source}", file = file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML, or does not fit the schema.
    #[error("{0}")]
    Invalid(Located),
}

/// One error with its position in the file.
#[derive(Debug)]
pub struct Located {
    /// The file the error is in.
    pub file: PathBuf,
    /// 1-based line, when the parser knows it.
    pub line: Option<usize>,
    /// 1-based column, when the parser knows it.
    pub column: Option<usize>,
    /// Dotted path of the field, e.g. `interfaces[0].xdp_mode`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if !self.field.is_empty() && self.field != "." {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigError {
    pub(super) fn from_serde(
        file: &std::path::Path,
        e: serde_path_to_error::Error<serde_yaml_ng::Error>,
    ) -> ConfigError {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let location = inner.location();
        // serde_yaml_ng appends " at line L column C" to its message; the
        // position is reported separately, so strip it.
        let mut message = inner.to_string();
        if let Some(idx) = message.find(" at line ") {
            message.truncate(idx);
        }
        ConfigError::Invalid(Located {
            file: file.to_path_buf(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            field,
            message,
        })
    }
}
