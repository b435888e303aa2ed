//! The soft-lock marker: `pid\nhostname\nstart-token\n`, as py-filelock writes it.

use crate::sys::{self, StartToken};

/// The holder a marker names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub pid: u32,
    pub host: String,
    pub token: Option<StartToken>,
}

/// What a marker's bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    /// A holder record.
    Holder(Marker),
    /// Empty: a holder between create and write, or a record-less marker;
    /// never broken (py-filelock treats it the same way).
    Empty,
    /// py-filelock's strict-soft sentinel; never broken here.
    Sentinel,
    /// Anything else: broken only after it stayed unchanged for a grace period.
    Malformed,
}

const STRICT_SENTINEL: &[u8] = b"1\nfilelock-strict-v1\x00\n0\n";

impl Marker {
    /// The marker for this process.
    pub(crate) fn ours() -> Marker {
        let pid = sys::pid();
        Marker {
            pid,
            host: sys::host_name().to_owned(),
            token: sys::process_start_token(pid),
        }
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("{}\n{}\n", self.pid, self.host);
        if let Some(t) = self.token {
            s.push_str(&format!("{t}\n"));
        }
        s.into_bytes()
    }

    /// Whether the process this marker names is provably gone: same host, and
    /// the pid is dead or was recycled (its start token differs). A marker
    /// from another host is never judged stale.
    pub(crate) fn is_stale(&self) -> bool {
        if self.host != sys::host_name() {
            return false;
        }
        if !sys::pid_alive(self.pid) {
            return true;
        }
        match (self.token, sys::process_start_token(self.pid)) {
            (Some(recorded), Some(current)) => !recorded.same_start(current),
            _ => false,
        }
    }
}

fn is_decimal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses marker bytes the way py-filelock's `parse_lock_holder` does.
pub(crate) fn parse(bytes: &[u8]) -> Content {
    if bytes.is_empty() {
        return Content::Empty;
    }
    if bytes == STRICT_SENTINEL {
        return Content::Sentinel;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Content::Malformed;
    };
    // A record without its final newline was cut by a crash or read mid-write.
    if !text.ends_with('\n') {
        return Content::Malformed;
    }
    let lines: Vec<&str> = text.trim().lines().collect();
    if !(2..=3).contains(&lines.len()) || !is_decimal(lines[0]) {
        return Content::Malformed;
    }
    let Ok(pid) = lines[0].parse::<u32>() else {
        return Content::Malformed;
    };
    if !(1..=i32::MAX as u32).contains(&pid) || lines[1].is_empty() || lines[1].len() > 253 {
        return Content::Malformed;
    }
    let token = match lines.get(2) {
        None => None,
        Some(t) => match StartToken::parse(t) {
            Some(t) => Some(t),
            None => return Content::Malformed,
        },
    };
    Content::Holder(Marker {
        pid,
        host: lines[1].to_owned(),
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_our_marker() {
        let m = Marker::ours();
        assert_eq!(parse(&m.to_bytes()), Content::Holder(m.clone()));
        assert!(!m.is_stale(), "our own process is alive");
    }

    #[test]
    fn accepts_two_line_markers_of_older_writers() {
        let c = parse(b"123\nhost\n");
        assert!(matches!(
            c,
            Content::Holder(Marker {
                pid: 123,
                token: None,
                ..
            })
        ));
    }

    #[test]
    fn malformed_inputs() {
        for bad in [
            &b"abc\nhost\n"[..],
            b"123\nhost",
            b"0\nhost\n",
            b"-5\nhost\n",
            b"99999999999\nhost\n",
            b"1\n",
            b"1\nh\n2\n3\n",
            b"1\nh\nx\n",
            b"\xff\xfe\n",
            b"+1\nhost\n",
        ] {
            assert_eq!(parse(bad), Content::Malformed, "{bad:?}");
        }
        assert_eq!(parse(b""), Content::Empty);
        assert_eq!(parse(STRICT_SENTINEL), Content::Sentinel);
    }

    #[test]
    fn other_hosts_are_never_stale() {
        let m = Marker {
            pid: 1,
            host: "some-other-host.example".into(),
            token: None,
        };
        assert!(!m.is_stale());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn token() -> impl Strategy<Value = Option<StartToken>> {
        // Up to 192 bits: 57 digits always fit.
        proptest::option::of("[1-9][0-9]{0,56}".prop_map(|s| StartToken::parse(&s).unwrap()))
    }

    proptest! {
        /// Whatever a marker file holds, parsing it never panics, and a
        /// record it accepts reads back the same.
        #[test]
        fn parsing_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Content::Holder(m) = parse(&bytes) {
                prop_assert_eq!(parse(&m.to_bytes()), Content::Holder(m));
            }
        }

        /// Every marker a writer makes reads back as that holder.
        #[test]
        fn written_markers_read_back(
            pid in 1..=i32::MAX as u32,
            host in "[A-Za-z0-9][A-Za-z0-9.?_-]{0,252}",
            token in token(),
        ) {
            let m = Marker { pid, host, token };
            prop_assert_eq!(parse(&m.to_bytes()), Content::Holder(m));
        }
    }
}
