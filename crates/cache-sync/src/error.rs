//! Failures of a `cache-sync` command and the exit code each one maps to.

use hotkeys::cli::{Failure, exit};
use hotkeys::redis::CacheError;
use hotkeys::sync::SyncError;

/// Why a command stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topology or the command line cannot work (exit 2).
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Queue(#[from] SyncError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The receiver answered a batch with an error that trying again cannot fix.
    #[error("{remote} refused batch {stamp}: HTTP {status}: {message}{}", refusal_hint(*status))]
    Refused {
        remote: String,
        stamp: u64,
        status: u16,
        message: String,
    },
    /// The receiver asks for a new stream (409 with `reset`); the shipper starts one, so
    /// this only ends a command when it escapes the shipper's loop.
    #[error("{remote} asks for a new stream at batch {stamp} ({}): {message}", reason.as_str())]
    Reset {
        remote: String,
        stamp: u64,
        reason: crate::wire::ResetReason,
        message: String,
    },
    /// `sync.retries` tries in a row failed (exit 3).
    #[error("{remote} unreachable, gave up after {tries} tries: {last}")]
    GaveUp {
        remote: String,
        tries: u32,
        last: String,
    },
    /// Something that should not fail did.
    #[error("{0}")]
    Internal(String),
    #[error("cannot serve on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// What an operator can do about a refusal that stops the shipper.
fn refusal_hint(status: u16) -> &'static str {
    match status {
        401 => {
            " (the shared secret differs — set the same value in the variable sync.secret_env names on both sides — or the clocks of the two sides are further apart than the receiver's sync.max_skew: synchronise them)"
        }
        413 => " (lower sync.batch here, or raise sync.max_body on the receiver)",
        400 => " (the batch is not valid even without the elements that are not operations)",
        _ => "",
    }
}

impl Failure for Error {
    fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => exit::USAGE,
            // A refused login is the configuration's to fix, like a bad URL.
            Error::Cache(e) | Error::Queue(SyncError::Cache(e)) if e.is_refused_login() => {
                exit::USAGE
            }
            Error::Queue(e) if e.is_unreachable() => exit::UNREACHABLE,
            // The state node may evict: the configuration's to fix.
            Error::Queue(SyncError::Evicting { .. }) => exit::USAGE,
            Error::Cache(e) if e.is_unreachable() => exit::UNREACHABLE,
            Error::Cache(CacheError::Config(_) | CacheError::Ring(_)) => exit::USAGE,
            Error::Queue(SyncError::Cache(CacheError::Config(_) | CacheError::Ring(_))) => {
                exit::USAGE
            }
            // A wrong shared secret is a configuration mismatch between the two sides.
            Error::Refused { status: 401, .. } => exit::USAGE,
            Error::GaveUp { .. } => exit::UNREACHABLE,
            Error::Queue(_)
            | Error::Cache(_)
            | Error::Refused { .. }
            | Error::Reset { .. }
            | Error::Internal(_)
            | Error::Listen { .. } => exit::FAILED,
        }
    }
}
