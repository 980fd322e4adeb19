//! Calls the echo service (run `--example echo_service` first).
//!
//!     cargo run --release -p pycom-client --example echo_client -- 'any JSON'

use pycom_client::Context;
use serde_json::Value;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::env::args()
        .nth(1)
        .unwrap_or_else(|| r#"{"hello": "world"}"#.to_string());
    let args: Value = serde_json::from_str(&text)?;
    let ctx = Context::from_env()?;
    let mut echo = ctx.locate("com.example.echo")?;
    let result = echo.invoke("echo", &args)?;
    println!("{} answered {result}", echo.address());
    Ok(())
}
