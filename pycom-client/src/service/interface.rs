//! What a service offers: interfaces, their methods and documentation, and
//! the request and reply a handler sees.

use crate::binary::{Attachment, Binary};
use crate::proto::{type_name, Code, Fault};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A method handler: reads the request, returns a reply or a fault.
pub type Handler = Arc<dyn Fn(&mut Request) -> Result<Reply, Fault> + Send + Sync>;

/// A call as a handler sees it.
#[derive(Debug)]
pub struct Request {
    /// The interface called.
    pub interface: String,
    /// The method called.
    pub method: String,
    /// Arguments, any JSON (null when absent).
    pub args: Value,
    /// Binary attachments sent with the call.
    pub attachments: Vec<Attachment>,
    /// Extensions by dotted name.
    pub extensions: Map<String, Value>,
    /// Per-client state. Starts empty; storing anything creates a session
    /// whose id goes back to the client.
    pub session: Map<String, Value>,
}

impl Request {
    /// The caller's token from `extensions["org.pycom.auth"]`, if sent.
    pub fn token(&self) -> Option<&str> {
        self.extensions.get("org.pycom.auth")?.get("token")?.as_str()
    }

    /// All args decoded as `T`; a mismatch is code 4 naming the problem.
    pub fn args_as<T: DeserializeOwned>(&self) -> Result<T, Fault> {
        T::deserialize(&self.args)
            .map_err(|e| Fault::bad_request(format!("{}: args do not fit: {e}", self.method)))
    }

    /// A required field of the args object.
    pub fn arg<T: DeserializeOwned>(&self, name: &str) -> Result<T, Fault> {
        self.opt_arg(name)?
            .ok_or_else(|| Fault::bad_request(format!("{}: field '{name}' is required", self.method)))
    }

    /// An optional field of the args object (null counts as absent).
    pub fn opt_arg<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Fault> {
        let field = match &self.args {
            Value::Object(map) => map.get(name),
            Value::Null => None,
            other => {
                return Err(Fault::bad_request(format!(
                    "{}: args must be an object, not {}",
                    self.method,
                    type_name(other)
                )))
            }
        };
        match field {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| Fault::bad_request(format!("{}: field '{name}': {e}", self.method))),
        }
    }
}

/// A handler's result: a JSON value and any attachments.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The result.
    pub value: Value,
    /// Attachments sent back after the result.
    pub attachments: Vec<Binary>,
}

impl Reply {
    /// A reply with no attachments.
    pub fn new(value: Value) -> Reply {
        Reply {
            value,
            attachments: Vec::new(),
        }
    }

    /// Any serializable value as the result.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Reply, Fault> {
        serde_json::to_value(value)
            .map(Reply::new)
            .map_err(|e| Fault::new(Code::Unknown, format!("the result could not be encoded: {e}")))
    }

    /// Add an attachment.
    pub fn attach(mut self, binary: Binary) -> Reply {
        self.attachments.push(binary);
        self
    }
}

impl From<Value> for Reply {
    fn from(value: Value) -> Reply {
        Reply::new(value)
    }
}

/// One method: its handler and what `introspect` says about it.
#[derive(Clone)]
pub struct Method {
    pub(crate) name: String,
    pub(crate) handler: Handler,
    doc: String,
    required: Vec<String>,
    optional: Vec<String>,
    results: Vec<String>,
}

impl Method {
    /// A method named `name` run by `handler`.
    pub fn new(
        name: &str,
        handler: impl Fn(&mut Request) -> Result<Reply, Fault> + Send + Sync + 'static,
    ) -> Method {
        Method {
            name: name.to_string(),
            handler: Arc::new(handler),
            doc: String::new(),
            required: Vec::new(),
            optional: Vec::new(),
            results: Vec::new(),
        }
    }

    /// The docstring `introspect` shows.
    pub fn doc(mut self, doc: &str) -> Method {
        self.doc = doc.to_string();
        self
    }

    /// Names of required arguments (for introspection).
    pub fn required(mut self, names: &[&str]) -> Method {
        self.required = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Names of optional arguments (for introspection).
    pub fn optional(mut self, names: &[&str]) -> Method {
        self.optional = names.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Keys of an object result that PyCOM's proxy turns into a tuple.
    pub fn results(mut self, names: &[&str]) -> Method {
        self.results = names.iter().map(|s| s.to_string()).collect();
        self
    }

    fn describe(&self) -> Value {
        describe_method(&self.required, &self.optional, &self.results, &self.doc)
    }
}

/// One method as PyCOM 0.4's `introspect` describes it.
pub fn describe_method<S: AsRef<str>>(required: &[S], optional: &[S], results: &[S], doc: &str) -> Value {
    let names = |v: &[S]| v.iter().map(|s| s.as_ref().to_string()).collect::<Vec<_>>();
    json!({
        "required_arguments": names(required),
        "optional_arguments": names(optional),
        "results": names(results),
        "docstring": docstring(doc),
    })
}

/// A doc comment as a docstring: each line trimmed, the ends too.
fn docstring(doc: &str) -> String {
    doc.lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// PyCOM 0.4's `introspect` result: the interface, its docstring and its
/// methods (each from [`describe_method`]), with `introspect` itself listed
/// as PyCOM declares it.
pub fn introspection(name: &str, doc: &str, mut methods: Map<String, Value>) -> Value {
    methods.entry("introspect").or_insert_with(|| {
        json!({"required_arguments": [], "optional_arguments": [],
               "results": ["name", "methods", "docstring"],
               "docstring": "Provides introspection information for a service."})
    });
    json!({"name": name, "docstring": docstring(doc), "methods": methods})
}

/// [`introspection`] of an interface declared with [`interface!`](crate::interface).
pub fn introspection_of(name: &str, doc: &str, methods: &[crate::proxy::MethodSpec]) -> Value {
    let methods = methods
        .iter()
        .map(|m| {
            let describe = describe_method(m.required, m.optional, m.results, m.doc);
            (m.name.to_string(), describe)
        })
        .collect();
    introspection(name, doc, methods)
}

/// A named interface: a set of methods.
#[derive(Clone)]
pub struct Interface {
    name: String,
    doc: String,
    pub(crate) methods: BTreeMap<String, Method>,
}

impl Interface {
    /// An interface with no methods yet.
    pub fn new(name: &str) -> Interface {
        Interface {
            name: name.to_string(),
            doc: String::new(),
            methods: BTreeMap::new(),
        }
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The docstring `introspect` shows.
    pub fn doc(mut self, doc: &str) -> Interface {
        self.doc = doc.to_string();
        self
    }

    /// Add a method (replacing one of the same name).
    pub fn method(mut self, method: Method) -> Interface {
        self.methods.insert(method.name.clone(), method);
        self
    }

    /// Shorthand: a method with a handler and no documentation.
    pub fn handle(
        self,
        name: &str,
        handler: impl Fn(&mut Request) -> Result<Reply, Fault> + Send + Sync + 'static,
    ) -> Interface {
        self.method(Method::new(name, handler))
    }

    /// PyCOM 0.4's `introspect` result for this interface.
    pub fn introspect(&self) -> Value {
        let methods = self
            .methods
            .iter()
            .map(|(n, m)| (n.clone(), m.describe()))
            .collect();
        introspection(&self.name, &self.doc, methods)
    }
}
