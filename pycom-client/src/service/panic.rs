//! Panics in handlers become code-1 replies; their message and backtrace
//! are logged instead of printed by the default hook.

use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::sync::Once;

thread_local! {
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
    static REPORT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Run `f`; a panic comes back as `Err(report)` with message and backtrace.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_HANDLER.with(Cell::get) {
                let report = format!("{info}\n{}", Backtrace::force_capture());
                REPORT.with(|r| *r.borrow_mut() = Some(report));
            } else {
                previous(info);
            }
        }));
    });
    IN_HANDLER.with(|h| h.set(true));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(f));
    IN_HANDLER.with(|h| h.set(false));
    outcome.map_err(|payload| {
        REPORT.with(|r| r.borrow_mut().take()).unwrap_or_else(|| {
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".to_string())
        })
    })
}
