//! A linearizability checker for histories recorded against the real
//! daemons (fault tests of the cluster), after Wing & Gong and Lowe, as
//! Porcupine does it.
//!
//! A history is a list of [`Operation`]s: who called what, when it was
//! invoked, and when it returned with which output, or that its outcome is
//! unknown ([`Outcome::Unknown`]: a timeout, code 7). An operation with an
//! unknown outcome may have taken effect at any instant after its invoke,
//! or never: it is treated as returning at +infinity, and a [`Model`] is
//! asked for its effect without an output.
//!
//! Operations are partitioned by key (registry: the service name): keys are
//! independent, so each is checked alone, which keeps the search small.
//! Per key, the search tries to linearize, depth first, any operation whose
//! invoke precedes every return still to be linearized, backtracking when a
//! return is reached first; configurations (set of linearized operations,
//! state) already explored are remembered (a bitset and the state, hashed)
//! and never explored again. Three cuts keep it cheap on the histories
//! fault tests make, none of which loses an answer:
//!
//! - an operation that never changes the state (a read, a refusal:
//!   [`Model::changes_nothing`]) and fits now is placed at once, with no
//!   other order tried at that point (any completion could place it there);
//! - an unknown outcome is never placed where it would change nothing (it
//!   could as well go last), and the search ends once every operation with
//!   a known outcome is placed;
//! - unknown outcomes with equal inputs are interchangeable: only the
//!   earliest of those left may go next (many timed-out retries of one
//!   call stay cheap).
//!
//! The search is still exponential in the worst case (many concurrent
//! operations that change the state); it stops after a budget of steps per
//! key ([`Options::max_steps`], 10 million: seconds) and reports that
//! instead of an answer. A non-linearizable key is explained: the shortest
//! prefix of its history that is already not linearizable (found by
//! bisection on return instants: linearizability is prefix-closed when
//! operations running at the cut-off count as unknown), the operations in
//! it, and the longest linearization the search found.
//!
//! [`Registry`] is the model of pycomd's registry (register / unregister /
//! read of one service), with [`check_registry`].

use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Debug};
use std::hash::Hash;

/// A sequential specification: the state of one key and how operations
/// change it.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Clone + Eq + Debug;
    type Output: Clone + Debug;

    /// The state of a key nobody touched.
    fn init(&self) -> Self::State;

    /// The state after `input` was applied in `state` and returned
    /// `output`, or `None` when it could not have returned that in `state`.
    ///
    /// `output` is `None` when the outcome is unknown: then return the
    /// state it leaves if it takes effect now (this must be `Some`).
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Whether `input` never changes the state: with an unknown outcome
    /// such an operation constrains nothing and is left out.
    fn is_read_only(&self, _input: &Self::Input) -> bool {
        false
    }

    /// Whether `input` answered with `output` never changes the state
    /// (every state `step` accepts it in, it leaves as it was): a read, a
    /// refusal. The search places such operations as soon as they fit,
    /// without trying other orders, which keeps many concurrent reads
    /// cheap. Saying `false` is always correct, only slower.
    fn changes_nothing(&self, input: &Self::Input, _output: &Self::Output) -> bool {
        self.is_read_only(input)
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<O> {
    /// It returned `output` at `at` (ns, same clock as the invoke).
    Returned { at: u64, output: O },
    /// No answer, or an answer that does not say whether it took effect:
    /// it may take effect at any time after its invoke, or never.
    Unknown,
}

/// One call in a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Who called (for messages only).
    pub client: u64,
    /// The partition: operations on different keys are independent.
    pub key: String,
    pub input: I,
    /// When it was invoked (ns, one clock for the whole history).
    pub call: u64,
    pub outcome: Outcome<O>,
}

impl<I, O> Operation<I, O> {
    /// When it returned; `u64::MAX` (+infinity) when the outcome is unknown.
    pub fn ret(&self) -> u64 {
        match &self.outcome {
            Outcome::Returned { at, .. } => *at,
            Outcome::Unknown => u64::MAX,
        }
    }

    pub fn output(&self) -> Option<&O> {
        match &self.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Unknown => None,
        }
    }
}

/// Limits of a check.
#[derive(Debug, Clone)]
pub struct Options {
    /// Search steps per key (one step: one operation tried, or one
    /// backtrack) before giving up with [`CheckError::BudgetExhausted`].
    pub max_steps: u64,
    /// Operations listed at most in an explanation.
    pub max_listed: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_steps: 10_000_000,
            max_listed: 40,
        }
    }
}

/// Why a history is not known to be linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The operations on `key` have no linearization.
    NotLinearizable { key: String, explanation: String },
    /// The search on `key` ran out of steps: no answer either way.
    BudgetExhausted {
        key: String,
        operations: usize,
        steps: u64,
    },
    /// The history itself is wrong (a return before its invoke).
    Malformed(String),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::NotLinearizable { explanation, .. } => f.write_str(explanation),
            CheckError::BudgetExhausted {
                key,
                operations,
                steps,
            } => write!(
                f,
                "key '{key}': no answer within {steps} search steps ({operations} operations); \
                 record fewer concurrent operations per key, or raise Options::max_steps"
            ),
            CheckError::Malformed(why) => write!(f, "malformed history: {why}"),
        }
    }
}

impl std::error::Error for CheckError {}

/// An operation as `M` takes it.
type Op<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

/// Check every key of `history` with the default [`Options`].
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> Result<(), CheckError> {
    check_with(model, history, &Options::default())
}

/// Check every key of `history`; the first key (in key order) that fails
/// is reported.
pub fn check_with<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    options: &Options,
) -> Result<(), CheckError> {
    let mut keys: BTreeMap<&str, Vec<&Op<M>>> = BTreeMap::new();
    for op in history {
        if let Outcome::Returned { at, .. } = &op.outcome {
            if *at < op.call {
                return Err(CheckError::Malformed(format!(
                    "client {}'s {:?} on '{}' returned at {at} ns, before its invoke at {} ns",
                    op.client, op.input, op.key, op.call
                )));
            }
        }
        if op.output().is_none() && model.is_read_only(&op.input) {
            continue;
        }
        keys.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in keys {
        match search(model, &ops, options.max_steps) {
            Search::Linearizable => {}
            Search::Exhausted(steps) => {
                return Err(CheckError::BudgetExhausted {
                    key: key.to_string(),
                    operations: ops.len(),
                    steps,
                })
            }
            Search::Illegal(_) => {
                return Err(CheckError::NotLinearizable {
                    key: key.to_string(),
                    explanation: explain(model, key, &ops, options),
                })
            }
        }
    }
    Ok(())
}

/// What the search found out about one key.
enum Search<S> {
    Linearizable,
    /// Not linearizable; the deepest partial linearization found.
    Illegal(Deepest<S>),
    /// Out of steps after this many.
    Exhausted(u64),
}

/// The longest sequence of operations the search linearized, and the
/// state after it.
struct Deepest<S> {
    order: Vec<usize>,
    state: S,
}

/// A set of operation indices.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)].into_boxed_slice())
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Lowe's search over one key's operations.
fn search<M: Model>(model: &M, ops: &[&Operation<M::Input, M::Output>], max_steps: u64) -> Search<M::State> {
    let mut s = Searcher::new(model, ops);
    let mut steps = 0u64;
    // At the start of a level: look for a forced move first.
    let mut fresh = true;
    let mut entry = s.next[s.head()];
    loop {
        // Done once every operation with a known outcome is placed: those
        // left (unknown outcomes) can all go last, in any order.
        if s.known_left == 0 {
            return Search::Linearizable;
        }
        steps += 1;
        if steps > max_steps {
            return Search::Exhausted(max_steps);
        }
        if fresh {
            fresh = false;
            if let Some(e) = s.forced_move() {
                if s.place(e, s.state.clone(), true) {
                    fresh = true;
                    entry = s.next[s.head()];
                } else {
                    // Explored before, and failed: so does this level.
                    match s.backtrack() {
                        Some(e) => entry = e,
                        None => return Search::Illegal(s.deepest),
                    }
                }
                continue;
            }
            entry = s.next[s.head()];
        }
        if entry != NIL && is_call(entry) {
            if let Some(after) = s.try_step(entry / 2) {
                if s.place(entry, after, false) {
                    fresh = true;
                    entry = s.next[s.head()];
                    continue;
                }
            }
            entry = s.next[entry];
        } else {
            // The return of an operation not placed yet (or the end): every
            // order from here is wrong; undo the last choice, try the next.
            match s.backtrack() {
                Some(e) => entry = e,
                None => return Search::Illegal(s.deepest),
            }
        }
    }
}

const NIL: usize = usize::MAX;

/// Event 2i is operation i's call, 2i+1 its return.
fn is_call(event: usize) -> bool {
    event.is_multiple_of(2)
}

/// The state of [`search`]: events left in a doubly linked list (event 2i
/// is operation i's call, 2i+1 its return, a head sentinel at 2n), what
/// is placed, and the configurations seen.
struct Searcher<'a, M: Model> {
    model: &'a M,
    ops: &'a [&'a Operation<M::Input, M::Output>],
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Unknown outcomes with equal inputs are interchangeable: they form a
    /// class, and are placed in invoke order only (rank = done[class]).
    class: Vec<usize>,
    rank: Vec<usize>,
    done: Vec<usize>,
    linearized: Bits,
    seen: HashSet<(Bits, M::State)>,
    /// Each placed call event, the state before it, and whether it was a
    /// forced move (then its level has no alternative worth trying).
    stack: Vec<(usize, M::State, bool)>,
    state: M::State,
    known_left: usize,
    deepest: Deepest<M::State>,
}

impl<'a, M: Model> Searcher<'a, M> {
    fn new(model: &'a M, ops: &'a [&'a Operation<M::Input, M::Output>]) -> Searcher<'a, M> {
        let n = ops.len();
        // Calls before returns at equal instants: touching operations
        // count as concurrent.
        let time = |e: usize| {
            if is_call(e) {
                ops[e / 2].call
            } else {
                ops[e / 2].ret()
            }
        };
        let mut events: Vec<usize> = (0..2 * n).collect();
        events.sort_by_key(|&e| (time(e), e % 2, e / 2));
        let (mut next, mut prev) = (vec![NIL; 2 * n + 1], vec![NIL; 2 * n + 1]);
        let mut last = 2 * n;
        for &e in &events {
            next[last] = e;
            prev[e] = last;
            last = e;
        }
        let (mut class, mut rank) = (vec![NIL; n], vec![0; n]);
        let mut classes: Vec<(usize, usize)> = Vec::new(); // (first member, size)
        let mut by_call: Vec<usize> = (0..n).collect();
        by_call.sort_by_key(|&i| (ops[i].call, i));
        for &i in by_call.iter().filter(|&&i| ops[i].output().is_none()) {
            let c = match classes.iter().position(|&(r, _)| ops[r].input == ops[i].input) {
                Some(c) => c,
                None => {
                    classes.push((i, 0));
                    classes.len() - 1
                }
            };
            class[i] = c;
            rank[i] = classes[c].1;
            classes[c].1 += 1;
        }
        let state = model.init();
        Searcher {
            model,
            ops,
            next,
            prev,
            class,
            rank,
            done: vec![0; classes.len()],
            linearized: Bits::new(n),
            seen: HashSet::new(),
            stack: Vec::new(),
            known_left: ops.iter().filter(|op| op.output().is_some()).count(),
            deepest: Deepest {
                order: Vec::new(),
                state: state.clone(),
            },
            state,
        }
    }

    fn head(&self) -> usize {
        self.next.len() - 1
    }

    /// The state after operation `i` now, if it may go now.
    fn try_step(&self, i: usize) -> Option<M::State> {
        let op = self.ops[i];
        match op.output() {
            Some(output) => self.model.step(&self.state, &op.input, Some(output)),
            None => {
                if self.done[self.class[i]] != self.rank[i] {
                    return None;
                }
                // An unknown outcome that changes nothing now is better
                // left for later (it can always go last): never here.
                self.model
                    .step(&self.state, &op.input, None)
                    .filter(|after| *after != self.state)
            }
        }
    }

    /// A call that may go now, has a known outcome and never changes the
    /// state (a read that fits, a refusal): placing it first is never
    /// worse than any other choice (drop it from any completion, put it
    /// here), so it is the only move worth trying at this level.
    fn forced_move(&self) -> Option<usize> {
        let mut e = self.next[self.head()];
        while e != NIL && is_call(e) {
            let op = self.ops[e / 2];
            if let Some(output) = op.output() {
                if self.model.changes_nothing(&op.input, output)
                    && self.model.step(&self.state, &op.input, Some(output)).is_some()
                {
                    return Some(e);
                }
            }
            e = self.next[e];
        }
        None
    }

    /// Place call event `e`, leading to state `after`, unless that
    /// configuration was explored before (then false).
    fn place(&mut self, e: usize, after: M::State, forced: bool) -> bool {
        let i = e / 2;
        self.linearized.set(i);
        if !self.seen.insert((self.linearized.clone(), after.clone())) {
            self.linearized.clear(i);
            return false;
        }
        match self.ops[i].output() {
            Some(_) => self.known_left -= 1,
            None => self.done[self.class[i]] += 1,
        }
        let before = std::mem::replace(&mut self.state, after);
        self.stack.push((e, before, forced));
        for x in [e, e + 1] {
            self.next[self.prev[x]] = self.next[x];
            if self.next[x] != NIL {
                self.prev[self.next[x]] = self.prev[x];
            }
        }
        if self.stack.len() > self.deepest.order.len() {
            self.deepest.order = self.stack.iter().map(|&(e, _, _)| e / 2).collect();
            self.deepest.state = self.state.clone();
        }
        true
    }

    /// Undo placements up to the last one that has alternatives; the event
    /// to try next, or `None` when nothing is left to try.
    fn backtrack(&mut self) -> Option<usize> {
        loop {
            let (e, before, forced) = self.stack.pop()?;
            let i = e / 2;
            self.linearized.clear(i);
            match self.ops[i].output() {
                Some(_) => self.known_left += 1,
                None => self.done[self.class[i]] -= 1,
            }
            self.state = before;
            for x in [e + 1, e] {
                self.next[self.prev[x]] = x;
                if self.next[x] != NIL {
                    self.prev[self.next[x]] = x;
                }
            }
            if !forced {
                return Some(self.next[e]);
            }
        }
    }
}

/// The history up to `cutoff`: operations invoked by then, those still
/// running then with an unknown outcome (read-only ones left out).
fn prefix<M: Model>(
    model: &M,
    ops: &[&Operation<M::Input, M::Output>],
    cutoff: u64,
) -> Vec<Operation<M::Input, M::Output>> {
    ops.iter()
        .filter(|op| op.call <= cutoff)
        .filter_map(|op| {
            if op.ret() <= cutoff {
                return Some((*op).clone());
            }
            if model.is_read_only(&op.input) {
                return None;
            }
            Some(Operation {
                outcome: Outcome::Unknown,
                ..(*op).clone()
            })
        })
        .collect()
}

/// Why `ops` (one key, known not linearizable) are not: the shortest
/// non-linearizable prefix and what the search made of it.
fn explain<M: Model>(
    model: &M,
    key: &str,
    ops: &[&Operation<M::Input, M::Output>],
    options: &Options,
) -> String {
    // Linearizability is prefix-closed, and only a return can make a
    // prefix fail: bisect on return instants.
    let mut returns: Vec<u64> = ops
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Returned { at, .. } => Some(at),
            Outcome::Unknown => None,
        })
        .collect();
    returns.sort_unstable();
    returns.dedup();
    let fails = |cutoff: u64| {
        let p = prefix(model, ops, cutoff);
        let refs: Vec<&Operation<_, _>> = p.iter().collect();
        matches!(search(model, &refs, options.max_steps), Search::Illegal(_))
    };
    let (mut lo, mut hi) = (0usize, returns.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(returns[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let short: Vec<Operation<M::Input, M::Output>> = match returns.get(lo) {
        Some(&cutoff) => prefix(model, ops, cutoff),
        // No failing prefix found within the budget: the whole history.
        None => ops.iter().map(|op| (*op).clone()).collect(),
    };
    let cutoff = returns.get(lo).copied();
    let refs: Vec<&Operation<_, _>> = short.iter().collect();
    let deepest = match search(model, &refs, options.max_steps) {
        Search::Illegal(d) => Some(d),
        _ => None,
    };

    let origin = ops.iter().map(|op| op.call).min().unwrap_or(0);
    let at = |t: u64| {
        if t == u64::MAX {
            "never".to_string()
        } else {
            format!("{:.3} ms", (t - origin.min(t)) as f64 / 1e6)
        }
    };
    // Operations are numbered by invoke order within the key.
    let mut order: Vec<usize> = (0..short.len()).collect();
    order.sort_by_key(|&i| (short[i].call, i));
    let number = |i: usize| order.iter().position(|&j| j == i).unwrap_or(i) + 1;
    let describe = |i: usize| {
        let op = &short[i];
        let result = match &op.outcome {
            Outcome::Returned { output, .. } => format!("{output:?}"),
            Outcome::Unknown => "unknown outcome".to_string(),
        };
        format!(
            "#{} client {} [{} .. {}] {:?} -> {}",
            number(i),
            op.client,
            at(op.call),
            at(op.ret()),
            op.input,
            result
        )
    };

    let mut text = format!("key '{key}' is not linearizable ({} operations on it)", ops.len());
    match cutoff {
        Some(c) => {
            let culprit = (0..short.len())
                .filter(|&i| short[i].ret() == c)
                .map(describe)
                .collect::<Vec<_>>()
                .join("; ");
            text.push_str(&format!(
                ": already its first {} operations up to {} are not, when this returned:\n  {culprit}\n",
                short.len(),
                at(c)
            ));
        }
        None => text.push_str(":\n"),
    }
    text.push_str(
        "operations (times from the key's first invoke; operations running at the cut-off as unknown):\n",
    );
    let skipped = order.len().saturating_sub(options.max_listed);
    if skipped > 0 {
        text.push_str(&format!("  ... {skipped} earlier operations\n"));
    }
    for &i in &order[skipped..] {
        text.push_str(&format!("  {}\n", describe(i)));
    }
    if let Some(d) = deepest {
        let placed: HashSet<usize> = d.order.iter().copied().collect();
        let shown = d
            .order
            .iter()
            .map(|&i| format!("#{}", number(i)))
            .collect::<Vec<_>>()
            .join(" ");
        text.push_str(&format!(
            "longest linearization found: [{shown}] leaving state {:?}",
            d.state
        ));
        // Those that could have gone next (invoked before every pending
        // return), none of which fits.
        let first_return = (0..short.len())
            .filter(|i| !placed.contains(i))
            .map(|i| short[i].ret())
            .min()
            .unwrap_or(u64::MAX);
        let next: Vec<String> = (0..short.len())
            .filter(|&i| !placed.contains(&i) && short[i].call <= first_return && short[i].output().is_some())
            .map(|i| format!("#{}", number(i)))
            .collect();
        text.push_str(&format!("; none of [{}] can come next\n", next.join(" ")));
    }
    text
}

/// An operation on one service of the registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegistryInput {
    /// `register` at `address`.
    Register { address: String },
    /// `unregister` by `address`.
    Unregister { address: String },
    /// `locate` (or a list): who owns the service.
    Read,
}

/// What a registry operation answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegistryOutput {
    /// Register or unregister done.
    Ok,
    /// Code 5: the service is owned by another address.
    Refused,
    /// Code 3 (unregister): the service is not registered.
    NotFound,
    /// The owner's address, or `None` when the service is free.
    Read(Option<String>),
}

/// The registry, per service: its owner's address, or free. Register
/// succeeds when the service is free or owned by the same address (and
/// then sets it), unregister only when owned by that address (then frees
/// it), a read returns the owner. Leases are not modelled: record
/// histories with leases that outlive the test.
#[derive(Debug, Clone, Copy, Default)]
pub struct Registry;

impl Model for Registry {
    type State = Option<String>;
    type Input = RegistryInput;
    type Output = RegistryOutput;

    fn init(&self) -> Option<String> {
        None
    }

    fn step(
        &self,
        owner: &Option<String>,
        input: &RegistryInput,
        output: Option<&RegistryOutput>,
    ) -> Option<Option<String>> {
        use RegistryOutput as O;
        match input {
            RegistryInput::Register { address } => {
                let allowed = owner.as_ref().is_none_or(|o| o == address);
                match (output, allowed) {
                    (None | Some(O::Ok), true) => Some(Some(address.clone())),
                    (None | Some(O::Refused), false) => Some(owner.clone()),
                    _ => None,
                }
            }
            RegistryInput::Unregister { address } => match (output, owner) {
                (None | Some(O::Ok), Some(o)) if o == address => Some(None),
                (None | Some(O::NotFound), None) => Some(None),
                (None | Some(O::Refused), Some(o)) if o != address => Some(owner.clone()),
                _ => None,
            },
            RegistryInput::Read => match output {
                None => Some(owner.clone()),
                Some(O::Read(seen)) if seen == owner => Some(owner.clone()),
                _ => None,
            },
        }
    }

    fn is_read_only(&self, input: &RegistryInput) -> bool {
        *input == RegistryInput::Read
    }

    fn changes_nothing(&self, input: &RegistryInput, output: &RegistryOutput) -> bool {
        // Refusals and not-found change nothing; neither does register of
        // the owner's own address, but it also fits a free service, where
        // it does change the state.
        self.is_read_only(input) || matches!(output, RegistryOutput::Refused | RegistryOutput::NotFound)
    }
}

/// An operation of a registry history.
pub type RegistryOp = Operation<RegistryInput, RegistryOutput>;

/// Check a registry history, per service, with the default [`Options`].
pub fn check_registry(history: &[RegistryOp]) -> Result<(), CheckError> {
    check(&Registry, history)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegistryInput::{Read, Register, Unregister};

    const MS: u64 = 1_000_000;

    fn op(
        client: u64,
        key: &str,
        input: RegistryInput,
        call_ms: u64,
        ret_ms: u64,
        output: RegistryOutput,
    ) -> RegistryOp {
        Operation {
            client,
            key: key.into(),
            input,
            call: call_ms * MS,
            outcome: Outcome::Returned {
                at: ret_ms * MS,
                output,
            },
        }
    }

    fn unknown(client: u64, key: &str, input: RegistryInput, call_ms: u64) -> RegistryOp {
        Operation {
            client,
            key: key.into(),
            input,
            call: call_ms * MS,
            outcome: Outcome::Unknown,
        }
    }

    fn reg(a: &str) -> RegistryInput {
        Register { address: a.into() }
    }

    fn unreg(a: &str) -> RegistryInput {
        Unregister { address: a.into() }
    }

    fn saw(a: &str) -> RegistryOutput {
        RegistryOutput::Read(Some(a.into()))
    }

    const FREE: RegistryOutput = RegistryOutput::Read(None);
    const OK: RegistryOutput = RegistryOutput::Ok;
    const REFUSED: RegistryOutput = RegistryOutput::Refused;
    const NOT_FOUND: RegistryOutput = RegistryOutput::NotFound;

    fn explanation(h: &[RegistryOp]) -> String {
        match check_registry(h) {
            Err(CheckError::NotLinearizable { explanation, .. }) => explanation,
            other => panic!("expected a non-linearizable history, got {other:?}"),
        }
    }

    #[test]
    fn the_model_follows_the_registry_rules() {
        let m = Registry;
        let a = Some("a".to_string());
        assert_eq!(m.step(&None, &reg("a"), Some(&OK)), Some(a.clone()));
        assert_eq!(m.step(&a, &reg("a"), Some(&OK)), Some(a.clone()));
        assert_eq!(m.step(&a, &reg("b"), Some(&OK)), None);
        assert_eq!(m.step(&a, &reg("b"), Some(&REFUSED)), Some(a.clone()));
        assert_eq!(m.step(&None, &reg("b"), Some(&REFUSED)), None);
        assert_eq!(m.step(&a, &reg("b"), None), Some(a.clone()));
        assert_eq!(m.step(&None, &reg("b"), None), Some(Some("b".into())));
        assert_eq!(m.step(&a, &unreg("a"), Some(&OK)), Some(None));
        assert_eq!(m.step(&a, &unreg("b"), Some(&OK)), None);
        assert_eq!(m.step(&a, &unreg("b"), Some(&REFUSED)), Some(a.clone()));
        assert_eq!(m.step(&None, &unreg("b"), Some(&NOT_FOUND)), Some(None));
        assert_eq!(m.step(&a, &unreg("a"), Some(&NOT_FOUND)), None);
        assert_eq!(m.step(&a, &unreg("a"), None), Some(None));
        assert_eq!(m.step(&a, &Read, Some(&saw("a"))), Some(a.clone()));
        assert_eq!(m.step(&a, &Read, Some(&FREE)), None);
        assert_eq!(m.step(&None, &Read, Some(&FREE)), Some(None));
        // An output of the wrong kind never fits.
        assert_eq!(m.step(&None, &Read, Some(&OK)), None);
        assert_eq!(m.step(&None, &reg("a"), Some(&FREE)), None);
    }

    #[test]
    fn sequential_histories_are_accepted() {
        let h = vec![
            op(1, "/s", Read, 0, 1, FREE),
            op(1, "/s", reg("a"), 2, 3, OK),
            op(2, "/s", Read, 4, 5, saw("a")),
            op(2, "/s", reg("b"), 6, 7, REFUSED),
            op(2, "/s", unreg("b"), 8, 9, REFUSED),
            op(1, "/s", reg("a"), 10, 11, OK),
            op(1, "/s", unreg("a"), 12, 13, OK),
            op(2, "/s", unreg("a"), 14, 15, NOT_FOUND),
            op(2, "/s", reg("b"), 16, 17, OK),
            op(1, "/s", Read, 18, 19, saw("b")),
        ];
        assert_eq!(check_registry(&h), Ok(()));
        assert_eq!(check_registry(&[]), Ok(()));
    }

    #[test]
    fn concurrent_overlapping_operations_are_accepted() {
        // Two registers race; reads overlapping them see either order.
        let h = vec![
            op(1, "/s", reg("a"), 0, 10, OK),
            op(2, "/s", reg("b"), 1, 9, REFUSED),
            op(3, "/s", Read, 2, 3, FREE),
            op(4, "/s", Read, 4, 12, saw("a")),
            op(5, "/s", Read, 11, 13, saw("a")),
        ];
        assert_eq!(check_registry(&h), Ok(()));
        // The other winner: b registered first, so a's register is refused.
        let h = vec![
            op(1, "/s", reg("a"), 0, 10, REFUSED),
            op(2, "/s", reg("b"), 1, 9, OK),
            op(3, "/s", Read, 5, 6, saw("b")),
        ];
        assert_eq!(check_registry(&h), Ok(()));
        // A read overlapping an unregister sees the record or not; one
        // after it may not see it again... unless re-registered concurrently.
        let h = vec![
            op(1, "/s", reg("a"), 0, 1, OK),
            op(1, "/s", unreg("a"), 2, 10, OK),
            op(2, "/s", Read, 3, 4, saw("a")),
            op(3, "/s", Read, 5, 6, FREE),
            op(4, "/s", reg("a"), 7, 20, OK),
            op(2, "/s", Read, 11, 12, saw("a")),
            op(3, "/s", Read, 13, 14, saw("a")),
        ];
        assert_eq!(check_registry(&h), Ok(()));
    }

    #[test]
    fn touching_operations_count_as_concurrent() {
        // Ends equal: the read may go before the register.
        let h = vec![op(1, "/s", reg("a"), 0, 5, OK), op(2, "/s", Read, 5, 6, FREE)];
        assert_eq!(check_registry(&h), Ok(()));
    }

    #[test]
    fn unknown_outcomes_may_take_effect_late_or_never() {
        // Took effect, seen later.
        let h = vec![unknown(1, "/s", reg("a"), 0), op(2, "/s", Read, 10, 11, saw("a"))];
        assert_eq!(check_registry(&h), Ok(()));
        // Never took effect (so far): someone else registers.
        let h = vec![
            unknown(1, "/s", reg("a"), 0),
            op(2, "/s", Read, 10, 11, FREE),
            op(2, "/s", reg("b"), 12, 13, OK),
            op(3, "/s", Read, 14, 15, saw("b")),
        ];
        assert_eq!(check_registry(&h), Ok(()));
        // Took effect long after its client gave up: first free, then a.
        let h = vec![
            unknown(1, "/s", reg("a"), 0),
            op(2, "/s", Read, 10, 11, FREE),
            op(2, "/s", Read, 100, 101, saw("a")),
        ];
        assert_eq!(check_registry(&h), Ok(()));
        // An unknown unregister.
        let h = vec![
            op(1, "/s", reg("a"), 0, 1, OK),
            unknown(1, "/s", unreg("a"), 2),
            op(2, "/s", Read, 3, 4, saw("a")),
            op(2, "/s", Read, 5, 6, FREE),
        ];
        assert_eq!(check_registry(&h), Ok(()));
        // Unknown reads constrain nothing.
        let h = vec![unknown(1, "/s", Read, 0), op(1, "/s", reg("a"), 1, 2, OK)];
        assert_eq!(check_registry(&h), Ok(()));
    }

    #[test]
    fn an_unknown_outcome_takes_effect_once() {
        // Seen, then gone with nobody unregistering: not linearizable.
        let h = vec![
            unknown(1, "/s", reg("a"), 0),
            op(2, "/s", Read, 10, 11, saw("a")),
            op(2, "/s", Read, 12, 13, FREE),
        ];
        let e = explanation(&h);
        assert!(e.contains("key '/s'"), "{e}");
        // Before its invoke it cannot be seen.
        let h = vec![op(2, "/s", Read, 0, 1, saw("a")), unknown(1, "/s", reg("a"), 5)];
        explanation(&h);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_rejected() {
        let h = vec![op(1, "/s", reg("a"), 0, 1, OK), op(2, "/s", Read, 2, 3, FREE)];
        let e = explanation(&h);
        assert!(e.contains("#2 client 2"), "{e}");
        assert!(e.contains("Read(None)"), "{e}");
        // Also after an unregister.
        let h = vec![
            op(1, "/s", reg("a"), 0, 1, OK),
            op(1, "/s", unreg("a"), 2, 3, OK),
            op(2, "/s", Read, 4, 5, saw("a")),
        ];
        explanation(&h);
    }

    #[test]
    fn a_lost_acknowledged_register_is_rejected() {
        // Acknowledged, then another address gets the service without
        // anyone unregistering.
        let h = vec![
            op(1, "/s", reg("a"), 0, 1, OK),
            op(2, "/s", Read, 2, 3, saw("a")),
            op(3, "/s", reg("b"), 4, 5, OK),
        ];
        let e = explanation(&h);
        assert!(e.contains("Register { address: \"b\" }"), "{e}");
        // Acknowledged, then unregister finds nothing.
        let h = vec![
            op(1, "/s", reg("a"), 0, 1, OK),
            op(1, "/s", unreg("a"), 2, 3, NOT_FOUND),
        ];
        explanation(&h);
    }

    #[test]
    fn two_owners_are_rejected() {
        // Two registers racing both succeed.
        let h = vec![op(1, "/s", reg("a"), 0, 10, OK), op(2, "/s", reg("b"), 0, 10, OK)];
        explanation(&h);
        // Readers see different owners alternating.
        let h = vec![
            op(1, "/s", reg("a"), 0, 1, OK),
            op(3, "/s", Read, 2, 3, saw("a")),
            op(4, "/s", Read, 4, 5, saw("b")),
            op(3, "/s", Read, 6, 7, saw("a")),
        ];
        explanation(&h);
        // A refusal with nobody owning it.
        let h = vec![op(2, "/s", reg("b"), 0, 1, REFUSED)];
        explanation(&h);
    }

    #[test]
    fn keys_are_independent_and_the_bad_one_is_named() {
        let h = vec![
            op(1, "/a", reg("x"), 0, 1, OK),
            op(1, "/b", reg("y"), 0, 1, OK),
            op(2, "/a", Read, 2, 3, saw("x")),
            op(2, "/b", Read, 2, 3, FREE),
            op(2, "/c", Read, 2, 3, FREE),
        ];
        match check_registry(&h) {
            Err(CheckError::NotLinearizable { key, explanation }) => {
                assert_eq!(key, "/b");
                assert!(explanation.starts_with("key '/b'"), "{explanation}");
                assert!(!explanation.contains("\"x\""), "{explanation}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_explanation_is_the_shortest_failing_prefix() {
        let mut h = vec![
            op(1, "/s", reg("a"), 0, 1, OK),
            op(2, "/s", Read, 2, 3, saw("a")),
            // The violation: a stale read.
            op(3, "/s", Read, 4, 5, FREE),
        ];
        // Much more afterwards, concurrent and fine by itself.
        for i in 0..100 {
            h.push(op(1 + i % 3, "/s", Read, 10 + 2 * i, 11 + 2 * i, saw("a")));
        }
        let e = explanation(&h);
        assert!(e.contains("first 3 operations"), "{e}");
        assert!(
            e.contains("#3 client 3 [4.000 ms .. 5.000 ms] Read -> Read(None)"),
            "{e}"
        );
        assert!(!e.contains("#4"), "{e}");
        assert!(e.contains("longest linearization found: [#1 #2]"), "{e}");
        assert!(e.contains("none of [#3] can come next"), "{e}");
        // Operations still running at the cut-off are listed as unknown.
        let h = vec![
            op(1, "/s", reg("a"), 0, 1, OK),
            op(4, "/s", reg("c"), 2, 50, REFUSED),
            op(2, "/s", Read, 3, 4, FREE),
        ];
        let e = explanation(&h);
        assert!(e.contains("#2 client 4 [2.000 ms .. never]"), "{e}");
        assert!(e.contains("unknown outcome"), "{e}");
    }

    #[test]
    fn long_explanations_are_trimmed() {
        let mut h = vec![op(1, "/s", reg("a"), 0, 1, OK)];
        for i in 0..100 {
            h.push(op(2, "/s", Read, 2 + 2 * i, 3 + 2 * i, saw("a")));
        }
        h.push(op(3, "/s", Read, 1000, 1001, FREE));
        let e = explanation(&h);
        assert!(e.contains("... 62 earlier operations"), "{e}");
        assert!(e.lines().count() < 50, "{e}");
    }

    #[test]
    fn malformed_histories_are_refused() {
        let h = vec![op(1, "/s", Read, 5, 4, FREE)];
        assert!(matches!(check_registry(&h), Err(CheckError::Malformed(_))));
    }

    #[test]
    fn the_budget_is_reported_as_no_answer() {
        // Registers and unregisters of one address, all concurrent, then a
        // read no order explains: every order has to be tried.
        let h: Vec<RegistryOp> = (0..20)
            .map(|i| {
                op(
                    i,
                    "/s",
                    if i % 2 == 0 { reg("a") } else { unreg("a") },
                    0,
                    100,
                    OK,
                )
            })
            .chain([op(99, "/s", Read, 200, 201, saw("b"))])
            .collect();
        let options = Options {
            max_steps: 50,
            ..Options::default()
        };
        match check_with(&Registry, &h, &options) {
            Err(e @ CheckError::BudgetExhausted { .. }) => {
                assert!(e.to_string().contains("no answer within 50"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn many_concurrent_unknown_retries_stay_cheap() {
        // 60 timed-out retries of the same register, all concurrent, and a
        // read that only fits if none took effect before a's unregister.
        let mut h = vec![op(0, "/s", reg("a"), 0, 1, OK)];
        for i in 0..60 {
            h.push(unknown(1, "/s", reg("b"), 2 + i));
        }
        h.push(op(0, "/s", unreg("a"), 100, 101, OK));
        h.push(op(2, "/s", Read, 102, 103, saw("b")));
        for i in 0..60 {
            h.push(unknown(3, "/s", unreg("b"), 200 + i));
        }
        h.push(op(2, "/s", Read, 300, 301, FREE));
        let t = std::time::Instant::now();
        assert_eq!(check_registry(&h), Ok(()));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// A linearizable history by construction: `clients` clients doing
    /// `per_client` random operations each on `keys` keys, each taking
    /// effect at a random instant within its interval (outputs computed in
    /// that order), a few with their outcome lost.
    fn simulate(seed: u64, clients: u64, per_client: u64, keys: u64) -> Vec<RegistryOp> {
        let mut rng = Rng(seed | 1);
        // (effect instant, client, key, input, call, ret, outcome known)
        let mut planned = Vec::new();
        for c in 0..clients {
            let mut t = rng.below(1000);
            for _ in 0..per_client {
                let key = format!("/svc/{}", rng.below(keys));
                let address = format!("tcp://10.0.0.{}:1", rng.below(3));
                let input = match rng.below(10) {
                    0..=3 => Register { address },
                    4..=5 => Unregister { address },
                    _ => Read,
                };
                let call = t;
                let ret = call + 1 + rng.below(3000);
                let effect = call + rng.below(ret - call + 1);
                let known = rng.below(50) != 0;
                planned.push((effect, c, key, input, call, ret, known));
                t = ret + rng.below(500);
            }
        }
        planned.sort_by_key(|p| p.0);
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        let mut h = Vec::new();
        for (_, c, key, input, call, ret, known) in planned {
            let owner = owners.get(&key).cloned();
            let output = match &input {
                Register { address } if owner.as_ref().is_none_or(|o| o == address) => {
                    owners.insert(key.clone(), address.clone());
                    OK
                }
                Register { .. } => REFUSED,
                Unregister { address } if owner.as_ref() == Some(address) => {
                    owners.remove(&key);
                    OK
                }
                Unregister { .. } if owner.is_none() => NOT_FOUND,
                Unregister { .. } => REFUSED,
                Read => RegistryOutput::Read(owner),
            };
            h.push(Operation {
                client: c,
                key,
                input,
                call,
                outcome: if known {
                    Outcome::Returned { at: ret, output }
                } else {
                    Outcome::Unknown
                },
            });
        }
        h
    }

    #[test]
    fn simulated_linearizable_histories_are_accepted() {
        for seed in 1..=20 {
            let h = simulate(seed * 7919, 6, 60, 4);
            assert_eq!(check_registry(&h), Ok(()), "seed {seed}");
        }
    }

    #[test]
    fn a_corrupted_simulated_history_is_rejected() {
        // Make one read, long after everything settled, see an owner that
        // never was.
        let mut h = simulate(42, 6, 60, 4);
        let end = h
            .iter()
            .map(|op| op.output().map_or(op.call, |_| op.ret()))
            .max()
            .unwrap();
        h.push(op(
            99,
            "/svc/1",
            Read,
            end / MS + 1,
            end / MS + 2,
            saw("tcp://nobody:1"),
        ));
        let e = explanation(&h);
        assert!(e.contains("tcp://nobody:1"), "{e}");
    }

    #[test]
    fn five_thousand_operations_over_fifty_keys_check_fast() {
        let h = simulate(2024, 20, 250, 50);
        assert_eq!(h.len(), 5000);
        let t = std::time::Instant::now();
        assert_eq!(check_registry(&h), Ok(()));
        let took = t.elapsed();
        let limit = if cfg!(debug_assertions) { 10_000 } else { 1000 };
        assert!(took.as_millis() < limit, "took {took:?}");
    }

    /// Every order of `h` (one key) that respects real time, tried.
    fn brute_force(h: &[RegistryOp]) -> bool {
        fn go(h: &[RegistryOp], placed: &mut Vec<bool>, state: &Option<String>) -> bool {
            let left: Vec<usize> = (0..h.len()).filter(|&i| !placed[i]).collect();
            if left.is_empty() {
                return true;
            }
            let first_return = left.iter().map(|&i| h[i].ret()).min().unwrap();
            for &i in &left {
                if h[i].call > first_return {
                    continue;
                }
                if let Some(after) = Registry.step(state, &h[i].input, h[i].output()) {
                    placed[i] = true;
                    let ok = go(h, placed, &after);
                    placed[i] = false;
                    if ok {
                        return true;
                    }
                }
            }
            false
        }
        go(h, &mut vec![false; h.len()], &None)
    }

    #[test]
    fn the_search_agrees_with_brute_force() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..3000 {
            let n = 1 + rng.below(7) as usize;
            let h: Vec<RegistryOp> = (0..n)
                .map(|c| {
                    let address = ["a", "b"][rng.below(2) as usize].to_string();
                    let input = match rng.below(3) {
                        0 => Register { address },
                        1 => Unregister { address },
                        _ => Read,
                    };
                    let output = match (&input, rng.below(4)) {
                        (Read, 0) => FREE,
                        (Read, _) => saw(["a", "b"][rng.below(2) as usize]),
                        (_, 0 | 1) => OK,
                        (Register { .. }, _) => REFUSED,
                        (_, 2) => REFUSED,
                        _ => NOT_FOUND,
                    };
                    let call = rng.below(10);
                    let outcome = match rng.below(5) {
                        0 => Outcome::Unknown,
                        _ => Outcome::Returned {
                            at: call + rng.below(6),
                            output,
                        },
                    };
                    Operation {
                        client: c as u64,
                        key: "/k".into(),
                        input,
                        call,
                        outcome,
                    }
                })
                .collect();
            let expected = brute_force(&h);
            let got = check_registry(&h);
            assert_eq!(got.is_ok(), expected, "{h:#?}: {got:?}");
            if expected {
                yes += 1;
            } else {
                no += 1;
            }
        }
        // Both verdicts were exercised.
        assert!(yes > 300 && no > 300, "{yes} linearizable, {no} not");
    }

    #[test]
    fn forty_clients_on_one_key_check_fast() {
        // About 35 operations in flight at any time, all on one service.
        let h = simulate(77, 40, 50, 1);
        let t = std::time::Instant::now();
        assert_eq!(check_registry(&h), Ok(()));
        let took = t.elapsed();
        let limit = if cfg!(debug_assertions) { 20_000 } else { 2000 };
        assert!(took.as_millis() < limit, "took {took:?}");
    }

    /// A read/write register of one integer: the model is generic.
    struct IntRegister;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Rw {
        Write(i64),
        Read,
    }

    impl Model for IntRegister {
        type State = i64;
        type Input = Rw;
        type Output = i64;
        fn init(&self) -> i64 {
            0
        }
        fn step(&self, s: &i64, input: &Rw, output: Option<&i64>) -> Option<i64> {
            match (input, output) {
                (Rw::Write(v), _) => Some(*v),
                (Rw::Read, None) => Some(*s),
                (Rw::Read, Some(v)) => (v == s).then_some(*s),
            }
        }
    }

    #[test]
    fn other_models_plug_in() {
        let o = |client, input, call, at, output| Operation {
            client,
            key: "x".to_string(),
            input,
            call,
            outcome: Outcome::Returned { at, output },
        };
        // A read sees the new value, a later one the old: new-old inversion.
        let h = vec![
            o(1, Rw::Write(1), 0, 100, 0),
            o(2, Rw::Read, 10, 20, 1),
            o(3, Rw::Read, 30, 40, 0),
        ];
        assert!(matches!(
            check(&IntRegister, &h),
            Err(CheckError::NotLinearizable { .. })
        ));
        let h = vec![
            o(1, Rw::Write(1), 0, 100, 0),
            o(2, Rw::Read, 10, 20, 0),
            o(3, Rw::Read, 30, 40, 1),
        ];
        assert_eq!(check(&IntRegister, &h), Ok(()));
    }
}
