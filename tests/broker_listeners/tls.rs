//! MQTT over TLS: served with the configured certificate, trusted only through its CA.

use std::process::{Command, Output};

use tokio_util::sync::CancellationToken;

use super::*;

fn mosquitto_sub(port: u16, cafile: &str, count: &str, secs: &str) -> Output {
    let port = port.to_string();
    Command::new(find_program("mosquitto_sub", "mosquitto-clients"))
        .args(["-h", "127.0.0.1", "-p", &port, "--cafile", cafile])
        .args([
            "-i",
            "tls-watch",
            "-t",
            "farm/#",
            "-v",
            "-C",
            count,
            "-W",
            secs,
        ])
        .output()
        .expect("run mosquitto_sub")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_trusts_only_its_ca() {
    let pki = Pki::new();
    let tls_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let tls = format!(
        "  tls:\n    listen: 127.0.0.1:{tls_port}\n    cert: {}\n    key: {}\n",
        pki.path("server.pem"),
        pki.path("server.key")
    );
    let mut gw = Gateway::new(dir.path(), &site_with_broker(&tls));
    gw.start();
    port_open(tls_port).await;

    let wrong = mosquitto_sub(tls_port, &pki.path("other-ca.pem"), "1", "5");
    assert!(!wrong.status.success(), "{wrong:?}");
    assert!(wrong.stdout.is_empty(), "{wrong:?}");
    let complaint = String::from_utf8_lossy(&wrong.stderr);
    assert!(complaint.contains("TLS error"), "{complaint}");

    let secs = if emulated() { "30" } else { "10" };
    let right = mosquitto_sub(tls_port, &pki.path("ca.pem"), "3", secs);
    let text = String::from_utf8_lossy(&right.stdout);
    assert!(right.status.success(), "{right:?}\n{}", gw.log());
    assert_eq!(text.lines().count(), 3, "{text}");
    for line in text.lines() {
        assert!(line.starts_with("farm/gw1/"), "{line}");
    }
    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
}

/// `edgegate check` on a site with `extra` under `broker:`: (exit code, stderr, config path,
/// the config's text).
/// A rustls client trusting only `ca`, connected to the TLS listener at `addr`.
async fn tls_connect(
    addr: SocketAddr,
    ca: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = small_window_connect(addr).await?;
    let name = rustls::pki_types::ServerName::from(addr.ip());
    timeout(wait(), connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
}

#[tokio::test]
async fn tls_slow_reader_gets_the_whole_burst() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let cfg = BrokerConfig {
        tls: Some(edgegate::bus::tls::TlsListener::new(
            "127.0.0.1:0".parse().unwrap(),
            pki.path("server.pem").into(),
            pki.path("server.key").into(),
        )),
        ..burst_config()
    };
    let shutdown = CancellationToken::new();
    let bus = Bus::start(&cfg, shutdown.clone()).await.unwrap();
    let mut tls = tls_connect(bus.tls_addr().unwrap(), &pki.path("ca.pem"))
        .await
        .unwrap();
    let mut hello = connect("slow-tls");
    hello.extend(subscribe(1, "big/#", 0));
    tls.write_all(&hello).await.unwrap();
    tls.flush().await.unwrap();
    let mut acks = [0u8; 9];
    timeout(wait(), tls.read_exact(&mut acks))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(acks, [0x20, 2, 0, 0, 0x90, 3, 0, 1, 0]);
    let want = publish_burst(&bus).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Stop reading near the end for a while, so the broker's last writes find the socket full.
    let mut got = vec![0u8; want.len()];
    let (head, tail) = got.split_at_mut(want.len() - PAUSE_BEFORE_END);
    timeout(wait(), tls.read_exact(head))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    timeout(wait(), tls.read_exact(tail))
        .await
        .expect("the end of the burst did not arrive")
        .unwrap();
    assert!(got == want, "the burst arrived altered");
    shutdown.cancel();
}

#[tokio::test]
async fn tls_listener_speaks_mqtt_bytes_in_process() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(edgegate::bus::tls::TlsListener::new(
            "127.0.0.1:0".parse().unwrap(),
            pki.path("server.pem").into(),
            pki.path("server.key").into(),
        )),
        sys_interval: Duration::ZERO,
        ..BrokerConfig::default()
    };
    let shutdown = CancellationToken::new();
    let bus = Bus::start(&cfg, shutdown.clone()).await.unwrap();
    let addr = bus.tls_addr().expect("TLS listener");

    let refused = tls_connect(addr, &pki.path("other-ca.pem")).await;
    let Err(e) = refused else {
        panic!("a server certificate from an unknown CA was accepted");
    };
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    // Plain MQTT on the TLS port gets no CONNACK.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(&connect("plain")).await.unwrap();
    let mut buf = [0u8; 64];
    match timeout(wait(), plain.read(&mut buf)).await {
        Ok(Ok(n)) => assert!(!buf[..n].starts_with(&[0x20]), "{:02x?}", &buf[..n]),
        Ok(Err(_)) => {}
        Err(_) => panic!("plain TCP on the TLS port was neither answered nor closed"),
    }

    let mut tls = tls_connect(addr, &pki.path("ca.pem")).await.unwrap();
    let mut packets = connect("tls1");
    packets.extend(subscribe(1, "t/#", 0));
    packets.extend(publish0("t/1", b"secret"));
    tls.write_all(&packets).await.unwrap();
    tls.flush().await.unwrap();
    let mut want = vec![0x20, 2, 0, 0, 0x90, 3, 0, 1, 0];
    want.extend(publish0("t/1", b"secret"));
    let mut got = vec![0u8; want.len()];
    timeout(wait(), tls.read_exact(&mut got))
        .await
        .expect("timed out")
        .unwrap();
    assert_eq!(got, want);
    shutdown.cancel();
    timeout(wait(), bus.closed()).await.unwrap();
}

#[tokio::test]
async fn tls_client_that_stops_reading_does_not_hold_up_takeover_or_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let cfg = BrokerConfig {
        tls: Some(edgegate::bus::tls::TlsListener::new(
            "127.0.0.1:0".parse().unwrap(),
            pki.path("server.pem").into(),
            pki.path("server.key").into(),
        )),
        ..stuck_config()
    };
    let shutdown = CancellationToken::new();
    let bus = Bus::start(&cfg, shutdown.clone()).await.unwrap();
    let mut stuck = Vec::new();
    for id in ["stuck", "other"] {
        let mut tls = tls_connect(bus.tls_addr().unwrap(), &pki.path("ca.pem"))
            .await
            .unwrap();
        let mut hello = connect_keep(id);
        hello.extend(subscribe(1, "stuck/#", 1));
        tls.write_all(&hello).await.unwrap();
        tls.flush().await.unwrap();
        let mut acks = [0u8; 9];
        timeout(wait(), tls.read_exact(&mut acks))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(acks, [0x20, 2, 0, 0, 0x90, 3, 0, 1, 1]);
        // From here on it does not read.
        stuck.push(tls);
    }
    publish_to_stuck(&bus).await;
    take_over_stuck(&bus).await;
    shut_down_past_stuck(&bus, &shutdown).await;
}
