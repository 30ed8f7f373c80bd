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
    /// The file is not valid YAML, does not fit the schema, or has one
    /// semantic problem.
    #[error("{0}")]
    Invalid(Located),
    /// Several semantic problems, one per line.
    #[error("{}", .0.iter().map(|l| l.to_string()).collect::<Vec<_>>().join("\n"))]
    Multiple(Vec<Located>),
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
        if !self.field.is_empty() && self.field != "." && self.field != "?" {
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
        // serde_yaml_ng appends " at line L column C" for the error's own
        // position, which is reported separately; strip only that suffix so
        // context such as "while scanning a quoted scalar at line 1 column
        // 11" stays. It also prefixes the field path, which is reported
        // separately as well.
        let mut message = inner.to_string();
        if let Some(loc) = &location {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_string();
            }
        }
        let prefix = format!("{field}: ");
        if let Some(stripped) = message.strip_prefix(&prefix) {
            message = stripped.to_string();
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

/// One problem: the field's path (serde_path_to_error notation) and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub message: String,
}
