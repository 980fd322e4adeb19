//! call IFACE METHOD [ARGS_JSON]: locate a provider, then invoke it, with
//! file attachments out and back.

use super::Failure;
use crate::output;
use crate::Cli;
use pycom_client::{Binary, Context};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub struct Target<'a> {
    pub interface: &'a str,
    pub method: &'a str,
    pub args: Option<&'a str>,
    pub service: Option<&'a str>,
    pub attach: &'a [PathBuf],
    pub save_attachments: Option<&'a Path>,
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
    let mut component = match t.service {
        Some(service) => ctx.locate_service(t.interface, service)?,
        None => ctx.locate(t.interface)?,
    };
    let out = component.call(t.method, args, &attachments)?;
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
    if cli.json {
        output::json(&out.result);
    } else {
        match &out.result {
            Value::String(s) => println!("{s}"),
            other => output::json(other),
        }
        if !out.attachments.is_empty() && t.save_attachments.is_none() {
            eprintln!(
                "pycomctl: the reply has {} attachment(s); use --save-attachments DIR to keep them",
                out.attachments.len()
            );
        }
        for path in saved {
            eprintln!("saved {}", path.display());
        }
    }
    Ok(())
}
