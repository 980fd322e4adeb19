//! call IFACE METHOD [ARGS_JSON]: locate a provider, then invoke it, with
//! file attachments out and back.
//!
//! One try unless `--retry N` asks for more: a call that got no answer may
//! have run all the same, and pycomctl cannot know whether the method is
//! safe to run twice. pycom-client's own retries are switched off; each
//! retry here is said on stderr and locates the service again first.

use super::{unanswered, Failure};
use crate::output;
use crate::Cli;
use pycom_client::{Binary, Component, Context, RetryPolicy, ServiceInfo};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub struct Target<'a> {
    pub interface: &'a str,
    pub method: &'a str,
    pub args: Option<&'a str>,
    pub service: Option<&'a str>,
    pub attach: &'a [PathBuf],
    pub save_attachments: Option<&'a Path>,
    /// Tries after the first when the service does not answer.
    pub retries: u32,
}

/// Locate a provider and connect to it, with no retries of its own.
fn connect(ctx: &Context, t: &Target) -> Result<(ServiceInfo, Component), Failure> {
    let info = ctx.nameserver().locate(t.interface, t.service)?;
    let mut component = ctx.connect(&info.address, t.interface)?;
    component.set_retry(RetryPolicy::never());
    Ok((info, component))
}

pub fn call(cli: &Cli, ctx: &Context, t: Target) -> Result<(), Failure> {
    let args: Value = match t.args {
        None => Value::Null,
        Some(text) => serde_json::from_str(text)
            .map_err(|e| Failure::Usage(format!("ARGS_JSON is not valid JSON: {e}")))?,
    };
    let attachments = t
        .attach
        .iter()
        .map(Binary::from_path)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let tries = t.retries.saturating_add(1);
    let (mut info, mut component) = connect(ctx, &t)?;
    let mut attempt = 1;
    let out = loop {
        match component.call(t.method, &args, &attachments) {
            Ok(out) => break out,
            Err(e) if e.is_unreachable() => {
                let why = unanswered(&e);
                if attempt >= tries {
                    return Err(Failure::NoService {
                        address: info.address,
                        interface: t.interface.to_string(),
                        service: info.service,
                        why,
                    });
                }
                attempt += 1;
                output::note(format_args!(
                    "pycomctl: {} at {}: {why}; retrying (try {attempt} of {tries})",
                    info.service, info.address
                ));
                (info, component) = connect(ctx, &t)?;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut saved = Vec::new();
    if let Some(dir) = t.save_attachments {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", dir.display())))?;
        for (i, attachment) in out.attachments.iter().enumerate() {
            let path = dir.join(format!("attachment-{i}"));
            attachment
                .save(&path)
                .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", path.display())))?;
            saved.push(path);
        }
    }
    if cli.json() {
        output::json(&out.result)?;
    } else {
        match &out.result {
            Value::String(s) => output::line(s)?,
            other => output::json(other)?,
        }
        if !out.attachments.is_empty() && t.save_attachments.is_none() {
            output::note(format_args!(
                "pycomctl: the reply has {} attachment(s); use --save-attachments DIR to keep them",
                out.attachments.len()
            ));
        }
        for path in saved {
            output::note(format_args!("saved {}", path.display()));
        }
    }
    Ok(())
}
