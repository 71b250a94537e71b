//! The conformance script: one sequence of etcd requests through the real etcd-client, recorded
//! as a normalised transcript (header revisions kept; lease ids, cluster/member ids, TTL
//! remainders and db sizes normalised; watch responses flattened into markers, since servers
//! group events into responses differently).

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, DeleteOptions, Error, EventType, GetOptions, GetResponse, KeyValue, LeaseGrantOptions,
    LeaseTimeToLiveOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchFilterType,
    WatchOptions, WatchStream,
};
use sync::conn::Etcd;

/// One behaviour's observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub seen: String,
}

#[derive(Default)]
pub struct Transcript {
    pub entries: Vec<Entry>,
    leases: BTreeMap<i64, String>,
}

impl Transcript {
    fn rec(&mut self, name: &str, seen: impl Into<String>) {
        self.entries.push(Entry { name: name.to_string(), seen: seen.into() });
    }

    fn lease(&mut self, id: i64) -> String {
        if id == 0 {
            return "-".into();
        }
        let n = self.leases.len() + 1;
        self.leases.entry(id).or_insert_with(|| format!("L{n}")).clone()
    }

    fn kv(&mut self, kv: &KeyValue) -> String {
        let value = String::from_utf8_lossy(kv.value());
        let value =
            if value.len() > 24 { format!("{}…({}B)", &value[..24], kv.value().len()) } else { value.into_owned() };
        let lease = self.lease(kv.lease());
        format!(
            "{}={} c{} m{} v{} l{}",
            String::from_utf8_lossy(kv.key()),
            value,
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            lease
        )
    }

    fn kvs(&mut self, kvs: &[KeyValue]) -> String {
        let parts: Vec<String> = kvs.iter().map(|kv| self.kv(kv)).collect();
        format!("[{}]", parts.join(", "))
    }

    fn get(&mut self, r: &GetResponse) -> String {
        let kvs = self.kvs(r.kvs());
        format!("rev={} count={} more={} kvs={}", rev(r.header()), r.count(), r.more(), kvs)
    }

    fn result<T>(&mut self, name: &str, r: Result<T, Error>, f: impl FnOnce(&mut Self, T) -> String) {
        let seen = match r {
            Ok(v) => f(self, v),
            Err(e) => err(&e),
        };
        self.rec(name, seen);
    }

    /// Distinct behaviour names (the suite asserts a floor on these).
    pub fn behaviours(&self) -> usize {
        self.entries.iter().map(|e| e.name.as_str()).collect::<std::collections::BTreeSet<_>>().len()
    }
}

fn rev(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map(|h| h.revision()).unwrap_or(-1)
}

pub fn err(e: &Error) -> String {
    match e {
        Error::GRpcStatus(s) => format!("error({:?}: {})", s.code(), s.message()),
        other => format!("error({other})"),
    }
}

fn big(n: usize) -> Vec<u8> {
    vec![b'x'; n]
}

/// Reads watch responses until `want` markers are collected or `wait` passes with nothing new.
/// Markers are grouped by watch id (stable): etcd orders the watchers of one stream by Go map
/// iteration, so only the order within one watcher is part of the contract.
async fn drain(t: &mut Transcript, s: &mut WatchStream, want: usize, wait: Duration) -> Vec<String> {
    let mut out = drain_raw(t, s, want, wait).await;
    let id_of = |m: &String| -> i64 {
        m.split("id=").nth(1).and_then(|r| r.split([' ', ')']).next()).and_then(|n| n.parse().ok()).unwrap_or(i64::MIN)
    };
    out.sort_by_key(id_of);
    out
}

async fn drain_raw(t: &mut Transcript, s: &mut WatchStream, want: usize, wait: Duration) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < want {
        let msg = match tokio::time::timeout(wait, s.message()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                out.push(err(&e));
                break;
            }
            Ok(Ok(None)) => {
                out.push("closed".into());
                break;
            }
            Ok(Ok(Some(m))) => m,
        };
        if msg.created() {
            out.push(format!("created(id={})", msg.watch_id()));
        }
        for e in msg.events() {
            let kv = e.kv().map(|kv| t.kv(kv)).unwrap_or_default();
            let prev = e.prev_kv().map(|kv| t.kv(kv)).map(|p| format!(" prev={p}")).unwrap_or_default();
            let ty = match e.event_type() {
                EventType::Put => "put",
                EventType::Delete => "del",
            };
            out.push(format!("{ty}(id={} {kv}{prev})", msg.watch_id()));
        }
        if msg.canceled() {
            out.push(format!(
                "canceled(id={} compact={} hdr_rev={} reason={:?})",
                msg.watch_id(),
                msg.compact_revision(),
                rev(msg.header()),
                msg.cancel_reason()
            ));
        } else if !msg.created() && msg.events().is_empty() {
            out.push(format!("progress(id={} rev={})", msg.watch_id(), rev(msg.header())));
        }
    }
    out
}

const W: Duration = Duration::from_secs(3);

/// Runs the whole script against one server. The server must be fresh (revision 1, no keys)
/// and started with a watch progress-notify interval of 500 ms.
pub async fn run(etcd: &Etcd) -> Transcript {
    let mut t = Transcript::default();
    let mut c = etcd.client.clone();

    // --- Put, Range, versions ---------------------------------------------------------------
    t.result("status.fresh", c.status().await, |_, s| {
        format!("rev={} db_size_positive={}", rev(s.header()), s.db_size() > 0)
    });
    t.result("put.new", c.put("/a", "1", Some(PutOptions::new().with_prev_key())).await, |t, r| {
        let prev = r.prev_key().map(|kv| t.kv(kv));
        format!("rev={} prev={prev:?}", rev(r.header()))
    });
    t.result("put.overwrite_prev_kv", c.put("/a", "2", Some(PutOptions::new().with_prev_key())).await, |t, r| {
        let prev = r.prev_key().map(|kv| t.kv(kv));
        format!("rev={} prev={prev:?}", rev(r.header()))
    });
    t.result("range.single", c.get("/a", None).await, |t, r| t.get(&r));
    for (k, v) in [("/b", "20"), ("/c", "10"), ("/d", "40"), ("/e", "30")] {
        c.put(k, v, None).await.expect("put");
    }
    t.result("range.prefix", c.get("/", Some(GetOptions::new().with_prefix())).await, |t, r| t.get(&r));
    t.result("range.limit_more", c.get("/", Some(GetOptions::new().with_prefix().with_limit(2))).await, |t, r| {
        t.get(&r)
    });
    t.result(
        "range.limit_equal_count",
        c.get("/", Some(GetOptions::new().with_prefix().with_limit(5))).await,
        |t, r| t.get(&r),
    );
    t.result("range.from_key", c.get("/c", Some(GetOptions::new().with_from_key())).await, |t, r| t.get(&r));
    t.result("range.range_end", c.get("/b", Some(GetOptions::new().with_range("/d"))).await, |t, r| t.get(&r));
    t.result("range.keys_only", c.get("/", Some(GetOptions::new().with_prefix().with_keys_only())).await, |t, r| {
        t.get(&r)
    });
    t.result("range.count_only", c.get("/", Some(GetOptions::new().with_prefix().with_count_only())).await, |t, r| {
        t.get(&r)
    });
    t.result(
        "range.sort_key_descend",
        c.get("/", Some(GetOptions::new().with_prefix().with_sort(SortTarget::Key, SortOrder::Descend))).await,
        |t, r| t.get(&r),
    );
    t.result(
        "range.sort_mod_ascend_limit",
        c.get("/", Some(GetOptions::new().with_prefix().with_limit(3).with_sort(SortTarget::Mod, SortOrder::Ascend)))
            .await,
        |t, r| t.get(&r),
    );
    t.result(
        "range.sort_value_descend",
        c.get("/", Some(GetOptions::new().with_prefix().with_sort(SortTarget::Value, SortOrder::Descend))).await,
        |t, r| t.get(&r),
    );
    t.result(
        "range.sort_create_default_order",
        c.get("/", Some(GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::None))).await,
        |t, r| t.get(&r),
    );
    t.result("range.at_revision", c.get("/a", Some(GetOptions::new().with_revision(2))).await, |t, r| t.get(&r));
    t.result("range.before_create", c.get("/e", Some(GetOptions::new().with_revision(3))).await, |t, r| t.get(&r));
    t.result("range.future_revision", c.get("/a", Some(GetOptions::new().with_revision(1000))).await, |t, r| t.get(&r));
    t.result("range.missing_key", c.get("/zz", None).await, |t, r| t.get(&r));
    t.result("range.empty_key", c.get("", None).await, |t, r| t.get(&r));
    t.result("range.all_keys", c.get("", Some(GetOptions::new().with_all_keys().with_keys_only())).await, |t, r| {
        t.get(&r)
    });

    // --- Delete -------------------------------------------------------------------------------
    t.result("delete.single_prev_kv", c.delete("/e", Some(DeleteOptions::new().with_prev_key())).await, |t, r| {
        let prev = t.kvs(r.prev_kvs());
        format!("rev={} deleted={} prev={prev}", rev(r.header()), r.deleted())
    });
    t.result("delete.missing_no_revision", c.delete("/e", None).await, |_, r| {
        format!("rev={} deleted={}", rev(r.header()), r.deleted())
    });
    t.result("put.after_delete_version_resets", c.put("/e", "31", None).await, |_, r| {
        format!("rev={}", rev(r.header()))
    });
    t.result("range.after_recreate", c.get("/e", None).await, |t, r| t.get(&r));
    for k in ["/p/1", "/p/2", "/p/3"] {
        c.put(k, "p", None).await.expect("put");
    }
    t.result(
        "delete.prefix_one_revision",
        c.delete("/p/", Some(DeleteOptions::new().with_prefix().with_prev_key())).await,
        |t, r| {
            let prev = t.kvs(r.prev_kvs());
            format!("rev={} deleted={} prev={prev}", rev(r.header()), r.deleted())
        },
    );

    // --- Txn ------------------------------------------------------------------------------------
    let txn_show = |t: &mut Transcript, r: etcd_client::TxnResponse| -> String {
        let mut parts = Vec::new();
        for op in r.op_responses() {
            parts.push(match op {
                TxnOpResponse::Put(p) => {
                    let prev = p.prev_key().map(|kv| t.kv(kv));
                    format!("put(hdr={} prev={prev:?})", rev(p.header()))
                }
                TxnOpResponse::Get(g) => format!("get({})", t.get(&g)),
                TxnOpResponse::Delete(d) => format!("del(hdr={} n={})", rev(d.header()), d.deleted()),
                TxnOpResponse::Txn(n) => {
                    let inner: Vec<String> = n
                        .op_responses()
                        .iter()
                        .map(|op| match op {
                            TxnOpResponse::Put(p) => format!("put(hdr={})", rev(p.header())),
                            TxnOpResponse::Get(g) => format!("get(hdr={})", rev(g.header())),
                            TxnOpResponse::Delete(d) => format!("del(hdr={})", rev(d.header())),
                            TxnOpResponse::Txn(t) => format!("txn(hdr={})", rev(t.header())),
                        })
                        .collect();
                    format!("txn(hdr={} ok={} ops={inner:?})", rev(n.header()), n.succeeded())
                }
            });
        }
        format!("rev={} succeeded={} ops=[{}]", rev(r.header()), r.succeeded(), parts.join(", "))
    };
    let txn = Txn::new()
        .when([Compare::value("/a", CompareOp::Equal, "2")])
        .and_then([TxnOp::put("/a", "3", Some(PutOptions::new().with_prev_key()))])
        .or_else([TxnOp::get("/a", None)]);
    t.result("txn.compare_value_success", c.txn(txn).await, txn_show);
    let txn = Txn::new()
        .when([Compare::value("/a", CompareOp::Equal, "nope")])
        .and_then([TxnOp::put("/a", "x", None)])
        .or_else([TxnOp::get("/a", None)]);
    t.result("txn.compare_value_failure", c.txn(txn).await, txn_show);
    let txn = Txn::new().when([Compare::version("/a", CompareOp::Equal, 3)]).and_then([TxnOp::get("/a", None)]);
    t.result("txn.compare_version", c.txn(txn).await, txn_show);
    let txn = Txn::new()
        .when([Compare::create_revision("/new", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("/new", "n", None)]);
    t.result("txn.create_if_absent", c.txn(txn).await, txn_show);
    let txn = Txn::new()
        .when([Compare::create_revision("/new", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("/new", "again", None)]);
    t.result("txn.create_if_absent_again", c.txn(txn).await, txn_show);
    let txn = Txn::new()
        .when([Compare::mod_revision("/a", CompareOp::Greater, 5), Compare::mod_revision("/b", CompareOp::Less, 5)])
        .and_then([TxnOp::get("/b", None)]);
    t.result("txn.compare_mod_revision", c.txn(txn).await, txn_show);
    let txn = Txn::new()
        .when([Compare::value("/missing", CompareOp::NotEqual, "x")])
        .and_then([TxnOp::put("/missing", "y", None)]);
    t.result("txn.compare_value_missing_key_fails", c.txn(txn).await, txn_show);
    let txn = Txn::new()
        .when([Compare::version("/", CompareOp::Greater, 0).with_prefix()])
        .and_then([TxnOp::get("/", Some(GetOptions::new().with_prefix().with_count_only()))]);
    t.result("txn.compare_over_range", c.txn(txn).await, txn_show);
    let txn =
        Txn::new().and_then([TxnOp::put("/t1", "a", None), TxnOp::put("/t2", "b", None), TxnOp::delete("/b", None)]);
    t.result("txn.multi_op_one_revision", c.txn(txn).await, txn_show);
    t.result("range.after_multi_op", c.get("/t", Some(GetOptions::new().with_prefix())).await, |t, r| t.get(&r));
    let txn = Txn::new().and_then([TxnOp::put("/ryw", "1", None), TxnOp::get("/ryw", None)]);
    t.result("txn.reads_own_writes", c.txn(txn).await, txn_show);
    let txn = Txn::new().and_then([TxnOp::get("/a", None), TxnOp::delete("/nothing", None)]);
    t.result("txn.no_change_no_revision", c.txn(txn).await, txn_show);
    let inner = Txn::new()
        .when([Compare::value("/a", CompareOp::Equal, "3")])
        .and_then([TxnOp::put("/nested", "yes", None), TxnOp::get("/nested", None), TxnOp::delete("/t1", None)])
        .or_else([TxnOp::put("/nested", "no", None)]);
    let txn = Txn::new().and_then([TxnOp::txn(inner), TxnOp::put("/outer", "o", None)]);
    t.result("txn.nested", c.txn(txn).await, txn_show);
    let txn = Txn::new().and_then([TxnOp::put("/dup", "1", None), TxnOp::put("/dup", "2", None)]);
    t.result("txn.duplicate_key", c.txn(txn).await, txn_show);
    let txn = Txn::new()
        .and_then([TxnOp::delete("/q/", Some(DeleteOptions::new().with_prefix())), TxnOp::put("/q/1", "2", None)]);
    t.result("txn.put_inside_deleted_range", c.txn(txn).await, txn_show);
    let ops: Vec<TxnOp> = (0..129).map(|i| TxnOp::put(format!("/many/{i:03}"), "m", None)).collect();
    t.result("txn.too_many_ops", c.txn(Txn::new().and_then(ops)).await, txn_show);
    let ops: Vec<TxnOp> = (0..128).map(|i| TxnOp::put(format!("/many/{i:03}"), "m", None)).collect();
    t.result("txn.max_ops", c.txn(Txn::new().and_then(ops)).await, |_, r| {
        format!("rev={} ok={} n={}", rev(r.header()), r.succeeded(), r.op_responses().len())
    });
    let txn = Txn::new().and_then([TxnOp::put("", "v", None)]);
    t.result("txn.empty_key", c.txn(txn).await, txn_show);

    // --- Put options and limits -----------------------------------------------------------------
    t.result("put.too_large", c.put("/big", big(1_600_000), None).await, |_, r| format!("rev={}", rev(r.header())));
    t.result("put.just_under_limit", c.put("/big", big(1_000_000), None).await, |_, r| {
        format!("rev={}", rev(r.header()))
    });
    t.result("put.empty_key", c.put("", "v", None).await, |_, r| format!("rev={}", rev(r.header())));
    t.result(
        "put.ignore_value",
        c.put("/a", "", Some(PutOptions::new().with_ignore_value().with_prev_key())).await,
        |t, r| {
            let prev = r.prev_key().map(|kv| t.kv(kv));
            format!("rev={} prev={prev:?}", rev(r.header()))
        },
    );
    t.result("range.after_ignore_value", c.get("/a", None).await, |t, r| t.get(&r));
    t.result(
        "put.ignore_value_missing_key",
        c.put("/absent", "", Some(PutOptions::new().with_ignore_value())).await,
        |_, r| format!("rev={}", rev(r.header())),
    );

    // --- Leases ------------------------------------------------------------------------------------
    let lease = c.lease_grant(60, None).await.expect("lease grant");
    let lid = lease.id();
    let name = t.lease(lid);
    t.rec("lease.grant", format!("id={name} ttl={} rev={}", lease.ttl(), rev(lease.header())));
    t.result("lease.put_with_lease", c.put("/leased/1", "l", Some(PutOptions::new().with_lease(lid))).await, |_, r| {
        format!("rev={}", rev(r.header()))
    });
    c.put("/leased/2", "l", Some(PutOptions::new().with_lease(lid))).await.expect("put");
    t.result("range.leased", c.get("/leased/", Some(GetOptions::new().with_prefix())).await, |t, r| t.get(&r));
    t.result(
        "put.ignore_lease",
        c.put("/leased/1", "l2", Some(PutOptions::new().with_ignore_lease())).await,
        |_, r| format!("rev={}", rev(r.header())),
    );
    t.result("range.after_ignore_lease", c.get("/leased/1", None).await, |t, r| t.get(&r));
    t.result(
        "lease.time_to_live",
        c.lease_time_to_live(lid, Some(LeaseTimeToLiveOptions::new().with_keys())).await,
        |t, r| {
            // etcd 3.4 lists a lease's keys in Go map order: only the set is part of the contract.
            let mut keys: Vec<String> = r.keys().iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
            keys.sort();
            format!(
                "id={} granted={} ttl_in_range={} keys={keys:?}",
                t.lease(r.id()),
                r.granted_ttl(),
                r.ttl() > 0 && r.ttl() <= 60
            )
        },
    );
    t.result(
        "lease.keep_alive",
        async {
            let (mut keeper, mut stream) = c.lease_keep_alive(lid).await?;
            keeper.keep_alive().await?;
            stream.message().await
        }
        .await,
        |t, r| match r {
            Some(r) => format!("id={} ttl={}", t.lease(r.id()), r.ttl()),
            None => "no response".into(),
        },
    );
    t.result("lease.leases", c.leases().await, |t, r| {
        let ids: Vec<String> = r.leases().iter().map(|l| t.lease(l.id())).collect();
        format!("{ids:?}")
    });
    t.result("lease.put_unknown_lease", c.put("/x", "v", Some(PutOptions::new().with_lease(0x1234))).await, |_, r| {
        format!("rev={}", rev(r.header()))
    });
    t.result(
        "lease.grant_duplicate_id",
        c.lease_grant(60, Some(LeaseGrantOptions::new().with_id(lid))).await,
        |_, r| format!("ttl={}", r.ttl()),
    );
    t.result(
        "lease.grant_explicit_id",
        c.lease_grant(30, Some(LeaseGrantOptions::new().with_id(7777))).await,
        |t, r| format!("id={} ttl={}", t.lease(r.id()), r.ttl()),
    );
    t.result("lease.revoke_deletes_keys", c.lease_revoke(lid).await, |_, r| format!("rev={}", rev(r.header())));
    t.result("range.after_revoke", c.get("/leased/", Some(GetOptions::new().with_prefix())).await, |t, r| t.get(&r));
    t.result("lease.revoke_unknown", c.lease_revoke(lid).await, |_, r| format!("rev={}", rev(r.header())));
    t.result("lease.time_to_live_unknown", c.lease_time_to_live(lid, None).await, |_, r| {
        format!("ttl={} granted={}", r.ttl(), r.granted_ttl())
    });
    t.result("lease.revoke_empty", c.lease_revoke(7777).await, |_, r| format!("rev={}", rev(r.header())));
    let short = c.lease_grant(1, None).await.expect("lease grant");
    t.rec("lease.grant_min_ttl", format!("ttl={}", short.ttl()));
    c.put("/expiring", "e", Some(PutOptions::new().with_lease(short.id()))).await.expect("put");
    tokio::time::sleep(Duration::from_secs(4)).await;
    t.result("lease.expiry_deletes_keys", c.get("/expiring", None).await, |t, r| t.get(&r));

    // --- Watch ---------------------------------------------------------------------------------------
    let mut w = c.watch("/a", Some(WatchOptions::new().with_start_revision(2).with_prev_key())).await.expect("watch");
    let seen = drain(&mut t, &mut w, 4, W).await;
    t.rec("watch.from_past_revision_prev_kv", format!("{seen:?}"));
    let mut w = c.watch("/w/", Some(WatchOptions::new().with_prefix())).await.expect("watch");
    let created = drain(&mut t, &mut w, 1, W).await;
    t.rec("watch.created", format!("{created:?}"));
    c.put("/w/1", "a", None).await.expect("put");
    c.put("/w/2", "b", None).await.expect("put");
    c.delete("/w/1", None).await.expect("delete");
    let seen = drain(&mut t, &mut w, 3, W).await;
    t.rec("watch.live_prefix_put_delete", format!("{seen:?}"));
    w.watch("/w/", Some(WatchOptions::new().with_prefix().with_filters([WatchFilterType::NoPut]).with_prev_key()))
        .await
        .expect("watch");
    let created = drain(&mut t, &mut w, 1, W).await;
    t.rec("watch.second_watcher_same_stream", format!("{created:?}"));
    c.put("/w/3", "c", None).await.expect("put");
    c.delete("/w/2", None).await.expect("delete");
    let seen = drain(&mut t, &mut w, 3, W).await;
    t.rec("watch.filter_noput_and_prev_kv", format!("{seen:?}"));
    w.request_progress().await.expect("progress");
    let seen = drain(&mut t, &mut w, 1, W).await;
    t.rec("watch.request_progress", format!("{seen:?}"));
    w.cancel(0).await.expect("cancel");
    let seen = drain(&mut t, &mut w, 1, W).await;
    t.rec("watch.cancel", format!("{seen:?}"));
    c.put("/w/4", "d", None).await.expect("put");
    c.delete("/w/3", None).await.expect("delete");
    let seen = drain(&mut t, &mut w, 1, W).await;
    t.rec("watch.after_cancel_only_other", format!("{seen:?}"));
    let txn = Txn::new().and_then([TxnOp::put("/w/5", "e", None), TxnOp::put("/w/6", "f", None)]);
    c.txn(txn).await.expect("txn");
    let seen = drain(&mut t, &mut w, 1, W).await;
    t.rec("watch.txn_events_filtered", format!("{seen:?}"));
    let mut pw = c.watch("/pn", Some(WatchOptions::new().with_progress_notify())).await.expect("watch");
    let seen = drain(&mut t, &mut pw, 2, W).await;
    t.rec("watch.progress_notify", format!("{seen:?}"));
    let head = c.get("/a", None).await.expect("get").header().map(|h| h.revision()).unwrap_or_default();
    let mut fw = c.watch("/future", Some(WatchOptions::new().with_start_revision(head + 2))).await.expect("watch");
    c.put("/future", "1", None).await.expect("put");
    c.put("/future", "2", None).await.expect("put");
    let seen = drain(&mut t, &mut fw, 2, W).await;
    t.rec("watch.future_start_revision", format!("{seen:?}"));

    // --- Compaction -----------------------------------------------------------------------------------
    let head = c.get("/a", None).await.expect("get").header().map(|h| h.revision()).unwrap_or_default();
    let at = head - 10;
    t.result("compact", c.compact(at, None).await, |_, r| format!("rev={}", rev(r.header())));
    t.result("compact.again", c.compact(at, None).await, |_, r| format!("rev={}", rev(r.header())));
    t.result("compact.older", c.compact(at - 1, None).await, |_, r| format!("rev={}", rev(r.header())));
    t.result("compact.future", c.compact(head + 100, None).await, |_, r| format!("rev={}", rev(r.header())));
    t.result("range.below_compaction", c.get("/a", Some(GetOptions::new().with_revision(at - 1))).await, |t, r| {
        t.get(&r)
    });
    t.result(
        "range.at_compaction",
        c.get("/", Some(GetOptions::new().with_prefix().with_count_only().with_revision(at))).await,
        |t, r| t.get(&r),
    );
    let mut cw =
        c.watch("/", Some(WatchOptions::new().with_prefix().with_start_revision(at - 1))).await.expect("watch");
    let seen = drain(&mut t, &mut cw, 2, W).await;
    t.rec("watch.from_compacted_revision_cancelled", format!("{seen:?}"));
    let mut cw =
        c.watch("/", Some(WatchOptions::new().with_prefix().with_start_revision(at + 1))).await.expect("watch");
    let seen = drain(&mut t, &mut cw, 100, Duration::from_millis(700)).await;
    t.rec("watch.from_just_after_compaction", format!("{seen:?}"));
    t.result("status.final", c.status().await, |_, s| {
        format!("rev={} db_size_positive={}", rev(s.header()), s.db_size() > 0)
    });
    t
}
