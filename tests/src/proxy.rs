//! A fault-injecting TCP proxy, one per directed link between two replicas: it can cut
//! the link (a partition: bytes vanish, connections hang), drop one direction only, slow
//! it down, and heal (existing connections are closed so both ends reconnect cleanly).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How one link behaves now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkMode {
    /// Bytes from the connecting side to the target are delivered.
    pub forward: bool,
    /// Bytes from the target back to the connecting side are delivered.
    pub backward: bool,
    /// Added before delivering each chunk, in both directions.
    pub delay: Duration,
    /// Bumped to close every connection open at that moment.
    pub generation: u64,
}

impl Default for LinkMode {
    fn default() -> Self {
        LinkMode { forward: true, backward: true, delay: Duration::ZERO, generation: 0 }
    }
}

/// A running proxy. Dropping it stops accepting.
pub struct Proxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    mode: watch::Sender<LinkMode>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Close live connections too.
        self.mode.send_modify(|m| m.generation += 1);
    }
}

const CHUNK_BYTES: usize = 64 * 1024;

impl Proxy {
    /// Listens on an ephemeral loopback port. Connections made before a target is set
    /// wait for one.
    pub async fn start() -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (mode, _) = watch::channel(LinkMode::default());
        let accept = tokio::spawn(accept_loop(listener, target.clone(), mode.clone()));
        Ok(Proxy { addr, target, mode, accept })
    }

    /// Where connections go from now on; open connections are closed.
    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().expect("proxy lock") = Some(target);
        self.mode.send_modify(|m| m.generation += 1);
    }

    /// Nothing gets through in either direction.
    pub fn partition(&self) {
        self.mode.send_modify(|m| {
            m.forward = false;
            m.backward = false;
        });
    }

    /// Only the connecting side's bytes get through; replies are lost.
    pub fn lose_backward(&self) {
        self.mode.send_modify(|m| {
            m.forward = true;
            m.backward = false;
        });
    }

    /// Every chunk waits `delay` before delivery.
    pub fn slow(&self, delay: Duration) {
        self.mode.send_modify(|m| m.delay = delay);
    }

    /// Back to a clean link. Connections that lost bytes are closed so both ends start
    /// over instead of waiting on a broken stream.
    pub fn heal(&self) {
        self.mode.send_modify(|m| {
            m.forward = true;
            m.backward = true;
            m.delay = Duration::ZERO;
            m.generation += 1;
        });
    }

    pub fn mode(&self) -> LinkMode {
        *self.mode.borrow()
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: Arc<Mutex<Option<SocketAddr>>>,
    mode: watch::Sender<LinkMode>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { return };
        let target = *target.lock().expect("proxy lock");
        let mode = mode.subscribe();
        tokio::spawn(async move {
            let Some(target) = target else { return };
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let generation = mode.borrow().generation;
            let (in_read, in_write) = inbound.into_split();
            let (out_read, out_write) = outbound.into_split();
            let forward = pump(in_read, out_write, mode.clone(), generation, true);
            let backward = pump(out_read, in_write, mode, generation, false);
            // When either direction ends, both halves are dropped: the connection closes.
            tokio::select! {
                _ = forward => {}
                _ = backward => {}
            }
        });
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<LinkMode>,
    generation: u64,
    forward: bool,
) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() || mode.borrow().generation != generation {
                    return;
                }
                continue;
            }
        };
        let now = *mode.borrow();
        if now.generation != generation {
            return;
        }
        let deliver = if forward { now.forward } else { now.backward };
        if !deliver {
            continue; // Lost on the wire.
        }
        if !now.delay.is_zero() {
            tokio::time::sleep(now.delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
