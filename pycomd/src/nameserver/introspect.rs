//! `introspect`: the nameserver described in PyCOM's format (0.4's, with
//! 0.6's per-method `attachments` and top-level `data`), which PyCOM's
//! proxy client reads before its first call. Made from the
//! nameserver's declaration in pycom-client (`nameserver::api`), the one
//! list of its methods.

use super::Plan;
use pycom_client::nameserver::api;
use pycom_client::service::introspection_of;

pub fn introspect() -> Plan {
    Plan::reply(Ok(introspection_of(api::NAME, api::DOC, api::METHODS)))
}
