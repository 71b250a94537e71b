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

/// Reads `[start, end)` at `revision`, `page` keys at a time.
pub struct Scan {
    etcd: Etcd,
    cursor: Cursor,
    revision: i64,
    keys_only: bool,
    buf: std::vec::IntoIter<KeyValue>,
}

impl Scan {
    pub fn new(etcd: &Etcd, start: &[u8], end: &[u8], revision: i64, page: i64) -> Self {
        Scan {
            etcd: etcd.clone(),
            cursor: Cursor::new(start, end, page),
            revision,
            keys_only: false,
            buf: Vec::new().into_iter(),
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
            let Some(window) = self.cursor.window() else { return Ok(None) };
            let mut opts =
                GetOptions::new().with_range(window.end).with_revision(self.revision).with_limit(self.cursor.page());
            if self.keys_only {
                opts = opts.with_keys_only();
            }
            let mut kv = self.etcd.kv.clone();
            let mut r = match self.etcd.call(kv.get(window.start, Some(opts))).await {
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
            self.buf = kvs.into_iter();
        }
    }
}
