//! Declare an interface once; get a typed client and a typed server side.
//!
//! [`interface!`](crate::interface) turns a list of method signatures into a
//! module with:
//! - `NAME`: the interface name; `DOC` its description; `METHODS` each
//!   method's [`MethodSpec`] (what `introspect` says of it);
//! - `Client<I>`: one Rust method per remote method, over any [`Invoker`]
//!   (a [`Component`](crate::Component), a [`Connection`], the nameserver
//!   handle from [`Context::nameserver`](crate::Context::nameserver));
//! - `Handler`: a trait to implement on the server side, and
//!   `interface(handler)`, which makes a [`service::Interface`](crate::service::Interface)
//!   that checks and decodes arguments and answers `introspect`.
//!
//! Arguments before `;` are required; those after it are optional
//! (`Option<T>` on both sides, left out of the call when `None`).
//! `=> [a, b]` names the result keys PyCOM's proxy turns into a tuple.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct Sum { pub total: i64 }
//!
//! pycom_client::interface! {
//!     /// A calculator.
//!     pub mod calc = "com.example.calc" {
//!         /// Add two numbers, and a third if given.
//!         fn add(a: i64, b: i64; c: i64) -> Sum => [total];
//!     }
//! }
//!
//! struct Calc;
//! impl calc::Handler for Calc {
//!     fn add(&self, _req: &mut pycom_client::service::Request, a: i64, b: i64, c: Option<i64>)
//!         -> Result<Sum, pycom_client::Fault> {
//!         Ok(Sum { total: a + b + c.unwrap_or(0) })
//!     }
//! }
//!
//! fn main() -> pycom_client::Result<()> {
//!     // Serve it (without a nameserver here) and call it through the typed client.
//!     let ctx = pycom_client::Context::new("tcp://127.0.0.1:1")?;
//!     let running = pycom_client::service::Service::builder("/com/example/calc")
//!         .context(ctx.clone())
//!         .without_registration()
//!         .interface(calc::interface(std::sync::Arc::new(Calc)))
//!         .start()?;
//!     let mut client = calc::Client(ctx.connect(running.endpoint(), calc::NAME)?);
//!     assert_eq!(client.add(1, 2, Some(3))?.total, 6);
//!     Ok(())
//! }
//! ```

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::proto::{Request, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// What the declaration says of one method: its arguments, the result keys
/// PyCOM's proxy reads, and its documentation. `introspect` is made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSpec {
    /// The method's name.
    pub name: &'static str,
    /// Names of required arguments.
    pub required: &'static [&'static str],
    /// Names of optional arguments.
    pub optional: &'static [&'static str],
    /// Keys of an object result that PyCOM's proxy turns into a tuple.
    pub results: &'static [&'static str],
    /// The doc comment (lines joined; trimmed where shown).
    pub doc: &'static str,
}

/// Something that can call `interface.method(args)` and return the result.
pub trait Invoker {
    /// Call `interface.method(args)` and return its result or error.
    fn invoke_value(&mut self, interface: &str, method: &str, args: Value) -> Result<Value>;

    /// Call `interface.method(args)` and return the whole response (the
    /// result or fault, and the extensions). Invokers that only know the
    /// result answer with no extensions.
    fn invoke_response(&mut self, interface: &str, method: &str, args: Value) -> Result<Response> {
        let result = self.invoke_value(interface, method, args)?;
        Ok(Response {
            result: Ok(result),
            session_id: None,
            extensions: Default::default(),
        })
    }
}

impl Invoker for Connection {
    fn invoke_value(&mut self, interface: &str, method: &str, args: Value) -> Result<Value> {
        self.invoke(interface, method, args)
    }

    fn invoke_response(&mut self, interface: &str, method: &str, args: Value) -> Result<Response> {
        Ok(self.call(&Request::new(interface, method, args), &[])?.response)
    }
}

impl<T: Invoker + ?Sized> Invoker for &mut T {
    fn invoke_value(&mut self, interface: &str, method: &str, args: Value) -> Result<Value> {
        (**self).invoke_value(interface, method, args)
    }

    fn invoke_response(&mut self, interface: &str, method: &str, args: Value) -> Result<Response> {
        (**self).invoke_response(interface, method, args)
    }
}

#[doc(hidden)]
pub fn to_value<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Data(format!("cannot encode {what}: {e}")))
}

#[doc(hidden)]
pub fn from_value<T: DeserializeOwned>(method: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::Data(format!("unexpected result from {method}: {e}")))
}

/// Declare an interface: see the [module docs](crate::proxy).
#[macro_export]
macro_rules! interface {
    (
        $(#[doc = $idoc:literal])*
        $vis:vis mod $module:ident = $iface:literal {
            $(
                $(#[doc = $mdoc:literal])*
                fn $method:ident ( $($req:ident : $rty:ty),* $(; $($opt:ident : $oty:ty),* )? ) -> $ret:ty
                    $(=> [$($res:ident),*])? ;
            )*
        }
    ) => {
        $(#[doc = $idoc])*
        #[allow(clippy::too_many_arguments)]
        $vis mod $module {
            #[allow(unused_imports)]
            use super::*;

            /// The interface name.
            pub const NAME: &str = $iface;

            /// The interface's doc comment.
            pub const DOC: &str = concat!($($idoc, "\n"),*);

            /// Every method as declared: the one source of what the
            /// interface's `introspect` says.
            pub const METHODS: &[$crate::proxy::MethodSpec] = &[
                $(
                    $crate::proxy::MethodSpec {
                        name: stringify!($method),
                        required: &[$(stringify!($req)),*],
                        optional: &[$($(stringify!($opt)),*)?],
                        results: &[$($(stringify!($res)),*)?],
                        doc: concat!($($mdoc, "\n"),*),
                    },
                )*
            ];

            /// Typed calls to the interface.
            pub struct Client<I: $crate::proxy::Invoker>(pub I);

            impl<I: $crate::proxy::Invoker> Client<I> {
                $(
                    $(#[doc = $mdoc])*
                    pub fn $method(&mut self, $($req: $rty,)* $($($opt: Option<$oty>,)*)?) -> $crate::Result<$ret> {
                        #[allow(unused_mut)]
                        let mut args = $crate::serde_json::Map::new();
                        $( args.insert(stringify!($req).into(), $crate::proxy::to_value(stringify!($req), &$req)?); )*
                        $($(
                            if let Some(value) = &$opt {
                                args.insert(stringify!($opt).into(), $crate::proxy::to_value(stringify!($opt), value)?);
                            }
                        )*)?
                        let value = self.0.invoke_value(NAME, stringify!($method), $crate::serde_json::Value::Object(args))?;
                        $crate::proxy::from_value(stringify!($method), value)
                    }
                )*
            }

            /// The server side: implement it and serve it with [`interface`].
            pub trait Handler: Send + Sync + 'static {
                $(
                    $(#[doc = $mdoc])*
                    fn $method(&self, request: &mut $crate::service::Request, $($req: $rty,)* $($($opt: Option<$oty>,)*)?)
                        -> ::std::result::Result<$ret, $crate::Fault>;
                )*
            }

            /// An [`Interface`]($crate::service::Interface) dispatching to `handler`.
            pub fn interface<H: Handler>(handler: ::std::sync::Arc<H>) -> $crate::service::Interface {
                #[allow(unused_mut)]
                let mut iface = $crate::service::Interface::new(NAME).doc(DOC.trim());
                $(
                    let h = handler.clone();
                    iface = iface.method(
                        $crate::service::Method::new(stringify!($method), move |request: &mut $crate::service::Request| {
                            $( let $req: $rty = request.arg(stringify!($req))?; )*
                            $($( let $opt: Option<$oty> = request.opt_arg(stringify!($opt))?; )*)?
                            let out = h.$method(request, $($req,)* $($($opt,)*)?)?;
                            $crate::service::Reply::json(&out)
                        })
                        .doc(concat!($($mdoc, "\n"),*).trim())
                        .required(&[$(stringify!($req)),*])
                        .optional(&[$($(stringify!($opt)),*)?])
                        .results(&[$($(stringify!($res)),*)?]),
                    );
                )*
                iface
            }
        }
    };
}
