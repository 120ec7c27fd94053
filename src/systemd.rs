//! systemd integration: `READY=1`, `STOPPING=1` and watchdog keep-alives over `$NOTIFY_SOCKET`
//! (the sd_notify protocol: one datagram per message), a no-op when not run by systemd.
use std::time::Duration;

/// Sends one sd_notify message; returns whether a socket was there to send it to.
pub fn notify(message: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    send(&path, message).is_ok()
}

#[cfg(target_os = "linux")]
fn send(path: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = path.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        // A leading `@` names a socket in the abstract namespace.
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(std::path::Path::new(path))?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send(_path: &std::ffi::OsStr, _message: &str) -> std::io::Result<()> {
    Ok(())
}

/// Decides each watchdog keep-alive. The keep-alive says "the pipeline works", not "the
/// process runs": it is sent while the daemon waits between polls, and during a poll only
/// while work moves (requests to storage or the engine, chunks handed to delivery). A poll
/// that moves nothing for the whole watchdog window is wedged (a deadlock, a hung flush), and
/// withholding the keep-alive lets systemd restart the daemon, which resumes from its
/// committed offsets. An engine outage is not wedged: retries are requests too.
#[derive(Debug)]
pub struct KeepAlive {
    window: Duration,
    last_mark: Option<u64>,
    last_change: std::time::Instant,
}

impl KeepAlive {
    /// `window`: the watchdog timeout (`WATCHDOG_USEC`).
    pub fn new(window: Duration, now: std::time::Instant) -> KeepAlive {
        KeepAlive {
            window,
            last_mark: None,
            last_change: now,
        }
    }

    /// `mark` grows with any work done; `idle` is true between polls. Returns `Ok(())` when a
    /// keep-alive is due, else `Err(how long nothing moved)`.
    pub fn check(
        &mut self,
        now: std::time::Instant,
        mark: u64,
        idle: bool,
    ) -> Result<(), Duration> {
        if idle || self.last_mark != Some(mark) {
            self.last_mark = Some(mark);
            self.last_change = now;
        }
        let stalled = now.saturating_duration_since(self.last_change);
        if stalled <= self.window {
            Ok(())
        } else {
            Err(stalled)
        }
    }
}

/// The watchdog timeout systemd set (`WATCHDOG_USEC`), when it is on for this process.
pub fn watchdog_timeout() -> Option<Duration> {
    watchdog_period().map(|period| period * 2)
}

/// Shortest keep-alive period: `WATCHDOG_USEC=1` would otherwise give a zero period, on which
/// tokio's `interval` panics. A watchdog this tight cannot be honoured anyway; systemd then
/// restarts the service, which is what it was configured to do.
pub const MIN_WATCHDOG_PERIOD: Duration = Duration::from_millis(1);

/// The keep-alive period systemd asks for (half of `WatchdogSec=`, at least
/// [`MIN_WATCHDOG_PERIOD`]), when the watchdog is on for this process.
pub fn watchdog_period() -> Option<Duration> {
    watchdog_period_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_period`] from the values of `WATCHDOG_USEC` and `WATCHDOG_PID`.
fn watchdog_period_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.parse().ok()?;
    if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok())
        && pid != own_pid
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(MIN_WATCHDOG_PERIOD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_period_is_half_of_watchdog_usec_and_never_zero() {
        let own = std::process::id();
        assert_eq!(
            watchdog_period_from(Some("20000000"), None, own),
            Some(Duration::from_secs(10))
        );
        for tiny in ["1", "2", "1999"] {
            assert_eq!(
                watchdog_period_from(Some(tiny), None, own),
                Some(MIN_WATCHDOG_PERIOD),
                "{tiny}"
            );
        }
        assert_eq!(watchdog_period_from(Some("0"), None, own), None);
        assert_eq!(watchdog_period_from(Some("x"), None, own), None);
        let other = (own + 1).to_string();
        assert_eq!(
            watchdog_period_from(Some("1000000"), Some(&other), own),
            None
        );
        assert_eq!(
            watchdog_period_from(Some("1000000"), Some(&own.to_string()), own),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn sends_datagrams_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_poll_that_moves_nothing_for_the_watchdog_window_gets_no_keep_alive() {
        let start = std::time::Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut keep_alive = KeepAlive::new(Duration::from_secs(120), start);
        // Idle between polls: always alive, however long the interval.
        assert_eq!(keep_alive.check(at(0), 5, true), Ok(()));
        assert_eq!(keep_alive.check(at(600), 5, true), Ok(()));
        // A poll with requests going out (an engine outage being retried): alive.
        assert_eq!(keep_alive.check(at(660), 6, false), Ok(()));
        assert_eq!(keep_alive.check(at(720), 7, false), Ok(()));
        // Then nothing moves: alive until the window is over, then withheld.
        assert_eq!(keep_alive.check(at(800), 7, false), Ok(()));
        assert_eq!(
            keep_alive.check(at(841), 7, false),
            Err(Duration::from_secs(121))
        );
        // Work moves again: keep-alives resume.
        assert_eq!(keep_alive.check(at(850), 8, false), Ok(()));
    }
}
