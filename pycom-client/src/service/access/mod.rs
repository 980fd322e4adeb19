//! Access control of a hosted service (PROTOCOL.md 7): which interfaces
//! and methods need a caller who logged in, and with which roles; checked
//! on the worker that would run the handler, before it runs.
//!
//! Who a token belongs to is asked of pycomd (`validate` on the service's
//! context's nameservers, each answer kept for a while), or, for a service
//! given [`Auth::password_file`], of the service itself: it then checks
//! its own users file and serves `org.pycom.authenticator` for its clients
//! to log in ([`Component::login`](crate::Component::login)).

mod cache;
mod local;

use super::interface::Interface;
use crate::auth::{self, Caller, Validation};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::proto::Fault;
use cache::TtlCache;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// PyCOM 0.6's answer to a guarded call without a token (code 5).
pub const AUTHENTICATION_REQUIRED: &str = "Authentication required";
/// How long pycomd's answer about a token is trusted.
pub const VALID_FOR: Duration = Duration::from_secs(30);
/// How long a failed check is remembered (an unknown token, pycomd not
/// answering), so that a flood of bad tokens costs pycomd one call per
/// token per second at most.
pub const FAILURE_FOR: Duration = Duration::from_secs(1);
/// Most answers remembered.
pub const MAX_CACHED: usize = 10_000;

/// Who may call an interface or a method: set with
/// [`Interface::auth`](crate::service::Interface::auth) or
/// [`Method::auth`](crate::service::Method::auth) (a method's overrides its
/// interface's).
///
/// ```
/// use pycom_client::service::{Auth, Interface, Method};
/// use serde_json::json;
///
/// let billing = Interface::new("com.example.billing")
///     .auth(Auth::required())                       // anyone logged in, if pycomd's grants allow
///     .handle("balance", |req| Ok(json!({"for": req.caller().map(|c| &c.name)}).into()))
///     .method(Method::new("refund", |_| Ok(json!(true).into())).auth(Auth::roles(["billing"])))
///     .method(Method::new("ping", |_| Ok(json!("pong").into())).auth(Auth::public()));
/// ```
///
/// A guarded call without a token gets code 5 "Authentication required"
/// and its handler does not run; with a token, the handler sees the caller
/// in [`Request::caller`](crate::service::Request::caller). Unguarded
/// methods do not look at tokens (`caller()` is `None` there). `introspect`
/// follows its interface's rule.
///
/// The service asks pycomd (`validate {token, interface, method}` through
/// its context's nameservers) and keeps each answer up to 30 s (a refusal,
/// or pycomd not answering, 1 s), at most 10,000 of them: a token ended at
/// pycomd may go on working here for those 30 s. pycomd not answering is
/// code 7; pycomd with access control off refuses every guarded call (code 5,
/// saying so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    rule: Rule,
    password_file: Option<PathBuf>,
}

/// What a guarded call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Nothing: no token looked at.
    Public,
    /// A valid token, and pycomd's `call` grants not saying no.
    Required,
    /// A valid token whose user holds one of these roles (`admin` holds all).
    Roles(Vec<String>),
}

impl Auth {
    /// Any caller with a valid token, unless pycomd's `call` grants for the
    /// interface say no (`validate`'s `allowed`).
    pub fn required() -> Auth {
        Auth {
            rule: Rule::Required,
            password_file: None,
        }
    }

    /// A caller with a valid token holding one of `roles` (the `admin`
    /// role holds every role). Roles come from pycomd's configuration, so
    /// this cannot be combined with [`Auth::password_file`] in one service.
    pub fn roles<S: Into<String>>(roles: impl IntoIterator<Item = S>) -> Auth {
        Auth {
            rule: Rule::Roles(roles.into_iter().map(Into::into).collect()),
            password_file: None,
        }
    }

    /// Anyone, token or not: for a method of a guarded interface that
    /// stays open.
    pub fn public() -> Auth {
        Auth {
            rule: Rule::Public,
            password_file: None,
        }
    }

    /// Any caller with a valid token from this service itself: the seed's
    /// standalone form (PyCOM's `access.auth(access.PasswordFile(...))`),
    /// for a service whose pycomd does not do access control.
    ///
    /// The service loads the users file (htpasswd: `name:hash`, argon2id or
    /// bcrypt; made with `pycomctl auth passwd USER`) when it starts (a
    /// missing or malformed file fails the start), and serves
    /// `org.pycom.authenticator` on its own endpoint (not registered, so
    /// that `locate org.pycom.authenticator` still means pycomd's):
    /// `authenticate {user, credentials}` gives a random token that lasts 8
    /// hours, kept in memory (at most 10,000, 100 per user: a user's
    /// oldest goes), `validate {token}` and `logout {token}`. After 3
    /// wrong passwords for a user name (known or not), it is answered
    /// "retry in N s" without checking, N doubling from 1 s to 60 s, as
    /// pycomd does ([`crate::auth::Throttle`]). Clients log in with
    /// [`Component::login`](crate::Component::login). Passwords are checked
    /// on the service's workers, never on its receiving thread.
    ///
    /// Users of a password file hold no roles: check
    /// [`Caller::name`](crate::auth::Caller) in the handler where it
    /// matters. All the guarded interfaces and methods of a service check
    /// the same file (naming two is an error at start).
    pub fn password_file(path: impl Into<PathBuf>) -> Auth {
        Auth {
            rule: Rule::Required,
            password_file: Some(path.into()),
        }
    }

    pub(crate) fn rule(&self) -> &Rule {
        &self.rule
    }
}

/// Whether the caller `v` describes may make the call, by `rule`.
pub(crate) fn decide(rule: &Rule, v: &Validation, interface: &str, method: &str) -> Result<(), Fault> {
    let name = &v.caller.name;
    match rule {
        Rule::Public => Ok(()),
        Rule::Required if v.allowed == Some(false) => {
            Err(Fault::denied(format!("{name} may not call {interface}.{method}")))
        }
        Rule::Required => Ok(()),
        Rule::Roles(roles) if roles.iter().any(|r| v.caller.has_role(r)) => Ok(()),
        Rule::Roles(roles) => {
            let needs = match roles.as_slice() {
                [] => "a role, and none is named".to_string(),
                [one] => format!("the role {one}"),
                many => format!("one of the roles {}", many.join(", ")),
            };
            Err(Fault::denied(format!(
                "{name} may not call {interface}.{method}: it needs {needs}"
            )))
        }
    }
}

/// pycomd's answers by (token, interface, method).
pub(crate) type Answers = TtlCache<(String, String, String), Result<Validation, Fault>>;

/// Where a service checks its callers' tokens.
pub(crate) enum Authority {
    /// pycomd, through the service's context; answers kept a while.
    Pycomd { ctx: Context, cache: Mutex<Answers> },
    /// The service's own password file and tokens.
    Local(Arc<local::Local>),
}

impl Authority {
    /// Admit a call to `interface.method` by `rule`: the caller it was made
    /// by (`None` for a public one), or the fault to answer.
    pub(crate) fn admit(
        &self,
        rule: &Rule,
        extensions: &Map<String, Value>,
        interface: &str,
        method: &str,
    ) -> Result<Option<Caller>, Fault> {
        if *rule == Rule::Public {
            return Ok(None);
        }
        let token = auth::token_in(extensions).map_err(Fault::bad_request)?;
        let Some(token) = token else {
            return Err(Fault::denied(AUTHENTICATION_REQUIRED));
        };
        let validation = self.validate(token, interface, method, Instant::now())?;
        decide(rule, &validation, interface, method)?;
        Ok(Some(validation.caller))
    }

    fn validate(
        &self,
        token: &str,
        interface: &str,
        method: &str,
        now: Instant,
    ) -> Result<Validation, Fault> {
        let (ctx, cache) = match self {
            Authority::Local(local) => return local.validate_token(token, Some(interface)),
            Authority::Pycomd { ctx, cache } => (ctx, cache),
        };
        let key = (token.to_string(), interface.to_string(), method.to_string());
        let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(answer) = lock().get(&key, now) {
            return answer;
        }
        // Not under the lock: other workers go on meanwhile.
        let answer = ctx
            .validate(token, Some((interface, method)))
            .map_err(|e| match e {
                Error::AccessDenied(message) => Fault::denied(message),
                Error::ServiceNotFound(message) => {
                    Fault::denied(format!("the token cannot be checked: {message}"))
                }
                other => Fault::unavailable(format!("the token cannot be checked now: {other}")),
            });
        let ttl = if answer.is_ok() { VALID_FOR } else { FAILURE_FOR };
        lock().insert(key, answer.clone(), ttl, now);
        answer
    }

    /// Forget what has expired (called now and then by the service thread).
    pub(crate) fn sweep(&self, now: Instant) {
        match self {
            Authority::Pycomd { cache, .. } => cache.lock().unwrap_or_else(|p| p.into_inner()).sweep(now),
            Authority::Local(local) => local.sweep(now),
        }
    }
}

/// The authority the interfaces' rules call for, and the interface the
/// service must serve besides its own (a password file's authenticator);
/// `None` when nothing is guarded.
pub(crate) fn authority(
    service: &str,
    interfaces: &[Interface],
    ctx: &Context,
) -> Result<Option<(Authority, Option<Interface>)>> {
    let all: Vec<&Auth> = interfaces
        .iter()
        .flat_map(|i| {
            i.auth
                .iter()
                .chain(i.methods.values().filter_map(|m| m.auth.as_ref()))
        })
        .collect();
    if all.iter().all(|a| a.rule == Rule::Public) {
        return Ok(None);
    }
    let mut files: Vec<&PathBuf> = all.iter().filter_map(|a| a.password_file.as_ref()).collect();
    files.sort();
    files.dedup();
    match files.as_slice() {
        [] => Ok(Some((
            Authority::Pycomd {
                ctx: ctx.clone(),
                cache: Mutex::new(TtlCache::new(MAX_CACHED)),
            },
            None,
        ))),
        [path] => {
            if all.iter().any(|a| matches!(a.rule, Rule::Roles(_))) {
                return Err(Error::Data(format!(
                    "service '{service}' checks the password file {}, whose users hold no roles: \
                     Auth::roles cannot be met (use Auth::required and look at req.caller() in the handler)",
                    path.display()
                )));
            }
            if interfaces.iter().any(|i| i.name() == auth::INTERFACE) {
                return Err(Error::Data(format!(
                    "service '{service}' checks a password file, so it serves {} itself: it cannot also declare it",
                    auth::INTERFACE
                )));
            }
            let users = auth::PasswordFile::load(path).map_err(Error::Data)?;
            if users.is_empty() {
                tracing::warn!(service, file = %path.display(), "the users file names nobody: no one can log in");
            }
            let local = Arc::new(local::Local::new(users));
            let served = local::interface(local.clone());
            Ok(Some((Authority::Local(local), Some(served))))
        }
        many => {
            let names: Vec<String> = many.iter().map(|p| p.display().to_string()).collect();
            Err(Error::Data(format!(
                "service '{service}' names {} password files ({}): one service checks one",
                names.len(),
                names.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str, roles: &[&str], allowed: Option<bool>) -> Validation {
        Validation {
            caller: Caller {
                name: name.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            },
            allowed,
        }
    }

    #[test]
    fn required_follows_the_grants_roles_follow_the_roles() {
        let required = Auth::required().rule;
        assert_eq!(decide(&required, &caller("al", &[], None), "i", "m"), Ok(()));
        assert_eq!(
            decide(&required, &caller("al", &[], Some(true)), "i", "m"),
            Ok(())
        );
        let no = decide(
            &required,
            &caller("al", &["billing"], Some(false)),
            "com.x",
            "pay",
        )
        .unwrap_err();
        assert_eq!(no, Fault::denied("al may not call com.x.pay"));

        let billing = Auth::roles(["billing", "ops"]).rule;
        assert_eq!(
            decide(&billing, &caller("bo", &["ops"], Some(false)), "i", "m"),
            Ok(())
        );
        assert_eq!(
            decide(&billing, &caller("root", &["admin"], None), "i", "m"),
            Ok(())
        );
        let no = decide(&billing, &caller("cy", &["sales"], Some(true)), "com.x", "pay").unwrap_err();
        assert_eq!(
            no.message,
            "cy may not call com.x.pay: it needs one of the roles billing, ops"
        );
        let one = decide(&Auth::roles(["billing"]).rule, &caller("cy", &[], None), "i", "m").unwrap_err();
        assert!(one.message.ends_with("it needs the role billing"), "{one}");
        assert_eq!(
            decide(&Auth::public().rule, &caller("x", &[], Some(false)), "i", "m"),
            Ok(())
        );
    }

    /// An authority whose pycomd is nowhere: what gets past it without
    /// asking, and what it remembers when asking fails.
    #[test]
    fn no_token_is_refused_without_asking_and_failures_are_remembered_briefly() {
        let ctx = Context::new("tcp://127.0.0.1:1").unwrap();
        ctx.set_default_timeout(Duration::from_millis(200));
        let authority = Authority::Pycomd {
            ctx,
            cache: Mutex::new(TtlCache::new(MAX_CACHED)),
        };
        let none = Map::new();
        let no_token = authority.admit(&Rule::Required, &none, "i", "m").unwrap_err();
        assert_eq!(no_token, Fault::denied(AUTHENTICATION_REQUIRED));
        assert_eq!(authority.admit(&Rule::Public, &none, "i", "m"), Ok(None));
        let mut bad = Map::new();
        bad.insert(auth::EXTENSION.into(), Value::from(5));
        let wrong = authority.admit(&Rule::Required, &bad, "i", "m").unwrap_err();
        assert_eq!(wrong.code, crate::Code::BadRequest, "{wrong}");

        let now = Instant::now();
        let first = authority.validate("tok", "i", "m", now).unwrap_err();
        assert_eq!(first.code, crate::Code::Unavailable, "{first}");
        assert!(first.message.contains("cannot be checked now"), "{first}");
        // Remembered: the second answer does not wait for the timeout.
        let started = Instant::now();
        let again = authority.validate("tok", "i", "m", now + Duration::from_millis(900));
        assert_eq!(again.unwrap_err(), first);
        assert!(started.elapsed() < Duration::from_millis(100));
        let Authority::Pycomd { cache, .. } = &authority else {
            unreachable!()
        };
        let key = ("tok".to_string(), "i".to_string(), "m".to_string());
        assert!(cache.lock().unwrap().get(&key, now + FAILURE_FOR).is_none());
        // A good answer is kept for VALID_FOR.
        let good = caller("al", &[], Some(true));
        cache
            .lock()
            .unwrap()
            .insert(key.clone(), Ok(good.clone()), VALID_FOR, now);
        assert_eq!(
            authority.validate("tok", "i", "m", now + Duration::from_secs(29)),
            Ok(good)
        );
        assert!(cache.lock().unwrap().get(&key, now + VALID_FOR).is_none());
    }
}
