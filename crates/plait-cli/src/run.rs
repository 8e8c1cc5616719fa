//! Runs one parsed command against a replica and prints its result.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use plait_client::{
    Client, CreateLogOptions, Direction, EdgesOptions, HistoryTarget, ReadFeedOptions, RoutedOp, ScanOptions,
    ServingStatus, WriteAck,
};
use plait_core::limits::{ENTRY_BYTES_MAX, VALUE_BYTES_MAX};
use plait_core::{EntryHash, Op, WriterKey};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::cli::{Cli, Command, ConsumerCommand, LogCommand, MembersCommand, OpCommand, OutputFormat};
use crate::output;

/// Most ops `append --stdin` sends in one `Write` call.
const APPEND_BATCH_OPS_MAX: usize = 1000;
/// Most value bytes in one `append --stdin` batch. The batch becomes one entry, which
/// may not exceed `ENTRY_BYTES_MAX`; half of it leaves room for the encoding overhead.
const APPEND_BATCH_BYTES_MAX: usize = ENTRY_BYTES_MAX / 2;
/// How long `append --stdin` holds a partial batch while stdin is quiet, so lines from
/// a slow producer (`tail -f app.log | plaitctl append ...`) land promptly.
const APPEND_FLUSH_AFTER: Duration = Duration::from_millis(200);
/// Bytes per chunk `import` sends.
const IMPORT_CHUNK_BYTES: usize = 1024 * 1024;
/// Keys per `scan` page.
const SCAN_PAGE_KEYS: u64 = 1000;

/// Where results go, in the chosen format.
pub(crate) struct Printer {
    format: OutputFormat,
}

impl Printer {
    pub(crate) fn new(format: OutputFormat) -> Self {
        Printer { format }
    }

    fn write(&self, text: &str) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        Ok(())
    }

    /// Prints one result: `human()` as is, or `json()` as one pretty JSON document.
    pub(crate) fn emit(
        &self,
        human: impl FnOnce() -> String,
        json: impl FnOnce() -> Value,
    ) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Human => self.write(&human()),
            OutputFormat::Json => self.write(&format!("{:#}\n", json())),
        }
    }

    /// Prints one item of a stream: a human line, or a JSON object on one line.
    fn emit_line(&self, human: impl FnOnce() -> String, json: impl FnOnce() -> Value) -> anyhow::Result<()> {
        match self.format {
            OutputFormat::Human => self.write(&human()),
            OutputFormat::Json => self.write(&format!("{}\n", json())),
        }
    }

    fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }
}

/// Runs the command line.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let printer = Printer::new(cli.output);
    match cli.command {
        // The commands that need no replica.
        Command::Keygen { out } => keygen(&printer, out.as_deref()),
        Command::Cert(command) => crate::pki::cert(&printer, command),
        Command::Token(command) => crate::pki::token(&printer, command),
        command => {
            let options = crate::pki::client_options(&cli.connect)?;
            let mut client = Client::connect_with(cli.addr.as_str(), &options).await?;
            if let Some((replicas, timeout)) = command.write_concern().and_then(|c| c.concern()) {
                client = client.with_write_concern(replicas, timeout);
            }
            run_remote(&client, &printer, command).await.map_err(|e| crate::pki::explain(e, &cli.connect))
        }
    }
}

async fn run_remote(client: &Client, printer: &Printer, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Log(command) => run_log(client, printer, command).await,
        Command::Put { log, key, value, .. } => print_ack(printer, &client.put(&log, key, value).await?),
        Command::Get { log, key, as_of } => {
            let Some(found) = client.get_as_of(&log, key.as_str(), as_of).await? else {
                match as_of {
                    None => bail!("key {key:?} is not set in log {log:?}"),
                    Some(_) => bail!("key {key:?} was not set in log {log:?} at that point"),
                }
            };
            printer.emit(
                || output::feed_value_human(&found.value),
                || {
                    let mut out = serde_json::Map::new();
                    output::put_bytes(&mut out, "key", key.as_bytes());
                    output::put_bytes(&mut out, "value", &found.value);
                    out.insert("clock".into(), output::clock_json(&found.clock));
                    Value::Object(out)
                },
            )
        }
        Command::Delete { log, key, .. } => print_ack(printer, &client.delete(&log, key).await?),
        Command::Scan { log, prefix, start, end, limit, as_of } => {
            let options = ScanOptions {
                prefix: prefix.map(String::into_bytes).unwrap_or_default(),
                start: start.map(String::into_bytes).unwrap_or_default(),
                end: end.map(String::into_bytes).unwrap_or_default(),
                limit: 0,
                as_of,
            };
            scan(client, printer, &log, options, limit).await
        }
        Command::Append { log, value: Some(value), stdin: false, .. } => {
            print_ack(printer, &client.append(&log, value).await?)
        }
        Command::Append { log, .. } => append_stdin(client, printer, &log).await,
        Command::Tail { log, lines, as_of: Some(as_of), .. } => {
            // A limit of 0 would mean the server's default, not nothing.
            let items = if lines == 0 {
                Vec::new()
            } else {
                let options =
                    ReadFeedOptions { limit: lines, tail: true, as_of: Some(as_of), ..Default::default() };
                client.read_feed(&log, &options).await?
            };
            printer.emit(
                || items.iter().map(|item| output::feed_value_human(&item.value)).collect(),
                || items.iter().map(output::feed_item_json).collect::<Vec<_>>().into(),
            )
        }
        Command::Tail { log, lines, follow, .. } => tail(client, printer, &log, lines, follow).await,
        Command::Link { log, src, label, dst, props, .. } => {
            print_ack(printer, &client.link(&log, src, label, dst, props).await?)
        }
        Command::Unlink { log, src, label, dst, .. } => {
            print_ack(printer, &client.unlink(&log, src, label, dst).await?)
        }
        Command::Edges { log, node, incoming, label, limit, as_of } => {
            // Pages stop at a byte bound too: read on until the limit (default 1000).
            let wanted = limit.unwrap_or(1000) as usize;
            let mut options = EdgesOptions {
                direction: if incoming { Direction::In } else { Direction::Out },
                label,
                limit: limit.unwrap_or(0),
                after: Vec::new(),
                as_of,
            };
            let mut edges = Vec::new();
            loop {
                let page = client.edges_page(&log, node.as_str(), &options).await?;
                edges.extend(page.edges);
                match page.next_after {
                    Some(next) if edges.len() < wanted => {
                        options.limit = u32::try_from(wanted - edges.len()).unwrap_or(u32::MAX);
                        options.after = next;
                    }
                    _ => break,
                }
            }
            printer.emit(
                || output::edges_table(&edges),
                || edges.iter().map(output::edge_json).collect::<Vec<_>>().into(),
            )
        }
        Command::History { log, key, edge, writer, from, to, limit } => {
            let target = match (key, edge, writer) {
                (Some(key), _, _) => HistoryTarget::Key(key.into_bytes()),
                (_, Some(edge), _) => {
                    let [src, label, dst]: [String; 3] =
                        edge.try_into().map_err(|_| anyhow!("--edge takes SRC LABEL DST"))?;
                    HistoryTarget::Edge { src: src.into_bytes(), label, dst: dst.into_bytes() }
                }
                (_, _, Some(writer)) => HistoryTarget::Writer { writer, from, to: to.unwrap_or(0) },
                _ => bail!("name a key, --edge SRC LABEL DST or --writer KEY"),
            };
            history(client, printer, &log, &target, limit).await
        }
        Command::Entry { hash } => {
            let stored = client.get_entry(hash).await?;
            printer.emit(|| output::entry_human(&stored), || output::entry_json(&stored))
        }
        Command::Heads { log } => {
            let heads = client.heads(&log).await?;
            printer.emit(|| output::heads_human(&heads), || output::heads_json(&heads))
        }
        Command::Status => {
            let status = client.status().await?;
            printer.emit(|| output::status_human(&status), || output::status_json(&status))
        }
        Command::Subscribe { log, after, follow, consumer, commit } => {
            subscribe(client, printer, &log, after, follow, consumer.as_deref(), commit).await
        }
        Command::Consumer(ConsumerCommand::List { log }) => {
            let (consumers, limit) = client.consumers(&log).await?;
            printer.emit(
                || {
                    let rows: Vec<Vec<String>> = consumers
                        .iter()
                        .map(|c| vec![c.name.clone(), c.committed_seq.to_string(), c.lag.to_string()])
                        .collect();
                    let mut out = if rows.is_empty() {
                        "no consumers\n".to_owned()
                    } else {
                        output::table(&["CONSUMER", "COMMITTED", "LAG"], &rows)
                    };
                    out.push_str(&format!("({} of at most {limit} per log)\n", consumers.len()));
                    out
                },
                || json!({ "consumers": consumers.iter().map(output::consumer_json).collect::<Vec<_>>(), "limit": limit }),
            )
        }
        Command::Consumer(ConsumerCommand::Commit { log, name, seq }) => {
            let c = client.commit_consumer(&log, &name, seq).await?;
            printer.emit(
                || format!("consumer {} committed at seq {} (lag {})\n", c.name, c.committed_seq, c.lag),
                || output::consumer_json(&c),
            )
        }
        Command::Consumer(ConsumerCommand::Delete { log, name }) => {
            client.delete_consumer(&log, &name).await?;
            printer.emit(|| format!("consumer {name} deleted\n"), || json!({ "deleted": name }))
        }
        Command::Members(MembersCommand::Set { generation, members }) => {
            let generation = client.set_members(generation, members.clone()).await?;
            printer.emit(
                || output::members_set_human(generation, &members),
                || json!({ "generation": generation, "members": members }),
            )
        }
        Command::Drain { cancel: true, .. } => {
            client.cancel_drain().await?;
            printer.emit(
                || "drain cancelled: the replica accepts local writes again\n".to_owned(),
                || json!({ "draining": false }),
            )
        }
        Command::Drain { timeout, .. } => {
            let logs = client.drain(timeout).await?;
            printer.emit(|| output::drained_human(&logs), || output::drained_json(&logs))
        }
        Command::Checkpoint { log } => {
            let checkpoint = client.checkpoint(&log).await?;
            printer.emit(|| output::checkpoint_human(&checkpoint), || output::checkpoint_json(&checkpoint))
        }
        Command::Export { log, since, out } => export(client, printer, &log, since, out.as_deref()).await,
        Command::Import { file } => import(client, printer, &file).await,
        Command::Backup { destination, logs, delta, retain_full } => {
            let destination = destination.unwrap_or_default();
            let report = client.backup(&destination, logs, delta, retain_full.unwrap_or(0)).await?;
            printer.emit(|| output::backup_human(&report), || output::backup_json(&report))
        }
        Command::Health => {
            let health = client.health().await?;
            printer.emit(
                || format!("{}\n", health.as_str_name()),
                || json!({ "status": health.as_str_name() }),
            )?;
            if health != ServingStatus::Serving {
                bail!("the replica is not serving (health {})", health.as_str_name());
            }
            Ok(())
        }
        Command::Submit { log, key_file, op } => {
            let key = read_key_file(&key_file)?;
            let result = client.submit_signed(&log, vec![op_of(op)], &key).await?;
            printer.emit(|| output::submit_human(&result), || output::submit_json(&result))
        }
        Command::Keygen { out } => keygen(printer, out.as_deref()),
        Command::Cert(command) => crate::pki::cert(printer, command),
        Command::Token(command) => crate::pki::token(printer, command),
    }
}

async fn run_log(client: &Client, printer: &Printer, command: LogCommand) -> anyhow::Result<()> {
    match command {
        LogCommand::Create { name, log_type, writers, open, exclude_replica_writer } => {
            let options =
                CreateLogOptions { name, log_type: log_type.into(), writers, open, exclude_replica_writer };
            let log = client.create_log(&options).await?;
            printer.emit(|| output::log_human(&log), || output::log_json(&log))
        }
        LogCommand::List => {
            let logs = client.list_logs().await?;
            printer.emit(
                || output::logs_table(&logs),
                || logs.iter().map(output::log_json).collect::<Vec<_>>().into(),
            )
        }
        LogCommand::Get { log } => {
            let log = client.get_log(&log).await?;
            // Checks that the ACL shown is the one the log's id commits to.
            log.verified_manifest()?;
            printer.emit(
                || format!("{}manifest: verified (signed, hashes to the id)\n", output::log_human(&log)),
                || {
                    let mut value = output::log_json(&log);
                    value["manifest_verified"] = true.into();
                    value
                },
            )
        }
        LogCommand::Drop { log } => {
            let log_id = client.drop_log(&log).await?;
            printer.emit(|| format!("dropped log {log_id}\n"), || json!({ "dropped": log_id.to_hex() }))
        }
    }
}

fn print_ack(printer: &Printer, ack: &WriteAck) -> anyhow::Result<()> {
    printer.emit(|| output::ack_human(ack), || output::ack_json(ack))
}

fn op_of(command: OpCommand) -> Op {
    match command {
        OpCommand::Append { value } => Op::Append { value: value.into_bytes() },
        OpCommand::Put { key, value } => Op::Put { key: key.into_bytes(), value: value.into_bytes() },
        OpCommand::Delete { key } => Op::Delete { key: key.into_bytes() },
        OpCommand::Link(link) => Op::Link {
            src: link.src.into_bytes(),
            label: link.label,
            dst: link.dst.into_bytes(),
            props: link.props.into_bytes(),
        },
        OpCommand::Unlink { src, label, dst } => {
            Op::Unlink { src: src.into_bytes(), label, dst: dst.into_bytes() }
        }
    }
}

/// Lists keys page by page, printing as pages arrive so a large scan does not gather
/// everything in memory. JSON output is still one array.
async fn scan(
    client: &Client,
    printer: &Printer,
    log: &str,
    mut options: ScanOptions,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let mut remaining = limit;
    let mut printed = 0u64;
    if printer.is_json() {
        printer.write("[")?;
    }
    loop {
        let page_keys = remaining.map_or(SCAN_PAGE_KEYS, |r| r.min(SCAN_PAGE_KEYS));
        options.limit = u32::try_from(page_keys).expect("a page is at most SCAN_PAGE_KEYS");
        let page = client.scan(log, &options).await?;
        let mut text = String::new();
        for item in page.items.iter().take(page_keys as usize) {
            if printer.is_json() {
                text.push_str(if printed == 0 { "\n" } else { ",\n" });
                text.push_str(&output::key_value_json(item).to_string());
            } else {
                text.push_str(&output::key_value_human(item));
            }
            printed += 1;
        }
        printer.write(&text)?;
        if let Some(r) = remaining.as_mut() {
            *r = r.saturating_sub(page.items.len() as u64);
            if *r == 0 {
                break;
            }
        }
        match page.next_start {
            // A next start that does not move forward would loop forever.
            Some(next) if next > options.start => options.start = next,
            Some(_) => {
                bail!("the replica's scan did not advance past key {:?}", output::bytes_text(&options.start))
            }
            None => break,
        }
    }
    if printer.is_json() {
        printer.write(if printed == 0 { "]\n" } else { "\n]\n" })?;
    }
    Ok(())
}

/// What `append --stdin` did, for the summary.
#[derive(Default)]
struct AppendTally {
    appended: u64,
    skipped_empty: u64,
    batches: u64,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    log_id: Option<String>,
}

/// One batch of lines on its way to one `Write` call.
struct AppendBatch<'a> {
    log: &'a str,
    ops: Vec<RoutedOp>,
    value_bytes: usize,
}

impl AppendBatch<'_> {
    fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether `value` still fits in this batch.
    fn fits(&self, value: &[u8]) -> bool {
        self.ops.len() < APPEND_BATCH_OPS_MAX && self.value_bytes + value.len() <= APPEND_BATCH_BYTES_MAX
    }

    fn push(&mut self, value: Vec<u8>) {
        self.value_bytes += value.len();
        self.ops.push(RoutedOp::new(self.log, Op::Append { value }));
    }

    async fn flush(
        &mut self,
        client: &Client,
        tally: &mut AppendTally,
        progress: &Progress,
    ) -> anyhow::Result<()> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let count = self.ops.len() as u64;
        let acks = client.write(std::mem::take(&mut self.ops)).await.with_context(|| {
            format!("after {} lines were appended, a batch of {count} failed", tally.appended)
        })?;
        self.value_bytes = 0;
        tally.appended += count;
        tally.batches += 1;
        if let (Some(first), Some(last)) = (acks.first(), acks.last()) {
            tally.first_seq.get_or_insert(first.seq);
            tally.last_seq = Some(last.seq);
            tally.log_id.get_or_insert_with(|| first.log_id.to_hex());
        }
        progress.update(tally.appended);
        Ok(())
    }
}

/// A one-line progress counter on stderr, only when stderr is a terminal.
struct Progress {
    enabled: bool,
    started: Instant,
}

impl Progress {
    fn new() -> Self {
        Progress { enabled: std::io::stderr().is_terminal(), started: Instant::now() }
    }

    fn update(&self, appended: u64) {
        if self.enabled {
            let seconds = self.started.elapsed().as_secs_f64().max(0.001);
            eprint!("\rappended {appended} values ({:.0}/s)   ", appended as f64 / seconds);
        }
    }

    fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

/// The value of one line of input: without its line ending, `None` if empty.
fn line_value(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (!line.is_empty()).then_some(line)
}

/// Appends each non-empty line of stdin, batched through `Write`.
async fn append_stdin(client: &Client, printer: &Printer, log: &str) -> anyhow::Result<()> {
    let mut reader = BufReader::new(tokio::io::stdin());
    let mut batch = AppendBatch { log, ops: Vec::new(), value_bytes: 0 };
    let mut tally = AppendTally::default();
    let progress = Progress::new();
    let mut line = Vec::new();
    let mut line_number = 0u64;
    loop {
        // With lines waiting, a quiet stdin flushes them. `read_until` keeps what it
        // read when the timeout cancels it, so a line split across the pause is whole.
        let read = if batch.is_empty() {
            Some(reader.read_until(b'\n', &mut line).await)
        } else {
            tokio::time::timeout(APPEND_FLUSH_AFTER, reader.read_until(b'\n', &mut line)).await.ok()
        };
        let Some(read) = read else {
            batch.flush(client, &mut tally, &progress).await?;
            continue;
        };
        if read.context("cannot read stdin")? == 0 && line.is_empty() {
            break;
        }
        line_number += 1;
        match line_value(&line) {
            None => tally.skipped_empty += 1,
            Some(value) if value.len() > VALUE_BYTES_MAX => {
                batch.flush(client, &mut tally, &progress).await?;
                progress.finish();
                bail!(
                    "line {line_number} is {} bytes, over the value limit of {VALUE_BYTES_MAX} bytes; \
                     the {} lines before it were appended",
                    value.len(),
                    tally.appended
                );
            }
            Some(value) => {
                if !batch.fits(value) {
                    batch.flush(client, &mut tally, &progress).await?;
                }
                batch.push(value.to_vec());
            }
        }
        line.clear();
    }
    batch.flush(client, &mut tally, &progress).await?;
    progress.finish();
    printer.emit(
        || match (tally.first_seq, tally.last_seq) {
            (Some(first), Some(last)) => {
                format!(
                    "appended {} values in {} batches (seq {first} to {last})\n",
                    tally.appended, tally.batches
                )
            }
            _ => "nothing appended: stdin had no non-empty lines\n".to_owned(),
        },
        || {
            json!({
                "appended": tally.appended,
                "skipped_empty": tally.skipped_empty,
                "batches": tally.batches,
                "log_id": tally.log_id,
                "first_seq": tally.first_seq,
                "last_seq": tally.last_seq,
            })
        },
    )
}

/// Prints the last `lines` items of a feed; with `follow`, keeps printing new ones.
/// Prints a history page by page, up to `limit` rows.
async fn history(
    client: &Client,
    printer: &Printer,
    log: &str,
    target: &HistoryTarget,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let mut after = Vec::new();
    let mut versions = Vec::new();
    let mut entries = Vec::new();
    loop {
        let left = limit.map_or(u64::MAX, |l| l - (versions.len() + entries.len()) as u64);
        let page_limit = u32::try_from(left.min(SCAN_PAGE_KEYS)).expect("a page is at most SCAN_PAGE_KEYS");
        let page = client.history(log, target, after.clone(), page_limit).await?;
        versions.extend(page.versions);
        entries.extend(page.entries);
        let done = limit.is_some_and(|l| (versions.len() + entries.len()) as u64 >= l);
        match page.next_after {
            Some(next) if !done && next != after => after = next,
            _ => break,
        }
    }
    if let Some(l) = limit {
        versions.truncate(l as usize);
        entries.truncate(l as usize);
    }
    match target {
        HistoryTarget::Writer { .. } => printer.emit(
            || output::writer_entries_human(&entries),
            || entries.iter().map(output::writer_entry_json).collect::<Vec<_>>().into(),
        ),
        _ => printer.emit(
            || output::versions_human(&versions),
            || versions.iter().map(output::version_json).collect::<Vec<_>>().into(),
        ),
    }
}

async fn tail(client: &Client, printer: &Printer, log: &str, lines: u32, follow: bool) -> anyhow::Result<()> {
    // The seq is read before the tail, so nothing that lands in between is missed; what
    // lands in between and is also in the tail is skipped by its op id below.
    let start_seq = if follow { client.heads(log).await?.seq } else { 0 };
    // A limit of 0 would mean the server's default, not nothing.
    let items = if lines == 0 { Vec::new() } else { client.tail(log, lines).await? };
    if !follow {
        return printer.emit(
            || items.iter().map(|item| output::feed_value_human(&item.value)).collect(),
            || items.iter().map(output::feed_item_json).collect::<Vec<_>>().into(),
        );
    }
    let mut shown: HashSet<(EntryHash, u32)> = HashSet::with_capacity(items.len());
    for item in &items {
        printer.emit_line(|| output::feed_value_human(&item.value), || output::feed_item_json(item))?;
        shown.insert((item.entry_hash, item.op_index));
    }
    let mut ops = client.subscribe(log, start_seq, true).await?;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            next = ops.next() => {
                let applied = match next {
                    Some(applied) => applied?,
                    None => bail!("the replica ended the subscription"),
                };
                if shown.remove(&(applied.entry_hash, applied.op_index)) {
                    continue;
                }
                if let Op::Append { value } = &applied.op {
                    printer.emit_line(
                        || output::feed_value_human(value),
                        || output::applied_append_json(&applied, value),
                    )?;
                }
            }
        }
    }
}

/// Entries `subscribe --commit` may print before it commits, when the stream never
/// pauses.
const COMMIT_EVERY_ENTRIES: u64 = 1000;

/// `plaitctl subscribe`: prints applied ops; with `--commit`, commits each finished entry
/// when the stream pauses (nothing more ready to print), at the latest every
/// [`COMMIT_EVERY_ENTRIES`], and at the end.
async fn subscribe(
    client: &Client,
    printer: &Printer,
    log: &str,
    after: u64,
    follow: bool,
    consumer: Option<&str>,
    commit: bool,
) -> anyhow::Result<()> {
    let mut ops = match consumer {
        Some(name) => client.subscribe_consumer(log, name, after, follow).await?,
        None => client.subscribe(log, after, follow).await?,
    };
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // The last seq whose every op was printed, and whether it is committed.
    let (mut done, mut committed, mut since) = (None::<u64>, true, 0u64);
    let flush = |done: Option<u64>| async move {
        match (commit, consumer, done) {
            (true, Some(name), Some(seq)) => client.commit_consumer(log, name, seq).await.map(|_| ()),
            _ => Ok(()),
        }
    };
    loop {
        let next = match futures::FutureExt::now_or_never(ops.next()) {
            Some(next) => next,
            None => {
                // Nothing ready: a pause, when what is printed is committed.
                if !committed {
                    flush(done).await?;
                    committed = true;
                    since = 0;
                }
                tokio::select! {
                    _ = &mut interrupted => return Ok(()),
                    next = ops.next() => next,
                }
            }
        };
        let Some(applied) = next else { break };
        let applied = applied?;
        printer.emit_line(|| output::applied_human(&applied), || output::applied_json(&applied))?;
        if applied.ends_entry() {
            done = Some(applied.seq);
            committed = false;
            since += 1;
            if since >= COMMIT_EVERY_ENTRIES {
                flush(done).await?;
                committed = true;
                since = 0;
            }
        }
    }
    if !committed {
        flush(done).await?;
    }
    if follow {
        bail!("the replica ended the subscription");
    }
    Ok(())
}

/// A byte-count progress bar on stderr, drawn only when stderr is a terminal: of
/// `total` bytes when it is known, else a running count.
fn byte_progress(total: Option<u64>, verb: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            format!("{{bar:40}} {{bytes}}/{{total_bytes}} {verb} ({{binary_bytes_per_sec}}, {{eta}} left)"),
        ),
        None => {
            (ProgressBar::new_spinner(), format!("{{spinner}} {{bytes}} {verb} ({{binary_bytes_per_sec}})"))
        }
    };
    let style = ProgressStyle::with_template(&template).expect("a valid progress template");
    bar.set_style(style);
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

/// Whether a path given on the command line means stdin or stdout.
fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Streams a snapshot of `log` to `out` (a file, written under a `.partial` name and
/// renamed once whole) or to stdout.
async fn export(
    client: &Client,
    printer: &Printer,
    log: &str,
    since: Option<u64>,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let file = out.filter(|path| !is_dash(path));
    if file.is_none() && std::io::stdout().is_terminal() {
        bail!("a snapshot is binary and stdout is a terminal; use --out FILE or redirect stdout");
    }
    let chunks = client.export_snapshot(log, since).await?;
    let progress = byte_progress(None, "written");
    let written = match file {
        Some(path) => {
            let partial = partial_path(path);
            let result = async {
                let mut output = tokio::fs::File::create(&partial)
                    .await
                    .with_context(|| format!("cannot create {}", partial.display()))?;
                let written = copy_chunks(chunks, &mut output, &progress).await?;
                output.sync_all().await.with_context(|| format!("cannot write {}", partial.display()))?;
                drop(output);
                tokio::fs::rename(&partial, path)
                    .await
                    .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
                Ok::<u64, anyhow::Error>(written)
            }
            .await;
            if result.is_err() {
                let _ = tokio::fs::remove_file(&partial).await;
            }
            result?
        }
        None => copy_chunks(chunks, &mut tokio::io::stdout(), &progress).await?,
    };
    progress.finish_and_clear();
    // With the snapshot on stdout there is no room for a summary.
    if let Some(path) = file {
        let shown = path.display().to_string();
        printer.emit(
            || output::export_human(log, since, written, &shown),
            || output::export_json(log, since, written, &shown),
        )?;
    }
    Ok(())
}

/// `FILE.partial` beside `FILE`.
fn partial_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().map(ToOwned::to_owned).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

/// Writes every chunk to `output` as it arrives; returns the bytes written.
async fn copy_chunks(
    mut chunks: plait_client::SnapshotStream,
    output: &mut (impl AsyncWrite + Unpin),
    progress: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut written = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.with_context(|| format!("the export failed after {written} bytes"))?;
        output.write_all(&chunk).await?;
        written += chunk.len() as u64;
        progress.set_position(written);
    }
    output.flush().await?;
    Ok(written)
}

/// Reads `file` (or stdin for `-`) in chunks of `IMPORT_CHUNK_BYTES` and streams it to
/// the replica. A read error ends the stream (the replica then refuses the snapshot as
/// truncated) and is reported instead of the replica's answer.
async fn import(client: &Client, printer: &Printer, file: &Path) -> anyhow::Result<()> {
    let (reader, total): (Box<dyn AsyncRead + Send + Unpin>, Option<u64>) = if is_dash(file) {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let opened =
            tokio::fs::File::open(file).await.with_context(|| format!("cannot open {}", file.display()))?;
        let total = opened.metadata().await.ok().map(|m| m.len());
        (Box::new(opened), total)
    };
    let progress = byte_progress(total, "sent");
    let read_error = Arc::new(Mutex::new(None::<std::io::Error>));
    let chunks = futures::stream::unfold(
        (reader, read_error.clone(), progress.clone()),
        |(mut reader, read_error, progress)| async move {
            let mut chunk = Vec::with_capacity(IMPORT_CHUNK_BYTES);
            match (&mut reader).take(IMPORT_CHUNK_BYTES as u64).read_to_end(&mut chunk).await {
                Ok(0) => None,
                Ok(n) => {
                    progress.inc(n as u64);
                    Some((Bytes::from(chunk), (reader, read_error, progress)))
                }
                Err(e) => {
                    *read_error.lock().expect("read error lock") = Some(e);
                    None
                }
            }
        },
    );
    let result = client.import_snapshot(chunks).await;
    progress.finish_and_clear();
    if let Some(e) = read_error.lock().expect("read error lock").take() {
        return Err(anyhow::Error::new(e).context(format!("cannot read {}", file.display())));
    }
    let report = result.with_context(|| format!("importing {}", file.display()))?;
    printer.emit(|| output::import_human(&report), || output::import_json(&report))
}

/// Generates a writer key; writes the secret to `out` (mode 0600, never overwriting) or
/// prints it.
fn keygen(printer: &Printer, out: Option<&Path>) -> anyhow::Result<()> {
    let key = WriterKey::generate(&mut rand::rngs::OsRng);
    let public = key.public().to_hex();
    let secret = hex::encode(key.secret());
    match out {
        Some(path) => {
            write_key_file(path, &secret)?;
            printer.emit(
                || format!("public key: {public}\nsecret key written to {} (mode 0600)\n", path.display()),
                || json!({ "public": public, "key_file": path.display().to_string() }),
            )
        }
        None => printer.emit(
            || format!("public key: {public}\nsecret key: {secret}\n"),
            || json!({ "public": public, "secret": secret }),
        ),
    }
}

fn write_key_file(path: &Path, secret_hex: &str) -> anyhow::Result<()> {
    write_new_file(path, &format!("{secret_hex}\n"), 0o600)
}

/// Creates `path` with `mode` (never over an existing file), writes `text` and fsyncs:
/// how plaitctl writes keys, certificates and tokens.
pub(crate) fn write_new_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow!("{} already exists; it is never overwritten, choose another path", path.display())
        } else {
            anyhow!("cannot create {}: {e}", path.display())
        }
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a key file written by `keygen --out`: 64 hex characters.
fn read_key_file(path: &Path) -> anyhow::Result<WriterKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    let secret =
        hex::decode(text.trim()).ok().and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()).ok_or_else(
            || anyhow!("key file {} must hold a 32-byte secret key as 64 hex characters", path.display()),
        )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            eprintln!("warning: key file {} is readable by others; chmod 600 it", path.display());
        }
    }
    Ok(WriterKey::from_secret(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Line endings go, empty lines are skipped, bytes stay bytes.
    #[test]
    fn lines_become_values() {
        assert_eq!(line_value(b"hello\n"), Some(&b"hello"[..]));
        assert_eq!(line_value(b"hello\r\n"), Some(&b"hello"[..]));
        assert_eq!(line_value(b"last line without newline"), Some(&b"last line without newline"[..]));
        assert_eq!(line_value(b"\n"), None);
        assert_eq!(line_value(b"\r\n"), None);
        assert_eq!(line_value(b"\xff\xfe\n"), Some(&b"\xff\xfe"[..]));
    }

    /// A batch closes at the op count or the byte budget, whichever comes first.
    #[test]
    fn batches_are_bounded() {
        let mut batch = AppendBatch { log: "chat", ops: Vec::new(), value_bytes: 0 };
        for _ in 0..APPEND_BATCH_OPS_MAX {
            assert!(batch.fits(b"x"));
            batch.push(b"x".to_vec());
        }
        assert!(!batch.fits(b"x"), "the op count bound");
        let mut batch = AppendBatch { log: "chat", ops: Vec::new(), value_bytes: 0 };
        let big = vec![b'a'; APPEND_BATCH_BYTES_MAX / 2];
        batch.push(big.clone());
        assert!(batch.fits(&big));
        batch.push(big.clone());
        assert!(!batch.fits(b"x"), "the byte bound");
        assert_eq!(batch.ops[0], RoutedOp::new("chat", Op::Append { value: big }));
    }

    /// A generated key file holds the secret as hex, is private, is read back to the same
    /// key, and is never overwritten.
    #[test]
    fn key_files() {
        let dir = std::env::temp_dir().join(format!("plaitctl-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("writer.key");
        let _ = std::fs::remove_file(&path);
        let key = WriterKey::from_secret([4; 32]);
        write_key_file(&path, &hex::encode(key.secret())).unwrap();
        assert_eq!(read_key_file(&path).unwrap().public(), key.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let err = write_key_file(&path, "00").unwrap_err();
        assert!(err.to_string().contains("never overwritten"), "{err}");
        std::fs::write(&path, "not hex").unwrap();
        let err = read_key_file(&path).err().unwrap();
        assert!(err.to_string().contains("64 hex characters"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Submit ops map to core ops field by field.
    #[test]
    fn submit_ops() {
        let op = op_of(OpCommand::Link(crate::cli::LinkArgs {
            src: "a".into(),
            label: "knows".into(),
            dst: "b".into(),
            props: "p".into(),
        }));
        assert_eq!(
            op,
            Op::Link { src: b"a".to_vec(), label: "knows".into(), dst: b"b".to_vec(), props: b"p".to_vec() }
        );
        assert_eq!(op_of(OpCommand::Delete { key: "k".into() }), Op::Delete { key: b"k".to_vec() });
    }
}
