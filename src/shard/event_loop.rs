//! The shard's loop: take requests, submit the log's flush, wait for completions and
//! route each by its token's kind.
//!
//! [`Shard::wait_io`] is the only call of [`Io::wait`] on the shard thread: the
//! loop's sleep and poll, a checkpoint's steps and the flush at open all wait
//! through it, so every completion is routed in one place.

use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use crossbeam_channel::TryRecvError;

use super::{Pending, Request, Shard, Stop};
use crate::error::{Error, Result};
use crate::io::token::{Token, TokenKind};
use crate::io::{Completion, SyncMode};
use crate::options::{Durability, PersistEvent};
use crate::stats::ShardCounters;
use crate::storage::wal::writer::Outcome;

/// Requests taken off the queue per loop turn at most, so completions are never starved.
const DRAIN_MAX: usize = 4096;

impl Shard {
    /// Serves requests until a shutdown (or every handle is gone) and everything
    /// appended is durable.
    pub(super) fn run(mut self) {
        let mut completions = Vec::with_capacity(64);
        loop {
            let took = self.take_requests();
            self.submit();
            // A running checkpoint ends before the shard stops, unless the log is poisoned
            // (a failed wait may have lost the checkpoint's completions).
            let checkpoint_done = !self.checkpoints.running() || self.wal.poisoned().is_some();
            if self.stop.stopping() && !self.wal.busy() && self.nothing_pending() && checkpoint_done {
                break;
            }
            let idle = took == 0 && self.wal.can_accept();
            let woken = if idle { self.sleep(&mut completions) } else { self.poll(&mut completions) };
            if woken {
                ShardCounters::add(&self.shared.counters.wakeups, 1);
            }
            for completion in completions.drain(..) {
                self.on_completion(completion);
            }
            // Published before flush callers hear back, so their `stats()` shows the flush.
            self.publish_log_stats();
            self.answer_flush_waiters();
            self.tx_progress();
            self.step_checkpoint();
            self.maybe_checkpoint();
        }
        self.abandon_running_checkpoint();
        self.wal.finish();
        self.tx.fail_waiting(&Error::Closed);
        if let Stop::Requested(reply) = std::mem::replace(&mut self.stop, Stop::Abandoned) {
            let result = match self.wal.poisoned() {
                Some(cause) => Err(Error::Poisoned { shard: self.shared.id, cause: cause.to_string() }),
                None => Ok(()),
            };
            let _ = reply.send(result);
        }
    }

    /// Routes one completion by its token's kind.
    pub(super) fn on_completion(&mut self, completion: Completion) {
        let token = Token::decode(completion.token).expect("every completion of the shard's ring carries a token");
        match token.kind {
            TokenKind::Checkpoint => self.on_checkpoint_io(completion),
            TokenKind::LogWrite | TokenKind::LogSync => {
                // One flush or sync is in flight at a time; a log completion with none
                // outstanding would be matched against the wrong batch.
                debug_assert!(
                    self.wal.busy() || self.wal.poisoned().is_some(),
                    "a log completion arrives only while the log has I/O in flight"
                );
                let outcome = self.wal.complete(completion);
                self.on_outcome(outcome);
            }
            TokenKind::BlobWrite | TokenKind::BlobSync => {
                panic!("a blob log token on a shard's ring: blob I/O goes through the blob writer's own ring")
            }
        }
    }

    /// Whether nothing remains to flush (or nothing can be flushed any more).
    fn nothing_pending(&self) -> bool {
        self.wal.poisoned().is_some() || (self.wal.pending().0 == 0 && self.wal.durable_lsn() >= self.wal.last_lsn())
    }

    /// Takes up to `DRAIN_MAX` requests while the log accepts records.
    fn take_requests(&mut self) -> usize {
        let mut took = 0;
        while took < DRAIN_MAX && !self.stop.stopping() && self.wal.can_accept() && !self.paused_for_checkpoint() {
            match self.rx.try_recv() {
                Ok(request) => {
                    took += 1;
                    self.handle(request);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.stop = Stop::Abandoned;
                    break;
                }
            }
        }
        debug_assert!(took <= DRAIN_MAX, "a loop turn takes at most DRAIN_MAX requests");
        ShardCounters::add(&self.shared.counters.requests, took as u64);
        took
    }

    fn handle(&mut self, request: Request) {
        debug_assert!(!self.stop.stopping(), "no request is taken off the queue after a shutdown");
        let appends = matches!(
            request,
            Request::Write(_) | Request::TxCommitOne(_) | Request::TxPrepare(_) | Request::TxDecide { .. }
        );
        match request {
            Request::Write(w) => self.handle_plain_write(w),
            Request::Flush(reply) => {
                if let Some(cause) = self.wal.poisoned() {
                    let _ = reply.send(Err(Error::Poisoned { shard: self.shared.id, cause: cause.to_string() }));
                } else {
                    self.durable.waiters.push((self.wal.last_lsn(), reply));
                }
            }
            Request::Shutdown(reply) => self.stop = Stop::Requested(reply),
            Request::Checkpoint(reply) => self.checkpoints.ask(reply),
            Request::TxCommitOne(r) => self.handle_tx_commit_one(r),
            Request::TxPrepare(r) => self.handle_tx_prepare(r),
            Request::TxDecide { txid, commit, durable, reply } => self.handle_tx_decide(txid, commit, durable, reply),
            Request::TxLock { txid, keys, ranges, reply } => self.handle_tx_lock(txid, keys, ranges, reply),
            Request::TxRelease { txid } => self.handle_tx_release(txid),
        }
        // An append may have poisoned the log (a failed rotation): answer the writes it
        // strands now.
        if appends {
            if let Some(outcome) = self.wal.take_failure() {
                self.on_outcome(outcome);
            }
        }
    }

    /// Submits the log's next flush when the durability mode says it is due.
    fn submit(&mut self) {
        if self.wal.busy() || self.wal.poisoned().is_some() {
            return;
        }
        let checkpoint_waits = self.checkpoints.asked() || self.checkpoint_due();
        let want_durable =
            !self.durable.waiters.is_empty() || self.stop.stopping() || checkpoint_waits || self.tx.wants_durable();
        let (records, bytes, oldest) = self.wal.pending();
        let durable_sync = self.durable.sync;
        let started = match self.options.durability {
            Durability::Sync => self.wal.submit(self.io.as_mut(), durable_sync),
            Durability::None if !want_durable => self.wal.submit(self.io.as_mut(), SyncMode::None),
            Durability::Periodic { bytes: bytes_max, items, interval } if !want_durable => {
                let due = records >= items
                    || bytes as u64 >= bytes_max
                    || oldest.is_some_and(|t| t.elapsed() >= interval)
                    || self.wal.has_full_batch();
                due && self.wal.submit(self.io.as_mut(), durable_sync)
            }
            // Earlier writes of `None` went out unsynced, possibly through the page cache
            // (direct_io off): only a whole-file fdatasync covers them, not RWF_DSYNC,
            // which syncs just the range it writes.
            Durability::None => self.wal.submit(self.io.as_mut(), SyncMode::Fdatasync),
            Durability::Periodic { .. } => self.wal.submit(self.io.as_mut(), durable_sync),
        };
        if !started && want_durable {
            self.wal.sync_written(self.io.as_mut());
        }
    }

    /// Spins briefly for the next request when nothing is in flight; returns whether one
    /// came (bounded by `Options::spin_us`; 0 disables).
    fn spin_for_request(&self) -> bool {
        if self.stop.stopping() || self.wal.busy() || self.checkpoints.running() || self.options.spin.is_zero() {
            return false;
        }
        let deadline = Instant::now() + self.options.spin;
        let mut turns = 0u32;
        while self.rx.is_empty() && Instant::now() < deadline {
            turns += 1;
            if turns % 64 == 0 {
                // A client runnable on this CPU (often the very one about to send the
                // next request) must not wait for the spin to end.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        !self.rx.is_empty()
    }

    /// Sleeps in the kernel until a completion, a client's wake-up or a timer.
    fn sleep(&mut self, completions: &mut Vec<Completion>) -> bool {
        // With nothing in flight, a client that was just answered often sends its next
        // request within microseconds: spin briefly for it instead of paying a wake-up
        // through the eventfd.
        if self.spin_for_request() {
            return false;
        }
        // Under Sync, a request that arrives while a flush is in flight cannot be answered
        // before the next flush anyway: don't ask clients to wake the shard for it. The
        // completion wakes the shard, which then takes everything queued in one go.
        let announce = !(self.options.durability == Durability::Sync && self.wal.busy());
        if announce {
            self.shared.sleeping.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            // After a shutdown request the queue is no longer read: don't let what waits
            // in it keep the thread from sleeping.
            // A merge thread sends its result, then wakes the shard only if it sleeps:
            // look once more after announcing the sleep.
            let request = !self.stop.stopping() && !self.paused_for_checkpoint() && !self.rx.is_empty();
            if request || self.checkpoints.merge_ready() {
                self.shared.sleeping.store(false, Ordering::Relaxed);
                return self.poll(completions);
            }
        }
        let timeout = match self.options.durability {
            Durability::Periodic { interval, .. } => {
                self.wal.pending().2.map(|t| interval.saturating_sub(t.elapsed()).max(Duration::from_micros(50)))
            }
            _ => None,
        };
        let woken = self.wait_or_poison(true, timeout, completions);
        self.shared.sleeping.store(false, Ordering::Relaxed);
        woken
    }

    fn poll(&mut self, completions: &mut Vec<Completion>) -> bool {
        // With writes in flight and the log full, block for a completion; else just reap.
        let block = !self.wal.can_accept() && self.wal.busy();
        self.wait_or_poison(block, None, completions)
    }

    /// Submits everything queued and collects completions (blocking if `block`): the one
    /// place the shard thread waits for I/O. Returns whether a client woke the shard.
    pub(super) fn wait_io(
        &mut self,
        block: bool,
        timeout: Option<Duration>,
        completions: &mut Vec<Completion>,
    ) -> Result<bool> {
        debug_assert!(completions.is_empty(), "completions of the last wait are routed before the next");
        self.io.wait(block, timeout, completions)
    }

    /// [`Shard::wait_io`] for the loop: a failed wait poisons the log. Completions the
    /// failed wait still reaped stay in `completions` for the loop to route.
    pub(super) fn wait_or_poison(
        &mut self,
        block: bool,
        timeout: Option<Duration>,
        completions: &mut Vec<Completion>,
    ) -> bool {
        match self.wait_io(block, timeout, completions) {
            Ok(woken) => woken,
            Err(e) => {
                // The ring itself failed: nothing more can be written safely.
                let outcome = self.wal.poison(format!("I/O wait failed: {e}"));
                self.on_outcome(outcome);
                false
            }
        }
    }

    /// Acts on what a log completion meant: applies and answers flushed writes, reports
    /// durability, or fails everything waiting.
    pub(super) fn on_outcome(&mut self, outcome: Outcome<Pending>) {
        let shared = Arc::clone(&self.shared);
        let c = &shared.counters;
        match outcome {
            Outcome::Flushed(f) => {
                ShardCounters::add(&c.wal_flushes, 1);
                ShardCounters::add(&c.wal_records, f.records);
                ShardCounters::add(&c.wal_bytes, f.bytes as u64);
                if f.durable {
                    ShardCounters::add(&c.fsyncs, 1);
                }
                let (first_lsn, last_lsn, durable) = (f.first_lsn, f.last_lsn, f.durable);
                self.apply_flushed(f.items, first_lsn, last_lsn);
                if durable {
                    debug_assert!(first_lsn > self.durable.persisted_lsn, "a durable batch reported twice");
                    self.persisted(last_lsn);
                }
            }
            Outcome::Discarded => {}
            Outcome::Synced => {
                ShardCounters::add(&c.fsyncs, 1);
                // The sync made everything written durable, not only one batch.
                self.persisted(self.wal.durable_lsn());
            }
            Outcome::Failed { cause, items } => {
                debug_assert!(self.wal.poisoned().is_some(), "a failed flush poisons the log");
                let err = Error::Poisoned { shard: self.shared.id, cause };
                for p in items {
                    let _ = p.reply.send(Err(err.clone()));
                }
                for (_, reply) in self.durable.waiters.drain(..) {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Reports LSNs up to `last_lsn` durable: everything since the last report, since a
    /// whole-file sync (`Durability::None`) also covers earlier unsynced batches.
    fn persisted(&mut self, last_lsn: u64) {
        if last_lsn <= self.durable.persisted_lsn {
            return;
        }
        assert!(last_lsn <= self.wal.durable_lsn(), "only what the log made durable is reported durable");
        let first_lsn = self.durable.persisted_lsn + 1;
        self.durable.persisted_lsn = last_lsn;
        if let Some(callback) = &self.options.on_persist {
            callback(PersistEvent {
                shard: self.shared.id,
                first_lsn,
                last_lsn,
                timestamp: std::time::SystemTime::now(),
            });
        }
    }

    /// Answers the flush waiters whose LSN is durable.
    pub(super) fn answer_flush_waiters(&mut self) {
        let durable = self.wal.durable_lsn();
        let mut i = 0;
        while i < self.durable.waiters.len() {
            if self.durable.waiters[i].0 <= durable {
                let (_, reply) = self.durable.waiters.swap_remove(i);
                let _ = reply.send(Ok(()));
            } else {
                i += 1;
            }
        }
        debug_assert!(self.durable.waiters.iter().all(|(lsn, _)| *lsn > durable), "a durable waiter was left waiting");
    }
}
