//! When the shard writes a checkpoint, and driving it from the shard's loop.
//!
//! A checkpoint is due once the memtable fills its share of the memory budget,
//! after `Options::checkpoint_wal_bytes` of log, with writes pending after
//! `Options::checkpoint_interval`, or when a caller asks. It starts only once
//! everything applied is durable in the log. It freezes the memtable (readers
//! see it behind a new, empty one that takes the writes from then on) and the
//! page store merges the frozen one into the tree as a sequence of steps
//! ([`CheckpointRun`]); each step queues its I/O, and the shard's loop goes on
//! serving requests, flushing the log and applying writes meanwhile, routes
//! the checkpoint's completions to it and takes its next step once its I/O is
//! in. When it is durable, readers get the new root and the frozen memtable goes.

use std::sync::Arc;
use std::time::Instant;

use super::Shard;
use crate::error::{Error, Result};
use crate::io::Completion;
use crate::options::Durability;
use crate::storage::index::Index;
use crate::storage::page::cache::CHUNK_KEY_BIT;
use crate::storage::page::reader::{Published, View};
use crate::storage::page::store::{CheckpointRun, Finished};

/// The shard's checkpoint schedule and the checkpoint running, if any.
pub(super) struct Checkpoints {
    /// Callers that asked for a checkpoint and wait for it to be durable.
    waiters: Vec<oneshot::Sender<Result<()>>>,
    last_at: Instant,
    /// `WalWriter::appended_bytes` when the last checkpoint started.
    appended_at: u64,
    /// The checkpoint running, and the callers that asked for it.
    running: Option<(CheckpointRun, Vec<oneshot::Sender<Result<()>>>)>,
}

impl Checkpoints {
    pub fn new() -> Checkpoints {
        Checkpoints { waiters: Vec::new(), last_at: Instant::now(), appended_at: 0, running: None }
    }

    /// Whether a checkpoint is running.
    pub fn running(&self) -> bool {
        self.running.is_some()
    }

    /// Whether the running checkpoint's merge thread is done and its result waits.
    pub fn merge_ready(&self) -> bool {
        self.running.as_ref().is_some_and(|(run, _)| run.merge_ready())
    }

    /// Whether a caller waits for a checkpoint.
    pub fn asked(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// A caller asks for a checkpoint: one that starts after this (a running one froze
    /// the memtable before the caller's latest writes may have been applied).
    pub fn ask(&mut self, reply: oneshot::Sender<Result<()>>) {
        self.waiters.push(reply);
    }

    fn answer(waiters: Vec<oneshot::Sender<Result<()>>>, result: &Result<()>) {
        for reply in waiters {
            let _ = reply.send(result.clone());
        }
    }
}

impl Shard {
    pub(super) fn checkpoint_due(&self) -> bool {
        let appended = self.wal.appended_bytes - self.checkpoints.appended_at;
        appended >= self.options.checkpoint_wal_bytes
            || self.shared.view().active.memory_bytes() >= self.shared.memtable_bytes_max
            || (self.shared.view().active.len() > 0
                && self.checkpoints.last_at.elapsed() >= self.options.checkpoint_interval)
    }

    /// Whether new requests wait: under Periodic and None until a due checkpoint can
    /// start (what is applied stops outrunning what is durable; see `maybe_checkpoint`),
    /// and in every mode while a running checkpoint is outrun by writes that filled
    /// the new memtable to twice its share (memory stays bounded).
    pub(super) fn paused_for_checkpoint(&self) -> bool {
        if self.wal.poisoned().is_some() {
            return false;
        }
        if self.checkpoints.running() {
            return self.shared.view().active.memory_bytes() >= 2 * self.shared.memtable_bytes_max;
        }
        self.options.durability != Durability::Sync
            && self.wal.durable_lsn() < self.applied_lsn
            && (self.checkpoints.asked() || self.checkpoint_due())
    }

    /// Starts a checkpoint when one is due or asked for and the log allows it: nothing in
    /// flight, and everything applied also durable in the log (so the log never misses
    /// a record the pages hold).
    pub(super) fn maybe_checkpoint(&mut self) {
        if let Some(cause) = self.wal.poisoned() {
            let err = Error::Poisoned { shard: self.shared.id, cause: cause.to_string() };
            Checkpoints::answer(std::mem::take(&mut self.checkpoints.waiters), &Err(err));
            return;
        }
        if self.checkpoints.running() {
            return;
        }
        if self.stop.stopping() || (!self.checkpoints.asked() && !self.checkpoint_due()) {
            return;
        }
        // Everything applied must be durable in the log, or a crash could leave pages
        // holding a write the log lost, with older durable versions already dropped.
        // Under Sync that always holds (a write is applied only once durable), so the
        // checkpoint may start while a flush is in flight. Otherwise `take_requests`
        // pauses new writes and `submit` flushes until it holds.
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
        let frozen = self.freeze_memtable();
        let waiters = std::mem::take(&mut self.checkpoints.waiters);
        let log_seq = self.wal.current_seq();
        match self.pages.start_checkpoint(self.io.as_mut(), &frozen, &self.shared.cache, lsn, log_seq) {
            Ok(run) => {
                self.checkpoints.running = Some((run, waiters));
                self.step_checkpoint();
            }
            Err(e) => self.finish_checkpoint(lsn, Err(e), waiters),
        }
    }

    /// Makes the memtable the frozen one readers see behind a new, empty memtable that
    /// takes the writes from now on; returns the frozen one.
    fn freeze_memtable(&self) -> Arc<Index> {
        let view = self.shared.view();
        debug_assert!(view.frozen.is_none(), "one checkpoint, and so one frozen memtable, at a time");
        let frozen = Arc::clone(&view.active);
        self.shared.publish_view(View {
            active: Arc::new(Index::default()),
            frozen: Some(Arc::clone(&frozen)),
            root: view.root,
        });
        frozen
    }

    /// At a stop with the log poisoned: a checkpoint still running will not finish; its
    /// callers hear why.
    pub(super) fn abandon_running_checkpoint(&mut self) {
        if let Some((_, waiters)) = self.checkpoints.running.take() {
            self.pages.abandon_checkpoint();
            let cause =
                self.wal.poisoned().map_or_else(|| "the shard stopped".to_string(), std::string::ToString::to_string);
            Checkpoints::answer(waiters, &Err(Error::Poisoned { shard: self.shared.id, cause }));
        }
    }

    /// Hands a completion of checkpoint I/O to the running checkpoint.
    pub(super) fn on_checkpoint_io(&mut self, completion: Completion) {
        match self.checkpoints.running.as_mut() {
            Some((run, _)) => self.pages.checkpoint_completion(run, completion),
            // Left over from a checkpoint that failed: the log is poisoned; the buffer is
            // simply dropped.
            None => debug_assert!(self.wal.poisoned().is_some(), "checkpoint I/O outlived a healthy checkpoint"),
        }
    }

    /// Takes the running checkpoint's steps until it waits for I/O or ends (the loop
    /// calls this every turn).
    pub(super) fn step_checkpoint(&mut self) {
        let Some((mut run, waiters)) = self.checkpoints.running.take() else { return };
        self.pages.poll_merge(&mut run);
        let result = loop {
            if run.in_flight() > 0 {
                self.checkpoints.running = Some((run, waiters));
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
        self.finish_checkpoint(lsn, result, waiters);
    }

    /// A durable checkpoint's tree goes to readers: its new nodes into the cache, then
    /// one new view with its root in place of the old one and the frozen memtable it
    /// merged (readers of the old view keep both until they are done).
    fn publish_checkpoint(&mut self, done: Finished) {
        let cache = &self.shared.cache;
        for (id, image) in done.images {
            cache.insert(id, image);
        }
        let active = Arc::clone(&self.shared.view().active);
        self.shared.publish_view(View {
            active,
            frozen: None,
            root: Published { generation: self.pages.generation(), root: done.root },
        });
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
    /// covers and answers the callers. After a failure the frozen memtable stays in the
    /// view, so reads still see everything; writes are refused until a reopen.
    fn finish_checkpoint(&mut self, lsn: u64, result: Result<()>, waiters: Vec<oneshot::Sender<Result<()>>>) {
        debug_assert!(!self.checkpoints.running(), "the checkpoint ended");
        // Segments holding the prepare of a transaction some participant of which may lack
        // its durable commit marker stay, so recovery can still find every prepare.
        let keep = self.tx.retained_limit();
        // The segment the checkpoint names in its slot (where the writes after it start)
        // stays too, whatever it holds: open checks that it is there.
        let seq_below = self.pages.log_seq;
        let result = result.and_then(|()| self.wal.drop_segments_through(lsn.min(keep), seq_below).map(|_| ()));
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
        Checkpoints::answer(waiters, &result);
        self.answer_flush_waiters();
    }
}
