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
}
