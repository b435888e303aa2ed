//! What Windows tells of a process: whether it lives, when it was created,
//! the host's name.

use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_ACCESS_DENIED, FILETIME, GetLastError, HANDLE, STILL_ACTIVE,
};
use windows_sys::Win32::System::SystemInformation::{
    ComputerNamePhysicalDnsHostname, GetComputerNameExW,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, GetProcessTimes, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
};

use crate::sys::StartToken;

/// A process handle, closed when dropped.
struct Process(HANDLE);

impl Process {
    /// `Err` with the error code when the process cannot be opened.
    fn open(pid: u32) -> Result<Process, u32> {
        // SAFETY: plain call; a null handle means failure.
        let h = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if h.is_null() {
            // SAFETY: reads this thread's last error.
            Err(unsafe { GetLastError() })
        } else {
            Ok(Process(h))
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: a handle we opened and own.
        unsafe { CloseHandle(self.0) };
    }
}

/// Whether a process with this pid is running. A process we may not open
/// lives (as `EPERM` does on Unix); one that cannot be found, or has
/// exited while someone still holds a handle to it, does not.
pub(crate) fn pid_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match Process::open(pid) {
        Ok(p) => {
            let mut status = 0u32;
            // SAFETY: a valid process handle and a place for the code.
            let ok = unsafe { GetExitCodeProcess(p.0, &mut status) };
            ok == 0 || status == STILL_ACTIVE as u32
        }
        Err(code) => code == ERROR_ACCESS_DENIED,
    }
}

/// The creation time of a process (a `FILETIME`, as py-filelock writes it),
/// or `None` when it cannot be known.
pub(crate) fn process_start_token(pid: u32) -> Option<StartToken> {
    let p = Process::open(pid).ok()?;
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: a valid process handle and four FILETIMEs to fill.
    let ok = unsafe { GetProcessTimes(p.0, &mut created, &mut exited, &mut kernel, &mut user) };
    (ok != 0).then(|| StartToken {
        high: 0,
        low: (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime),
    })
}

/// The host's DNS name, as Python's `socket.gethostname()` reads it.
pub(in crate::sys) fn raw_hostname() -> Vec<u8> {
    let mut buf = [0u16; 256];
    let mut len = buf.len() as u32;
    // SAFETY: a buffer of `len` UTF-16 units.
    let ok =
        unsafe { GetComputerNameExW(ComputerNamePhysicalDnsHostname, buf.as_mut_ptr(), &mut len) };
    if ok == 0 {
        return Vec::new();
    }
    String::from_utf16_lossy(&buf[..len as usize]).into_bytes()
}

/// Windows has no PID namespaces.
pub(in crate::sys) fn pid_namespace() -> Option<u64> {
    None
}
