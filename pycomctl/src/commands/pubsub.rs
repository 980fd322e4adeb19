//! pub, sub, watch: pycomd's pub-sub forwarder and its registry events.
//!
//! Each waits for the forwarder to put its path in place before it says
//! anything: `pub` exits once the message is handed over, `sub` says
//! "subscribed" on stderr once every later publication will reach it, and
//! `watch` lists only after subscribing to the registry's events.

use super::Failure;
use crate::output;
use crate::Cli;
use pycom_client::pubsub::wire::{self, Pattern};
use pycom_client::pubsub::{Change, GapPolicy, Message, Start};
use pycom_client::{Binary, Context, Error, ServiceInfo};
use regex::Regex;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// A forwarder that did not answer is pycomd not answering (exit 3), named
/// by the endpoint that was tried.
fn forwarder_failure(e: Error) -> Failure {
    match e {
        Error::NotReady {
            endpoint, timeout_ms, ..
        } => Failure::NoNameserver {
            endpoints: vec![endpoint],
            why: format!("its pub-sub forwarder did not answer within {timeout_ms} ms"),
        },
        other => Failure::Client(other),
    }
}

pub fn publish(cli: &Cli, ctx: &Context, topic: &str, body: &str, attach: &[PathBuf]) -> Result<(), Failure> {
    if let Some(problem) = wire::topic_problem(topic) {
        return Err(Failure::Usage(format!("TOPIC: {problem}")));
    }
    if topic.starts_with(wire::RESERVED) {
        return Err(Failure::Usage(format!(
            "TOPIC: topics starting with '{}' are reserved for pycomd",
            wire::RESERVED
        )));
    }
    let body: Value =
        serde_json::from_str(body).map_err(|e| Failure::Usage(format!("JSON is not valid JSON: {e}")))?;
    let attachments = attach
        .iter()
        .map(Binary::from_path)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let mut publisher = ctx.publisher(topic).map_err(forwarder_failure)?;
    let seq = publisher.publish_with(&body, &attachments)?;
    if cli.json() {
        output::json(&json!({"topic": topic, "src": publisher.src(), "seq": seq}))?;
    } else {
        output::line(format_args!("published on {topic} (seq {seq})"))?;
    }
    // Dropping the publisher hands the message over (it lingers up to a
    // second for a slow connection) before pycomctl exits.
    Ok(())
}

pub fn subscribe(
    cli: &Cli,
    ctx: &Context,
    patterns: &[String],
    last: bool,
    count: Option<u64>,
) -> Result<(), Failure> {
    for pattern in patterns {
        Pattern::parse(pattern).map_err(Failure::Usage)?;
    }
    let start = if last { Start::Last } else { Start::New };
    let mut subscriber = ctx
        .subscriber()
        .patterns(patterns)
        .start(start)
        // Gaps come back as errors, to be said on stderr.
        .gaps(GapPolicy::Error)
        .connect()
        .map_err(forwarder_failure)?;
    output::note(format_args!(
        "pycomctl: subscribed to {} at {}",
        patterns.join(" "),
        subscriber.endpoint()
    ));
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        match subscriber.recv() {
            Ok(message) => {
                print_message(cli, &message)?;
                printed += 1;
            }
            Err(gap @ Error::Gap { .. }) => output::note(format_args!("pycomctl: {gap}")),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn print_message(cli: &Cli, m: &Message) -> std::io::Result<()> {
    // Re-encoded compactly: a body published with line breaks still
    // takes one line.
    let body = m.json();
    if cli.json() {
        output::line(json!({
            "topic": m.topic,
            "src": m.src,
            "seq": m.seq,
            "ts": m.ts,
            "replay": m.replay,
            "body": body,
            "attachments": m.attachments.len(),
        }))
    } else {
        output::line(format_args!("{} {} {body}", m.topic, m.seq))
    }
}

/// A start-anchored regular expression, as `list_services` takes them.
fn anchored(flag: &str, re: Option<&str>) -> Result<Option<Regex>, Failure> {
    re.map(|re| {
        Regex::new(&format!("^(?:{re})"))
            .map_err(|e| Failure::Usage(format!("{flag} is not a valid regex: {e}")))
    })
    .transpose()
}

pub fn watch(
    cli: &Cli,
    ctx: &Context,
    interface: Option<&str>,
    service: Option<&str>,
    count: Option<u64>,
) -> Result<(), Failure> {
    let interface = anchored("--interface", interface)?;
    let service = anchored("--service", service)?;
    let filter = move |r: &ServiceInfo| {
        service.as_ref().is_none_or(|re| re.is_match(&r.service))
            && interface
                .as_ref()
                .is_none_or(|re| r.interfaces.iter().any(|i| re.is_match(i)))
    };
    let mut watcher = ctx.watch_where(filter).map_err(forwarder_failure)?;
    let revision = watcher.revision();
    for record in watcher.view().values() {
        print_change(cli, revision, "listed", &record.service, Some(record), None)?;
    }
    output::note(format_args!(
        "pycomctl: watching {} record(s) from revision {revision}",
        watcher.view().len()
    ));
    let mut printed = 0;
    while count.is_none_or(|n| printed < n) {
        match watcher.next_change(Duration::from_secs(60)) {
            Ok(Some(change)) => {
                let Change {
                    kind,
                    service,
                    record,
                    previous,
                    revision,
                } = &change;
                print_change(
                    cli,
                    *revision,
                    kind.as_str(),
                    service,
                    record.as_ref(),
                    previous.as_ref(),
                )?;
                printed += 1;
            }
            Ok(None) => {}
            // pycomd restarting: the watcher catches up once it answers.
            Err(e) if e.is_unreachable() => output::note(format_args!(
                "pycomctl: cannot check the registry ({e}); trying again"
            )),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn print_change(
    cli: &Cli,
    revision: u64,
    kind: &str,
    service: &str,
    record: Option<&ServiceInfo>,
    previous: Option<&ServiceInfo>,
) -> std::io::Result<()> {
    if cli.json() {
        return output::line(json!({
            "revision": revision,
            "kind": kind,
            "service": service,
            "record": record,
            "previous": previous,
        }));
    }
    // A removal shows what was removed.
    let shown = record.or(previous);
    let dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
    let address = shown.map_or("-".to_string(), |r| r.address.clone());
    let interfaces = dash(shown.map(|r| r.interfaces.join(",")).unwrap_or_default());
    let metadata = dash(
        shown
            .map(|r| {
                r.metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
    );
    output::line(format_args!(
        "{revision} {kind} {service} {address} {interfaces} {metadata}"
    ))
}
