//! Password checks off the server thread: a hash at its real cost (argon2's
//! default is 64 MiB and a good fraction of a second) on the server thread
//! would stall every locate. `max(1, cores - 1)` threads take logins from a
//! bounded queue and post each verdict to the server's mailbox, which then
//! writes the login (or counts the failure).

use super::throttle;
use crate::mailbox::{Event, Poster};
use pycom_client::auth::PasswordFile;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Logins waiting for a thread, at most; more get code 7.
pub const QUEUE: usize = 1024;

/// One login to check.
pub struct Job {
    pub envelope: Vec<zmq::Message>,
    pub user: String,
    pub password: String,
    /// The users file when the login came (a reload may swap it meanwhile).
    pub users: Arc<PasswordFile>,
}

/// A checked login, for the server.
#[derive(Debug)]
pub struct Verdict {
    pub envelope: Vec<zmq::Message>,
    pub user: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Wrong user or password; the name is now held this long, if at all.
    Wrong(Option<Duration>),
    /// Not checked: the name was held by the time its turn came.
    Held(Duration),
}

pub struct Hasher {
    jobs: SyncSender<Job>,
    pub threads: usize,
}

impl Hasher {
    /// Start the threads, each posting with its own poster.
    pub fn start(
        posters: impl FnMut() -> Result<Poster, String>,
        throttle: &throttle::Shared,
    ) -> Result<Hasher, String> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .saturating_sub(1)
            .max(1);
        let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let mut posters = posters;
        for i in 0..threads {
            let poster = posters()?;
            let queue = queue.clone();
            let throttle = throttle.clone();
            std::thread::Builder::new()
                .name(format!("pycomd-hasher-{i}"))
                .spawn(move || work(&queue, &poster, &throttle))
                .map_err(|e| format!("cannot start a password hashing thread: {e}"))?;
        }
        Ok(Hasher { jobs, threads })
    }

    /// Queue a login; handed back when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => Err(job),
        }
    }
}

fn work(queue: &Mutex<Receiver<Job>>, poster: &Poster, throttle: &throttle::Shared) {
    loop {
        // The lock is held only to take a job, not while hashing.
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        let outcome = match throttle.held(&job.user, Instant::now()) {
            Some(wait) => Outcome::Held(wait),
            None if job.users.verify(&job.user, &job.password) => {
                throttle.succeeded(&job.user);
                Outcome::Ok
            }
            None => Outcome::Wrong(throttle.failed(&job.user, Instant::now())),
        };
        poster.post(Event::Verified(Verdict {
            envelope: job.envelope,
            user: job.user,
            outcome,
        }));
    }
}
