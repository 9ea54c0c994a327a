//! A scripted upstream broker (raw TCP, bytes by hand) and a loopback proxy that cuts links.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One MQTT packet as read off the wire: first byte and body.
pub struct Raw {
    pub kind: u8,
    pub flags: u8,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn pkid_at(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.body[at], self.body[at + 1]])
    }
}

pub async fn read_packet(s: &mut TcpStream) -> Option<Raw> {
    let first = s.read_u8().await.ok()?;
    let (mut len, mut mult) = (0usize, 1usize);
    loop {
        let b = s.read_u8().await.ok()?;
        len += (b & 0x7f) as usize * mult;
        mult *= 128;
        if b & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await.ok()?;
    Some(Raw {
        kind: first >> 4,
        flags: first & 0x0f,
        body,
    })
}

/// A publish as the broker saw it.
pub struct Publish {
    pub pkid: u16,
    pub qos: u8,
    pub payload: Vec<u8>,
}

pub fn parse_publish(p: &Raw) -> Publish {
    let tlen = u16::from_be_bytes([p.body[0], p.body[1]]) as usize;
    let qos = (p.flags >> 1) & 3;
    let (pkid, start) = if qos > 0 {
        (p.pkid_at(2 + tlen), 4 + tlen)
    } else {
        (0, 2 + tlen)
    };
    Publish {
        pkid,
        qos,
        payload: p.body[start..].to_vec(),
    }
}

pub fn seq_of(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(payload).ok()?["seq"].as_u64()
}

/// What a broker that delivers QoS 2 at PUBLISH and keeps the packet id until PUBREL (MQTT's
/// "method B") has seen, over all connections of one persistent session.
#[derive(Default)]
pub struct MethodB {
    /// Ids held: PUBREC sent, PUBREL not yet received.
    pub held: HashSet<u16>,
    /// Readings delivered to subscribers, by seq: how many times.
    pub delivered: BTreeMap<u64, u32>,
    /// Per connection (1-based), the packets the gateway sent, as (kind, pkid).
    pub log: Vec<Vec<(&'static str, u16)>>,
    /// Ids held at the moment connection 1 was cut.
    pub held_at_cut: HashSet<u16>,
}

/// Connection 1 delivers and answers PUBREC to every QoS 2 PUBLISH, completes the first
/// `complete_first` exchanges, then loses every PUBREL (as a link that drops them would) and is
/// cut after `cut_after` PUBLISHes. Later connections are well-behaved method B with the session
/// present.
pub async fn method_b_broker(
    complete_first: usize,
    cut_after: usize,
) -> (u16, Arc<Mutex<MethodB>>) {
    scripted_broker(complete_first, cut_after, Script::default()).await
}

/// Variations of the scripted broker.
#[derive(Default, Clone, Copy)]
pub struct Script {
    /// Says session present on the first connection too (a broker of a failover list that kept
    /// an old session of ours).
    pub session_on_first: bool,
    /// Closes every connection after the first at once, before CONNACK.
    pub refuse_after_first: bool,
    /// Closes every connection at once, uncounted, until this long after the broker started.
    pub accept_after: Duration,
    /// Connection 1 answers no QoS 2 PUBLISH (they are delivered, and the ids held), and
    /// `cut_after` counts only those.
    pub silent_qos2_first: bool,
}

pub async fn scripted_broker(
    complete_first: usize,
    cut_after: usize,
    script: Script,
) -> (u16, Arc<Mutex<MethodB>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(MethodB::default()));
    let st = state.clone();
    let started = tokio::time::Instant::now();
    tokio::spawn(async move {
        let mut conn = 0usize;
        while let Ok((mut s, _)) = listener.accept().await {
            if started.elapsed() < script.accept_after {
                continue;
            }
            conn += 1;
            let Some(connect) = read_packet(&mut s).await else {
                continue;
            };
            assert_eq!(connect.kind, 1, "CONNECT first");
            if script.refuse_after_first && conn > 1 {
                continue;
            }
            let present = u8::from(conn > 1 || script.session_on_first);
            if s.write_all(&[0x20, 2, present, 0]).await.is_err() {
                continue;
            }
            st.lock().unwrap().log.push(Vec::new());
            let silent = conn == 1 && script.silent_qos2_first;
            serve(&mut s, conn, &st, (complete_first, cut_after), silent).await;
        }
    });
    (port, state)
}

/// `silent`: QoS 2 PUBLISHes are not answered, and only they count toward `cut_after`.
async fn serve(
    s: &mut TcpStream,
    conn: usize,
    st: &Mutex<MethodB>,
    (complete_first, cut_after): (usize, usize),
    silent: bool,
) {
    let (mut publishes, mut completed) = (0usize, 0usize);
    while let Some(p) = read_packet(s).await {
        let mut out = Vec::new();
        {
            let mut b = st.lock().unwrap();
            match p.kind {
                3 => {
                    let publish = parse_publish(&p);
                    let kind = if p.flags & 0x08 != 0 {
                        "PUBLISH-DUP"
                    } else {
                        "PUBLISH"
                    };
                    b.log[conn - 1].push((kind, publish.pkid));
                    if !silent || publish.qos == 2 {
                        publishes += 1;
                    }
                    if publish.qos == 2 {
                        if b.held.insert(publish.pkid) {
                            if let Some(seq) = seq_of(&publish.payload) {
                                *b.delivered.entry(seq).or_default() += 1;
                            }
                        }
                        if !silent {
                            out.extend([0x50, 2]);
                            out.extend(publish.pkid.to_be_bytes());
                        }
                    } else if publish.qos == 1 {
                        out.extend([0x40, 2]);
                        out.extend(publish.pkid.to_be_bytes());
                    }
                }
                6 => {
                    let pkid = p.pkid_at(0);
                    b.log[conn - 1].push(("PUBREL", pkid));
                    if conn > 1 || completed < complete_first {
                        completed += 1;
                        b.held.remove(&pkid);
                        out.extend([0x70, 2]);
                        out.extend(pkid.to_be_bytes());
                    }
                }
                12 => out.extend([0xd0, 0]),
                14 => return,
                _ => {}
            }
            if conn == 1 && publishes >= cut_after {
                b.held_at_cut = b.held.clone();
            }
        }
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            return;
        }
        if conn == 1 && publishes >= cut_after {
            return;
        }
    }
}

/// A loopback proxy to `target` that can be taken down (new connections are closed at once)
/// and can cut every open connection.
pub struct CutProxy {
    pub port: u16,
    up: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    pub async fn start(target: u16, up: bool) -> CutProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let flag = Arc::new(AtomicBool::new(up));
        let (cut, cuts) = tokio::sync::watch::channel(0u64);
        let f = flag.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !f.load(Ordering::Relaxed) {
                    continue;
                }
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        CutProxy {
            port,
            up: flag,
            cut,
            task,
        }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::Relaxed);
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub const SHORT: Duration = Duration::from_millis(250);
