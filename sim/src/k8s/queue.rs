//! The controllers' work queue: each key at most once, failed keys retried after a delay (like
//! client-go's rate-limited queue, with one fixed delay). Its size is bounded by the keys the
//! controller caches, since a key is queued once.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

pub struct WorkQueue {
    queue: VecDeque<String>,
    queued: BTreeSet<String>,
    retry: VecDeque<(Instant, String)>,
    delay: Duration,
}

impl WorkQueue {
    pub fn new(retry_delay: Duration) -> Self {
        WorkQueue { queue: VecDeque::new(), queued: BTreeSet::new(), retry: VecDeque::new(), delay: retry_delay }
    }

    pub fn add(&mut self, key: &str) {
        if self.queued.insert(key.to_string()) {
            self.queue.push_back(key.to_string());
        }
    }

    /// The next key to work on (due retries first join the queue).
    pub fn pop(&mut self) -> Option<String> {
        let now = Instant::now();
        while self.retry.front().is_some_and(|(at, _)| *at <= now) {
            let (_, key) = self.retry.pop_front().expect("peeked");
            self.add(&key);
        }
        let key = self.queue.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }

    /// Puts a failed key back after the retry delay.
    pub fn retry_later(&mut self, key: String) {
        self.retry.push_back((Instant::now() + self.delay, key));
    }

    /// Resolves when the next retry is due (never, when none is waiting).
    pub async fn retry_due(&self) {
        match self.retry.front() {
            Some((at, _)) => tokio::time::sleep_until(*at).await,
            None => std::future::pending().await,
        }
    }
}
