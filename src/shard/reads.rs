//! Callers' reads of pages and chunks not in the cache, issued on the shard's ring.
//!
//! A caller on a thread without its own ring sends the shard the pages and chunks
//! it misses (`Request::Read`); the shard queues one read each, tagged with a
//! [`ReadSlot`] (the job and the item within it), and answers once all are in.
//! A page read is checked against the page it should hold and cached; a chunk
//! is cached only if it is still the one the index references.

use bytes::Bytes;

use super::Shard;
use crate::error::{Error, Result};
use crate::format::page::{ChunkRef, chunk_bytes, decode_chunk, decode_page};
use crate::io::token::{ReadSlot, Token, TokenKind};
use crate::io::{AlignedBuf, Completion};
use crate::stats::ShardCounters;

/// The answer to [`Request::Read`](super::Request::Read).
pub(crate) struct ReadReply {
    pub pages: Vec<Option<Bytes>>,
    pub chunks: Vec<Bytes>,
}

/// A read request whose I/O is in flight.
struct ReadJob {
    reply: oneshot::Sender<Result<ReadReply>>,
    answer: ReadReply,
    page_ids: Vec<u64>,
    chunks: Vec<(u64, u32)>,
    remaining: usize,
    error: Option<Error>,
}

/// The shard's reads for callers.
#[derive(Default)]
pub(super) struct Reads {
    jobs: slab::Slab<ReadJob>,
    /// Reads submitted and not yet completed.
    in_flight: usize,
}

impl Reads {
    /// Reads for callers submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

impl Shard {
    /// Answers from the cache what it holds and queues a read for the rest.
    pub(super) fn handle_read(
        &mut self,
        pages: Vec<u64>,
        chunks: Vec<(u64, u32)>,
        reply: oneshot::Sender<Result<ReadReply>>,
    ) {
        debug_assert!(!self.checkpoints.running(), "reads are not queued while a checkpoint changes the page table");
        if pages.len() + chunks.len() > ReadSlot::ITEMS_MAX {
            let _ = reply.send(Err(Error::InvalidArgument(format!(
                "a read of {} pages and chunks; at most {} at once",
                pages.len() + chunks.len(),
                ReadSlot::ITEMS_MAX
            ))));
            return;
        }
        let job = u32::try_from(self.reads.jobs.vacant_key()).expect("fewer than 2^32 reads in flight");
        let mut answer = ReadReply { pages: vec![None; pages.len()], chunks: vec![Bytes::new(); chunks.len()] };
        let mut remaining = self.queue_page_reads(job, &pages, &mut answer);
        remaining += self.queue_chunk_reads(job, &chunks, &mut answer);
        let job = ReadJob { reply, answer, page_ids: pages, chunks, remaining, error: None };
        if remaining == 0 {
            let _ = job.reply.send(Ok(job.answer));
        } else {
            self.reads.in_flight += remaining;
            self.reads.jobs.insert(job);
        }
    }

    /// Queues a read of each page of `pages` not in the cache; returns how many.
    fn queue_page_reads(&mut self, job: u32, pages: &[u64], answer: &mut ReadReply) -> usize {
        let fd = self.pages.data.fd();
        let mut queued = 0;
        for (i, &page_id) in pages.iter().enumerate() {
            if let Some(image) = self.shared.cache.peek(page_id) {
                answer.pages[i] = Some(image);
            } else if let Some(meta) = self.pages.pages.get(&page_id) {
                debug_assert!(
                    meta.extent.offset % self.pages.unit as u64 == 0 && meta.extent.len % self.pages.unit as u64 == 0,
                    "a page's extent is whole units, as an O_DIRECT read needs"
                );
                let len = meta.extent.len as usize;
                let align = self.pages.mem_align;
                let buf = AlignedBuf::zeroed(len.next_multiple_of(align), align);
                let item = u32::try_from(i).expect("checked against ITEMS_MAX");
                let token = Token::new(TokenKind::ReadPage, ReadSlot { job, item }.payload());
                self.io.read(fd, meta.extent.offset, buf, len, token.encode());
                queued += 1;
            }
        }
        queued
    }

    /// Queues a read of each live chunk of `chunks` not in the cache; returns how many.
    fn queue_chunk_reads(&mut self, job: u32, chunks: &[(u64, u32)], answer: &mut ReadReply) -> usize {
        let fd = self.pages.data.fd();
        let mut queued = 0;
        for (j, &(offset, len)) in chunks.iter().enumerate() {
            let Some(&(live_len, crc32)) = self.pages.live_chunks.get(&offset).filter(|(l, _)| *l == len) else {
                // Not a chunk the index references now (the caller's entry is stale and
                // the extent may hold anything): an empty answer fails the caller's
                // check, and the caller looks the key up again.
                continue;
            };
            if let Some(value) = self.shared.cache.peek_chunk(&ChunkRef { offset, len: live_len, crc32 }) {
                answer.chunks[j] = value;
                continue;
            }
            debug_assert_eq!(offset % self.pages.unit as u64, 0, "a live chunk starts on a unit boundary (O_DIRECT)");
            let bytes = chunk_bytes(len as usize, self.pages.unit);
            let align = self.pages.mem_align;
            let buf = AlignedBuf::zeroed(bytes.next_multiple_of(align), align);
            let item = u32::try_from(j).expect("checked against ITEMS_MAX");
            let token = Token::new(TokenKind::ReadChunk, ReadSlot { job, item }.payload());
            self.io.read(fd, offset, buf, bytes, token.encode());
            queued += 1;
        }
        queued
    }

    /// Takes the completion of a caller's read; answers the job once all its reads are in.
    pub(super) fn on_read(&mut self, token: Token, c: Completion) {
        debug_assert!(
            matches!(token.kind, TokenKind::ReadPage | TokenKind::ReadChunk),
            "the loop routes only read tokens here"
        );
        let slot = ReadSlot::from_payload(token.payload);
        let (job_key, i) = (slot.job as usize, slot.item as usize);
        assert!(self.reads.in_flight > 0, "a read completed that was never submitted");
        self.reads.in_flight -= 1;
        let data_path = self.pages.data_path.clone();
        let Some(job) = self.reads.jobs.get_mut(job_key) else { return };
        debug_assert!(job.remaining > 0, "a read job completes each of its reads once");
        job.remaining -= 1;
        match c.result {
            Err(e) => {
                job.error.get_or_insert(Error::io("read", data_path, e));
            }
            Ok(len) => {
                let buf = c.buf.expect("a read returns its buffer");
                if token.kind == TokenKind::ReadChunk {
                    self.on_chunk_read(job_key, i, Bytes::from_owner(buf).slice(..len));
                } else {
                    self.on_page_read(job_key, i, buf);
                }
            }
        }
        if self.reads.jobs[job_key].remaining == 0 {
            let job = self.reads.jobs.remove(job_key);
            let _ = job.reply.send(match job.error {
                Some(e) => Err(e),
                None => Ok(job.answer),
            });
        }
    }

    fn on_chunk_read(&mut self, job_key: usize, i: usize, raw: Bytes) {
        ShardCounters::add(&self.shared.counters.chunks_read, 1);
        let job = &mut self.reads.jobs[job_key];
        let (offset, len) = job.chunks[i];
        debug_assert!(job.answer.chunks[i].is_empty(), "each chunk of a read job is answered once");
        // Cache only the chunk the index references now, checked: a superseded one may
        // have been freed and its extent reused while this read waited.
        if let Some(&(live_len, crc32)) = self.pages.live_chunks.get(&offset) {
            let chunk = ChunkRef { offset, len: live_len, crc32 };
            if live_len == len && decode_chunk(&raw, &chunk).is_ok() {
                self.shared.cache.insert_chunk(&chunk, raw.clone());
            }
        }
        job.answer.chunks[i] = raw;
    }

    fn on_page_read(&mut self, job_key: usize, i: usize, buf: AlignedBuf) {
        let job = &mut self.reads.jobs[job_key];
        let page_id = job.page_ids[i];
        debug_assert!(job.answer.pages[i].is_none(), "each page of a read job is answered once");
        let Some(meta) = self.pages.pages.get(&page_id) else {
            // The page was replaced by a checkpoint while the read was in flight.
            job.answer.pages[i] = None;
            return;
        };
        let offset = meta.extent.offset;
        debug_assert!(u64::from(meta.capacity) <= meta.extent.len, "a page's image fits inside its extent");
        let image = Bytes::from_owner(buf).slice(..meta.capacity as usize);
        let file = self.pages.data_path.clone();
        match decode_page(&image) {
            Ok(page) if page.page_id == page_id => {
                ShardCounters::add(&self.shared.counters.pages_read, 1);
                self.shared.cache.insert(page_id, image.clone());
                job.answer.pages[i] = Some(image);
            }
            Ok(page) => {
                let what = format!("page {} found where page {page_id} belongs", page.page_id);
                job.error.get_or_insert(Error::Corruption { file, offset, what });
            }
            Err(what) => {
                job.error.get_or_insert(Error::Corruption { file, offset, what });
            }
        }
    }
}
