//! The gRPC listener: accepts connections up to a cap, completes TLS (when configured)
//! within a deadline, closes connections that stay idle, and backs off instead of
//! spinning when the process runs out of descriptors.
//!
//! Each connection carries a [`ConnInfo`] that tonic hands to every request on it (as a
//! request extension): the remote address, the verified client certificate's identity,
//! and the connection's activity, which the authentication layer updates.

pub(crate) mod tls;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::telemetry::Metrics;
pub(crate) use tls::{CertIdentity, ReloadingTls, TlsFiles};

/// How the listener bounds connections.
#[derive(Clone, Debug)]
pub(crate) struct ListenerLimits {
    /// Open connections at most; more are closed at once.
    pub(crate) connections_max: usize,
    /// A connection must finish its TLS handshake, or on plaintext send its first
    /// bytes, within this.
    pub(crate) handshake_timeout: Duration,
    /// A connection with no call open for this long is closed.
    pub(crate) idle_timeout: Duration,
}

/// What a request knows of its connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    pub(crate) remote: SocketAddr,
    /// The verified client certificate's subject, when one was presented.
    pub(crate) cert: Option<Arc<CertIdentity>>,
    pub(crate) activity: Arc<Activity>,
}

/// Calls open on a connection and when the last one ended, for the idle timeout.
#[derive(Debug)]
pub(crate) struct Activity {
    opened: Instant,
    active: AtomicUsize,
    /// Milliseconds after `opened` when a call last ended or began.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { opened: Instant::now(), active: AtomicUsize::new(0), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Marks a call open until the guard drops (with the response body, for streams).
    pub(crate) fn begin(self: &Arc<Activity>) -> ActiveCall {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.touch();
        ActiveCall(self.clone())
    }

    /// How long the connection has had no call open; `None` while one is.
    fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.opened.elapsed().saturating_sub(last))
    }
}

/// An open call on a connection; the connection cannot go idle while it lives.
#[derive(Debug)]
pub(crate) struct ActiveCall(Arc<Activity>);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted connection, holding its place under the connection cap.
pub(crate) struct Conn {
    io: Io,
    info: ConnInfo,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl Conn {
    /// Whether the idle timer says to close; re-arms it otherwise.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            let wait = match self.info.activity.idle_for() {
                Some(idle) if idle >= self.idle_timeout => return true,
                Some(idle) => self.idle_timeout - idle,
                None => self.idle_timeout,
            };
            self.idle.as_mut().reset(tokio::time::Instant::now() + wait);
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle_expired(cx) {
            // End of stream: the HTTP/2 server closes the connection.
            return Poll::Ready(Ok(()));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, data),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Accepts connections on `listener` until `stop`, yielding each once it is ready for
/// HTTP/2. Slow handshakes run in their own tasks, so they never hold up the accept loop.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: Option<ReloadingTls>,
    limits: ListenerLimits,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(5);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => return,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // Out of descriptors (EMFILE/ENFILE) or a connection reset while in
                    // the backlog: wait before trying again instead of spinning.
                    tracing::warn!(error = %e, wait_ms = backoff.as_millis() as u64, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics.record_connection_refused("connections_max");
                tracing::debug!(%remote, max = limits.connections_max, "connection cap reached; closing");
                drop(tcp);
                continue;
            };
            let (tls, limits, tx, metrics) = (tls.clone(), limits.clone(), tx.clone(), metrics.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(limits.handshake_timeout, ready(tcp, remote, tls, &limits, permit))
                    .await
                {
                    Ok(Ok(conn)) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => {
                        metrics.record_connection_refused("handshake");
                        tracing::debug!(%remote, error = %e, "connection refused during handshake");
                    }
                    Err(_) => {
                        metrics.record_connection_refused("handshake_timeout");
                        tracing::debug!(%remote, "handshake not finished in time; closing");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Takes a fresh TCP connection to the point where HTTP/2 can start on it.
async fn ready(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<ReloadingTls>,
    limits: &ListenerLimits,
    permit: OwnedSemaphorePermit,
) -> io::Result<Conn> {
    // Small responses (acks, pull pages, notices) must not wait for the peer's delayed
    // ACK: without TCP_NODELAY replication latency was tens of milliseconds.
    let _ = tcp.set_nodelay(true);
    let _ = rustix::net::sockopt::set_socket_keepalive(&tcp, true);
    let (io, cert) = match tls {
        Some(tls) => {
            let stream = tokio_rustls::TlsAcceptor::from(tls.config()).accept(tcp).await?;
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|leaf| tls::cert_identity(leaf.as_ref()))
                .map(Arc::new);
            (Io::Tls(Box::new(stream)), cert)
        }
        None => {
            // A client that connects and says nothing holds a slot: it must speak first.
            let mut first = [0u8; 1];
            if tcp.peek(&mut first).await? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before sending anything"));
            }
            (Io::Plain(tcp), None)
        }
    };
    Ok(Conn {
        io,
        info: ConnInfo { remote, cert, activity: Arc::new(Activity::new()) },
        idle_timeout: limits.idle_timeout,
        idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
        _permit: permit,
    })
}
