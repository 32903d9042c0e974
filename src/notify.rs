//! sd_notify(3) through the `sd-notify` crate: READY, STATUS, STOPPING and
//! WATCHDOG. Every call is a no-op when `NOTIFY_SOCKET` is not set, and a
//! failure to notify is logged once, never fatal.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

static WARNED: AtomicBool = AtomicBool::new(false);

fn send(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            crate::warn!(
                "cannot notify the service manager: {}",
                crate::diag::describe(&e)
            );
        }
    }
}

/// Every listener accepts: the service is up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The drain has begun.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to send WATCHDOG=1: half of `WATCHDOG_USEC`, when it is set
/// (and `WATCHDOG_PID`, if set, is this process).
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}
