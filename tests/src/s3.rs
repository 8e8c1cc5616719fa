//! A real S3-compatible server for tests: moto's standalone server (`pip install
//! 'moto[server]'`, which `scripts/test-prereqs.sh` does), started on a loopback port and
//! stopped on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct S3Server {
    child: Child,
    pub addr: SocketAddr,
}

/// Credentials the server accepts (it checks none, but clients must sign with some).
pub const ACCESS_KEY: &str = "plait-test";
pub const SECRET_KEY: &str = "plait-test-secret";
pub const REGION: &str = "us-east-1";

impl S3Server {
    pub fn start() -> anyhow::Result<S3Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start moto_server; install it with: pip install 'moto[server]'")?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut server = S3Server { child, addr };
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline || server.child.try_wait()?.is_some() {
                bail!("moto_server did not start listening on {addr}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket with a plain PUT (the server needs no signature for it).
    pub fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let mut s = TcpStream::connect(self.addr)?;
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        if !reply.starts_with("HTTP/1.1 200") {
            bail!("creating bucket {bucket} failed: {}", reply.lines().next().unwrap_or_default());
        }
        Ok(())
    }

    /// Reads an object, signed, through boto3 (which moto's server depends on, so it is
    /// installed wherever the server is): the server refuses unsigned reads.
    pub fn get_object(&self, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
        const READ: &str = "import sys, boto3\n\
            s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id=sys.argv[2], \
            aws_secret_access_key=sys.argv[3], region_name=sys.argv[4])\n\
            sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[5], Key=sys.argv[6])['Body'].read())\n";
        let out = Command::new("python3")
            .args(["-c", READ, &self.endpoint(), ACCESS_KEY, SECRET_KEY, REGION, bucket, key])
            .output()
            .context("cannot run python3 (boto3 comes with moto)")?;
        if !out.status.success() {
            bail!("reading {bucket}/{key} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    }

    /// Environment for a plaitd or `plaitd restore` that uses this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("PLAIT_BACKUP_S3_ENDPOINT", self.endpoint()),
            ("PLAIT_BACKUP_S3_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S3-compatible server that checks signatures (s3s-fs from crates.io, which
/// `scripts/test-prereqs.sh` installs), for the wrong-credentials case: moto accepts any
/// credentials.
pub struct CheckingS3Server {
    child: Child,
    pub addr: SocketAddr,
    _root: tempfile::TempDir,
}

impl CheckingS3Server {
    /// Starts with one bucket and one access key / secret pair.
    pub fn start(bucket: &str, access_key: &str, secret_key: &str) -> anyhow::Result<CheckingS3Server> {
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join(bucket))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let binary = std::env::var("PLAIT_S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
        let child = Command::new(&binary)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                access_key,
                "--secret-key",
                secret_key,
            ])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {binary}; install it with: cargo install s3s-fs@0.14.1 --features binary"
                )
            })?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut server = CheckingS3Server { child, addr, _root: root };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline || server.child.try_wait()?.is_some() {
                bail!("s3s-fs did not start listening on {addr}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// Environment for a plaitd that signs with `access_key` / `secret_key`.
    pub fn env(&self, access_key: &str, secret_key: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", access_key.into()),
            ("AWS_SECRET_ACCESS_KEY", secret_key.into()),
            ("AWS_REGION", REGION.into()),
            ("PLAIT_BACKUP_S3_ENDPOINT", format!("http://{}", self.addr)),
            ("PLAIT_BACKUP_S3_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for CheckingS3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
