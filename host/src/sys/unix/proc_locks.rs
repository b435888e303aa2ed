//! Who holds a `flock`, read from `/proc/locks` without touching the lock.

/// Pids holding a granted `flock` on the file (device, inode). Empty where
/// `/proc/locks` does not exist.
pub(crate) fn flock_holders(dev: u64, ino: u64) -> Vec<u32> {
    match std::fs::read_to_string("/proc/locks") {
        Ok(text) => parse(&text, dev, ino),
        Err(_) => Vec::new(),
    }
}

fn parse(text: &str, dev: u64, ino: u64) -> Vec<u32> {
    // dev_t is i32 on macOS, where there is no /proc/locks to read anyway.
    #[allow(clippy::unnecessary_cast)]
    let dev = dev as libc::dev_t;
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    let mut pids = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; blocked waiters
        // have "->" after the index and are skipped.
        let (Some(_idx), Some(class)) = (fields.next(), fields.next()) else {
            continue;
        };
        if class != "FLOCK" {
            continue;
        }
        let rest: Vec<&str> = fields.collect();
        if rest.len() < 4 {
            continue;
        }
        if rest[3] == want
            && let Ok(pid) = rest[2].parse::<u32>()
        {
            pids.push(pid);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_granted_flocks_and_skips_waiters() {
        let dev = libc::makedev(8, 1);
        let text = "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 999 08:01:5678 0 EOF\n\
                    2: POSIX  ADVISORY  WRITE 77 08:01:5678 0 EOF\n\
                    3: FLOCK  ADVISORY  READ 55 08:01:9999 0 EOF\n";
        assert_eq!(super::parse(text, dev, 5678), vec![1234]);
    }
}
