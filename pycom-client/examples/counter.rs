//! A stateful counter using sessions: each client counts on its own.
//! Hosts the service and runs two clients against it, in one process.
//!
//!     cargo run --release -p pycomd &
//!     cargo run --release -p pycom-client --example counter

use pycom_client::service::{Interface, Method, Service};
use pycom_client::Context;
use serde_json::json;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counter = Interface::new("com.example.counter").method(
        Method::new("increment", |req| {
            let by: i64 = req.opt_arg("by")?.unwrap_or(1);
            let count = req.session.get("count").and_then(|v| v.as_i64()).unwrap_or(0) + by;
            // Storing into the session creates it; its id goes back to the client.
            req.session.insert("count".into(), json!(count));
            Ok(json!(count).into())
        })
        .optional(&["by"])
        .doc("Add `by` (default 1) to this client's count and return it."),
    );
    let ctx = Context::from_env()?;
    let running = Service::builder("/com/example/counter")
        .context(ctx.clone())
        .interface(counter)
        .sessions(Duration::from_secs(60), 10_000)
        .start()?;

    let mut alice = ctx.locate("com.example.counter")?;
    let mut bob = ctx.locate("com.example.counter")?;
    for _ in 0..3 {
        alice.invoke("increment", json!(null))?;
    }
    let a: i64 = alice.invoke_as("increment", json!({"by": 10}))?;
    let b: i64 = bob.invoke_as("increment", json!(null))?;
    println!(
        "alice counted {a} (session {:?}), bob counted {b}",
        alice.session_id()
    );
    running.stop();
    Ok(())
}
