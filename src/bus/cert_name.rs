//! The subject CN of a client certificate rustls has already verified: just enough DER to walk
//! from the certificate to its subject name.

/// One DER element: (tag, contents, what follows). `None` if it is cut short or its length is
/// not in definite form.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, after) = rest.split_at(n);
        rest = after;
        bytes.iter().fold(0usize, |l, b| l << 8 | usize::from(*b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `element` with the tag it must have.
fn expect(tag: u8, input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = element(input)?;
    (t == tag).then_some((body, rest))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The first commonName in the subject of an X.509 certificate (DER), when it is a UTF8String,
/// PrintableString or IA5String; `None` for anything else.
pub(crate) fn subject_cn(der: &[u8]) -> Option<String> {
    let (cert, _) = expect(SEQUENCE, der)?;
    let (tbs, _) = expect(SEQUENCE, cert)?;
    let (tag, _, mut rest) = element(tbs)?;
    if tag == VERSION {
        rest = element(rest)?.2; // serial number
    }
    for _ in 0..3 {
        rest = element(rest)?.2; // signature algorithm, issuer, validity
    }
    let (mut rdns, _) = expect(SEQUENCE, rest)?;
    while !rdns.is_empty() {
        let (mut set, next) = expect(SET, rdns)?;
        rdns = next;
        while !set.is_empty() {
            let (attribute, next) = expect(SEQUENCE, set)?;
            set = next;
            let (oid, value) = expect(OID, attribute)?;
            if oid == COMMON_NAME {
                let (tag, text, _) = element(value)?;
                return match tag {
                    0x0c | 0x13 | 0x16 => String::from_utf8(text.to_vec()).ok(),
                    _ => None,
                };
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// openssl, v1 (no extensions): subject C=DE, O=Farm Co, CN=pump-7, OU=x.
    const V1: &str = "-----BEGIN CERTIFICATE-----
MIIBRDCB7AIUH0TioeDKt1xyhThC5a7dvGGplkowCgYIKoZIzj0EAwIwDTELMAkG
A1UEAwwCY2EwIBcNMjYxMTMwMDcyMTM3WhgPMjEyNjExMDYwNzIxMzdaMDwxCzAJ
BgNVBAYTAkRFMRAwDgYDVQQKDAdGYXJtIENvMQ8wDQYDVQQDDAZwdW1wLTcxCjAI
BgNVBAsMAXgwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ0X+AzoON7wyr5GEtw
0vT0Bd/DiQNP0f4uDhvPygF/eQr3uUvTeOvunoeXM7cDdUFN32ISZaOQ66nQIioQ
sYZ6MAoGCCqGSM49BAMCA0cAMEQCICTe5JJzUKTMT04f3P/wNyBrJFJ6UbaPIMuK
aUDTuAh1AiA79VGrPzEC7YwBR658WixQjb2AiNY6Zk5JYnCob7VoiA==
-----END CERTIFICATE-----";

    /// openssl, v3 with extensions: subject CN=Bäckerei 3 (UTF8String), issuer CN=ca.
    const V3: &str = "-----BEGIN CERTIFICATE-----
MIIBfTCCASSgAwIBAgIUH0TioeDKt1xyhThC5a7dvGGplkwwCgYIKoZIzj0EAwIw
DTELMAkGA1UEAwwCY2EwIBcNMjYxMTMwMDcyMTM5WhgPMjEyNjExMDYwNzIxMzla
MBYxFDASBgNVBAMMC0LDpGNrZXJlaSAzMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD
QgAE4Zb7ZCO1efD2NcGycZsGKw9OznK/aihzyF64zKapJ2+ShJTSmBabeUIsOIRp
RCkHgMuUrUg1qt9D0ehZjZ/mWqNXMFUwEwYDVR0lBAwwCgYIKwYBBQUHAwIwHQYD
VR0OBBYEFDCy3d/QLLeOT7D07f6J4VdLy2w0MB8GA1UdIwQYMBaAFJbQFvK6Azmz
+VzkuhNGq8/PIWnEMAoGCCqGSM49BAMCA0cAMEQCIEjKaLG7K33lcZ/jt5faFdRA
PYrConLI3O+4lKUSUzPAAiBJnGG74wZP0asLhDnFZxHGvdUfNovyFFYcI56K/pWS
3A==
-----END CERTIFICATE-----";

    /// openssl, v1: subject O=No Name, no CN.
    const NO_CN: &str = "-----BEGIN CERTIFICATE-----
MIIBGzCBwgIUH0TioeDKt1xyhThC5a7dvGGplkswCgYIKoZIzj0EAwIwDTELMAkG
A1UEAwwCY2EwIBcNMjYxMTMwMDcyMTM3WhgPMjEyNjExMDYwNzIxMzdaMBIxEDAO
BgNVBAoMB05vIE5hbWUwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQSxOUOFq/V
JIHDguI1cLa0tXGN/r31WGy5uRZc0phBMuQ3Hh5lrCrnJpnLZpQNSkWblgJYS2m1
mmrlAr6FCFiWMAoGCCqGSM49BAMCA0gAMEUCIHE13xgz1mw2Ph4x1Gbpkn1pzdJc
Ol4A8oKmKIxGuTWGAiEA2VTamLpAkzH6gtY3Qk6mmPXrYioEoS4igw7ODb3TN5c=
-----END CERTIFICATE-----";

    #[test]
    fn the_subject_cn_not_the_issuers() {
        assert_eq!(subject_cn(&der(V1)).as_deref(), Some("pump-7"));
        assert_eq!(subject_cn(&der(V3)).as_deref(), Some("Bäckerei 3"));
        assert_eq!(subject_cn(&der(NO_CN)), None);
    }

    #[test]
    fn truncated_or_garbage_input_is_none_never_a_panic() {
        let full = der(V3);
        for n in 0..full.len() {
            assert_eq!(subject_cn(&full[..n]), None, "cut at {n}");
        }
        assert_eq!(subject_cn(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(subject_cn(b""), None);
    }
}
