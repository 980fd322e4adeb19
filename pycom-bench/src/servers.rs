//! The servers the tool starts itself: the raw ZeroMQ echo baseline and a
//! pycom-client echo service.

use pycom_client::service::{Interface, RunningService, Service};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A ROUTER that sends every message straight back, frames untouched: the
/// most a ZeroMQ server can do on this machine.
pub struct RawEcho {
    pub endpoint: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawEcho {
    pub fn start(ctx: &zmq::Context) -> Result<RawEcho, String> {
        let socket = ctx.socket(zmq::ROUTER).map_err(|e| e.to_string())?;
        socket.set_linger(0).map_err(|e| e.to_string())?;
        socket.set_sndhwm(0).map_err(|e| e.to_string())?;
        socket.set_rcvhwm(0).map_err(|e| e.to_string())?;
        socket.bind("tcp://127.0.0.1:*").map_err(|e| e.to_string())?;
        let endpoint = socket
            .get_last_endpoint()
            .map_err(|e| e.to_string())?
            .map_err(|_| "endpoint is not UTF-8".to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if socket.poll(zmq::POLLIN, 100).unwrap_or(0) == 0 {
                    continue;
                }
                while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
                    let _ = socket.send_multipart(frames, zmq::DONTWAIT);
                }
            }
        });
        Ok(RawEcho {
            endpoint,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RawEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `bench.echo.echo(args) -> args`, hosted with pycom-client, unregistered.
pub fn echo_service(workers: usize) -> Result<RunningService, String> {
    let echo = Interface::new("bench.echo").handle("echo", |req| Ok(req.args.clone().into()));
    Service::builder("/bench/echo")
        .without_registration()
        .workers(workers)
        .interface(echo)
        .start()
        .map_err(|e| format!("cannot start the echo service: {e}"))
}
