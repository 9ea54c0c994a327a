//! I2C drivers against register traces built from their datasheets (embedded-hal-mock: this
//! kernel has no I2C), 1-Wire against a fake sysfs tree, and the bus worker end to end.

#[path = "support/mod.rs"]
mod support;

#[path = "i2c/levels_onewire.rs"]
mod levels_onewire;

#[path = "i2c/pipeline.rs"]
mod pipeline;

use edgegate::adapters::i2c::{
    ads1115, bme280, crc8, mcp9808, sht3x, sht4x, tmp102, vl53l0x, Error, Value,
};
use edgegate::reading::Quality;
use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};

pub const NACK: ErrorKind = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);

/// Runs `f` against a bus that expects exactly `trace`, and checks all of it was used.
pub fn on_bus<R>(trace: &[T], f: impl FnOnce(&mut Mock, &mut NoopDelay) -> R) -> R {
    let mut bus = Mock::new(trace);
    let r = f(&mut bus, &mut NoopDelay::new());
    bus.done();
    r
}

pub fn value(values: &[Value], quantity: &str) -> f64 {
    values
        .iter()
        .find(|v| v.quantity == quantity)
        .unwrap_or_else(|| panic!("no {quantity} in {values:?}"))
        .value
}

pub fn close(got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol, "got {got}, want {want} +- {tol}");
}

fn nacked(e: &Error) -> bool {
    matches!(e, Error::I2c { kind, .. } if *kind == NACK)
}

// ---- TMP102 ----

const TMP: u8 = 0x48;

fn tmp102_reads(raw: u16) -> f64 {
    let trace = [
        T::write(TMP, vec![0x01, 0x60, 0xA0]),
        T::write_read(TMP, vec![0x00], raw.to_be_bytes().to_vec()),
    ];
    on_bus(&trace, |bus, _| {
        let mut t = tmp102::Tmp102::new(TMP);
        t.init(bus).unwrap();
        value(&t.measure(bus).unwrap(), "temperature")
    })
}

#[test]
fn tmp102_init_and_measure_at_datasheet_values() {
    assert_eq!(tmp102_reads(0x1900), 25.0);
    assert_eq!(tmp102_reads(0xE700), -25.0);
    // The datasheet's limits: -55 and the largest 12-bit count (127.9375).
    assert_eq!(tmp102_reads(0xC900), -55.0);
    assert_eq!(tmp102_reads(0x7FF0), 127.9375);
    assert_eq!(tmp102_reads(0xFFF0), -0.0625);
    // Extended mode (EM bit set): 13 bits, 150 degC = 0x4B01.
    assert_eq!(tmp102_reads(0x4B01), 150.0);
}

#[test]
fn tmp102_nack_is_an_error_with_the_likely_cause() {
    let trace = [T::write(TMP, vec![0x01, 0x60, 0xA0]).with_error(NACK)];
    let e = on_bus(&trace, |bus, _| {
        tmp102::Tmp102::new(TMP).init(bus).unwrap_err()
    });
    assert!(nacked(&e), "{e:?}");
    assert!(e.hint().contains("wrong address"), "{}", e.hint());
}

// ---- MCP9808 ----

const MCP: u8 = 0x18;

fn mcp9808_init() -> Vec<T> {
    vec![
        T::write_read(MCP, vec![0x06], vec![0x00, 0x54]),
        T::write_read(MCP, vec![0x07], vec![0x04, 0x00]),
        T::write(MCP, vec![0x01, 0x00, 0x00]),
    ]
}

#[test]
fn mcp9808_checks_ids_and_converts_with_alert_flags_masked() {
    let mut trace = mcp9808_init();
    for raw in [0xC1A0u16, 0x1F60, 0x0FFF, 0x1D80] {
        trace.push(T::write_read(MCP, vec![0x05], raw.to_be_bytes().to_vec()));
    }
    let got = on_bus(&trace, |bus, _| {
        let mut c = mcp9808::Mcp9808::new(MCP);
        c.init(bus).unwrap();
        (0..4)
            .map(|_| value(&c.measure(bus).unwrap(), "temperature"))
            .collect::<Vec<_>>()
    });
    // 26.0 with flags set, -10.0, full scale +255.9375, -40.0.
    assert_eq!(got, [26.0, -10.0, 255.9375, -40.0]);
}

#[test]
fn mcp9808_wrong_manufacturer_and_nack() {
    let trace = [T::write_read(MCP, vec![0x06], vec![0x00, 0x41])];
    let e = on_bus(&trace, |bus, _| {
        mcp9808::Mcp9808::new(MCP).init(bus).unwrap_err()
    });
    assert!(
        matches!(
            e,
            Error::WrongChip {
                register: 0x06,
                got: 0x41,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("MCP9808"), "{e}");

    let mut trace = mcp9808_init();
    trace.push(T::write_read(MCP, vec![0x05], vec![0, 0]).with_error(NACK));
    let e = on_bus(&trace, |bus, _| {
        let mut c = mcp9808::Mcp9808::new(MCP);
        c.init(bus).unwrap();
        c.measure(bus).unwrap_err()
    });
    assert!(nacked(&e), "{e:?}");
}

// ---- SHT3x / SHT4x (CRC-8 0x31, init 0xFF) ----

#[test]
fn sensirion_crc_matches_the_datasheet_check_value() {
    assert_eq!(crc8(&[0xBE, 0xEF]), 0x92);
}

const SHT: u8 = 0x44;

fn sht3x_measure(bytes: [u8; 6]) -> Result<Vec<Value>, Error> {
    let trace = [
        T::write(SHT, vec![0x30, 0xA2]),
        T::write(SHT, vec![0x24, 0x00]),
        T::read(SHT, bytes.to_vec()),
    ];
    on_bus(&trace, |bus, delay| {
        let mut s = sht3x::Sht3x::new(SHT);
        s.init(bus, delay).unwrap();
        s.measure(bus, delay)
    })
}

#[test]
fn sht3x_single_shot_with_crc_checked_words() {
    let v = sht3x_measure([0x66, 0x66, 0x93, 0x80, 0x00, 0xA2]).unwrap();
    close(value(&v, "temperature"), 25.0, 1e-9);
    close(value(&v, "humidity"), 50.000763, 1e-6);
    // Both ends of the scale: -45 degC / 0 %, 130 degC / 100 %.
    let v = sht3x_measure([0x00, 0x00, 0x81, 0x00, 0x00, 0x81]).unwrap();
    assert_eq!(
        (value(&v, "temperature"), value(&v, "humidity")),
        (-45.0, 0.0)
    );
    let v = sht3x_measure([0xFF, 0xFF, 0xAC, 0xFF, 0xFF, 0xAC]).unwrap();
    assert_eq!(
        (value(&v, "temperature"), value(&v, "humidity")),
        (130.0, 100.0)
    );
}

#[test]
fn sht3x_crc_failure_and_nack_are_errors_not_readings() {
    let e = sht3x_measure([0x66, 0x66, 0x94, 0x80, 0x00, 0xA2]).unwrap_err();
    assert_eq!(
        e,
        Error::Crc {
            what: "temperature",
            got: 0x94,
            computed: 0x93
        }
    );
    let e = sht3x_measure([0x66, 0x66, 0x93, 0x80, 0x01, 0xA2]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Crc {
                what: "humidity",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.hint().contains("noise"), "{}", e.hint());

    let trace = [T::write(SHT, vec![0x30, 0xA2]).with_error(NACK)];
    let e = on_bus(&trace, |bus, d| {
        sht3x::Sht3x::new(SHT).init(bus, d).unwrap_err()
    });
    assert!(nacked(&e), "{e:?}");
}

fn sht4x_trace(measurement: [u8; 6]) -> Vec<T> {
    vec![
        T::write(SHT, vec![0x94]),
        T::write(SHT, vec![0x89]),
        T::read(SHT, vec![0x12, 0x34, 0x37, 0x56, 0x78, 0x7D]),
        T::write(SHT, vec![0xFD]),
        T::read(SHT, measurement.to_vec()),
    ]
}

fn sht4x_measure(bytes: [u8; 6]) -> Result<Vec<Value>, Error> {
    on_bus(&sht4x_trace(bytes), |bus, delay| {
        let mut s = sht4x::Sht4x::new(SHT);
        s.init(bus, delay).unwrap();
        assert_eq!(s.serial, Some(0x1234_5678));
        s.measure(bus, delay)
    })
}

#[test]
fn sht4x_reads_serial_then_measures_with_clamped_humidity() {
    let v = sht4x_measure([0x66, 0x66, 0x93, 0x80, 0x00, 0xA2]).unwrap();
    close(value(&v, "temperature"), 25.0, 1e-9);
    close(value(&v, "humidity"), 56.500954, 1e-6);
    // RH formula gives -6 % and 119 % at the ends; the datasheet says clamp.
    let v = sht4x_measure([0x00, 0x00, 0x81, 0x00, 0x00, 0x81]).unwrap();
    assert_eq!(
        (value(&v, "temperature"), value(&v, "humidity")),
        (-45.0, 0.0)
    );
    let v = sht4x_measure([0xFF, 0xFF, 0xAC, 0xFF, 0xFF, 0xAC]).unwrap();
    assert_eq!(
        (value(&v, "temperature"), value(&v, "humidity")),
        (130.0, 100.0)
    );
}

#[test]
fn sht4x_crc_failure_and_nack() {
    let e = sht4x_measure([0x66, 0x66, 0x93, 0x80, 0x00, 0x00]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Crc {
                what: "humidity",
                got: 0x00,
                computed: 0xA2
            }
        ),
        "{e:?}"
    );
    // A bad serial-number CRC fails the setup.
    let trace = [
        T::write(SHT, vec![0x94]),
        T::write(SHT, vec![0x89]),
        T::read(SHT, vec![0x12, 0x34, 0x38, 0x56, 0x78, 0x7D]),
    ];
    let e = on_bus(&trace, |bus, d| {
        sht4x::Sht4x::new(SHT).init(bus, d).unwrap_err()
    });
    assert!(
        matches!(
            e,
            Error::Crc {
                what: "serial number",
                ..
            }
        ),
        "{e:?}"
    );
    let trace = [T::write(SHT, vec![0x94]).with_error(NACK)];
    let e = on_bus(&trace, |bus, d| {
        sht4x::Sht4x::new(SHT).init(bus, d).unwrap_err()
    });
    assert!(nacked(&e), "{e:?}");
}

// ---- BME280 ----

const BME: u8 = 0x76;

/// 0x88..0xA1: dig_T1..T3 and dig_P1..P9 from the datasheet's worked example, dig_H1 = 75.
const CALIB_TP: &str = "706b436718fc7d8e43d6d00b270b8c00f9ff8c3cf8c67017004b";
/// 0xE1..0xE7: dig_H2 = 362, H3 = 0, H4 = 313, H5 = 50, H6 = 30 (a production part's values).
const CALIB_H: [u8; 7] = [0x6A, 0x01, 0x00, 0x13, 0x29, 0x03, 0x1E];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn bme280_init() -> Vec<T> {
    vec![
        T::write_read(BME, vec![0xD0], vec![0x60]),
        T::write(BME, vec![0xE0, 0xB6]),
        T::write_read(BME, vec![0x88], hex(CALIB_TP)),
        T::write_read(BME, vec![0xE1], CALIB_H.to_vec()),
        T::write(BME, vec![0xF2, 0x01]),
        T::write(BME, vec![0xF5, 0x00]),
        T::write(BME, vec![0xF4, 0x24]),
    ]
}

fn bme280_measure(data: [u8; 8]) -> Result<Vec<Value>, Error> {
    let mut trace = bme280_init();
    trace.push(T::write(BME, vec![0xF4, 0x25]));
    trace.push(T::write_read(BME, vec![0xF7], data.to_vec()));
    on_bus(&trace, |bus, delay| {
        let mut b = bme280::Bme280::new(BME);
        b.init(bus, delay).unwrap();
        b.measure(bus, delay)
    })
}

#[test]
fn bme280_datasheet_example_through_init_and_forced_measurement() {
    // adc_P = 415148 (0x655AC), adc_T = 519888 (0x7EED0), adc_H = 30000.
    let v = bme280_measure([0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x75, 0x30]).unwrap();
    close(value(&v, "temperature"), 25.08, 0.005);
    close(value(&v, "pressure"), 1006.5326, 0.0001); // 100653.26 Pa
                                                     // The datasheet's double-precision formula, evaluated independently: 55.0007 %.
    close(value(&v, "humidity"), 55.0007, 0.0001);
}

#[test]
fn bme280_negative_temperature_and_skipped_conversion() {
    // adc_T = 400000 -> -12.6436 degC (t_fine -64735).
    let v = bme280_measure([0x65, 0x5A, 0xC0, 0x61, 0xA8, 0x00, 0x75, 0x30]).unwrap();
    close(value(&v, "temperature"), -12.6436, 0.0001);
    // Humidity saturates rather than leaving 0..100.
    let v = bme280_measure([0x65, 0x5A, 0xC0, 0x61, 0xA8, 0x00, 0xFF, 0xFF]).unwrap();
    assert_eq!(value(&v, "humidity"), 100.0);
    // 0x80000 in the data registers: nothing was converted.
    let e = bme280_measure([0x80, 0x00, 0x00, 0x80, 0x00, 0x00, 0x80, 0x00]).unwrap_err();
    assert!(matches!(e, Error::Fault(_)), "{e:?}");
}

#[test]
fn bme280_rejects_a_bmp280_and_reports_nack() {
    let trace = [T::write_read(BME, vec![0xD0], vec![0x58])];
    let e = on_bus(&trace, |bus, d| {
        bme280::Bme280::new(BME).init(bus, d).unwrap_err()
    });
    assert!(e.to_string().contains("BMP280"), "{e}");
    let trace = [T::write_read(BME, vec![0xD0], vec![0]).with_error(NACK)];
    let e = on_bus(&trace, |bus, d| {
        bme280::Bme280::new(BME).init(bus, d).unwrap_err()
    });
    assert!(nacked(&e), "{e:?}");
}

// ---- ADS1115 + 4-20 mA ----

const ADS: u8 = 0x48;

pub fn loop_150_ohm() -> ads1115::LoopConfig {
    ads1115::LoopConfig {
        channel: 0,
        fsr: 4.096,
        shunt_ohms: 150.0,
        span_m: 4.0,
        sensor_offset_m: 0.0,
        tank_height_m: 4.0,
    }
}

/// Init, one conversion that is still busy at the first poll, then `raw`.
fn ads1115_measure(raw: i16) -> Result<Vec<Value>, Error> {
    let trace = [
        T::write_read(ADS, vec![0x01], vec![0x85, 0x83]),
        // OS=1 start, AIN0/GND, +-4.096 V, single shot, 128 SPS, comparator off.
        T::write(ADS, vec![0x01, 0xC3, 0x83]),
        T::write_read(ADS, vec![0x01], vec![0x43, 0x83]),
        T::write_read(ADS, vec![0x01], vec![0xC3, 0x83]),
        T::write_read(ADS, vec![0x00], raw.to_be_bytes().to_vec()),
    ];
    on_bus(&trace, |bus, delay| {
        let mut a = ads1115::Ads1115::new(ADS, loop_150_ohm());
        a.init(bus).unwrap();
        a.measure(bus, delay)
    })
}

#[test]
fn ads1115_single_shot_to_current_and_level() {
    // 125 uV/LSB; 150 ohm: 4 mA = 0.6 V = 4800, 12 mA = 14400, 20 mA = 24000.
    for (raw, ma, level) in [(4800, 4.0, 0.0), (14400, 12.0, 50.0), (24000, 20.0, 100.0)] {
        let v = ads1115_measure(raw).unwrap();
        close(value(&v, "current"), ma, 1e-9);
        close(value(&v, "level"), level, 1e-9);
        assert_eq!(v[0].quality, Quality::Good);
    }
    // 20.5 mA: still a reading, but above the tank's 100 %.
    let v = ads1115_measure(24600).unwrap();
    close(value(&v, "level"), 103.125, 1e-9);
    assert_eq!(v[0].quality, Quality::OutOfRange);
}

#[test]
fn ads1115_fault_currents_and_full_scale_are_not_readings() {
    // 3.5 mA: below NAMUR's 3.6 mA, a broken loop.
    let e = ads1115_measure(4200).unwrap_err();
    assert!(e.to_string().contains("wiring fault"), "{e}");
    // A negative conversion (input pulled below ground) is a fault, too.
    assert!(ads1115_measure(-16).is_err());
    // Full scale: 4.096 V across 150 ohm = 27.3 mA, beyond 21 mA.
    let e = ads1115_measure(i16::MAX).unwrap_err();
    assert!(e.to_string().contains("above 21 mA"), "{e}");
}

#[test]
fn ads1115_config_word_and_nack() {
    let mut c = loop_150_ohm();
    assert_eq!(c.config_word(), 0xC383);
    c.channel = 2;
    c.fsr = 6.144;
    assert_eq!(c.config_word(), 0xE183);
    let trace = [T::write_read(ADS, vec![0x01], vec![0, 0]).with_error(NACK)];
    let e = on_bus(&trace, |bus, _| {
        ads1115::Ads1115::new(ADS, loop_150_ohm())
            .init(bus)
            .unwrap_err()
    });
    assert!(nacked(&e), "{e:?}");
}

// ---- VL53L0X ----

const TOF: u8 = 0x29;
const STOP: u8 = 0x3C;

pub fn tank_1m() -> vl53l0x::MountConfig {
    vl53l0x::MountConfig {
        mount_height_m: 1.2,
        tank_height_m: 1.0,
    }
}

fn vl53l0x_trace(range: [u8; 2]) -> Vec<T> {
    let w = |b: &[u8]| T::write(TOF, b.to_vec());
    vec![
        T::write_read(TOF, vec![0xC0], vec![0xEE]),
        w(&[0x88, 0x00]),
        w(&[0x80, 0x01]),
        w(&[0xFF, 0x01]),
        w(&[0x00, 0x00]),
        T::write_read(TOF, vec![0x91], vec![STOP]),
        w(&[0x00, 0x01]),
        w(&[0xFF, 0x00]),
        w(&[0x80, 0x00]),
        // Single-shot ranging.
        w(&[0x80, 0x01]),
        w(&[0xFF, 0x01]),
        w(&[0x00, 0x00]),
        w(&[0x91, STOP]),
        w(&[0x00, 0x01]),
        w(&[0xFF, 0x00]),
        w(&[0x80, 0x00]),
        w(&[0x00, 0x01]),
        T::write_read(TOF, vec![0x00], vec![0x00]),
        T::write_read(TOF, vec![0x13], vec![0x00]),
        T::write_read(TOF, vec![0x13], vec![0x04]),
        T::write_read(TOF, vec![0x1E], range.to_vec()),
        w(&[0x0B, 0x01]),
    ]
}

fn vl53l0x_measure(mm: u16) -> Result<Vec<Value>, Error> {
    on_bus(&vl53l0x_trace(mm.to_be_bytes()), |bus, delay| {
        let mut t = vl53l0x::Vl53l0x::new(TOF, tank_1m());
        t.init(bus).unwrap();
        t.measure(bus, delay)
    })
}

#[test]
fn vl53l0x_ranges_and_converts_distance_to_level() {
    // Mounted 1.2 m above the bottom, 1.0 m is full.
    for (mm, level) in [(1200, 0.0), (700, 50.0), (200, 100.0)] {
        let v = vl53l0x_measure(mm).unwrap();
        assert_eq!(value(&v, "distance"), f64::from(mm));
        close(value(&v, "level"), level, 1e-9);
        assert_eq!(v[0].quality, Quality::Good);
    }
    let v = vl53l0x_measure(100).unwrap();
    close(value(&v, "level"), 110.0, 1e-9);
    assert_eq!(v[0].quality, Quality::OutOfRange);
    let v = vl53l0x_measure(1300).unwrap();
    close(value(&v, "level"), -10.0, 1e-9);
    assert_eq!(v[0].quality, Quality::OutOfRange);
}

#[test]
fn vl53l0x_no_target_wrong_model_and_nack() {
    let e = vl53l0x_measure(8190).unwrap_err();
    assert!(e.to_string().contains("no surface in range"), "{e}");
    let trace = [T::write_read(TOF, vec![0xC0], vec![0xAA])];
    let e = on_bus(&trace, |bus, _| {
        vl53l0x::Vl53l0x::new(TOF, tank_1m()).init(bus).unwrap_err()
    });
    assert!(e.to_string().contains("VL53L0X"), "{e}");
    let trace = [T::write_read(TOF, vec![0xC0], vec![0]).with_error(NACK)];
    let e = on_bus(&trace, |bus, _| {
        vl53l0x::Vl53l0x::new(TOF, tank_1m()).init(bus).unwrap_err()
    });
    assert!(nacked(&e), "{e:?}");
}
