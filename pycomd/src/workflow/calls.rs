//! The calls a workflow's steps make, on a pool of threads
//! (`workflow_calls` of them) so that a slow provider never holds the
//! server thread. Each thread keeps a connection per provider address;
//! a call that times out throws its socket away (`Connection` does), so a
//! late reply is never taken for the next call's. Results go back to the
//! server through its mailbox.

use crate::mailbox::{Event, Poster, Posters};
use crate::registry::runs::{At, StepOutcome};
use pycom_client::proto::{Code, Request};
use pycom_client::{Connection, Error};
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connections a thread keeps open; past it, it starts afresh.
const CONNECTIONS_PER_THREAD: usize = 256;

/// One call to make.
#[derive(Debug)]
pub struct Job {
    pub run_id: Arc<str>,
    pub at: At,
    pub attempt: u32,
    pub address: String,
    pub request: Request,
    pub token: Option<String>,
    pub attachments: Arc<Vec<Vec<u8>>>,
    pub timeout: Duration,
}

/// How it went.
#[derive(Debug)]
pub struct Called {
    pub run_id: Arc<str>,
    pub at: At,
    pub attempt: u32,
    pub outcome: StepOutcome,
    pub attachments: Vec<Vec<u8>>,
    pub took: Duration,
}

/// The queue the threads share.
type Queue = Arc<Mutex<Receiver<Job>>>;

pub struct Pool {
    jobs: Sender<Job>,
    /// What the threads are started with, at the first call: a pycomd
    /// that hosts no workflow (or none called yet) starts none, and their
    /// sockets take no file descriptors.
    idle: Option<(zmq::Context, Posters, usize, Queue)>,
}

impl Pool {
    /// `threads` threads, each reporting through a poster of its own.
    pub fn new(zmq: &zmq::Context, posters: Posters, threads: usize) -> Pool {
        let (jobs, queue) = mpsc::channel::<Job>();
        Pool {
            jobs,
            idle: Some((zmq.clone(), posters, threads.max(1), Arc::new(Mutex::new(queue)))),
        }
    }

    pub fn submit(&mut self, job: Job) {
        if let Some((zmq, posters, threads, queue)) = self.idle.take() {
            for i in 0..threads {
                let poster = match posters.poster() {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!("cannot start a workflow call thread: {e}");
                        continue;
                    }
                };
                let (queue, zmq) = (queue.clone(), zmq.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("pycomd-wf-{i}"))
                    .spawn(move || work(&zmq, &queue, &poster));
                if let Err(e) = spawned {
                    tracing::error!("cannot start a workflow call thread: {e}");
                }
            }
        }
        // The threads live as long as the process.
        let _ = self.jobs.send(job);
    }
}

fn work(zmq: &zmq::Context, queue: &Mutex<Receiver<Job>>, poster: &Poster) {
    let mut connections: HashMap<String, Connection> = HashMap::new();
    loop {
        let job = match queue.lock() {
            Ok(queue) => match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        if connections.len() >= CONNECTIONS_PER_THREAD && !connections.contains_key(&job.address) {
            connections.clear();
        }
        let started = Instant::now();
        let (outcome, attachments) = call(zmq, &mut connections, &job);
        poster.post(Event::WorkflowCalled(Box::new(Called {
            run_id: job.run_id,
            at: job.at,
            attempt: job.attempt,
            outcome,
            attachments,
            took: started.elapsed(),
        })));
    }
}

fn call(
    zmq: &zmq::Context,
    connections: &mut HashMap<String, Connection>,
    job: &Job,
) -> (StepOutcome, Vec<Vec<u8>>) {
    let conn = match connections.entry(job.address.clone()) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => match Connection::open(zmq, &job.address) {
            Ok(conn) => e.insert(conn),
            Err(err) => {
                return (
                    failed(
                        Code::Unavailable,
                        format!("cannot connect to {}: {err}", job.address),
                    ),
                    Vec::new(),
                )
            }
        },
    };
    conn.set_timeout(job.timeout);
    conn.set_token(job.token.as_deref());
    let frames: Vec<&[u8]> = job.attachments.iter().map(Vec::as_slice).collect();
    match conn.call(&job.request, &frames) {
        Ok(reply) => match reply.response.result {
            Ok(value) => (StepOutcome::Ok(value), reply.attachments),
            Err(fault) => (failed(fault.code, fault.message), Vec::new()),
        },
        Err(Error::Timeout { .. }) => (
            failed(
                Code::Unavailable,
                format!(
                    "no answer from {} within timeout_ms = {}",
                    job.address,
                    job.timeout.as_millis()
                ),
            ),
            Vec::new(),
        ),
        // FAIL, a reply that is not one, an unreachable peer: worth a retry.
        Err(e) => (
            failed(Code::Unavailable, format!("{}: {e}", job.address)),
            Vec::new(),
        ),
    }
}

fn failed(code: Code, message: String) -> StepOutcome {
    StepOutcome::Err {
        code: code.as_number(),
        message,
    }
}
