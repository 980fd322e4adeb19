//! call IFACE METHOD [ARGS_JSON]: locate a provider, then invoke it.

use super::{connect, Failure};
use crate::output;
use crate::Cli;
use pycom_client::NameserverClient;
use serde_json::Value;

pub fn call(
    cli: &Cli,
    ctx: &zmq::Context,
    ns: &mut NameserverClient,
    interface: &str,
    method: &str,
    args: Option<&str>,
    service: Option<&str>,
) -> Result<(), Failure> {
    let args: Value = match args {
        None => Value::Null,
        Some(text) => serde_json::from_str(text)
            .map_err(|e| Failure::Usage(format!("ARGS_JSON is not valid JSON: {e}")))?,
    };
    let target = ns.locate(interface, service)?;
    let mut conn = connect(ctx, &target.address, cli.timeout)?;
    let result = conn.invoke(interface, method, args)?;
    if cli.json {
        output::json(&result);
    } else {
        match &result {
            Value::String(s) => println!("{s}"),
            other => output::json(other),
        }
    }
    Ok(())
}
