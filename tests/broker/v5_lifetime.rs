//! Session lifetime over raw sockets: takeover and wills (3.1.1 here; MQTT 5 session expiry and
//! will delay below).

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
