//! Keeps a service registered: renews its lease every third of it,
//! registers again when the nameserver forgot it (pycomd restarted with an
//! empty registry, or the lease ran out during a pause), unregisters on stop.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::proto::Code;
use crate::Registration;
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

pub struct Registrar {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Registrar {
    /// Unregister and stop renewing.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Register now (so a refusal is the caller's error), then keep it up.
pub fn start(ctx: Context, registration: Registration, lease: Duration) -> Result<Registrar> {
    let mut ns = ctx.nameserver();
    ns.register(&registration)?;
    tracing::info!(service = %registration.service, address = %registration.address, "registered");
    let (stop, stopped) = std::sync::mpsc::channel();
    let every = (lease / 3).max(Duration::from_millis(10));
    let thread = std::thread::Builder::new()
        .name("pycom-registrar".into())
        .spawn(move || {
            // Anything but a timeout (a stop, or the service dropped) ends it.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let renewed = ns.renew(&registration.service, &registration.address);
                match renewed {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(Code::ServiceNotFound) => match ns.register(&registration) {
                        Ok(_) => tracing::info!(service = %registration.service, "registered again: the nameserver had forgotten it"),
                        Err(e) => tracing::warn!(service = %registration.service, "cannot register again: {e}"),
                    },
                    Err(e) => tracing::warn!(service = %registration.service, "cannot renew the lease: {e}"),
                }
            }
            match ns.unregister(&registration.service, &registration.address) {
                Ok(_) => tracing::info!(service = %registration.service, "unregistered"),
                Err(e) => tracing::warn!(service = %registration.service, "cannot unregister: {e}"),
            }
        })
        .map_err(|e| Error::Data(format!("cannot start the registrar thread: {e}")))?;
    Ok(Registrar { stop, thread })
}
