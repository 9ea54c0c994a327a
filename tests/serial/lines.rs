//! ASCII line parsers over a pty: good lines, garbage, truncated lines, bad checksums.

use edgegate::adapters::serial::line::{nmea_body, LineError};

use super::{serial_config, through_pty, values};

fn v(q: &str, x: f64) -> (String, f64) {
    (q.to_string(), x)
}

#[tokio::test]
async fn regex_maxbotix_lines_with_garbage_and_truncation() {
    let cfg = serial_config(
        "serial:\n  port: /dev/ttyUSB0\n  protocol: line\n  interval: 0s\n  format: regex\n  pattern: '^R(?P<distance>\\d{4})$'\n  fields:\n    distance: { unit: mm }\n",
    );
    let got = through_pty(
        &cfg,
        &[
            b"R1953\r",
            b"\xff\xfe\x00R\xc3\r", // line noise: not text
            b"R19",                 // cut off by a reset...
            b"\rR1954\r",           // ...so `R19` is a line of its own
            b"R19",                 // split across two reads
            b"55\r",
            b"R12345678901234567890", // too many digits
            b"\r\nRxyz\r",
            b"R1956\r",
        ],
        4,
    )
    .await;
    assert_eq!(
        values(&got),
        [
            v("distance", 1953.0),
            v("distance", 1954.0),
            v("distance", 1955.0),
            v("distance", 1956.0)
        ]
    );
    assert!(got
        .iter()
        .all(|r| r.unit == Some("mm") && r.device == "dev"));
}

#[tokio::test]
async fn key_value_lines_drop_truncated_ones_whole() {
    let cfg = serial_config(
        "serial:\n  port: /dev/ttyUSB0\n  protocol: line\n  interval: 0s\n  format: key_value\n  fields:\n    temperature: { key: T, unit: degC }\n    humidity: { key: RH, unit: \"%\" }\n",
    );
    let got = through_pty(
        &cfg,
        &[
            b"T=21.5 RH=40.2\n",
            b"T=21.6 RH=\n",           // truncated: no humidity value
            b"T=21.7\n",               // truncated: no humidity key
            b"#$%^&*\n",               // garbage
            b"T=abc RH=41\n",          // not a number
            b"\x80\x81\n",             // not text
            b"RH:41.0; T:+22.25C\r\n", // other order, `:` and `;`, a unit suffix
        ],
        4,
    )
    .await;
    assert_eq!(
        values(&got),
        [
            v("temperature", 21.5),
            v("humidity", 40.2),
            v("temperature", 22.25),
            v("humidity", 41.0)
        ]
    );
}

#[tokio::test]
async fn csv_columns() {
    let cfg = serial_config(
        "serial:\n  port: /dev/ttyUSB0\n  protocol: line\n  interval: 0s\n  format: csv\n  delimiter: ';'\n  fields:\n    oxygen: { column: 1, unit: mg/L }\n    ph: { column: 2 }\n",
    );
    let got = through_pty(
        &cfg,
        &[
            b"10:00:00;4.12;7.01;512\n",
            b"10:00:01;4.13\n",  // truncated
            b"10:00:02;;7.02\n", // empty column
            b"garbage without delimiters\n",
            b"10:00:03;4.15;7.03\n",
        ],
        4,
    )
    .await;
    assert_eq!(
        values(&got),
        [
            v("oxygen", 4.12),
            v("ph", 7.01),
            v("oxygen", 4.15),
            v("ph", 7.03)
        ]
    );
    assert_eq!(got[1].unit, None);
}

/// `$BODY*hh` with hh the XOR of BODY, computed here independently of the gateway.
fn sentence(body: &str) -> String {
    let x = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{x:02X}\r\n")
}

#[tokio::test]
async fn nmea_sentences_with_bad_checksums_and_other_types() {
    let cfg = serial_config(
        "serial:\n  port: /dev/ttyUSB0\n  protocol: line\n  interval: 0s\n  format: nmea\n  sentence: WIMDA\n  fields:\n    pressure: { column: 3, unit: bar }\n    temperature: { column: 5, unit: degC }\n",
    );
    let good1 = sentence("WIMDA,30.12,I,1.020,B,21.5,C");
    let mut bad = sentence("WIMDA,30.12,I,1.021,B,21.6,C");
    // One flipped digit in the body: the checksum no longer matches.
    bad = bad.replace("21.6", "27.6");
    let other = sentence("WIMWV,270,R,5.2,M,A");
    let truncated = "$WIMDA,30.12,I,1.0";
    let good2 = sentence("WIMDA,30.10,I,1.019,B,-3.5,C");
    let got = through_pty(
        &cfg,
        &[
            good1.as_bytes(),
            bad.as_bytes(),
            other.as_bytes(),
            truncated.as_bytes(),
            b"\r\n",
            b"$WIMDA,1,2,3,4,5*zz\r\n",
            good2.as_bytes(),
        ],
        4,
    )
    .await;
    assert_eq!(
        values(&got),
        [
            v("pressure", 1.020),
            v("temperature", 21.5),
            v("pressure", 1.019),
            v("temperature", -3.5)
        ]
    );
}

#[test]
fn nmea_checksum_errors_say_what_was_received() {
    assert_eq!(
        nmea_body("$GPGLL,1*1F"),
        Err(LineError::Checksum {
            got: 0x1F,
            computed: b'G' ^ b'P' ^ b'G' ^ b'L' ^ b'L' ^ b',' ^ b'1'
        })
    );
    assert_eq!(nmea_body("GPGLL,1"), Err(LineError::NotSentence));
    let s = sentence("GPGLL,1");
    assert_eq!(nmea_body(s.trim_end()), Ok("GPGLL,1"));
}

#[tokio::test]
async fn a_streaming_sensor_is_thinned_to_its_interval() {
    let cfg = serial_config(
        "serial:\n  port: /dev/ttyUSB0\n  protocol: line\n  interval: 1h\n  format: regex\n  pattern: '^R(?P<distance>\\d+)$'\n  fields:\n    distance: {}\n",
    );
    let got = through_pty(&cfg, &[b"R1000\rR1001\rR1002\r", b"R1003\r"], 1).await;
    assert_eq!(values(&got), [v("distance", 1000.0)]);
}

#[test]
fn line_config_errors_point_at_the_key() {
    let text = "site: s\ngateway: g\ndevices:\n  a:\n    serial:\n      port: /dev/ttyUSB0\n      protocol: line\n      format: regex\n      pattern: '^R(?P<dist>\\d+'\n      fields:\n        distance: {}\n  b:\n    serial:\n      port: /dev/ttyUSB1\n      protocol: line\n      format: regex\n      pattern: '^R(?P<dist>\\d+)$'\n      fields:\n        distance: {}\n  c:\n    serial:\n      port: /dev/ttyUSB2\n      protocol: line\n      format: csv\n      parity: mark\n      fields:\n        ph: { unit: pH }\n";
    super::support::assert_config_errors(
        text,
        &[
        "site.yaml:9:16: devices.a.serial.pattern: not a valid regular expression",
        "site.yaml:19:9: devices.b.serial.fields.distance: the pattern has no capture group `(?P<distance>...)`",
        "site.yaml:25:15: devices.c.serial.parity: `mark` is not one of",
        "site.yaml:27:9: devices.c.serial.fields.ph: missing required key `column`",
        ],
    );
}
