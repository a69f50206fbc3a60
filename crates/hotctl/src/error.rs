//! Why a hotctl command failed, and the exit code the failure deserves: 3 when a dependency
//! is unreachable, 2 for bad configuration, 1 for anything else.
//!
//! The code is decided once, where a library error becomes an [`Error`]; the context added
//! on the way out ([`Context`]) keeps it.

use std::fmt;

use hotkeys::blacklist::BlacklistError;
use hotkeys::cli::{Failure, exit};
use hotkeys::config::ConfigError;
use hotkeys::mysql::MysqlError;
use hotkeys::redis::{CacheError, connection_failed};
use hotkeys::zk::ZkError;
use hotkeys::zk::subscribe::SubscribeError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed command: its message with the chain of causes, and its exit code.
#[derive(Debug)]
pub struct Error {
    code: i32,
    error: anyhow::Error,
}

impl Error {
    /// A failure of hotctl's own (exit 1).
    pub fn msg(message: impl fmt::Display + fmt::Debug + Send + Sync + 'static) -> Error {
        Error {
            code: exit::FAILED,
            error: anyhow::Error::msg(message),
        }
    }

    fn new(code: i32, error: impl Into<anyhow::Error>) -> Error {
        Error {
            code,
            error: error.into(),
        }
    }
}

/// `{:#}` shows the causes too, as `context: cause: cause`.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "{:#}", self.error)
        } else {
            write!(f, "{}", self.error)
        }
    }
}

impl Failure for Error {
    fn exit_code(&self) -> i32 {
        self.code
    }
}

impl From<MysqlError> for Error {
    fn from(e: MysqlError) -> Error {
        let code = match e {
            _ if e.is_unreachable() => exit::UNREACHABLE,
            // A refused login or unknown database is the configuration's to fix.
            MysqlError::BadUrl(_) | MysqlError::BadQuery(_) | MysqlError::Rejected { .. } => {
                exit::USAGE
            }
            _ => exit::FAILED,
        };
        Error::new(code, e)
    }
}

impl From<ZkError> for Error {
    fn from(e: ZkError) -> Error {
        Error::new(zk_code(&e), e)
    }
}

fn zk_code(e: &ZkError) -> i32 {
    match e {
        ZkError::Unreachable { .. } | ZkError::Timeout => exit::UNREACHABLE,
        _ => exit::FAILED,
    }
}

impl From<SubscribeError> for Error {
    fn from(e: SubscribeError) -> Error {
        let code = match &e {
            SubscribeError::ZooKeeper(z) => zk_code(z),
            SubscribeError::UnknownCounter { .. } => exit::FAILED,
        };
        Error::new(code, e)
    }
}

impl From<CacheError> for Error {
    fn from(e: CacheError) -> Error {
        let code = match e {
            _ if e.is_unreachable() => exit::UNREACHABLE,
            _ if e.is_refused_login() => exit::USAGE,
            CacheError::Config(_) | CacheError::Ring(_) => exit::USAGE,
            _ => exit::FAILED,
        };
        Error::new(code, e)
    }
}

impl From<BlacklistError> for Error {
    fn from(e: BlacklistError) -> Error {
        let code = match &e {
            BlacklistError::Redis(r) if connection_failed(r) => exit::UNREACHABLE,
            _ => exit::FAILED,
        };
        Error::new(code, e)
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::new(exit::USAGE, e)
    }
}

/// What has no code of its own fails the command (exit 1).
macro_rules! failed_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Error {
                Error::new(exit::FAILED, e)
            }
        }
    )*};
}

failed_from!(
    anyhow::Error,
    std::io::Error,
    std::net::AddrParseError,
    serde_json::Error,
    tokio::task::JoinError,
    rdkafka::error::KafkaError
);

/// Context on the way out, like anyhow's, that keeps the exit code of the cause.
pub trait Context<T>: Sized {
    fn context<C>(self, context: C) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
    {
        self.with_context(|| context)
    }

    fn with_context<C, F>(self, context: F) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C;
}

impl<T, E: Into<Error>> Context<T> for Result<T, E> {
    fn with_context<C, F>(self, context: F) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C,
    {
        self.map_err(|e| {
            let e = e.into();
            Error::new(e.code, e.error.context(context()))
        })
    }
}

impl<T> Context<T> for Option<T> {
    fn with_context<C, F>(self, context: F) -> Result<T>
    where
        C: fmt::Display + Send + Sync + 'static,
        F: FnOnce() -> C,
    {
        self.ok_or_else(|| Error::new(exit::FAILED, anyhow::Error::msg(context().to_string())))
    }
}

/// Ends the command with a failure of hotctl's own (exit 1), like anyhow's `bail!`.
macro_rules! bail {
    ($($message:tt)*) => {
        return Err($crate::error::Error::msg(format!($($message)*)))
    };
}

pub(crate) use bail;
