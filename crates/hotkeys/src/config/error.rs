//! The errors a bad topology produces; every one names the file.

use std::path::{Path, PathBuf};

/// What went wrong loading a topology; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not valid TOML: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {message}")]
    Key {
        file: PathBuf,
        key: String,
        message: String,
    },
    #[error("{file}: environment variable {var}: {message}")]
    Env {
        file: PathBuf,
        var: String,
        message: String,
    },
}

/// A key whose value cannot work, and what was expected: what a section's `validate`
/// answers, before the file is known.
#[derive(Debug)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The error of `file`.
    pub fn in_file(self, file: &Path) -> ConfigError {
        ConfigError::Key {
            file: file.to_path_buf(),
            key: self.key,
            message: self.message,
        }
    }
}

/// `Err(Invalid)` of `key` when `failed`: one line per check in the sections' `validate`.
pub fn check(failed: bool, key: &str, message: &str) -> Result<(), Invalid> {
    match failed {
        true => Err(Invalid::new(key, message)),
        false => Ok(()),
    }
}
