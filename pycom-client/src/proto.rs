//! The ZeroJSON wire format: frames to and from [`Request`] and [`Response`].
//!
//! This module is the only place that knows how a call looks on the wire
//! (see `docs/protocol.md`). It does no I/O: it turns byte frames into typed
//! values and back, and names the problem when the bytes are not a valid
//! call. Routing envelopes (ROUTER identities, the empty delimiter) are the
//! socket owner's business and never reach this module.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// The only command a request may carry.
pub const CMD_CALL: &[u8] = b"CALL";
/// Status of a reply whose body is a response object.
pub const STATUS_OK: &[u8] = b"OK";
/// Status of a reply to a request that could not be understood at all.
pub const STATUS_FAIL: &[u8] = b"FAIL";
/// The protocol version this crate speaks.
pub const PROTO_VERSION: &str = "1.0";

/// Result codes. 1 to 6 are PyCOM's own and keep their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// The handler failed in a way it did not classify.
    Unknown = 1,
    /// The interface is known, the method is not.
    MethodNotFound = 2,
    /// Nothing live provides what was asked.
    ServiceNotFound = 3,
    /// Malformed body, missing or mistyped field, too large.
    BadRequest = 4,
    /// Credentials missing or invalid, or not the owner.
    AccessDenied = 5,
    /// The session id is unknown or expired.
    SessionExpired = 6,
    /// Temporarily unable; a retry may succeed.
    Unavailable = 7,
}

impl Code {
    /// The code for a number, or `None` for a number this crate does not know.
    pub fn from_number(n: i64) -> Option<Code> {
        Some(match n {
            0 => Code::Ok,
            1 => Code::Unknown,
            2 => Code::MethodNotFound,
            3 => Code::ServiceNotFound,
            4 => Code::BadRequest,
            5 => Code::AccessDenied,
            6 => Code::SessionExpired,
            7 => Code::Unavailable,
            _ => return None,
        })
    }

    /// The number on the wire.
    pub fn as_number(self) -> i64 {
        self as i64
    }

    /// A short stable name, for logs and CLI output.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Unknown => "UNKNOWN",
            Code::MethodNotFound => "METHOD_NOT_FOUND",
            Code::ServiceNotFound => "SERVICE_NOT_FOUND",
            Code::BadRequest => "BAD_REQUEST",
            Code::AccessDenied => "ACCESS_DENIED",
            Code::SessionExpired => "SESSION_EXPIRED",
            Code::Unavailable => "UNAVAILABLE",
        }
    }
}

/// A non-zero result: the code and the sentence that explains it.
///
/// Handlers return it; [`encode_response`] puts it on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The result code (never [`Code::Ok`]).
    pub code: Code,
    /// What went wrong, as a sentence.
    pub message: String,
}

impl Fault {
    /// A fault with any code.
    pub fn new(code: Code, message: impl Into<String>) -> Fault {
        Fault {
            code,
            message: message.into(),
        }
    }
    /// Code 4: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Fault {
        Fault::new(Code::BadRequest, message)
    }
    /// Code 3: nothing live provides it.
    pub fn not_found(message: impl Into<String>) -> Fault {
        Fault::new(Code::ServiceNotFound, message)
    }
    /// Code 5: not allowed.
    pub fn denied(message: impl Into<String>) -> Fault {
        Fault::new(Code::AccessDenied, message)
    }
    /// Code 7: try again later.
    pub fn unavailable(message: impl Into<String>) -> Fault {
        Fault::new(Code::Unavailable, message)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.name(),
            self.code.as_number(),
            self.message
        )
    }
}

impl std::error::Error for Fault {}

/// A decoded call.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Dotted interface name, e.g. `com.foo.example`.
    pub interface: String,
    /// Method name.
    pub method: String,
    /// The session the client was given, if any.
    pub session_id: Option<String>,
    /// Arguments, any JSON (null when absent).
    pub args: Value,
    /// Extensions by dotted name, e.g. `org.pycom.auth`.
    pub extensions: Map<String, Value>,
}

impl Request {
    /// A call with no session and no extensions.
    pub fn new(interface: impl Into<String>, method: impl Into<String>, args: Value) -> Request {
        Request {
            interface: interface.into(),
            method: method.into(),
            session_id: None,
            args,
            extensions: Map::new(),
        }
    }
}

/// Deepest nesting of arrays and objects accepted in a request body (as
/// serde_json's own limit for parsed values).
pub const MAX_DEPTH: usize = 128;

/// Whether `json` (valid JSON) nests arrays and objects deeper than `max`:
/// a byte scan, so that raw values nobody parses (the args of `stat`, say)
/// are held to the same limit as parsed ones.
pub fn nests_deeper_than(json: &str, max: usize) -> bool {
    // Deeper than `max` takes more than `max` brackets: a short value,
    // every request's arguments, is not scanned.
    if json.len() <= max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Why a request could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a call at all (no frames, unknown command): answered with `FAIL`.
    Framing(String),
    /// A call whose body is wrong: answered with an `OK` status and code 4.
    Body(String),
}

/// Decode `[command, body, attachment...]` (the envelope already removed).
///
/// Attachments are left to the caller: they are every frame after the body.
pub fn decode_request(command: Option<&[u8]>, body: Option<&[u8]>) -> Result<Request, DecodeError> {
    decode_request_body(call_body(command, body)?).map_err(DecodeError::Body)
}

/// The body of a `CALL`; anything else is a framing error.
fn call_body<'a>(command: Option<&[u8]>, body: Option<&'a [u8]>) -> Result<&'a [u8], DecodeError> {
    let command =
        command.ok_or_else(|| DecodeError::Framing("empty message: expected [CALL, body]".into()))?;
    if command != CMD_CALL {
        return Err(DecodeError::Framing(format!(
            "unknown command {}: the only command is CALL",
            printable(command)
        )));
    }
    let body = body.ok_or_else(|| DecodeError::Body("request has no body frame after CALL".into()))?;
    Ok(body)
}

/// A call decoded without copying, for servers' hot paths: names are
/// borrowed from the body (unless they hold escapes), `args` and
/// `extensions` stay raw JSON for the handler to decode as it needs.
#[derive(Debug)]
pub struct CallRef<'a> {
    /// Dotted interface name.
    pub interface: Cow<'a, str>,
    /// Method name.
    pub method: Cow<'a, str>,
    /// The session the client was given, if any.
    pub session_id: Option<Cow<'a, str>>,
    /// Arguments as raw JSON; `None` when absent or null.
    pub args: Option<&'a RawValue>,
    /// Extensions as a raw JSON object; `None` when absent or null.
    pub extensions: Option<&'a RawValue>,
}

/// Decode `[command, body]` into a [`CallRef`], checking what
/// [`decode_request`] checks, with the same error messages.
pub fn decode_call<'a>(command: Option<&[u8]>, body: Option<&'a [u8]>) -> Result<CallRef<'a>, DecodeError> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        #[serde(borrow, default)]
        version: Option<Cow<'a, str>>,
        #[serde(borrow)]
        interface: Cow<'a, str>,
        #[serde(borrow)]
        method: Cow<'a, str>,
        #[serde(borrow, default)]
        session_id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        args: Option<&'a RawValue>,
        #[serde(borrow, default)]
        extensions: Option<&'a RawValue>,
    }
    let body = call_body(command, body)?;
    // UTF-8 checked once for the whole body, not string by string.
    let parsed = std::str::from_utf8(body).map(serde_json::from_str::<Wire>);
    match parsed {
        Ok(Ok(w))
            if !w.interface.is_empty()
                && !w.method.is_empty()
                && w.extensions.is_none_or(|e| e.get().starts_with('{')) =>
        {
            if let Some(v) = &w.version {
                check_version(v).map_err(DecodeError::Body)?;
            }
            for (field, raw) in [("args", w.args), ("extensions", w.extensions)] {
                if raw.is_some_and(|raw| nests_deeper_than(raw.get(), MAX_DEPTH)) {
                    return Err(DecodeError::Body(format!(
                        "field '{field}' nests arrays and objects deeper than {MAX_DEPTH} levels (recursion limit)"
                    )));
                }
            }
            Ok(CallRef {
                interface: w.interface,
                method: w.method,
                session_id: w.session_id,
                args: w.args,
                extensions: w.extensions,
            })
        }
        // The general decoder names the problem.
        _ => match decode_request_body_slowly(body) {
            Err(message) => Err(DecodeError::Body(message)),
            Ok(_) => Err(DecodeError::Body("request body could not be decoded".into())),
        },
    }
}

/// Decode the JSON body of a call.
///
/// Straight into typed fields (no intermediate map: this is every request's
/// hot path); only when that fails is the body walked again as a generic
/// value, to name the field that is wrong.
pub fn decode_request_body(body: &[u8]) -> Result<Request, String> {
    #[derive(serde::Deserialize)]
    struct Wire {
        #[serde(default)]
        version: Option<String>,
        interface: String,
        method: String,
        #[serde(default)]
        session_id: Option<String>,
        #[serde(default)]
        args: Value,
        #[serde(default)]
        extensions: Option<Map<String, Value>>,
    }
    match serde_json::from_slice::<Wire>(body) {
        Ok(w) if !w.interface.is_empty() && !w.method.is_empty() => {
            if let Some(v) = &w.version {
                check_version(v)?;
            }
            Ok(Request {
                interface: w.interface,
                method: w.method,
                session_id: w.session_id,
                args: w.args,
                extensions: w.extensions.unwrap_or_default(),
            })
        }
        _ => decode_request_body_slowly(body),
    }
}

/// The same decoding, field by field, with an error that names the field.
fn decode_request_body_slowly(body: &[u8]) -> Result<Request, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let Value::Object(mut obj) = value else {
        return Err(format!(
            "request body must be a JSON object, not {}",
            type_name(&value)
        ));
    };
    match obj.get("version") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) => check_version(v)?,
        Some(other) => {
            return Err(format!(
                "field 'version' must be a string, not {}",
                type_name(other)
            ))
        }
    }
    let interface = take_string(&mut obj, "interface")?;
    let method = take_string(&mut obj, "method")?;
    let session_id = match obj.remove("session_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(format!(
                "field 'session_id' must be a string or null, not {}",
                type_name(&other)
            ))
        }
    };
    let args = obj.remove("args").unwrap_or(Value::Null);
    let extensions = match obj.remove("extensions") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(format!(
                "field 'extensions' must be an object, not {}",
                type_name(&other)
            ))
        }
    };
    Ok(Request {
        interface,
        method,
        session_id,
        args,
        extensions,
    })
}

fn check_version(v: &str) -> Result<(), String> {
    let major = v.split('.').next().unwrap_or("");
    if major == "1" {
        Ok(())
    } else {
        Err(format!(
            "unsupported protocol version '{v}': this peer speaks 1.x"
        ))
    }
}

fn take_string(obj: &mut Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.remove(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("field '{field}' must not be empty")),
        None | Some(Value::Null) => Err(format!("field '{field}' is required")),
        Some(other) => Err(format!(
            "field '{field}' must be a string, not {}",
            type_name(&other)
        )),
    }
}

/// Encode the JSON body of a call.
pub fn encode_request_body(req: &Request) -> Vec<u8> {
    encode_body(req, &req.extensions)
}

/// Encode the JSON body of a call that carries `token` as the caller's
/// credentials: a bare string in `extensions["org.pycom.auth"]` (PyCOM
/// 0.6's form), unless the request already has that extension of its own.
pub fn encode_request_body_with_token(req: &Request, token: Option<&str>) -> Vec<u8> {
    match token {
        Some(token) if !req.extensions.contains_key(crate::auth::EXTENSION) => {
            let mut extensions = req.extensions.clone();
            extensions.insert(crate::auth::EXTENSION.into(), Value::String(token.into()));
            encode_body(req, &extensions)
        }
        _ => encode_body(req, &req.extensions),
    }
}

fn encode_body(req: &Request, extensions: &Map<String, Value>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        version: &'a str,
        interface: &'a str,
        method: &'a str,
        session_id: Option<&'a str>,
        args: &'a Value,
        #[serde(skip_serializing_if = "Map::is_empty")]
        extensions: &'a Map<String, Value>,
    }
    let body = Body {
        version: PROTO_VERSION,
        interface: &req.interface,
        method: &req.method,
        session_id: req.session_id.as_deref(),
        args: &req.args,
        extensions,
    };
    // Serializing a Value into a Vec cannot fail: keys are strings, no I/O.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A decoded reply body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The result, or the fault with its code.
    pub result: Result<Value, Fault>,
    /// The session the service gave, if any.
    pub session_id: Option<String>,
    /// Extensions the service returned.
    pub extensions: Map<String, Value>,
}

/// Encode the JSON body of a reply (sent after status `OK`). The result
/// may be any serializable value, so servers need not build a [`Value`].
pub fn encode_response<T: Serialize + ?Sized>(
    result: Result<&T, &Fault>,
    session_id: Option<&str>,
) -> Vec<u8> {
    encode_response_with::<T, Value>(result, session_id, None)
}

/// [`encode_response`] with `extensions` (an object keyed by dotted names).
pub fn encode_response_with<T: Serialize + ?Sized, E: Serialize + ?Sized>(
    result: Result<&T, &Fault>,
    session_id: Option<&str>,
    extensions: Option<&E>,
) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a, T: Serialize + ?Sized, E: Serialize + ?Sized> {
        code: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<&'a T>,
        session_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        extensions: Option<&'a E>,
    }
    let body = match result {
        Ok(value) => Body {
            code: 0,
            error: None,
            result: Some(value),
            session_id,
            extensions,
        },
        Err(fault) => Body {
            code: fault.code.as_number(),
            error: Some(&fault.message),
            result: None,
            session_id,
            extensions,
        },
    };
    // Most replies are small: one allocation, no regrowth.
    let mut out = Vec::with_capacity(256);
    // Writing to a Vec cannot fail, and every key is a string.
    let _ = serde_json::to_writer(&mut out, &body);
    out
}

/// Encode the JSON body of an error reply.
pub fn encode_fault(fault: &Fault, session_id: Option<&str>) -> Vec<u8> {
    encode_response::<Value>(Err(fault), session_id)
}

/// Decode `[status, body]` of a reply. A `FAIL` status becomes `Err` with
/// the peer's message; an undecodable body is a protocol error string.
pub fn decode_response(status: &[u8], body: &[u8]) -> Result<Response, ResponseError> {
    if status == STATUS_FAIL {
        return Err(ResponseError::Failed(String::from_utf8_lossy(body).into_owned()));
    }
    if status != STATUS_OK {
        return Err(ResponseError::Malformed(format!(
            "unknown reply status {}",
            printable(status)
        )));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ResponseError::Malformed(format!("reply body is not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(ResponseError::Malformed("reply body is not a JSON object".into()));
    };
    let code = match obj.get("code") {
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .ok_or_else(|| ResponseError::Malformed("reply has no integer 'code'".into()))?;
    let session_id = match obj.remove("session_id") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let extensions = match obj.remove("extensions") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let result = if code == 0 {
        Ok(obj.remove("result").unwrap_or(Value::Null))
    } else {
        let message = match obj.remove("error") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => format!("remote error #{code}"),
        };
        // A code this crate does not know is still an error: report it as UNKNOWN
        // and keep the number in the message.
        let known = Code::from_number(code);
        let message = if known.is_none() {
            format!("{message} (code {code})")
        } else {
            message
        };
        Err(Fault::new(known.unwrap_or(Code::Unknown), message))
    };
    Ok(Response {
        result,
        session_id,
        extensions,
    })
}

/// Why a reply could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// The peer answered `FAIL`: it could not understand the request.
    Failed(String),
    /// The reply itself is not valid ZeroJSON.
    Malformed(String),
}

/// The JSON type of a value, for error messages ("must be a string, not a number").
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Bytes from the network, quoted for an error message and cut short.
pub fn printable(bytes: &[u8]) -> String {
    const MAX: usize = 32;
    let shown = &bytes[..bytes.len().min(MAX)];
    let mut s = format!("{:?}", String::from_utf8_lossy(shown));
    if bytes.len() > MAX {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_a_pycom_0_3_request() {
        let body = br#"{"version": "1.0", "interface": "org.pycom.nameserver", "method": "locate", "session_id": null, "args": {"interface": "a.b"}}"#;
        let req = decode_request(Some(b"CALL"), Some(body)).unwrap();
        assert_eq!(req.interface, "org.pycom.nameserver");
        assert_eq!(req.method, "locate");
        assert_eq!(req.session_id, None);
        assert_eq!(req.args, json!({"interface": "a.b"}));
    }

    #[test]
    fn round_trips_a_request() {
        let mut req = Request::new("com.foo", "bar", json!([1, 2]));
        req.session_id = Some("s1".into());
        req.extensions
            .insert("org.pycom.auth".into(), json!({"token": "t"}));
        let body = encode_request_body(&req);
        assert_eq!(decode_request_body(&body).unwrap(), req);
    }

    #[test]
    fn a_token_travels_as_a_bare_string_unless_the_request_has_its_own() {
        let req = Request::new("com.foo", "bar", json!({"a": 1}));
        let body = encode_request_body_with_token(&req, Some("tok"));
        let decoded = decode_request_body(&body).unwrap();
        assert_eq!(decoded.extensions["org.pycom.auth"], json!("tok"));
        assert_eq!(decoded.args, json!({"a": 1}));
        assert_eq!(
            encode_request_body_with_token(&req, None),
            encode_request_body(&req)
        );
        let v: Value = serde_json::from_slice(&encode_request_body(&req)).unwrap();
        assert!(v.get("extensions").is_none(), "no empty extensions: {v}");
        let mut own = req.clone();
        own.extensions.insert("org.pycom.auth".into(), json!("mine"));
        let decoded = decode_request_body(&encode_request_body_with_token(&own, Some("tok"))).unwrap();
        assert_eq!(decoded.extensions["org.pycom.auth"], json!("mine"));
    }

    #[test]
    fn names_the_problem_with_a_bad_body() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not valid JSON"),
            (b"[1]", "must be a JSON object, not a list"),
            (br#"{"method": "m"}"#, "field 'interface' is required"),
            (
                br#"{"interface": 5, "method": "m"}"#,
                "field 'interface' must be a string, not a number",
            ),
            (
                br#"{"interface": "i", "method": "m", "version": "2.0"}"#,
                "unsupported protocol version '2.0'",
            ),
            (
                br#"{"interface": "i", "method": "m", "session_id": 1}"#,
                "'session_id' must be a string or null",
            ),
            (
                br#"{"interface": "i", "method": "m", "extensions": []}"#,
                "'extensions' must be an object",
            ),
        ];
        for (body, want) in cases {
            let err = decode_request(Some(b"CALL"), Some(body)).unwrap_err();
            let DecodeError::Body(msg) = err else {
                panic!("expected a body error for {body:?}")
            };
            assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        }
    }

    #[test]
    fn raw_args_are_held_to_the_depth_limit() {
        let body = |depth: usize| {
            format!(
                r#"{{"interface":"i","method":"stat","args":{}"a[{{\"]"{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            )
        };
        assert!(decode_call(Some(b"CALL"), Some(body(MAX_DEPTH).as_bytes())).is_ok());
        let err = decode_call(Some(b"CALL"), Some(body(MAX_DEPTH + 1).as_bytes())).unwrap_err();
        assert!(matches!(err, DecodeError::Body(m) if m.contains("deeper than 128")));
        // Brackets inside strings do not count.
        assert!(!nests_deeper_than(r#"["[[[[", "{{{{"]"#, 1));
    }

    #[test]
    fn a_body_that_is_not_utf8_is_named_like_decode_request_names_it() {
        let body = b"{\"interface\": \"i\xff\", \"method\": \"m\"}";
        let fast = decode_call(Some(b"CALL"), Some(body)).unwrap_err();
        let general = decode_request(Some(b"CALL"), Some(body)).unwrap_err();
        assert!(matches!(&fast, DecodeError::Body(_)), "{fast:?}");
        assert_eq!(fast, general);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            "{{\"interface\":\"i\",\"method\":\"m\",\"args\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(
            decode_request(Some(b"CALL"), Some(deep.as_bytes())),
            Err(DecodeError::Body(_))
        ));
    }

    #[test]
    fn decode_call_borrows_and_checks_like_decode_request() {
        let body = br#"{"interface": "org.pycom.nameserver", "method": "locate", "session_id": null, "args": {"interface": "a.b"}}"#;
        let call = decode_call(Some(b"CALL"), Some(body)).unwrap();
        assert!(matches!(call.interface, Cow::Borrowed("org.pycom.nameserver")));
        assert_eq!(call.method, "locate");
        assert_eq!(call.args.map(RawValue::get), Some(r#"{"interface": "a.b"}"#));
        let call = decode_call(
            Some(b"CALL"),
            Some(br#"{"interface": "i\u0066", "method": "m", "args": null}"#),
        )
        .unwrap();
        assert_eq!(call.interface, "if", "escapes are decoded");
        assert!(call.args.is_none(), "null args are absent");
        // The same messages as the general decoder.
        for (body, want) in [
            (
                &br#"{"interface": "i", "method": "m", "extensions": []}"#[..],
                "'extensions' must be an object",
            ),
            (
                br#"{"interface": 1, "method": "m"}"#,
                "'interface' must be a string, not a number",
            ),
            (
                br#"{"interface": "", "method": "m"}"#,
                "'interface' must not be empty",
            ),
            (
                br#"{"interface": "i", "method": "m", "version": "2.1"}"#,
                "unsupported protocol version",
            ),
        ] {
            let Err(DecodeError::Body(msg)) = decode_call(Some(b"CALL"), Some(body)) else {
                panic!("{body:?} should be refused")
            };
            assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        }
        assert!(matches!(
            decode_call(Some(b"NOPE"), Some(b"{}")),
            Err(DecodeError::Framing(_))
        ));
    }

    #[test]
    fn unknown_command_is_a_framing_error() {
        assert!(matches!(
            decode_request(Some(b"PING"), Some(b"{}")),
            Err(DecodeError::Framing(_))
        ));
        assert!(matches!(decode_request(None, None), Err(DecodeError::Framing(_))));
    }

    #[test]
    fn response_round_trip() {
        let ok = encode_response(Ok(&json!({"a": 1})), None);
        let r = decode_response(STATUS_OK, &ok).unwrap();
        assert_eq!(r.result, Ok(json!({"a": 1})));
        let fault = Fault::not_found("nothing provides x");
        let err = encode_fault(&fault, Some("sid"));
        let r = decode_response(STATUS_OK, &err).unwrap();
        assert_eq!(r.result, Err(fault));
        assert_eq!(r.session_id.as_deref(), Some("sid"));
        // PyCOM clients read "code" and "error"/"result" and "session_id".
        let v: Value = serde_json::from_slice(&err).unwrap();
        assert_eq!(
            v,
            json!({"code": 3, "error": "nothing provides x", "session_id": "sid"})
        );
    }

    #[test]
    fn unknown_remote_code_keeps_its_number() {
        let r = decode_response(STATUS_OK, br#"{"code": 42, "error": "odd"}"#).unwrap();
        let fault = r.result.unwrap_err();
        assert_eq!(fault.code, Code::Unknown);
        assert!(fault.message.contains("42"));
    }
}
