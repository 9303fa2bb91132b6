//! Values returned by reads, and the future of a write's acknowledgement.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{Error, Result};

/// A value read from the database. Cheap to clone; derefs to `[u8]`.
///
/// It shares memory with the database's own copy (no copy is made on a read), and stays
/// valid after the key is overwritten or deleted.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
/// db.put("k", "hello")?;
/// let value = db.get("k")?.expect("just written");
/// assert_eq!(value, b"hello"); // compares with byte strings
/// assert_eq!(&value[..2], b"he"); // derefs to [u8]
/// db.put("k", "overwritten")?;
/// assert_eq!(value, b"hello"); // still the value that was read
/// db.put("copy", &value)?; // a Value is bytes: write it back as it is
/// let owned: Vec<u8> = value.into();
/// assert_eq!(owned, b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Value(pub(crate) Bytes);

impl Value {
    /// The value as [`Bytes`].
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq<[u8]> for Value {
    fn eq(&self, other: &[u8]) -> bool {
        self.0 == other
    }
}

impl PartialEq<&[u8]> for Value {
    fn eq(&self, other: &&[u8]) -> bool {
        self.0 == *other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Value {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.0 == other[..]
    }
}

impl From<Value> for Vec<u8> {
    fn from(v: Value) -> Vec<u8> {
        v.0.to_vec()
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The acknowledgement of a write (or a flush), completed by the shard thread(s).
///
/// Call [`Ack::wait`] to block the calling thread, or `.await` it on any executor: it
/// needs no particular runtime. Dropping it does not cancel the write. (A write batch
/// spanning shards commits through the transaction protocol before
/// `Db::write_batch_async` returns, so its `Ack` is complete from the start.)
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let db = ringdb::Db::open(dir.path(), ringdb::Options::default())?;
/// // Several writes in flight from one thread: the shards make them durable together.
/// let acks: Vec<ringdb::Ack> = (0..8u8).map(|i| db.put_async([i], [i])).collect();
/// for ack in acks {
///     ack.wait()?;
/// }
/// assert_eq!(db.get([7u8])?.as_deref(), Some(&[7u8][..]));
///
/// // Or await it, on any executor.
/// let runtime = tokio::runtime::Builder::new_current_thread().build()?;
/// runtime.block_on(async { db.put_async("k", "v").await })?;
/// assert_eq!(db.get("k")?.as_deref(), Some(&b"v"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a write is acknowledged only when its Ack completes"]
pub struct Ack {
    spin: Duration,
    error: Option<Error>,
    blocking: Vec<oneshot::Receiver<Result<()>>>,
    polling: Vec<oneshot::AsyncReceiver<Result<()>>>,
}

impl Ack {
    pub(crate) fn new(receivers: Vec<oneshot::Receiver<Result<()>>>, spin: Duration) -> Ack {
        Ack { spin, error: None, blocking: receivers, polling: Vec::new() }
    }

    pub(crate) fn failed(error: Error) -> Ack {
        Ack { spin: Duration::ZERO, error: Some(error), blocking: Vec::new(), polling: Vec::new() }
    }

    pub(crate) fn done() -> Ack {
        Ack { spin: Duration::ZERO, error: None, blocking: Vec::new(), polling: Vec::new() }
    }

    fn note(&mut self, result: std::result::Result<Result<()>, oneshot::RecvError>) {
        let outcome = result.unwrap_or(Err(Error::Closed));
        if let Err(e) = outcome {
            self.error.get_or_insert(e);
        }
    }

    /// Blocks until the write is acknowledged (or failed).
    ///
    /// A waiting thread first polls for the answer for up to `Options::client_spin_us`,
    /// if fewer threads than half the CPUs are waiting in `wait`, then sleeps. Polling
    /// spares the answer a thread wake-up; the cap keeps many waiting threads from
    /// taking the CPUs the shards need.
    pub fn wait(mut self) -> Result<()> {
        for rx in std::mem::take(&mut self.blocking) {
            let result = if self.spin.is_zero() {
                rx.recv()
            } else {
                WAITERS.fetch_add(1, Ordering::Relaxed);
                spin_for(&rx, self.spin);
                let result = rx.recv();
                WAITERS.fetch_sub(1, Ordering::Relaxed);
                result
            };
            self.note(result);
        }
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Threads waiting in `Ack::wait` right now.
static WAITERS: AtomicUsize = AtomicUsize::new(0);

fn spinners_max() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)))
}

fn spin_for(rx: &oneshot::Receiver<Result<()>>, spin: Duration) {
    // Poll only while few threads wait at all: with many waiters the CPUs are better
    // spent on the shards (which answer a whole batch at once) than on polling.
    if WAITERS.load(Ordering::Relaxed) <= spinners_max() {
        let deadline = Instant::now() + spin;
        let mut turns = 0u32;
        while !rx.has_message() && Instant::now() < deadline {
            turns += 1;
            if turns % 64 == 0 {
                // Let a runnable shard thread on this CPU have it.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

impl Future for Ack {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        for rx in this.blocking.drain(..) {
            this.polling.push(rx.into_future());
        }
        let mut i = 0;
        while i < this.polling.len() {
            match Pin::new(&mut this.polling[i]).poll(cx) {
                Poll::Ready(result) => {
                    this.polling.swap_remove(i);
                    this.note(result);
                }
                Poll::Pending => i += 1,
            }
        }
        if this.polling.is_empty() {
            Poll::Ready(match this.error.take() {
                Some(e) => Err(e),
                None => Ok(()),
            })
        } else {
            Poll::Pending
        }
    }
}

#[expect(
    clippy::missing_fields_in_debug,
    reason = "the receivers hold no readable state: how many are waiting is what there is to show"
)]
impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let waiting = self.blocking.len() + self.polling.len();
        f.debug_struct("Ack").field("waiting", &waiting).finish()
    }
}
