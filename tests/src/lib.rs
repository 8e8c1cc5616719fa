//! The harness for cross-process tests and benchmarks: real `plaitd` processes on
//! loopback ports, started, stopped with SIGTERM and killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a replica may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd replica may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory holding the workspace's built binaries (`target/debug` or `target/release`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PLAIT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // Test and bench executables live in target/<profile>/deps or target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of a workspace binary, with a clear error when it was not built.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.exists() {
        bail!("{} is not built; run `cargo build --bins` first (or set PLAIT_BIN_DIR)", path.display());
    }
    Ok(path)
}

/// A command that runs the built `plaitd`, with the free-space floor off: the tests share
/// the build machine's disk, whose free space says nothing about the few megabytes a test
/// writes (a disk nearly filled by build artifacts would otherwise refuse every write).
/// The tests of the floor run on a small disk of their own and pass
/// `--disk-free-min-mib`, which wins over the environment.
pub fn plaitd_command() -> anyhow::Result<Command> {
    let mut command = Command::new(binary("plaitd")?);
    command.env("PLAIT_DISK_FREE_MIN_MIB", "0");
    Ok(command)
}

/// A running `plaitd`.
pub struct Plaitd {
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// The admin address (`--admin-listen`), when the replica has one.
    pub admin: Option<SocketAddr>,
    pub data_dir: PathBuf,
    extra: Vec<String>,
    env: Vec<(&'static str, String)>,
}

impl Plaitd {
    /// Starts a replica on an ephemeral loopback port over `data_dir` and waits for its
    /// ready line. `extra` are further flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Plaitd> {
        Plaitd::start_with_env(data_dir, extra, Vec::new())
    }

    /// Like `start`, with extra environment variables.
    pub fn start_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: Vec<(&'static str, String)>,
    ) -> anyhow::Result<Plaitd> {
        Plaitd::start_at(data_dir, "127.0.0.1:0", extra, env)
    }

    /// Like `start_with_env`, listening on `listen` (a replica restarted where it was,
    /// as a pod keeps its DNS name).
    pub fn start_at(
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        env: Vec<(&'static str, String)>,
    ) -> anyhow::Result<Plaitd> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let Ready { child, grpc, metrics, admin } = spawn_at(data_dir, listen, &extra, &env)?;
        Ok(Plaitd { child: Some(child), grpc, metrics, admin, data_dir: data_dir.to_path_buf(), extra, env })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The admin address as a plaintext endpoint (the API address when there is none).
    pub fn admin_endpoint(&self) -> String {
        format!("http://{}", self.admin.unwrap_or(self.grpc))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no chance to flush or drain.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        if !status.success() {
            bail!("could not send SIGTERM");
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("plaitd did not exit within {EXIT_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the replica again on the same data directory (a new port).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        let Ready { child, grpc, metrics, admin } = spawn(&self.data_dir, &self.extra, &self.env)?;
        self.admin = admin;
        self.child = Some(child);
        self.grpc = grpc;
        self.metrics = metrics;
        Ok(())
    }

    /// Resident memory of the process in bytes (Linux), if it is running.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

impl Drop for Plaitd {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A started replica and the addresses its ready line names.
struct Ready {
    child: Child,
    grpc: SocketAddr,
    metrics: Option<SocketAddr>,
    admin: Option<SocketAddr>,
}

fn spawn(data_dir: &Path, extra: &[String], env: &[(&'static str, String)]) -> anyhow::Result<Ready> {
    spawn_at(data_dir, "127.0.0.1:0", extra, env)
}

fn spawn_at(
    data_dir: &Path,
    listen: &str,
    extra: &[String],
    env: &[(&'static str, String)],
) -> anyhow::Result<Ready> {
    let log_path = data_dir.with_extension("log");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
    let mut child = plaitd_command()?
        .args(["--listen", listen, "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .env("PLAIT_LOG", std::env::var("PLAIT_LOG").unwrap_or_else(|_| "warn".into()))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("cannot start plaitd")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("plaitd ready") {
                let _ = tx.send(line);
            }
        }
    });
    let line = match rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("plaitd did not become ready within {READY_TIMEOUT:?}; its log:\n{log}");
        }
    };
    let field = |name: &str| line.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_owned);
    let grpc = field("grpc=").context("ready line without grpc=")?.parse()?;
    let metrics = field("metrics=").and_then(|m| m.parse().ok());
    let admin = field("admin=").and_then(|m| m.parse().ok());
    Ok(Ready { child, grpc, metrics, admin })
}

/// A replica's Prometheus text from its metrics address, read with a bare HTTP/1.1 GET.
pub fn fetch_metrics(addr: SocketAddr) -> Option<String> {
    use std::io::{Read, Write};
    let mut text = String::new();
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: plaitd\r\nConnection: close\r\n\r\n").ok()?;
    stream.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Calls a replica served of one gRPC method (`"Sync/Pull"`, ...), any status code, from
/// its `plait_rpc_seconds` histogram in Prometheus text.
pub fn rpc_calls(text: &str, method: &str) -> f64 {
    let label = format!("{method}\"");
    text.lines()
        .filter(|l| l.starts_with("plait_rpc_seconds_count") && l.contains(&label))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// The sum of every series of the metric `name` (any labels) in Prometheus text; 0 when
/// there is none.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Polls `condition` until it holds or `timeout` passes. Tests wait on conditions, never
/// on fixed sleeps.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `plaitd check` on a stopped replica's data directory; returns its output and
/// whether the data is clean.
pub fn check(data_dir: &Path) -> anyhow::Result<(bool, String)> {
    let out = plaitd_command()?.arg("check").arg("--data-dir").arg(data_dir).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

pub mod cluster;
pub mod kube;
pub mod proxy;
pub mod s3;
