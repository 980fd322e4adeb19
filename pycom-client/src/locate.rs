//! How a [`Component`](crate::Component) finds its service again after a
//! timeout or a restart: a [`Locator`], which [`Context`](crate::Context)
//! implements by asking its nameservers.

use crate::error::Result;
use crate::nameserver::ServiceInfo;

/// Something that says where a live provider of an interface is now.
///
/// Components hold one (shared, as `Arc<dyn Locator>`) to re-locate their
/// service when a call fails in transport, rather than a whole
/// [`Context`](crate::Context).
pub trait Locator: Send + Sync {
    /// One live provider of `interface`, of the service `service` if given.
    fn provider(&self, interface: &str, service: Option<&str>) -> Result<ServiceInfo>;
}
