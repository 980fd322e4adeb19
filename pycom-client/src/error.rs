//! One error type for everything a call can run into.

use crate::proto::{Code, Fault, ResponseError};

/// What went wrong with a call: the remote side's answer, or the way there.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer answered with a non-zero result code.
    #[error("{}", .0.message)]
    Remote(Fault),
    /// The peer answered `FAIL`: it could not understand the request at all.
    #[error("{endpoint} could not understand the request{}", fail_detail(.message))]
    Failed {
        /// Who answered.
        endpoint: String,
        /// What it said (may be empty).
        message: String,
    },
    /// The reply was not valid ZeroJSON.
    #[error("{endpoint} sent a malformed reply: {message}")]
    Malformed {
        /// Who answered.
        endpoint: String,
        /// What is wrong with the reply.
        message: String,
    },
    /// No reply within the timeout.
    #[error("no reply from {endpoint} within {timeout_ms} ms")]
    Timeout {
        /// Who did not answer.
        endpoint: String,
        /// How long the call waited.
        timeout_ms: u64,
    },
    /// The endpoint string is not one ZeroMQ can connect to.
    #[error("invalid endpoint '{endpoint}': {source}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What ZeroMQ said about it.
        source: zmq::Error,
    },
    /// Arguments could not be encoded, or a result did not have the expected shape.
    #[error("{0}")]
    Data(String),
    /// An attachment was too large, or could not be read or spilled.
    #[error("attachment: {0}")]
    Attachment(String),
    /// ZeroMQ itself failed.
    #[error("ZeroMQ error talking to {endpoint}: {source}")]
    Transport {
        /// The peer of the failing socket.
        endpoint: String,
        /// What ZeroMQ said.
        source: zmq::Error,
    },
}

fn fail_detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl Error {
    /// The result code of a remote error, if this is one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Remote(f) => Some(f.code),
            _ => None,
        }
    }

    /// True when the peer could not be reached or did not answer in time.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Transport { .. })
    }

    pub(crate) fn from_response(endpoint: &str, e: ResponseError) -> Error {
        match e {
            ResponseError::Failed(message) => Error::Failed {
                endpoint: endpoint.to_string(),
                message,
            },
            ResponseError::Malformed(message) => Error::Malformed {
                endpoint: endpoint.to_string(),
                message,
            },
        }
    }
}

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
