//! The uplink, step by step: DNS, TCP, TLS, MQTT CONNECT. Each step is its own line, so a
//! failure says where the path breaks. The CONNECT uses the client id with `-doctor` appended and
//! a clean session, so the running gateway's session is neither taken over nor wiped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::Check;
use crate::bus::codec;
use crate::uplink::UplinkConfig;

const TIMEOUT: Duration = Duration::from_secs(5);

pub fn check(up: &UplinkConfig) -> Vec<Check> {
    let mut out = Vec::new();
    let target = format!("{}:{}", up.host, up.port);
    let addrs: Vec<SocketAddr> = match (up.host.as_str(), up.port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            out.push(Check::fail(
                "uplink dns",
                format!("{}: {e}", up.host),
                "check uplink.host for typos, and the resolver: resolvectl status (or /etc/resolv.conf)",
            ));
            return out;
        }
    };
    let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    out.push(Check::pass(
        "uplink dns",
        format!("{} -> {}", up.host, list.join(", ")),
    ));

    let mut tcp = None;
    let mut last_err = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, TIMEOUT) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last_err = Some(format!("{a}: {e}")),
        }
    }
    let Some(tcp) = tcp else {
        out.push(Check::fail(
            "uplink tcp",
            format!(
                "cannot connect to {target}: {}",
                last_err.unwrap_or_default()
            ),
            "check uplink.port, that the broker runs, and that firewalls allow outgoing TCP to it",
        ));
        return out;
    };
    let _ = tcp.set_read_timeout(Some(TIMEOUT));
    let _ = tcp.set_write_timeout(Some(TIMEOUT));
    out.push(Check::pass("uplink tcp", format!("connected to {target}")));

    let result = match &up.tls {
        None => connect(up, tcp),
        Some(tls) => {
            let stream = match handshake(up, tls, tcp) {
                Ok(s) => {
                    out.push(Check::pass(
                        "uplink tls",
                        "handshake done, broker certificate trusted",
                    ));
                    s
                }
                Err(e) => {
                    out.push(Check::fail(
                        "uplink tls",
                        e,
                        "check uplink.tls.ca_file is the CA that signed the broker's certificate, \
                         that uplink.host matches a name in it, and that the clock is right",
                    ));
                    return out;
                }
            };
            connect(up, stream)
        }
    };
    out.push(match result {
        Ok(()) => Check::pass("uplink mqtt", "CONNECT accepted"),
        Err((detail, fix)) => Check::fail("uplink mqtt", detail, fix),
    });
    out
}

fn handshake(
    up: &UplinkConfig,
    tls: &crate::uplink::tls::TlsConfig,
    mut tcp: TcpStream,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    let config = crate::uplink::tls::client_config(tls).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(up.host.clone())
        .map_err(|e| format!("`{}` is not a valid TLS server name: {e}", up.host))?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)
            .map_err(|e| format!("handshake failed: {e}"))?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// An MQTT 3.1.1 CONNECT packet: clean session, keepalive 10 s, written by the local broker's
/// codec.
pub fn connect_packet(client_id: &str, user: Option<&str>, password: Option<&str>) -> Vec<u8> {
    let mut c = codec::Connect::v311(client_id, true, 10);
    c.username = user.map(str::to_owned);
    // A password only goes with a user name in 3.1.1.
    c.password = password
        .filter(|_| user.is_some())
        .map(|p| bytes::Bytes::copy_from_slice(p.as_bytes()));
    codec::Packet::Connect(c).to_bytes().to_vec()
}

/// What a CONNACK return code means, and what to do about it.
pub fn connack_problem(code: u8) -> Option<(String, String)> {
    let (what, fix) = match code {
        0 => return None,
        1 => (
            "unacceptable protocol version",
            "the broker must speak MQTT 3.1.1",
        ),
        2 => (
            "client id rejected",
            "check uplink.client_id against the broker's rules",
        ),
        3 => (
            "server unavailable",
            "the broker is up but not serving; ask its operator",
        ),
        4 => (
            "bad user name or password",
            "check uplink.username and the password source",
        ),
        5 => (
            "not authorized",
            "the broker's ACL refuses this client; ask its operator",
        ),
        _ => ("unknown refusal", "ask the broker's operator"),
    };
    Some((
        format!("broker refused CONNECT: {what} (code {code})"),
        fix.to_string(),
    ))
}

fn connect(up: &UplinkConfig, mut s: impl Read + Write) -> Result<(), (String, String)> {
    let id = format!("{}-doctor", up.client_id);
    let packet = connect_packet(&id, up.username.as_deref(), up.password.as_deref());
    let io = |e: std::io::Error| {
        (
            format!("no CONNACK: {e}"),
            "is this port an MQTT listener (TLS on a plain port, or the reverse)?".to_string(),
        )
    };
    s.write_all(&packet).map_err(io)?;
    s.flush().map_err(io)?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).map_err(io)?;
    if ack[0] != 0x20 || ack[1] != 2 {
        return Err((
            format!("expected CONNACK, got bytes {:02x?}", ack),
            "is this port an MQTT 3.1.1 listener?".to_string(),
        ));
    }
    if let Some(p) = connack_problem(ack[3]) {
        return Err(p);
    }
    let _ = s.write_all(&[0xE0, 0x00]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_matches_the_spec_layout() {
        let p = connect_packet("gw", Some("u"), Some("pw"));
        assert_eq!(
            p,
            [
                0x10, 21, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 10, 0, 2, b'g', b'w', 0, 1,
                b'u', 0, 2, b'p', b'w'
            ]
        );
        let long = connect_packet(&"x".repeat(200), None, None);
        // 12 bytes of header and length-prefixed id + 200: two length bytes.
        assert_eq!(&long[..3], &[0x10, 0xD4, 0x01]);
    }

    #[test]
    fn refusals_are_explained() {
        assert!(connack_problem(0).is_none());
        let (what, fix) = connack_problem(4).unwrap();
        assert!(what.contains("bad user name or password"));
        assert!(fix.contains("uplink.username"));
    }
}
