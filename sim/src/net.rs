//! The network of the world: turmoil TCP streams wrapped so the world can reset them.
//!
//! turmoil's TCP never retransmits: a segment lost to `partition()` or `fail_rate` stalls the
//! stream forever, even after the partition heals. So the world never drops segments. A partition
//! is `hold` (segments wait) and, when it lasts longer than a keep-alive would tolerate, a reset of
//! every connection on the link — which is what a real kernel does once its retransmissions give
//! up. [`Links`] is the registry that makes that reset possible. turmoil holds both directions of
//! a link or none, so a one-way partition is held here: writes from one host to the other wait
//! (the other direction flows), and no new connection between them completes its handshake.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::wrappers::ReceiverStream;

/// Connections the world may still reset; dead entries are pruned on every registration.
const CONNS_TRACKED_MAX: usize = 100_000;

#[derive(Default)]
struct ResetFlag {
    reset: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl ResetFlag {
    fn fire(&self) {
        self.reset.store(true, Ordering::SeqCst);
        for w in self.wakers.lock().expect("reset flag lock").drain(..) {
            w.wake();
        }
    }

    fn check(&self, cx: &Context<'_>) -> io::Result<()> {
        if self.reset.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by the world"));
        }
        let mut wakers = self.wakers.lock().expect("reset flag lock");
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Ok(())
    }
}

/// Directions (from, to) whose segments are held, and the tasks waiting on them.
#[derive(Default)]
struct OneWay {
    held: Mutex<std::collections::BTreeSet<(IpAddr, IpAddr)>>,
    wakers: Mutex<Vec<Waker>>,
}

impl OneWay {
    /// Whether `from` → `to` is held; if so, `cx` is woken when a hold is lifted.
    fn blocks(&self, from: IpAddr, to: IpAddr, cx: &Context<'_>) -> bool {
        if !self.held.lock().expect("one-way lock").contains(&(from, to)) {
            return false;
        }
        let mut wakers = self.wakers.lock().expect("one-way wakers lock");
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        true
    }

    fn set(&self, from: IpAddr, to: IpAddr, held: bool) {
        let mut h = self.held.lock().expect("one-way lock");
        if held {
            h.insert((from, to));
            return;
        }
        h.remove(&(from, to));
        drop(h);
        for w in self.wakers.lock().expect("one-way wakers lock").drain(..) {
            w.wake();
        }
    }
}

struct Tracked {
    local: IpAddr,
    peer: IpAddr,
    flag: Weak<ResetFlag>,
}

/// The registry of live simulated connections, shared by every host of one world.
#[derive(Clone, Default)]
pub struct Links {
    conns: Arc<Mutex<Vec<Tracked>>>,
    dials: Arc<std::sync::atomic::AtomicU64>,
    oneway: Arc<OneWay>,
}

impl Links {
    /// Connections dialled by clients so far (a reconnect shows up as one more).
    pub fn dials(&self) -> u64 {
        self.dials.load(Ordering::SeqCst)
    }

    fn track(&self, stream: &turmoil::net::TcpStream) -> Arc<ResetFlag> {
        let flag = Arc::new(ResetFlag::default());
        let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
            return flag;
        };
        let mut conns = self.conns.lock().expect("links lock");
        conns.retain(|t| t.flag.strong_count() > 0);
        assert!(conns.len() < CONNS_TRACKED_MAX, "more live simulated connections than the world allows");
        conns.push(Tracked { local: local.ip(), peer: peer.ip(), flag: Arc::downgrade(&flag) });
        flag
    }

    pub fn wrap(&self, stream: turmoil::net::TcpStream) -> SimConn {
        let flag = self.track(&stream);
        let unknown = IpAddr::from([0, 0, 0, 0]);
        let local = stream.local_addr().map(|a| a.ip()).unwrap_or(unknown);
        let peer = stream.peer_addr().map(|a| a.ip()).unwrap_or(unknown);
        SimConn { inner: stream, flag, local, peer, oneway: self.oneway.clone() }
    }

    /// Holds every segment from `from` to `to` (connections and new handshakes), not back.
    pub fn hold_oneway(&self, from: IpAddr, to: IpAddr) {
        self.oneway.set(from, to, true);
    }

    /// Lifts [`Links::hold_oneway`]: what waited is written.
    pub fn release_oneway(&self, from: IpAddr, to: IpAddr) {
        self.oneway.set(from, to, false);
    }

    /// Resets every connection between hosts `a` and `b` (either end). Returns how many ends.
    pub fn reset(&self, a: IpAddr, b: IpAddr) -> usize {
        self.reset_where(|t| (t.local == a && t.peer == b) || (t.local == b && t.peer == a))
    }

    /// Resets every connection with one end at `host` (used when a host crashes or is cut off).
    pub fn reset_host(&self, host: IpAddr) -> usize {
        self.reset_where(|t| t.local == host || t.peer == host)
    }

    fn reset_where(&self, pick: impl Fn(&Tracked) -> bool) -> usize {
        let conns = self.conns.lock().expect("links lock");
        let live = conns.iter().filter(|t| pick(t)).filter_map(|t| t.flag.upgrade());
        live.map(|f| f.fire()).count()
    }
}

/// A turmoil TCP stream the world can reset.
pub struct SimConn {
    inner: turmoil::net::TcpStream,
    flag: Arc<ResetFlag>,
    local: IpAddr,
    peer: IpAddr,
    oneway: Arc<OneWay>,
}

impl AsyncRead for SimConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.flag.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.flag.check(cx)?;
        if self.oneway.blocks(self.local, self.peer, cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flag.check(cx)?;
        if self.oneway.blocks(self.local, self.peer, cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for SimConn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// Accepted connections on a turmoil port, as the stream tonic's `serve_with_incoming` wants.
pub async fn incoming(port: u16, links: Links) -> io::Result<ReceiverStream<io::Result<SimConn>>> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let next = listener.accept().await.map(|(s, _)| links.wrap(s));
            if tx.send(next).await.is_err() {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

/// The client side: a connector for tonic's `Endpoint::connect_with_connector`, dialling
/// `http://<turmoil host>:<port>` inside the simulation.
#[derive(Clone, Default)]
pub struct Connector {
    links: Links,
}

impl Connector {
    pub fn new(links: Links) -> Self {
        Connector { links }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<SimConn>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let links = self.links.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}")))?
                .to_string();
            let port = uri.port_u16().unwrap_or(2379);
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            links.dials.fetch_add(1, Ordering::SeqCst);
            let conn = links.wrap(stream);
            // A handshake needs both directions: it completes once neither is held (the
            // caller's connect timeout bounds the wait).
            let (local, peer, oneway) = (conn.local, conn.peer, conn.oneway.clone());
            std::future::poll_fn(|cx| {
                let held = oneway.blocks(local, peer, cx) || oneway.blocks(peer, local, cx);
                if held { Poll::Pending } else { Poll::Ready(()) }
            })
            .await;
            Ok(TokioIo::new(conn))
        })
    }
}

/// HTTP/2 keep-alive of the world's own clients: a held link is noticed within ~3 s.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// An etcd-client for the world's own agents (not the code under test, which connects through
/// `sync::conn`). Lazy: it dials on first use and again after a reset.
pub async fn client(uri: &str, links: Links) -> Result<etcd_client::Client, etcd_client::Error> {
    let channel = tonic::transport::Endpoint::from_shared(uri.to_string())
        .map_err(|e| etcd_client::Error::InvalidArgs(format!("{uri}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(Connector::new(links));
    etcd_client::Client::from_channel(etcd_client::Channel::Tonic(channel), None).await
}
