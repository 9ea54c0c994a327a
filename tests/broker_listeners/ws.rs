//! MQTT over WebSocket: frames and packets independent, the `mqtt` subprotocol required.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::*;

async fn ws_handshake(
    addr: SocketAddr,
    protocol: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let tcp = small_window_connect(addr)
        .await
        .expect("TCP connect failed");
    let mut req = format!("ws://{addr}/mqtt").into_client_request().unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, p.parse().unwrap());
    }
    let (ws, resp) = timeout(wait(), tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("WebSocket handshake timed out")?;
    assert_eq!(
        resp.headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok()),
        Some("mqtt"),
        "the broker must answer with the subprotocol it speaks"
    );
    Ok(ws)
}

/// An MQTT client over WebSocket that sees the broker's output as one byte stream.
struct WsClient {
    ws: WebSocketStream<TcpStream>,
    buf: Vec<u8>,
}

impl WsClient {
    async fn open(addr: SocketAddr) -> WsClient {
        let ws = ws_handshake(addr, Some("mqtt")).await.unwrap();
        WsClient {
            ws,
            buf: Vec::new(),
        }
    }

    /// Sends each slice as one binary message.
    async fn send_frames(&mut self, frames: &[&[u8]]) {
        for f in frames {
            self.ws
                .send(Message::binary(f.to_vec()))
                .await
                .expect("send");
        }
    }

    /// Reads messages until `n` bytes are buffered; returns them.
    async fn read(&mut self, n: usize) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + wait();
        while self.buf.len() < n {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("timed out with {:02x?}", self.buf))
                .expect("WebSocket closed")
                .expect("WebSocket error");
            match msg {
                Message::Binary(b) => self.buf.extend_from_slice(&b),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected WebSocket message {other:?}"),
            }
        }
        self.buf.drain(..n).collect()
    }

    async fn expect(&mut self, want: &[u8]) {
        let got = self.read(want.len()).await;
        assert_eq!(got, want, "got {got:02x?}, want {want:02x?}");
    }

    /// The next whole packet: (first byte, body after the remaining length).
    async fn packet(&mut self) -> (u8, Vec<u8>) {
        let head = self.read(1).await[0];
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = self.read(1).await[0];
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        (head, self.read(len).await)
    }
}

async fn ws_bus() -> (Bus, CancellationToken) {
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        websocket: Some("127.0.0.1:0".parse().unwrap()),
        sys_interval: Duration::ZERO,
        ..BrokerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let bus = Bus::start(&cfg, shutdown.clone()).await.unwrap();
    (bus, shutdown)
}

#[tokio::test]
async fn websocket_packets_span_frames_and_share_frames() {
    let (bus, shutdown) = ws_bus().await;
    let addr = bus.websocket_addr().expect("WebSocket listener");
    let mut inproc = bus.subscribe(&["a/#".to_string()], 8, false).unwrap();
    let mut c = WsClient::open(addr).await;

    // CONNECT split across two frames.
    let conn = connect("ws1");
    c.send_frames(&[&conn[..5], &conn[5..]]).await;
    c.expect(&[0x20, 2, 0, 0]).await;

    // SUBSCRIBE and the start of a PUBLISH in one frame, the rest of the PUBLISH in the next.
    let sub = subscribe(1, "a/#", 1);
    let publ = publish0("a/b", b"hi");
    let first: Vec<u8> = sub.iter().chain(&publ[..4]).copied().collect();
    c.send_frames(&[&first, &publ[4..]]).await;
    c.expect(&[0x90, 3, 0, 1, 1]).await;
    c.expect(&publ).await;
    let got = timeout(wait(), inproc.recv()).await.unwrap().unwrap();
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("a/b", &b"hi"[..]));

    // Two whole packets in one frame: PINGREQ, then a PUBLISH.
    let publ2 = publish0("a/c", b"2");
    let both: Vec<u8> = [0xc0, 0].iter().chain(&publ2).copied().collect();
    c.send_frames(&[&both]).await;
    c.expect(&[0xd0, 0]).await;
    c.expect(&publ2).await;

    // From inside the gateway, QoS 1, acknowledged over the WebSocket.
    bus.publish(BusMessage {
        topic: "a/d".into(),
        payload: bytes::Bytes::from_static(b"in"),
        qos: 1,
        retain: false,
        props: None,
        origin: None,
    })
    .await;
    let (head, body) = c.packet().await;
    assert_eq!(head, 0x32, "QoS 1 PUBLISH, got {body:02x?}");
    assert_eq!(&body[..5], b"\x00\x03a/d");
    assert_eq!(&body[7..], b"in");
    c.send_frames(&[&[0x40, 2, body[5], body[6]]]).await;

    // DISCONNECT: the broker closes the WebSocket.
    c.send_frames(&[&[0xe0, 0]]).await;
    let end = timeout(wait(), async {
        loop {
            match c.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(m)) => assert!(!m.is_binary(), "data after DISCONNECT: {m:?}"),
            }
        }
    })
    .await;
    assert!(end.is_ok(), "connection still open after DISCONNECT");
    shutdown.cancel();
    timeout(wait(), bus.closed()).await.unwrap();
}

#[tokio::test]
async fn websocket_without_mqtt_subprotocol_is_refused() {
    let (bus, shutdown) = ws_bus().await;
    let addr = bus.websocket_addr().unwrap();
    for offered in [None, Some("chat"), Some("mqttv3.1x, chat")] {
        match ws_handshake(addr, offered).await {
            Err(WsError::Http(resp)) => {
                assert_eq!(resp.status(), 400, "{offered:?}");
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
                assert!(body.contains("subprotocol `mqtt`"), "{offered:?}: {body}");
            }
            Err(e) => panic!("{offered:?}: expected an HTTP refusal, got {e}"),
            Ok(_) => panic!("{offered:?}: upgrade accepted without `mqtt`"),
        }
    }
    // Among others, `mqtt` is chosen; the listener still serves after the refusals.
    let ws = ws_handshake(addr, Some("chat, mqtt")).await.unwrap();
    let mut c = WsClient {
        ws,
        buf: Vec::new(),
    };
    c.send_frames(&[&connect("ws2")]).await;
    c.expect(&[0x20, 2, 0, 0]).await;
    assert_eq!(bus.stats().refused, 3);
    shutdown.cancel();
}

#[tokio::test]
async fn websocket_answers_pings_and_closes_on_text() {
    let (bus, shutdown) = ws_bus().await;
    let mut c = WsClient::open(bus.websocket_addr().unwrap()).await;
    c.send_frames(&[&connect("ws3")]).await;
    c.expect(&[0x20, 2, 0, 0]).await;
    // Pings are answered (proxies and browsers use them to keep the connection alive).
    c.ws.send(Message::Ping(bytes::Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let pong = timeout(wait(), c.ws.next())
        .await
        .expect("no pong")
        .unwrap();
    assert_eq!(
        pong.unwrap(),
        Message::Pong(bytes::Bytes::from_static(b"are you there"))
    );
    c.ws.send(Message::text("hello")).await.unwrap();
    let closed = timeout(wait(), async {
        loop {
            match c.ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a text message must close the connection");
    // Another client is unaffected.
    let mut other = WsClient::open(bus.websocket_addr().unwrap()).await;
    other.send_frames(&[&connect("ws4")]).await;
    other.expect(&[0x20, 2, 0, 0]).await;
    shutdown.cancel();
}

#[tokio::test]
async fn websocket_slow_reader_gets_the_whole_burst() {
    let cfg = BrokerConfig {
        websocket: Some("127.0.0.1:0".parse().unwrap()),
        ..burst_config()
    };
    let shutdown = CancellationToken::new();
    let bus = Bus::start(&cfg, shutdown.clone()).await.unwrap();
    let mut c = WsClient::open(bus.websocket_addr().unwrap()).await;
    c.send_frames(&[&connect("slow-ws"), &subscribe(1, "big/#", 0)])
        .await;
    c.expect(&[0x20, 2, 0, 0, 0x90, 3, 0, 1, 0]).await;
    let want = publish_burst(&bus).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut got = c.read(want.len() - PAUSE_BEFORE_END).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    got.extend(c.read(PAUSE_BEFORE_END).await);
    assert!(got == want, "the burst arrived altered");
    shutdown.cancel();
}

/// A test site with the given lines added under `broker:`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_readings_reach_a_websocket_client() {
    let ws_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::new(
        dir.path(),
        &site_with_broker(&format!("  websocket: 127.0.0.1:{ws_port}\n")),
    );
    gw.start();
    port_open(ws_port).await;
    let mut c = WsClient::open(([127, 0, 0, 1], ws_port).into()).await;
    c.send_frames(&[
        &connect("dashboard"),
        &subscribe(7, "farm/gw1/+/temperature", 0),
    ])
    .await;
    c.expect(&[0x20, 2, 0, 0]).await;
    c.expect(&[0x90, 3, 0, 7, 0]).await;
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let (head, body) = c.packet().await;
        assert_eq!(
            head & 0xf0,
            0x30,
            "expected PUBLISH, got {head:02x} {body:02x?}"
        );
        let len = usize::from(body[0]) << 8 | usize::from(body[1]);
        let topic = std::str::from_utf8(&body[2..2 + len]).unwrap();
        assert_eq!(topic, "farm/gw1/temp-1/temperature");
        let reading: serde_json::Value = serde_json::from_slice(&body[2 + len..]).unwrap();
        assert_eq!(reading["unit"], "degC", "{reading}");
        seqs.push(reading["seq"].as_u64().expect("seq"));
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
}

#[tokio::test]
async fn websocket_speaks_mqtt5_too() {
    let (bus, shutdown) = ws_bus().await;
    let addr = bus.websocket_addr().expect("WebSocket listener");
    let mut c = WsClient::open(addr).await;
    // MQTT 5 CONNECT (no properties, client id "ws5"), split across two frames.
    let conn = [
        0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 0, 0, 3, b'w', b's', b'5',
    ];
    c.send_frames(&[&conn[..7], &conn[7..]]).await;
    // Receive Maximum 64, Topic Alias Maximum 16, Maximum Packet Size 256 KiB.
    c.expect(&[
        0x20, 14, 0, 0, 11, 0x21, 0, 64, 0x22, 0, 16, 0x27, 0, 4, 0, 0,
    ])
    .await;
    // SUBSCRIBE (no properties) to w/#, then a PUBLISH with a user property to itself.
    c.send_frames(&[&[0x82, 9, 0, 1, 0, 0, 3, b'w', b'/', b'#', 0]])
        .await;
    c.expect(&[0x90, 4, 0, 1, 0, 0]).await;
    let publ = [
        0x30, 14, 0, 3, b'w', b'/', b'1', 7, 0x26, 0, 1, b'k', 0, 1, b'v', b'x',
    ];
    c.send_frames(&[&publ]).await;
    c.expect(&publ).await;
    shutdown.cancel();
    // The server says it is going away before it closes.
    c.expect(&[0xe0, 25, 0x8b, 23, 0x1f, 0, 20]).await;
    c.expect(b"server shutting down").await;
}

/// A WebSocket client that connected, subscribed to `stuck/#` at QoS 1 and then stopped
/// reading; its socket's small receive buffer fills at once.
async fn stuck_ws_client(addr: SocketAddr, id: &str) -> WsClient {
    let mut c = WsClient::open(addr).await;
    c.send_frames(&[&connect_keep(id), &subscribe(1, "stuck/#", 1)])
        .await;
    c.expect(&[0x20, 2, 0, 0, 0x90, 3, 0, 1, 1]).await;
    c
}

#[tokio::test]
async fn websocket_client_that_stops_reading_does_not_hold_up_takeover_or_shutdown() {
    let cfg = BrokerConfig {
        websocket: Some("127.0.0.1:0".parse().unwrap()),
        ..stuck_config()
    };
    let shutdown = CancellationToken::new();
    let bus = Bus::start(&cfg, shutdown.clone()).await.unwrap();
    let addr = bus.websocket_addr().unwrap();
    let _stuck = stuck_ws_client(addr, "stuck").await;
    let _other = stuck_ws_client(addr, "other").await;
    publish_to_stuck(&bus).await;
    take_over_stuck(&bus).await;
    shut_down_past_stuck(&bus, &shutdown).await;
}

/// SIGTERM with a WebSocket client that does not read (and an uplink configured): the gateway
/// exits promptly and on its own, and the client's session comes back with all its messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_that_stops_reading_keeps_its_messages_over_sigterm() {
    let ws_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let broker = format!(
        "  websocket: 127.0.0.1:{ws_port}\n  max_packet_size: 2MiB\n  max_queued_bytes: 64MiB\n"
    );
    let mut gw = Gateway::new(dir.path(), &site_with_broker(&broker));
    gw.start();
    port_open(ws_port).await;
    let addr: SocketAddr = ([127, 0, 0, 1], ws_port).into();
    let _stuck = stuck_ws_client(addr, "stuck").await;
    let mut p = WsClient::open(addr).await;
    p.send_frames(&[&connect("pub")]).await;
    p.expect(&[0x20, 2, 0, 0]).await;
    const N: u8 = 10;
    for i in 0..N {
        let mut body = vec![0, 7];
        body.extend(b"stuck/x");
        body.extend([0, i + 1]);
        body.extend(vec![i; STUCK_PAYLOAD]);
        let mut publ = vec![0x32];
        let mut len = body.len();
        while len >= 128 {
            publ.push((len % 128) as u8 | 0x80);
            len /= 128;
        }
        publ.push(len as u8);
        publ.extend(body);
        p.send_frames(&[&publ]).await;
        p.expect(&[0x40, 2, 0, i + 1]).await;
    }
    let (code, took) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}\n{}",
        gw.log()
    );

    gw.start();
    port_open(ws_port).await;
    let mut c = WsClient::open(addr).await;
    c.send_frames(&[&connect_keep("stuck")]).await;
    c.expect(&[0x20, 2, 1, 0]).await;
    for i in 0..N {
        let (head, body) = c.packet().await;
        assert_eq!(head & !0x08, 0x32, "QoS 1 PUBLISH expected, got {head:02x}");
        assert_eq!(&body[..9], b"\x00\x07stuck/x");
        assert!(
            body.len() == 11 + STUCK_PAYLOAD && body[11..].iter().all(|b| *b == i),
            "message {i} altered or missing after the restart"
        );
        c.send_frames(&[&[0x40, 2, body[9], body[10]]]).await;
    }
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
}
