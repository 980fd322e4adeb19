//! What a service offers: interfaces, their methods and documentation, and
//! the request and reply a handler sees.

use super::access::Auth;
use crate::auth::Caller;
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
    /// Who made the call, for a guarded method (see [`Auth`]).
    pub(crate) caller: Option<Caller>,
}

impl Request {
    /// A request as a handler would see it, for calling handlers in tests.
    pub fn new(interface: &str, method: &str, args: Value) -> Request {
        Request {
            interface: interface.to_string(),
            method: method.to_string(),
            args,
            attachments: Vec::new(),
            extensions: Map::new(),
            session: Map::new(),
            caller: None,
        }
    }

    /// The caller's token from `extensions["org.pycom.auth"]` (a bare
    /// string, or PyCOM's older `{"token": "..."}`), if sent. Not checked:
    /// a guarded method's [`caller`](Request::caller) is.
    pub fn token(&self) -> Option<&str> {
        crate::auth::token_in(&self.extensions).ok().flatten()
    }

    /// Who made the call: its name and roles, as the service's authority
    /// (pycomd, or its own password file) vouched for its token. `None`
    /// for a method not guarded by an [`Auth`].
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }

    /// Set who made the call, for calling handlers in tests.
    pub fn with_caller(mut self, caller: Caller) -> Request {
        self.caller = Some(caller);
        self
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
    incoming: Option<String>,
    outgoing: Option<String>,
    pub(crate) auth: Option<Auth>,
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
            incoming: None,
            outgoing: None,
            auth: None,
        }
    }

    /// Who may call this method, overriding its interface's rule (see
    /// [`Auth`]): e.g. `.auth(Auth::roles(["billing"]))`.
    pub fn auth(mut self, auth: Auth) -> Method {
        self.auth = Some(auth);
        self
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

    /// The names under which the method takes (`incoming`) and returns
    /// (`outgoing`) an attachment, `None` when it does not: what PyCOM 0.6's
    /// `introspect` shows as `"attachments"`, and what its proxy client reads.
    ///
    /// This only describes the method; the handler still reads
    /// [`Request::attachments`] and adds its own with [`Reply::attach`].
    /// PyCOM 0.6 sends and reads at most one attachment per message. Its
    /// proxy puts a reply's attachment into the (object) result under
    /// `outgoing`, so list that name in [`results`](Method::results) too to
    /// get it in the proxy's tuple, as PyCOM 0.6's own services do.
    ///
    /// ```
    /// use pycom_client::service::{Method, Reply};
    /// use pycom_client::Binary;
    /// use serde_json::json;
    ///
    /// let download = Method::new("download", |req| {
    ///     let name: String = req.arg("name")?;
    ///     Ok(Reply::new(json!({ "name": name })).attach(Binary::from_bytes("...")))
    /// })
    /// .required(&["name"])
    /// .results(&["name", "blob"])
    /// .attachments(None, Some("blob"));
    /// ```
    pub fn attachments(mut self, incoming: Option<&str>, outgoing: Option<&str>) -> Method {
        self.incoming = incoming.map(str::to_string);
        self.outgoing = outgoing.map(str::to_string);
        self
    }

    fn describe(&self) -> Value {
        let attachments = (self.incoming.as_deref(), self.outgoing.as_deref());
        describe_method(
            &self.required,
            &self.optional,
            &self.results,
            attachments,
            &self.doc,
        )
    }
}

/// One method as PyCOM 0.6's `introspect` describes it (a superset of 0.4's):
/// its arguments, the result keys PyCOM's proxy turns into a tuple, its
/// docstring, and `attachments`: the names under which it takes and returns
/// an attachment, `(incoming, outgoing)`, `None` (null) when it does not.
pub fn describe_method<S: AsRef<str>>(
    required: &[S],
    optional: &[S],
    results: &[S],
    attachments: (Option<&str>, Option<&str>),
    doc: &str,
) -> Value {
    let names = |v: &[S]| v.iter().map(|s| s.as_ref().to_string()).collect::<Vec<_>>();
    let (incoming, outgoing) = attachments;
    json!({
        "required_arguments": names(required),
        "optional_arguments": names(optional),
        "results": names(results),
        "docstring": docstring(doc),
        "attachments": {"incoming": incoming, "outgoing": outgoing},
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

/// PyCOM 0.6's `introspect` result (a superset of 0.4's, which old proxies
/// read unchanged): the interface's `name`, `docstring`, `methods` (each
/// from [`describe_method`]) and `data`, its extra description (`{}` when
/// none), with `introspect` itself listed as PyCOM 0.6 declares it: four
/// results, which PyCOM's proxy turns into a tuple.
pub fn introspection(
    name: &str,
    doc: &str,
    data: &Map<String, Value>,
    mut methods: Map<String, Value>,
) -> Value {
    methods.entry("introspect").or_insert_with(|| {
        describe_method(
            &[] as &[&str],
            &[],
            &["name", "methods", "docstring", "data"],
            (None, None),
            "Provides introspection information for a service.",
        )
    });
    json!({"name": name, "docstring": docstring(doc), "methods": methods, "data": data})
}

/// [`introspection`] of an interface declared with [`interface!`](crate::interface):
/// no `data`, and no method takes or returns an attachment.
pub fn introspection_of(name: &str, doc: &str, methods: &[crate::proxy::MethodSpec]) -> Value {
    let methods = methods
        .iter()
        .map(|m| {
            let describe = describe_method(m.required, m.optional, m.results, (None, None), m.doc);
            (m.name.to_string(), describe)
        })
        .collect();
    introspection(name, doc, &Map::new(), methods)
}

/// A named interface: a set of methods.
#[derive(Clone)]
pub struct Interface {
    name: String,
    doc: String,
    data: Map<String, Value>,
    pub(crate) methods: BTreeMap<String, Method>,
    pub(crate) auth: Option<Auth>,
}

impl Interface {
    /// An interface with no methods yet.
    pub fn new(name: &str) -> Interface {
        Interface {
            name: name.to_string(),
            doc: String::new(),
            data: Map::new(),
            methods: BTreeMap::new(),
            auth: None,
        }
    }

    /// Who may call this interface's methods (and its `introspect`), unless
    /// a method says otherwise (see [`Auth`]): e.g. `.auth(Auth::required())`.
    pub fn auth(mut self, auth: Auth) -> Interface {
        self.auth = Some(auth);
        self
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

    /// The interface's extra description, which `introspect` shows as
    /// `data` (PyCOM 0.6's `introspection_data`; `{}` when never set), e.g.
    /// `json!({"com.example.foo.version": 2})`.
    ///
    /// # Panics
    /// When `data` is not a JSON object: PyCOM 0.6 requires a dict there.
    pub fn data(mut self, data: Value) -> Interface {
        match data {
            Value::Object(map) => self.data = map,
            other => panic!(
                "Interface::data of {}: must be a JSON object, not {}",
                self.name,
                type_name(&other)
            ),
        }
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

    /// PyCOM 0.6's `introspect` result for this interface (see [`introspection`]).
    pub fn introspect(&self) -> Value {
        let methods = self
            .methods
            .iter()
            .map(|(n, m)| (n.clone(), m.describe()))
            .collect();
        introspection(&self.name, &self.doc, &self.data, methods)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of PyCOM 0.6's `pycom.Service` docstring, field for field.
    #[test]
    fn introspect_matches_pycom_0_6() {
        let iface = Interface::new("com.example.interface.foo")
            .doc("My Demo Service")
            .data(json!({"com.example.interface.foo.x": null}))
            .method(
                Method::new("method_name", |_| Ok(Value::Null.into()))
                    .doc("My Demo Method")
                    .required(&["arg1", "arg2"])
                    .optional(&["arg3"])
                    .results(&["res1", "res2"]),
            );
        let no_attachments = json!({"incoming": null, "outgoing": null});
        assert_eq!(
            iface.introspect(),
            json!({
                "name": "com.example.interface.foo",
                "methods": {
                    "introspect": {
                        "required_arguments": [],
                        "optional_arguments": [],
                        "results": ["name", "methods", "docstring", "data"],
                        "docstring": "Provides introspection information for a service.",
                        "attachments": no_attachments,
                    },
                    "method_name": {
                        "required_arguments": ["arg1", "arg2"],
                        "optional_arguments": ["arg3"],
                        "results": ["res1", "res2"],
                        "docstring": "My Demo Method",
                        "attachments": no_attachments,
                    },
                },
                "docstring": "My Demo Service",
                "data": {"com.example.interface.foo.x": null},
            })
        );
    }

    #[test]
    fn attachment_names_and_default_data() {
        let iface = Interface::new("t")
            .method(Method::new("up", |_| Ok(Value::Null.into())).attachments(Some("blob"), None))
            .method(Method::new("down", |_| Ok(Value::Null.into())).attachments(None, Some("blob")));
        let intro = iface.introspect();
        assert_eq!(intro["data"], json!({}));
        assert_eq!(
            intro["methods"]["up"]["attachments"],
            json!({"incoming": "blob", "outgoing": null})
        );
        assert_eq!(
            intro["methods"]["down"]["attachments"],
            json!({"incoming": null, "outgoing": "blob"})
        );
    }

    #[test]
    fn declared_interfaces_carry_the_0_6_fields() {
        use crate::nameserver::api;
        let intro = introspection_of(api::NAME, api::DOC, api::METHODS);
        assert_eq!(intro["name"], api::NAME);
        assert_eq!(intro["data"], json!({}));
        let methods = intro["methods"].as_object().unwrap();
        assert_eq!(methods.len(), api::METHODS.len() + 1);
        for (name, method) in methods {
            assert_eq!(
                method["attachments"],
                json!({"incoming": null, "outgoing": null}),
                "{name}"
            );
        }
        assert_eq!(
            methods["locate"]["results"],
            json!(["address", "service", "interfaces"])
        );
    }

    #[test]
    #[should_panic(expected = "must be a JSON object")]
    fn data_must_be_an_object() {
        let _ = Interface::new("t").data(json!([1]));
    }
}
