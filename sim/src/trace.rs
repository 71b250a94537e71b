//! The world's structured trace: one JSON object per line, `{"t_ms":…,"host":…,"event":…,…}`,
//! hashed as it is written. Two runs of one seed must give the same hash; the determinism test
//! compares hashes across processes and build profiles.
//!
//! Secret values never go into the trace: callers record keys, revisions and sizes, not values.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Lines kept in memory for tests and summaries; the file and the hash see every line.
const LINES_KEPT_MAX: usize = 10_000;

#[derive(Clone)]
pub struct Trace {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    hasher: Sha256,
    file: Option<BufWriter<File>>,
    lines: Vec<String>,
    count: u64,
    /// Simulated time for records made outside any host (a driver applying a fault between
    /// steps), where turmoil has no current time to give.
    outside_ms: u64,
}

impl Trace {
    /// A trace that is hashed and, if `path` is given, written there.
    pub fn new(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(BufWriter::new(File::create(p)?)),
            None => None,
        };
        Ok(Trace {
            inner: Arc::new(Mutex::new(Inner {
                hasher: Sha256::new(),
                file,
                lines: Vec::new(),
                count: 0,
                outside_ms: 0,
            })),
        })
    }

    /// Records one event. `fields` must be a JSON object; its keys follow `t_ms`, `host`, `event`.
    pub fn record(&self, host: &str, event: &str, fields: Value) {
        let outside_ms = self.inner.lock().expect("trace lock").outside_ms;
        let t_ms = crate::clock::elapsed().map(|d| d.as_millis() as u64).unwrap_or(outside_ms);
        let mut obj = Map::new();
        obj.insert("t_ms".into(), t_ms.into());
        obj.insert("host".into(), host.into());
        obj.insert("event".into(), event.into());
        if let Value::Object(extra) = fields {
            obj.extend(extra);
        }
        let line = Value::Object(obj).to_string();
        let mut inner = self.inner.lock().expect("trace lock");
        inner.hasher.update(line.as_bytes());
        inner.hasher.update(b"\n");
        if let Some(f) = inner.file.as_mut() {
            // A trace that cannot be written is a setup error the run reports at the end (flush).
            let _ = writeln!(f, "{line}");
        }
        if inner.lines.len() < LINES_KEPT_MAX {
            inner.lines.push(line);
        }
        inner.count += 1;
    }

    /// Sets the time of records made outside the hosts (drivers call it before each step).
    pub fn set_outside_ms(&self, t_ms: u64) {
        self.inner.lock().expect("trace lock").outside_ms = t_ms;
    }

    pub fn count(&self) -> u64 {
        self.inner.lock().expect("trace lock").count
    }

    /// The first lines of the trace (up to a bound), for tests and summaries.
    pub fn lines(&self) -> Vec<String> {
        self.inner.lock().expect("trace lock").lines.clone()
    }

    /// Hex SHA-256 of every line so far; flushes the file.
    pub fn finish(&self) -> std::io::Result<String> {
        let mut inner = self.inner.lock().expect("trace lock");
        if let Some(f) = inner.file.as_mut() {
            f.flush()?;
        }
        Ok(hex::encode(inner.hasher.clone().finalize()))
    }
}
