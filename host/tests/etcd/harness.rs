//! A real etcd for the tests: Debian's `etcd-server` on free loopback ports
//! with a data directory of its own, killed by pid when dropped; one member
//! or several. (The
//! workspace tests include this file too; both crates have `require` at
//! their root.)

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::require;

pub struct Etcd {
    child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

fn have(tool: &str, version: &str) -> bool {
    Command::new(tool)
        .arg(version)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A directory for a member's data, in memory where there is a tmpfs:
/// etcd syncs every write to disk, and on a disk busy writing back (CI
/// builds gigabytes just before) a sync can stall a member for long enough
/// to cost it its leadership and its clients their keep-alives — failures
/// the tests make on purpose, where they want them, and must not get by
/// chance elsewhere.
fn data_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

impl Etcd {
    /// A fresh single-member cluster, ready; `None` where etcd is missing
    /// and we do not run in CI (there it fails instead).
    pub fn start() -> Option<Etcd> {
        Some(Etcd::start_members(1)?.remove(0))
    }

    /// A fresh cluster of `n` members, ready, one `Etcd` for each (its
    /// `url` is that member's).
    pub fn start_members(n: usize) -> Option<Vec<Etcd>> {
        if !require(
            have("etcd", "--version") && have("etcdctl", "version"),
            "etcd and etcdctl (Debian etcd-server, etcd-client)",
        ) {
            return None;
        }
        // A port picked free may be taken before etcd binds it: try again.
        for _ in 0..5 {
            if let Some(members) = Etcd::try_start(n) {
                return Some(members);
            }
        }
        panic!("etcd did not start");
    }

    fn try_start(n: usize) -> Option<Vec<Etcd>> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let peer_url = |port: u16| format!("http://127.0.0.1:{port}");
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, &(_, peer))| format!("m{i}={}", peer_url(peer)))
            .collect();
        let initial = initial.join(",");
        let mut members: Vec<Etcd> = ports
            .iter()
            .enumerate()
            .map(|(i, &(client, peer))| {
                let dir = data_dir();
                let url = format!("http://127.0.0.1:{client}");
                let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
                let child = Command::new("etcd")
                    .args(["--name", &format!("m{i}"), "--data-dir"])
                    .arg(dir.path().join("data"))
                    .args(["--listen-client-urls", &url])
                    .args(["--advertise-client-urls", &url])
                    .args(["--listen-peer-urls", &peer_url(peer)])
                    .args(["--initial-advertise-peer-urls", &peer_url(peer)])
                    .args(["--initial-cluster", &initial])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("start etcd");
                Etcd {
                    child,
                    url,
                    _dir: dir,
                }
            })
            .collect();
        // Members are healthy once they have a leader: all start first.
        let deadline = Instant::now() + Duration::from_secs(20);
        for etcd in &mut members {
            loop {
                if etcd.child.try_wait().unwrap().is_some() {
                    return None;
                }
                if etcd.ctl(&["endpoint", "health"]).status.success() {
                    break;
                }
                if Instant::now() > deadline {
                    let log = std::fs::read_to_string(etcd._dir.path().join("etcd.log"))
                        .unwrap_or_default();
                    panic!("etcd at {} not healthy within 20 s:\n{log}", etcd.url);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Some(members)
    }

    /// The member's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `etcdctl` against this cluster.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_command(args).output().unwrap()
    }

    pub fn ctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url, "--command-timeout=5s"])
            .args(args);
        cmd
    }

    /// Waits (at most 10 s) until exactly `n` keys are under `prefix`, and
    /// returns them in create order.
    pub fn until_keys(&self, prefix: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let keys = self.keys(prefix);
            if keys.len() == n {
                return keys;
            }
            assert!(
                Instant::now() < deadline,
                "keys under {prefix}: {keys:?}, not {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// etcd's own metrics (Prometheus text, from `/metrics`).
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let address = self.url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    /// The sum of the metric `name` over the lines `keep` accepts (the
    /// labels, `{...}`, or "" for a metric without).
    pub fn metric(&self, name: &str, keep: impl Fn(&str) -> bool) -> f64 {
        self.metrics()
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?;
                let (labels, value) = rest.rsplit_once(' ')?;
                (labels.is_empty() || labels.starts_with('{')).then_some((labels, value))
            })
            .filter(|(labels, _)| keep(labels))
            .map(|(_, value)| value.parse::<f64>().unwrap())
            .sum()
    }

    /// What a failed test should show: the keys under `prefix` and every
    /// lease with what is left of it (a lease kept alive by nobody that
    /// does not expire keeps its keys at the head of their queues).
    pub fn state(&self, prefix: &str) -> String {
        let text = |args: &[&str]| String::from_utf8_lossy(&self.ctl(args).stdout).into_owned();
        let mut state = format!(
            "{} keys under {prefix}: {:?}\n",
            self.url,
            self.keys(prefix)
        );
        for lease in text(&["lease", "list"]).lines().skip(1) {
            state += &text(&["lease", "timetolive", lease.trim()]);
        }
        state
    }

    /// The keys under `prefix` (`NAME/`), in create order.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.ctl(&[
            "get",
            "--prefix",
            "--keys-only",
            "--order=ASCEND",
            "--sort-by=CREATE",
            prefix,
        ]);
        assert!(
            out.status.success(),
            "etcdctl get: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
