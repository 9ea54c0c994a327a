//! The broker's listeners: plain TCP, WebSocket and TLS all accept TCP connections; each turns
//! one into the byte stream the MQTT I/O loop in `server` reads and writes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A connection's byte stream. Plain TCP is kept whole (no split, no boxes: nothing on the heap
/// beyond the socket's registration) and waits for readiness before it takes a read buffer, so
/// idle connections hold none; TLS and WebSocket streams are split and buffer inside anyway.
/// Reads and writes never overlap: the I/O loop writes only between its waits for input.
pub(crate) enum Io {
    Tcp(TcpStream),
    Stream {
        r: Box<dyn AsyncRead + Unpin + Send>,
        w: Box<dyn AsyncWrite + Unpin + Send>,
    },
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Stream { w, .. } => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Stream { w, .. } => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Stream { w, .. } => Pin::new(w).poll_shutdown(cx),
        }
    }
}

impl Io {
    /// Reads what is there into `buf`, first making room for `hint` bytes when less than half of
    /// that is free. Ready with the bytes read (0: closed) and the room there was.
    /// A poll function rather than an `async fn`: every idle connection's task holds the wait for
    /// input, and a hand-written poll keeps that to a few pointers.
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        hint: usize,
    ) -> Poll<io::Result<(usize, usize)>> {
        let reserve = |buf: &mut BytesMut| {
            if buf.capacity() - buf.len() < hint / 2 {
                buf.reserve(hint);
            }
            buf.capacity() - buf.len()
        };
        match self {
            Io::Tcp(r) => loop {
                std::task::ready!(r.poll_read_ready(cx))?;
                let room = reserve(buf);
                match r.try_read_buf(buf) {
                    Ok(n) => return Poll::Ready(Ok((n, room))),
                    // Readiness was stale; `try_read_buf` cleared it, so the next poll registers.
                    // An idle connection gives back the buffer it made room in.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if buf.is_empty() {
                            *buf = BytesMut::new();
                        }
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            },
            Io::Stream { r, .. } => {
                let room = reserve(buf);
                tokio_util::io::poll_read_buf(Pin::new(r), cx, buf).map_ok(|n| (n, room))
            }
        }
    }
}

#[derive(Clone)]
pub(crate) enum Transport {
    Tcp,
    WebSocket,
    Tls(super::tls::Acceptor),
}

pub(crate) struct Listener {
    pub tcp: TcpListener,
    pub transport: Transport,
}

impl Transport {
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::WebSocket => "WebSocket",
            Transport::Tls(_) => "TLS",
        }
    }

    /// The TLS or WebSocket handshake, if any; the caller bounds it in time. Also returns the
    /// user name a client certificate stands for (`broker.tls.identity_as_username`).
    pub async fn open(
        &self,
        stream: TcpStream,
        max_packet_size: usize,
    ) -> io::Result<(Io, Option<String>)> {
        let _ = stream.set_nodelay(true);
        Ok(match self {
            Transport::Tcp => (Io::Tcp(stream), None),
            Transport::WebSocket => {
                let (r, w) = tokio::io::split(super::ws::accept(stream, max_packet_size).await?);
                (split(r, w), None)
            }
            Transport::Tls(acceptor) => {
                let tls =
                    acceptor.tls.accept(stream).await.map_err(|e| {
                        io::Error::new(e.kind(), format!("TLS handshake failed: {e}"))
                    })?;
                let identity = match tls.get_ref().1.peer_certificates() {
                    Some([cert, ..]) if acceptor.identity_as_username => {
                        let cn = super::cert_name::subject_cn(cert).filter(|cn| !cn.is_empty());
                        Some(cn.ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                "client certificate has no subject CN to use as the user name",
                            )
                        })?)
                    }
                    _ => None,
                };
                let (r, w) = tokio::io::split(tls);
                (split(r, w), identity)
            }
        })
    }
}

fn split(
    r: impl AsyncRead + Unpin + Send + 'static,
    w: impl AsyncWrite + Unpin + Send + 'static,
) -> Io {
    Io::Stream {
        r: Box::new(r),
        w: Box::new(w),
    }
}

/// All the broker's listeners, accepted from in turn.
pub(crate) struct Listeners {
    list: Vec<Listener>,
    /// Where the next poll starts, so a flood on one listener cannot starve the others.
    next: usize,
}

impl Listeners {
    pub fn new(list: Vec<Listener>) -> Listeners {
        Listeners { list, next: 0 }
    }

    /// The next connection on any listener, with the transport it came in on.
    pub fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(TcpStream, std::net::SocketAddr, Transport)>> {
        let n = self.list.len();
        for i in 0..n {
            let l = &self.list[(self.next + i) % n];
            if let Poll::Ready(accepted) = l.tcp.poll_accept(cx) {
                self.next = (self.next + i + 1) % n;
                return Poll::Ready(accepted.map(|(s, peer)| (s, peer, l.transport.clone())));
            }
        }
        Poll::Pending
    }
}
