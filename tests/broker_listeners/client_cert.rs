//! Client certificates on the TLS listener: only certificates from `client_ca` get in, and with
//! `identity_as_username` the certificate's CN is the user the ACL (`%u`) goes by.

use std::process::{Command, Output};

use super::*;

/// A client certificate with subject CN `cn`, signed by `ca` (`ca` or `other-ca` of the PKI),
/// as `<name>.pem` / `<name>.key`.
fn issue(pki: &Pki, name: &str, cn: &str, ca: &str) {
    let openssl = find_program("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .args(args)
            .current_dir(pki.dir.path())
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let (key, csr, pem, subj) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("/CN={cn}"),
    );
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        &subj,
    ]);
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &pem,
        "-days",
        "2",
        "-extfile",
        "client.ext",
    ]);
}

/// mosquitto_pub / mosquitto_sub over TLS trusting `ca.pem`, with the client certificate
/// `<cert>.pem` if given, and `args`.
fn mosquitto(tool: &str, pki: &Pki, port: u16, cert: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(find_program(tool, "mosquitto-clients"));
    c.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["--cafile", &pki.path("ca.pem")]);
    if let Some(cert) = cert {
        c.args(["--cert", &pki.path(&format!("{cert}.pem"))])
            .args(["--key", &pki.path(&format!("{cert}.key"))]);
    }
    c.args(args).output().expect("run a mosquitto client")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_from_the_ca_get_in_and_their_cn_is_the_acl_user() {
    let pki = Pki::new();
    issue(&pki, "pump", "pump-7", "ca");
    issue(&pki, "stranger", "pump-7", "other-ca");
    let tls_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // No passwords at all: the certificate is the login. Each user may publish and subscribe
    // under plant/<its CN>/ only.
    let broker = format!(
        "  tls:\n    listen: 127.0.0.1:{tls_port}\n    cert: {}\n    key: {}\n    client_ca: {}\n    identity_as_username: true\n  auth:\n    anonymous: false\n    acl:\n      - {{publish: [\"plant/%u/#\"], subscribe: [\"plant/%u/#\"]}}\n",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let mut gw = Gateway::new(dir.path(), &site_with_broker(&broker));
    gw.start();
    port_open(tls_port).await;
    let secs = if emulated() { "30" } else { "10" };

    // Without a certificate, or with one from another CA: no TLS session.
    for cert in [None, Some("stranger")] {
        let out = mosquitto(
            "mosquitto_pub",
            &pki,
            tls_port,
            cert,
            &["-t", "plant/pump-7/x", "-m", "1"],
        );
        assert!(!out.status.success(), "{cert:?} got in: {}", text(&out));
        // TLS 1.3: the client hears of its refused certificate only as a dropped connection
        // (not a CONNACK refusal, which would say "Connection Refused").
        assert!(
            text(&out).contains("The connection was lost"),
            "{cert:?}: {}",
            text(&out)
        );
    }

    // The Pki's own client certificate has CN edgegate-test.
    let publish = |cert: &str, topic: &str, value: &str| {
        let out = mosquitto(
            "mosquitto_pub",
            &pki,
            tls_port,
            Some(cert),
            &["-q", "1", "-r", "-t", topic, "-m", value],
        );
        assert!(out.status.success(), "{cert} publishing: {}", text(&out));
    };
    publish("client", "plant/edgegate-test/setpoint", "5");
    // pump-7 may not publish there: dropped, the retained value stays 5.
    publish("pump", "plant/edgegate-test/setpoint", "99");
    publish("pump", "plant/pump-7/setpoint", "21");

    let read = |cert: &str, filter: &str| {
        mosquitto(
            "mosquitto_sub",
            &pki,
            tls_port,
            Some(cert),
            &["-t", filter, "-v", "-C", "1", "-W", secs],
        )
    };
    let own = read("client", "plant/edgegate-test/#");
    assert!(own.status.success(), "{}\n{}", text(&own), gw.log());
    assert_eq!(text(&own), "plant/edgegate-test/setpoint 5\n");
    let own = read("pump", "plant/pump-7/#");
    assert!(own.status.success(), "{}", text(&own));
    assert_eq!(text(&own), "plant/pump-7/setpoint 21\n");
    // Someone else's subtree: SUBACK 0x80, nothing delivered.
    let other = read("pump", "plant/edgegate-test/#");
    assert_eq!(
        text(&other),
        "All subscription requests were denied.\n",
        "{other:?}"
    );

    let (code, _) = gw.terminate();
    assert_eq!(code, Some(0), "{}", gw.log());
}

/// A rustls client trusting `ca.pem`, presenting `<cert>.pem` if given.
async fn tls_client(
    pki: &Pki,
    addr: SocketAddr,
    cert: Option<&str>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let chain = CertificateDer::pem_file_iter(pki.path(&format!("{name}.pem")))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{name}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::from(addr.ip());
    timeout(wait(), connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .unwrap()
}

#[tokio::test]
async fn optional_client_certificates_name_the_user_when_given() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    issue(&pki, "pump", "pump-7", "ca");
    let mut tls = edgegate::bus::tls::TlsListener::new(
        "127.0.0.1:0".parse().unwrap(),
        pki.path("server.pem").into(),
        pki.path("server.key").into(),
    );
    tls.client_ca = Some(pki.path("ca.pem").into());
    tls.require_client_cert = false;
    tls.identity_as_username = true;
    let mut cfg = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: Some(tls),
        sys_interval: Duration::ZERO,
        ..BrokerConfig::default()
    };
    cfg.auth.acl = Some(vec![edgegate::bus::auth::AclRule {
        user: None,
        publish: vec![],
        subscribe: vec!["plant/%u/#".into()],
    }]);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let bus = Bus::start(&cfg, shutdown.clone()).await.unwrap();
    let addr = bus.tls_addr().unwrap();

    // With the certificate: CN pump-7 may subscribe under plant/pump-7, not elsewhere.
    let mut pump = tls_client(&pki, addr, Some("pump")).await;
    let mut hello = connect("p1");
    hello.extend(subscribe(1, "plant/pump-7/#", 1));
    hello.extend(subscribe(2, "plant/other/#", 1));
    pump.write_all(&hello).await.unwrap();
    pump.flush().await.unwrap();
    let mut got = [0u8; 14];
    timeout(wait(), pump.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, [0x20, 2, 0, 0, 0x90, 3, 0, 1, 1, 0x90, 3, 0, 2, 0x80]);

    // Without one: an anonymous client, whom `%u` never matches.
    let mut anon = tls_client(&pki, addr, None).await;
    let mut hello = connect("a1");
    hello.extend(subscribe(1, "plant/pump-7/#", 1));
    anon.write_all(&hello).await.unwrap();
    anon.flush().await.unwrap();
    let mut got = [0u8; 9];
    timeout(wait(), anon.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, [0x20, 2, 0, 0, 0x90, 3, 0, 1, 0x80]);
    shutdown.cancel();
}

#[test]
fn acl_rules_may_name_certificate_users_only_with_identity_as_username() {
    let pki = Pki::new();
    let site = |identity: bool| {
        let broker = format!(
            "  tls:\n    listen: 127.0.0.1:8883\n    cert: {}\n    key: {}\n    client_ca: {}\n    identity_as_username: {identity}\n  auth:\n    acl:\n      - {{user: pump-7, publish: [\"plant/pump-7/#\"]}}\n",
            pki.path("server.pem"),
            pki.path("server.key"),
            pki.path("ca.pem"),
        );
        site_with_broker(&broker)
    };
    let check = |yaml: &str| {
        let dir = tempfile::tempdir().unwrap();
        let gw = Gateway::new(dir.path(), yaml);
        let out = gateway_command()
            .args(["check", "--config"])
            .arg(&gw.config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check(&site(true));
    assert_eq!(code, Some(0), "{err}");
    let yaml = site(false);
    let (code, err) = check(&yaml);
    assert_eq!(code, Some(2), "{err}");
    let line = 1 + yaml
        .lines()
        .position(|l| l.contains("user: pump-7"))
        .unwrap();
    assert!(
        err.contains(&format!("site.yaml:{line}:"))
            && err.contains("`pump-7` is not in `broker.auth.users`"),
        "{err}"
    );
}
