//! Typed access to a method's `args` object, with errors that name the field.

use pycom_client::proto::{type_name, Fault};
use serde_json::{Map, Value};

/// Longest service name, address, interface name or regex accepted.
pub const MAX_NAME_BYTES: usize = 1024;

pub struct Args<'a> {
    method: &'static str,
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Args<'a> {
    /// `args` must be an object, or null/absent (no fields).
    pub fn new(method: &'static str, args: &'a Value) -> Result<Args<'a>, Fault> {
        match args {
            Value::Null => Ok(Args { method, map: None }),
            Value::Object(map) => Ok(Args {
                method,
                map: Some(map),
            }),
            other => Err(Fault::bad_request(format!(
                "{method}: args must be an object, not {}",
                type_name(other)
            ))),
        }
    }

    /// The field's value; null counts as absent.
    pub fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(field)).filter(|v| !v.is_null())
    }

    pub fn fault(&self, message: impl std::fmt::Display) -> Fault {
        Fault::bad_request(format!("{}: {message}", self.method))
    }

    pub fn opt_str(&self, field: &str) -> Result<Option<&'a str>, Fault> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => {
                self.check_name(field, s)?;
                Ok(Some(s))
            }
            Some(other) => Err(self.fault(format_args!(
                "field '{field}' must be a string, not {}",
                type_name(other)
            ))),
        }
    }

    pub fn str(&self, field: &str) -> Result<&'a str, Fault> {
        self.opt_str(field)?
            .ok_or_else(|| self.fault(format_args!("field '{field}' is required")))
    }

    pub fn opt_bool(&self, field: &str) -> Result<Option<bool>, Fault> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.fault(format_args!(
                "field '{field}' must be a boolean, not {}",
                type_name(other)
            ))),
        }
    }

    pub fn opt_u64(&self, field: &str) -> Result<Option<u64>, Fault> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
                self.fault(format_args!(
                    "field '{field}' must be a whole number of at least 0, not {n}"
                ))
            }),
            Some(other) => Err(self.fault(format_args!(
                "field '{field}' must be a number, not {}",
                type_name(other)
            ))),
        }
    }

    /// Names must be non-empty, bounded and free of control characters
    /// (what [`is_valid_name`] tests, with a message).
    pub fn check_name(&self, field: &str, s: &str) -> Result<(), Fault> {
        if s.is_empty() {
            return Err(self.fault(format_args!("field '{field}' must not be empty")));
        }
        if s.len() > MAX_NAME_BYTES {
            return Err(self.fault(format_args!(
                "field '{field}' is {} bytes long; the limit is {MAX_NAME_BYTES}",
                s.len()
            )));
        }
        if s.chars().any(char::is_control) {
            return Err(self.fault(format_args!(
                "field '{field}' must not contain control characters"
            )));
        }
        Ok(())
    }
}

/// A name every method accepts: non-empty, at most [`MAX_NAME_BYTES`], no
/// control characters.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_BYTES && !s.chars().any(char::is_control)
}
