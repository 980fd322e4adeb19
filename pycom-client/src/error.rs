//! One error type for everything a call can run into.

use crate::proto::{Code, Fault, ResponseError};

/// What went wrong with a call: the remote side's answer (one variant per
/// result code, each with the peer's message), or the way there.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Code 2: the interface is known, the method is not.
    #[error("{0}")]
    MethodNotFound(String),
    /// Code 3: nothing live provides what was asked.
    #[error("{0}")]
    ServiceNotFound(String),
    /// Code 4: the request was wrong (a field, a size, a pattern).
    #[error("{0}")]
    BadRequest(String),
    /// Code 5: not allowed (no token, an unknown or expired one, no grant,
    /// or not the owner). Shown as `access denied: ` and the peer's message
    /// ("access denied: svc-billing may not register /com/other/x").
    #[error("{}", access_denied(.0))]
    AccessDenied(String),
    /// Code 6: the session is unknown or expired; the next call starts a new one.
    #[error("{0}")]
    SessionExpired(String),
    /// Code 7: temporarily unable; a retry may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// Code 1, or a code this crate does not know: the remote side failed.
    #[error("{0}")]
    Remote(String),
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
    /// pycomd's pub-sub forwarder did not put a publisher's or a
    /// subscriber's path in place within the timeout.
    #[error("the pub-sub forwarder at {endpoint} did not answer within {timeout_ms} ms ({what}): is pycomd running, with pub-sub?")]
    NotReady {
        /// The forwarder endpoint (XSUB for publishers, XPUB for subscribers).
        endpoint: String,
        /// How long it was waited for.
        timeout_ms: u64,
        /// What was waited for.
        what: String,
    },
    /// A subscriber missed publications (only with
    /// [`GapPolicy::Error`](crate::pubsub::GapPolicy::Error)); the
    /// message after the gap comes next.
    #[error("{missed} message(s) missed on topic '{topic}' from publisher {src}")]
    Gap {
        /// The topic of the missed messages.
        topic: String,
        /// The publisher instance they came from.
        src: String,
        /// How many were missed.
        missed: u64,
    },
    /// ZeroMQ itself failed.
    #[error("ZeroMQ error talking to {endpoint}: {source}")]
    Transport {
        /// The peer of the failing socket.
        endpoint: String,
        /// What ZeroMQ said.
        source: zmq::Error,
    },
}

fn access_denied(message: &str) -> String {
    const PREFIX: &str = "access denied";
    // `get`: the message comes from the network, and may cut a character.
    if message
        .get(..PREFIX.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(PREFIX))
    {
        message.to_string()
    } else {
        format!("{PREFIX}: {message}")
    }
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
        Some(match self {
            Error::MethodNotFound(_) => Code::MethodNotFound,
            Error::ServiceNotFound(_) => Code::ServiceNotFound,
            Error::BadRequest(_) => Code::BadRequest,
            Error::AccessDenied(_) => Code::AccessDenied,
            Error::SessionExpired(_) => Code::SessionExpired,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Remote(_) => Code::Unknown,
            _ => return None,
        })
    }

    /// True when the peer could not be reached or did not answer in time.
    ///
    /// A wait cut short by a signal (`EINTR`: Ctrl-C) is not: the caller
    /// is being asked to stop, so the call is not retried elsewhere.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::Transport { source, .. } => *source != zmq::Error::EINTR,
            _ => false,
        }
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

impl From<Fault> for Error {
    fn from(fault: Fault) -> Error {
        let message = fault.message;
        match fault.code {
            Code::MethodNotFound => Error::MethodNotFound(message),
            Code::ServiceNotFound => Error::ServiceNotFound(message),
            Code::BadRequest => Error::BadRequest(message),
            Code::AccessDenied => Error::AccessDenied(message),
            Code::SessionExpired => Error::SessionExpired(message),
            Code::Unavailable => Error::Unavailable(message),
            Code::Unknown | Code::Ok => Error::Remote(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_variant_and_back() {
        for code in [
            Code::Unknown,
            Code::MethodNotFound,
            Code::ServiceNotFound,
            Code::BadRequest,
            Code::AccessDenied,
            Code::SessionExpired,
            Code::Unavailable,
        ] {
            let err = Error::from(Fault::new(code, "why"));
            assert_eq!(err.code(), Some(code));
            let shown = if code == Code::AccessDenied {
                "access denied: why"
            } else {
                "why"
            };
            assert_eq!(err.to_string(), shown);
        }
        let denied = Error::AccessDenied("svc-billing may not register /com/other/x".into());
        assert_eq!(
            denied.to_string(),
            "access denied: svc-billing may not register /com/other/x"
        );
        assert_eq!(
            Error::AccessDenied("Access denied: said twice?".into()).to_string(),
            "Access denied: said twice?"
        );
        assert!(matches!(Error::from(Fault::not_found("x")), Error::ServiceNotFound(m) if m == "x"));
        assert_eq!(Error::Data("d".into()).code(), None);
    }

    #[test]
    fn a_wait_cut_by_a_signal_is_not_retried() {
        let transport = |source| Error::Transport {
            endpoint: "tcp://127.0.0.1:1".into(),
            source,
        };
        assert!(transport(zmq::Error::ETERM).is_unreachable());
        assert!(!transport(zmq::Error::EINTR).is_unreachable());
    }
}
