//! Paged reads at one fixed revision, with bounded memory: one page at a time, each from a
//! window the [`Cursor`] picks so etcd's per-request count stays a few pages long.
//!
//! A compaction past the pinned revision in the middle of a scan surfaces as
//! [`ScanError::Compacted`]; the caller restarts its pass at a new revision.

use etcd_client::{GetOptions, KeyValue};

use crate::conn::{ConnError, Etcd};
use crate::window::{Answer, Cursor};

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("revision {revision} was compacted during the scan")]
    Compacted { revision: i64 },
    #[error(transparent)]
    Conn(#[from] ConnError),
}

/// Whether an etcd error is "required revision has been compacted".
pub fn is_compacted(e: &ConnError) -> bool {
    match e {
        ConnError::Etcd { source: etcd_client::Error::GRpcStatus(s), .. } => {
            s.message().contains("required revision has been compacted")
        }
        _ => false,
    }
}

/// The smallest key after every key starting with `prefix` ("\0" when there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// One page's read, spawned so it runs while the caller works through the page before it.
type Read = tokio::task::JoinHandle<Result<etcd_client::GetResponse, ConnError>>;

/// Reads `[start, end)` at `revision`, `page` keys at a time, one page ahead: the next page's
/// read is on its way while the caller works through this one (at most two pages in memory).
pub struct Scan {
    etcd: Etcd,
    cursor: Cursor,
    revision: i64,
    keys_only: bool,
    buf: std::vec::IntoIter<KeyValue>,
    ahead: Option<Read>,
}

impl Drop for Scan {
    fn drop(&mut self) {
        // A scan abandoned midway (an error, a restart) leaves no read running.
        if let Some(read) = self.ahead.take() {
            read.abort();
        }
    }
}

impl Scan {
    pub fn new(etcd: &Etcd, start: &[u8], end: &[u8], revision: i64, page: i64) -> Self {
        Scan {
            etcd: etcd.clone(),
            cursor: Cursor::new(start, end, page),
            revision,
            keys_only: false,
            buf: Vec::new().into_iter(),
            ahead: None,
        }
    }

    /// Keys and revisions without values (what the ledger's verification needs).
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self
    }

    pub async fn next(&mut self) -> Result<Option<KeyValue>, ScanError> {
        loop {
            if let Some(kv) = self.buf.next() {
                return Ok(Some(kv));
            }
            let Some(read) = self.ahead.take().or_else(|| self.read()) else { return Ok(None) };
            let mut r = match read.await.expect("a scan's read neither panics nor is aborted while awaited") {
                Ok(r) => r,
                Err(e) if is_compacted(&e) => return Err(ScanError::Compacted { revision: self.revision }),
                Err(e) => return Err(e.into()),
            };
            let kvs = r.take_kvs();
            self.cursor.advance(Answer {
                first: kvs.first().map(|kv| kv.key()),
                last: kvs.last().map(|kv| kv.key()),
                more: r.more(),
                count: r.count(),
            });
            self.ahead = self.read();
            self.buf = kvs.into_iter();
        }
    }

    /// Starts the read of the cursor's next window, if there is one.
    fn read(&self) -> Option<Read> {
        let window = self.cursor.window()?;
        let mut opts =
            GetOptions::new().with_range(window.end).with_revision(self.revision).with_limit(self.cursor.page());
        if self.keys_only {
            opts = opts.with_keys_only();
        }
        let (etcd, start) = (self.etcd.clone(), window.start);
        Some(tokio::spawn(async move {
            let mut kv = etcd.kv.clone();
            etcd.call(kv.get(start, Some(opts))).await
        }))
    }
}
