//! Signals become events on the server's events socket, so the server
//! handles them in its own loop, between requests.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use std::thread::JoinHandle;

/// First frame of a signal event: `[SIGNAL, name]`.
pub const EVENT_SIGNAL: &[u8] = b"SIGNAL";

/// Forward SIGTERM, SIGINT and SIGHUP to `events` (a connected PUSH
/// socket). Close the returned handle to stop the thread.
pub fn spawn(events: zmq::Socket) -> Result<(Handle, JoinHandle<()>), String> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("pycomd-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name: &[u8] = match signal {
                    SIGHUP => b"HUP",
                    SIGINT => b"INT",
                    _ => b"TERM",
                };
                if let Err(e) = events.send_multipart([EVENT_SIGNAL, name], 0) {
                    tracing::error!("cannot forward a signal: {e}");
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok((handle, thread))
}
