//! Named crash points for crash tests.
//!
//! A test process started with `RINGDB_FAILPOINT=<name>` aborts (like a power cut
//! for the process: no destructor, no flush) when it reaches the point of that
//! name. The environment is read once; with the variable unset each point costs a
//! load and a branch. Points in use: `checkpoint-pages-loaded`,
//! `checkpoint-pages-written`, `checkpoint-pages-synced`, `checkpoint-table-synced`,
//! `checkpoint-slot-synced`, `checkpoint-extents-freed`.

use std::sync::OnceLock;

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED.get_or_init(|| std::env::var("RINGDB_FAILPOINT").ok()).as_deref()
}

/// An injected I/O error if the process was started with `RINGDB_FAILPOINT=<name>`
/// (points in use: `checkpoint-error-pages-written`).
pub(crate) fn error(name: &str) -> crate::Result<()> {
    if armed() == Some(name) {
        return Err(crate::Error::io("failpoint", None, std::io::Error::other(format!("injected failure at {name}"))));
    }
    Ok(())
}

/// Aborts the process if it was started with `RINGDB_FAILPOINT=<name>`.
pub(crate) fn hit(name: &str) {
    if armed() == Some(name) {
        eprintln!("ringdb: failpoint {name} reached, aborting");
        std::process::abort();
    }
}
