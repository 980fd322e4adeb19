//! A follower's writes, relayed to the leader: the request as the client
//! sent it, over one DEALER connected to the leader's request endpoint;
//! the leader's reply goes back to the client as it came. `renew` is
//! relayed too (leases are the leader's).
//!
//! The leader sees this node as one peer, and its ROUTER drops replies to
//! a peer past its high-water mark: so at most [`Relay::window`] requests
//! are in flight, and the rest wait here, in order, until replies make
//! room. A relayed request with no reply within `write_timeout_ms` answers
//! code 7: outcome `unknown` once sent (the leader may still commit it),
//! `not_applied` if it never left.

use super::{outcome_fault, Outcome};
use pycom_client::proto::{self, Fault};
use pycom_client::router::Outbox;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tracing::debug;

/// Most relayed requests waiting for the leader; beyond, code 7.
const MAX_PENDING: usize = 16 * 1024;

struct Pending {
    envelope: Vec<zmq::Message>,
    deadline: Instant,
    /// How long it was given.
    timeout: Duration,
    method: String,
    /// Sent to the leader (else still waiting for room in the window).
    sent: bool,
}

pub struct Relay {
    ctx: zmq::Context,
    /// The leader's request endpoint and the socket connected to it.
    leader: Option<(String, zmq::Socket)>,
    pending: HashMap<u64, Pending>,
    /// Requests not sent yet, oldest first: their frames.
    waiting: VecDeque<(u64, Vec<zmq::Message>)>,
    in_flight: usize,
    window: usize,
    next: u64,
    timeout: Duration,
}

impl Relay {
    /// `leader_hwm`: the leader's high-water mark per peer (the
    /// `high_water_mark` setting): the window stays well below it.
    pub fn new(ctx: zmq::Context, timeout: Duration, leader_hwm: i32) -> Relay {
        Relay {
            ctx,
            leader: None,
            pending: HashMap::new(),
            waiting: VecDeque::new(),
            in_flight: 0,
            window: usize::try_from(leader_hwm / 2).unwrap_or(1).max(1),
            next: 0,
            timeout,
        }
    }

    /// Relay to `leader` from now on (`None`: no leader known). Requests
    /// relayed to a former leader may or may not have been applied; those
    /// not sent yet go to the new one.
    pub fn follow(&mut self, leader: Option<&str>, outbox: &mut Outbox) {
        if self.leader.as_ref().map(|(e, _)| e.as_str()) == leader {
            return;
        }
        self.fail_sent(outbox, "the leader changed while the write was relayed to it");
        self.leader = leader.and_then(|endpoint| {
            let socket = self.ctx.socket(zmq::DEALER).ok()?;
            socket.set_linger(0).ok()?;
            socket.set_sndhwm(MAX_PENDING as i32).ok()?;
            socket.set_rcvhwm(MAX_PENDING as i32).ok()?;
            socket.connect(endpoint).ok()?;
            Some((endpoint.to_string(), socket))
        });
        self.send_waiting();
    }

    /// The leader relayed to, if any.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_ref().map(|(e, _)| e.as_str())
    }

    /// Relay a request's frames (command, body) for `envelope`. With no
    /// leader known (an election) it waits for one, until its deadline
    /// (then: not applied). Refused at once when too many wait.
    pub fn forward(
        &mut self,
        envelope: Vec<zmq::Message>,
        frames: Vec<zmq::Message>,
        method: &str,
        now: Instant,
        timeout: Option<Duration>,
    ) -> Result<(), (Vec<zmq::Message>, Fault)> {
        let timeout = timeout.unwrap_or(self.timeout);
        if self.pending.len() >= MAX_PENDING {
            let fault = Fault::unavailable(format!(
                "{method}: {MAX_PENDING} writes are already waiting for the leader; nothing was changed: retry"
            ));
            return Err((envelope, fault));
        }
        self.next += 1;
        let id = self.next;
        self.pending.insert(
            id,
            Pending {
                envelope,
                deadline: now + timeout,
                timeout,
                method: method.to_string(),
                sent: false,
            },
        );
        self.waiting.push_back((id, frames));
        self.send_waiting();
        Ok(())
    }

    /// Send what waits, as far as the window allows.
    fn send_waiting(&mut self) {
        let Some((_, socket)) = &self.leader else {
            return;
        };
        while self.in_flight < self.window {
            let Some((id, frames)) = self.waiting.pop_front() else {
                return;
            };
            let Some(pending) = self.pending.get_mut(&id) else {
                continue; // Timed out while waiting.
            };
            let mut out: Vec<zmq::Message> = Vec::with_capacity(frames.len() + 2);
            out.push(zmq::Message::from(&id.to_le_bytes()[..]));
            out.push(zmq::Message::new());
            out.extend(frames);
            if socket.send_multipart(out, zmq::DONTWAIT).is_err() {
                // Not sent: it waits for its deadline (not applied).
                continue;
            }
            pending.sent = true;
            self.in_flight += 1;
        }
    }

    pub fn as_poll_item(&self) -> Option<zmq::PollItem<'_>> {
        self.leader.as_ref().map(|(_, s)| s.as_poll_item(zmq::POLLIN))
    }

    /// The leader's replies, back to their clients as they came.
    pub fn take_replies(&mut self, outbox: &mut Outbox) {
        let Some((_, socket)) = &self.leader else {
            return;
        };
        while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
            let id = frames
                .first()
                .and_then(|f| <[u8; 8]>::try_from(&f[..]).ok())
                .map(u64::from_le_bytes);
            let Some(pending) = id.and_then(|id| self.pending.remove(&id)) else {
                continue;
            };
            self.in_flight = self.in_flight.saturating_sub(1);
            // [id, "", status, body]
            let status = match frames.get(2).map(|s| &s[..]) {
                Some(b"OK") => proto::STATUS_OK,
                _ => proto::STATUS_FAIL,
            };
            let body = frames.get(3).cloned().unwrap_or_default();
            debug!(method = %pending.method, "relayed reply");
            outbox.push(pending.envelope, status, body);
        }
        self.send_waiting();
    }

    /// Relayed requests past their deadline: code 7, outcome unknown if
    /// sent, not applied if they never left.
    pub fn expire(&mut self, now: Instant, outbox: &mut Outbox) {
        if self.pending.is_empty() {
            return;
        }
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        let leader = self.leader().map(str::to_string);
        for id in late {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            let (fault, outcome) = if p.sent {
                self.in_flight = self.in_flight.saturating_sub(1);
                let fault = Outcome::Unknown.fault(format_args!(
                    "{}: the leader did not answer within {} ms",
                    p.method,
                    p.timeout.as_millis()
                ));
                (fault, Outcome::Unknown)
            } else {
                let why = if self.leader.is_some() {
                    "the leader was too busy to take it"
                } else {
                    "no leader was known (an election, or this node is cut off)"
                };
                let fault = Outcome::NotApplied.fault(format_args!(
                    "{}: {why} within {} ms",
                    p.method,
                    p.timeout.as_millis()
                ));
                (fault, Outcome::NotApplied)
            };
            outbox.push(
                p.envelope,
                proto::STATUS_OK,
                outcome_fault(&fault, outcome, leader.as_deref()),
            );
        }
        self.send_waiting();
    }

    /// Requests sent to a leader that is no longer: their fate is unknown.
    fn fail_sent(&mut self, outbox: &mut Outbox, why: &str) {
        let leader = self.leader().map(str::to_string);
        let sent: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.sent)
            .map(|(id, _)| *id)
            .collect();
        for id in sent {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            let fault = Outcome::Unknown.fault(format_args!("{}: {why}", p.method));
            outbox.push(
                p.envelope,
                proto::STATUS_OK,
                outcome_fault(&fault, Outcome::Unknown, leader.as_deref()),
            );
        }
        self.in_flight = 0;
    }

    /// When the next relayed request runs out of time.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }
}
