//! The collection clock: a kernel timer (`timerfd`) polled by the runtime.
//!
//! tokio's timer wheel wakes a sleeping runtime at its slot boundaries and then again
//! at the deadline: a 15 s interval costs three wake-ups per collection, each a context
//! switch, which was a third of the agent's CPU time. A `timerfd` makes the kernel wake
//! the agent exactly once, at the deadline. Where `timerfd` is missing, tokio's
//! interval is used.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
use tokio::io::unix::AsyncFd;

/// Ticks every `interval` after a first tick at `first`; a tick that is late is not
/// made up for (tokio's `MissedTickBehavior::Delay`, which a timerfd does by itself).
pub enum Ticker {
    Kernel(AsyncFd<OwnedFd>),
    Tokio(tokio::time::Interval),
}

fn timespec(d: Duration) -> Timespec {
    Timespec { tv_sec: d.as_secs().try_into().unwrap_or(i64::MAX), tv_nsec: d.subsec_nanos().into() }
}

impl Ticker {
    pub fn new(first: Duration, interval: Duration) -> Ticker {
        match Self::kernel(first, interval) {
            Ok(fd) => Ticker::Kernel(fd),
            Err(e) => {
                tracing::debug!(error = %e, "No timerfd; collecting on the runtime's timer.");
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + first, interval);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Ticker::Tokio(t)
            }
        }
    }

    fn kernel(first: Duration, interval: Duration) -> std::io::Result<AsyncFd<OwnedFd>> {
        let fd =
            rustix::time::timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)?;
        // A zero `it_value` would disarm the timer.
        let first = first.max(Duration::from_nanos(1));
        let spec = Itimerspec { it_interval: timespec(interval), it_value: timespec(first) };
        rustix::time::timerfd_settime(&fd, TimerfdTimerFlags::empty(), &spec)?;
        // Deprecated because a caller could close the descriptor while it is registered;
        // here the `AsyncFd` owns it (`OwnedFd`), so nothing else can. The replacement
        // is `unsafe`, which this workspace does not allow.
        #[allow(deprecated)]
        AsyncFd::new(fd)
    }

    /// Waits for the next tick.
    pub async fn tick(&mut self) {
        match self {
            Ticker::Tokio(t) => {
                t.tick().await;
            }
            Ticker::Kernel(fd) => loop {
                let Ok(mut guard) = fd.readable().await else {
                    // The reactor is gone (shutdown): do not spin.
                    std::future::pending::<()>().await;
                    return;
                };
                // The count of expirations is not needed, only that there was one.
                let mut count = [0u8; 8];
                match guard.try_io(|f| rustix::io::read(f.get_ref(), &mut count).map_err(std::io::Error::from)) {
                    Ok(Ok(_)) => return,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => guard.clear_ready(),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "Reading the collection timer failed.");
                        return;
                    }
                    Err(_would_block) => {}
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_first_after_the_delay_then_every_interval() {
        let start = tokio::time::Instant::now();
        let mut t = Ticker::new(Duration::from_millis(50), Duration::from_millis(100));
        assert!(matches!(t, Ticker::Kernel(_)), "Linux has timerfd");
        t.tick().await;
        let first = start.elapsed();
        t.tick().await;
        t.tick().await;
        let third = start.elapsed();
        assert!(first >= Duration::from_millis(50) && first < Duration::from_millis(95), "{first:?}");
        assert!(third >= Duration::from_millis(250) && third < Duration::from_millis(400), "{third:?}");
    }
}
