//! An echo service: `com.example.echo.echo(args)` returns its args and
//! attachments. Registers with the nameserver in PYCOM_NAMESERVER (default
//! tcp://127.0.0.1:2012) and serves until Ctrl-C, then unregisters.
//!
//!     cargo run --release -p pycomd &
//!     cargo run --release -p pycom-client --example echo_service
//!     target/release/pycomctl call com.example.echo echo '{"hello": "world"}'

use pycom_client::service::{Interface, Method, Reply, Service};
use pycom_client::Binary;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let echo = Interface::new("com.example.echo")
        .doc("Echoes what it is sent.")
        .method(
            Method::new("echo", |req| {
                let mut reply = Reply::new(req.args.clone());
                for attachment in &req.attachments {
                    reply = reply.attach(Binary::from_bytes(
                        attachment.bytes().map_err(io_fault)?.into_owned(),
                    ));
                }
                Ok(reply)
            })
            .doc("Return the args and attachments unchanged."),
        );
    let running = Service::builder("/com/example/echo").interface(echo).start()?;
    println!("echo service on {}", running.endpoint());
    wait_for_ctrl_c()?;
    running.stop();
    Ok(())
}

fn io_fault(e: std::io::Error) -> pycom_client::Fault {
    pycom_client::Fault::new(
        pycom_client::Code::Unknown,
        format!("cannot read an attachment: {e}"),
    )
}

fn wait_for_ctrl_c() -> std::io::Result<()> {
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    signals.forever().next();
    Ok(())
}
