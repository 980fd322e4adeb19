//! One request through a service: decode, find the method, run it, encode.

use super::access::{Authority, Rule};
use super::interface::{Interface, Request};
use super::panic;
use super::sessions::Sessions;
use crate::binary::Limits;
use crate::proto::{self, Code, DecodeError, Fault};
use std::collections::HashMap;
use std::time::Instant;

/// What every worker shares.
pub struct Shared {
    pub service: String,
    pub interfaces: HashMap<String, Interface>,
    pub sessions: Sessions,
    pub limits: Limits,
    /// Where tokens are checked, when anything is guarded.
    pub access: Option<Authority>,
}

/// Reply frames (after the envelope) for the request frames `parts`.
pub fn handle(shared: &Shared, parts: Vec<zmq::Message>) -> Vec<Vec<u8>> {
    let mut parts = parts.into_iter();
    let command = parts.next();
    let body = parts.next();
    let request = match proto::decode_request(command.as_deref(), body.as_deref()) {
        Ok(request) => request,
        Err(DecodeError::Framing(message)) => return vec![proto::STATUS_FAIL.to_vec(), message.into_bytes()],
        Err(DecodeError::Body(message)) => return fault(&Fault::bad_request(message), None),
    };
    let Some(interface) = shared.interfaces.get(&request.interface) else {
        let f = Fault::not_found(format!(
            "service '{}' does not provide interface '{}'",
            shared.service, request.interface
        ));
        return fault(&f, None);
    };
    let Some(method) = interface.methods.get(&request.method) else {
        if request.method == "introspect" {
            if let Err(f) = admit(shared, interface.auth.as_ref().map(|a| a.rule()), &request) {
                return fault(&f, None);
            }
            return ok(&interface.introspect(), None, Vec::new());
        }
        let f = Fault::new(
            Code::MethodNotFound,
            format!(
                "interface {} has no method '{}'",
                request.interface, request.method
            ),
        );
        return fault(&f, None);
    };
    // Before anything else is read or kept: a refused call costs little,
    // and its handler never runs.
    let rule = method.auth.as_ref().or(interface.auth.as_ref()).map(|a| a.rule());
    let caller = match admit(shared, rule, &request) {
        Ok(caller) => caller,
        Err(f) => return fault(&f, None),
    };
    let attachments = match shared.limits.receive(parts.collect()) {
        Ok(a) => a,
        Err(message) => return fault(&Fault::bad_request(message), None),
    };
    let now = Instant::now();
    let session = match shared.sessions.load(request.session_id.as_deref(), now) {
        Ok(session) => session,
        Err(_) => {
            let f = Fault::new(
                Code::SessionExpired,
                format!(
                    "session '{}' is unknown or expired",
                    request.session_id.as_deref().unwrap_or("")
                ),
            );
            return fault(&f, None);
        }
    };
    let mut call = Request {
        interface: request.interface,
        method: request.method,
        args: request.args,
        attachments,
        extensions: request.extensions,
        session,
        caller,
    };
    let handler = method.handler.clone();
    let outcome = panic::catch(|| handler(&mut call));
    let session_id = shared
        .sessions
        .store(request.session_id.as_deref(), call.session, Instant::now());
    match outcome {
        Ok(Ok(reply)) => {
            if let Err(message) = shared.limits.check_outgoing(&reply.attachments) {
                let f = Fault::new(
                    Code::Unknown,
                    format!("{}.{}: reply {message}", call.interface, call.method),
                );
                return fault(&f, session_id.as_deref());
            }
            let attachments = reply.attachments.iter().map(|b| b.as_bytes().to_vec()).collect();
            ok(&reply.value, session_id.as_deref(), attachments)
        }
        Ok(Err(f)) => fault(&f, session_id.as_deref()),
        Err(report) => {
            tracing::error!(interface = %call.interface, method = %call.method, "handler panicked: {report}");
            let f = Fault::new(
                Code::Unknown,
                format!("{}.{} failed: the handler panicked", call.interface, call.method),
            );
            fault(&f, session_id.as_deref())
        }
    }
}

/// The caller of a call `rule` guards (`None` for an unguarded one), or
/// the fault to answer.
fn admit(
    shared: &Shared,
    rule: Option<&Rule>,
    request: &proto::Request,
) -> Result<Option<crate::auth::Caller>, Fault> {
    let Some(rule) = rule.filter(|r| **r != Rule::Public) else {
        return Ok(None);
    };
    match &shared.access {
        Some(authority) => authority.admit(rule, &request.extensions, &request.interface, &request.method),
        // Not reached: a service with a guarded method has an authority.
        None => Err(Fault::denied(super::access::AUTHENTICATION_REQUIRED)),
    }
}

fn ok(value: &serde_json::Value, session_id: Option<&str>, attachments: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut frames = vec![
        proto::STATUS_OK.to_vec(),
        proto::encode_response(Ok(value), session_id),
    ];
    frames.extend(attachments);
    frames
}

fn fault(f: &Fault, session_id: Option<&str>) -> Vec<Vec<u8>> {
    vec![proto::STATUS_OK.to_vec(), proto::encode_fault(f, session_id)]
}
