//! The library's error type: every failure names the flag, file, field or tensor at fault.

use std::path::PathBuf;

/// Errors raised by resnet-ode. Messages say what was found and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A user-supplied setting is out of range or malformed (`what` names the flag or field).
    #[error("invalid {what}: {msg}")]
    Invalid { what: String, msg: String },
    /// A tensor has the wrong shape.
    #[error("shape mismatch in {what}: expected {expected}, found {found}")]
    Shape {
        what: String,
        expected: String,
        found: String,
    },
    /// A tensor holds NaN or infinity.
    #[error("non-finite values in {what}")]
    NonFinite { what: String },
    /// Reading or writing a file failed.
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::File`].
    pub fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}

/// Result with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
