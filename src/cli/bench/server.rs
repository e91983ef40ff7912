//! The server the bench starts itself: `tripwire serve` (this executable) on a free port over
//! a fresh data directory, so that its memory can be read from /proc and it can be restarted.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a started server has to say where it listens, and to answer `/api/health` with
/// `true`: 120 s; past it the bench stops with an error.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a server has to exit after SIGTERM before it is killed: 120 s.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// A `tripwire serve` process; killed when dropped.
pub struct Spawned {
    child: Child,
    /// `http://127.0.0.1:PORT/api`
    pub api: String,
}

impl Spawned {
    /// Starts `tripwire serve --addr addr --data data` and waits until it says where it listens.
    pub fn start(data: &Path, addr: &str) -> Result<Spawned, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
        let mut child = Command::new(exe)
            .args(["serve", "--addr", addr, "--data"])
            .arg(data)
            .env("RUST_LOG", "warn,tripwire=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start `tripwire serve`: {e}"))?;
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            return Err("cannot read the server's output".into());
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Read every line (so the server never blocks on a full pipe); keep the last few
            // to explain a failed start.
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let _ = tx.send(Ok(rest.split('/').next().unwrap_or_default().to_owned()));
                        sent = true;
                    } else if line.contains("error") {
                        let _ = tx.send(Err(line));
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(addr)) => addr,
            Ok(Err(line)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the server did not start: {line}"));
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the server did not say where it listens within {} s", START_TIMEOUT.as_secs()));
            }
        };
        Ok(Spawned { child, api: format!("http://{addr}/api") })
    }

    /// The `host:port` it listens on.
    pub fn addr(&self) -> String {
        self.api.trim_start_matches("http://").trim_end_matches("/api").to_owned()
    }

    /// Its resident memory now (VmRSS) and at its peak (VmHWM), in bytes.
    pub fn memory(&self) -> Result<(u64, u64), String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("cannot read the server's memory from /proc: {e}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .ok_or_else(|| format!("no {name} in /proc/{}/status", self.child.id()))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM, and waits for it to exit (killing it past [`STOP_TIMEOUT`]); how long it took.
    pub fn stop(mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        while started.elapsed() < STOP_TIMEOUT {
            match self.child.try_wait() {
                Ok(Some(_)) => return Ok(started.elapsed()),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(format!("cannot wait for the server: {e}")),
            }
        }
        Err(format!("the server did not exit within {} s of SIGTERM; killed", STOP_TIMEOUT.as_secs()))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bytes in the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
