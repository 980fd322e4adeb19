//! Who may do what: `[auth]` and the users file, checked when loaded and
//! then asked by the handlers. Deny by default; `admin` may do everything
//! but take pycomd's own names.

use super::Caller;
use crate::config::AuthSettings;
use crate::registry::RESERVED_PREFIX;
use pycom_client::auth::PasswordFile;
use pycom_client::proto::Fault;
use pycom_client::pubsub::wire::{self, Pattern};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// The role every permission belongs to.
pub const ADMIN: &str = "admin";
/// The role of callers without a token.
pub const ANONYMOUS: &str = "anonymous";
/// What `anonymous` may list.
const ANONYMOUS_KINDS: &[&str] = &["read", "subscribe"];

/// One `register` prefix: allowed, or (written `!/prefix/`) denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Prefix {
    path: String,
    allow: bool,
}

/// A role's grants, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rules {
    register: Vec<Prefix>,
    call: Vec<Pattern>,
    publish: Vec<Pattern>,
    subscribe: Vec<Pattern>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub users: Arc<PasswordFile>,
    pub users_file: String,
    /// User -> roles, sorted.
    roles_of: BTreeMap<String, Vec<String>>,
    rules: BTreeMap<String, Rules>,
    pub anonymous_read: bool,
    pub anonymous_subscribe: bool,
    pub token_ttl: Duration,
    pub max_tokens: usize,
    pub max_tokens_per_user: usize,
}

impl Policy {
    /// Load the users file and check every grant; the error names the
    /// setting, the file and line, or the grant.
    pub fn load(settings: &AuthSettings) -> Result<Policy, String> {
        if settings.users_file.is_empty() {
            return Err("auth.enabled = true needs auth.users_file (htpasswd: name:hash per line; make a line with `pycomctl auth passwd NAME`)".into());
        }
        let users = PasswordFile::load(std::path::Path::new(&settings.users_file))?;
        let mut roles_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (role, members) in &settings.roles {
            if role == ANONYMOUS {
                return Err(
                    "auth.roles.anonymous: the anonymous role is callers without a token; it has no members"
                        .into(),
                );
            }
            for user in members {
                if !users.contains(user) {
                    return Err(format!(
                        "auth.roles.{role}: user '{user}' is not in the users file {}",
                        settings.users_file
                    ));
                }
                roles_of.entry(user.clone()).or_default().push(role.clone());
            }
        }
        for roles in roles_of.values_mut() {
            roles.sort();
            roles.dedup();
        }
        let mut rules: BTreeMap<String, Rules> = BTreeMap::new();
        for (i, grant) in settings.grant.iter().enumerate() {
            let at = format!("auth.grant[{i}] (role '{}')", grant.role);
            if grant.role != ANONYMOUS && !settings.roles.contains_key(&grant.role) && grant.role != ADMIN {
                return Err(format!(
                    "{at}: no such role; roles are defined in [auth.roles] (or are 'anonymous', 'admin')"
                ));
            }
            let r = rules.entry(grant.role.clone()).or_default();
            for prefix in &grant.register {
                let (path, allow) = match prefix.strip_prefix('!') {
                    Some(path) => (path, false),
                    None => (prefix.as_str(), true),
                };
                if !path.starts_with('/') {
                    return Err(format!(
                        "{at}: register prefix '{prefix}' must be a service path starting with '/' (or '!/' to deny)"
                    ));
                }
                if allow && (path.starts_with(RESERVED_PREFIX) || RESERVED_PREFIX.starts_with(path)) {
                    return Err(format!(
                        "{at}: register prefix '{prefix}' covers {RESERVED_PREFIX}, which is pycomd's own"
                    ));
                }
                r.register.push(Prefix {
                    path: path.to_string(),
                    allow,
                });
            }
            for (kind, list, out) in [
                ("call", &grant.call, &mut r.call),
                ("publish", &grant.publish, &mut r.publish),
                ("subscribe", &grant.subscribe, &mut r.subscribe),
            ] {
                for text in list {
                    out.push(Pattern::parse(text).map_err(|e| format!("{at}: {kind}: {e}"))?);
                }
            }
        }
        let mut anonymous = (false, false);
        for kind in &settings.anonymous {
            match kind.as_str() {
                "read" => anonymous.0 = true,
                "subscribe" => anonymous.1 = true,
                other => {
                    return Err(format!(
                        "auth.anonymous: '{other}' is not a permission; callers without a token may have {}",
                        ANONYMOUS_KINDS.join(", ")
                    ))
                }
            }
        }
        if settings.token_ttl == 0 || settings.max_tokens == 0 || settings.max_tokens_per_user == 0 {
            return Err(
                "auth.token_ttl, auth.max_tokens and auth.max_tokens_per_user must be at least 1".into(),
            );
        }
        Ok(Policy {
            users: Arc::new(users),
            users_file: settings.users_file.clone(),
            roles_of,
            rules,
            anonymous_read: anonymous.0,
            anonymous_subscribe: anonymous.1,
            token_ttl: Duration::from_secs(settings.token_ttl),
            max_tokens: settings.max_tokens,
            max_tokens_per_user: settings.max_tokens_per_user,
        })
    }

    /// A user's roles as configured now (none if not in the users file).
    pub fn roles_of(&self, user: &str) -> Option<Vec<String>> {
        self.users
            .contains(user)
            .then(|| self.roles_of.get(user).cloned().unwrap_or_default())
    }

    /// The rules that apply to `caller`: its roles', or `anonymous`'.
    fn rules_for<'a>(&'a self, caller: &'a Caller) -> impl Iterator<Item = &'a Rules> + 'a {
        let roles: Vec<&str> = match caller {
            Caller::User(p) => p.roles.iter().map(String::as_str).collect(),
            _ => vec![ANONYMOUS],
        };
        roles.into_iter().filter_map(|r| self.rules.get(r))
    }

    /// May `caller` register, renew or unregister `service` (`what`)? The
    /// longest matching prefix among its roles' grants decides.
    pub fn may_register(&self, caller: &Caller, service: &str, what: &str) -> Result<(), Fault> {
        if service.starts_with(RESERVED_PREFIX) {
            return Err(Fault::denied(format!(
                "{} may not {what} {service}: names under {RESERVED_PREFIX} are pycomd's own",
                caller.name()
            )));
        }
        match caller {
            Caller::Open => return Ok(()),
            Caller::User(p) if p.is_admin() => return Ok(()),
            _ => {}
        }
        let decided = self
            .rules_for(caller)
            .flat_map(|r| r.register.iter())
            .filter(|p| service.starts_with(p.path.as_str()))
            .max_by_key(|p| (p.path.len(), !p.allow));
        match decided {
            Some(p) if p.allow => Ok(()),
            Some(p) => Err(Fault::denied(format!(
                "{} may not {what} {service}: the grant !{} denies it",
                caller.name(),
                p.path
            ))),
            None => Err(Fault::denied(format!(
                "{} may not {what} {service}: no [[auth.grant]] of {} covers it",
                caller.name(),
                match caller {
                    Caller::User(_) => "its roles",
                    _ => "role 'anonymous' (callers without a token)",
                }
            ))),
        }
    }

    /// May `caller` call `interface` (the `call` grants, for `validate`)?
    pub fn may_call(&self, caller: &Caller, interface: &str) -> bool {
        match caller {
            Caller::Open => true,
            Caller::User(p) if p.is_admin() => true,
            _ => self
                .rules_for(caller)
                .any(|r| r.call.iter().any(|p| p.matches(interface))),
        }
    }

    /// What a pub-sub peer authenticated as `user` (`""`: anonymous) may
    /// publish and subscribe to; the forwarder keeps it per user until the
    /// policy changes.
    pub fn pubsub_grants(&self, user: &str) -> PubsubGrants {
        let mut grants = PubsubGrants::default();
        let roles = if user.is_empty() {
            grants.subscribe_all = self.anonymous_subscribe;
            grants.events = self.anonymous_read || self.anonymous_subscribe;
            vec![ANONYMOUS.to_string()]
        } else {
            let Some(roles) = self.roles_of(user) else {
                return grants;
            };
            if roles.iter().any(|r| r == ADMIN) {
                grants.publish_all = true;
                grants.subscribe_all = true;
            }
            // Whoever logged in may read the registry.
            grants.events = true;
            roles
        };
        for r in roles.iter().filter_map(|r| self.rules.get(r)) {
            grants.publish.extend(r.publish.iter().cloned());
            grants.subscribe.extend(r.subscribe.iter().cloned());
        }
        grants
    }

    /// What `check` reports: the policy, and what `user` may do.
    pub fn summary(&self, user: Option<&str>) -> serde_json::Value {
        let grants: BTreeMap<&str, serde_json::Value> = self
            .rules
            .iter()
            .map(|(role, r)| (role.as_str(), rules_json(r)))
            .collect();
        let mut roles: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (user, rs) in &self.roles_of {
            for role in rs {
                roles.entry(role.as_str()).or_default().insert(user.as_str());
            }
        }
        let mut summary = serde_json::json!({
            "enabled": true,
            "users_file": self.users_file,
            "users": self.users.len(),
            "roles": roles,
            "grants": grants,
            "anonymous": {"read": self.anonymous_read, "subscribe": self.anonymous_subscribe},
            "token_ttl_s": self.token_ttl.as_secs(),
            "warnings": grant_warnings(self),
        });
        if let Some(user) = user {
            let roles = self.roles_of(user).unwrap_or_default();
            let admin = roles.iter().any(|r| r == ADMIN);
            let mut may = Rules::default();
            for r in roles.iter().filter_map(|r| self.rules.get(r)) {
                may.register.extend(r.register.iter().cloned());
                may.call.extend(r.call.iter().cloned());
                may.publish.extend(r.publish.iter().cloned());
                may.subscribe.extend(r.subscribe.iter().cloned());
            }
            summary["principal"] = serde_json::json!({
                "name": user,
                "known": self.users.contains(user),
                "roles": roles,
                "admin": admin,
                "may": if admin { serde_json::json!("everything (admin), but names under /org/pycom/") } else { rules_json(&may) },
            });
        }
        summary
    }

    /// Lines for the log at start and reload: grants that cannot do what
    /// they seem to.
    pub fn warnings(&self) -> Vec<String> {
        grant_warnings(self)
    }

    /// What changed from `old`, for SIGHUP's log line.
    pub fn diff(&self, old: &Policy) -> Vec<String> {
        let mut changed = Vec::new();
        let now: BTreeSet<&str> = self.users.users().collect();
        let before: BTreeSet<&str> = old.users.users().collect();
        let added: Vec<&str> = now.difference(&before).copied().collect();
        let removed: Vec<&str> = before.difference(&now).copied().collect();
        if !added.is_empty() {
            changed.push(format!("users added: {}", added.join(", ")));
        }
        if !removed.is_empty() {
            changed.push(format!("users removed: {}", removed.join(", ")));
        }
        if self.roles_of != old.roles_of {
            changed.push("roles changed".into());
        }
        if self.rules != old.rules {
            let roles: BTreeSet<&str> = self
                .rules
                .keys()
                .chain(old.rules.keys())
                .filter(|r| self.rules.get(*r) != old.rules.get(*r))
                .map(String::as_str)
                .collect();
            changed.push(format!(
                "grants changed for {}",
                roles.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        if (self.anonymous_read, self.anonymous_subscribe) != (old.anonymous_read, old.anonymous_subscribe) {
            changed.push("anonymous permissions changed".into());
        }
        if self.token_ttl != old.token_ttl {
            changed.push(format!("token_ttl = {} s", self.token_ttl.as_secs()));
        }
        changed
    }
}

/// One pub-sub peer's grants, resolved from the policy.
#[derive(Debug, Clone, Default)]
pub struct PubsubGrants {
    /// `admin`: every topic (but `org.pycom.`, which is pycomd's anyway).
    pub publish_all: bool,
    /// `admin`, or anonymous with `auth.anonymous` containing `subscribe`.
    pub subscribe_all: bool,
    pub publish: Vec<Pattern>,
    pub subscribe: Vec<Pattern>,
    /// The registry's change events (`org.pycom.nameserver.events.`): for
    /// whoever may read the registry.
    pub events: bool,
}

impl PubsubGrants {
    /// May this peer publish on `topic` (a valid topic)?
    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish_all || self.publish.iter().any(|p| p.matches(topic))
    }

    /// May this peer have the ZeroMQ subscription `prefix` (bytes: every
    /// topic that starts with them is delivered)? Only if every topic
    /// it lets through is granted; see [`prefix_within`].
    pub fn may_subscribe(&self, prefix: &[u8]) -> bool {
        if self.subscribe_all {
            return true;
        }
        if self.events && prefix.starts_with(wire::EVENTS_PREFIX.as_bytes()) {
            return true;
        }
        let Ok(prefix) = std::str::from_utf8(prefix) else {
            return false;
        };
        self.subscribe.iter().any(|g| prefix_within(prefix, g))
    }
}

/// Whether every valid topic that starts with `prefix` matches `grant`:
/// the rule that lets a per-connection byte-prefix filter (what ZeroMQ
/// has) enforce a NATS-style grant without ever letting more through.
///
/// The grant must end with `>` (`t1.….tk.>`: a grant with no trailing `>`
/// names a bounded set of topics, but a prefix always admits longer ones:
/// `a.b.c` also lets `a.b.cd` and `a.b.c.d` through, so such grants allow
/// no subscription). The prefix must then contain at least `k` dots, its
/// first `k` dot-ended fields matching `t1`…`tk` (a literal equal, `*` any
/// non-empty field). Every topic `T` starting with the prefix then has
/// exactly those first `k` tokens, and, topics having no empty token, at
/// least one more: `T` matches the grant. So `demo.a.>` allows `demo.a.`
/// and `demo.a.x` (a client's prefix for `demo.a.>`, `demo.a.x`,
/// `demo.a.x.*`), never `demo.` or `demo.a` (which would let `demo.b.x` or
/// `demo.ab` through).
pub fn prefix_within(prefix: &str, grant: &Pattern) -> bool {
    let tokens: Vec<&str> = grant.as_str().split('.').collect();
    let Some((&">", fixed)) = tokens.split_last() else {
        return false;
    };
    let fields: Vec<&str> = prefix.splitn(fixed.len() + 1, '.').collect();
    // k + 1 pieces: the prefix has at least k dots.
    if fields.len() != fixed.len() + 1 {
        return false;
    }
    fixed
        .iter()
        .zip(&fields)
        .all(|(t, f)| !f.is_empty() && (*t == "*" || t == f))
}

fn rules_json(r: &Rules) -> serde_json::Value {
    let patterns = |ps: &[Pattern]| ps.iter().map(|p| p.as_str().to_string()).collect::<Vec<_>>();
    serde_json::json!({
        "register": r.register.iter().map(|p| if p.allow { p.path.clone() } else { format!("!{}", p.path) }).collect::<Vec<_>>(),
        "call": patterns(&r.call),
        "publish": patterns(&r.publish),
        "subscribe": patterns(&r.subscribe),
    })
}

/// What the operator should know about grants that cannot do what they
/// seem to: a `subscribe` grant without a trailing `>` allows no
/// subscription (ZeroMQ filters by prefix: see [`prefix_within`]).
fn grant_warnings(policy: &Policy) -> Vec<String> {
    let mut lines = Vec::new();
    for (role, r) in &policy.rules {
        for g in r.subscribe.iter().filter(|g| !g.as_str().ends_with('>')) {
            lines.push(format!(
                "role {role}: subscribe grant '{g}' allows no subscription: pub-sub filters by topic prefix, so a subscribe grant must end with '>' (write '{g}.>', or a pattern ending in '>' that covers it)"
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Principal;
    use crate::config::Grant;

    fn policy(grants: Vec<Grant>) -> Policy {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("users");
        // bcrypt at its lowest cost: these tests check rules, not hashing.
        let hash = bcrypt::hash("pw", 4).expect("bcrypt");
        std::fs::write(&file, format!("alice:{hash}\nbob:{hash}\nroot:{hash}\n")).expect("write");
        let settings = AuthSettings {
            enabled: true,
            users_file: file.display().to_string(),
            roles: [
                ("billing".to_string(), vec!["alice".to_string()]),
                ("admin".to_string(), vec!["root".to_string()]),
            ]
            .into(),
            grant: grants,
            ..AuthSettings::default()
        };
        Policy::load(&settings).expect("policy")
    }

    fn grant(role: &str, register: &[&str], call: &[&str]) -> Grant {
        Grant {
            role: role.into(),
            register: register.iter().map(|s| s.to_string()).collect(),
            call: call.iter().map(|s| s.to_string()).collect(),
            publish: vec![],
            subscribe: vec![],
        }
    }

    fn user(p: &Policy, name: &str) -> Caller {
        Caller::User(Arc::new(Principal {
            name: name.into(),
            roles: p.roles_of(name).expect("known"),
        }))
    }

    #[test]
    fn the_longest_prefix_decides_and_nothing_is_allowed_by_default() {
        let p = policy(vec![
            grant(
                "billing",
                &["/com/billing/", "!/com/billing/secret/"],
                &["com.billing.*"],
            ),
            grant("anonymous", &["/legacy/"], &[]),
        ]);
        let alice = user(&p, "alice");
        assert!(p.may_register(&alice, "/com/billing/invoice", "register").is_ok());
        let denied = p
            .may_register(&alice, "/com/billing/secret/x", "register")
            .unwrap_err();
        assert_eq!(
            denied.message,
            "alice may not register /com/billing/secret/x: the grant !/com/billing/secret/ denies it"
        );
        let other = p.may_register(&alice, "/com/other/x", "register").unwrap_err();
        assert!(
            other.message.starts_with("alice may not register /com/other/x"),
            "{}",
            other.message
        );
        let bob = user(&p, "bob");
        assert!(p.may_register(&bob, "/com/billing/invoice", "renew").is_err());
        assert!(p
            .may_register(&Caller::Anonymous, "/legacy/x", "register")
            .is_ok());
        assert!(p
            .may_register(&Caller::Anonymous, "/com/billing/x", "register")
            .is_err());
        let root = user(&p, "root");
        assert!(p.may_register(&root, "/anything", "unregister").is_ok());
        assert!(p
            .may_register(&root, "/org/pycom/nameserver", "register")
            .is_err());
        assert!(p.may_call(&alice, "com.billing.invoices"));
        assert!(!p.may_call(&alice, "com.other.x"));
        assert!(!p.may_call(&bob, "com.billing.invoices"));
        assert!(p.may_call(&root, "com.other.x"));
    }

    #[test]
    fn bad_grants_are_refused_naming_the_grant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("users");
        std::fs::write(&file, "").expect("write");
        let base = AuthSettings {
            enabled: true,
            users_file: file.display().to_string(),
            ..AuthSettings::default()
        };
        let with = |g: Grant| AuthSettings {
            grant: vec![g],
            ..base.clone()
        };
        let e = Policy::load(&with(grant("nobody", &["/x/"], &[]))).unwrap_err();
        assert!(e.contains("auth.grant[0] (role 'nobody'): no such role"), "{e}");
        let e = Policy::load(&with(grant("anonymous", &["x/"], &[]))).unwrap_err();
        assert!(e.contains("must be a service path"), "{e}");
        let e = Policy::load(&with(grant("anonymous", &["/org/"], &[]))).unwrap_err();
        assert!(e.contains("pycomd's own"), "{e}");
        let e = Policy::load(&with(grant("anonymous", &[], &["a.>.b"]))).unwrap_err();
        assert!(e.contains("call: pattern 'a.>.b'"), "{e}");
    }

    #[test]
    fn a_subscription_prefix_is_allowed_only_if_the_grant_covers_every_topic_it_lets_through() {
        let within =
            |prefix: &str, grant: &str| prefix_within(prefix, &Pattern::parse(grant).expect("pattern"));
        for (prefix, grant) in [
            ("demo.a.", "demo.a.>"),
            ("demo.a.x", "demo.a.>"),
            ("demo.a.x.y.", "demo.a.>"),
            ("demo.b.x", "demo.*.>"),
            ("", ">"),
            ("anything", ">"),
        ] {
            assert!(within(prefix, grant), "{prefix} within {grant}");
        }
        for (prefix, grant) in [
            // would let demo.b.x through
            ("demo.", "demo.a.>"),
            // would let demo.ab through
            ("demo.a", "demo.a.>"),
            ("", "demo.>"),
            // no trailing '>': demo.a.xy, demo.a.x.y would pass
            ("demo.a.x", "demo.a.x"),
            ("demo.a.", "demo.*.x"),
            ("demo..", "demo.*.>"),
            ("other.a.", "demo.a.>"),
        ] {
            assert!(!within(prefix, grant), "{prefix} not within {grant}");
        }
    }

    #[test]
    fn pubsub_grants_follow_roles_admin_and_anonymous() {
        let mut g = grant("billing", &[], &[]);
        g.publish = vec!["billing.>".into()];
        g.subscribe = vec!["billing.out.>".into()];
        let mut a = grant("anonymous", &[], &[]);
        a.publish = vec!["public.>".into()];
        let p = policy(vec![g, a]);
        let alice = p.pubsub_grants("alice");
        assert!(alice.may_publish("billing.x") && !alice.may_publish("other.x"));
        assert!(alice.may_subscribe(b"billing.out.") && !alice.may_subscribe(b"billing."));
        assert!(alice.may_subscribe(b"org.pycom.nameserver.events."));
        let root = p.pubsub_grants("root");
        assert!(root.may_publish("any.thing") && root.may_subscribe(b""));
        let bob = p.pubsub_grants("bob");
        assert!(!bob.may_publish("billing.x") && !bob.may_subscribe(b"billing.out."));
        let gone = p.pubsub_grants("mallory");
        assert!(!gone.may_subscribe(b"org.pycom.nameserver.events."));
        let anonymous = p.pubsub_grants("");
        assert!(anonymous.may_publish("public.x") && !anonymous.may_publish("billing.x"));
        // The default auth.anonymous is ["read"]: events, nothing else.
        assert!(anonymous.may_subscribe(b"org.pycom.nameserver.events."));
        assert!(!anonymous.may_subscribe(b"public."));
    }
}
