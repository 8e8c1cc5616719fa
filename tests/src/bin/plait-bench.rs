//! `plait-bench`: the performance targets of docs/design.md ("Performance targets"), measured
//! side by side in one run and printed as one markdown table of figure, value, target and
//! ratio to the target.
//!
//! What is measured:
//!
//! - `entry-cpu`: CPU per entry of signing a 1-op and a 100-op entry (`EntryDraft::sign`:
//!   encode, hash, sign), decoding (`DecodedEntry::decode`), verifying one signature
//!   (`DecodedEntry::verify`) and batch verification (`plait_core::verify_batch`, 256 per
//!   batch).
//! - `ingest`: durable batched writes through `plait_store::Store::write` in this process on
//!   a real fjall database (8 tasks, 1000 kv puts of 16-byte keys and 100-byte values per
//!   call, each call returning only after fsync), next to raw fjall group commit of the same
//!   bytes: a plain fjall database with one keyspace, one `OwnedWriteBatch` and one
//!   `persist(SyncData)` per 1000 records. The raw baseline is run two ways: one record per
//!   op carrying the op's share of the entry bytes (the shape of the targets' 260,000 entries/s
//!   anchor), and as many records as the store wrote entries, of the same average size.
//!   Three rounds in fresh directories; the table shows medians and ranges. Also the peak
//!   RSS of this process while writing, and where the CPU went.
//! - `unary`: a release `plaitd` started by the harness, 64 concurrent clients over 8 HTTP/2
//!   connections doing single-op `Data.Put` calls, three 10 s rounds; ops/s, p50/p99
//!   latency, CPU of plaitd and of the clients, group-commit sizes from plaitd's metrics,
//!   and plaitd's RSS.
//! - `reopen`: builds a data directory of N ops (default 10,000,000) through the Store API,
//!   then times `Store::open` at N/10 and at N, each in two states: the first open right
//!   after the write burst (fjall replays the journals it had not flushed) and opens after
//!   fjall flushed them; then a release `plaitd` from spawn to its ready line.
//! - `kv-get`: random point reads of a store with many keys, in process (`Store::get_kv`,
//!   p50/p99/p999) and over gRPC (`Data.Get`, p50/p99) against a release `plaitd` on the
//!   same directory, and that plaitd's RSS.
//! - `catchup`: a release `plaitd` (the source) is loaded with N ops (default 1,000,000)
//!   in one of two shapes, then a fresh `plaitd --peer <source>` is timed from its ready
//!   line until `Logs.GetLog` on it (polled every 5 ms) shows all N ops; its RSS is sampled
//!   every 50 ms on a separate thread. Shapes: `large`, 1000-op `Data.Write` calls from 4
//!   concurrent clients (the store folds each group commit into one entry, so entries carry
//!   about 1,500–2,000 ops); `small`, one chain of 10-op entries pre-signed by a client key
//!   and sent with `Data.Submit` (100,000 entries for 1M ops). The source is left to go
//!   idle (fjall flushing) before the first catch-up; each round is a fresh replica.
//! - `latency`: two release `plaitd`s peered both ways (B started with `--peer A`, then
//!   `Admin.SetMembers` on A names B). A writer puts new keys on A at a steady open-loop
//!   rate (default 2,000 single-op `Data.Put`/s, then 10,000 ops/s as 100-op `Data.Write`),
//!   while `Data.Subscribe{follow}` streams on B (and on A, as a control) note when each key
//!   arrives. Latency is from the write's acknowledgement reaching the client to the key
//!   arriving on B's stream; send-to-visible is reported too.
//! - `security`: the cost of TLS and authentication, as ratios measured in one run:
//!   unary single-op puts against a plaintext replica, and against a secured one (TLS with
//!   the auth file) called with a bearer token and with a client certificate, rounds
//!   interleaved; then fresh replicas catching up N ops (default 1,000,000) from a
//!   plaintext source and, over mutual TLS with node proofs and the auth layer, from a
//!   secured copy of the same data directory.
//! - `all`: everything with defaults; `kv-get` then reads the directory `reopen` built, so
//!   it runs at 10M keys, and after the two catch-up shapes one round of a large-entry
//!   catch-up of 10M ops shows the replica's memory as the amount replicated grows.
//!
//! Time is read with `std::time::Instant` here: this binary measures, it decides nothing.
//!
//! How to run (plaitd must be built in release next to this binary, because the gRPC
//! figures start it through the harness):
//!
//! ```text
//! cargo build --release -p plait-replica -p plait-tests
//! cargo run --release -p plait-tests --bin plait-bench -- all           # full sizes, minutes
//! cargo run --release -p plait-tests --bin plait-bench -- --quick all   # smoke test, < 1 min
//! cargo run --release -p plait-tests --bin plait-bench -- reopen --help
//! cargo run --release -p plait-tests --bin plait-bench -- catchup                # about 2 min
//! cargo run --release -p plait-tests --bin plait-bench -- latency                # about 25 s
//! cargo run --release -p plait-tests --bin plait-bench -- catchup --shapes small --ops 2000000
//! cargo run --release -p plait-tests --bin plait-bench -- latency --loads 5000:1,20000:200
//! ```
//!
//! Progress goes to stderr; the table goes to stdout. Temporary data directories are made
//! under `--work-dir` (default `/tmp`) and removed at the end unless `--keep` is given.
//! The numbers are only as steady as the machine: on a shared VM, run `all` when nothing
//! else is busy, and read the ranges.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use fjall::{KeyspaceCreateOptions, PersistMode};
use plait_core::{
    DecodedEntry, EntryDraft, EntryHash, LogId, LogType, Manifest, Op, SignedManifest, WriterKey, Writers,
    verify_batch,
};
use plait_proto::pb;
use plait_store::{Store, StoreConfig, StoreObserver};
use plait_tests::Plaitd;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

/// Size of every kv key written, as in the ingest target.
const KEY_BYTES: usize = 16;
/// Size of every kv value written.
const VALUE_BYTES: usize = 100;
/// How much `--quick` shrinks default sizes.
const QUICK_DIVISOR: u64 = 100;
/// How often long steps report progress on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The kv log every benchmark writes to.
const LOG_NAME: &str = "bench";
/// Entries per `verify_batch` call.
const VERIFY_BATCH: usize = 256;
/// Records per batch and fsync in the raw fjall baseline (the ingest target's anchor).
const RAW_RECORDS_PER_FSYNC: u64 = 1000;
/// Key size of a raw fjall record: an entry hash, as in the store's `entries` keyspace.
const RAW_KEY_BYTES: usize = 32;
/// fjall block cache, the same as plaitd's default (`--cache-mib 64`).
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Writers and ops per call when building large data directories: large batches, so the
/// build is as fast as the store allows.
const BUILD_TASKS: usize = 4;
const BUILD_BATCH_OPS: u64 = 4096;
/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Measures Plait against the performance targets of docs/design.md and prints a markdown table.
#[derive(Parser, Debug)]
#[command(
    name = "plait-bench",
    after_help = "Build first: cargo build --release -p plait-replica -p plait-tests\n\
                  Examples:\n  plait-bench all            # every figure at full size (several minutes)\n  \
                  plait-bench --quick all    # every figure at 1/100 size, under a minute\n  \
                  plait-bench reopen --ops 5000000\n  \
                  plait-bench catchup --shapes large --rounds 5\n  \
                  plait-bench latency --loads 2000:1,10000:100 --seconds 20"
)]
struct Cli {
    /// Shrink every default size about 100-fold: a smoke test, not a measurement.
    #[arg(long, global = true)]
    quick: bool,

    /// Where temporary data directories are made (removed afterwards).
    #[arg(long, global = true, default_value = "/tmp")]
    work_dir: PathBuf,

    /// Keep the temporary data directories (and plaitd logs) for inspection.
    #[arg(long, global = true)]
    keep: bool,

    #[command(subcommand)]
    command: Command,
}

/// Set once from `--keep` before any figure runs.
static KEEP_DIRS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[derive(Subcommand, Debug)]
enum Command {
    /// CPU per entry: sign (1 op, 100 ops), decode, verify, batch verify.
    EntryCpu(EntryCpuArgs),
    /// Durable batched ingest through Store::write vs raw fjall group commit of the same bytes.
    Ingest(IngestArgs),
    /// Single-op Data.Put unary calls from many clients against a release plaitd.
    Unary(UnaryArgs),
    /// Store::open and plaitd start-to-ready on a data directory of many ops.
    Reopen(ReopenArgs),
    /// Random kv point reads, in process and over gRPC.
    KvGet(KvGetArgs),
    /// A fresh replica catching up from a loaded one over loopback, large and small entries.
    Catchup(CatchupArgs),
    /// Replication latency between two peered replicas under steady writes.
    Latency(LatencyArgs),
    /// Snapshot restore (full and 1% delta), backup MB/s to files and S3, put latency during export.
    Restore(RestoreArgs),
    /// Unary put and catch-up with TLS and authentication on, as ratios to plaintext.
    Security(SecurityArgs),
    /// Replication CPU per write with one hosted log and with many (all but one idle).
    ManyLogs(ManyLogsArgs),
    /// History: keys overwritten many times; disk per version, reads as of a past seq.
    History(HistoryArgs),
    /// Every figure with its defaults, one table.
    All(AllArgs),
    /// A bare tonic unary server (grpc.health.v1 only) on 127.0.0.1, printing its address:
    /// the baseline `unary` starts as a child process.
    #[command(hide = true)]
    BareServer,
}

#[derive(Args, Debug)]
struct EntryCpuArgs {
    /// 1-op entries signed, decoded and verified (100-op entries: a tenth of this).
    /// [default: 20000; --quick: 256]
    #[arg(long)]
    entries: Option<u64>,
}

#[derive(Args, Debug)]
struct IngestArgs {
    /// Total kv puts written. [default: 1000000; --quick: 10000]
    #[arg(long)]
    ops: Option<u64>,
    /// Concurrent writer tasks.
    #[arg(long, default_value_t = 8)]
    tasks: usize,
    /// Ops per Store::write call.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Rounds, each with a fresh directory; the table shows the median and range.
    /// [default: 3; --quick: 1]
    #[arg(long)]
    rounds: Option<usize>,
}

#[derive(Args, Debug)]
struct UnaryArgs {
    /// Concurrent clients, each with one call in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections the clients share (one connection is served by one core).
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// How long to run. [default: 10; --quick: 1]
    #[arg(long)]
    seconds: Option<f64>,
    /// Stop a round earlier after this many calls.
    #[arg(long)]
    ops: Option<u64>,
    /// Rounds of `--seconds` each against the same plaitd; the table shows the median and
    /// range of the rates and percentiles over all calls. [default: 3; --quick: 1]
    #[arg(long)]
    rounds: Option<usize>,
}

#[derive(Args, Debug)]
struct ReopenArgs {
    /// Ops in the data directory. [default: 10000000; --quick: 100000]
    #[arg(long)]
    ops: Option<u64>,
    /// Ops per Store::write call while building (4 concurrent writers).
    #[arg(long, default_value_t = BUILD_BATCH_OPS)]
    batch: u64,
    /// Timed Store::open calls at each size.
    #[arg(long, default_value_t = 5)]
    opens: usize,
    /// Timed plaitd starts.
    #[arg(long, default_value_t = 3)]
    starts: usize,
}

#[derive(Args, Debug)]
struct KvGetArgs {
    /// Distinct keys in the store. [default: 1000000; --quick: 10000]
    #[arg(long)]
    keys: Option<u64>,
    #[command(flatten)]
    reads: ReadArgs,
}

#[derive(Args, Debug)]
struct HistoryArgs {
    /// Distinct keys. [default: 1000000; --quick: 10000]
    #[arg(long)]
    keys: Option<u64>,
    /// Versions written of every key, one round of puts over all keys each.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..))]
    versions: u64,
    /// Timed reads of each kind. [default: 200000; --quick: 2000]
    #[arg(long)]
    reads: Option<u64>,
}

#[derive(Args, Debug)]
struct ReadArgs {
    /// Timed in-process reads. [default: 200000; --quick: 2000]
    #[arg(long)]
    reads: Option<u64>,
    /// Timed gRPC reads. [default: 100000; --quick: 1000]
    #[arg(long)]
    grpc_reads: Option<u64>,
    /// Concurrent gRPC clients, one connection each.
    #[arg(long, default_value_t = 4)]
    grpc_clients: usize,
}

/// How the source replica's data is written before a fresh replica catches up.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Data.Write calls of `--batch` kv puts from `--clients` concurrent clients. The store
    /// folds the writes of one group commit into one entry (at most 4096 ops), so entries
    /// carry thousands of ops.
    Large,
    /// Entries of `--small-entry-ops` kv puts each, pre-signed by a client key and sent
    /// with Data.Submit: the shape a device or a low-rate app writing small batches makes.
    Small,
}

#[derive(Args, Debug)]
struct CatchupArgs {
    /// Ops on the source replica, for each shape. [default: 1000000; --quick: 10000]
    #[arg(long)]
    ops: Option<u64>,
    /// Which shapes to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Shape::Large, Shape::Small])]
    shapes: Vec<Shape>,
    /// Concurrent Data.Write clients loading the large shape (one connection each).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Ops per Data.Write call in the large shape.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    /// Ops per entry in the small shape.
    #[arg(long, default_value_t = 10)]
    small_entry_ops: u64,
    /// Fresh replicas caught up from the same source, one after another; the table shows
    /// the median and range. [default: 3; --quick: 1]
    #[arg(long)]
    rounds: Option<usize>,
    /// Longest wait for the source to go idle (fjall flushing and compacting) after loading
    /// and before the first catch-up, in seconds.
    #[arg(long, default_value_t = 60.0)]
    settle_seconds: f64,
}

/// One steady write load: ops per second, and ops per call.
#[derive(Clone, Copy, Debug)]
struct Load {
    rate: u64,
    batch: u64,
}

impl std::str::FromStr for Load {
    type Err = String;

    fn from_str(s: &str) -> Result<Load, String> {
        let (rate, batch) = s.split_once(':').unwrap_or((s, "1"));
        let parse = |v: &str, what: &str| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{what} in {s:?} is not a positive integer"))
        };
        let load = Load { rate: parse(rate, "the rate")?, batch: parse(batch, "the batch")? };
        if load.batch > load.rate {
            return Err(format!("{s:?}: the batch is larger than the ops per second"));
        }
        Ok(load)
    }
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.batch == 1 {
            write!(f, "{} ops/s as single-op Data.Put", group_digits(self.rate))
        } else {
            write!(f, "{} ops/s as {}-op Data.Write", group_digits(self.rate), self.batch)
        }
    }
}

#[derive(Args, Debug)]
struct LatencyArgs {
    /// Loads to run one after another, each as RATE:BATCH (ops per second : ops per call;
    /// a batch of 1 uses Data.Put, more uses Data.Write).
    #[arg(long, value_delimiter = ',', default_values = ["2000:1", "10000:100"])]
    loads: Vec<Load>,
    /// Seconds each load runs. [default: 10; --quick: 1]
    #[arg(long)]
    seconds: Option<f64>,
    /// Anti-entropy interval of both replicas, in ms. Watch notices drive replication; this
    /// is only the backstop.
    #[arg(long, default_value_t = 5000)]
    anti_entropy_ms: u64,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    /// Ops in the full snapshot restored in process; the delta is 1% of it.
    /// [default: 1000000; --quick: 10000]
    #[arg(long)]
    ops: Option<u64>,
    /// Ops a release plaitd holds for the backup and export figures; 0 skips those
    /// figures (only the in-process restores run). [default: 1000000; --quick: 10000]
    #[arg(long)]
    backup_ops: Option<u64>,
    /// Seconds of each put-latency window (without, then with an export). [default: 5; --quick: 1]
    #[arg(long)]
    seconds: Option<f64>,
    /// Concurrent single-put clients in the latency windows.
    #[arg(long, default_value_t = 16)]
    clients: usize,
}

#[derive(Args, Debug)]
struct ManyLogsArgs {
    /// Logs hosted in the second run (one written, the rest idle). [default: 1000; --quick: 50]
    #[arg(long)]
    logs: Option<u64>,
    /// Single-op Data.Put calls per second to the one written log.
    #[arg(long, default_value_t = 80)]
    rate: u64,
    /// Seconds of writes per run. [default: 20; --quick: 2]
    #[arg(long)]
    seconds: Option<f64>,
}

#[derive(Args, Debug)]
struct AllArgs {
    /// Ops in the reopen directory, which kv-get then reads.
    /// [default: 10000000; --quick: 100000]
    #[arg(long)]
    reopen_ops: Option<u64>,
    /// Total ops of the ingest figure. [default: 1000000; --quick: 10000]
    #[arg(long)]
    ingest_ops: Option<u64>,
    /// Duration of the unary figure. [default: 10; --quick: 1]
    #[arg(long)]
    unary_seconds: Option<f64>,
    /// Ops on the catch-up source, for each shape. [default: 1000000; --quick: 10000]
    #[arg(long)]
    catchup_ops: Option<u64>,
    /// Seconds of each replication latency load. [default: 10; --quick: 1]
    #[arg(long)]
    latency_seconds: Option<f64>,
    /// Ops of the one-round large-entry catch-up that shows memory as the amount
    /// replicated grows. [default: 10000000; --quick: 100000]
    #[arg(long)]
    catchup_memory_ops: Option<u64>,
}

/// Default sizes, shrunk under `--quick`.
#[derive(Clone, Copy, Debug)]
struct Scale {
    quick: bool,
}

impl Scale {
    fn n(self, given: Option<u64>, full: u64) -> u64 {
        given.unwrap_or(if self.quick { (full / QUICK_DIVISOR).max(1) } else { full })
    }

    fn rounds(self, given: Option<usize>) -> usize {
        given.unwrap_or(if self.quick { 1 } else { 3 }).max(1)
    }

    fn seconds(self, given: Option<f64>, full: f64) -> f64 {
        given.unwrap_or(if self.quick { (full / 10.0).max(1.0) } else { full })
    }
}

// ---------------------------------------------------------------------------------------
// The report.

/// One line of the table.
struct Row {
    figure: String,
    value: String,
    target: String,
    /// How far the value is from the target, oriented so that 1.0 or more meets it.
    ratio: Option<f64>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// A figure without a target.
    fn info(&mut self, figure: impl Into<String>, value: impl Into<String>) {
        self.rows.push(Row { figure: figure.into(), value: value.into(), target: "—".into(), ratio: None });
    }

    /// A figure that should be at least `target`.
    fn at_least(
        &mut self,
        figure: impl Into<String>,
        value: f64,
        shown: String,
        target: f64,
        target_shown: &str,
    ) {
        self.rows.push(Row {
            figure: figure.into(),
            value: shown,
            target: format!("≥ {target_shown}"),
            ratio: Some(value / target),
        });
    }

    /// A figure that should be below `target`.
    fn below(
        &mut self,
        figure: impl Into<String>,
        value: f64,
        shown: String,
        target: f64,
        target_shown: &str,
    ) {
        self.rows.push(Row {
            figure: figure.into(),
            value: shown,
            target: format!("< {target_shown}"),
            ratio: Some(target / value.max(f64::MIN_POSITIVE)),
        });
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("| Figure | Value | Target | Ratio to target | Meets |\n");
        out.push_str("|---|---|---|---|---|\n");
        for row in &self.rows {
            let (ratio, meets) = match row.ratio {
                Some(r) => (format!("{r:.2}×"), if r >= 1.0 { "yes" } else { "**no**" }),
                None => (String::new(), ""),
            };
            let _ = writeln!(out, "| {} | {} | {} | {ratio} | {meets} |", row.figure, row.value, row.target);
        }
        out
    }
}

fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn rate(value: f64, unit: &str) -> String {
    format!("{} {unit}", group_digits(value.round() as u64))
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 { format!("{us:.2} µs") } else { format!("{us:.1} µs") }
}

fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    if bytes >= 10 * 1024 * 1024 * 1024 {
        format!("{:.1} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// The `p` quantile (0..=1) of sorted samples, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    percentile(&samples, 0.5)
}

// ---------------------------------------------------------------------------------------
// Data: deterministic keys and values, so reads know which keys exist.

/// splitmix64: a cheap, well-mixed function of a counter.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// `len` pseudo-random (incompressible) bytes derived from `seed`.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut state = seed;
    while out.len() < len {
        state = mix(state);
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The key of op number `i`: 16 random-looking bytes, distinct for distinct `i`.
fn bench_key(i: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(KEY_BYTES);
    key.extend_from_slice(&mix(i).to_be_bytes());
    key.extend_from_slice(&i.to_be_bytes());
    key
}

fn put_op(i: u64) -> Op {
    Op::Put { key: bench_key(i), value: filler(i ^ 0x5EED, VALUE_BYTES) }
}

fn writer_key() -> WriterKey {
    WriterKey::generate(&mut StdRng::seed_from_u64(1))
}

fn kv_manifest(key: &WriterKey) -> anyhow::Result<SignedManifest> {
    Ok(Manifest {
        name: LOG_NAME.into(),
        log_type: LogType::Kv,
        writers: Writers::keys(vec![key.public()]),
        created_by: key.public(),
        created_at_lamport: 0,
        options: vec![],
    }
    .sign(key)?)
}

fn temp_dir(work_dir: &Path, what: &str) -> anyhow::Result<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("plait-bench-{what}-"))
        .disable_cleanup(KEEP_DIRS.load(Ordering::Relaxed))
        .tempdir_in(work_dir)
        .with_context(|| format!("cannot make a temporary directory under {}", work_dir.display()))
}

/// Bytes of every file under `path`.
fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// Process facts from /proc.

/// (peak, current) resident memory of this process in bytes.
fn own_rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets this process's peak RSS (VmHWM), so a figure's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// User plus system CPU seconds of a process or one of its threads (`/proc/<path>/stat`).
fn cpu_seconds(stat_path: &Path) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let Some((_, rest)) = stat.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / CLOCK_TICKS_PER_SECOND
}

/// CPU seconds every CPU of the machine (VM) spent busy, from /proc/stat: anything not
/// idle or waiting for I/O, whoever ran it.
fn vm_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0.0 };
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    // already counted in user.
    let busy: u64 =
        ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum();
    busy as f64 / CLOCK_TICKS_PER_SECOND
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
}

/// CPU seconds per thread name of a process (`self` or a pid), largest first.
fn thread_cpu(pid: &str) -> Vec<(String, f64)> {
    let mut by_name: Vec<(String, f64)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return by_name };
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_owned();
        let seconds = cpu_seconds(&task.path().join("stat"));
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => *s += seconds,
            None => by_name.push((name, seconds)),
        }
    }
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    by_name
}

fn thread_cpu_delta(before: &[(String, f64)], after: &[(String, f64)]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = after
        .iter()
        .map(|(name, s)| {
            let earlier = before.iter().find(|(n, _)| n == name).map_or(0.0, |(_, s)| *s);
            (name.clone(), s - earlier)
        })
        .filter(|(_, s)| *s > 0.0)
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

fn describe_threads(threads: &[(String, f64)], wall: Duration) -> String {
    threads
        .iter()
        .take(4)
        .map(|(name, s)| format!("{name} {:.2}", s / wall.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------
// Store helpers.

/// Counts what the writer thread commits, to see group sizes and commit time.
#[derive(Default)]
struct CommitCounter {
    batches: AtomicU64,
    entries: AtomicU64,
    ops: AtomicU64,
    commit_nanos: AtomicU64,
}

impl StoreObserver for CommitCounter {
    fn batch_committed(&self, entries: u64, ops: u64, fsync: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.entries.fetch_add(entries, Ordering::Relaxed);
        self.ops.fetch_add(ops, Ordering::Relaxed);
        self.commit_nanos.fetch_add(fsync.as_nanos() as u64, Ordering::Relaxed);
    }

    fn pending_changed(&self, _: u64) {}
}

/// Opens a store on a blocking thread; returns it with the time `Store::open` took.
async fn open_store(
    path: &Path,
    key: &WriterKey,
    observer: Arc<dyn StoreObserver>,
) -> anyhow::Result<(Store, Duration)> {
    let mut config = StoreConfig::new(path, key.clone());
    config.cache_bytes = CACHE_BYTES;
    // The same variable plaitd reads, so in-process figures can be compared across it.
    if let Some(n) = std::env::var("PLAIT_ENGINE_THREADS").ok().and_then(|v| v.parse().ok()) {
        config.engine_threads = n;
    }
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let store = Store::open(config, &mut StdRng::seed_from_u64(7), observer)?;
        anyhow::Ok((store, started.elapsed()))
    })
    .await?
}

/// Closes a store and drops it on a blocking thread (dropping fjall joins its workers),
/// so the directory is free for the next opener.
async fn close_store(store: Store) -> anyhow::Result<()> {
    store.close().await?;
    tokio::task::spawn_blocking(move || drop(store)).await?;
    Ok(())
}

async fn ensure_log(store: &Store, key: &WriterKey) -> anyhow::Result<LogId> {
    let (summary, _) = store.create_log(kv_manifest(key)?).await?;
    Ok(summary.log_id)
}

/// Prints progress of a long step to stderr until aborted.
fn spawn_progress(what: String, done: Arc<AtomicU64>, total: u64) -> tokio::task::JoinHandle<()> {
    let started = Instant::now();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            let n = done.load(Ordering::Relaxed);
            let rate = per_second(n, started.elapsed());
            let eta = if rate > 0.0 { (total.saturating_sub(n)) as f64 / rate } else { 0.0 };
            eprintln!(
                "  {what}: {} / {} ops, {} ops/s, about {eta:.0} s left",
                group_digits(n),
                group_digits(total),
                group_digits(rate as u64)
            );
        }
    })
}

/// Writes ops `range` (keys `bench_key(i)`) to `log` from `tasks` concurrent tasks, `batch`
/// ops per `Store::write`. Returns the wall time from the first call to the last ack.
async fn fill(
    store: &Store,
    log: LogId,
    range: std::ops::Range<u64>,
    tasks: usize,
    batch: u64,
    what: &str,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicU64::new(range.start));
    let done = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress(what.to_owned(), done.clone(), range.end - range.start);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let (store, next, done, end) = (store.clone(), next.clone(), done.clone(), range.end);
        handles.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                if from >= end {
                    return anyhow::Ok(());
                }
                let to = (from + batch).min(end);
                store.write((from..to).map(|i| (log, put_op(i))).collect()).await?;
                done.fetch_add(to - from, Ordering::Relaxed);
            }
        }));
    }
    let mut result = Ok(());
    for handle in handles {
        if let Err(e) = handle.await? {
            result = Err(e);
        }
    }
    let elapsed = started.elapsed();
    progress.abort();
    result.map(|()| elapsed)
}

/// Entries and their total canonical bytes, read back page by page.
fn stored_entry_bytes(store: &Store, log: &LogId) -> anyhow::Result<(u64, u64)> {
    let (mut after, mut entries, mut bytes) = (0, 0u64, 0u64);
    loop {
        let page = store.entries_after(log, after, 64, 32 * 1024 * 1024)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        entries += page.len() as u64;
        bytes += page.iter().map(|e| e.entry.bytes().len() as u64).sum::<u64>();
    }
    Ok((entries, bytes))
}

/// Raw fjall group commit: `records` records of a 32-byte key and `value_bytes` of value
/// into one keyspace, one batch and one `persist(SyncData)` per `per_fsync` records.
fn raw_fjall(path: &Path, records: u64, value_bytes: usize, per_fsync: u64) -> anyhow::Result<Duration> {
    let db = fjall::Database::builder(path).cache_size(CACHE_BYTES).open()?;
    let keyspace = db.keyspace("entries", KeyspaceCreateOptions::default)?;
    // Values are slices of one random pool, so making them costs a copy, as in the store.
    const POOL_SLACK: usize = 4096;
    let pool = filler(42, value_bytes + POOL_SLACK);
    let started = Instant::now();
    let mut i = 0;
    while i < records {
        let n = per_fsync.min(records - i);
        let mut batch = db.batch();
        for j in i..i + n {
            let offset = (mix(j) % POOL_SLACK as u64) as usize;
            let key = filler(j, RAW_KEY_BYTES);
            batch.insert(&keyspace, key, pool[offset..offset + value_bytes].to_vec());
        }
        batch.commit()?;
        db.persist(PersistMode::SyncData)?;
        i += n;
    }
    let elapsed = started.elapsed();
    drop(keyspace);
    drop(db);
    Ok(elapsed)
}

// ---------------------------------------------------------------------------------------
// gRPC helpers.

async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(endpoint.to_owned())?.tcp_nodelay(true).connect().await?)
}

/// Starts a release plaitd over `data_dir` (with its metrics endpoint on a loopback port)
/// and returns it with its spawn-to-ready time.
fn start_plaitd(data_dir: &Path) -> anyhow::Result<(Plaitd, Duration)> {
    start_replica(data_dir, &[])
}

/// `start_plaitd` with further flags.
fn start_replica(data_dir: &Path, extra: &[&str]) -> anyhow::Result<(Plaitd, Duration)> {
    let mut flags = vec!["--metrics-listen", "127.0.0.1:0"];
    flags.extend_from_slice(extra);
    let started = Instant::now();
    let replica = Plaitd::start(data_dir, &flags).context(
        "cannot start plaitd; build it next to this binary first: \
         cargo build --release -p plait-replica -p plait-tests",
    )?;
    Ok((replica, started.elapsed()))
}

/// Sums of plaitd's Prometheus series of the write path (names starting with
/// `plait_batch_`, `plait_fsync`, `plait_write_stall` or `plait_checkpoints_`; labels
/// dropped), read with a bare HTTP/1.1 GET so the bench needs no HTTP client.
fn scrape_commit_metrics(addr: std::net::SocketAddr) -> Vec<(String, f64)> {
    let Some(text) = plait_tests::fetch_metrics(addr) else { return Vec::new() };
    let mut sums: Vec<(String, f64)> = Vec::new();
    let wanted = ["plait_batch_", "plait_fsync", "plait_write_stall", "plait_checkpoints_"];
    for line in text.lines().filter(|l| wanted.iter().any(|w| l.starts_with(w))) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let name = series.split('{').next().unwrap_or(series).to_owned();
        let Ok(value) = value.parse::<f64>() else { continue };
        match sums.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v += value,
            None => sums.push((name, value)),
        }
    }
    sums
}

/// The change of a scraped series whose name starts with `prefix` and ends with `suffix`.
fn metric_delta(before: &[(String, f64)], after: &[(String, f64)], prefix: &str, suffix: &str) -> f64 {
    let find = |set: &[(String, f64)]| {
        set.iter().find(|(n, _)| n.starts_with(prefix) && n.ends_with(suffix)).map_or(0.0, |(_, v)| *v)
    };
    find(after) - find(before)
}

/// Writes the key the directory's entries are signed with as plaitd's writer key, so a
/// plaitd started on an in-process-built directory signs with the same key.
fn write_writer_key(data_dir: &Path, key: &WriterKey) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join("writer.key");
    if !path.exists() {
        std::fs::write(&path, format!("{}\n", hex::encode(key.secret())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Figures.

fn entry_cpu(args: &EntryCpuArgs, scale: Scale, report: &mut Report) -> anyhow::Result<()> {
    let n = scale.n(args.entries, 20_000).max(VERIFY_BATCH as u64);
    let n_large = (n / 10).max(1);
    eprintln!("entry-cpu: {n} 1-op entries, {n_large} 100-op entries");
    let key = writer_key();
    // Any 32 bytes do for the log and the parent: signing and verifying do not look them up.
    let log = LogId(id32(1));
    let parent = EntryHash(id32(2));
    let draft = |i: u64, ops: u64| EntryDraft {
        log,
        time: i + 2,
        next: vec![parent],
        refs: Vec::new(),
        ops: (0..ops).map(|j| put_op(i * ops + j)).collect(),
    };
    let per = |d: Duration, count: u64| d / count as u32;

    let drafts: Vec<EntryDraft> = (0..n).map(|i| draft(i, 1)).collect();
    let started = Instant::now();
    let small: Vec<_> = drafts.into_iter().map(|d| d.sign(&key)).collect::<Result<_, _>>()?;
    let sign_small = per(started.elapsed(), n);

    let drafts: Vec<EntryDraft> = (0..n_large).map(|i| draft(i, 100)).collect();
    let started = Instant::now();
    let large: Vec<_> = drafts.into_iter().map(|d| d.sign(&key)).collect::<Result<_, _>>()?;
    let sign_large = per(started.elapsed(), n_large);

    let small_bytes: Vec<Vec<u8>> = small.iter().map(|e| e.bytes().to_vec()).collect();
    let large_bytes: Vec<Vec<u8>> = large.iter().map(|e| e.bytes().to_vec()).collect();
    let started = Instant::now();
    let decoded: Vec<DecodedEntry> =
        small_bytes.iter().map(|b| DecodedEntry::decode(b)).collect::<Result<_, _>>()?;
    let decode_small = per(started.elapsed(), n);
    let started = Instant::now();
    let decoded_large: Vec<DecodedEntry> =
        large_bytes.iter().map(|b| DecodedEntry::decode(b)).collect::<Result<_, _>>()?;
    let decode_large = per(started.elapsed(), n_large);
    std::hint::black_box(decoded_large);

    let singles = decoded.clone();
    let started = Instant::now();
    for entry in singles {
        std::hint::black_box(entry.verify()?);
    }
    let verify_one = per(started.elapsed(), n);

    let batches: Vec<Vec<DecodedEntry>> = decoded.chunks(VERIFY_BATCH).map(<[_]>::to_vec).collect();
    let started = Instant::now();
    for batch in batches {
        for result in verify_batch(batch) {
            std::hint::black_box(result?);
        }
    }
    let verify_batched = per(started.elapsed(), n);

    // The digest each stored entry is added to: one 256-bit addition of its hash, timed
    // over every entry's hash many times (a single pass is too short to time), side by
    // side with hashing the entry's bytes, which storing it costs anyway.
    const DIGEST_PASSES: u32 = 100;
    let hashes: Vec<EntryHash> = small.iter().map(|e| e.hash()).collect();
    let started = Instant::now();
    let mut digest = plait_core::SetDigest::default();
    for _ in 0..DIGEST_PASSES {
        for hash in &hashes {
            digest.add(std::hint::black_box(hash));
        }
    }
    std::hint::black_box(digest);
    let digest_ns = started.elapsed().as_nanos() as f64 / f64::from(DIGEST_PASSES) / n as f64;
    let started = Instant::now();
    for bytes in &small_bytes {
        std::hint::black_box(blake3::hash(std::hint::black_box(bytes)));
    }
    let hash_small = per(started.elapsed(), n);

    let small_len = small_bytes[0].len();
    let large_len = large_bytes[0].len();
    report.info(
        "entry-cpu: sign 1-op entry (encode + hash + sign)",
        format!("{} ({small_len} B)", micros(sign_small)),
    );
    report.info(
        "entry-cpu: sign 100-op entry",
        format!("{} ({} per op, {large_len} B)", micros(sign_large), micros(sign_large / 100)),
    );
    report.info("entry-cpu: decode 1-op entry", micros(decode_small));
    report.info(
        "entry-cpu: decode 100-op entry",
        format!("{} ({} per op)", micros(decode_large), micros(decode_large / 100)),
    );
    report.info("entry-cpu: verify one signature", micros(verify_one));
    report.info(format!("entry-cpu: verify_batch of {VERIFY_BATCH}, per entry"), micros(verify_batched));
    report.info(
        "entry-cpu: digest maintenance per stored entry (add its hash)",
        format!(
            "{:.1} ns ({:.2}% of blake3 over the 1-op entry, {:.3}% of verify_batch per entry)",
            digest_ns,
            100.0 * digest_ns / hash_small.as_nanos() as f64,
            100.0 * digest_ns / verify_batched.as_nanos() as f64
        ),
    );
    Ok(())
}

/// 32 fixed random-looking bytes.
fn id32(seed: u64) -> [u8; 32] {
    filler(seed, 32).try_into().expect("32 bytes")
}

/// What one round of the ingest figure measured.
struct IngestRound {
    elapsed: Duration,
    entries: u64,
    entry_bytes: u64,
    commits: u64,
    commit: Duration,
    disk: u64,
    threads: Vec<(String, f64)>,
    /// CPU seconds the whole VM was busy while the store wrote.
    vm_busy: f64,
    peak_rss: u64,
    raw_per_op: Duration,
    raw_per_entry: Duration,
}

/// The value version `v` of key `i` holds in the history figure.
fn history_value(i: u64, v: u64) -> Vec<u8> {
    filler(i.wrapping_mul(1_000_003) ^ v, VALUE_BYTES)
}

/// Keys overwritten `versions` times, one round of puts over every key per version, then
/// random reads now and as of the end of a random earlier round, side by side.
async fn history(
    args: &HistoryArgs,
    scale: Scale,
    work_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let keys = scale.n(args.keys, 1_000_000);
    let versions = args.versions;
    let reads = scale.n(args.reads, 200_000);
    eprintln!("history: {} keys x {versions} versions of {VALUE_BYTES} B", group_digits(keys));
    let tmp = temp_dir(work_dir, "history")?;
    let key = writer_key();
    let (store, _) = open_store(&tmp.path().join("store"), &key, Arc::new(plait_store::NoopObserver)).await?;
    let log = ensure_log(&store, &key).await?;
    const TASKS: usize = 8;
    const BATCH: u64 = 1000;
    // The seq at the end of each round: as of it, every key holds that round's value.
    let mut ends = Vec::with_capacity(versions as usize);
    let mut took = Duration::ZERO;
    let (mut disk_first, mut history_first) = (0, 0);
    for v in 0..versions {
        let next = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let progress =
            spawn_progress(format!("history: version {} of {versions}", v + 1), done.clone(), keys);
        let started = Instant::now();
        let mut handles = Vec::with_capacity(TASKS);
        for _ in 0..TASKS {
            let (store, next, done) = (store.clone(), next.clone(), done.clone());
            handles.push(tokio::spawn(async move {
                loop {
                    let from = next.fetch_add(BATCH, Ordering::Relaxed);
                    if from >= keys {
                        return anyhow::Ok(());
                    }
                    let to = (from + BATCH).min(keys);
                    let ops =
                        (from..to).map(|i| (log, Op::Put { key: bench_key(i), value: history_value(i, v) }));
                    store.write(ops.collect()).await?;
                    done.fetch_add(to - from, Ordering::Relaxed);
                }
            }));
        }
        for handle in handles {
            handle.await??;
        }
        took += started.elapsed();
        progress.abort();
        ends.push(store.log(&log).context("the bench log vanished")?.seq);
        if v == 0 {
            (disk_first, history_first) = (store.disk_bytes(), store.history_disk_bytes());
        }
    }
    let (disk, history_disk) = (store.disk_bytes(), store.history_disk_bytes());
    let overwrites = keys * (versions - 1);

    let reader = store.clone();
    let ends_read = ends.clone();
    let (now, past) = tokio::task::spawn_blocking(move || {
        let mut rng = StdRng::seed_from_u64(13);
        let warm_up = (reads / 10).min(10_000);
        let (mut now, mut past) = (Vec::with_capacity(reads as usize), Vec::with_capacity(reads as usize));
        // Interleaved, so both kinds see the same cache and machine.
        for n in 0..warm_up + reads {
            let i = rng.gen_range(0..keys);
            let v = rng.gen_range(0..versions);
            let k = bench_key(i);
            let started = Instant::now();
            let row = reader.get_kv(&log, &k)?;
            let current = started.elapsed();
            let started = Instant::now();
            let at = reader.resolve_as_of(&log, plait_store::AsOf::Seq(ends_read[v as usize]))?;
            let old = reader.get_kv_as_of(&log, &k, at)?;
            let then = started.elapsed();
            anyhow::ensure!(
                row.map(|r| r.value) == Some(history_value(i, versions - 1)),
                "key {i} does not hold its last version"
            );
            anyhow::ensure!(
                old.map(|r| r.value) == Some(history_value(i, v)),
                "key {i} as of seq {at} does not hold version {v}"
            );
            if n >= warm_up {
                now.push(current);
                past.push(then);
            }
        }
        now.sort();
        past.sort();
        anyhow::Ok((now, past))
    })
    .await??;
    close_store(store).await?;

    report.info(
        format!(
            "history: write {} keys x {versions} versions, durable, {TASKS} tasks x {BATCH}-op calls",
            group_digits(keys)
        ),
        rate(per_second(keys * versions, took), "ops/s"),
    );
    report.info(
        "history: disk per overwritten version (whole store; of it the history rows)",
        format!(
            "{:.0} B ({:.0} B); history {} of {} on disk",
            disk.saturating_sub(disk_first) as f64 / overwrites as f64,
            history_disk.saturating_sub(history_first) as f64 / overwrites as f64,
            mib(history_disk),
            mib(disk)
        ),
    );
    let p99 = percentile(&past, 0.99);
    report.below(
        format!(
            "history: Store::get_kv_as_of at {} keys x {versions} versions, p99 (p50)",
            group_digits(keys)
        ),
        p99.as_secs_f64(),
        format!("{} ({})", micros(p99), micros(percentile(&past, 0.5))),
        0.001,
        "1 ms",
    );
    report.info(
        "history: Store::get_kv now, same run, p99 (p50); as-of / now at p50",
        format!(
            "{} ({}); {:.2}",
            micros(percentile(&now, 0.99)),
            micros(percentile(&now, 0.5)),
            percentile(&past, 0.5).as_secs_f64() / percentile(&now, 0.5).as_secs_f64().max(1e-9)
        ),
    );
    Ok(())
}

/// One round: the store, then raw fjall of the same bytes, each in a fresh directory.
async fn ingest_round(args: &IngestArgs, ops: u64, work_dir: &Path) -> anyhow::Result<IngestRound> {
    let tmp = temp_dir(work_dir, "ingest")?;
    reset_peak_rss();
    let key = writer_key();
    let counter = Arc::new(CommitCounter::default());
    let (store, _) = open_store(&tmp.path().join("store"), &key, counter.clone()).await?;
    let log = ensure_log(&store, &key).await?;
    let threads_before = thread_cpu("self");
    let vm_before = vm_busy_seconds();
    let elapsed = fill(&store, log, 0..ops, args.tasks, args.batch.max(1), "ingest").await?;
    let vm_busy = vm_busy_seconds() - vm_before;
    let threads = thread_cpu_delta(&threads_before, &thread_cpu("self"));
    let (peak_rss, _) = own_rss();
    eprintln!("  store: {} ops/s; reading back entry sizes", group_digits(per_second(ops, elapsed) as u64));

    let (entries, entry_bytes) = stored_entry_bytes(&store, &log)?;
    let summary = store.log(&log).context("the bench log vanished")?;
    anyhow::ensure!(summary.ops == ops, "the store holds {} ops, expected {ops}", summary.ops);
    anyhow::ensure!(entries == summary.seq, "read {entries} entries, seq is {}", summary.seq);
    let disk = store.disk_bytes();
    close_store(store).await?;

    // Raw fjall of the same bytes, two ways: (a) one record per op carrying its share of
    // the entry bytes, 1000 records per fsync (the shape of the targets' 260,000 entries/s
    // anchor); (b) the entries the store wrote, as many and of the same average size,
    // 1000 per fsync.
    let op_share = (entry_bytes / ops).max(1) as usize;
    let entry_avg = (entry_bytes / entries.max(1)).max(1) as usize;
    let dir = tmp.path().join("raw-per-op");
    let raw_per_op =
        tokio::task::spawn_blocking(move || raw_fjall(&dir, ops, op_share, RAW_RECORDS_PER_FSYNC)).await??;
    let dir = tmp.path().join("raw-per-entry");
    let raw_per_entry =
        tokio::task::spawn_blocking(move || raw_fjall(&dir, entries, entry_avg, RAW_RECORDS_PER_FSYNC))
            .await??;
    eprintln!(
        "  raw fjall: {} records/s of {op_share} B; {} entries/s of {entry_avg} B",
        group_digits(per_second(ops, raw_per_op) as u64),
        group_digits(per_second(entries, raw_per_entry) as u64)
    );
    Ok(IngestRound {
        elapsed,
        entries,
        entry_bytes,
        commits: counter.batches.load(Ordering::Relaxed).max(1),
        commit: Duration::from_nanos(counter.commit_nanos.load(Ordering::Relaxed)),
        disk,
        threads,
        vm_busy,
        peak_rss,
        raw_per_op,
        raw_per_entry,
    })
}

/// The median of `values` and their range, as "median (min–max)" when there are several.
fn spread(values: &[f64], show: impl Fn(f64) -> String) -> (f64, String) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[(sorted.len() - 1) / 2];
    if sorted.len() < 2 {
        return (median, show(median));
    }
    (median, format!("{} (range {} – {})", show(median), show(sorted[0]), show(sorted[sorted.len() - 1])))
}

async fn ingest(args: &IngestArgs, scale: Scale, work_dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let ops = scale.n(args.ops, 1_000_000);
    let rounds = scale.rounds(args.rounds);
    eprintln!(
        "ingest: {} kv puts through Store::write, {} tasks x {} ops per call, {rounds} rounds",
        group_digits(ops),
        args.tasks,
        args.batch,
    );
    let mut results = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        eprintln!(" round {round} of {rounds}");
        results.push(ingest_round(args, ops, work_dir).await?);
    }
    let store_rates: Vec<f64> = results.iter().map(|r| per_second(ops, r.elapsed)).collect();
    let raw_op_rates: Vec<f64> = results.iter().map(|r| per_second(ops, r.raw_per_op)).collect();
    let raw_entry_rates: Vec<f64> = results.iter().map(|r| per_second(r.entries, r.raw_per_entry)).collect();
    let raw_entry_op_rates: Vec<f64> = results.iter().map(|r| per_second(ops, r.raw_per_entry)).collect();
    // Ratios pair each store run with the raw run right after it, so both saw the same machine.
    let ratio_per_op: Vec<f64> = store_rates.iter().zip(&raw_op_rates).map(|(s, r)| s / r).collect();
    let ratio_per_entry: Vec<f64> = store_rates.iter().zip(&raw_entry_op_rates).map(|(s, r)| s / r).collect();
    let last = results.last().context("no rounds")?;
    let entry_avg = last.entry_bytes / last.entries.max(1);
    let op_share = last.entry_bytes / ops;

    let (store_rate, shown) = spread(&store_rates, |v| rate(v, "ops/s"));
    report.at_least(
        format!(
            "ingest: Store::write, {} tasks x {}-op calls, durable, {} ops, median of {rounds}",
            args.tasks,
            args.batch,
            group_digits(ops)
        ),
        store_rate,
        shown,
        150_000.0,
        "150,000 ops/s",
    );
    report.info(
        "ingest: what the store wrote (last round)",
        format!(
            "{} entries, {:.0} ops/entry, {entry_avg} B/entry ({op_share} B/op), {} commits ({:.0} ops each), \
             commit+fsync {:.0}% of wall, {} on disk",
            group_digits(last.entries),
            ops as f64 / last.entries.max(1) as f64,
            group_digits(last.commits),
            ops as f64 / last.commits as f64,
            100.0 * last.commit.as_secs_f64() / last.elapsed.as_secs_f64(),
            mib(last.disk),
        ),
    );
    report.info(
        "ingest: CPU in cores by thread (last round)",
        format!(
            "{}; whole VM {:.2} of {}",
            describe_threads(&last.threads, last.elapsed),
            last.vm_busy / last.elapsed.as_secs_f64(),
            available_cores()
        ),
    );
    report.info(
        format!("ingest: raw fjall, 1 record per op of {op_share} B, {RAW_RECORDS_PER_FSYNC} per fsync"),
        format!("{} = the same in ops/s", spread(&raw_op_rates, |v| rate(v, "records/s")).1),
    );
    report.info(
        format!(
            "ingest: raw fjall, the store's {} entries of {entry_avg} B, {RAW_RECORDS_PER_FSYNC} per fsync",
            group_digits(last.entries)
        ),
        format!(
            "{} = {}",
            spread(&raw_entry_rates, |v| rate(v, "entries/s")).1,
            rate(spread(&raw_entry_op_rates, |v| v.to_string()).0, "ops/s")
        ),
    );
    let (ratio, shown) = spread(&ratio_per_op, |v| format!("{v:.2}"));
    report.at_least("ingest: store / raw fjall, 1 record per op", ratio, shown, 0.5, "0.50");
    let (ratio, shown) = spread(&ratio_per_entry, |v| format!("{v:.2}"));
    report.at_least("ingest: store / raw fjall, the store's entries", ratio, shown, 0.5, "0.50");
    let peak_rss = results.iter().map(|r| r.peak_rss).max().unwrap_or(0);
    report.info("ingest: bench process peak RSS (VmHWM) while writing", mib(peak_rss));
    Ok(())
}

async fn unary(args: &UnaryArgs, scale: Scale, work_dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    let seconds = scale.seconds(args.seconds, 10.0);
    let tmp = temp_dir(work_dir, "unary")?;
    let data_dir = tmp.path().join("data");
    eprintln!(
        "unary: release plaitd, {} clients over {} connections, single-op Put for {seconds} s",
        args.clients, args.channels
    );
    let (mut replica, _) = tokio::task::block_in_place(|| start_plaitd(&data_dir))?;
    let endpoint = replica.endpoint();
    let mut channels = Vec::with_capacity(args.channels.max(1));
    for _ in 0..args.channels.max(1) {
        channels.push(connect(&endpoint).await?);
    }
    pb::logs_client::LogsClient::new(channels[0].clone())
        .create_log(pb::CreateLogRequest {
            name: LOG_NAME.into(),
            r#type: pb::LogType::Kv as i32,
            ..Default::default()
        })
        .await?;

    // A short warm-up so connections, the log and the writer are all live.
    let mut warm = pb::data_client::DataClient::new(channels[0].clone());
    for i in 0..100 {
        let Op::Put { key, value } = put_op(u64::MAX - i) else { unreachable!() };
        warm.put(pb::PutRequest { log: LOG_NAME.into(), key, value, concern: None }).await?;
    }

    let pid = replica.pid().to_string();
    let server_before = thread_cpu(&pid);
    let client_before = cpu_seconds(Path::new("/proc/self/stat"));
    let vm_before = vm_busy_seconds();
    let metrics_before = replica.metrics.map(scrape_commit_metrics).unwrap_or_default();
    let rounds = scale.rounds(args.rounds);
    let mut latencies = Vec::new();
    let mut rates = Vec::with_capacity(rounds);
    let mut wall = Duration::ZERO;
    for round in 0..rounds {
        let (mut round_latencies, elapsed) = unary_round(args, &channels, seconds, round as u64).await?;
        let round_rate = per_second(round_latencies.len() as u64, elapsed);
        eprintln!("  round {} of {rounds}: {} ops/s", round + 1, group_digits(round_rate as u64));
        rates.push(round_rate);
        latencies.append(&mut round_latencies);
        wall += elapsed;
    }
    let server = thread_cpu_delta(&server_before, &thread_cpu(&pid));
    let server_cpu: f64 = server.iter().map(|(_, s)| s).sum();
    let client_cpu = cpu_seconds(Path::new("/proc/self/stat")) - client_before;
    let vm_busy = vm_busy_seconds() - vm_before;
    let metrics_after = replica.metrics.map(scrape_commit_metrics).unwrap_or_default();
    let rss = replica.rss_bytes().unwrap_or(0);
    replica.terminate()?;

    // The baseline: the same clients against a bare tonic unary server in its own process.
    eprintln!("unary: the same clients against a bare tonic unary server (grpc.health.v1 Check)");
    let (mut bare, bare_addr) = start_bare_server()?;
    let bare_endpoint = format!("http://{bare_addr}");
    let mut bare_channels = Vec::with_capacity(channels.len());
    for _ in 0..channels.len() {
        bare_channels.push(connect(&bare_endpoint).await?);
    }
    let bare_pid = bare.id().to_string();
    let bare_before = thread_cpu(&bare_pid);
    let mut bare_rates = Vec::with_capacity(rounds);
    let mut bare_wall = Duration::ZERO;
    for round in 0..rounds {
        let (calls, elapsed) = bare_round(args, &bare_channels, seconds).await?;
        let round_rate = per_second(calls, elapsed);
        eprintln!("  bare round {} of {rounds}: {} calls/s", round + 1, group_digits(round_rate as u64));
        bare_rates.push(round_rate);
        bare_wall += elapsed;
    }
    let bare_cpu: f64 = thread_cpu_delta(&bare_before, &thread_cpu(&bare_pid)).iter().map(|(_, s)| s).sum();
    let _ = bare.kill();
    let _ = bare.wait();

    latencies.sort();
    let (ops_rate, shown) = spread(&rates, |v| rate(v, "ops/s"));
    report.at_least(
        format!(
            "unary: Data.Put, {} clients / {} connections, durable, median of {rounds} x {seconds} s",
            args.clients,
            channels.len()
        ),
        ops_rate,
        shown,
        25_000.0,
        "25,000 ops/s",
    );
    let (bare_rate, bare_shown) = spread(&bare_rates, |v| rate(v, "calls/s"));
    report.info(
        format!("unary: bare tonic unary server (grpc.health.v1 Check), same clients, median of {rounds} x {seconds} s"),
        format!("{bare_shown}; server {:.2} cores", bare_cpu / bare_wall.as_secs_f64()),
    );
    report.at_least(
        "unary: Data.Put / the bare tonic server, same run",
        ops_rate / bare_rate,
        format!("{:.2}", ops_rate / bare_rate),
        0.7,
        "0.70",
    );
    report.info(
        format!("unary: latency p50 / p99 / max over {} calls", group_digits(latencies.len() as u64)),
        format!(
            "{} / {} / {}",
            micros(percentile(&latencies, 0.5)),
            micros(percentile(&latencies, 0.99)),
            micros(percentile(&latencies, 1.0))
        ),
    );
    let cores = |s: f64| s / wall.as_secs_f64();
    report.info(
        "unary: CPU in cores: plaitd / bench client / whole VM",
        format!(
            "{:.2} / {:.2} / {:.2} of {}; plaitd threads: {}",
            cores(server_cpu),
            cores(client_cpu),
            cores(vm_busy),
            available_cores(),
            describe_threads(&server, wall)
        ),
    );
    let commits = metric_delta(&metrics_before, &metrics_after, "plait_batch_ops", "_count");
    if commits > 0.0 {
        let batch_ops = metric_delta(&metrics_before, &metrics_after, "plait_batch_ops", "_sum");
        let fsync = metric_delta(&metrics_before, &metrics_after, "plait_fsync", "_sum");
        report.info(
            "unary: plaitd group commits (from its metrics)",
            format!(
                "{} commits/s, {:.1} ops each, commit+fsync {} each = {:.0}% of the writer's wall time",
                group_digits((commits / wall.as_secs_f64()) as u64),
                batch_ops / commits,
                micros(Duration::from_secs_f64(fsync / commits)),
                100.0 * fsync / wall.as_secs_f64()
            ),
        );
    }
    // The memory target is for catch-up at 10M ops; sustained writes load the same
    // memtables, so this is the closest reading of it the unary figure gives.
    report.below(
        format!("unary: plaitd RSS after {} durable puts", group_digits(latencies.len() as u64)),
        rss as f64,
        mib(rss),
        256.0 * 1024.0 * 1024.0,
        "256 MiB",
    );
    Ok(())
}

/// One timed window of single-op puts from every client; returns every call's latency.
async fn unary_round(
    args: &UnaryArgs,
    channels: &[Channel],
    seconds: f64,
    round: u64,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let issued = Arc::new(AtomicU64::new(0));
    let max_ops = args.ops.unwrap_or(u64::MAX);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut handles = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let mut data = pb::data_client::DataClient::new(channels[client % channels.len()].clone());
        let issued = issued.clone();
        // Keys unique per round and client: every put is a new key, as in ingest.
        let first = (round << 56) | ((client as u64) << 40);
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(64 * 1024);
            let mut n = 0u64;
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_ops {
                let Op::Put { key, value } = put_op(first | n) else { unreachable!() };
                n += 1;
                let call = Instant::now();
                data.put(pb::PutRequest { log: LOG_NAME.into(), key, value, concern: None }).await?;
                latencies.push(call.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await??);
    }
    Ok((latencies, started.elapsed()))
}

/// One round of the baseline: `args.clients` tasks calling the bare server's unary
/// `Check` back to back for `seconds`. Returns the calls made and the time taken.
async fn bare_round(args: &UnaryArgs, channels: &[Channel], seconds: f64) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut handles = Vec::with_capacity(args.clients);
    for client in 0..args.clients {
        let mut health =
            tonic_health::pb::health_client::HealthClient::new(channels[client % channels.len()].clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut calls = 0;
    for handle in handles {
        calls += handle.await??;
    }
    Ok((calls, started.elapsed()))
}

/// Starts `plait-bench bare-server` and reads the address it listens on.
fn start_bare_server() -> anyhow::Result<(std::process::Child, std::net::SocketAddr)> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("bare-server")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot start the bare tonic server")?;
    let stdout = child.stdout.take().context("bare server stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("the bare server said {line:?}"))?;
    Ok((child, addr))
}

/// The baseline server: tonic with only the health service, nothing behind it, on the
/// same kind of runtime as plaitd (tokio's multi-threaded default).
async fn bare_server() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    let (_, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

/// A data directory of `ops` kv puts with keys `bench_key(0..ops)`, built in process.
struct DataDir {
    _tmp: TempDir,
    path: PathBuf,
    key: WriterKey,
    log: LogId,
    ops: u64,
}

/// Times `opens` calls of `Store::open` on a closed directory.
async fn time_opens(path: &Path, key: &WriterKey, opens: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(opens);
    for _ in 0..opens.max(1) {
        let (store, took) = open_store(path, key, Arc::new(plait_store::NoopObserver)).await?;
        close_store(store).await?;
        eprintln!("  Store::open took {} (journal now {})", millis(took), mib(journal_bytes(path)));
        times.push(took);
    }
    Ok(times)
}

/// Bytes of fjall journal files (`*.jnl`) in a data directory: what an open must replay
/// at most.
fn journal_bytes(path: &Path) -> u64 {
    journal_files(path).iter().map(|(_, len)| len).sum()
}

fn journal_files(path: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(path) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jnl"))
        .map(|e| (e.path(), e.metadata().map_or(0, |m| m.len())))
        .collect()
}

/// Open times of one directory in two states: right after a write burst (sealed journals
/// still waiting to be flushed, so every open replays them), and after the store was left
/// open until fjall flushed them (only the active journal remains).
struct OpenTimes {
    after_burst: Vec<Duration>,
    burst_journal: u64,
    after_flush: Vec<Duration>,
    flushed_journal: u64,
}

/// How long to leave a store open for fjall to flush its sealed journals.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);

async fn measure_opens(path: &Path, key: &WriterKey, opens: usize) -> anyhow::Result<OpenTimes> {
    let burst_journal = journal_bytes(path);
    eprintln!("  opening after the write burst, journal {}", mib(burst_journal));
    let after_burst = time_opens(path, key, opens).await?;
    let (store, _) = open_store(path, key, Arc::new(plait_store::NoopObserver)).await?;
    let started = Instant::now();
    while journal_files(path).len() > 1 && started.elapsed() < SETTLE_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    close_store(store).await?;
    let flushed_journal = journal_bytes(path);
    eprintln!(
        "  left open {:.1} s for fjall to flush; journal now {}",
        started.elapsed().as_secs_f64(),
        mib(flushed_journal)
    );
    let after_flush = time_opens(path, key, opens).await?;
    Ok(OpenTimes { after_burst, burst_journal, after_flush, flushed_journal })
}

fn report_opens(report: &mut Report, ops: u64, times: OpenTimes) {
    // The first open after a burst replays every sealed journal; later ones replay only
    // what fjall had not flushed yet when the previous store closed, so the first is the
    // figure (a restart right after heavy writes).
    let first = times.after_burst.first().copied().unwrap_or_default();
    report.below(
        format!(
            "reopen: Store::open at {} ops, first open after the write burst (journal {})",
            group_digits(ops),
            mib(times.burst_journal)
        ),
        first.as_secs_f64(),
        format!("{} (later opens: median {})", millis(first), millis(median(times.after_burst))),
        2.0,
        "2 s",
    );
    let max = times.after_flush.iter().max().copied().unwrap_or_default();
    let med = median(times.after_flush);
    report.below(
        format!(
            "reopen: Store::open at {} ops, after fjall flushed (journal {}), median (max)",
            group_digits(ops),
            mib(times.flushed_journal)
        ),
        med.as_secs_f64(),
        format!("{} ({})", millis(med), millis(max)),
        2.0,
        "2 s",
    );
}

/// Builds a data directory of `ops` ops; at `milestone` (if any) closes it and times
/// `opens` reopens before going on.
async fn build_data_dir(
    work_dir: &Path,
    ops: u64,
    batch: u64,
    milestone: Option<(u64, usize)>,
) -> anyhow::Result<(DataDir, Option<OpenTimes>, Vec<(std::ops::Range<u64>, Duration)>)> {
    let tmp = temp_dir(work_dir, "history")?;
    let path = tmp.path().join("data");
    let key = writer_key();
    eprintln!("building a data directory of {} ops in {}", group_digits(ops), path.display());
    let mut early = None;
    let mut segments = Vec::new();
    let mut from = 0;
    let mut log = None;
    let stops: Vec<u64> = match milestone {
        Some((at, _)) if at > 0 && at < ops => vec![at, ops],
        _ => vec![ops],
    };
    for to in stops {
        let (store, _) = open_store(&path, &key, Arc::new(plait_store::NoopObserver)).await?;
        let id = ensure_log(&store, &key).await?;
        let took = fill(&store, id, from..to, BUILD_TASKS, batch.max(1), "build").await?;
        segments.push((from..to, took));
        if to == ops {
            // Settled like a replica whose checkpointer kept up, so a plaitd started on
            // the directory has no checkpoint of the whole view to take first.
            store.checkpoint(id).await?;
        }
        close_store(store).await?;
        log = Some(id);
        from = to;
        if let Some((at, opens)) = milestone
            && to == at
            && to < ops
        {
            eprintln!("  reopening at {} ops", group_digits(to));
            early = Some(measure_opens(&path, &key, opens).await?);
        }
    }
    let building: Duration = segments.iter().map(|(_, took)| *took).sum();
    eprintln!(
        "built {} ops in {:.1} s ({} ops/s)",
        group_digits(ops),
        building.as_secs_f64(),
        group_digits(per_second(ops, building) as u64)
    );
    write_writer_key(&path, &key)?;
    let log = log.context("no log was created")?;
    Ok((DataDir { _tmp: tmp, path, key, log, ops }, early, segments))
}

async fn reopen(
    args: &ReopenArgs,
    scale: Scale,
    work_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<DataDir> {
    let ops = scale.n(args.ops, 10_000_000);
    let milestone = ops / 10;
    let (dir, early, segments) =
        build_data_dir(work_dir, ops, args.batch, Some((milestone, args.opens))).await?;
    let size = dir_bytes(&dir.path);
    eprintln!("reopen: timing Store::open at {} ops", group_digits(ops));
    let late = measure_opens(&dir.path, &dir.key, args.opens).await?;
    let start_journal = journal_bytes(&dir.path);
    eprintln!("reopen: timing {} plaitd starts", args.starts);
    let mut starts = Vec::with_capacity(args.starts);
    let mut rss = 0;
    for _ in 0..args.starts.max(1) {
        let (mut replica, took) = tokio::task::block_in_place(|| start_plaitd(&dir.path))?;
        rss = replica.rss_bytes().unwrap_or(0);
        replica.terminate()?;
        eprintln!("  plaitd ready after {}", millis(took));
        starts.push(took);
    }

    // Building is durable batched ingest too, into an ever larger store: each segment's rate
    // shows how ingest holds up as the kv view grows.
    for (range, took) in &segments {
        report.info(
            format!(
                "reopen: build ops {} to {} ({}-op calls, {BUILD_TASKS} writers)",
                group_digits(range.start),
                group_digits(range.end),
                args.batch
            ),
            format!(
                "{:.1} s, {}",
                took.as_secs_f64(),
                rate(per_second(range.end - range.start, *took), "ops/s")
            ),
        );
    }
    report.info(format!("reopen: data directory at {} ops", group_digits(ops)), mib(size));
    if let Some(early) = early {
        report_opens(report, milestone, early);
    }
    report_opens(report, ops, late);
    let max = starts.iter().max().copied().unwrap_or_default();
    let med = median(starts);
    report.below(
        format!(
            "reopen: plaitd spawn to ready at {} ops (journal {}), median (max)",
            group_digits(ops),
            mib(start_journal)
        ),
        med.as_secs_f64(),
        format!("{} ({})", millis(med), millis(max)),
        2.0,
        "2 s",
    );
    report.below(
        format!("reopen: plaitd RSS just after start at {} ops", group_digits(ops)),
        rss as f64,
        mib(rss),
        256.0 * 1024.0 * 1024.0,
        "256 MiB",
    );
    Ok(dir)
}

async fn kv_get(dir: &DataDir, args: &ReadArgs, scale: Scale, report: &mut Report) -> anyhow::Result<()> {
    let reads = scale.n(args.reads, 200_000);
    let grpc_reads = scale.n(args.grpc_reads, 100_000);
    let keys = dir.ops;
    eprintln!("kv-get: {} random reads in process over {} keys", group_digits(reads), group_digits(keys));
    let (store, _) = open_store(&dir.path, &dir.key, Arc::new(plait_store::NoopObserver)).await?;
    let log = dir.log;
    let (store, latencies) = tokio::task::spawn_blocking(move || {
        let mut rng = StdRng::seed_from_u64(11);
        let warm_up = (reads / 10).min(10_000);
        let mut latencies = Vec::with_capacity(reads as usize);
        for n in 0..warm_up + reads {
            let key = bench_key(rng.gen_range(0..keys));
            let started = Instant::now();
            let row = store.get_kv(&log, &key)?;
            let took = started.elapsed();
            if row.is_none() {
                bail!("key {} is missing from the store", hex::encode(&key));
            }
            if n >= warm_up {
                latencies.push(took);
            }
        }
        anyhow::Ok((store, latencies))
    })
    .await??;
    close_store(store).await?;
    let mut latencies = latencies;
    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    report.below(
        format!("kv-get: Store::get_kv at {} keys, p99 (p50 / p999)", group_digits(keys)),
        p99.as_secs_f64(),
        format!(
            "{} ({} / {})",
            micros(p99),
            micros(percentile(&latencies, 0.5)),
            micros(percentile(&latencies, 0.999))
        ),
        0.001,
        "1 ms",
    );

    eprintln!(
        "kv-get: {} random Data.Get calls from {} clients against a release plaitd",
        group_digits(grpc_reads),
        args.grpc_clients
    );
    let (mut replica, _) = tokio::task::block_in_place(|| start_plaitd(&dir.path))?;
    let endpoint = replica.endpoint();
    let clients = args.grpc_clients.max(1);
    // Warmed like the in-process figure: the first reads load index and filter blocks.
    let warm_up = (grpc_reads / 10).min(10_000);
    let pid = replica.pid().to_string();
    let (server_before, bench_before) = (thread_cpu(&pid), cpu_seconds(Path::new("/proc/self/stat")));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(clients);
    for client in 0..clients {
        let mut data = pb::data_client::DataClient::new(connect(&endpoint).await?);
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(100 + client as u64);
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= warm_up + grpc_reads {
                    break;
                }
                let key = bench_key(rng.gen_range(0..keys));
                let call = Instant::now();
                let response =
                    data.get(pb::GetRequest { log: LOG_NAME.into(), key, as_of: None }).await?.into_inner();
                if n >= warm_up {
                    latencies.push(call.elapsed());
                }
                anyhow::ensure!(response.found, "a key written while building is not found over gRPC");
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await??);
    }
    let elapsed = started.elapsed();
    let server = thread_cpu_delta(&server_before, &thread_cpu(&pid));
    let bench = cpu_seconds(Path::new("/proc/self/stat")) - bench_before;
    let rss = replica.rss_bytes().unwrap_or(0);
    replica.terminate()?;
    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    report.below(
        format!("kv-get: Data.Get over gRPC, {clients} clients, p99 (p50)"),
        p99.as_secs_f64(),
        format!(
            "{} ({}), {}",
            micros(p99),
            micros(percentile(&latencies, 0.5)),
            rate(per_second(latencies.len() as u64, elapsed), "gets/s")
        ),
        0.001,
        "1 ms",
    );
    let total =
        |threads: &[(String, f64)]| threads.iter().map(|(_, s)| s).sum::<f64>() / elapsed.as_secs_f64();
    report.info(
        "kv-get: CPU in cores during the gRPC reads, plaitd / bench (warm-up included)",
        format!(
            "{:.2} / {:.2}; plaitd: {}",
            total(&server),
            bench / elapsed.as_secs_f64(),
            describe_threads(&server, elapsed)
        ),
    );

    // The floor on this machine: the same closed loop against a bare tonic unary server,
    // whose p99 is what scheduling clients and server on the same cores costs alone.
    let (mut bare, bare_addr) = start_bare_server()?;
    let bare_endpoint = format!("http://{bare_addr}");
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut health = tonic_health::pb::health_client::HealthClient::new(connect(&bare_endpoint).await?);
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= warm_up + grpc_reads {
                    break;
                }
                let call = Instant::now();
                health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await?;
                if n >= warm_up {
                    latencies.push(call.elapsed());
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut bare_latencies = Vec::new();
    for handle in handles {
        bare_latencies.extend(handle.await??);
    }
    let _ = bare.kill();
    let _ = bare.wait();
    bare_latencies.sort();
    let bare_p99 = percentile(&bare_latencies, 0.99);
    report.info(
        format!("kv-get: bare tonic unary server (grpc.health.v1 Check), same {clients} clients, p99 (p50)"),
        format!(
            "{} ({}); Data.Get p99 is {:.2}x this",
            micros(bare_p99),
            micros(percentile(&bare_latencies, 0.5)),
            p99.as_secs_f64() / bare_p99.as_secs_f64()
        ),
    );
    report.below(
        format!("kv-get: plaitd RSS after the reads at {} ops", group_digits(keys)),
        rss as f64,
        mib(rss),
        256.0 * 1024.0 * 1024.0,
        "256 MiB",
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Replication: a fresh replica catching up, and latency between two peered replicas.

/// Longest a catch-up may take before the bench gives up.
const CATCHUP_TIMEOUT: Duration = Duration::from_secs(900);
/// How often the catch-up loop asks the new replica how far it is (`Logs.GetLog`).
const CATCHUP_POLL: Duration = Duration::from_millis(5);
/// How often the new replica's RSS is sampled during catch-up.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// Entries per Data.Submit call when loading small entries, and their bytes at most.
const SUBMIT_ENTRIES: usize = 1024;
const SUBMIT_BYTES: usize = 4 * 1024 * 1024;
/// Largest message the bench's clients send or accept.
const CLIENT_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// The replica memory target (docs/design.md).
const RSS_TARGET_BYTES: f64 = 256.0 * 1024.0 * 1024.0;
/// The catch-up target (docs/design.md).
const CATCHUP_TARGET_OPS: f64 = 100_000.0;
/// How long the latency figure waits for the last keys to show up on the second replica.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bits of a latency key's index left for the op number; the bits above name the load.
const LOAD_SHIFT: u32 = 40;

fn data_client(channel: Channel) -> pb::data_client::DataClient<Channel> {
    pb::data_client::DataClient::new(channel)
        .max_encoding_message_size(CLIENT_MESSAGE_BYTES)
        .max_decoding_message_size(CLIENT_MESSAGE_BYTES)
}

/// Resident memory of a process in bytes.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The op number a bench key was made from (the inverse of `bench_key`).
fn key_index(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    (key.len() == KEY_BYTES).then(|| u64::from_be_bytes(tail))
}

/// Creates the bench kv log on a replica (signed by its writer key, with `writers` also
/// allowed) and returns its id.
async fn create_bench_log(channel: &Channel, writers: Vec<Vec<u8>>) -> anyhow::Result<LogId> {
    let info = pb::logs_client::LogsClient::new(channel.clone())
        .create_log(pb::CreateLogRequest {
            name: LOG_NAME.into(),
            r#type: pb::LogType::Kv as i32,
            writers,
            ..Default::default()
        })
        .await?
        .into_inner();
    let id: [u8; 32] = info.log_id.as_slice().try_into().context("a log id is not 32 bytes")?;
    Ok(LogId(id))
}

/// (seq, ops) of the bench log on a replica, or `None` while it does not host it yet.
async fn log_progress(logs: &mut pb::logs_client::LogsClient<Channel>) -> anyhow::Result<Option<(u64, u64)>> {
    match logs.get_log(pb::GetLogRequest { log: LOG_NAME.into() }).await {
        Ok(info) => {
            let info = info.into_inner();
            Ok(Some((info.seq, info.ops)))
        }
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(status.into()),
    }
}

/// [`log_progress`] through the client library.
async fn client_log_progress(client: &plait_client::Client) -> anyhow::Result<Option<(u64, u64)>> {
    match client.get_log(LOG_NAME).await {
        Ok(info) => Ok(Some((info.seq, info.ops))),
        Err(plait_client::ClientError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Waits until a process uses under a tenth of a core over half a second (fjall done
/// flushing and compacting), or `max` passes; returns how long that took.
async fn settle(pid: u32, max: Duration) -> Duration {
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let started = Instant::now();
    loop {
        let before = cpu_seconds(&stat);
        tokio::time::sleep(Duration::from_millis(500)).await;
        if cpu_seconds(&stat) - before < 0.05 || started.elapsed() >= max {
            return started.elapsed();
        }
    }
}

/// Loads `ops` kv puts into a new bench log through Data.Write: `clients` concurrent
/// clients on their own connections, `batch` ops per call.
async fn load_by_write(endpoint: &str, ops: u64, clients: usize, batch: u64) -> anyhow::Result<()> {
    create_bench_log(&connect(endpoint).await?, Vec::new()).await?;
    let batch = batch.max(1);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress("load (Data.Write)".into(), done.clone(), ops);
    let mut handles = Vec::with_capacity(clients.max(1));
    for _ in 0..clients.max(1) {
        let mut data = data_client(connect(endpoint).await?);
        let (next, done) = (next.clone(), done.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(batch, Ordering::Relaxed);
                if from >= ops {
                    return anyhow::Ok(());
                }
                let to = (from + batch).min(ops);
                let ops = (from..to)
                    .map(|i| pb::RoutedOp { log: LOG_NAME.into(), op: Some(put_op(i).into()) })
                    .collect();
                data.write(pb::WriteRequest { ops, concern: None }).await?;
                done.fetch_add(to - from, Ordering::Relaxed);
            }
        }));
    }
    let mut result = Ok(());
    for handle in handles {
        if let Err(e) = handle.await? {
            result = Err(e);
        }
    }
    progress.abort();
    result
}

/// Loads `ops` kv puts as one chain of entries of `entry_ops` ops each, signed here by a
/// client key the log's ACL names and sent with Data.Submit, `SUBMIT_ENTRIES` per call.
async fn load_by_submit(endpoint: &str, ops: u64, entry_ops: u64) -> anyhow::Result<()> {
    let channel = connect(endpoint).await?;
    let key = WriterKey::generate(&mut StdRng::seed_from_u64(2));
    let log = create_bench_log(&channel, vec![key.public().0.to_vec()]).await?;
    let entry_ops = entry_ops.max(1);
    // Signing is serial (each entry names the one before), so it runs on its own thread and
    // overlaps the submits.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Vec<Vec<u8>>, u64)>(4);
    let signer = tokio::task::spawn_blocking(move || {
        let (mut parent, mut i, mut time) = (None::<EntryHash>, 0u64, 0u64);
        while i < ops {
            let (mut page, mut bytes, first) = (Vec::with_capacity(SUBMIT_ENTRIES), 0, i);
            while page.len() < SUBMIT_ENTRIES && bytes < SUBMIT_BYTES && i < ops {
                let n = entry_ops.min(ops - i);
                time += 1;
                let entry = EntryDraft {
                    log,
                    time,
                    next: parent.into_iter().collect(),
                    refs: Vec::new(),
                    ops: (i..i + n).map(put_op).collect(),
                }
                .sign(&key)?;
                parent = Some(entry.hash());
                bytes += entry.bytes().len();
                page.push(entry.into_bytes());
                i += n;
            }
            if tx.blocking_send((page, i - first)).is_err() {
                break; // The submitting side failed; its error is the one to report.
            }
        }
        anyhow::Ok(())
    });
    let mut data = data_client(channel);
    let done = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress("load (Data.Submit)".into(), done.clone(), ops);
    let mut result = Ok(());
    while let Some((page, page_ops)) = rx.recv().await {
        let n = page.len();
        let submitted = data.submit(pb::SubmitRequest { entries: page }).await;
        let stored = submitted.map_err(anyhow::Error::from).and_then(|r| {
            let results = r.into_inner().results;
            anyhow::ensure!(
                results.len() == n && results.iter().all(|r| r.outcome == pb::SubmitOutcome::Stored as i32),
                "Data.Submit did not store every entry of a page"
            );
            Ok(())
        });
        if let Err(e) = stored {
            result = Err(e);
            break;
        }
        done.fetch_add(page_ops, Ordering::Relaxed);
    }
    drop(rx);
    progress.abort();
    let signed = signer.await?;
    result.and(signed)
}

/// One RSS reading of the catching-up replica, with how many ops it held then.
#[derive(Clone, Copy)]
struct RssSample {
    at: Duration,
    ops: u64,
    rss: u64,
}

/// Samples a process's RSS on its own thread every `RSS_SAMPLE_EVERY`, steady whatever the
/// gRPC polling is doing, tagged with the last progress the poller saw.
struct RssSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<RssSample>>,
}

impl RssSampler {
    fn start(pid: u32, origin: Instant, progress: Arc<AtomicU64>) -> RssSampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut next = Instant::now();
            while !stopped.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    samples.push(RssSample {
                        at: origin.elapsed(),
                        ops: progress.load(Ordering::Relaxed),
                        rss,
                    });
                }
                next += RSS_SAMPLE_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            samples
        });
        RssSampler { stop, thread }
    }

    fn finish(self) -> Vec<RssSample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// What one catch-up of a fresh replica measured.
struct CatchupRound {
    spawn_to_ready: Duration,
    /// From the ready line until GetLog first showed an op, and until it showed them all.
    first_op: Duration,
    elapsed: Duration,
    entries: u64,
    samples: Vec<RssSample>,
    replica_threads: Vec<(String, f64)>,
    source_threads: Vec<(String, f64)>,
    vm_busy: f64,
    /// CPU seconds of this bench process (the GetLog poller and the RSS sampler).
    bench_cpu: f64,
    commits: f64,
    commit_seconds: f64,
    /// Seconds the writer waited for flushes, its memtables over their bound.
    write_stall_seconds: f64,
    /// Automatic checkpoints that gave up (`--checkpoint-defer-mib`).
    checkpoints_deferred: f64,
    disk: u64,
}

impl CatchupRound {
    fn peak_rss(&self) -> u64 {
        self.peak().map_or(0, |s| s.rss)
    }

    fn peak(&self) -> Option<RssSample> {
        self.samples.iter().copied().max_by_key(|s| s.rss)
    }

    /// RSS at the first sample holding at least `fraction` of `ops`.
    fn rss_at(&self, fraction: f64, ops: u64) -> u64 {
        let want = (fraction * ops as f64).ceil() as u64;
        self.samples.iter().find(|s| s.ops >= want).or(self.samples.last()).map_or(0, |s| s.rss)
    }
}

/// Starts a fresh replica peered with `source` and times it from its ready line until
/// `Logs.GetLog` on it shows all `ops`.
async fn catchup_round(source: &Plaitd, dir: &Path, ops: u64, entries: u64) -> anyhow::Result<CatchupRound> {
    catchup_round_with(source, dir, ops, entries, &Security::Off).await
}

/// [`catchup_round`] with the new replica (and its calls to the source) secured as
/// `security` says.
async fn catchup_round_with(
    source: &Plaitd,
    dir: &Path,
    ops: u64,
    entries: u64,
    security: &Security,
) -> anyhow::Result<CatchupRound> {
    let source_pid = source.pid().to_string();
    let peer = source.grpc.to_string();
    let source_before = thread_cpu(&source_pid);
    let bench_before = cpu_seconds(Path::new("/proc/self/stat"));
    let vm_before = vm_busy_seconds();
    let mut flags = vec!["--peer".to_owned(), peer];
    flags.extend(security.replica_flags());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (mut replica, spawn_to_ready) = tokio::task::block_in_place(|| start_replica(dir, &flags))?;
    let ready = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let sampler = RssSampler::start(replica.pid(), ready, progress.clone());
    let logs = security.client(&replica, Caller::Certificate).await?;
    let mut first_op = None;
    let mut last_report = ready;
    let polled = loop {
        let polled = client_log_progress(&logs).await;
        let at = ready.elapsed();
        let Ok(polled) = polled else { break polled.map(|_| (at, 0)) };
        let (seq, got) = polled.unwrap_or((0, 0));
        progress.store(got, Ordering::Relaxed);
        if got > 0 && first_op.is_none() {
            first_op = Some(at);
        }
        if got >= ops {
            break Ok((at, seq));
        }
        if at > CATCHUP_TIMEOUT {
            break Err(anyhow::anyhow!(
                "the new replica holds {} of {} ops after {CATCHUP_TIMEOUT:?}",
                group_digits(got),
                group_digits(ops)
            ));
        }
        if last_report.elapsed() >= PROGRESS_EVERY {
            last_report = Instant::now();
            eprintln!(
                "  catching up: {} / {} ops, {} ops/s so far, RSS {}",
                group_digits(got),
                group_digits(ops),
                group_digits(per_second(got, at) as u64),
                mib(replica.rss_bytes().unwrap_or(0))
            );
        }
        tokio::time::sleep(CATCHUP_POLL).await;
    };
    let samples = sampler.finish();
    let (elapsed, got_entries) = polled?;
    let vm_busy = vm_busy_seconds() - vm_before;
    let bench_cpu = cpu_seconds(Path::new("/proc/self/stat")) - bench_before;
    let source_threads = thread_cpu_delta(&source_before, &thread_cpu(&source_pid));
    let replica_threads = thread_cpu(&replica.pid().to_string());
    let metrics = replica.metrics.map(scrape_commit_metrics).unwrap_or_default();
    replica.terminate()?;
    anyhow::ensure!(
        got_entries == entries,
        "the new replica holds all ops in {got_entries} entries, the source in {entries}"
    );
    Ok(CatchupRound {
        spawn_to_ready,
        first_op: first_op.unwrap_or(elapsed),
        elapsed,
        entries: got_entries,
        samples,
        replica_threads,
        source_threads,
        vm_busy,
        bench_cpu,
        commits: metric_delta(&[], &metrics, "plait_batch_ops", "_count"),
        commit_seconds: metric_delta(&[], &metrics, "plait_fsync", "_sum"),
        write_stall_seconds: metric_delta(&[], &metrics, "plait_write_stall_seconds", "_total"),
        checkpoints_deferred: metric_delta(&[], &metrics, "plait_checkpoints_deferred", "_total"),
        disk: dir_bytes(dir),
    })
}

async fn catchup(
    args: &CatchupArgs,
    scale: Scale,
    work_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let ops = scale.n(args.ops, 1_000_000);
    let rounds = scale.rounds(args.rounds);
    for &shape in &args.shapes {
        catchup_shape(args, shape, ops, rounds, work_dir, report).await?;
    }
    Ok(())
}

async fn catchup_shape(
    args: &CatchupArgs,
    shape: Shape,
    ops: u64,
    rounds: usize,
    work_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let label = match shape {
        Shape::Large => {
            format!("{} ops, {}-op Data.Write x {} clients", group_digits(ops), args.batch, args.clients)
        }
        Shape::Small => {
            format!("{} ops, {}-op entries (Data.Submit)", group_digits(ops), args.small_entry_ops.max(1))
        }
    };
    eprintln!("catchup, {label}: loading {} ops into a release plaitd", group_digits(ops));
    let tmp = temp_dir(work_dir, "catchup")?;
    let (mut source, _) = tokio::task::block_in_place(|| start_replica(&tmp.path().join("source"), &[]))?;
    let endpoint = source.endpoint();
    let started = Instant::now();
    match shape {
        Shape::Large => load_by_write(&endpoint, ops, args.clients, args.batch).await?,
        Shape::Small => load_by_submit(&endpoint, ops, args.small_entry_ops).await?,
    }
    let loaded = started.elapsed();
    let mut logs = pb::logs_client::LogsClient::new(connect(&endpoint).await?);
    let (entries, stored) = log_progress(&mut logs).await?.context("the source lost the bench log")?;
    anyhow::ensure!(stored == ops, "the source holds {stored} ops, expected {ops}");
    let source_disk = dir_bytes(&tmp.path().join("source"));
    eprintln!(
        "  loaded {} ops in {} entries in {:.1} s ({} ops/s); waiting for the source to go idle",
        group_digits(ops),
        group_digits(entries),
        loaded.as_secs_f64(),
        group_digits(per_second(ops, loaded) as u64)
    );
    let settled = settle(source.pid(), Duration::from_secs_f64(args.settle_seconds)).await;
    let source_rss = source.rss_bytes().unwrap_or(0);

    let mut results = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        eprintln!("  round {round} of {rounds}: a fresh plaitd with --peer {}", source.grpc);
        let r = catchup_round(&source, &tmp.path().join(format!("replica-{round}")), ops, entries).await?;
        eprintln!(
            "  caught up {} ops in {:.2} s: {} ops/s, {} entries/s, peak RSS {}",
            group_digits(ops),
            r.elapsed.as_secs_f64(),
            group_digits(per_second(ops, r.elapsed) as u64),
            group_digits(per_second(r.entries, r.elapsed) as u64),
            mib(r.peak_rss())
        );
        results.push(r);
    }
    source.terminate()?;

    let op_rates: Vec<f64> = results.iter().map(|r| per_second(ops, r.elapsed)).collect();
    let entry_rates: Vec<f64> = results.iter().map(|r| per_second(r.entries, r.elapsed)).collect();
    let times: Vec<f64> = results.iter().map(|r| r.elapsed.as_secs_f64()).collect();
    let (op_rate, shown) = spread(&op_rates, |v| rate(v, "ops/s"));
    report.info(
        format!("catchup, {label}: the source"),
        format!(
            "{} ops in {} entries ({:.1} ops/entry, {} on disk), loaded in {:.1} s ({}), idle after {:.1} s more, RSS {}",
            group_digits(ops),
            group_digits(entries),
            ops as f64 / entries.max(1) as f64,
            mib(source_disk),
            loaded.as_secs_f64(),
            rate(per_second(ops, loaded), "ops/s"),
            settled.as_secs_f64(),
            mib(source_rss)
        ),
    );
    report.at_least(
        format!(
            "catchup, {label}: fresh replica, ready line to all {} ops, median of {rounds}",
            group_digits(ops)
        ),
        op_rate,
        shown,
        CATCHUP_TARGET_OPS,
        "100,000 ops/s",
    );
    let first_ops: Vec<f64> = results.iter().map(|r| r.first_op.as_secs_f64() * 1e3).collect();
    let readies: Vec<f64> = results.iter().map(|r| r.spawn_to_ready.as_secs_f64() * 1e3).collect();
    report.info(
        format!("catchup, {label}: entries/s, time, first op visible after, spawn to ready"),
        format!(
            "{}; {}; {}; {}",
            spread(&entry_rates, |v| rate(v, "entries/s")).1,
            spread(&times, |v| format!("{v:.2} s")).1,
            spread(&first_ops, |v| format!("{v:.0} ms")).1,
            spread(&readies, |v| format!("{v:.0} ms")).1
        ),
    );
    let peaks: Vec<f64> = results.iter().map(|r| r.peak_rss() as f64).collect();
    let (peak, shown) = spread(&peaks, |v| mib(v as u64));
    report.below(
        format!(
            "catchup, {label}: replica peak RSS while catching up (every {} ms), median of {rounds}; \
             memtable bound {}",
            RSS_SAMPLE_EVERY.as_millis(),
            match std::env::var("PLAIT_WRITE_BUFFER_MIB").ok().filter(|v| !v.is_empty()) {
                Some(v) if v == "0" => "off (PLAIT_WRITE_BUFFER_MIB=0)".to_owned(),
                Some(v) => format!("{v} MiB (PLAIT_WRITE_BUFFER_MIB)"),
                None => format!("{} MiB (default)", plait_store::WRITE_BUFFER_BYTES_DEFAULT / (1024 * 1024)),
            }
        ),
        peak,
        shown,
        RSS_TARGET_BYTES,
        "256 MiB",
    );
    let last = results.last().context("no rounds")?;
    let at: Vec<u64> = [0.25, 0.5, 0.75, 1.0].iter().map(|f| last.rss_at(*f, ops)).collect();
    let (low, high) = (at.iter().copied().min().unwrap_or(0), at.iter().copied().max().unwrap_or(0));
    let verdict = if high as f64 <= 1.2 * low as f64 {
        format!("flat (within {:.0}%)", 100.0 * (high - low) as f64 / low.max(1) as f64)
    } else {
        format!("not flat: {:+.0}% from 25% to 100%", 100.0 * (at[3] as f64 / at[0].max(1) as f64 - 1.0))
    };
    report.info(
        format!("catchup, {label}: replica RSS at 25% / 50% / 75% / 100% of the ops (last round)"),
        format!(
            "{} / {} / {} / {}, peak {} at {:.1} s ({:.0}% of the ops), {} samples: {verdict}",
            mib(at[0]),
            mib(at[1]),
            mib(at[2]),
            mib(at[3]),
            mib(last.peak_rss()),
            last.peak().map_or(0.0, |s| s.at.as_secs_f64()),
            last.peak().map_or(0.0, |s| 100.0 * s.ops as f64 / ops as f64),
            last.samples.len()
        ),
    );
    let wall = last.elapsed + last.spawn_to_ready;
    let replica_cpu: f64 = last.replica_threads.iter().map(|(_, s)| s).sum();
    let source_cpu: f64 = last.source_threads.iter().map(|(_, s)| s).sum();
    let others: Vec<f64> = results
        .iter()
        .map(|r| {
            let own: f64 = r.replica_threads.iter().chain(&r.source_threads).map(|(_, s)| s).sum();
            (r.vm_busy - own - r.bench_cpu).max(0.0) / (r.elapsed + r.spawn_to_ready).as_secs_f64()
        })
        .collect();
    report.info(
        format!("catchup, {label}: other processes on the VM while catching up (not plaitd, not this bench)"),
        format!("{} cores of {}", spread(&others, |v| format!("{v:.2}")).1, available_cores()),
    );
    report.info(
        format!("catchup, {label}: CPU in cores, replica / source / bench / whole VM (last round)"),
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2} of {}; replica: {}; source: {}",
            replica_cpu / wall.as_secs_f64(),
            source_cpu / wall.as_secs_f64(),
            last.bench_cpu / wall.as_secs_f64(),
            last.vm_busy / wall.as_secs_f64(),
            available_cores(),
            describe_threads(&last.replica_threads, wall),
            describe_threads(&last.source_threads, wall)
        ),
    );
    if last.commits > 0.0 {
        report.info(
            format!("catchup, {label}: the replica's ingest commits (last round)"),
            format!(
                "{} commits, {:.0} entries and {:.0} ops each, commit+fsync {:.0}% of the catch-up; writer waited {:.1} s for flushes (memtables over --write-buffer-mib); {} automatic checkpoints deferred (--checkpoint-defer-mib); {} on disk",
                group_digits(last.commits as u64),
                last.entries as f64 / last.commits,
                ops as f64 / last.commits,
                100.0 * last.commit_seconds / last.elapsed.as_secs_f64(),
                last.write_stall_seconds,
                last.checkpoints_deferred as u64,
                mib(last.disk)
            ),
        );
    }
    Ok(())
}

/// One write call of the latency figure.
struct Sent {
    first: u64,
    ops: u64,
    sent: Instant,
    acked: Instant,
}

/// Writes `load` to the bench log through `channel` for `seconds`, open loop: call `c` is
/// sent at start + c × batch / rate whether or not earlier calls were answered. Keys are
/// `bench_key(base + n)`. Returns every call, and how far behind its schedule the sender
/// fell at worst.
async fn steady_writes(
    channel: &Channel,
    load: Load,
    seconds: f64,
    base: u64,
) -> anyhow::Result<(Vec<Sent>, Duration)> {
    let calls = ((seconds * load.rate as f64) / load.batch as f64).round().max(1.0) as u64;
    let interval = load.batch as f64 / load.rate as f64;
    let data = data_client(channel.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now() + Duration::from_millis(10);
    let mut behind = Duration::ZERO;
    for c in 0..calls {
        let at = start + Duration::from_secs_f64(interval * c as f64);
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        behind = behind.max(at.elapsed());
        let mut data = data.clone();
        let first = base + c * load.batch;
        tasks.spawn(async move {
            let sent = Instant::now();
            if load.batch == 1 {
                let Op::Put { key, value } = put_op(first) else { unreachable!() };
                data.put(pb::PutRequest { log: LOG_NAME.into(), key, value, concern: None }).await?;
            } else {
                let ops = (first..first + load.batch)
                    .map(|i| pb::RoutedOp { log: LOG_NAME.into(), op: Some(put_op(i).into()) })
                    .collect();
                data.write(pb::WriteRequest { ops, concern: None }).await?;
            }
            anyhow::Ok(Sent { first, ops: load.batch, sent, acked: Instant::now() })
        });
    }
    let mut sent = Vec::with_capacity(calls as usize);
    while let Some(done) = tasks.join_next().await {
        sent.push(done??);
    }
    Ok((sent, behind))
}

/// When each key became visible on the subscribed replica, by op number.
type Seen = Arc<std::sync::Mutex<std::collections::HashMap<u64, Instant>>>;

/// Follows the bench log on a replica with Data.Subscribe and notes when each key arrives,
/// as each AppliedOp comes off the stream.
async fn subscribe_timestamps(
    channel: &Channel,
) -> anyhow::Result<(Seen, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let seen: Seen = Arc::default();
    let mut stream = data_client(channel.clone())
        .subscribe(pb::SubscribeRequest {
            log: LOG_NAME.into(),
            after_seq: 0,
            follow: true,
            consumer: String::new(),
        })
        .await?
        .into_inner();
    let noted = seen.clone();
    let watcher = tokio::spawn(async move {
        while let Some(applied) = stream.message().await? {
            let at = Instant::now();
            if let Some(pb::op::Op::Put(put)) = applied.op.and_then(|o| o.op)
                && let Some(i) = key_index(&put.key)
            {
                noted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(i, at);
            }
        }
        anyhow::Ok(())
    });
    Ok((seen, watcher))
}

/// Waits until every op number in `wanted` is in `seen`, or the timeout; returns how many
/// are still missing.
async fn wait_visible(seen: &Seen, wanted: impl Iterator<Item = u64> + Clone) -> usize {
    let deadline = Instant::now() + VISIBLE_TIMEOUT;
    loop {
        let missing = {
            let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            wanted.clone().filter(|i| !seen.contains_key(i)).count()
        };
        if missing == 0 || Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sums of the `Sync/<method>` RPC counts a replica served, from its metrics.
fn sync_rpcs_served(addr: Option<std::net::SocketAddr>, method: &str) -> f64 {
    addr.and_then(plait_tests::fetch_metrics)
        .map_or(0.0, |t| plait_tests::rpc_calls(&t, &format!("Sync/{method}")))
}

/// Two release plaitds in `dir` peered both ways (B names A with `--peer`, A gets B as a
/// member), each with `extra` flags, and the bench log created on A. Returns both
/// replicas and a channel to each.
async fn start_peered_pair(dir: &Path, extra: &[&str]) -> anyhow::Result<(Plaitd, Plaitd, Channel, Channel)> {
    let (a, _) = tokio::task::block_in_place(|| start_replica(&dir.join("a"), extra))?;
    let a_addr = a.grpc.to_string();
    let mut b_flags = extra.to_vec();
    b_flags.extend_from_slice(&["--peer", &a_addr]);
    let (b, _) = tokio::task::block_in_place(|| start_replica(&dir.join("b"), &b_flags))?;
    let a_channel = connect(&a.endpoint()).await?;
    let b_channel = connect(&b.endpoint()).await?;
    pb::admin_client::AdminClient::new(a_channel.clone())
        .set_members(pb::SetMembersRequest { generation: 1, members: vec![b.grpc.to_string()] })
        .await?;
    create_bench_log(&a_channel, Vec::new()).await?;
    Ok((a, b, a_channel, b_channel))
}

/// Replication CPU of two peered replicas under a light write load to one log, with
/// `hosted` logs on both (the others idle). Returns the cores both used together.
async fn replication_cpu(
    work_dir: &Path,
    hosted: u64,
    rate: u64,
    seconds: f64,
) -> anyhow::Result<(f64, String)> {
    let tmp = temp_dir(work_dir, "many-logs")?;
    let logs_max = (hosted * 2).max(1000).to_string();
    let (mut a, mut b, a_channel, b_channel) =
        start_peered_pair(tmp.path(), &["--logs-max", &logs_max]).await?;
    let mut logs = pb::logs_client::LogsClient::new(a_channel.clone());
    for i in 1..hosted {
        logs.create_log(pb::CreateLogRequest {
            name: format!("idle-{i}"),
            r#type: pb::LogType::Kv as i32,
            ..Default::default()
        })
        .await?;
    }
    let mut b_logs = pb::logs_client::LogsClient::new(b_channel.clone());
    let deadline = Instant::now() + VISIBLE_TIMEOUT;
    loop {
        let listed = b_logs.list_logs(pb::ListLogsRequest::default()).await?.into_inner().logs.len() as u64;
        if listed >= hosted {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the second replica hosts {listed} of {hosted} logs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm-up, then the measured window.
    steady_writes(&a_channel, Load { rate, batch: 1 }, 1.0, 0).await?;
    let (a_pid, b_pid) = (a.pid().to_string(), b.pid().to_string());
    let (a_before, b_before) = (thread_cpu(&a_pid), thread_cpu(&b_pid));
    let started = Instant::now();
    steady_writes(&a_channel, Load { rate, batch: 1 }, seconds, 1 << LOAD_SHIFT).await?;
    let wall = started.elapsed();
    let a_threads = thread_cpu_delta(&a_before, &thread_cpu(&a_pid));
    let b_threads = thread_cpu_delta(&b_before, &thread_cpu(&b_pid));
    let cores = (a_threads.iter().chain(&b_threads).map(|(_, s)| s).sum::<f64>()) / wall.as_secs_f64();
    let detail =
        format!("A {} / B {}", describe_threads(&a_threads, wall), describe_threads(&b_threads, wall));
    a.terminate()?;
    b.terminate()?;
    Ok((cores, detail))
}

async fn many_logs(
    args: &ManyLogsArgs,
    scale: Scale,
    work_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let hosted = if scale.quick { args.logs.unwrap_or(50) } else { args.logs.unwrap_or(1000) }.max(2);
    let seconds = scale.seconds(args.seconds, 20.0);
    eprintln!(
        "many-logs: two peered replicas, {} puts/s to one log for {seconds} s, with 1 and {hosted} logs",
        args.rate
    );
    let (one, one_detail) = replication_cpu(work_dir, 1, args.rate, seconds).await?;
    let (many, many_detail) = replication_cpu(work_dir, hosted, args.rate, seconds).await?;
    report.below(
        format!("many-logs: CPU of both replicas, {} single puts/s, 1 log hosted", args.rate),
        one,
        format!("{one:.3} cores; {one_detail}"),
        0.1,
        "0.1 cores",
    );
    report.below(
        format!(
            "many-logs: the same with {hosted} logs hosted ({} idle), as a multiple of 1 log",
            hosted - 1
        ),
        many / one.max(1e-9),
        format!("{:.2}× ({many:.3} cores; {many_detail})", many / one.max(1e-9)),
        1.2,
        "1.2×",
    );
    Ok(())
}

async fn latency(
    args: &LatencyArgs,
    scale: Scale,
    work_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let seconds = scale.seconds(args.seconds, 10.0);
    let tmp = temp_dir(work_dir, "latency")?;
    let anti_entropy = args.anti_entropy_ms.to_string();
    eprintln!("latency: two release plaitds peered both ways (anti-entropy every {anti_entropy} ms)");
    let (mut a, mut b, a_channel, b_channel) =
        start_peered_pair(tmp.path(), &["--anti-entropy-ms", &anti_entropy]).await?;
    let mut b_logs = pb::logs_client::LogsClient::new(b_channel.clone());
    let hosted = Instant::now();
    while log_progress(&mut b_logs).await?.is_none() {
        anyhow::ensure!(hosted.elapsed() < VISIBLE_TIMEOUT, "the second replica never hosted the bench log");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("  the second replica hosts the log after {}", millis(hosted.elapsed()));

    // Timestamps of each key's arrival on B, and on A itself as a control: what
    // Data.Subscribe delivery costs without replication.
    let (seen, watcher) = subscribe_timestamps(&b_channel).await?;
    let (seen_local, local_watcher) = subscribe_timestamps(&a_channel).await?;

    // Warm-up: connections, sessions and the subscription all live.
    let (_, _) = steady_writes(&a_channel, Load { rate: 1000, batch: 1 }, 0.2, 0).await?;
    anyhow::ensure!(
        wait_visible(&seen, 0..200).await == 0,
        "warm-up writes never showed up on the second replica"
    );
    anyhow::ensure!(wait_visible(&seen_local, 0..200).await == 0, "warm-up writes never showed up on A");

    for (n, &load) in args.loads.iter().enumerate() {
        let base = (n as u64 + 1) << LOAD_SHIFT;
        eprintln!("  {load} on A for {seconds} s, Data.Subscribe on B");
        let (a_pid, b_pid) = (a.pid().to_string(), b.pid().to_string());
        let (a_before, b_before) = (thread_cpu(&a_pid), thread_cpu(&b_pid));
        let (a_metrics, b_metrics) = (
            a.metrics.map(scrape_commit_metrics).unwrap_or_default(),
            b.metrics.map(scrape_commit_metrics).unwrap_or_default(),
        );
        let (a_pulls, b_pulls) = (sync_rpcs_served(a.metrics, "Pull"), sync_rpcs_served(b.metrics, "Pull"));
        let echoes = || {
            let sum = |addr: Option<std::net::SocketAddr>, name: &str| {
                addr.and_then(plait_tests::fetch_metrics).map_or(0.0, |t| plait_tests::metric_sum(&t, name))
            };
            (
                sum(a.metrics, "plait_pulled_duplicates_total"),
                sum(b.metrics, "plait_pull_entries_omitted_total"),
            )
        };
        let echoes_before = echoes();
        let bench_before = cpu_seconds(Path::new("/proc/self/stat"));
        let vm_before = vm_busy_seconds();
        let started = Instant::now();
        let (calls, behind) = steady_writes(&a_channel, load, seconds, base).await?;
        let writing = started.elapsed();
        let total: u64 = calls.iter().map(|c| c.ops).sum();
        let missing = wait_visible(&seen, base..base + total).await;
        let wall = started.elapsed();
        let vm_busy = vm_busy_seconds() - vm_before;
        let bench_cpu = cpu_seconds(Path::new("/proc/self/stat")) - bench_before;
        let a_threads = thread_cpu_delta(&a_before, &thread_cpu(&a_pid));
        let b_threads = thread_cpu_delta(&b_before, &thread_cpu(&b_pid));
        let a_cpu: f64 = a_threads.iter().map(|(_, s)| s).sum();
        let b_cpu: f64 = b_threads.iter().map(|(_, s)| s).sum();
        let a_commits = metric_delta(
            &a_metrics,
            &a.metrics.map(scrape_commit_metrics).unwrap_or_default(),
            "plait_batch_ops",
            "_count",
        );
        let b_after = b.metrics.map(scrape_commit_metrics).unwrap_or_default();
        let b_commits = metric_delta(&b_metrics, &b_after, "plait_batch_ops", "_count");
        let b_entries = metric_delta(&b_metrics, &b_after, "plait_batch_entries", "_sum");
        let b_commit_seconds = metric_delta(&b_metrics, &b_after, "plait_fsync", "_sum");
        let a_served = sync_rpcs_served(a.metrics, "Pull") - a_pulls;
        let b_served = sync_rpcs_served(b.metrics, "Pull") - b_pulls;
        let echoes_after = echoes();
        let (echoed, omitted) = (echoes_after.0 - echoes_before.0, echoes_after.1 - echoes_before.1);

        let local_missing = wait_visible(&seen_local, base..base + total).await;
        let mut local = Vec::with_capacity(total as usize);
        {
            let seen = seen_local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for call in &calls {
                for i in call.first..call.first + call.ops {
                    if let Some(&visible) = seen.get(&i) {
                        local.push(visible.saturating_duration_since(call.acked));
                    }
                }
            }
        }
        local.sort();
        let mut from_ack = Vec::with_capacity(total as usize);
        let mut from_send = Vec::with_capacity(total as usize);
        let mut acks = Vec::with_capacity(calls.len());
        let mut before_ack = 0u64;
        {
            let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for call in &calls {
                acks.push(call.acked - call.sent);
                for i in call.first..call.first + call.ops {
                    let Some(&visible) = seen.get(&i) else { continue };
                    if visible < call.acked {
                        before_ack += 1;
                    }
                    from_ack.push(visible.saturating_duration_since(call.acked));
                    from_send.push(visible.saturating_duration_since(call.sent));
                }
            }
        }
        from_ack.sort();
        from_send.sort();
        acks.sort();
        let three = |v: &[Duration]| {
            format!(
                "{} / {} / {}",
                millis_fine(percentile(v, 0.5)),
                millis_fine(percentile(v, 0.99)),
                millis_fine(percentile(v, 1.0))
            )
        };
        eprintln!(
            "  A ack to visible on B: p50 / p99 / max {}; {} of {} keys missing",
            three(&from_ack),
            missing,
            group_digits(total)
        );
        report.info(
            format!("latency, {load}: write ack on A to visible on B, p50 / p99 / max"),
            format!(
                "{} over {} keys{}",
                three(&from_ack),
                group_digits(from_ack.len() as u64),
                if missing > 0 { format!(", **{missing} never seen within 30 s**") } else { String::new() }
            ),
        );
        report.info(
            format!(
                "latency, {load}: control, write ack on A to visible on A's own Subscribe, p50 / p99 / max"
            ),
            format!(
                "{}{}",
                three(&local),
                if local_missing > 0 { format!(", **{local_missing} never seen**") } else { String::new() }
            ),
        );
        report.info(
            format!("latency, {load}: send to visible on B; send to ack on A (p50 / p99 / max)"),
            format!(
                "{}; {} ({} keys were visible on B before their ack reached the client)",
                three(&from_send),
                three(&acks),
                group_digits(before_ack)
            ),
        );
        report.info(
            format!("latency, {load}: achieved load; CPU in cores A / B / bench / other processes / whole VM"),
            format!(
                "{} in {:.2} s (sender at most {} behind schedule); {:.2} / {:.2} / {:.2} / {:.2} / {:.2} of {}; A: {}; B: {}",
                rate(per_second(total, writing), "ops/s"),
                writing.as_secs_f64(),
                millis_fine(behind),
                a_cpu / wall.as_secs_f64(),
                b_cpu / wall.as_secs_f64(),
                bench_cpu / wall.as_secs_f64(),
                (vm_busy - a_cpu - b_cpu - bench_cpu).max(0.0) / wall.as_secs_f64(),
                vm_busy / wall.as_secs_f64(),
                available_cores(),
                describe_threads(&a_threads, wall),
                describe_threads(&b_threads, wall)
            ),
        );
        report.info(
            format!("latency, {load}: replication work (pulls served, commits)"),
            format!(
                "B pulled {:.0} times from A ({:.0}/s), A pulled {:.0} times from B ({:.0}/s), bringing back {:.0} entries \
                 A already had (B left {:.0} of A's own out); \
                 A {:.0} commits/s for {:.0} calls/s; B {:.0} commits/s of {:.1} entries, commit+fsync {:.0}% of B's wall",
                a_served,
                a_served / wall.as_secs_f64(),
                b_served,
                b_served / wall.as_secs_f64(),
                echoed,
                omitted,
                a_commits / wall.as_secs_f64(),
                calls.len() as f64 / writing.as_secs_f64(),
                b_commits / wall.as_secs_f64(),
                b_entries / b_commits.max(1.0),
                100.0 * b_commit_seconds / wall.as_secs_f64()
            ),
        );
    }
    watcher.abort();
    local_watcher.abort();
    b.terminate()?;
    a.terminate()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Snapshots, restore and backups.

/// CPU of this process, of one plaitd and of the whole VM over a window, so a figure can
/// say how much of the machine other processes (compilers, other benches) took meanwhile.
struct CpuWindow {
    started: Instant,
    vm: f64,
    own: f64,
    server: Option<(u32, f64)>,
}

impl CpuWindow {
    fn start(server: Option<u32>) -> CpuWindow {
        CpuWindow {
            started: Instant::now(),
            vm: vm_busy_seconds(),
            own: cpu_seconds(Path::new("/proc/self/stat")),
            server: server.map(|pid| (pid, cpu_seconds(&PathBuf::from(format!("/proc/{pid}/stat"))))),
        }
    }

    /// (this process, plaitd, other processes) in cores since `start`.
    fn cores(&self) -> (f64, f64, f64) {
        let wall = self.started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE);
        let own = cpu_seconds(Path::new("/proc/self/stat")) - self.own;
        let server = self
            .server
            .map_or(0.0, |(pid, before)| cpu_seconds(&PathBuf::from(format!("/proc/{pid}/stat"))) - before);
        let vm = vm_busy_seconds() - self.vm;
        (own / wall, server / wall, (vm - own - server).max(0.0) / wall)
    }
}

/// Exports a snapshot of `log` to a file; returns its checkpoint, bytes and time.
async fn export_to_file(
    store: &Store,
    log: LogId,
    base_seq: Option<u64>,
    path: &Path,
) -> anyhow::Result<(plait_core::Checkpoint, u64, Duration)> {
    use std::io::Write as _;
    let file = std::io::BufWriter::with_capacity(1024 * 1024, std::fs::File::create(path)?);
    let shared = Arc::new(std::sync::Mutex::new(file));
    let sink = shared.clone();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let started = Instant::now();
    let checkpoint = store
        .export(log, base_seq, move |bytes| {
            let mut out = sink.lock().expect("snapshot file lock");
            out.write_all(&bytes)
                .map_err(|e| plait_store::StoreError::Unavailable(format!("snapshot file: {e}")))?;
            counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Ok(())
        })
        .await?;
    let mut out = shared.lock().expect("snapshot file lock");
    out.flush()?;
    out.get_ref().sync_all()?;
    drop(out);
    Ok((checkpoint, written.load(Ordering::Relaxed), started.elapsed()))
}

/// One window of single-op puts from `clients` clients; every call's latency.
async fn put_window(
    channel: &Channel,
    clients: usize,
    seconds: f64,
    tag: u64,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut handles = Vec::with_capacity(clients);
    for client in 0..clients {
        let mut data = pb::data_client::DataClient::new(channel.clone());
        let first = (tag << 56) | ((client as u64) << 40);
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(16 * 1024);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let Op::Put { key, value } = put_op(first | n) else { unreachable!() };
                n += 1;
                let call = Instant::now();
                data.put(pb::PutRequest { log: LOG_NAME.into(), key, value, concern: None }).await?;
                latencies.push(call.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await??);
    }
    latencies.sort();
    Ok(latencies)
}

/// Runs Admin.ExportSnapshot of the bench log back to back, draining each stream, until
/// `stop` is set; returns (exports finished, bytes streamed).
async fn export_loop(
    channel: Channel,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<(u64, u64)> {
    let mut admin =
        pb::admin_client::AdminClient::new(channel).max_decoding_message_size(CLIENT_MESSAGE_BYTES);
    let (mut exports, mut bytes) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let mut stream = admin
            .export_snapshot(pb::ExportSnapshotRequest { log: LOG_NAME.into(), base_seq: 0 })
            .await?
            .into_inner();
        while let Some(chunk) = stream.message().await? {
            bytes += chunk.data.len() as u64;
        }
        exports += 1;
    }
    Ok((exports, bytes))
}

async fn restore(
    args: &RestoreArgs,
    scale: Scale,
    work_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let ops = scale.n(args.ops, 1_000_000);
    let delta_ops = (ops / 100).max(1);
    let tmp = temp_dir(work_dir, "restore")?;
    let mut others: Vec<String> = Vec::new();

    // 1 and 2: full and delta restore, in process.
    eprintln!("restore: build {} ops in process (4 tasks x 1000-op Store::write)", group_digits(ops));
    let key = writer_key();
    let (source, _) =
        open_store(&tmp.path().join("source"), &key, Arc::new(CommitCounter::default())).await?;
    let log = ensure_log(&source, &key).await?;
    fill(&source, log, 0..ops, 4, 1000, "restore build").await?;
    let full_path = tmp.path().join("full.snap");
    let window = CpuWindow::start(None);
    let (full_cp, full_bytes, full_export) = export_to_file(&source, log, None, &full_path).await?;
    others.push(format!("full export {:.2}", window.cores().2));
    fill(&source, log, ops..ops + delta_ops, 4, 1000, "restore delta").await?;
    let delta_path = tmp.path().join("delta.snap");
    let (delta_cp, delta_bytes, delta_export) =
        export_to_file(&source, log, Some(full_cp.seq), &delta_path).await?;
    close_store(source).await?;
    report.info(
        format!(
            "restore: Store::export to a file, full at {} ops / delta of {} ops",
            group_digits(ops),
            group_digits(delta_ops)
        ),
        format!(
            "{} in {} ({:.1} MB/s, {} entries) / {} in {}",
            mib(full_bytes),
            millis(full_export),
            full_bytes as f64 / 1e6 / full_export.as_secs_f64(),
            group_digits(full_cp.n_entries),
            mib(delta_bytes),
            millis(delta_export)
        ),
    );

    let restorer = WriterKey::generate(&mut StdRng::seed_from_u64(3));
    let (target, _) =
        open_store(&tmp.path().join("target"), &restorer, Arc::new(CommitCounter::default())).await?;
    eprintln!("restore: import_file of the full snapshot into a fresh store");
    let window = CpuWindow::start(None);
    let started = Instant::now();
    let full = target.import_file(full_path.clone()).await?;
    let full_took = started.elapsed();
    let (bench_cores, _, other) = window.cores();
    others.push(format!("full import {other:.2}"));
    eprintln!("restore: import_file of the delta");
    let window = CpuWindow::start(None);
    let started = Instant::now();
    let delta = target.import_file(delta_path.clone()).await?;
    let delta_took = started.elapsed();
    others.push(format!("delta import {:.2}", window.cores().2));
    close_store(target).await?;
    if full.kind != plait_store::RestoreKind::Full || delta.kind != plait_store::RestoreKind::Delta {
        bail!("unexpected restore kinds: full {:?}, delta {:?}", full.kind, delta.kind);
    }
    let full_rate = per_second(full_cp.n_ops, full_took);
    report.at_least(
        format!(
            "restore: import_file full snapshot, {} ops in {} entries ({}), verified as it is applied",
            group_digits(full_cp.n_ops),
            group_digits(full.entries_read),
            mib(full_bytes)
        ),
        full_rate,
        format!(
            "{} in {} s, {} ({} entries/s, bench {bench_cores:.2} cores)",
            rate(full_rate, "ops/s"),
            format_args!("{:.2}", full_took.as_secs_f64()),
            format_args!("{:.1} MB/s", full_bytes as f64 / 1e6 / full_took.as_secs_f64()),
            group_digits(per_second(full.entries_read, full_took) as u64)
        ),
        300_000.0,
        "300,000 ops/s",
    );
    let pct = 100.0 * delta_took.as_secs_f64() / full_took.as_secs_f64();
    report.below(
        format!(
            "restore: import_file 1% delta ({} ops, {} entries) as % of the full restore",
            group_digits(delta_cp.n_ops - full_cp.n_ops),
            group_digits(delta.entries_read)
        ),
        pct,
        format!("{pct:.2}% ({} vs {})", millis(delta_took), millis(full_took)),
        3.0,
        "3% (target: ≤ 3%)",
    );

    // 3 and 4: a release plaitd with the S3 server's environment.
    let backup_ops = scale.n(args.backup_ops, 1_000_000);
    if backup_ops == 0 {
        report.info(
            format!("restore: other processes on the VM, cores of {}", available_cores()),
            others.join(", "),
        );
        return Ok(());
    }
    let s3 = tokio::task::block_in_place(plait_tests::s3::S3Server::start)?;
    s3.create_bucket("plait-bench")?;
    let data_dir = tmp.path().join("plaitd");
    let file_dir = tmp.path().join("backups");
    let file_destination = format!("local=file://{}", file_dir.display());
    let mut replica = tokio::task::block_in_place(|| {
        Plaitd::start_with_env(
            &data_dir,
            &[
                "--metrics-listen",
                "127.0.0.1:0",
                "--backup-destination",
                &file_destination,
                "--backup-destination",
                "bucket=s3://plait-bench/bench",
            ],
            s3.env(),
        )
    })
    .context("cannot start plaitd; build it first: cargo build --release -p plait-replica -p plait-tests")?;
    let endpoint = replica.endpoint();
    eprintln!("restore: load {} ops into plaitd (4 clients x 1000-op Data.Write)", group_digits(backup_ops));
    load_by_write(&endpoint, backup_ops, 4, 1000).await?;
    settle(replica.pid(), Duration::from_secs(30)).await;
    let channel = connect(&endpoint).await?;
    let mut admin = pb::admin_client::AdminClient::new(channel.clone());
    std::fs::create_dir_all(&file_dir)?;
    // By the names the replica was started with.
    for (what, destination) in
        [("file://", "local".to_owned()), ("s3:// (local moto_server)", "bucket".to_owned())]
    {
        eprintln!("restore: Admin.Backup full to {destination}");
        let window = CpuWindow::start(Some(replica.pid()));
        let started = Instant::now();
        let reply = admin
            .backup(pb::BackupRequest {
                destination,
                logs: vec![LOG_NAME.into()],
                delta: false,
                retain_full: 0,
            })
            .await?
            .into_inner();
        let took = started.elapsed();
        let (_, server, other) = window.cores();
        others.push(format!("backup to {what} {other:.2}"));
        let bytes: u64 = reply.objects.iter().map(|o| o.bytes).sum();
        report.info(
            format!("restore: Admin.Backup full of {} ops to {what}", group_digits(backup_ops)),
            format!(
                "{:.1} MB/s ({} in {} s, {} object(s); plaitd {server:.2} cores)",
                bytes as f64 / 1e6 / took.as_secs_f64(),
                mib(bytes),
                format_args!("{:.2}", took.as_secs_f64()),
                reply.objects.len()
            ),
        );
    }

    let seconds = scale.seconds(args.seconds, 5.0);
    eprintln!("restore: {} single-put clients for {seconds} s, without then with an export", args.clients);
    let put_channel = connect(&endpoint).await?;
    let window = CpuWindow::start(Some(replica.pid()));
    let quiet = put_window(&put_channel, args.clients, seconds, 0x10).await?;
    others.push(format!("puts alone {:.2}", window.cores().2));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let exporter = tokio::spawn(export_loop(channel.clone(), stop.clone()));
    let window = CpuWindow::start(Some(replica.pid()));
    let busy = put_window(&put_channel, args.clients, seconds, 0x11).await?;
    let (_, server, other) = window.cores();
    others.push(format!("puts during export {other:.2}"));
    stop.store(true, Ordering::Relaxed);
    let (exports, exported) = exporter.await??;
    replica.terminate()?;
    drop(s3);
    let (q50, q99) = (percentile(&quiet, 0.5), percentile(&quiet, 0.99));
    let (b50, b99) = (percentile(&busy, 0.5), percentile(&busy, 0.99));
    report.info(
        format!("restore: Data.Put p50 / p99, {} clients, {seconds} s, no export", args.clients),
        format!(
            "{} / {} ({} puts/s)",
            millis_fine(q50),
            millis_fine(q99),
            group_digits(per_second(quiet.len() as u64, Duration::from_secs_f64(seconds)) as u64)
        ),
    );
    report.info(
        format!("restore: Data.Put p50 / p99 while Admin.ExportSnapshot streams ({} ops log)", group_digits(backup_ops)),
        format!(
            "{} / {} ({} puts/s; {} exports, {} streamed incl. the last one after the window; plaitd {server:.2} cores)",
            millis_fine(b50),
            millis_fine(b99),
            group_digits(per_second(busy.len() as u64, Duration::from_secs_f64(seconds)) as u64),
            exports,
            mib(exported)
        ),
    );
    report.info(
        "restore: put latency with export / without, p50 / p99",
        format!(
            "{:.2}× / {:.2}×",
            b50.as_secs_f64() / q50.as_secs_f64().max(f64::MIN_POSITIVE),
            b99.as_secs_f64() / q99.as_secs_f64().max(f64::MIN_POSITIVE)
        ),
    );
    report.info(
        format!("restore: other processes on the VM, cores of {}", available_cores()),
        others.join(", "),
    );
    Ok(())
}

/// Milliseconds with two decimals, for latencies of a few ms.
fn millis_fine(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------------------

fn machine() -> String {
    let cores = available_cores();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()))
        .map_or_else(String::new, |kib| format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)));
    format!("{cores} cores, {memory} memory, Linux {}", kernel.trim())
}

/// The allocator plaitd uses (crates/plait-replica/src/main.rs), so that the in-process
/// figures (restore, ingest, raw fjall, the bare tonic server) measure what plaitd does.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let scale = Scale { quick: cli.quick };
    KEEP_DIRS.store(cli.keep, Ordering::Relaxed);
    let work_dir = cli.work_dir.as_path();
    let mut report = Report::default();
    let started = Instant::now();
    eprintln!("plait-bench on {}{}", machine(), if cli.quick { " (--quick)" } else { "" });
    match &cli.command {
        Command::EntryCpu(args) => entry_cpu(args, scale, &mut report)?,
        Command::Ingest(args) => ingest(args, scale, work_dir, &mut report).await?,
        Command::History(args) => history(args, scale, work_dir, &mut report).await?,
        Command::Unary(args) => unary(args, scale, work_dir, &mut report).await?,
        Command::BareServer => return bare_server().await,
        Command::Reopen(args) => drop(reopen(args, scale, work_dir, &mut report).await?),
        Command::KvGet(args) => {
            let keys = scale.n(args.keys, 1_000_000);
            let (dir, _, segments) = build_data_dir(work_dir, keys, BUILD_BATCH_OPS, None).await?;
            let building: Duration = segments.iter().map(|(_, took)| *took).sum();
            report.info(
                format!("kv-get: build {} keys", group_digits(keys)),
                format!("{:.1} s, data dir {}", building.as_secs_f64(), mib(dir_bytes(&dir.path))),
            );
            kv_get(&dir, &args.reads, scale, &mut report).await?;
        }
        Command::Catchup(args) => catchup(args, scale, work_dir, &mut report).await?,
        Command::Latency(args) => latency(args, scale, work_dir, &mut report).await?,
        Command::ManyLogs(args) => many_logs(args, scale, work_dir, &mut report).await?,
        Command::Restore(args) => restore(args, scale, work_dir, &mut report).await?,
        Command::Security(args) => security(args, scale, work_dir, &mut report).await?,
        Command::All(args) => {
            entry_cpu(&EntryCpuArgs { entries: None }, scale, &mut report)?;
            let ingest_args = IngestArgs { ops: args.ingest_ops, tasks: 8, batch: 1000, rounds: None };
            ingest(&ingest_args, scale, work_dir, &mut report).await?;
            let unary_args =
                UnaryArgs { clients: 64, channels: 8, seconds: args.unary_seconds, ops: None, rounds: None };
            unary(&unary_args, scale, work_dir, &mut report).await?;
            let reopen_args =
                ReopenArgs { ops: args.reopen_ops, batch: BUILD_BATCH_OPS, opens: 5, starts: 3 };
            let dir = reopen(&reopen_args, scale, work_dir, &mut report).await?;
            let read_args = ReadArgs { reads: None, grpc_reads: None, grpc_clients: 4 };
            kv_get(&dir, &read_args, scale, &mut report).await?;
            drop(dir);
            let catchup_args = CatchupArgs {
                ops: args.catchup_ops,
                shapes: vec![Shape::Large, Shape::Small],
                clients: 4,
                batch: 1000,
                small_entry_ops: 10,
                rounds: None,
                settle_seconds: 60.0,
            };
            catchup(&catchup_args, scale, work_dir, &mut report).await?;
            let memory_args = CatchupArgs {
                ops: Some(scale.n(args.catchup_memory_ops, 10_000_000)),
                shapes: vec![Shape::Large],
                rounds: Some(1),
                ..catchup_args
            };
            catchup(&memory_args, scale, work_dir, &mut report).await?;
            let latency_args = LatencyArgs {
                loads: vec![Load { rate: 2000, batch: 1 }, Load { rate: 10_000, batch: 100 }],
                seconds: args.latency_seconds,
                anti_entropy_ms: 5000,
            };
            latency(&latency_args, scale, work_dir, &mut report).await?;
            let many_logs_args = ManyLogsArgs { logs: None, rate: 80, seconds: None };
            many_logs(&many_logs_args, scale, work_dir, &mut report).await?;
            let restore_args = RestoreArgs { ops: None, backup_ops: None, seconds: None, clients: 16 };
            restore(&restore_args, scale, work_dir, &mut report).await?;
            let history_args = HistoryArgs { keys: None, versions: 10, reads: None };
            history(&history_args, scale, work_dir, &mut report).await?;
        }
    }
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "Plait benchmarks on {}{}\n",
        machine(),
        if cli.quick { " (--quick: sizes shrunk, not a measurement)" } else { "" }
    );
    print!("{}", report.markdown());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Security: what TLS and authentication cost.

/// The bench's bearer token, named in the secured replicas' auth file.
const BENCH_TOKEN: &str = "plait-bench-token";
/// The secured/plaintext ratio security should keep (docs/security.md).
const SECURITY_RATIO_TARGET: f64 = 0.85;

/// How a replica the bench starts is secured.
enum Security {
    /// Plaintext, no authentication: the embedded default.
    Off,
    /// TLS with client certificates and the auth file, as docs/security.md sets it up.
    On(BenchPki),
}

/// The files of a secured bench replica and its callers.
struct BenchPki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    auth: PathBuf,
}

/// How a bench client proves who it is to a secured replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    /// TLS, and a bearer token from the auth file.
    Token,
    /// Mutual TLS: a client certificate in `plait:admins`.
    Certificate,
}

impl Security {
    /// A CA, a replica certificate for 127.0.0.1 in `plait:peers` (used for serving and
    /// for calling peers), an admin client certificate and an auth file with the bench
    /// token, under `dir`.
    // Certificates are judged by the real clock of the plaitd processes.
    #[allow(clippy::disallowed_methods)]
    fn on(dir: &Path) -> anyhow::Result<Security> {
        use plait_pki::{Ca, CertSpec, Validity};
        std::fs::create_dir_all(dir)?;
        let now = std::time::SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        let ca = Ca::generate("plait-bench CA", Validity::from_now(now, 7 * day))?;
        let write_pair = |name: &str, spec: CertSpec| -> anyhow::Result<(PathBuf, PathBuf)> {
            let issued = ca.issue(&spec)?;
            let pair = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
            std::fs::write(&pair.0, issued.cert_pem())?;
            std::fs::write(&pair.1, issued.key_pem())?;
            Ok(pair)
        };
        let server = write_pair(
            "replica",
            CertSpec::new("replica", Validity::from_now(now, day))
                .group(plait_pki::GROUP_PEERS)
                .ip(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
                .dns("localhost"),
        )?;
        let client = write_pair(
            "bench",
            CertSpec::new("bench", Validity::from_now(now, day)).group(plait_pki::GROUP_ADMINS).client_only(),
        )?;
        let ca_path = dir.join("ca.crt");
        std::fs::write(&ca_path, ca.cert_pem())?;
        let auth = dir.join("auth.yaml");
        std::fs::write(
            &auth,
            format!(
                "tokens:\n  - name: bench-app\n    hash: blake3:{}\n    roles: [read, \"write:*\", log-admin]\n",
                blake3::hash(BENCH_TOKEN.as_bytes()).to_hex()
            ),
        )?;
        Ok(Security::On(BenchPki { ca: ca_path, server, client, auth }))
    }

    /// plaitd flags for a replica secured this way.
    fn replica_flags(&self) -> Vec<String> {
        match self {
            Security::Off => Vec::new(),
            Security::On(pki) => {
                let path = |p: &Path| p.display().to_string();
                vec![
                    "--tls-cert".into(),
                    path(&pki.server.0),
                    "--tls-key".into(),
                    path(&pki.server.1),
                    "--tls-client-ca".into(),
                    path(&pki.ca),
                    "--auth-file".into(),
                    path(&pki.auth),
                ]
            }
        }
    }

    /// A client of `replica`, one HTTP/2 connection, proving itself as `caller`.
    async fn client(&self, replica: &Plaitd, caller: Caller) -> anyhow::Result<plait_client::Client> {
        let options = match self {
            Security::Off => plait_client::ClientOptions::new(),
            Security::On(pki) => {
                let options = plait_client::ClientOptions::new().tls_ca_file(&pki.ca)?;
                match caller {
                    Caller::Token => options.token(BENCH_TOKEN)?,
                    Caller::Certificate => options.client_cert_files(&pki.client.0, &pki.client.1)?,
                }
            }
        };
        Ok(plait_client::Client::connect_with(replica.grpc.to_string(), &options).await?)
    }
}

#[derive(Args, Debug)]
struct SecurityArgs {
    /// Concurrent unary clients, each with one call in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 8)]
    channels: usize,
    /// Seconds per unary round. [default: 10; --quick: 1]
    #[arg(long)]
    seconds: Option<f64>,
    /// Rounds of each variant, interleaved (plaintext, TLS + token, mTLS, plaintext, ...);
    /// the table shows medians and ranges. [default: 3; --quick: 1]
    #[arg(long)]
    rounds: Option<usize>,
    /// Ops a fresh replica catches up, from a plaintext and from a secured source.
    /// [default: 1000000; --quick: 10000]
    #[arg(long)]
    ops: Option<u64>,
    /// Longest wait for the sources to go idle before the first catch-up, in seconds.
    #[arg(long, default_value_t = 60.0)]
    settle_seconds: f64,
}

/// Unary puts and catch-up with TLS and authentication on, as ratios to the same run
/// without them: rounds of each variant interleaved in one run, so both see the same
/// machine.
async fn security(
    args: &SecurityArgs,
    scale: Scale,
    work_dir: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let tmp = temp_dir(work_dir, "security")?;
    let secure = Security::on(&tmp.path().join("pki"))?;
    let plain = Security::Off;
    let seconds = scale.seconds(args.seconds, 10.0);
    let rounds = scale.rounds(args.rounds);

    // Unary: one plaintext replica, one secured; both idle while the other is measured.
    eprintln!(
        "security, unary: {} clients over {} connections, single-op Put, {rounds} x {seconds} s per variant",
        args.clients, args.channels
    );
    let (mut plain_node, _) = tokio::task::block_in_place(|| start_replica(&tmp.path().join("plain"), &[]))?;
    let flags = secure.replica_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (mut secure_node, _) =
        tokio::task::block_in_place(|| start_replica(&tmp.path().join("secure"), &flags))?;
    let variants: [(&str, &Security, &Plaitd, Caller); 3] = [
        ("plaintext", &plain, &plain_node, Caller::Token),
        ("TLS + token", &secure, &secure_node, Caller::Token),
        ("mTLS client certificate", &secure, &secure_node, Caller::Certificate),
    ];
    let mut clients = Vec::new();
    for (_, security, node, caller) in &variants {
        let mut connections = Vec::with_capacity(args.channels.max(1));
        for _ in 0..args.channels.max(1) {
            connections.push(security.client(node, *caller).await?);
        }
        clients.push(connections);
    }
    for connections in [&clients[0], &clients[2]] {
        connections[0].create_log(&plait_client::CreateLogOptions::new(LOG_NAME, LogType::Kv)).await?;
    }
    for connections in &clients {
        for i in 0..100 {
            let Op::Put { key, value } = put_op(u64::MAX - i) else { unreachable!() };
            connections[i as usize % connections.len()].put(LOG_NAME, key, value).await?;
        }
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut p99s: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for (v, (name, ..)) in variants.iter().enumerate() {
            let tag = (round * variants.len() + v) as u64;
            let (mut latencies, elapsed) =
                unary_client_round(&clients[v], args.clients, seconds, tag).await?;
            let r = per_second(latencies.len() as u64, elapsed);
            eprintln!("  round {} of {rounds}, {name}: {} ops/s", round + 1, group_digits(r as u64));
            rates[v].push(r);
            latencies.sort();
            p99s[v].push(percentile(&latencies, 0.99));
        }
    }
    drop(clients);
    let names: Vec<&str> = variants.iter().map(|(name, ..)| *name).collect();
    plain_node.terminate()?;
    secure_node.terminate()?;
    let (plain_rate, plain_shown) = spread(&rates[0], |v| rate(v, "ops/s"));
    report.info(
        format!(
            "security: unary Put, plaintext, {} clients / {} connections, median of {rounds} x {seconds} s",
            args.clients, args.channels
        ),
        format!("{plain_shown}; p99 {}", micros(median(p99s[0].clone()))),
    );
    for v in 1..names.len() {
        let (r, shown) = spread(&rates[v], |x| rate(x, "ops/s"));
        report.at_least(
            format!("security: unary Put, {} / plaintext (interleaved rounds)", names[v]),
            r / plain_rate,
            format!("{:.2} ({shown}; p99 {})", r / plain_rate, micros(median(p99s[v].clone()))),
            SECURITY_RATIO_TARGET,
            "0.85",
        );
    }

    // Catch-up: one loaded data directory, copied, served by a plaintext and a secured
    // source; fresh replicas catch up from each in turn.
    let ops = scale.n(args.ops, 1_000_000);
    eprintln!("security, catch-up: loading {} ops", group_digits(ops));
    let plain_dir = tmp.path().join("source-plain");
    let secure_dir = tmp.path().join("source-secure");
    {
        let (mut loader, _) = tokio::task::block_in_place(|| start_replica(&plain_dir, &[]))?;
        load_by_write(&loader.endpoint(), ops, 4, 1000).await?;
        loader.terminate()?;
    }
    let copied = std::process::Command::new("cp").arg("-a").arg(&plain_dir).arg(&secure_dir).status()?;
    anyhow::ensure!(copied.success(), "cp -a {} {} failed", plain_dir.display(), secure_dir.display());
    let (mut plain_source, _) = tokio::task::block_in_place(|| start_replica(&plain_dir, &[]))?;
    let (mut secure_source, _) = tokio::task::block_in_place(|| start_replica(&secure_dir, &flags))?;
    let entries = {
        let client = plain.client(&plain_source, Caller::Token).await?;
        let (entries, stored) =
            client_log_progress(&client).await?.context("the source lost the bench log")?;
        anyhow::ensure!(stored == ops, "the source holds {stored} ops, expected {ops}");
        entries
    };
    let max = Duration::from_secs_f64(args.settle_seconds);
    settle(plain_source.pid(), max).await;
    settle(secure_source.pid(), max).await;
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (v, (name, source, security)) in
            [("plaintext", &plain_source, &plain), ("mTLS + auth", &secure_source, &secure)]
                .into_iter()
                .enumerate()
        {
            let dir = tmp.path().join(format!("replica-{v}-{round}"));
            let r = catchup_round_with(source, &dir, ops, entries, security).await?;
            eprintln!(
                "  round {round} of {rounds}, {name}: {} ops in {:.2} s ({} ops/s)",
                group_digits(ops),
                r.elapsed.as_secs_f64(),
                group_digits(per_second(ops, r.elapsed) as u64)
            );
            times[v].push(per_second(ops, r.elapsed));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    plain_source.terminate()?;
    secure_source.terminate()?;
    let (plain_rate, plain_shown) = spread(&times[0], |v| rate(v, "ops/s"));
    let (secure_rate, secure_shown) = spread(&times[1], |v| rate(v, "ops/s"));
    report.info(
        format!("security: catch-up of {} ops, plaintext, median of {rounds}", group_digits(ops)),
        plain_shown,
    );
    report.at_least(
        "security: catch-up, mTLS between replicas + auth / plaintext (interleaved rounds)",
        secure_rate / plain_rate,
        format!("{:.2} ({secure_shown})", secure_rate / plain_rate),
        SECURITY_RATIO_TARGET,
        "0.85",
    );
    Ok(())
}

/// [`unary_round`] through the client library: `clients` tasks spread over
/// `connections`, single-op puts until `seconds` pass.
async fn unary_client_round(
    connections: &[plait_client::Client],
    clients: usize,
    seconds: f64,
    round: u64,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut handles = Vec::with_capacity(clients);
    for client in 0..clients.max(1) {
        let connection = connections[client % connections.len()].clone();
        let first = (round << 48) | ((client as u64) << 32);
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(64 * 1024);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let Op::Put { key, value } = put_op(first | n) else { unreachable!() };
                n += 1;
                let call = Instant::now();
                connection.put(LOG_NAME, key, value).await?;
                latencies.push(call.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await??);
    }
    Ok((latencies, started.elapsed()))
}
