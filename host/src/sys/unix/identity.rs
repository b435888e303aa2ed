//! What Unix tells of a process: whether it lives, when it started, the
//! host's name and PID namespace.

#[cfg(target_os = "linux")]
use std::sync::OnceLock;

use crate::sys::StartToken;

/// Whether a process with this pid exists (EPERM counts as alive).
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(target_os = "linux")]
fn boot_id() -> u128 {
    static BOOT: OnceLock<u128> = OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| u128::from_str_radix(&s.trim().replace('-', ""), 16).ok())
            .unwrap_or(0)
    })
}

/// Start times are only comparable when this process sees the host's boot clock.
#[cfg(target_os = "linux")]
fn starttime_unshifted() -> bool {
    const INITIAL_TIME_NAMESPACE: u64 = 0xEFFF_FFFA;
    use std::os::unix::fs::MetadataExt;
    let ns = match std::fs::metadata("/proc/self/ns/time") {
        Ok(m) => m.ino(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
        Err(_) => return false,
    };
    if ns == INITIAL_TIME_NAMESPACE {
        return true;
    }
    match (
        std::fs::metadata("/proc/self/ns/time_for_children"),
        std::fs::read_to_string("/proc/self/timens_offsets"),
    ) {
        (Ok(children), Ok(offsets)) if children.ino() == ns => offsets.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f == ["boottime", "0", "0"] || f == ["7", "0", "0"]
        }),
        _ => false,
    }
}

/// The start token of a process, or `None` when it cannot be known.
#[cfg(target_os = "linux")]
pub(crate) fn process_start_token(pid: u32) -> Option<StartToken> {
    if !starttime_unshifted() {
        return None;
    }
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // Field 22 of stat; index 19 after the command name.
    let start: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some(StartToken {
        high: boot_id(),
        low: start,
    })
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn process_start_token(_pid: u32) -> Option<StartToken> {
    None
}

pub(in crate::sys) fn raw_hostname() -> Vec<u8> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Vec::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf[..end].to_vec()
}

#[cfg(target_os = "linux")]
pub(in crate::sys) fn pid_namespace() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    const INITIAL_PID_NAMESPACE: u64 = 0xEFFF_FFFC;
    let ino = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
    (ino != INITIAL_PID_NAMESPACE).then_some(ino)
}

#[cfg(not(target_os = "linux"))]
pub(in crate::sys) fn pid_namespace() -> Option<u64> {
    None
}
