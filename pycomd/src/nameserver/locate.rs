//! `locate {interface, service?, as_list?}`: a live provider, or all of them.

use super::args::{is_valid_name, Args};
use super::{Context, Plan};
use crate::registry::Record;
use pycom_client::proto::{self, Fault};
use pycom_client::router::BodyPool;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub fn locate(ctx: &mut Context, args: &Args) -> Plan {
    let parsed = (|| {
        let interface = args.str("interface")?;
        let service = args.opt_str("service")?;
        let as_list = args.opt_bool("as_list")?.unwrap_or(false);
        Ok((interface, service, as_list))
    })();
    match parsed {
        Ok((interface, service, as_list)) => find(ctx, interface, service, as_list),
        Err(fault) => Plan::fault(fault),
    }
}

/// The hot path: args decoded in place, borrowed (or already decoded by the
/// server, `located`). `None` when they need the general path (a wrong
/// type, an escaped or invalid name), which then names the problem.
pub fn fast(ctx: &mut Context, args: Option<&RawValue>, located: Option<Located>) -> Option<Plan> {
    let a = located.or_else(|| Located::of(args))?;
    Some(find(ctx, a.interface, a.service, a.as_list.unwrap_or(false)))
}

/// A locate's args as its hot path takes them, borrowed. The server reads
/// them for a whole batch before handling it, to warm the look-ups, and
/// hands them on (see `Server::serve_batch`).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Located<'a> {
    pub interface: &'a str,
    #[serde(default)]
    service: Option<&'a str>,
    #[serde(default)]
    as_list: Option<bool>,
}

impl<'a> Located<'a> {
    /// `None` when `args` need the general path.
    pub fn of(args: Option<&'a RawValue>) -> Option<Located<'a>> {
        let a: Located = serde_json::from_str(args?.get()).ok()?;
        if !is_valid_name(a.interface) || a.service.is_some_and(|s| !is_valid_name(s)) {
            return None;
        }
        Some(a)
    }
}

/// The answer: records come from the registry already as JSON.
fn find(ctx: &mut Context, interface: &str, service: Option<&str>, as_list: bool) -> Plan {
    let not_found = || match service {
        Some(s) => Fault::not_found(format!(
            "locate: no live service '{s}' provides interface '{interface}'"
        )),
        None => Fault::not_found(format!(
            "locate: no live service provides interface '{interface}'"
        )),
    };
    let revision = ctx.registry.state().revision();
    if as_list {
        let all = ctx.registry.providers(interface, service, |s| ctx.live(s));
        if all.is_empty() {
            return Plan::fault(not_found());
        }
        let views: Vec<_> = all.into_iter().map(Record::view).collect();
        let at = At {
            nameserver: Revision { revision },
        };
        return Plan::Read(Ok(proto::encode_response_with(Ok(&views), None, Some(&at))));
    }
    match ctx.registry.pick(interface, service, |s| ctx.live(s)) {
        Some(json) => reply(json, revision, ctx.bodies),
        None => Plan::fault(not_found()),
    }
}

/// What `encode_response_with(Ok(json), None, Some(&At))` makes, written
/// straight into the buffer that carries it: one copy of the record's JSON
/// per locate, the hottest reply pycomd makes (through a buffer it was two
/// copies and two allocations, and a serializer). The buffer is a recycled
/// one, or for a record too big for those a body of its own.
fn reply(json: &RawValue, revision: u64, bodies: &mut BodyPool) -> Plan {
    const HEAD: &[u8] = br#"{"code":0,"result":"#;
    const TAIL: &[u8] = br#","session_id":null,"extensions":{"org.pycom.nameserver":{"revision":"#;
    const END: &[u8] = b"}}}";
    let mut digits = [0u8; 20];
    let mut n = revision;
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let parts = [HEAD, json.get().as_bytes(), TAIL, &digits[start..], END];
    let len = parts.iter().map(|p| p.len()).sum();
    let write = |mut out: &mut [u8]| {
        for part in parts {
            let (head, rest) = out.split_at_mut(part.len());
            head.copy_from_slice(part);
            out = rest;
        }
    };
    match bodies.body(len) {
        Some(mut body) => {
            write(body.bytes_mut());
            Plan::Recycled(body)
        }
        None => {
            let mut body = vec![0; len];
            write(&mut body);
            Plan::Read(Ok(body))
        }
    }
}

/// `extensions["org.pycom.nameserver"] = {"revision": n}`: the revision the
/// answer was read at (a watcher's starting point).
#[derive(Serialize)]
struct At {
    #[serde(rename = "org.pycom.nameserver")]
    nameserver: Revision,
}

#[derive(Serialize)]
struct Revision {
    revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_what_the_encoder_makes() {
        let json = serde_json::value::to_raw_value(&serde_json::json!({
            "address": "tcp://127.0.0.1:1", "service": "/a/\"b\"", "interfaces": ["a.b"], "metadata": {}
        }))
        .unwrap();
        // One too big to be recycled, written into a body of its own.
        let big = serde_json::value::to_raw_value(&serde_json::json!({
            "address": "tcp://127.0.0.1:1", "service": "/a/b", "interfaces": ["a.b"],
            "metadata": {"k": "v".repeat(pycom_client::router::BODY_BUFFER_BYTES)}
        }))
        .unwrap();
        let mut bodies = BodyPool::default();
        for (json, recycled) in [(&json, true), (&big, false)] {
            for revision in [0, 7, 10, 100, 12_345, u64::MAX] {
                let at = At {
                    nameserver: Revision { revision },
                };
                let want = proto::encode_response_with(Ok(&**json), None, Some(&at));
                let got = match reply(json, revision, &mut bodies) {
                    Plan::Recycled(body) if recycled => body.bytes().to_vec(),
                    Plan::Read(Ok(body)) if !recycled => body,
                    other => panic!("revision {revision}, recycled {recycled}: {other:?}"),
                };
                assert_eq!(got, want, "revision {revision}");
            }
        }
    }
}
