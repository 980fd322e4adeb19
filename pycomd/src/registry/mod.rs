//! The registry as a state machine: which service lives at which address
//! with which interfaces.
//!
//! [`State`] is everything pycomd must remember; [`State::apply`] is the one
//! way it changes: a pure function of the state and a [`Command`] (no I/O,
//! no clock, no randomness), so replaying the log gives the same state after
//! every restart and on every node. It returns the result for the proposer
//! and the [`Change`]s that everything else reacts to (the locate index,
//! lease timers, the prober, later events). Lease deadlines are not state:
//! the state keeps `ttl_ms`, the lease table (`crate::leases`) the
//! deadlines. [`Registry`] pairs the state with the index `locate` reads.

pub mod command;
pub mod history;
mod index;
pub mod record;
pub mod runs;
pub mod tokens;

use ahash::RandomState;
use pycom_client::proto::Fault;
use serde_json::value::RawValue;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

pub use command::Command;
pub use record::Record;

/// Hash maps keyed by names from the network: aHash, randomly seeded per
/// process (no hash flooding), and much faster than SipHash on short names.
pub type Map<K, V> = HashMap<K, V, RandomState>;

/// Service paths under this prefix are pycomd's own.
pub const RESERVED_PREFIX: &str = "/org/pycom/";

/// The registry's durable state: the records and the revision.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct State {
    /// Grows by exactly one per change (registered, updated, unregistered,
    /// expired, dropped); never repeats.
    revision: u64,
    /// Shared, so that changes and results hand records on without copies.
    records: Map<Arc<str>, Arc<Record>>,
    /// The records' sizes added up ([`Record::size`]).
    bytes: usize,
    /// Live logins (access control), by their tokens' SHA-256.
    tokens: tokens::Tokens,
    /// Workflow runs, running and ended.
    runs: runs::Runs,
}

/// What a change did, for events and for whatever keeps derived data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Registered,
    /// Re-registered with other interfaces, metadata or lease.
    Updated,
    Unregistered,
    Expired,
    /// Its probes went unanswered.
    Dropped,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    /// The record as it is now; for removals, as it was.
    pub record: Arc<Record>,
    /// The registry's revision after this change.
    pub revision: u64,
    /// For `Updated`: the record it replaced.
    pub previous: Option<Arc<Record>>,
}

impl Change {
    pub fn removes(&self) -> bool {
        matches!(
            self.kind,
            ChangeKind::Unregistered | ChangeKind::Expired | ChangeKind::Dropped
        )
    }
}

/// The result of a command for whoever proposed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The record as registered (unchanged if the register changed nothing).
    Registered(Arc<Record>),
    Unregistered,
    /// An expiry or probe verdict: whether it removed the record (a newer
    /// version of the name is left alone).
    Removed(bool),
    /// A login kept until then (unix ms); the user's oldest tokens it
    /// dropped (`auth.max_tokens_per_user`).
    LoggedIn {
        expires_ms: u64,
        dropped: Vec<tokens::Digest>,
    },
    /// A logout: whether the token was held.
    LoggedOut(bool),
    /// Expired tokens forgotten.
    TokensExpired(Vec<tokens::Digest>),
    /// A workflow run changed (or, for `Forget`, runs were forgotten).
    Run,
}

pub type Outcome = (Result<Applied, Fault>, Vec<Change>);

impl State {
    /// The state a snapshot holds.
    pub fn from_parts(
        revision: u64,
        records: Vec<Record>,
        tokens: Vec<tokens::Token>,
        runs: Vec<runs::Run>,
    ) -> State {
        let mut map = Map::with_capacity_and_hasher(records.len(), RandomState::new());
        let mut bytes = 0;
        for r in records {
            bytes += r.size();
            map.insert(r.service.clone(), Arc::new(r));
        }
        State {
            revision,
            records: map,
            bytes,
            tokens: tokens::Tokens::from_parts(tokens),
            runs: runs::Runs::from_parts(runs),
        }
    }

    /// Workflow runs.
    pub fn runs(&self) -> &runs::Runs {
        &self.runs
    }

    /// Live logins.
    pub fn tokens(&self) -> &tokens::Tokens {
        &self.tokens
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The records' sizes added up, as `max_registry_bytes` counts them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, service: &str) -> Option<&Record> {
        self.records.get(service).map(|r| &**r)
    }

    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values().map(|r| &**r)
    }

    /// The leased records: (service, revision, lease), what the lease
    /// table starts from.
    pub fn leased(&self) -> impl Iterator<Item = (&Arc<str>, u64, u64)> {
        self.records()
            .filter_map(|r| r.ttl_ms.map(|ttl| (&r.service, r.revision, ttl)))
    }

    /// The records as shared handles.
    pub fn shared(&self) -> impl Iterator<Item = &Arc<Record>> {
        self.records.values()
    }

    /// Apply one command. Refusals change nothing and return the fault.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::Register {
                service,
                address,
                interfaces,
                replace,
                ttl_ms,
                metadata,
                lapsed,
                owner,
            } => {
                let mut changes = Vec::new();
                if service.starts_with(RESERVED_PREFIX) {
                    let fault = Fault::denied(format!(
                        "register: names under {RESERVED_PREFIX} are pycomd's own; '{service}' cannot be registered"
                    ));
                    return (Err(fault), changes);
                }
                if let Some(old) = self.records.get(service.as_str()) {
                    if Some(old.revision) == *lapsed {
                        let removed = self.remove(service, ChangeKind::Expired);
                        changes.extend(removed);
                    }
                }
                let old = self.records.get(service.as_str());
                if let Some(old) = old {
                    if !old.owned_by(address, owner.as_deref()) {
                        return (Err(not_owner(old, "register", owner.as_deref())), changes);
                    }
                }
                let mut record = Record {
                    service: Arc::from(service.as_str()),
                    address: address.clone(),
                    interfaces: interfaces.clone(),
                    metadata: metadata.clone().unwrap_or_default(),
                    ttl_ms: *ttl_ms,
                    revision: 0,
                    owner: owner.as_deref().map(Arc::from),
                };
                if let Some(old) = old {
                    if !replace {
                        record.interfaces.extend(old.interfaces.iter().cloned());
                    }
                    if metadata.is_none() {
                        record.metadata = old.metadata.clone();
                    }
                }
                record.interfaces.sort();
                record.interfaces.dedup();
                if let Some(old) = old.filter(|old| old.same_as(&record)) {
                    return (Ok(Applied::Registered(old.clone())), changes);
                }
                self.revision += 1;
                record.revision = self.revision;
                let record = Arc::new(record);
                self.bytes += record.size();
                let previous = self.records.insert(record.service.clone(), record.clone());
                if let Some(previous) = &previous {
                    self.bytes -= previous.size();
                }
                let kind = match previous {
                    Some(_) => ChangeKind::Updated,
                    None => ChangeKind::Registered,
                };
                changes.push(Change {
                    kind,
                    record: record.clone(),
                    revision: self.revision,
                    previous,
                });
                (Ok(Applied::Registered(record)), changes)
            }
            Command::Unregister {
                service,
                address,
                owner,
                admin,
            } => {
                let Some(old) = self.records.get(service.as_str()) else {
                    return (Err(unknown(service, "unregister")), Vec::new());
                };
                if !admin && !old.owned_by(address, owner.as_deref()) {
                    return (Err(not_owner(old, "unregister", owner.as_deref())), Vec::new());
                }
                let changes = self.remove(service, ChangeKind::Unregistered);
                (Ok(Applied::Unregistered), changes.into_iter().collect())
            }
            Command::Expire { service, revision } => {
                self.remove_version(service, *revision, ChangeKind::Expired, |r| r.ttl_ms.is_some())
            }
            Command::ProbeFailed { service, revision } => {
                self.remove_version(service, *revision, ChangeKind::Dropped, |r| r.ttl_ms.is_none())
            }
            // Logins change no record and no revision: they are not
            // registry events.
            Command::Login {
                token_sha256,
                name,
                roles,
                expires_ms,
                keep,
            } => {
                let token = tokens::Token {
                    sha256: token_sha256.clone(),
                    name: Arc::from(name.as_str()),
                    roles: roles.clone(),
                    expires_ms: *expires_ms,
                };
                let dropped = self.tokens.login(token, *keep);
                (
                    Ok(Applied::LoggedIn {
                        expires_ms: *expires_ms,
                        dropped,
                    }),
                    Vec::new(),
                )
            }
            Command::Logout { token_sha256 } => (
                Ok(Applied::LoggedOut(self.tokens.logout(token_sha256))),
                Vec::new(),
            ),
            Command::ExpireTokens { now_ms } => (
                Ok(Applied::TokensExpired(self.tokens.expire(*now_ms))),
                Vec::new(),
            ),
            // Runs are not registry events either.
            Command::Run(run) => (self.runs.apply(run).map(|()| Applied::Run), Vec::new()),
        }
    }

    fn remove_version(
        &mut self,
        service: &str,
        revision: u64,
        kind: ChangeKind,
        applies: impl Fn(&Record) -> bool,
    ) -> Outcome {
        let current = self
            .records
            .get(service)
            .is_some_and(|r| r.revision == revision && applies(r));
        if !current {
            return (Ok(Applied::Removed(false)), Vec::new());
        }
        let changes: Vec<Change> = self.remove(service, kind).into_iter().collect();
        (Ok(Applied::Removed(true)), changes)
    }

    fn remove(&mut self, service: &str, kind: ChangeKind) -> Option<Change> {
        let record = self.records.remove(service)?;
        self.bytes -= record.size();
        self.revision += 1;
        Some(Change {
            kind,
            record,
            revision: self.revision,
            previous: None,
        })
    }
}

/// Code 5: `by` (a principal, or an anonymous caller) does not own `record`.
pub fn not_owner(record: &Record, what: &str, by: Option<&str>) -> Fault {
    let holder = match &record.owner {
        Some(owner) => format!("{owner} (at {})", record.address),
        None => format!("another address ({})", record.address),
    };
    let free = "it is free once that record is unregistered or expires";
    Fault::denied(match by {
        Some(by) => format!(
            "{by} may not {what} {}: it is owned by {holder}; {free}",
            record.service
        ),
        None => format!(
            "{what}: service '{}' is owned by {holder}; {free}",
            record.service
        ),
    })
}

pub fn unknown(service: &str, what: &str) -> Fault {
    Fault::not_found(format!(
        "{what}: service '{service}' is not registered (or its lease expired)"
    ))
}

/// The state and the index `locate` reads, kept in step: every change to
/// the state goes through [`Registry::apply`]. pycomd's own records (its
/// endpoints) are in the index but not in the state: they are not logged,
/// each process answers with its own.
#[derive(Debug)]
pub struct Registry {
    state: State,
    own: Map<String, Record>,
    index: index::Index,
    /// Every service name in order, for `list_services` and its pages.
    ordered: BTreeSet<Arc<str>>,
    /// The recent changes, for `changes`.
    history: history::History,
}

impl Registry {
    /// A registry holding `state`, listing pycomd itself under `own`.
    pub fn new(state: State, own: Vec<Record>) -> Registry {
        Registry::new_alongside(state, own, |_| ()).0
    }

    /// [`Registry::new`], running `side` on another thread over the same
    /// state meanwhile: at start, with a million records, the lease table
    /// is built on one core while the index is built on the other.
    pub fn new_alongside<T: Send>(
        state: State,
        own: Vec<Record>,
        side: impl FnOnce(&State) -> T + Send,
    ) -> (Registry, T) {
        let (index, ordered, extra) = std::thread::scope(|scope| {
            let extra = scope.spawn(|| side(&state));
            let ordered = scope.spawn(|| {
                let mut names: Vec<Arc<str>> = state
                    .records()
                    .chain(own.iter())
                    .map(|r| r.service.clone())
                    .collect();
                names.sort_unstable();
                names.into_iter().collect::<BTreeSet<_>>()
            });
            let mut index = index::Index::with_capacity(state.len());
            for record in state.records().chain(own.iter()) {
                index.insert(record, None);
            }
            (index, ordered.join(), extra.join())
        });
        let (ordered, extra) = match (ordered, extra) {
            (Ok(ordered), Ok(extra)) => (ordered, extra),
            (Err(panic), _) | (_, Err(panic)) => std::panic::resume_unwind(panic),
        };
        let own = own.into_iter().map(|r| (r.service.to_string(), r)).collect();
        let defaults = crate::config::Settings::default();
        let history = history::History::new(
            state.revision(),
            defaults.changes_retained,
            defaults.changes_retained_bytes,
        );
        (
            Registry {
                state,
                own,
                index,
                ordered,
                history,
            },
            extra,
        )
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn apply(&mut self, command: &Command) -> Outcome {
        let outcome = self.state.apply(command);
        for change in &outcome.1 {
            self.history.push(change);
            match change.kind {
                ChangeKind::Registered => {
                    self.ordered.insert(change.record.service.clone());
                }
                ChangeKind::Updated => {}
                _ => {
                    self.ordered.remove(&*change.record.service);
                }
            }
            if change.removes() {
                self.index.remove(&change.record);
            } else {
                self.index.insert(&change.record, change.previous.as_deref());
            }
        }
        outcome
    }

    /// Start again from `state` (a cluster's snapshot from the leader),
    /// keeping pycomd's own records and the history's bounds; the history
    /// starts anew at the new revision.
    pub fn replace_state(&mut self, state: State) {
        let own: Vec<Record> = self.own.values().cloned().collect();
        let (max_changes, max_bytes) = self.history.limits();
        *self = Registry::new(state, own);
        self.history.set_limits(max_changes, max_bytes);
    }

    /// List one of pycomd's own records (a workflow hosted after a
    /// reload), replacing any of that name.
    pub fn add_own(&mut self, record: Record) {
        let previous = self.own.remove(&*record.service);
        self.index.insert(&record, previous.as_ref());
        self.ordered.insert(record.service.clone());
        self.own.insert(record.service.to_string(), record);
    }

    /// Stop listing one of pycomd's own records.
    pub fn remove_own(&mut self, service: &str) {
        if let Some(record) = self.own.remove(service) {
            self.index.remove(&record);
            if self.state.get(service).is_none() {
                self.ordered.remove(service);
            }
        }
    }

    /// The recent changes (`changes`).
    pub fn history(&self) -> &history::History {
        &self.history
    }

    /// Bound the recent changes kept (`changes_retained`, `_bytes`).
    pub fn set_history_limits(&mut self, max_changes: usize, max_bytes: usize) {
        self.history.set_limits(max_changes, max_bytes);
    }

    /// Number of records, pycomd's own included.
    pub fn len(&self) -> usize {
        self.state.len() + self.own.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn interface_count(&self) -> usize {
        self.index.interface_count()
    }

    pub fn get(&self, service: &str) -> Option<&Record> {
        self.state.get(service).or_else(|| self.own.get(service))
    }

    /// The records after `after` (all with `None`), in service order.
    pub fn records_after<'a>(&'a self, after: Option<&'a str>) -> impl Iterator<Item = &'a Record> + 'a {
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        self.ordered
            .range::<str, _>((start, Bound::Unbounded))
            .filter_map(|s| self.get(s))
    }

    /// Every record, pycomd's own included, in no order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.state.records().chain(self.own.values())
    }

    /// Bring what locating each of `interfaces` reads into the CPU's
    /// caches together (see [`index::Index::warm`]).
    pub fn warm<'i>(&self, interfaces: impl Iterator<Item = &'i str>) {
        self.index.warm(interfaces);
    }

    /// One provider of `interface` for which `live` holds, taking turns
    /// among them, as the JSON `locate` returns.
    pub fn pick(
        &self,
        interface: &str,
        service: Option<&str>,
        live: impl Fn(&str) -> bool,
    ) -> Option<&RawValue> {
        let (service, slot) = match service {
            Some(service) => {
                let record = self
                    .get(service)
                    .filter(|r| live(service) && r.interfaces.iter().any(|i| i == interface))?;
                (&*record.service, self.index.slot(interface, service)?)
            }
            None => self.index.pick(interface, live)?,
        };
        slot.json(|| self.get(service))
    }

    /// Every provider of `interface` for which `live` holds, in service order.
    pub fn providers(
        &self,
        interface: &str,
        service: Option<&str>,
        live: impl Fn(&str) -> bool,
    ) -> Vec<&Record> {
        let mut found: Vec<&Record> = match service {
            Some(service) => self.get(service).into_iter().collect(),
            None => self
                .index
                .services(interface)
                .filter_map(|s| self.get(s))
                .collect(),
        };
        found.retain(|r| live(&r.service) && r.interfaces.iter().any(|i| i == interface));
        found.sort_by(|a, b| a.service.cmp(&b.service));
        found
    }
}

#[cfg(test)]
mod tests;
