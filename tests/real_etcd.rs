//! The real-etcd launcher and the client seam over real TCP: start on free ports, survive a
//! SIGKILL (3.4) and a SIGTERM (3.5) with committed data intact, clean up on drop, fail over
//! between endpoints in order, and name the endpoint when none answers.

use std::time::Duration;

use harness::real_etcd::{EtcdOptions, EtcdServer, EtcdVersion};
use sync::conn::{ConnConfig, ConnError, Connector};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

async fn get(endpoint: &str, key: &str) -> Option<Vec<u8>> {
    let etcd = sync::conn::connect(&ConnConfig::new([endpoint]), &Connector::Tcp, 0).await.expect("connect");
    let mut kv = etcd.kv.clone();
    let r = etcd.call(kv.get(key, None)).await.expect("get");
    r.kvs().first().map(|kv| kv.value().to_vec())
}

async fn put(endpoint: &str, key: &str, value: &str) {
    let etcd = sync::conn::connect(&ConnConfig::new([endpoint]), &Connector::Tcp, 0).await.expect("connect");
    let mut kv = etcd.kv.clone();
    etcd.call(kv.put(key, value, None)).await.expect("put");
}

#[test]
fn killed_etcd_34_restarts_with_its_data() {
    runtime().block_on(async {
        let mut s = EtcdServer::start(EtcdVersion::V34, EtcdOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(s.version.starts_with("3.4."), "{}", s.version);
        put(&s.endpoint(), "/survives", "yes").await;
        s.kill();
        assert!(!s.is_running());
        let mut cfg = ConnConfig::new([s.endpoint()]);
        cfg.request_timeout = Duration::from_millis(500);
        assert!(sync::conn::connect(&cfg, &Connector::Tcp, 0).await.is_err(), "a killed server does not answer");
        s.restart().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(get(&s.endpoint(), "/survives").await.as_deref(), Some(&b"yes"[..]));
    });
}

#[test]
fn terminated_etcd_35_restarts_with_its_data() {
    runtime().block_on(async {
        let mut s = EtcdServer::start(EtcdVersion::V35, EtcdOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(s.version.starts_with("3.5."), "{}", s.version);
        put(&s.endpoint(), "/survives", "yes").await;
        s.terminate();
        s.restart().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(get(&s.endpoint(), "/survives").await.as_deref(), Some(&b"yes"[..]));
    });
}

#[test]
fn dropping_a_server_stops_it() {
    runtime().block_on(async {
        let s = EtcdServer::start(EtcdVersion::V34, EtcdOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let endpoint = s.endpoint();
        drop(s);
        let mut cfg = ConnConfig::new([endpoint.clone()]);
        cfg.request_timeout = Duration::from_millis(500);
        assert!(sync::conn::connect(&cfg, &Connector::Tcp, 0).await.is_err(), "{endpoint} still answers after drop");
    });
}

#[test]
fn connect_fails_over_in_order_and_names_dead_endpoints() {
    runtime().block_on(async {
        let s = EtcdServer::start(EtcdVersion::V35, EtcdOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let dead = format!("http://127.0.0.1:{}", closed_port());
        let mut cfg = ConnConfig::new([dead.clone(), s.endpoint()]);
        cfg.request_timeout = Duration::from_millis(500);
        let etcd = sync::conn::connect(&cfg, &Connector::Tcp, 0).await.expect("the second endpoint answers");
        assert_eq!(etcd.endpoint, s.endpoint(), "the live endpoint is chosen");

        let only_dead = ConnConfig { endpoints: vec![dead.clone()], ..cfg.clone() };
        let err = sync::conn::connect(&only_dead, &Connector::Tcp, 0).await.err().expect("nothing answers");
        assert!(matches!(err, ConnError::AllUnreachable(_)), "{err}");
        assert!(err.to_string().contains(&dead), "the error names {dead}: {err}");

        let bad = ConnConfig { endpoints: vec!["etcd:2379".into()], ..cfg };
        let err = sync::conn::connect(&bad, &Connector::Tcp, 0).await.err().expect("not a URL with a scheme");
        assert!(err.to_string().contains("invalid etcd endpoint etcd:2379"), "{err}");
    });
}

/// etcd enforces a minimum ping interval on its clients (`--grpc-keepalive-min-time`, 5 s by
/// default): a connection that pings more often while the server has nothing to send is told
/// `too_many_pings` and closed. A watch on a quiet key must outlive that policy with the
/// default connection settings, on both versions — the sync's watch on a primary nobody
/// writes to is exactly that (2 s keep-alives had it cut after about 8 s, every 8 s).
#[test]
fn a_quiet_watch_outlives_etcds_ping_policy() {
    use etcd_client::WatchOptions;
    // Three strikes at the old 2 s interval took ~8 s; 20 s is well past them.
    const QUIET: Duration = Duration::from_secs(20);
    runtime().block_on(async {
        for v in [EtcdVersion::V34, EtcdVersion::V35] {
            let s = EtcdServer::start(v, EtcdOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
            let etcd =
                sync::conn::connect(&ConnConfig::new([s.endpoint()]), &Connector::Tcp, 0).await.expect("connect");
            let mut w = etcd.watch.clone();
            let mut stream = w.watch("/quiet", Some(WatchOptions::new())).await.expect("watch");
            tokio::time::sleep(QUIET).await;
            put(&s.endpoint(), "/quiet", "at last").await;
            // The first answer may be the watch's `created` notice, without events.
            let values = loop {
                let r = match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                    Ok(Ok(Some(r))) => r,
                    other => panic!("etcd {}: the quiet watch did not survive {QUIET:?}: {other:?}", s.version),
                };
                if !r.events().is_empty() {
                    break r.events().iter().filter_map(|e| e.kv()).map(|kv| kv.value().to_vec()).collect::<Vec<_>>();
                }
            };
            assert_eq!(values, [b"at last".to_vec()], "etcd {}", s.version);
        }
    });
}
