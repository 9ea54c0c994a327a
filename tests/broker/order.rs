//! Arrival order across clients in the real gateway: a SUBSCRIBE that reached the broker before
//! another client's PUBLISH is in effect when that PUBLISH is routed (the Paho interoperability
//! suite's noLocal step relies on it; Mosquitto keeps it).

use super::gw::{free_port, Gateway};
use super::persist::connect_as;
use super::support::*;

const TRIALS: usize = 50;

#[tokio::test]
async fn subscribe_written_before_a_publish_gets_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml =
        format!("site: s\ngateway: g\nbroker:\n  listen: 127.0.0.1:{port}\nbuffer:\n  dir: data\n");
    let mut g = Gateway::new(dir.path(), &yaml);
    g.start();
    let addr = ([127, 0, 0, 1], port).into();
    let mut sub = connect_as(addr, "order-sub", true, false).await;
    let mut publ = connect_as(addr, "order-pub", true, false).await;
    let mut missed = Vec::new();
    for i in 0..TRIALS {
        let topic = format!("order/{i}");
        // Back to back, the SUBSCRIBE first, without waiting for its SUBACK.
        sub.send(&subscribe(1, &[(&topic, 0)])).await;
        publ.send(&publish(&topic, b"first", 0, 0, false, false))
            .await;
        sub.expect(&[0x90, 3, 0, 1, 0]).await;
        // Subscribed for sure now. One publisher's messages reach a subscriber in order, so the
        // next PUBLISH says whether "first" was routed to it.
        publ.send(&publish(&topic, b"marker", 0, 0, false, false))
            .await;
        let (t, payload) = sub.read_publish().await;
        assert_eq!(t, topic);
        if payload == b"first" {
            let (_, marker) = sub.read_publish().await;
            assert_eq!(marker, b"marker");
        } else {
            assert_eq!(payload, b"marker");
            missed.push(i);
        }
    }
    assert!(
        missed.is_empty(),
        "{} of {TRIALS} publishes written after a SUBSCRIBE missed it (trials {missed:?})\n{}",
        missed.len(),
        g.log()
    );
}
