//! A workflow's endpoint: its ROUTER socket, its record, its
//! `introspect`, and what a task's caller may say in its extensions.

use super::definition::Definition;
use crate::registry::Record;
use pycom_client::proto;
use serde_json::Value;
use std::collections::BTreeMap;

/// One hosted workflow.
pub struct Hosted {
    pub def: Definition,
    pub socket: zmq::Socket,
    pub address: String,
}

impl Hosted {
    /// Its record: pycomd's own, not logged.
    pub fn record(&self) -> Record {
        let mut interfaces = vec![pycom_client::workflow::INTERFACE.to_string()];
        if self.def.interface != pycom_client::workflow::INTERFACE {
            interfaces.push(self.def.interface.clone());
        }
        interfaces.sort();
        Record {
            service: self.def.service.as_str().into(),
            address: self.address.clone(),
            interfaces,
            metadata: [("workflow".to_string(), "true".to_string())].into(),
            ttl_ms: None,
            revision: 0,
            owner: None,
        }
    }
}

/// `introspect` of a workflow: one method per task, as PyCOM 0.4 and 0.6
/// proxies read it.
pub fn introspection(def: &Definition) -> Value {
    let methods = def
        .tasks
        .iter()
        .map(|(name, task)| {
            let doc = match task.docstring.is_empty() {
                true => format!("Runs {} step(s) of workflow {}.", task.steps.len(), def.service),
                false => task.docstring.clone(),
            };
            (
                name.clone(),
                pycom_client::service::describe_method::<&str>(&[], &[], &[], (None, None), &doc),
            )
        })
        .collect();
    pycom_client::service::introspection(&def.interface, &def.docstring, &serde_json::Map::new(), methods)
}

/// `extensions["org.pycom.workflow"]["run_id"]` of a task's call, checked.
pub fn chosen_run_id(extensions: Option<&serde_json::value::RawValue>) -> Result<Option<String>, String> {
    let Some(raw) = extensions else {
        return Ok(None);
    };
    let ext: BTreeMap<String, Value> =
        serde_json::from_str(raw.get()).map_err(|e| format!("extensions: {e}"))?;
    let Some(v) = ext.get(pycom_client::workflow::EXTENSION) else {
        return Ok(None);
    };
    match v.get("run_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) => {
            pycom_client::workflow::check_run_id(id)?;
            Ok(Some(id.clone()))
        }
        Some(other) => Err(format!(
            "{}.run_id is a string, not {}",
            pycom_client::workflow::EXTENSION,
            proto::type_name(other)
        )),
    }
}

/// A workflow's endpoint.
pub fn bind(
    zmq: &zmq::Context,
    settings: &crate::config::Settings,
    def: Definition,
) -> Result<Hosted, String> {
    let fail = |e: zmq::Error| {
        format!(
            "workflow {}: cannot listen on {}: {e}",
            def.service, settings.workflow_listen
        )
    };
    let socket = zmq.socket(zmq::ROUTER).map_err(fail)?;
    socket.set_rcvhwm(settings.high_water_mark).map_err(fail)?;
    socket.set_sndhwm(settings.high_water_mark).map_err(fail)?;
    socket.set_linger(0).map_err(fail)?;
    socket.set_maxmsgsize(settings.frame_hard_cap()).map_err(fail)?;
    socket.bind(&settings.workflow_listen).map_err(fail)?;
    let address = socket
        .get_last_endpoint()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| settings.workflow_listen.clone());
    Ok(Hosted { def, socket, address })
}
