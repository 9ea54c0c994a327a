//! A reload reaches the MQTT-SN nodes' readings: they go through the same normalize stage as the
//! sensors'.

use std::time::Duration;

use crate::client::*;
use crate::support;

fn site(broker: u16, udp: u16, template: &str) -> String {
    format!(
        "{}  topics:\n    - {{filter: \"radio/+/+\", as: readings, unit: degC}}\ntopics:\n  reading: \"{template}\"\ndevices:\n  cold:\n    sim: {{kind: temperature, interval: 100ms}}\n",
        site_yaml(broker, udp, "")
    )
}

#[tokio::test]
async fn a_reload_gives_sensor_and_node_readings_the_new_topic_template_alike() {
    let broker = support::free_port();
    let port = free_udp_port();
    let dir = tempfile::tempdir().unwrap();
    let mut gw = support::Gateway::new(
        dir.path(),
        &site(broker, port, "{site}/{gateway}/{device}/{quantity}"),
    );
    gw.start();
    let sub = support::Subscriber::start(broker, "t-reload", "#", false).await;
    let c = Sn::open(format!("127.0.0.1:{port}").parse().unwrap()).await;
    c.connect("node7", true, 60).await;
    let id = c.register("radio/node7/temperature", 1).await;
    c.send(&publish(0x20, id, 2, b"21.5")).await;
    c.expect(&[0x07, 0x0D, 0x00, id as u8, 0x00, 0x02, 0x00])
        .await;
    wait_message(&sub, "farm/gw1/node7/temperature").await;
    wait_message(&sub, "farm/gw1/cold/temperature").await;

    std::fs::write(
        &gw.config,
        site(broker, port, "v2/{site}/{device}/{quantity}"),
    )
    .unwrap();
    gw.signal("HUP");
    support::wait_for("reloaded", Duration::from_secs(10), || {
        gw.log().contains("reloaded: ")
    })
    .await;
    c.send(&publish(0x20, id, 3, b"22.5")).await;
    c.expect(&[0x07, 0x0D, 0x00, id as u8, 0x00, 0x03, 0x00])
        .await;
    let node = wait_message(&sub, "v2/farm/node7/temperature").await;
    let j: serde_json::Value = serde_json::from_slice(&node).unwrap();
    assert_eq!(j["value"].as_f64(), Some(22.5));
    wait_message(&sub, "v2/farm/cold/temperature").await;
    assert!(
        !gw.log().contains("WARN"),
        "a template change needs no restart\n{}",
        gw.log()
    );
    gw.terminate();
}
