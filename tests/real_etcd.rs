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
