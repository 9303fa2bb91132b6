//! The real-crash tests (`durability_sigkill`, `pages_checkpoint_crash`, `blob_sigkill`,
//! `blob_processes`) open with the default options: io_uring and O_DIRECT, in the child
//! and in the parent's reopen, with no fallback. This test says so loudly when the
//! machine refuses io_uring, rather than letting those tests be read as passing on
//! another backend.

use ringdb::{Db, Error, Options};

#[test]
fn default_backend_is_io_uring_and_available() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default();
    assert!(format!("{options:?}").contains("io_backend: Uring"), "the default backend changed: {options:?}");
    match Db::open(dir.path(), options) {
        Ok(db) => {
            db.put(b"k", b"v").unwrap();
            db.close().unwrap();
        }
        Err(e @ Error::IoUringUnavailable { .. }) => {
            panic!("io_uring is refused on this machine, so the SIGKILL tests cannot run on it: {e}")
        }
        Err(e) => panic!("open with the default options: {e}"),
    }
}
