//! When the shard writes a checkpoint, and driving it from the shard's loop.
//!
//! A checkpoint is due after `Options::checkpoint_wal_bytes` of log or, with dirty
//! keys, after `Options::checkpoint_interval`, or when a caller asks. It starts
//! only once everything applied is durable in the log. The page store runs it as
//! a sequence of steps ([`CheckpointRun`]); each step queues its I/O, and the
//! shard's loop waits for it (through the one waiter, `Shard::wait_io`), hands
//! the checkpoint's completions to the page store and moves to the next step.
//! Meanwhile new requests wait and the log's and reads' completions are held
//! back, since they would change the index the checkpoint is reading.

use std::time::Instant;

use super::Shard;
use crate::error::{Error, Result};
use crate::io::Completion;
use crate::options::Durability;
use crate::storage::page::cache::CHUNK_KEY_BIT;
use crate::storage::page::reader::Published;
use crate::storage::page::store::{CheckpointRun, Finished};

/// The shard's checkpoint schedule and the checkpoint running, if any.
pub(super) struct Checkpoints {
    /// Callers that asked for a checkpoint and wait for it to be durable.
    waiters: Vec<oneshot::Sender<Result<()>>>,
    last_at: Instant,
    /// `WalWriter::appended_bytes` when the last checkpoint started.
    appended_at: u64,
    running: Option<CheckpointRun>,
    /// Completions of other I/O that arrived while the checkpoint ran.
    deferred: Vec<Completion>,
}

impl Checkpoints {
    pub fn new() -> Checkpoints {
        Checkpoints {
            waiters: Vec::new(),
            last_at: Instant::now(),
            appended_at: 0,
            running: None,
            deferred: Vec::new(),
        }
    }

    /// Whether a checkpoint is running.
    pub fn running(&self) -> bool {
        self.running.is_some()
    }

    /// Whether a caller waits for a checkpoint.
    pub fn asked(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// A caller asks for a checkpoint.
    pub fn ask(&mut self, reply: oneshot::Sender<Result<()>>) {
        debug_assert!(self.running.is_none(), "requests, checkpoint asks among them, wait while a checkpoint runs");
        self.waiters.push(reply);
    }

    /// Holds a completion of other I/O until the running checkpoint ends.
    pub fn defer(&mut self, completion: Completion) {
        debug_assert!(self.running(), "completions are held back only while a checkpoint runs");
        self.deferred.push(completion);
    }

    fn answer(&mut self, result: &Result<()>) {
        for reply in self.waiters.drain(..) {
            let _ = reply.send(result.clone());
        }
    }
}

impl Shard {
    pub(super) fn checkpoint_due(&self) -> bool {
        let appended = self.wal.appended_bytes - self.checkpoints.appended_at;
        appended >= self.options.checkpoint_wal_bytes
            || self.shared.index.memory_bytes() >= self.shared.memtable_bytes_max
            || (self.shared.index.len() > 0 && self.checkpoints.last_at.elapsed() >= self.options.checkpoint_interval)
    }

    /// Whether new requests wait until a due checkpoint has run (under Periodic and None,
    /// so that what is applied stops outrunning what is durable; see `maybe_checkpoint`).
    pub(super) fn paused_for_checkpoint(&self) -> bool {
        self.options.durability != Durability::Sync
            && self.wal.poisoned().is_none()
            && self.wal.durable_lsn() < self.applied_lsn
            && (self.checkpoints.asked() || self.checkpoint_due())
    }

    /// Starts a checkpoint when one is due or asked for and the log allows it: nothing in
    /// flight, and everything applied also durable in the log (so the log never misses
    /// a record the pages hold).
    pub(super) fn maybe_checkpoint(&mut self) {
        debug_assert!(!self.checkpoints.running(), "one checkpoint runs at a time");
        if let Some(cause) = self.wal.poisoned() {
            let err = Error::Poisoned { shard: self.shared.id, cause: cause.to_string() };
            self.checkpoints.answer(&Err(err));
            return;
        }
        if self.stop.stopping() || (!self.checkpoints.asked() && !self.checkpoint_due()) {
            return;
        }
        // Everything applied must be durable in the log, or a crash could leave pages
        // holding a write the log lost, with older durable versions already dropped.
        // Under Sync that always holds (a write is applied only once durable), so the
        // checkpoint may run while a flush is in flight: its completion is held back.
        // Otherwise `take_requests` pauses new writes and `submit` flushes until it holds.
        if self.wal.durable_lsn() < self.applied_lsn {
            return;
        }
        self.checkpoints.appended_at = self.wal.appended_bytes;
        self.checkpoints.last_at = Instant::now();
        // The checkpoint holds everything applied, but claims to cover the log only up to
        // just before the oldest prepare this shard has not decided: that record must be
        // replayed after a crash (its writes are not in the index yet). Replaying records
        // the pages already hold is harmless: each key ends at its last write.
        let lsn = self.applied_lsn.min(self.tx.oldest_undecided_prepare().map_or(u64::MAX, |p| p - 1));
        assert!(lsn <= self.wal.durable_lsn(), "a checkpoint covers only what the log holds durably");
        match self.pages.start_checkpoint(self.io.as_mut(), &self.shared.index_writer(), &self.shared.cache, lsn) {
            Ok(run) => {
                self.checkpoints.running = Some(run);
                self.step_checkpoint();
            }
            Err(e) => self.finish_checkpoint(lsn, Err(e)),
        }
    }

    /// One turn of the loop while a checkpoint runs: wait for its I/O, route what
    /// arrived, and take the next steps.
    pub(super) fn drive_checkpoint(&mut self, completions: &mut Vec<Completion>) {
        debug_assert!(self.checkpoints.running(), "driven only while a checkpoint runs");
        let waited = self.wait_io(true, None, completions);
        // A failed wait may still have reaped completions (the io_uring backend hands
        // back those it held before the failing submit): they are routed first, while
        // the checkpoint still runs, so its own I/O reaches it and the rest is deferred
        // and replayed by `finish_checkpoint`. Left in `completions`, they would meet
        // the next wait's check that the last wait's completions were routed.
        for completion in completions.drain(..) {
            self.on_completion(completion);
        }
        if let Err(e) = waited {
            // Whatever the checkpoint still has in flight completes into nothing later
            // (see `on_checkpoint_io`).
            let run = self.checkpoints.running.take().expect("a checkpoint runs");
            self.finish_checkpoint(run.lsn(), Err(e));
            return;
        }
        self.step_checkpoint();
    }

    /// Hands a completion of checkpoint I/O to the running checkpoint.
    pub(super) fn on_checkpoint_io(&mut self, completion: Completion) {
        match self.checkpoints.running.as_mut() {
            Some(run) => self.pages.checkpoint_completion(run, completion),
            // Left over from a checkpoint that failed when waiting failed: the log is
            // poisoned; the buffer is simply dropped.
            None => debug_assert!(self.wal.poisoned().is_some(), "checkpoint I/O outlived a healthy checkpoint"),
        }
    }

    /// Takes the running checkpoint's steps until it waits for I/O or ends.
    fn step_checkpoint(&mut self) {
        let Some(mut run) = self.checkpoints.running.take() else { return };
        let result = loop {
            if run.in_flight() > 0 {
                self.checkpoints.running = Some(run);
                return;
            }
            match self.pages.advance_checkpoint(&mut run, self.io.as_mut(), &self.shared.cache) {
                Ok(false) => {}
                Ok(true) => {
                    // The checkpoint lets recovery skip the log up to its LSN: records it
                    // claims that the log could still lose would come back after a crash.
                    debug_assert!(
                        self.pages.checkpoint_lsn <= self.wal.durable_lsn(),
                        "a durable checkpoint covers only log records that are durable"
                    );
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        let lsn = run.lsn();
        if result.is_ok() {
            self.publish_checkpoint(run.finish());
        }
        self.finish_checkpoint(lsn, result);
    }

    /// A durable checkpoint's tree goes to readers: its new nodes into the cache, its
    /// root published, and only then what it merged out of the memtable (a reader
    /// that misses a key in the memtable finds it in the root it loads next).
    fn publish_checkpoint(&mut self, done: Finished) {
        let cache = &self.shared.cache;
        for (id, image) in done.images {
            cache.insert(id, image);
        }
        self.shared.root.store(Published { generation: self.pages.generation(), root: done.root });
        let mut writer = self.shared.index_writer();
        for (key, version) in &done.merged {
            writer.evict(key, *version);
        }
        // Freed extents stay intact until the next checkpoint reuses them; readers still
        // on the old root read them from the disk meanwhile.
        for id in done.freed_nodes {
            cache.remove(id);
        }
        for chunk in done.freed_chunks {
            cache.remove(CHUNK_KEY_BIT | chunk.offset);
        }
    }

    /// After the checkpoint's last step (or its failure): drops the log segments it
    /// covers, answers the callers, and routes what was held back.
    fn finish_checkpoint(&mut self, lsn: u64, result: Result<()>) {
        debug_assert!(!self.checkpoints.running(), "the checkpoint ended");
        // Segments holding the prepare of a transaction some participant of which may lack
        // its durable commit marker stay, so recovery can still find every prepare.
        let keep = self.tx.retained_limit();
        let result = result.and_then(|()| self.wal.drop_segments_through(lsn.min(keep)).map(|_| ()));
        crate::failpoint::hit("checkpoint-extents-freed");
        if let Err(e) = &result {
            self.pages.abandon_checkpoint();
            // The pages may now disagree with the index: refuse writes until reopened,
            // which recovers from the last durable checkpoint and the log.
            let outcome = self.wal.poison(format!("checkpoint failed: {e}"));
            self.on_outcome(outcome);
        }
        self.publish_log_stats();
        // Published before the callers hear back, so their `stats()` shows this checkpoint.
        self.publish_page_stats();
        self.checkpoints.answer(&result);
        // Completions that arrived during the checkpoint (a log flush among them, which
        // the log still counts as in flight) are handled now, before the loop may sleep
        // waiting for them.
        for completion in std::mem::take(&mut self.checkpoints.deferred) {
            self.on_completion(completion);
        }
        self.answer_flush_waiters();
    }
}
