//! A TCP proxy on loopback that stands for one network link of the real backend (the sync's
//! link to an etcd server), with the simulator's fault rules: **hold** (bytes wait in the proxy
//! and in the kernel, nothing is lost — a partition as turmoil holds it), **release**, and
//! **reset** (every connection through the link is closed, as a keep-alive giving up or a heal's
//! reset does). Never a dropped segment: TCP would retransmit it, and the simulator has none.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Connections one link carries at once (the sync keeps one or two; more is a client loop).
const CONNECTIONS_MAX: usize = 64;
/// Bytes a direction of a held connection buffers in the proxy (the kernel buffers the rest,
/// then the sender blocks: a partition fills the pipe, it never grows a queue).
const BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct LinkState {
    held: bool,
    /// Bumped by every reset; a connection ends when it sees a newer one.
    resets: u64,
}

/// One proxied link; its listener and connections end when it is dropped.
pub struct Proxy {
    pub name: String,
    addr: SocketAddr,
    state: Arc<watch::Sender<LinkState>>,
    listener: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.listener.abort();
        for c in self.conns.lock().expect("proxy lock").drain(..) {
            c.abort();
        }
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(name: &str, upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(watch::Sender::new(LinkState::default()));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (st, cs) = (state.clone(), conns.clone());
        let listener = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                let mut list = cs.lock().expect("proxy lock");
                list.retain(|c| !c.is_finished());
                if list.len() >= CONNECTIONS_MAX {
                    // Refused: dropping the socket closes it.
                    continue;
                }
                list.push(tokio::spawn(carry(client, upstream, st.subscribe())));
            }
        });
        Ok(Proxy { name: name.into(), addr, state, listener, conns })
    }

    /// The endpoint clients dial instead of the upstream's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops moving bytes both ways (connections stay open).
    pub fn hold(&self) {
        self.state.send_modify(|s| s.held = true);
    }

    /// Moves the held bytes on.
    pub fn release(&self) {
        self.state.send_modify(|s| s.held = false);
    }

    /// Closes every connection through the link; returns how many were open.
    pub fn reset(&self) -> usize {
        let open = self.conns.lock().expect("proxy lock").iter().filter(|c| !c.is_finished()).count();
        self.state.send_modify(|s| s.resets += 1);
        open
    }
}

/// Carries one connection until either end closes it or the link is reset.
async fn carry(client: TcpStream, upstream: SocketAddr, mut state: watch::Receiver<LinkState>) {
    let resets = state.borrow().resets;
    // A held link holds the connection's first bytes too: connect, then wait in `pipe`.
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let (up, down) = (state.clone(), state.clone());
    tokio::select! {
        _ = pipe(cr, sw, up) => {}
        _ = pipe(sr, cw, down) => {}
        _ = state.wait_for(|s| s.resets != resets) => {}
    }
}

/// Copies one direction, waiting while the link is held.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<LinkState>,
) {
    let mut buf = vec![0u8; BUFFER_BYTES];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if state.wait_for(|s| !s.held).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn ask(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).await.expect("write");
        let mut b = vec![0u8; msg.len()];
        s.read_exact(&mut b).await.expect("read");
        b
    }

    #[tokio::test]
    async fn hold_delays_without_loss_and_reset_closes() {
        let p = Proxy::start("link", echo_server().await).await.expect("proxy");
        let addr = p.endpoint().trim_start_matches("http://").to_string();
        let mut s = TcpStream::connect(&addr).await.expect("connect");
        assert_eq!(ask(&mut s, b"one").await, b"one");

        p.hold();
        s.write_all(b"two").await.expect("write");
        let mut b = [0u8; 3];
        let held = tokio::time::timeout(std::time::Duration::from_millis(200), s.read_exact(&mut b)).await;
        assert!(held.is_err(), "a held link passed bytes");
        p.release();
        s.read_exact(&mut b).await.expect("the held bytes arrive");
        assert_eq!(&b, b"two");

        assert_eq!(p.reset(), 1);
        let mut rest = Vec::new();
        let n = s.read_to_end(&mut rest).await.unwrap_or(0);
        assert_eq!(n, 0, "a reset connection is closed");
        let mut again = TcpStream::connect(&addr).await.expect("a new connection after a reset");
        assert_eq!(ask(&mut again, b"three").await, b"three");
    }
}
