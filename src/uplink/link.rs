//! One connection to the upstream broker: TCP (or TLS), CONNECT/CONNACK, and MQTT 3.1.1 packets
//! read and written with rumqttc's codec. Every await on an open connection is cancel-safe (the
//! read and write buffers live here, not in a future), so the uplink's loop can wait on the
//! socket, the outbox and its timers at once and decide everything itself.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::{ConnAck, Connect, ConnectReturnCode, Packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type Stream = Box<dyn Io>;

/// Where one broker of the list is, and how to reach it.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Opens the connection and waits for a successful CONNACK, all within `timeout`.
pub async fn open(
    target: &Target,
    connect: &Connect,
    max_packet: usize,
    timeout: Duration,
) -> Result<(Reader, Writer, ConnAck), String> {
    let attempt = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("I/O: {e}"))?;
        // Readings are small and pipelined: without NODELAY, Nagle and delayed ACKs stall the
        // link at a few thousand messages per second.
        tcp.set_nodelay(true).map_err(|e| format!("I/O: {e}"))?;
        let stream: Stream = match &target.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name =
                    rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
                        format!("`{}` is not a valid TLS server name: {e}", target.host)
                    })?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                Box::new(tls)
            }
        };
        let (read, write) = tokio::io::split(stream);
        let mut reader = Reader::new(read, max_packet);
        let mut writer = Writer::new(write, max_packet);
        writer
            .queue(&Packet::Connect(connect.clone()))
            .map_err(|e| format!("CONNECT: {e}"))?;
        while writer.busy() {
            writer.drive().await.map_err(|e| format!("I/O: {e}"))?;
        }
        match reader.next().await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {
                Ok((reader, writer, ack))
            }
            Packet::ConnAck(ack) => {
                Err(format!("Connection refused, return code: `{:?}`", ack.code))
            }
            other => Err(format!("Expected ConnAck packet, received: {other:?}")),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| "Network timeout".to_string())?
}

pub struct Reader {
    io: ReadHalf<Stream>,
    buf: BytesMut,
    max: usize,
}

impl Reader {
    fn new(io: ReadHalf<Stream>, max: usize) -> Reader {
        Reader {
            io,
            buf: BytesMut::with_capacity(4096),
            max,
        }
    }

    /// A whole packet already buffered, if there is one.
    pub fn try_next(&mut self) -> Result<Option<Packet>, String> {
        match Packet::read(&mut self.buf, self.max) {
            Ok(p) => Ok(Some(p)),
            Err(CodecError::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(format!("broker sent a malformed packet: {e}")),
        }
    }

    /// The next packet. Cancel-safe: bytes read stay in the buffer.
    pub async fn next(&mut self) -> Result<Packet, String> {
        loop {
            if let Some(p) = self.try_next()? {
                return Ok(p);
            }
            self.buf.reserve(4096);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return Err("Connection closed by peer abruptly".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("I/O: {e}")),
            }
        }
    }
}

pub struct Writer {
    io: WriteHalf<Stream>,
    buf: BytesMut,
    max: usize,
    queued: u64,
    written: u64,
    unflushed: bool,
}

impl Writer {
    fn new(io: WriteHalf<Stream>, max: usize) -> Writer {
        Writer {
            io,
            buf: BytesMut::with_capacity(16 * 1024),
            max,
            queued: 0,
            written: 0,
            unflushed: false,
        }
    }

    pub fn queue(&mut self, packet: &Packet) -> Result<(), CodecError> {
        let before = self.buf.len();
        if let Err(e) = packet.write(&mut self.buf, self.max) {
            self.buf.truncate(before);
            return Err(e);
        }
        self.queued += (self.buf.len() - before) as u64;
        Ok(())
    }

    /// Bytes queued and not yet handed to the socket.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    pub fn busy(&self) -> bool {
        !self.buf.is_empty() || self.unflushed
    }

    pub fn totals(&self) -> (u64, u64) {
        (self.queued, self.written)
    }

    /// Writes what the socket takes now, or flushes once everything is written. Cancel-safe:
    /// what was not written stays queued.
    pub async fn drive(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            self.io.flush().await?;
            self.unflushed = false;
            return Ok(());
        }
        let n = self.io.write_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.written += n as u64;
        self.unflushed = true;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ping {
    Idle,
    /// Queued behind `upto` bytes: the wait for its answer starts once they are written.
    Queued {
        upto: u64,
    },
    Written {
        at: Instant,
    },
}

/// Whether the link is alive, without I/O: a ping every `every`, answered within `every` of
/// being written, and writes that make progress. A large message on a slow link is fine as long
/// as its bytes keep moving; a peer that has stopped reading is found by the stall, a silent
/// (half-open) link by the ping.
#[derive(Debug)]
pub struct Liveness {
    every: Duration,
    stall: Duration,
    next_ping: Instant,
    ping: Ping,
    last_written: u64,
    progress_at: Instant,
}

impl Liveness {
    pub fn new(every: Duration, stall: Duration, now: Instant) -> Liveness {
        Liveness {
            every,
            stall,
            next_ping: now + every,
            ping: Ping::Idle,
            last_written: 0,
            progress_at: now,
        }
    }

    /// Called on every turn of the loop with the writer's totals (queued, written) and what is
    /// waiting. `Ok(true)`: queue a PINGREQ now and report it with `ping_queued`.
    pub fn check(
        &mut self,
        now: Instant,
        totals: (u64, u64),
        pending: usize,
    ) -> Result<bool, String> {
        let (_, written) = totals;
        if pending == 0 || written != self.last_written {
            self.last_written = written;
            self.progress_at = now;
        } else if now.saturating_duration_since(self.progress_at) >= self.stall {
            return Err(format!(
                "the broker has taken no data for {:.1}s",
                self.stall.as_secs_f64()
            ));
        }
        if let Ping::Queued { upto } = self.ping {
            if written >= upto {
                self.ping = Ping::Written { at: now };
            }
        }
        if let Ping::Written { at } = self.ping {
            if now.saturating_duration_since(at) >= self.every {
                return Err(format!(
                    "no answer to a ping within {:.1}s",
                    self.every.as_secs_f64()
                ));
            }
        }
        if now >= self.next_ping {
            self.next_ping = now + self.every;
            return Ok(self.ping == Ping::Idle);
        }
        Ok(false)
    }

    pub fn ping_queued(&mut self, queued_total: u64) {
        self.ping = Ping::Queued { upto: queued_total };
    }

    pub fn pong(&mut self) {
        self.ping = Ping::Idle;
    }

    /// When `check` must run again even if nothing else happens.
    pub fn deadline(&self, pending: usize) -> Instant {
        let mut at = self.next_ping;
        if let Ping::Written { at: sent } = self.ping {
            at = at.min(sent + self.every);
        }
        if pending > 0 {
            at = at.min(self.progress_at + self.stall);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pings_on_time_and_a_ping_unanswered_after_written_is_a_dead_link() {
        let t0 = Instant::now();
        let mut l = Liveness::new(S, 3 * S, t0);
        assert_eq!(l.check(t0, (0, 0), 0), Ok(false));
        assert_eq!(l.deadline(0), t0 + S);
        assert_eq!(l.check(t0 + S, (0, 0), 0), Ok(true));
        l.ping_queued(2);
        // Written a moment later; the answer is due within `every` of that.
        assert_eq!(l.check(t0 + S, (2, 2), 0), Ok(false));
        assert!(l
            .check(t0 + 2 * S - Duration::from_millis(1), (2, 2), 0)
            .is_ok());
        let dead = l.check(t0 + 2 * S, (2, 2), 0).unwrap_err();
        assert!(dead.contains("ping"), "{dead}");
    }

    #[test]
    fn a_pong_clears_the_ping() {
        let t0 = Instant::now();
        let mut l = Liveness::new(S, 3 * S, t0);
        assert_eq!(l.check(t0 + S, (0, 0), 0), Ok(true));
        l.ping_queued(2);
        l.check(t0 + S, (2, 2), 0).unwrap();
        l.pong();
        assert_eq!(l.check(t0 + 2 * S, (2, 2), 0), Ok(true));
    }

    #[test]
    fn a_ping_behind_a_large_slow_write_waits_and_progress_is_not_a_stall() {
        let t0 = Instant::now();
        let mut l = Liveness::new(S, 3 * S, t0);
        // A 1 MB publish queued, then the ping behind it; the link moves 10 kB a second.
        assert_eq!(l.check(t0 + S, (1_000_000, 0), 1_000_000), Ok(true));
        l.ping_queued(1_000_002);
        for s in 2..100u64 {
            let written = s * 10_000;
            let now = t0 + S * s as u32;
            let r = l.check(now, (1_000_002, written), (1_000_002 - written) as usize);
            assert_eq!(r, Ok(false), "at {s}s");
        }
    }

    #[test]
    fn bytes_that_do_not_move_for_the_stall_time_are_a_dead_link() {
        let t0 = Instant::now();
        let mut l = Liveness::new(10 * S, 3 * S, t0);
        l.check(t0, (500, 100), 400).unwrap();
        assert_eq!(l.deadline(400), t0 + 3 * S);
        assert!(l.check(t0 + 2 * S, (500, 100), 400).is_ok());
        let dead = l.check(t0 + 3 * S, (500, 100), 400).unwrap_err();
        assert!(dead.contains("no data"), "{dead}");
        // Nothing waiting is never a stall.
        let mut idle = Liveness::new(10 * S, 3 * S, t0);
        assert!(idle.check(t0 + 9 * S, (500, 500), 0).is_ok());
    }
}
