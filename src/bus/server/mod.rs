//! Accept loop (TCP, WebSocket, TLS listeners) and the per-connection I/O loop around [`Session`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ack::HeldAcks;
use super::auth::Verdict;
use super::burst::Burst;
use super::codec::reason::{connack, mqtt5};
use super::codec::{self, Packet, SubOptions};
use super::expiry::{DelayedWill, NEVER};
use super::listener::{self, Io, Listener, Listeners};
use super::router::{Attached, ConnectOutcome, Detach, Router, Stats};
use super::session::{Action, Session, SessionLimits, Undelivered};

mod accept;
pub(crate) use accept::start;

mod access;
mod close;
mod v5;
use v5::unsuback_codes;

/// A client must finish the TLS or WebSocket handshake within this long after the TCP connection
/// opens, and then send CONNECT within this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read per system call at most, and at least (see `Connection::read_hint`).
const READ_CHUNK: usize = 16 * 1024;
const MIN_READ: usize = 256;
/// Outgoing bytes gathered before a write; bounds memory per connection.
const WRITE_CHUNK: usize = 64 * 1024;
/// How long closing may write at most (the last packet, a TLS close_notify, a WebSocket close
/// frame): a client that does not read is not waited for.
const CLOSE_WAIT: Duration = Duration::from_millis(500);
/// How long a connection closed with a reason (DISCONNECT, refusing CONNACK) goes on reading and
/// dropping what the client still sends, so that the close does not reset the connection
/// before the client has read the reason.
const LINGER: Duration = Duration::from_secs(1);

static INVALID_PACKETS: Burst = Burst::new();

#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_packet_size: usize,
    pub max_connections: usize,
    pub session: SessionLimits,
}

/// Why the I/O loop ended.
enum End {
    /// The server is shutting down: close without publishing the will (MQTT 5: DISCONNECT
    /// 0x8B first).
    Shutdown,
    /// Anything else: the will (if still pending) is published.
    Closed(String),
    /// As `Closed`, after a DISCONNECT with this reason code and string to an MQTT 5 client.
    Told(u8, &'static str),
}

struct Connection {
    io: Io,
    peer: SocketAddr,
    router: Arc<Router>,
    max_packet_size: usize,
    shutdown: CancellationToken,
    session: Session,
    attached: Option<Attached>,
    /// The user name, once its password was verified: what ACL rules and `%u` go by.
    verified_user: Option<String>,
    /// `verified_user` is the TLS client certificate's name (`identity_as_username`).
    cert_identity: bool,
    rbuf: BytesMut,
    /// How much room to make in `rbuf` before a read.
    read_hint: usize,
    wbuf: BytesMut,
    /// PUBACKs in `wbuf`: they stop counting toward the MQTT 5 Receive Maximum once written.
    wbuf_pubacks: u16,
    /// A write was cut short: the stream may end mid-packet, so nothing more is written.
    torn: bool,
    /// A DISCONNECT or refusing CONNACK went into `wbuf`: the client is told why it is closed.
    said_why: bool,
    /// Wakes the I/O loop at `deadline()`; allocated only while there is one, so a connection
    /// with keepalive 0 carries no timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// When the client was last heard from; until CONNECT is accepted, when the socket opened.
    last_rx: Instant,
    /// Acknowledgements (and what followed them) waiting for the outbox to commit a forwarded
    /// QoS 1/2 publish.
    held: HeldAcks,
}

impl Connection {
    fn new(
        io: Io,
        peer: SocketAddr,
        router: Arc<Router>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Connection {
        Connection {
            io,
            peer,
            router,
            max_packet_size: limits.max_packet_size,
            shutdown,
            session: Session::with_limits(limits.session),
            attached: None,
            verified_user: None,
            cert_identity: false,
            // Allocated while there is something in them, so idle connections stay small.
            rbuf: BytesMut::new(),
            read_hint: MIN_READ,
            wbuf: BytesMut::new(),
            wbuf_pubacks: 0,
            torn: false,
            said_why: false,
            timer: None,
            last_rx: Instant::now(),
            held: HeldAcks::default(),
        }
    }

    async fn run(&mut self) {
        let end = self.serve().await;
        // Boxed, like input handling: the task itself stays small while the connection idles.
        Box::pin(self.finish(end)).await
    }

    async fn serve(&mut self) -> End {
        loop {
            let can_send = self.session.can_send();
            let queue = self.attached.as_ref().map(|a| &a.queue);
            if !self.wbuf.is_empty() || (can_send && queue.is_some_and(|o| !o.is_empty())) {
                // Boxed, like input handling: only a connection with something to send needs it.
                if let Err(end) = Box::pin(self.pump_queue()).await {
                    return end;
                }
            }
            let can_send = self.session.can_send();
            match self.deadline() {
                Some(at) => match &mut self.timer {
                    Some(t) if t.deadline() == at => {}
                    Some(t) => t.as_mut().reset(at),
                    None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
                },
                None => self.timer = None,
            }
            if self.shutdown.is_cancelled() {
                return End::Shutdown;
            }
            let timer = &mut self.timer;
            // One wait for both: the router cancels every takeover token on shutdown, and a
            // connection that attaches after that sees `shutdown` at the top of this loop.
            let attached = self.attached.as_ref();
            let shutdown = &self.shutdown;
            let stop = async move {
                match attached {
                    Some(a) => a.queue.kicked(a.conn_id).await,
                    None => shutdown.cancelled().await,
                }
            };
            let queue = self.attached.as_ref().map(|a| &a.queue);
            let held_empty = self.held.is_empty();
            let held_room = self.held.has_room();
            let held = &mut self.held;
            tokio::select! {
                _ = stop => return self.kicked(),
                _ = async { timer.as_mut()?.await; Some(()) }, if timer.is_some() => {
                    return self.timed_out();
                }
                _ = async { queue?.notified().await; Some(()) }, if queue.is_some() && can_send => {}
                // Boxed while something waits: an idle connection carries no commit wait.
                ready = async { Box::pin(held.next_ready()).await }, if !held_empty => match ready {
                    Ok(packets) => packets.iter().for_each(|p| self.send(p)),
                    Err(lost) => {
                        if let Some(pid) = lost.qos2_pid {
                            self.session.forget_incoming(pid);
                        }
                        // Unacknowledged, so that the client publishes it again.
                        return End::Closed(
                            "the outbox did not commit a forwarded message; closing unacknowledged".into(),
                        );
                    }
                },
                // On plain TCP a buffer is taken only once data is there (see `Io`).
                read = std::future::poll_fn(|cx| self.io.poll_read_into(cx, &mut self.rbuf, self.read_hint)), if held_room => {
                    match read {
                        Ok((0, _)) => return End::Closed("connection closed by peer".into()),
                        Ok((n, room)) => {
                            // Grow the read size while reads fill it, shrink when they don't: a
                            // busy publisher reads in big gulps, a quiet client in small ones.
                            self.read_hint = if n == room {
                                (self.read_hint * 2).min(READ_CHUNK)
                            } else if n < self.read_hint / 4 {
                                (self.read_hint / 2).max(MIN_READ)
                            } else {
                                self.read_hint
                            };
                            Stats::add(&self.router.stats.bytes_in, n as u64);
                            if self.session.is_connected() {
                                self.last_rx = Instant::now();
                            }
                            // Boxed: its future is large and only lives while input is handled,
                            // so an idle connection's task stays small.
                            if let Err(end) = Box::pin(self.process_input()).await {
                                return end;
                            }
                            if self.rbuf.is_empty() {
                                self.rbuf = BytesMut::new();
                            }
                        }
                        Err(e) => return End::Closed(format!("read error: {e}")),
                    }
                }
            }
        }
    }

    /// When the connection is closed for silence: 10 s without CONNECT, or 1.5x keepalive.
    fn deadline(&self) -> Option<Instant> {
        match (self.session.is_connected(), self.session.idle_timeout()) {
            (false, _) => Some(self.last_rx + CONNECT_TIMEOUT),
            (true, Some(idle)) => Some(self.last_rx + idle),
            (true, None) => None,
        }
    }

    fn timed_out(&self) -> End {
        if self.session.is_connected() {
            End::Told(mqtt5::KEEP_ALIVE_TIMEOUT, "keep alive timeout")
        } else {
            End::Closed("no CONNECT in time".into())
        }
    }

    /// Told to end: the broker shuts down (it kicks every connection), or a new connection
    /// took the client id over.
    fn kicked(&self) -> End {
        if self.shutdown.is_cancelled() {
            End::Shutdown
        } else {
            End::Told(mqtt5::SESSION_TAKEN_OVER, "session taken over")
        }
    }

    /// Decodes and handles every whole packet buffered so far.
    async fn process_input(&mut self) -> Result<(), End> {
        // Other clients' packets that reached the broker before this read may still be unread:
        // the I/O driver wakes connections in epoll's ready-list order, not arrival order. So
        // the first PUBLISH of a read is routed after one yield, in which the broker's thread
        // (see `accept::start`) reads every connection woken so far and polls the driver
        // again: a SUBSCRIBE that arrived before this PUBLISH is in effect when it is routed.
        // What comes before the PUBLISH in this read is handled at once.
        let mut yielded = false;
        loop {
            let protocol = self.session.protocol();
            let max = self.max_packet_size;
            let actions = match codec::check_as(&self.rbuf, max, protocol) {
                Ok(None) => return Ok(()),
                Ok(Some(len)) => {
                    let frame = self.rbuf.split_to(len).freeze();
                    // A broken MQTT 5 CONNECT is answered with a v5 CONNACK saying why.
                    let v5_connect =
                        !self.session.is_connected() && codec::connect_level(&frame) == Some(5);
                    let limit = v5_connect
                        .then(|| codec::connect_max_packet(&frame))
                        .flatten();
                    match codec::parse_as(frame, protocol) {
                        Ok(packet) => {
                            let persist = self.router.persist.as_ref().zip(self.attached.as_ref());
                            if let Some((p, a)) = persist {
                                p.received(&a.client_id, &a.queue, a.persistent, &packet);
                            }
                            self.session.handle(packet)
                        }
                        Err(e) => self.invalid(&e, v5_connect.then_some(limit)),
                    }
                }
                Err(e) => self.invalid(&e, None),
            };
            if !yielded && actions.iter().any(|a| matches!(a, Action::Route(_))) {
                yielded = true;
                tokio::task::yield_now().await;
            }
            self.execute(actions).await?;
        }
    }

    /// `v5_connect`: the frame was an MQTT 5 CONNECT, with the Maximum Packet Size it asked for
    /// if that could be read.
    fn invalid(
        &mut self,
        err: &codec::DecodeError,
        v5_connect: Option<Option<u32>>,
    ) -> Vec<Action> {
        match INVALID_PACKETS.check() {
            Some(more) => tracing::warn!(peer = %self.peer,
                "closing MQTT client after invalid packet: {err} ({more} more since the last warning)"),
            None => {
                tracing::debug!(peer = %self.peer, "closing MQTT client after invalid packet: {err}")
            }
        }
        if let Some(max_packet) = v5_connect {
            return self.session.invalid_connect_v5(err, max_packet);
        }
        self.session.invalid(err)
    }

    /// Carries out a session's actions in order.
    async fn execute(&mut self, actions: Vec<Action>) -> Result<(), End> {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(packet) => {
                    if let Some(now) = self.held.hold(packet) {
                        self.send(&now);
                    }
                }
                Action::Connect {
                    client_id,
                    clean_session,
                    username,
                    password,
                } => {
                    if let Some(code) = self.authenticate(username, password).await? {
                        for a in self.session.refused(code).into_iter().rev() {
                            queue.push_front(a);
                        }
                        continue;
                    }
                    let expiry = self.session.session_expiry().unwrap_or(if clean_session {
                        0
                    } else {
                        NEVER
                    });
                    let connect = self.router.connect(client_id, clean_session, expiry);
                    let outcome = tokio::select! {
                        o = connect => o,
                        _ = self.shutdown.cancelled() => return Err(End::Shutdown),
                    };
                    let next = match outcome {
                        ConnectOutcome::Accepted(mut attached) => {
                            tracing::debug!(peer = %self.peer, client_id = attached.client_id,
                                session_present = attached.session_present, "client connected");
                            let restored = attached.restored.take().map(|b| *b).unwrap_or_default();
                            let present = attached.session_present;
                            self.session.set_client_id(&attached.client_id);
                            self.attached = Some(attached);
                            // Keepalive counts from here.
                            self.last_rx = Instant::now();
                            self.session.accepted(present, restored)
                        }
                        ConnectOutcome::Refused(code) => self.session.refused(code),
                    };
                    for a in next.into_iter().rev() {
                        queue.push_front(a);
                    }
                }
                Action::Route(msg) => {
                    let reason = self.route(msg).await?;
                    if self.session.protocol().is_v5() && reason != 0 {
                        self.ack_reason(queue.front_mut(), reason);
                    }
                }
                Action::Subscribe {
                    pid,
                    sub_id,
                    filters,
                } => {
                    let codes = self.subscribe(filters, sub_id);
                    let codes = if self.session.protocol().is_v5() {
                        // MQTT 5 says "not authorized" where 3.1.1 has only "failure".
                        codes
                            .into_iter()
                            .map(|c| {
                                if c == mqtt5::UNSPECIFIED_ERROR {
                                    mqtt5::NOT_AUTHORIZED
                                } else {
                                    c
                                }
                            })
                            .collect()
                    } else {
                        codes
                    };
                    self.send(&Packet::Suback { pid, codes });
                }
                Action::Unsubscribe(filters) => {
                    if let Some(a) = &self.attached {
                        let existed = self.router.unsubscribe(&a.client_id, a.conn_id, &filters);
                        unsuback_codes(queue.front_mut(), &existed);
                    }
                }
                Action::Close(reason) => {
                    if !self.session.orderly() {
                        Stats::add(&self.router.stats.malformed, 1);
                    }
                    // What goes before the close (a refusal, a DISCONNECT) is written, without
                    // waiting long for a client that does not read.
                    if let Ok(Err(end)) = tokio::time::timeout(CLOSE_WAIT, self.flush()).await {
                        return Err(end);
                    }
                    return Err(End::Closed(reason));
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, packet: &Packet) {
        match packet {
            Packet::Publish(_) => Stats::add(&self.router.stats.messages_out, 1),
            // Every refusal (protocol level, client id, auth, limits) passes here.
            Packet::Connack { code, .. } if *code != 0 => {
                self.said_why = true;
                Stats::add(&self.router.stats.refused, 1)
            }
            Packet::Disconnect { .. } => self.said_why = true,
            Packet::Puback(_)
            | Packet::Ack {
                kind: codec::AckKind::Puback,
                ..
            } => self.wbuf_pubacks = self.wbuf_pubacks.saturating_add(1),
            Packet::Pubrec(pid) => self.pubrec_sent(*pid, 0),
            Packet::Ack {
                kind: codec::AckKind::Pubrec,
                pid,
                reason,
                ..
            } => self.pubrec_sent(*pid, *reason),
            _ => {}
        }
        let protocol = self.session.protocol();
        let start = self.wbuf.len();
        packet.encode_as(protocol, &mut self.wbuf);
        // MQTT 5: never more than the client's Maximum Packet Size. Publishes were checked by
        // the session; other packets lose their reason string and user properties (3.1.2.25).
        if self.wbuf.len() - start > self.session.client_max_packet() {
            self.wbuf.truncate(start);
            packet
                .without_diagnostics()
                .encode_as(protocol, &mut self.wbuf);
        }
    }

    /// Moves queued messages into PUBLISH packets while the in-flight window allows, and writes.
    async fn pump_queue(&mut self) -> Result<(), End> {
        loop {
            if let Some(queue) = self.attached.as_ref().map(|a| a.queue.clone()) {
                while self.wbuf.len() < WRITE_CHUNK && self.session.can_send() {
                    let Some((msg, key)) = queue.pop_keyed() else {
                        break;
                    };
                    // A stored message's record is rewritten with its packet id.
                    let stored = key.map(|k| (k, msg.clone()));
                    let persist = self.router.persist.as_ref().zip(self.attached.as_ref());
                    match self.session.deliver(msg) {
                        Ok(packet) => {
                            if let (Some((p, a)), Some((key, msg))) = (persist, stored) {
                                p.sent(&a.client_id, &queue, key, &msg, &packet);
                            }
                            self.send(&packet);
                        }
                        Err(undelivered) => {
                            if undelivered == Undelivered::TooLarge {
                                Stats::add(&self.router.stats.dropped, 1);
                            }
                            if let (Some((p, a)), Some((key, _))) = (persist, stored) {
                                p.unsent(&a.client_id, key);
                            }
                        }
                    }
                }
            }
            if self.wbuf.is_empty() {
                // Drained: an idle connection keeps no write buffer.
                self.wbuf = BytesMut::new();
                return Ok(());
            }
            self.flush().await?;
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        // A client that does not read blocks this write; it still ends on shutdown, takeover
        // and keepalive, and meanwhile its queue drops instead of growing.
        let kicked = self.attached.as_ref().map(|a| (a.queue.clone(), a.conn_id));
        let deadline = self.deadline();
        // Until the write completes: every early return below leaves it cut short.
        self.torn = true;
        let written = tokio::select! {
            // TLS and WebSocket buffer what is written: flush pushes it to the socket.
            w = async { self.io.write_all(&self.wbuf).await?; self.io.flush().await } => w,
            _ = self.shutdown.cancelled() => return Err(End::Shutdown),
            _ = async { let (o, id) = kicked.as_ref()?; o.kicked(*id).await; Some(()) }, if kicked.is_some() => {
                return Err(self.kicked());
            }
            _ = async { tokio::time::sleep_until(deadline?).await; Some(()) }, if deadline.is_some() => {
                return Err(self.timed_out());
            }
        };
        match written {
            Ok(()) => {
                self.torn = false;
                Stats::add(&self.router.stats.bytes_out, self.wbuf.len() as u64);
                self.session
                    .pubacks_written(usize::from(std::mem::take(&mut self.wbuf_pubacks)));
                self.wbuf.clear();
                // Keep a buffer that fits the usual burst; give back one a big burst grew.
                if self.wbuf.capacity() > 2 * WRITE_CHUNK {
                    self.wbuf = BytesMut::new();
                }
                Ok(())
            }
            Err(e) => Err(End::Closed(format!("write error: {e}"))),
        }
    }
}
