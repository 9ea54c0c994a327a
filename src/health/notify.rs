//! sd_notify(3) messages to systemd. Without `NOTIFY_SOCKET` (not under systemd) they do nothing.

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Startup finished: listeners bound, outbox open.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// systemd 253 and newer want the reload's start time along with RELOADING=1.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), if enabled for us.
pub fn watchdog_interval() -> Option<std::time::Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}
