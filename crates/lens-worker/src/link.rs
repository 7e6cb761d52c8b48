//! This worker's line to the page's pool (`crate::pool::Pool`): the
//! page's words for the run in flight (chunks to compute, what the pool
//! assembled) wait in an inbox the run awaits; values go to the page as
//! transferred buffers.

use crate::outbox::post_with_bytes;
use crate::pool::{Pool, PoolWord};
use lens_protocol::pool::Chunk;
use lens_protocol::Reply;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Poll, Waker};

thread_local! {
    /// The run in flight that the page's pool may work for: the page's
    /// words for it and the waiting run.
    static POOLED: RefCell<Option<Inbox>> = const { RefCell::new(None) };
}

/// The page's words for a pooled run, and the run waiting on them.
struct Inbox {
    job: u32,
    words: VecDeque<PoolWord>,
    waker: Option<Waker>,
}

/// The run's side of the page's pool, open for the run `job` until dropped.
pub struct PageLink {
    workers: usize,
}

impl PageLink {
    pub fn open(job: u32, workers: usize) -> Self {
        POOLED.with(|p| {
            *p.borrow_mut() = Some(Inbox {
                job,
                words: VecDeque::new(),
                waker: None,
            })
        });
        PageLink {
            workers: workers.max(1),
        }
    }
}

impl Drop for PageLink {
    fn drop(&mut self) {
        POOLED.with(|p| p.borrow_mut().take());
    }
}

impl Pool for PageLink {
    fn workers(&self) -> usize {
        self.workers
    }

    fn next(&self) -> Pin<Box<dyn Future<Output = PoolWord> + '_>> {
        Box::pin(std::future::poll_fn(|cx| {
            POOLED.with(|p| match p.borrow_mut().as_mut() {
                Some(inbox) => match inbox.words.pop_front() {
                    Some(w) => Poll::Ready(w),
                    None => {
                        inbox.waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                },
                // Open for the whole run, so never met while it waits.
                None => Poll::Pending,
            })
        }))
    }

    fn send_rows(&self, job: u32, chunk: Chunk, values: Vec<u8>, ms: f64) {
        post_rows(job, chunk, values, ms);
    }

    fn want_products(
        &self,
        job: u32,
        position: Option<usize>,
        vectors: Vec<u8>,
        count: usize,
        width: usize,
    ) {
        let reply = Reply::ProductsWanted {
            job,
            position,
            count,
            width,
        };
        post_with_bytes(&reply, vectors);
    }
}

/// A word from the page for the run `job`; given back when no run of that
/// job is in flight (rows are then this worker's to compute as a helper).
pub fn to_inbox(job: u32, word: PoolWord) -> Result<(), PoolWord> {
    POOLED.with(|p| match p.borrow_mut().as_mut() {
        Some(inbox) if inbox.job == job => {
            inbox.words.push_back(word);
            if let Some(w) = inbox.waker.take() {
                w.wake();
            }
            Ok(())
        }
        _ => Err(word),
    })
}

/// A chunk's values to the page.
pub fn post_rows(job: u32, chunk: Chunk, values: Vec<u8>, ms: f64) {
    let reply = Reply::Rows {
        job,
        start: chunk.start,
        count: chunk.count,
        ms,
    };
    post_with_bytes(&reply, values);
}
