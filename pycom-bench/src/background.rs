//! A client that loops `list_services` while a measurement runs, to see
//! what big reads cost everyone else (`--background-lists`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Which lists the background client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lists {
    /// The whole list, again and again (the same reply while nothing changes).
    Whole,
    /// Pages of 10,000 records walking through the registry, round and round.
    Pages,
}

pub struct Background {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(u64, Duration), String>>,
}

impl Background {
    pub fn start(ctx: &zmq::Context, endpoint: &str, lists: Lists) -> Result<Background, String> {
        let socket = ctx.socket(zmq::DEALER).map_err(|e| e.to_string())?;
        socket.set_linger(0).map_err(|e| e.to_string())?;
        socket.connect(endpoint).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut done, mut busy) = (0u64, Duration::ZERO);
            let mut after: Option<String> = None;
            while !flag.load(Ordering::Relaxed) {
                let args = match (lists, &after) {
                    (Lists::Whole, _) => serde_json::json!(null),
                    (Lists::Pages, None) => serde_json::json!({"limit": 10_000}),
                    (Lists::Pages, Some(a)) => serde_json::json!({"limit": 10_000, "after": a}),
                };
                let body = serde_json::json!({"interface": "org.pycom.nameserver", "method": "list_services", "args": args});
                let started = Instant::now();
                socket
                    .send_multipart([&b""[..], b"CALL", body.to_string().as_bytes()], 0)
                    .map_err(|e| e.to_string())?;
                if socket.poll(zmq::POLLIN, 5_000).map_err(|e| e.to_string())? == 0 {
                    return Err("a background list got no reply within 5 s".into());
                }
                let reply = socket.recv_multipart(0).map_err(|e| e.to_string())?;
                busy += started.elapsed();
                done += 1;
                if lists == Lists::Pages {
                    let next = reply
                        .last()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                        .and_then(|v| {
                            v["extensions"]["org.pycom.nameserver"]["next"]
                                .as_str()
                                .map(String::from)
                        });
                    after = next;
                }
            }
            Ok((done, busy))
        });
        Ok(Background { stop, thread })
    }

    /// Stop; how many lists were answered and their mean time.
    pub fn stop(self) -> Result<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        let (done, busy) = self
            .thread
            .join()
            .map_err(|_| "the background thread panicked".to_string())??;
        let mean_ms = busy.as_secs_f64() * 1e3 / done.max(1) as f64;
        Ok(format!(
            "{done} lists answered meanwhile, {mean_ms:.1} ms each on average"
        ))
    }
}
