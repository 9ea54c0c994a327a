//! Binary frames over a pty: the A02YYUW profile with noise, partial frames and a bad
//! checksum among good frames; a configured frame spec with a length field and CRC-16.

use edgegate::reading::Quality;

use super::{crc16, serial_config, through_pty, values};

/// An A02YYUW frame, its checksum computed here: (0xFF + H + L) & 0xFF.
fn a02(mm: u16) -> Vec<u8> {
    let [h, l] = mm.to_be_bytes();
    vec![0xFF, h, l, (0xFFu16 + u16::from(h) + u16::from(l)) as u8]
}

#[tokio::test]
async fn a02yyuw_frames_among_noise_and_a_bad_checksum() {
    let cfg = serial_config(
        "serial:\n  port: /dev/ttyAMA0\n  protocol: a02yyuw\n  interval: 0s\n  mount_height_m: 2.0\n  tank_height_m: 1.8\n",
    );
    // The datasheet's example first: FF 07 A1 A7 = 1953 mm.
    assert_eq!(a02(1953), [0xFF, 0x07, 0xA1, 0xA7]);
    let mut bad = a02(1500);
    bad[3] ^= 0x10;
    let partial = &a02(1700)[..2];
    let got = through_pty(
        &cfg,
        &[
            &a02(1953),
            &[0x00, 0x13, 0x37, 0xFF], // noise, ending in something that looks like a header
            &a02(1100),
            &bad,
            partial,   // a frame cut short by a glitch...
            &a02(560), // ...does not swallow the next one
            &[0x55, 0xAA],
            &a02(20),        // inside the blind zone
            &a02(1100)[..3], // split across reads
            &a02(1100)[3..],
        ],
        10,
    )
    .await;
    let level = |mm: f64| (2.0 - mm / 1000.0) / 1.8 * 100.0;
    let want = [1953.0, 1100.0, 560.0, 20.0, 1100.0];
    let got_v = values(&got);
    assert_eq!(got_v.len(), 10, "{got_v:?}");
    for (i, mm) in want.iter().enumerate() {
        assert_eq!(got_v[2 * i], ("distance".to_string(), *mm), "{got_v:?}");
        assert_eq!(got_v[2 * i + 1].0, "level");
        assert!((got_v[2 * i + 1].1 - level(*mm)).abs() < 1e-9, "{got_v:?}");
    }
    assert!((got_v[3].1 - 50.0).abs() < 1e-9);
    assert!((got_v[5].1 - 80.0).abs() < 1e-9);
    // 20 mm is in the blind zone: reported, but not as good.
    assert_eq!(got[6].quality, Quality::OutOfRange);
    assert_eq!(got[7].quality, Quality::OutOfRange);
    assert_eq!(got[0].quality, Quality::Good);
    assert_eq!((got[0].unit, got[1].unit), (Some("mm"), Some("%")));
    // Noise, the bad checksum and the partial frame are counted where an integrator looks.
    let metrics = edgegate::health::metrics::render(&Default::default());
    let bad: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("edgegate_device_errors_total{device=\"dev\",kind=\"bad_data\"} ")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(bad >= 4, "{metrics}");
}

/// AA 55 | len | seq | temperature i16 x0.1 | humidity u16 x0.1 | CRC over len..humidity.
fn node_frame(seq: u8, t: i16, h: u16) -> Vec<u8> {
    let mut f = vec![0xAA, 0x55, 7, seq];
    f.extend(t.to_be_bytes());
    f.extend(h.to_be_bytes());
    let crc = crc16(&f[2..]);
    f.extend(crc);
    f
}

#[tokio::test]
async fn configured_frames_with_length_field_and_crc16() {
    let cfg = serial_config(
        "serial:\n  port: /dev/ttyUSB0\n  protocol: frame\n  interval: 0s\n  header: \"AA 55\"\n  length_field: { offset: 2, width: 1, adjust: 3 }\n  max_length: 64\n  checksum: crc16_modbus\n  checksum_from: 2\n  fields:\n    temperature: { offset: 4, type: i16, scale: 0.1, unit: degC }\n    humidity: { offset: 6, type: u16, scale: 0.1, unit: \"%\" }\n",
    );
    let mut corrupt = node_frame(2, 999, 999);
    corrupt[5] ^= 0x01;
    let mut huge = node_frame(3, 0, 0);
    huge[2] = 200; // a length beyond max_length
    let got = through_pty(
        &cfg,
        &[
            &node_frame(1, -55, 873),
            b"AT+OK\r\n",
            &corrupt,
            &huge,
            &node_frame(4, 215, 402)[..5],
            &node_frame(4, 215, 402)[5..],
        ],
        4,
    )
    .await;
    let got = values(&got);
    let want = [
        ("temperature", -5.5),
        ("humidity", 87.3),
        ("temperature", 21.5),
        ("humidity", 40.2),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((q, v), (wq, wv)) in got.iter().zip(want) {
        assert_eq!(q, wq);
        assert!((v - wv).abs() < 1e-9, "{got:?}");
    }
}

#[test]
fn frame_config_errors() {
    let text = "site: s\ngateway: g\ndevices:\n  a:\n    serial:\n      port: /dev/ttyUSB0\n      protocol: frame\n      header: \"AA GG\"\n      length: 4\n      checksum: sum8\n      fields:\n        x: { offset: 2, type: u16 }\n  b:\n    serial:\n      port: /dev/ttyUSB1\n      protocol: a02yyuw\n      mount_height_m: 1.0\n      tank_height_m: 1.5\n";
    super::support::assert_config_errors(
        text,
        &[
        "site.yaml:8:15: devices.a.serial.header: expected hex bytes like \"AA 55\"",
        "site.yaml:12:22: devices.a.serial.fields.x.offset: a 2-byte field at 2 ends past the frame's data (bytes 0..3)",
        "site.yaml:18:22: devices.b.serial.tank_height_m: must be at most mount_height_m (1), got 1.5",
        ],
    );
}
