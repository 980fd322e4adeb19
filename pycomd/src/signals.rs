//! Signals become [`Event::Signal`]s in the server's mailbox, so the server
//! handles them in its own loop, between requests.

use crate::mailbox::{Event, Poster, Signal};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use std::thread::JoinHandle;

/// Forward SIGTERM, SIGINT and SIGHUP to the server. Close the returned
/// handle to stop the thread.
pub fn spawn(poster: Poster) -> Result<(Handle, JoinHandle<()>), String> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("pycomd-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let signal = match signal {
                    SIGHUP => Signal::Reload,
                    SIGINT => Signal::Stop("INT"),
                    _ => Signal::Stop("TERM"),
                };
                poster.post(Event::Signal(signal));
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok((handle, thread))
}
