//! Session lifetime over raw sockets: MQTT 5 session expiry (from CONNECT, changed by
//! DISCONNECT), will delay, takeover and wills (also for 3.1.1), shared groups between v5 clients.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::{timeout, Instant};

use super::support::*;

fn will(topic: &str) -> Option<WillSpec<'_>> {
    Some(WillSpec {
        topic,
        payload: b"gone",
        qos: 0,
        retain: false,
    })
}

/// MQTT 5 3.1.3.2.2, applied to 3.1.1 as Mosquitto does: a takeover that resumes the session is
/// the client coming back, so the old connection's will is not published; one that starts a
/// clean session ends the old session, and its will goes out.
#[tokio::test]
async fn takeover_publishes_the_old_will_only_when_the_session_ends() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("w/#", 0)]).await;
    let mut old = Client::open(b.addr()).await;
    old.send(&connect_will("dev", false, 0, will("w/1"))).await;
    old.expect(&[0x20, 2, 0, 0]).await;
    let mut new = Client::open(b.addr()).await;
    new.send(&connect_will("dev", false, 0, will("w/2"))).await;
    new.expect(&[0x20, 2, 1, 0]).await;
    old.expect_closed().await;
    let mut newest = Client::open(b.addr()).await;
    newest.send(&connect("dev", true, 0)).await;
    newest.expect(&[0x20, 2, 0, 0]).await;
    new.expect_closed().await;
    // Only the second connection's will: the first one's session went on.
    sub.expect(b"\x30\x09\x00\x03w/2gone").await;
    sub.send(&[0xc0, 0]).await;
    sub.expect(&[0xd0, 0]).await;
}

/// A variable byte integer (MQTT 5 1.5.5).
fn varint(mut n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        v.push(b);
        if n == 0 {
            return v;
        }
    }
}

/// Properties: their length, then the bytes.
fn props(bytes: &[u8]) -> Vec<u8> {
    let mut v = varint(bytes.len());
    v.extend_from_slice(bytes);
    v
}

/// Session Expiry Interval (0x11) or Will Delay Interval (0x18).
fn interval(id: u8, secs: u32) -> Vec<u8> {
    let mut v = vec![id];
    v.extend_from_slice(&secs.to_be_bytes());
    v
}

struct WillV5<'a> {
    topic: &'a str,
    delay: Option<u32>,
}

/// MQTT 5 CONNECT, keepalive 0; `expiry` None: no Session Expiry Interval property (0).
fn connect_v5(id: &str, clean_start: bool, expiry: Option<u32>, will: Option<WillV5>) -> Vec<u8> {
    let mut flags = if clean_start { 0x02 } else { 0 };
    if will.is_some() {
        flags |= 0x04; // QoS 0, not retained
    }
    let mut body = field(b"MQTT");
    body.extend([5, flags, 0, 0]);
    body.extend(props(
        &expiry.map(|s| interval(0x11, s)).unwrap_or_default(),
    ));
    body.extend(field(id.as_bytes()));
    if let Some(w) = will {
        body.extend(props(
            &w.delay.map(|s| interval(0x18, s)).unwrap_or_default(),
        ));
        body.extend(field(w.topic.as_bytes()));
        body.extend(field(b"gone"));
    }
    packet(0x10, &body)
}

/// DISCONNECT with a reason code and optionally a Session Expiry Interval.
fn disconnect_v5(reason: u8, expiry: Option<u32>) -> Vec<u8> {
    let mut body = vec![reason];
    body.extend(props(
        &expiry.map(|s| interval(0x11, s)).unwrap_or_default(),
    ));
    packet(0xe0, &body)
}

/// SUBSCRIBE (v5, no properties): filter and options byte.
fn subscribe_v5(pid: u16, filter: &str, options: u8) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    body.push(0);
    body.extend(field(filter.as_bytes()));
    body.push(options);
    packet(0x82, &body)
}

/// Reads one whole packet: first byte and the rest after the remaining length.
async fn read_packet(c: &mut Client) -> (u8, Vec<u8>) {
    let mut head = [0u8; 1];
    read_exact(c, &mut head).await;
    let mut len = 0usize;
    for i in 0..4 {
        let mut b = [0u8; 1];
        read_exact(c, &mut b).await;
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    read_exact(c, &mut body).await;
    (head[0], body)
}

async fn read_exact(c: &mut Client, buf: &mut [u8]) {
    timeout(WAIT, c.stream.read_exact(buf))
        .await
        .expect("timed out reading")
        .expect("read failed");
}

/// A v5 client: CONNECT sent and CONNACK (reason 0) read; its first body bytes are the flags
/// (session present) and the reason code, then the broker's properties.
async fn open_v5(b: &Broker, connect: &[u8], session_present: bool) -> Client {
    let mut c = Client::open(b.addr()).await;
    c.send(connect).await;
    let (head, body) = read_packet(&mut c).await;
    assert_eq!(head, 0x20, "CONNACK expected");
    assert_eq!(body[..2], [u8::from(session_present), 0x00], "{body:02x?}");
    c
}

/// The broker closes the connection, after a DISCONNECT with `reason` if it sends one.
async fn expect_closed_v5(c: &mut Client, reason: u8) {
    let mut head = [0u8; 1];
    match timeout(WAIT, c.stream.read(&mut head)).await {
        Err(_) => panic!("connection still open"),
        Ok(Ok(0)) | Ok(Err(_)) => return,
        Ok(Ok(_)) => {}
    }
    assert_eq!(head[0], 0xe0, "only DISCONNECT may come before the close");
    let mut len = [0u8; 1];
    read_exact(c, &mut len).await;
    let mut body = vec![0u8; usize::from(len[0])];
    read_exact(c, &mut body).await;
    assert_eq!(body.first(), Some(&reason), "{body:02x?}");
    c.expect_closed().await;
}

async fn expect_nothing_pending(c: &mut Client) {
    c.send(&[0xc0, 0]).await;
    c.expect(&[0xd0, 0]).await;
}

#[tokio::test]
async fn v5_session_resumes_within_its_expiry_and_is_gone_after() {
    let mut cfg = config(32, 100);
    cfg.sys_interval = Duration::from_millis(100);
    let b = Broker::with(cfg).await;
    let mut sys = b.client("sys").await;
    sys.subscribe(1, &[("$SYS/broker/sessions/expired", 0)])
        .await;
    let mut s = open_v5(&b, &connect_v5("s", true, Some(1), None), false).await;
    s.send(&subscribe_v5(1, "e/#", 1)).await;
    s.expect(&[0x90, 4, 0, 1, 0, 1]).await;
    s.send(&[0xe0, 0]).await;
    s.expect_closed().await;
    // Back within the second: the session with its subscription is there.
    let mut s = open_v5(&b, &connect_v5("s", false, Some(1), None), true).await;
    s.send(&[0xe0, 0]).await;
    s.expect_closed().await;
    let mut publ = b.client("pub").await;
    publ.send(&publish("e/1", b"q", 1, 1, false, false)).await;
    publ.expect(&puback(1)).await;
    // Gone (with the queued message) once the second has passed.
    wait_for_stat(&b, |s| s.expired == 1).await;
    let mut s = open_v5(&b, &connect_v5("s", false, Some(1), None), false).await;
    expect_nothing_pending(&mut s).await;
    publ.send(&publish("e/2", b"q", 1, 2, false, false)).await;
    publ.expect(&puback(2)).await;
    expect_nothing_pending(&mut s).await;
    // Counted on $SYS.
    let deadline = Instant::now() + WAIT;
    while sys.read_publish().await.1 != b"1" {
        assert!(Instant::now() < deadline, "no expired session on $SYS");
    }
}

#[tokio::test]
async fn v5_disconnect_sets_the_expiry_but_not_from_zero() {
    let b = Broker::start().await;
    // CONNECT without the property: expiry 0; DISCONNECT may not raise it (MQTT-3.14.2-2).
    let mut c = open_v5(&b, &connect_v5("z", true, None, None), false).await;
    c.send(&disconnect_v5(0, Some(60))).await;
    let (head, body) = read_packet(&mut c).await;
    assert_eq!((head, body[0]), (0xe0, 0x82), "{body:02x?}");
    c.expect_closed().await;
    let mut c = open_v5(&b, &connect_v5("z", false, None, None), false).await;
    // Lowering it to 0 ends the session with the connection.
    c.send(&[0xe0, 0]).await;
    c.expect_closed().await;
    let mut c = open_v5(&b, &connect_v5("d", true, Some(60), None), false).await;
    c.send(&disconnect_v5(0, Some(0))).await;
    c.expect_closed().await;
    let _c = open_v5(&b, &connect_v5("d", false, Some(60), None), false).await;
    assert_eq!(b.bus.stats().expired, 0);
}

#[tokio::test]
async fn v5_will_waits_for_its_delay_and_not_for_a_client_that_returns() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("w/#", 0)]).await;
    let will = |topic, delay| {
        Some(WillV5 {
            topic,
            delay: Some(delay),
        })
    };
    let c = open_v5(
        &b,
        &connect_v5("late", true, Some(60), will("w/late", 1)),
        false,
    )
    .await;
    let closed = Instant::now();
    drop(c);
    sub.expect(b"\x30\x0c\x00\x06w/lategone").await;
    assert!(
        closed.elapsed() >= Duration::from_millis(900),
        "{:?}",
        closed.elapsed()
    );

    let c = open_v5(
        &b,
        &connect_v5("back", true, Some(60), will("w/back", 2)),
        false,
    )
    .await;
    drop(c);
    let back_left = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _c = open_v5(&b, &connect_v5("back", false, Some(60), None), true).await;
    // Session expiry shorter than the delay: published when the session ends.
    let c = open_v5(
        &b,
        &connect_v5("short", true, Some(1), will("w/short", 60)),
        false,
    )
    .await;
    drop(c);
    sub.expect(b"\x30\x0d\x00\x07w/shortgone").await;
    // DISCONNECT 0x04 asks for the will; 0x00 discards it.
    let mut c = open_v5(&b, &connect_v5("ask", true, None, will("w/ask", 0)), false).await;
    c.send(&disconnect_v5(0x04, None)).await;
    c.expect_closed().await;
    sub.expect(b"\x30\x0b\x00\x05w/askgone").await;
    let mut c = open_v5(
        &b,
        &connect_v5("polite", true, None, will("w/polite", 0)),
        false,
    )
    .await;
    c.send(&[0xe0, 0]).await;
    c.expect_closed().await;
    // Nothing from "back" once its delay has passed, nor from "polite".
    tokio::time::sleep_until(back_left + Duration::from_millis(2500)).await;
    expect_nothing_pending(&mut sub).await;
}

/// MQTT-3.1.2-8: a new connection for the client id before the will delay has passed means no
/// will, also when it starts a clean session (which ends the old one).
#[tokio::test]
async fn v5_clean_start_within_the_will_delay_cancels_the_will() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("w/#", 0)]).await;
    let will = Some(WillV5 {
        topic: "w/back",
        delay: Some(1),
    });
    let c = open_v5(&b, &connect_v5("back", true, Some(60), will), false).await;
    drop(c);
    let left = Instant::now();
    // Offline first, so this is a reconnection rather than a takeover.
    wait_for_stat(&b, |s| s.clients_connected == 1).await;
    let _c = open_v5(&b, &connect_v5("back", true, Some(60), None), false).await;
    // Well past the delay: still nothing.
    tokio::time::sleep_until(left + Duration::from_millis(1500)).await;
    expect_nothing_pending(&mut sub).await;
}

#[tokio::test]
async fn v5_takeover_with_clean_start_publishes_the_old_will() {
    let b = Broker::start().await;
    let mut sub = b.client("sub").await;
    sub.subscribe(1, &[("w/#", 0)]).await;
    let will = |topic| {
        Some(WillV5 {
            topic,
            delay: Some(30),
        })
    };
    let mut old = open_v5(&b, &connect_v5("t", true, Some(60), will("w/1")), false).await;
    let mut new = open_v5(&b, &connect_v5("t", false, Some(60), will("w/2")), true).await;
    expect_closed_v5(&mut old, 0x8e).await;
    let _newest = open_v5(&b, &connect_v5("t", true, Some(60), None), false).await;
    expect_closed_v5(&mut new, 0x8e).await;
    sub.expect(b"\x30\x09\x00\x03w/2gone").await;
    expect_nothing_pending(&mut sub).await;
}

#[tokio::test]
async fn v5_shared_group_round_robin_between_two_raw_clients() {
    let b = Broker::start().await;
    let mut x = open_v5(&b, &connect_v5("x", true, None, None), false).await;
    let mut y = open_v5(&b, &connect_v5("y", true, None, None), false).await;
    for c in [&mut x, &mut y] {
        c.send(&subscribe_v5(1, "$share/grp/m/#", 0)).await;
        c.expect(&[0x90, 4, 0, 1, 0, 0]).await;
    }
    let mut publ = b.client("pub").await;
    for t in ["m/1", "m/2", "m/3", "m/4"] {
        publ.send(&publish(t, b"v", 0, 0, false, false)).await;
    }
    // v5 PUBLISH: topic, property length 0, payload.
    x.expect(b"\x30\x07\x00\x03m/1\x00v").await;
    y.expect(b"\x30\x07\x00\x03m/2\x00v").await;
    x.expect(b"\x30\x07\x00\x03m/3\x00v").await;
    y.expect(b"\x30\x07\x00\x03m/4\x00v").await;
    // No Local on a shared subscription is a protocol error (MQTT-3.8.3-4).
    x.send(&subscribe_v5(2, "$share/grp/n", 0x04)).await;
    let (head, body) = read_packet(&mut x).await;
    assert_eq!((head, body[0]), (0xe0, 0x82), "{body:02x?}");
    x.expect_closed().await;
}

#[tokio::test]
async fn max_session_expiry_ends_3_1_1_persistent_sessions_too() {
    let mut cfg = config(32, 100);
    cfg.max_session_expiry = Some(Duration::from_secs(1));
    let b = Broker::with(cfg).await;
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("p", false, 0)).await;
    p.expect(&[0x20, 2, 0, 0]).await;
    p.send(&[0xe0, 0]).await;
    p.expect_closed().await;
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("p", false, 0)).await;
    p.expect(&[0x20, 2, 1, 0]).await;
    p.send(&[0xe0, 0]).await;
    p.expect_closed().await;
    wait_for_stat(&b, |s| s.expired == 1).await;
    let mut p = Client::open(b.addr()).await;
    p.send(&connect("p", false, 0)).await;
    p.expect(&[0x20, 2, 0, 0]).await;
}

#[tokio::test]
async fn v5_shared_member_gets_its_subscription_id_and_counts_as_a_match() {
    let b = Broker::start().await;
    let mut x = open_v5(&b, &connect_v5("x", true, None, None), false).await;
    // SUBSCRIBE with Subscription Identifier 7.
    let mut body = vec![0, 1, 2, 0x0b, 7];
    body.extend(field(b"$share/grp/k"));
    body.push(0);
    x.send(&packet(0x82, &body)).await;
    x.expect(&[0x90, 4, 0, 1, 0, 0]).await;
    let mut p = open_v5(&b, &connect_v5("p", true, None, None), false).await;
    let mut publish = field(b"k");
    publish.extend([0, 1, 0, b'v']);
    p.send(&packet(0x32, &publish)).await;
    // Delivered to the group: PUBACK success, not 0x10 "no matching subscribers".
    p.expect(&[0x40, 2, 0, 1]).await;
    x.expect(b"\x30\x07\x00\x01k\x02\x0b\x07v").await;
    let mut publish = field(b"nobody");
    publish.extend([0, 2, 0, b'v']);
    p.send(&packet(0x32, &publish)).await;
    p.expect(&[0x40, 3, 0, 2, 0x10]).await;
}
