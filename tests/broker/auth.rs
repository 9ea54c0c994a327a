//! Auth and ACL over raw sockets: CONNACK codes, SUBACK 0x80, denied publishes dropped and
//! counted.

use std::collections::HashMap;

use edgegate::bus::auth::{AclRule, AuthConfig, PasswordHash};

use super::support::*;

fn users() -> HashMap<String, PasswordHash> {
    let mut users = HashMap::new();
    // Few iterations: the tests also run under qemu.
    let line = PasswordHash::new("s3cret", 1000).unwrap().to_line();
    users.insert("plc".into(), PasswordHash::parse(&line).unwrap());
    users
}

fn rule(user: Option<&str>, publish: &[&str], subscribe: &[&str]) -> AclRule {
    AclRule {
        user: user.map(Into::into),
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
    }
}

async fn broker_with(auth: AuthConfig) -> Broker {
    let mut cfg = config(32, 100);
    cfg.auth = auth;
    Broker::with(cfg).await
}

#[tokio::test]
async fn credentials_and_anonymous_off() {
    let b = broker_with(AuthConfig {
        anonymous: false,
        users: users(),
        acl: None,
    })
    .await;
    type Creds<'a> = (Option<&'a str>, Option<&'a [u8]>);
    let refusals: [(Creds, u8); 4] = [
        ((None, None), 0x05),
        ((Some("plc"), Some(b"wrong")), 0x04),
        ((Some("plc"), None), 0x04),
        ((Some("eve"), Some(b"s3cret")), 0x04),
    ];
    for ((user, pass), code) in refusals {
        let mut c = Client::open(b.addr()).await;
        c.send(&connect_auth("c", user, pass)).await;
        c.expect(&[0x20, 2, 0, code]).await;
        c.expect_closed().await;
    }
    let mut c = Client::open(b.addr()).await;
    c.send(&connect_auth("c", Some("plc"), Some(b"s3cret")))
        .await;
    c.expect(&[0x20, 2, 0, 0]).await;
    c.send(&[0xc0, 0]).await;
    c.expect(&[0xd0, 0]).await;
    assert_eq!(b.bus.stats().clients_connected, 1);
}

#[tokio::test]
async fn acl_denies_filters_with_0x80_and_drops_denied_publishes() {
    let b = broker_with(AuthConfig {
        anonymous: true,
        users: users(),
        acl: Some(vec![
            rule(None, &["dev/%c/up"], &["dev/%c/down/#"]),
            rule(Some("plc"), &["#"], &["#"]),
        ]),
    })
    .await;
    let mut plc = Client::open(b.addr()).await;
    plc.send(&connect_auth("plc-1", Some("plc"), Some(b"s3cret")))
        .await;
    plc.expect(&[0x20, 2, 0, 0]).await;
    plc.subscribe(1, &[("dev/#", 1)]).await;

    let mut d1 = b.client("d1").await;
    d1.send(&subscribe(
        1,
        &[("dev/d1/down/#", 1), ("dev/+/down/#", 1), ("#", 0)],
    ))
    .await;
    d1.expect(&[0x90, 5, 0, 1, 0x01, 0x80, 0x80]).await;

    // Another device's topic: acknowledged (3.1.1 has no negative PUBACK), not delivered.
    d1.send(&publish("dev/d2/up", b"spoof", 1, 9, false, false))
        .await;
    d1.expect(&puback(9)).await;
    d1.send(&publish("dev/d1/up", b"21.5", 0, 0, false, false))
        .await;
    plc.expect(b"\x30\x0f\x00\x09dev/d1/up21.5").await;
    assert_eq!(b.bus.stats().denied, 1);

    // The verified user may publish anywhere; d1 gets what its own filter allows.
    plc.send(&publish("dev/d1/down/led", b"on", 0, 0, false, false))
        .await;
    d1.expect(b"\x30\x13\x00\x0fdev/d1/down/ledon").await;
    plc.expect(b"\x30\x13\x00\x0fdev/d1/down/ledon").await;

    // A client id that would widen `%c` gets nothing from the pattern.
    let mut wild = b.client("+").await;
    wild.send(&subscribe(2, &[("dev/+/down/#", 0)])).await;
    wild.expect(&[0x90, 3, 0, 2, 0x80]).await;

    // A will to a topic the client may not publish is not published.
    let mut w = Client::open(b.addr()).await;
    let will = WillSpec {
        topic: "dev/other/up",
        payload: b"gone",
        qos: 0,
        retain: false,
    };
    w.send(&connect_will("w1", true, 0, Some(will))).await;
    w.expect(&[0x20, 2, 0, 0]).await;
    drop(w);
    wait_for_stat(&b, |s| s.denied == 2).await;
    // $SYS belongs to the broker, even for a user allowed `#`.
    plc.send(&publish("$SYS/broker/uptime", b"0", 0, 0, false, false))
        .await;
    wait_for_stat(&b, |s| s.denied == 3).await;
    plc.send(&publish("dev/x", b"last", 0, 0, false, false))
        .await;
    plc.expect(b"\x30\x0b\x00\x05dev/xlast").await;
}
