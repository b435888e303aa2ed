//! Process identity written into soft-lock markers, byte-compatible with
//! py-filelock (`filelock/_identity.py`, 4.x), so a mixed Python/Rust fleet
//! agrees on who is alive. What each OS knows of a process is in its own
//! module.

use std::fmt;
use std::sync::OnceLock;

/// A process start token: on Linux `boot_id << 64 | starttime`, on Windows
/// the creation time (py-filelock writes it as one decimal integer of up to
/// 192 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StartToken {
    /// The boot id (zero when it could not be read).
    pub high: u128,
    /// Start time in clock ticks since boot.
    pub low: u64,
}

impl StartToken {
    /// Same process start, tolerating a missing boot id on either side the way
    /// py-filelock's `_same_start` does.
    pub(crate) fn same_start(self, other: StartToken) -> bool {
        self == other || ((self.high == 0 || other.high == 0) && self.low == other.low)
    }

    /// Parses a decimal integer (no sign, no spaces) of up to 192 bits.
    pub(crate) fn parse(s: &str) -> Option<StartToken> {
        if s.is_empty() || s.len() > 60 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Three 64-bit limbs, little-endian.
        let mut limbs = [0u64; 3];
        for b in s.bytes() {
            let mut carry = u128::from(b - b'0');
            for limb in limbs.iter_mut() {
                let v = u128::from(*limb) * 10 + carry;
                *limb = v as u64;
                carry = v >> 64;
            }
            if carry != 0 {
                return None;
            }
        }
        Some(StartToken {
            high: (u128::from(limbs[2]) << 64) | u128::from(limbs[1]),
            low: limbs[0],
        })
    }
}

impl fmt::Display for StartToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut limbs = [self.low, self.high as u64, (self.high >> 64) as u64];
        if limbs == [0, 0, 0] {
            return f.write_str("0");
        }
        let mut digits = Vec::with_capacity(58);
        while limbs != [0, 0, 0] {
            let mut rem = 0u128;
            for limb in limbs.iter_mut().rev() {
                let v = (rem << 64) | u128::from(*limb);
                *limb = (v / 10) as u64;
                rem = v % 10;
            }
            digits.push(b'0' + rem as u8);
        }
        digits.reverse();
        f.write_str(std::str::from_utf8(&digits).expect("ascii digits"))
    }
}

/// The host name as py-filelock records it: printable ASCII kept, everything
/// else escaped as `?hh`, the PID namespace appended when not the initial one,
/// capped at 253 characters.
pub(crate) fn host_name() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let raw = super::os::raw_hostname();
        let mut name = String::new();
        for b in raw {
            if (0x21..0x7f).contains(&b) && b != b'?' {
                name.push(b as char);
            } else {
                name.push_str(&format!("?{b:02x}"));
            }
        }
        if let Some(ns) = super::os::pid_namespace() {
            name.push_str(&format!("?pidns-{ns:x}"));
        }
        if name.len() > 253 {
            name = truncate_with_digest(&name);
        }
        if name.is_empty() {
            "?".to_owned()
        } else {
            name
        }
    })
}

/// py-filelock keeps 244 characters and appends `-` and 8 hex digits of the
/// SHA-256 of the rest. Host names that long do not occur in practice; we
/// keep the cut (so two such hosts still compare unequal to short ones) and
/// use a stable FNV digest, documented as a known divergence.
fn truncate_with_digest(name: &str) -> String {
    let keep = 253 - 8 - 1;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name[keep..].bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{}-{:08x}", &name[..keep], h as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_192_bits() {
        let t = StartToken {
            high: u128::MAX,
            low: 12345,
        };
        assert_eq!(StartToken::parse(&t.to_string()), Some(t));
        let small = StartToken { high: 0, low: 42 };
        assert_eq!(small.to_string(), "42");
        // boot id 1, starttime 7 == 2^64 + 7
        let one = StartToken { high: 1, low: 7 };
        assert_eq!(one.to_string(), "18446744073709551623");
        assert_eq!(StartToken::parse("18446744073709551623"), Some(one));
    }

    #[test]
    fn token_parse_rejects_garbage() {
        for bad in ["", "-1", "1 2", "x", &"9".repeat(61)] {
            assert_eq!(StartToken::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn own_process_has_a_token_and_is_alive() {
        use crate::sys::{pid_alive, process_start_token};
        assert!(pid_alive(std::process::id()));
        #[cfg(any(target_os = "linux", windows))]
        assert!(process_start_token(std::process::id()).is_some());
    }
}
