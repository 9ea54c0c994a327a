//! Simulated sensors for demos and tests: a daily temperature sine and a tank that fills and drains.

mod config;

pub(crate) use config::decode;
pub use config::{Signal, SimConfig};

use std::f64::consts::TAU;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::reading::{Quality, Reading};

/// The noiseless signal at `t` seconds since the Unix epoch. `phase` (0..1) shifts each device so
/// that two simulated tanks do not move in lockstep.
pub fn clean_value(signal: &Signal, t: f64, phase: f64) -> f64 {
    match *signal {
        Signal::Temperature {
            mean,
            amplitude,
            period,
            ..
        } => {
            let p = period.as_secs_f64().max(1e-3);
            mean + amplitude * (TAU * (t / p + phase)).sin()
        }
        Signal::Level {
            min,
            max,
            fill_time,
            drain_time,
            ..
        } => {
            let fill = fill_time.as_secs_f64().max(1e-3);
            let drain = drain_time.as_secs_f64().max(1e-3);
            let cycle = fill + drain;
            let x = (t + phase * cycle).rem_euclid(cycle);
            if x < fill {
                min + (max - min) * x / fill
            } else {
                max - (max - min) * (x - fill) / drain
            }
        }
    }
}

fn noise_amplitude(signal: &Signal) -> f64 {
    match *signal {
        Signal::Temperature { noise, .. } | Signal::Level { noise, .. } => noise,
    }
}

/// Roughly normal noise with standard deviation `sd` (Irwin-Hall: sum of 12 uniforms).
fn gaussian(rng: &mut fastrand::Rng, sd: f64) -> f64 {
    if sd == 0.0 {
        return 0.0;
    }
    let s: f64 = (0..12).map(|_| rng.f64()).sum();
    (s - 6.0) * sd
}

/// Stable per-device phase in 0..1, from the device id.
fn phase_of(device: &str) -> f64 {
    let h = device.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (h % 10_000) as f64 / 10_000.0
}

/// The value a simulated device reports at `ts`, noise included, at a sensor-like resolution.
pub fn sample(signal: &Signal, device: &str, ts: SystemTime, rng: &mut fastrand::Rng) -> f64 {
    let t = ts
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let v = clean_value(signal, t, phase_of(device)) + gaussian(rng, noise_amplitude(signal));
    let v = match signal {
        Signal::Level { .. } => v.clamp(0.0, 100.0),
        Signal::Temperature { .. } => v,
    };
    (v * 100.0).round() / 100.0
}

/// Produces readings every `interval` until `shutdown`, or until the pipeline is gone.
pub async fn run(
    device: String,
    cfg: SimConfig,
    tx: mpsc::Sender<Reading>,
    shutdown: CancellationToken,
) {
    let (quantity, unit) = cfg.quantities()[0];
    let mut rng = fastrand::Rng::new();
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tracing::debug!(device = %device, "simulated {quantity} sensor every {:?}", cfg.interval);
    let beat = crate::health::Registry::global().register(
        &format!("adapter:{device}"),
        crate::health::adapter_max_silence(cfg.interval),
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        beat.beat().await;
        let ts = SystemTime::now();
        let reading = Reading {
            device: device.clone(),
            quantity: quantity.to_string(),
            value: sample(&cfg.signal, &device, ts, &mut rng),
            unit: Some(unit),
            ts,
            quality: Quality::Good,
        };
        if tx.send(reading).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn level() -> Signal {
        Signal::Level {
            min: 10.0,
            max: 90.0,
            fill_time: Duration::from_secs(100),
            drain_time: Duration::from_secs(300),
            noise: 0.0,
        }
    }

    #[test]
    fn temperature_is_a_sine_around_the_mean() {
        let s = Signal::Temperature {
            mean: 4.0,
            amplitude: 2.0,
            noise: 0.0,
            period: Duration::from_secs(86_400),
        };
        assert!((clean_value(&s, 0.0, 0.0) - 4.0).abs() < 1e-9);
        assert!((clean_value(&s, 21_600.0, 0.0) - 6.0).abs() < 1e-9);
        assert!((clean_value(&s, 64_800.0, 0.0) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn level_fills_then_drains() {
        let s = level();
        assert!((clean_value(&s, 0.0, 0.0) - 10.0).abs() < 1e-9);
        assert!((clean_value(&s, 50.0, 0.0) - 50.0).abs() < 1e-9);
        assert!((clean_value(&s, 100.0, 0.0) - 90.0).abs() < 1e-9);
        assert!((clean_value(&s, 250.0, 0.0) - 50.0).abs() < 1e-9);
        assert!((clean_value(&s, 400.0, 0.0) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn noisy_level_stays_within_a_tank() {
        let s = Signal::Level {
            min: 0.0,
            max: 100.0,
            fill_time: Duration::from_secs(10),
            drain_time: Duration::from_secs(10),
            noise: 5.0,
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 0..2_000 {
            let v = sample(
                &s,
                "t",
                UNIX_EPOCH + Duration::from_millis(i * 37),
                &mut rng,
            );
            assert!((0.0..=100.0).contains(&v), "{v}");
        }
    }

    #[tokio::test]
    async fn run_emits_readings_at_the_interval_and_stops_on_shutdown() {
        let cfg = SimConfig {
            interval: Duration::from_millis(20),
            signal: level(),
        };
        let (tx, mut rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run("tank-1".into(), cfg, tx, stop.clone()));
        for _ in 0..3 {
            let r = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (r.device.as_str(), r.quantity.as_str()),
                ("tank-1", "level")
            );
            assert_eq!(r.unit, Some("%"));
            assert!((0.0..=100.0).contains(&r.value));
        }
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
    }
}
