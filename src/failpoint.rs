//! Named crash points for crash tests.
//!
//! A test process started with `RINGDB_FAILPOINT=<name>` aborts (like a power cut
//! for the process: no destructor, no flush) when it reaches the point of that
//! name. The environment is read once; with the variable unset each point costs a
//! load and a branch. Points in use: `checkpoint-pages-loaded`,
//! `checkpoint-pages-written`, `checkpoint-pages-synced`, `checkpoint-table-synced`,
//! `checkpoint-slot-synced`, `checkpoint-extents-freed`; in the transaction commit
//! protocol, `tx-all-prepared` (every participant prepared, no commit sent),
//! `tx-commit-sent-one` (one participant applied its commit, the others were not
//! told) and `tx-aborting` (a participant refused, the others not yet told).
//!
//! The points exist only with the `sim` cargo feature (the tests enable it); without
//! it each is an empty inline function the compiler removes, and the environment is
//! never read.

#[cfg(feature = "sim")]
mod armed {
    use std::sync::OnceLock;

    fn armed() -> Option<&'static str> {
        static ARMED: OnceLock<Option<String>> = OnceLock::new();
        ARMED.get_or_init(|| std::env::var("RINGDB_FAILPOINT").ok()).as_deref()
    }

    /// An injected I/O error if the process was started with `RINGDB_FAILPOINT=<name>`
    /// (points in use: `checkpoint-error-pages-written`).
    pub(crate) fn error(name: &str) -> crate::Result<()> {
        if armed() == Some(name) {
            return Err(crate::Error::io(
                "failpoint",
                None,
                std::io::Error::other(format!("injected failure at {name}")),
            ));
        }
        Ok(())
    }

    /// Like [`hit`], once the answer `rx` is about to be ready: waits for it first (without
    /// taking it), so the crash comes after what the answer reports.
    pub(crate) fn hit_after<T>(name: &str, rx: &oneshot::Receiver<T>) {
        if armed() == Some(name) {
            while !rx.has_message() {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            hit(name);
        }
    }

    /// Aborts the process if it was started with `RINGDB_FAILPOINT=<name>`.
    pub(crate) fn hit(name: &str) {
        if armed() == Some(name) {
            eprintln!("ringdb: failpoint {name} reached, aborting");
            std::process::abort();
        }
    }
}

#[cfg(not(feature = "sim"))]
mod armed {
    /// No injected error: failpoints are compiled with the `sim` feature only.
    #[inline(always)]
    #[expect(
        clippy::unnecessary_wraps,
        reason = "the same signature as the `sim` build's, whose failpoint can answer an error"
    )]
    pub(crate) fn error(_name: &str) -> crate::Result<()> {
        Ok(())
    }

    /// Nothing: failpoints are compiled with the `sim` feature only.
    #[inline(always)]
    pub(crate) fn hit_after<T>(_name: &str, _rx: &oneshot::Receiver<T>) {}

    /// Nothing: failpoints are compiled with the `sim` feature only.
    #[inline(always)]
    pub(crate) fn hit(_name: &str) {}
}

pub(crate) use armed::{error, hit, hit_after};
