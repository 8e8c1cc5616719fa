//! The command line: every subcommand, flag and help text of `plaitctl`.
//!
//! The help is the manual: each subcommand says what it does and shows an example, so
//! `plaitctl <command> --help` is enough to use it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use plait_client::AsOf;
use plait_core::{EntryHash, LogType, PublicKey};

/// Largest page or count a read may ask for, as the API allows.
pub(crate) const READ_LIMIT_MAX: u32 = 10_000;

/// How long a write with `--replicas` waits for them unless `--replicas-timeout` says.
pub(crate) const REPLICAS_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

const TOP_AFTER_HELP: &str = "\
Logs are named by name or by 64-character hex id. Keys, values and node ids are UTF-8
strings on the command line. Human output shows byte strings as text when they are
valid UTF-8, otherwise as 0x-prefixed hex; JSON output uses a `<field>_hex` key instead
of `<field>` for such values.

Exit status: 0 on success, 1 on an error (reported as `error: <message>` on stderr),
2 on a usage error.

A secured replica is called over TLS (--tls-ca; a bare host:port then means https://)
with a client certificate (--cert, --key) or a bearer token (--token-file, PLAIT_TOKEN).
Each flag has a PLAIT_* variable, so a shell can set them once.

Examples:
  plaitctl log create settings --type kv
  plaitctl put settings theme dark
  plaitctl put --replicas 2 settings theme dark
  plaitctl get settings theme
  PLAIT_ADDR=10.0.0.5:7070 plaitctl --output json status
  plaitctl --addr plait-0.example:7070 --tls-ca ca.crt --token-file app.token status";

/// plaitctl: talk to a Plait replica.
#[derive(Debug, Parser)]
#[command(
    name = "plaitctl",
    version,
    about = "Talk to a Plait replica: manage logs, write and read data, inspect entries and status",
    long_about = "Talk to a Plait replica over its gRPC API.\n\nPlait is a replicated, tamper-evident \
                  database: each log (a feed, a kv map or a graph) is a Merkle-CRDT of signed entries. \
                  plaitctl creates and inspects logs, writes and reads data (optionally waiting until \
                  several replicas hold a write), follows feeds, shows entries and heads, reports a \
                  replica's status and its peers, sets the member list and drains a replica before \
                  removal.",
    after_help = TOP_AFTER_HELP
)]
pub(crate) struct Cli {
    /// The replica to talk to: host:port, http://host:port or https://host:port. A bare
    /// host:port is https:// once a TLS flag is given.
    #[arg(long, global = true, env = "PLAIT_ADDR", default_value = "127.0.0.1:7070")]
    pub(crate) addr: String,

    #[command(flatten)]
    pub(crate) connect: ConnectArgs,

    /// How to print results: `human` for people, `json` for programs (one JSON document
    /// per command; `tail --follow` prints one JSON object per line).
    #[arg(long, global = true, env = "PLAIT_OUTPUT", value_enum, default_value_t = OutputFormat::Human)]
    pub(crate) output: OutputFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// TLS and credentials for a secured replica.
#[derive(Debug, Default, Args)]
pub(crate) struct ConnectArgs {
    /// CA certificates (PEM) the replica's certificate must chain to. Turns TLS on; with
    /// an https:// address and no --tls-ca, the system's trusted roots are used.
    #[arg(long, global = true, env = "PLAIT_TLS_CA", value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,

    /// Client certificate (PEM chain) to present; needs --key. Turns TLS on.
    #[arg(long = "cert", id = "client_cert", global = true, env = "PLAIT_CERT", value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,

    /// The client certificate's private key (PEM).
    // Its own id: subcommands have a `key` argument (a kv key).
    #[arg(long = "key", id = "client_key", global = true, env = "PLAIT_KEY", value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,

    /// Bearer token sent on every call. Prefer PLAIT_TOKEN or --token-file: command
    /// arguments are visible to other users of this machine.
    #[arg(
        long = "token",
        id = "client_token",
        global = true,
        env = "PLAIT_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub(crate) token: Option<String>,

    /// File holding the bearer token (surrounding whitespace is ignored).
    #[arg(long, global = true, env = "PLAIT_TOKEN_FILE", value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,

    /// The name the replica's certificate must be valid for, when the address uses
    /// another (an IP, a tunnel).
    #[arg(long, global = true, env = "PLAIT_TLS_SERVER_NAME", value_name = "NAME")]
    pub(crate) tls_server_name: Option<String>,
}

/// `plaitctl cert ...`: a CA and the certificates it signs, as PEM files.
#[derive(Debug, Subcommand)]
pub(crate) enum CertCommand {
    /// Make a new certificate authority: <OUT>/ca.crt and <OUT>/ca.key.
    #[command(
        long_about = "Make a new certificate authority with an ECDSA P-256 key, written as \
                      <OUT>/ca.crt (give it to replicas as --tls-client-ca and to clients as --tls-ca) \
                      and <OUT>/ca.key (mode 0600; keep it off the replicas). Existing files are \
                      never overwritten.",
        after_help = "Examples:\n  plaitctl cert ca --out pki\n  plaitctl cert ca --out pki --days 1825 --name 'orders CA'"
    )]
    Ca {
        /// Directory to write ca.crt and ca.key to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The CA's subject common name.
        #[arg(long, default_value = "plait cluster CA")]
        name: String,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },

    /// Issue a certificate signed by the CA: <OUT>/<NAME>.crt and <OUT>/<NAME>.key.
    #[command(
        long_about = "Issue a certificate with a new ECDSA P-256 key, signed by the CA in --ca-dir \
                      (ca.crt, ca.key). NAME becomes the subject common name, which is the principal \
                      replicas know the holder by; --group values become subject O values (plait:peers \
                      for replicas, plait:admins for administrators). A replica's certificate needs \
                      --dns/--ip for every name and address peers and clients use; a client's takes \
                      --client-only. Existing files are never overwritten.",
        after_help = "Examples:\n  plaitctl cert issue plait-0 --ca-dir pki --out pki --group plait:peers \
                      --dns plait-0.example --ip 10.0.0.5\n  plaitctl cert issue alice --ca-dir pki --out pki \
                      --group plait:admins --client-only --days 30"
    )]
    Issue {
        /// The subject common name: the principal's name.
        name: String,
        /// Directory holding the CA's ca.crt and ca.key.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// Directory to write <NAME>.crt and <NAME>.key to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A group (subject O value); repeat for several.
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// A DNS name the certificate is valid for; repeat for several.
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// An IP address the certificate is valid for; repeat for several.
        #[arg(long = "ip", value_name = "IP")]
        ips: Vec<IpAddr>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// For clients only: no server use, no names needed.
        #[arg(long)]
        client_only: bool,
    },
}

/// `plaitctl token ...`: bearer tokens.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a random bearer token and print its auth-file entry.
    #[command(
        long_about = "Make a random bearer token (256 bits from the operating system) for the principal \
                      NAME, and print the entry to add under `tokens:` in the replica's --auth-file: the \
                      token's blake3 hash and its roles. The token itself is never stored by the \
                      replica; with --out it is written to a file (mode 0600) instead of printed.\n\n\
                      Roles: read, write:<log glob>, log-admin, cluster-admin, peer, admin.",
        after_help = "Examples:\n  plaitctl token new orders-app --role read --role 'write:orders-*' --out orders.token\n  \
                      plaitctl --addr plait-0.example:7070 --tls-ca ca.crt --token-file orders.token status"
    )]
    New {
        /// The principal the token stands for.
        name: String,
        /// A role to grant; repeat for several.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Write the token to this file (mode 0600, never overwritten) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create, inspect, list and drop logs.
    #[command(subcommand)]
    Log(LogCommand),

    /// Set a key of a kv log.
    #[command(after_help = "Examples:\n  plaitctl put settings theme dark\n  \
                            plaitctl put --replicas 2 --replicas-timeout 5s settings theme dark")]
    Put {
        /// The kv log, by name or hex id.
        log: String,
        key: String,
        value: String,
        #[command(flatten)]
        concern: WriteConcernArgs,
    },

    /// Print the current value of a key of a kv log; fails if the key is not set.
    #[command(
        after_help = "Examples:\n  plaitctl get settings theme\n  plaitctl get settings theme --as-of 42\n  \
                            plaitctl get settings theme --as-of <state root from plaitctl checkpoint>"
    )]
    Get {
        /// The kv log, by name or hex id.
        log: String,
        key: String,
        /// Read the log as it was at a point in its past: a seq of this replica (0 to the
        /// log's seq), or the state root of a checkpoint it recorded (64 hex characters).
        #[arg(long, value_name = "SEQ|STATE_ROOT", value_parser = parse_as_of)]
        as_of: Option<AsOf>,
    },

    /// Delete a key of a kv log (a tombstone that wins over older puts).
    #[command(after_help = "Example:\n  plaitctl delete settings theme")]
    Delete {
        /// The kv log, by name or hex id.
        log: String,
        key: String,
        #[command(flatten)]
        concern: WriteConcernArgs,
    },

    /// List live keys of a kv log in key order, by prefix or range.
    #[command(
        long_about = "List live keys of a kv log in key order, by prefix or range.\n\nWithout --limit \
                      every matching key is listed, fetched page by page. Human output is one \
                      `key<TAB>value` line per key.",
        after_help = "Examples:\n  plaitctl scan settings\n  plaitctl scan settings --prefix ui. --limit 20\n  \
                      plaitctl scan settings --start a --end m"
    )]
    Scan {
        /// The kv log, by name or hex id.
        log: String,
        /// Only keys starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Only keys at or after this one.
        #[arg(long)]
        start: Option<String>,
        /// Only keys before this one.
        #[arg(long)]
        end: Option<String>,
        /// At most this many keys (default: all).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Read the log as it was at a point in its past: a seq of this replica (0 to the
        /// log's seq), or the state root of a checkpoint it recorded (64 hex characters).
        #[arg(long, value_name = "SEQ|STATE_ROOT", value_parser = parse_as_of)]
        as_of: Option<AsOf>,
    },

    /// Append a value to a feed log, or each line of stdin with --stdin.
    #[command(
        long_about = "Append a value to a feed log.\n\nWith --stdin, each non-empty line of stdin \
                      is appended, in batches written atomically per batch; progress goes to stderr \
                      when it is a terminal.",
        after_help = "Examples:\n  plaitctl append chat 'hello, world'\n  tail -f app.log | plaitctl append events --stdin\n  \
                      plaitctl append chat --replicas 3 'written to three replicas'"
    )]
    Append {
        /// The feed log, by name or hex id.
        log: String,
        /// The value to append.
        #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
        value: Option<String>,
        /// Append each line of stdin instead.
        #[arg(long)]
        stdin: bool,
        #[command(flatten)]
        concern: WriteConcernArgs,
    },

    /// Print the last items of a feed log, and with --follow keep printing new ones.
    #[command(
        long_about = "Print the last items of a feed log in the total order, oldest first.\n\nWith \
                      --follow, keep the connection open and print each new item as it lands on the \
                      replica, written here or replicated from elsewhere, until interrupted.",
        after_help = "Examples:\n  plaitctl tail chat\n  plaitctl tail chat -n 100\n  plaitctl tail chat --follow"
    )]
    Tail {
        /// The feed log, by name or hex id.
        log: String,
        /// How many of the latest items to print first.
        #[arg(short = 'n', long = "lines", default_value_t = 10,
              value_parser = clap::value_parser!(u32).range(0..=i64::from(READ_LIMIT_MAX)))]
        lines: u32,
        /// Keep printing new items as they land.
        #[arg(short, long, conflicts_with = "as_of")]
        follow: bool,
        /// Read the log as it was at a point in its past: a seq of this replica (0 to the
        /// log's seq), or the state root of a checkpoint it recorded (64 hex characters).
        #[arg(long, value_name = "SEQ|STATE_ROOT", value_parser = parse_as_of)]
        as_of: Option<AsOf>,
    },

    /// Add or update the edge (src, label, dst) of a graph log.
    #[command(after_help = "Examples:\n  plaitctl link social alice follows bob\n  \
                            plaitctl link social alice follows bob --props '{\"since\":2024}'")]
    Link {
        /// The graph log, by name or hex id.
        log: String,
        src: String,
        label: String,
        dst: String,
        /// Properties stored on the edge.
        #[arg(long, default_value = "")]
        props: String,
        #[command(flatten)]
        concern: WriteConcernArgs,
    },

    /// Remove the edge (src, label, dst) of a graph log.
    #[command(after_help = "Example:\n  plaitctl unlink social alice follows bob")]
    Unlink {
        /// The graph log, by name or hex id.
        log: String,
        src: String,
        label: String,
        dst: String,
        #[command(flatten)]
        concern: WriteConcernArgs,
    },

    /// List the edges of a graph log out of a node (or into it with --in).
    #[command(
        after_help = "Examples:\n  plaitctl edges social alice\n  plaitctl edges social bob --in --label follows"
    )]
    Edges {
        /// The graph log, by name or hex id.
        log: String,
        node: String,
        /// Edges into the node instead of out of it.
        #[arg(long = "in")]
        incoming: bool,
        /// Only edges with this label.
        #[arg(long)]
        label: Option<String>,
        /// At most this many edges (default: the server's, 1000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(READ_LIMIT_MAX)))]
        limit: Option<u32>,
        /// Read the log as it was at a point in its past: a seq of this replica (0 to the
        /// log's seq), or the state root of a checkpoint it recorded (64 hex characters).
        #[arg(long, value_name = "SEQ|STATE_ROOT", value_parser = parse_as_of)]
        as_of: Option<AsOf>,
    },

    /// Show the history of a key or an edge (every version, oldest first), or the entries
    /// one writer signed in a range of seqs.
    #[command(
        long_about = "Show the history kept for a log.\n\nWith a KEY (kv log), every version of the \
                      key in the total order: the seq of its entry here, the writer and clock, the \
                      entry hash (`plaitctl entry HASH` shows the signed entry) and the value, or \
                      `deleted`. With --edge SRC LABEL DST (graph log), every version of the edge. \
                      With --writer KEY, the entries that writer signed among seqs --from to --to \
                      of this replica. Everything is fetched page by page.",
        after_help = "Examples:\n  plaitctl history settings theme\n  plaitctl history social --edge alice follows bob\n  \
                      plaitctl history chat --writer 3b6a...9f --from 100 --to 200"
    )]
    History {
        /// The log, by name or hex id.
        log: String,
        /// The key (kv logs).
        #[arg(required_unless_present_any = ["edge", "writer"], conflicts_with_all = ["edge", "writer"])]
        key: Option<String>,
        /// The edge (graph logs).
        #[arg(long, num_args = 3, value_names = ["SRC", "LABEL", "DST"], conflicts_with = "writer")]
        edge: Option<Vec<String>>,
        /// The writer's public key, 64 hex characters.
        #[arg(long, value_parser = parse_public_key)]
        writer: Option<PublicKey>,
        /// With --writer: the first seq of the range.
        #[arg(long, default_value_t = 1, requires = "writer")]
        from: u64,
        /// With --writer: the last seq of the range (default: the log's end).
        #[arg(long, requires = "writer")]
        to: Option<u64>,
        /// At most this many versions or entries (default: all).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },

    /// Print a log's applied ops in seq order, any log type; resume a durable consumer.
    #[command(
        long_about = "Print the applied ops of a log in seq order, one line each: the seq of the \
                      entry, the op's index in it, where this replica got the entry (local, \
                      submitted, peer:<node id>, restored) and the op.\n\nWith --consumer NAME the \
                      replica resumes after the seq that consumer committed (a new consumer starts \
                      after --after and is kept from then on), and with --commit each entry's seq \
                      is committed once all its ops are printed (batched: when the stream pauses, \
                      at most every 1000 entries), so a later run with the same name prints \
                      nothing twice and skips nothing. Commits are durable on the replica and \
                      survive restarts; `plaitctl consumer` lists, moves and deletes them.",
        after_help = "Examples:\n  plaitctl subscribe chat --follow\n  plaitctl subscribe orders --after 120\n  \
                      plaitctl subscribe orders --consumer billing --commit --follow"
    )]
    Subscribe {
        /// The log, by name or hex id.
        log: String,
        /// Start after this seq of the replica (0: from the beginning). With --consumer,
        /// only where a new consumer starts.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep printing ops as they land.
        #[arg(short, long)]
        follow: bool,
        /// The durable consumer to resume: 1 to 128 characters of A-Z a-z 0-9 . _ -
        #[arg(long)]
        consumer: Option<String>,
        /// Commit each entry's seq to the consumer once its ops are printed.
        #[arg(long, requires = "consumer")]
        commit: bool,
    },

    /// List, move and delete the durable consumers of a log.
    #[command(
        subcommand,
        after_help = "Examples:\n  plaitctl consumer list orders\n  plaitctl consumer commit orders billing 120\n  \
                      plaitctl consumer delete orders billing"
    )]
    Consumer(ConsumerCommand),

    /// Show one entry by hash: clock, parents, ops, signature. The entry is verified.
    #[command(after_help = "Example:\n  plaitctl entry 3f9a...e1 (the 64-character hash a write printed)")]
    Entry {
        /// The entry hash, 64 hex characters.
        #[arg(value_parser = parse_entry_hash)]
        hash: EntryHash,
    },

    /// Show the heads of a log: the entries no other entry names as a parent.
    #[command(after_help = "Example:\n  plaitctl heads chat")]
    Heads {
        /// The log, by name or hex id.
        log: String,
    },

    /// Show the replica's identity, version, uptime, every log it hosts, and its peers.
    #[command(
        long_about = "Show the replica's identity, version, uptime and every log it hosts; its \
                      members generation and whether it is draining; and its peers: where each \
                      came from (flag, members, dns), whether it answers, when it last did, its \
                      last error, and per log how far replication has come both ways. CURSOR is \
                      the last seq pulled from the peer and PEER SEQ the peer's latest, both in \
                      the peer's numbering; LAG is what is left to pull; PEER HOLDS is how far the \
                      peer has pulled from this replica, in this replica's numbering.",
        after_help = "Examples:\n  plaitctl status\n  plaitctl --addr plait-0.plait:7070 --output json status"
    )]
    Status,

    /// Set the replica's member list (normally the operator does this).
    #[command(
        subcommand,
        after_help = "Example:\n  plaitctl members set --generation 2 plait-1:7070 plait-2:7070"
    )]
    Members(MembersCommand),

    /// Refuse new writes and wait until other members hold everything; before removal.
    #[command(
        long_about = "Prepare the replica for removal. It refuses new local writes at once; the \
                      command then waits until every entry the replica holds is held by at least \
                      one other member, and prints each log with the seq reached and the node id \
                      of a member holding it.\n\nIf that does not happen within --timeout, the \
                      command exits 1 with the replica's message naming the logs still waiting. \
                      The replica stays draining either way: run drain again until it succeeds, \
                      and remove the replica only then. `drain --cancel` calls the removal off: the \
                      replica accepts local writes again.",
        after_help = "Examples:\n  plaitctl --addr plait-2.plait:7070 drain\n  plaitctl drain --timeout 5m\n  \
                      plaitctl --addr plait-2.plait:7070 drain --cancel"
    )]
    Drain {
        /// How long to wait for the other members, e.g. 30s, 5m.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
        /// Stop draining instead: accept local writes again.
        #[arg(long, conflicts_with = "timeout")]
        cancel: bool,
    },

    /// Take and record a checkpoint of a log: its seq, heads and state root.
    #[command(
        long_about = "Take and record a checkpoint of a log: a consistent cut (every entry up to a \
                      seq on this replica) with the log's heads and the Merkle root of its view \
                      there. Replicas holding the same entries have the same state root. A recorded \
                      checkpoint's seq can be the base of `export --since`.",
        after_help = "Examples:\n  plaitctl checkpoint settings\n  plaitctl --output json checkpoint settings"
    )]
    Checkpoint {
        /// The log, by name or hex id.
        log: String,
    },

    /// Stream a snapshot of a log to a file or stdout.
    #[command(
        long_about = "Stream a snapshot of a log (docs/snapshot-format.md) to a file, or to stdout \
                      with `--out -` or no --out. The snapshot is taken from a consistent cut while \
                      writes go on. With --since, only the entries after that recorded checkpoint \
                      (see `checkpoint`) are exported: a delta. A file is written under a .partial \
                      name and renamed when complete, so an interrupted export leaves no snapshot \
                      that looks whole. Progress goes to stderr when it is a terminal; a summary is \
                      printed only when the snapshot goes to a file.",
        after_help = "Examples:\n  plaitctl export settings --out settings.snap\n  \
                      plaitctl export settings --since 120 --out settings-delta.snap\n  \
                      plaitctl export settings | plaitctl --addr other:7070 import -"
    )]
    Export {
        /// The log, by name or hex id.
        log: String,
        /// Export only entries after the recorded checkpoint at this seq (a delta).
        #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
        since: Option<u64>,
        /// Where to write the snapshot; `-` for stdout [default: stdout].
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },

    /// Import a snapshot file (or stdin) into the replica; verified before it is applied.
    #[command(
        long_about = "Send a snapshot written by `export` (or a backup object) to the replica, in \
                      1 MiB chunks. The replica verifies every entry and the trailer before it \
                      applies any of it, so a truncated or corrupted file changes nothing. A delta \
                      must start where this replica's restore watermark is. Prints how it was \
                      applied (full, merge, delta or up_to_date), the entries read and stored, and \
                      the checkpoint reached. Progress goes to stderr when it is a terminal.",
        after_help = "Examples:\n  plaitctl --addr new-replica:7070 import settings.snap\n  \
                      plaitctl export settings | plaitctl --addr other:7070 import -"
    )]
    Import {
        /// The snapshot file; `-` for stdin.
        #[arg(value_name = "FILE|-")]
        file: std::path::PathBuf,
    },

    /// Back up logs to one of the replica's backup destinations, full or as deltas.
    #[command(
        long_about = "Have the replica write snapshots of its logs to one of its backup \
                      destinations, named as the replica was started with (`plaitd \
                      --backup-destination NAME=URL`; `plaitctl status` lists the names), \
                      recorded in that destination's catalog for `plaitd restore`. A URL is \
                      refused: where backups go is the replica's configuration, not the \
                      caller's. Without a name, the replica's only destination is used. With --delta, each log gets only the entries since the replica's \
                      last backup of it (a full backup if there is none). --retain-full N keeps N \
                      full backups per log and deletes older chains. Prints each object written \
                      (log, kind, size, checkpoint seq, key) and the keys deleted.",
        after_help = "Examples:\n  plaitctl backup nightly\n  \
                      plaitctl backup nightly --delta\n  \
                      plaitctl backup offsite --log settings --retain-full 3"
    )]
    Backup {
        /// The name of a backup destination configured on the replica [default: its only one].
        #[arg(value_name = "DESTINATION")]
        destination: Option<String>,
        /// A log to back up, by name or hex id; repeat for more [default: every log].
        #[arg(long = "log", value_name = "LOG")]
        logs: Vec<String>,
        /// Back up only what changed since the replica's last backup of each log.
        #[arg(long)]
        delta: bool,
        /// Full backups to keep per log; older chains are deleted [default: keep all].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        retain_full: Option<u32>,
    },

    /// Check the replica's gRPC health; exits 1 unless it is serving.
    #[command(after_help = "Example:\n  plaitctl health")]
    Health,

    /// Make a certificate authority and issue replica and client certificates.
    #[command(subcommand)]
    Cert(CertCommand),

    /// Make bearer tokens for the replica's auth file.
    #[command(subcommand)]
    Token(TokenCommand),

    /// Generate an ed25519 writer key for signing entries yourself.
    #[command(
        long_about = "Generate an ed25519 writer key from the operating system's randomness.\n\nWith \
                      --out, the 32-byte secret is written as hex to the file, created with mode 0600 \
                      (an existing file is never overwritten); otherwise the secret is printed. The \
                      public key is printed either way: name it with `log create --writer` to allow \
                      the key to write, then use `submit --key-file`.",
        after_help = "Examples:\n  plaitctl keygen --out alice.key\n  plaitctl log create notes --type kv \
                      --writer <public key> --exclude-replica-writer"
    )]
    Keygen {
        /// Write the secret key to this file instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },

    /// Sign one operation with your own key and submit it as an entry.
    #[command(
        long_about = "Sign one operation with your own writer key and submit it as a pre-signed \
                      entry. The entry's parents are the log's current heads. The key must be in the \
                      log's ACL, or the log open.",
        after_help = "Examples:\n  plaitctl submit notes --key-file alice.key put todo 'buy milk'\n  \
                      plaitctl submit chat --key-file alice.key append hello"
    )]
    Submit {
        /// The log, by name or hex id.
        log: String,
        /// A file holding the 32-byte secret key as hex (from `plaitctl keygen --out`).
        #[arg(long, value_name = "FILE")]
        key_file: std::path::PathBuf,
        #[command(subcommand)]
        op: OpCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
    /// Create a log signed by the replica's writer key.
    #[command(
        long_about = "Create a log signed by the replica's writer key.\n\nThe log's type decides \
                      which operations it accepts: feed (append), kv (put, delete) or graph (link, \
                      unlink). By default only the replica's writer key may write; --writer adds \
                      keys, --open lets any valid signature write, --exclude-replica-writer leaves \
                      only the --writer keys. The name, type and ACL are the log's identity and \
                      never change. Creating the same log twice returns the existing one.",
        after_help = "Examples:\n  plaitctl log create chat --type feed\n  plaitctl log create notes --type kv \
                      --writer 9c1f...ab --exclude-replica-writer"
    )]
    Create {
        /// 1 to 128 characters of letters, digits, '.', '-', '_'.
        name: String,
        /// What the log holds.
        #[arg(long = "type", value_enum, value_name = "TYPE")]
        log_type: LogTypeArg,
        /// Also allow this ed25519 public key (64 hex characters) to write. Repeatable.
        #[arg(long = "writer", value_name = "PUBLIC_KEY", value_parser = parse_public_key)]
        writers: Vec<PublicKey>,
        /// Any valid signature may write.
        #[arg(long, conflicts_with = "writers")]
        open: bool,
        /// Leave the replica's writer key off the ACL: only --writer keys can write,
        /// through `plaitctl submit`.
        #[arg(long, requires = "writers")]
        exclude_replica_writer: bool,
    },

    /// List the logs the replica hosts.
    #[command(after_help = "Example:\n  plaitctl log list")]
    List,

    /// Show one log: id, type, ACL, seq, heads, pending entries, ops.
    #[command(after_help = "Example:\n  plaitctl log get chat")]
    Get {
        /// The log, by name or hex id.
        log: String,
    },

    /// Remove a log and everything stored for it from this replica.
    #[command(after_help = "Example:\n  plaitctl log drop chat")]
    Drop {
        /// The log, by name or hex id.
        log: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConsumerCommand {
    /// List a log's consumers: committed seq and lag (entries stored here past it).
    #[command(after_help = "Example:\n  plaitctl consumer list orders")]
    List {
        /// The log, by name or hex id.
        log: String,
    },
    /// Commit a seq for a consumer (creating it if new): everything up to SEQ is processed.
    #[command(
        long_about = "Store, durably, that a consumer processed every entry of the log up to SEQ, \
                      creating the consumer if it is new (at most --consumers-per-log-max per log \
                      on the replica). SEQ is at most the log's seq on the replica; a lower seq \
                      than the committed one moves the consumer back, so it reads those entries \
                      again.",
        after_help = "Examples:\n  plaitctl consumer commit orders billing 120\n  plaitctl consumer commit orders billing 0"
    )]
    Commit {
        /// The log, by name or hex id.
        log: String,
        /// The consumer's name.
        name: String,
        /// The last seq processed.
        seq: u64,
    },
    /// Delete a consumer, freeing its place.
    #[command(after_help = "Example:\n  plaitctl consumer delete orders billing")]
    Delete {
        /// The log, by name or hex id.
        log: String,
        /// The consumer's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum MembersCommand {
    /// Replace the replica's member list, with a generation newer than the current one.
    #[command(
        long_about = "Replace the member list of the replica at --addr: the other replicas it \
                      replicates with, as host:port gRPC addresses. Peers from the replica's own \
                      --peer flags and DNS discovery are kept besides the list. The list is stored \
                      and survives restarts; the replica's own address may be listed and is \
                      skipped. With no addresses the list becomes empty.\n\nNormally the Plait \
                      operator does this as the cluster changes; set members by hand only for a \
                      cluster no operator manages. Every update carries a generation that must be \
                      higher than the one in force (`plaitctl status` shows it): a stale \
                      generation is refused and the command exits 1, so an old update that \
                      arrives late cannot undo a newer one. Prints the generation now in force.",
        after_help = "Examples:\n  plaitctl --addr plait-0:7070 members set --generation 4 plait-1:7070 plait-2:7070\n  \
                      plaitctl --addr plait-0:7070 members set --generation 5"
    )]
    Set {
        /// The update's generation: higher than the replica's current one (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        generation: u64,
        /// The members' gRPC addresses, host:port.
        #[arg(value_name = "ADDR")]
        members: Vec<String>,
    },
}

/// `--replicas` and `--replicas-timeout`, on every command that writes.
#[derive(Clone, Copy, Debug, Default, Args)]
#[command(next_help_heading = "Write concern")]
pub(crate) struct WriteConcernArgs {
    /// Succeed only once this many replicas, this one included, hold the write. If they
    /// do not within --replicas-timeout, exit 1: the write stays durable here and is
    /// not undone, and the others will still receive it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) replicas: Option<u32>,
    /// How long --replicas waits, e.g. 500ms, 10s, 2m [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "replicas")]
    pub(crate) replicas_timeout: Option<Duration>,
}

impl WriteConcernArgs {
    /// The replicas to wait for and for how long, if the command asked.
    pub(crate) fn concern(&self) -> Option<(u32, Duration)> {
        self.replicas.map(|replicas| (replicas, self.replicas_timeout.unwrap_or(REPLICAS_TIMEOUT_DEFAULT)))
    }
}

impl Command {
    /// The write concern of a command that writes; `None` for other commands.
    pub(crate) fn write_concern(&self) -> Option<WriteConcernArgs> {
        match self {
            Command::Put { concern, .. }
            | Command::Delete { concern, .. }
            | Command::Append { concern, .. }
            | Command::Link { concern, .. }
            | Command::Unlink { concern, .. } => Some(*concern),
            _ => None,
        }
    }
}

/// Log types as written on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogTypeArg {
    /// Append-only values, read in order.
    Feed,
    /// Last-writer-wins keys and values.
    Kv,
    /// Last-writer-wins edges between nodes.
    Graph,
}

impl From<LogTypeArg> for LogType {
    fn from(arg: LogTypeArg) -> Self {
        match arg {
            LogTypeArg::Feed => LogType::Feed,
            LogTypeArg::Kv => LogType::Kv,
            LogTypeArg::Graph => LogType::Graph,
        }
    }
}

/// One operation for `submit`.
#[derive(Debug, Subcommand)]
pub(crate) enum OpCommand {
    /// Append a value (feed logs).
    Append { value: String },
    /// Set a key (kv logs).
    Put { key: String, value: String },
    /// Delete a key (kv logs).
    Delete { key: String },
    /// Add or update an edge (graph logs).
    Link(LinkArgs),
    /// Remove an edge (graph logs).
    Unlink { src: String, label: String, dst: String },
}

/// The edge of a `submit link`.
#[derive(Debug, Args)]
pub(crate) struct LinkArgs {
    pub(crate) src: String,
    pub(crate) label: String,
    pub(crate) dst: String,
    /// Properties stored on the edge.
    #[arg(long, default_value = "")]
    pub(crate) props: String,
}

fn parse_public_key(s: &str) -> Result<PublicKey, String> {
    PublicKey::from_hex(s.trim())
        .map_err(|_| "expected an ed25519 public key as 64 hex characters".to_owned())
}

/// A point in a log's past: a seq, or a checkpoint's state root as 64 hex characters.
fn parse_as_of(s: &str) -> Result<AsOf, String> {
    let s = s.trim();
    if let Ok(seq) = s.parse::<u64>() {
        return Ok(AsOf::Seq(seq));
    }
    let root = hex::decode(s.strip_prefix("checkpoint:").unwrap_or(s))
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    root.map(AsOf::Checkpoint).ok_or_else(|| {
        "expected a seq (a number) or a checkpoint's state root (64 hex characters, as plaitctl checkpoint prints it)"
            .to_owned()
    })
}

fn parse_entry_hash(s: &str) -> Result<EntryHash, String> {
    EntryHash::from_hex(s.trim()).map_err(|_| "expected an entry hash as 64 hex characters".to_owned())
}

/// A positive duration with a unit: `500ms`, `10s`, `1.5m`, `2h`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration with a unit, such as 500ms, 10s, 1.5m or 2h";
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().map_err(|_| EXPECTED.to_owned())?;
    let seconds_per_unit = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(EXPECTED.to_owned()),
    };
    let duration = Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| EXPECTED.to_owned())?;
    if duration.as_millis() == 0 {
        return Err("the duration must be at least 1ms".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("plaitctl").chain(args.iter().copied()))
    }

    /// clap's own consistency checks on the whole command tree pass.
    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every subcommand has an about line and an example in its help.
    #[test]
    fn every_subcommand_teaches() {
        fn walk(command: &clap::Command, path: &str) {
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{path} has no about");
                let is_group = sub.has_subcommands() && matches!(sub.get_name(), "log" | "cert" | "token");
                let is_op = path.starts_with("plaitctl submit ");
                if !is_group && !is_op {
                    let help = sub.get_after_help().map(|h| h.to_string()).unwrap_or_default();
                    assert!(help.contains("plaitctl "), "{path} has no example");
                }
                walk(sub, &path);
            }
        }
        walk(&Cli::command(), "plaitctl");
    }

    /// Defaults: the local replica, human output.
    #[test]
    fn defaults() {
        let cli = parse(&["status"]).unwrap();
        assert!(matches!(cli.command, Command::Status));
        // The environment may set PLAIT_ADDR / PLAIT_OUTPUT; only check when it does not.
        if std::env::var_os("PLAIT_ADDR").is_none() {
            assert_eq!(cli.addr, "127.0.0.1:7070");
        }
        if std::env::var_os("PLAIT_OUTPUT").is_none() {
            assert_eq!(cli.output, OutputFormat::Human);
        }
    }

    /// Global flags go before or after the subcommand.
    #[test]
    fn global_flags_anywhere() {
        let cli = parse(&["--output", "json", "log", "list", "--addr", "10.0.0.1:7070"]).unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.addr, "10.0.0.1:7070");
        assert!(matches!(cli.command, Command::Log(LogCommand::List)));
        assert!(parse(&["--output", "yaml", "status"]).is_err());
    }

    /// The TLS and token flags are global and do not collide with a command's own `key`.
    #[test]
    fn connect_flags_are_global() {
        let cli = parse(&[
            "put", "settings", "theme", "dark", "--cert", "a.crt", "--key", "a.key", "--tls-ca", "ca.crt",
        ])
        .unwrap();
        assert_eq!(cli.connect.cert.as_deref(), Some(std::path::Path::new("a.crt")));
        assert_eq!(cli.connect.key.as_deref(), Some(std::path::Path::new("a.key")));
        assert_eq!(cli.connect.tls_ca.as_deref(), Some(std::path::Path::new("ca.crt")));
        let Command::Put { key, .. } = cli.command else { panic!("not put") };
        assert_eq!(key, "theme");
        let cli = parse(&["--token-file", "t", "status"]).unwrap();
        assert_eq!(cli.connect.token_file.as_deref(), Some(std::path::Path::new("t")));
    }

    /// `log create` takes a type, repeated writers, and checks the ACL flags fit together.
    #[test]
    fn log_create() {
        let key = "ab".repeat(32);
        let cli =
            parse(&["log", "create", "notes", "--type", "kv", "--writer", &key, "--writer", &key]).unwrap();
        let Command::Log(LogCommand::Create { name, log_type, writers, open, exclude_replica_writer }) =
            cli.command
        else {
            panic!("not log create");
        };
        assert_eq!(name, "notes");
        assert_eq!(LogType::from(log_type), LogType::Kv);
        assert_eq!(writers, vec![PublicKey([0xab; 32]); 2]);
        assert!(!open && !exclude_replica_writer);

        let err = parse(&["log", "create", "x", "--type", "feed", "--writer", "abc"]).unwrap_err();
        assert!(err.to_string().contains("64 hex characters"), "{err}");
        let err = parse(&["log", "create", "x", "--type", "feed", "--open", "--writer", &key]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        let err = parse(&["log", "create", "x", "--type", "feed", "--exclude-replica-writer"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument);
        assert!(parse(&["log", "create", "x"]).is_err(), "--type is required");
        assert!(parse(&["log", "create", "x", "--type", "table"]).is_err());
        assert!(parse(&["log", "create", "x", "--type", "graph", "--open"]).is_ok());
    }

    /// `append` takes a value or --stdin, not both, not neither.
    #[test]
    fn append_value_or_stdin() {
        let cli = parse(&["append", "chat", "hi"]).unwrap();
        assert!(matches!(cli.command, Command::Append { value: Some(v), stdin: false, .. } if v == "hi"));
        let cli = parse(&["append", "chat", "--stdin"]).unwrap();
        assert!(matches!(cli.command, Command::Append { value: None, stdin: true, .. }));
        assert!(parse(&["append", "chat"]).is_err());
        assert!(parse(&["append", "chat", "hi", "--stdin"]).is_err());
    }

    /// `tail` defaults to 10 lines and bounds -n by the API's limit.
    #[test]
    fn tail_flags() {
        let cli = parse(&["tail", "chat"]).unwrap();
        assert!(matches!(cli.command, Command::Tail { lines: 10, follow: false, .. }));
        let cli = parse(&["tail", "chat", "-n", "3", "-f"]).unwrap();
        assert!(matches!(cli.command, Command::Tail { lines: 3, follow: true, .. }));
        assert!(parse(&["tail", "chat", "-n", "10001"]).is_err());
    }

    /// `scan` bounds are optional; a limit must be positive.
    #[test]
    fn scan_flags() {
        let cli = parse(&["scan", "s", "--prefix", "ui.", "--limit", "5"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Scan { prefix: Some(p), start: None, end: None, limit: Some(5), .. } if p == "ui."
        ));
        assert!(parse(&["scan", "s", "--limit", "0"]).is_err());
    }

    /// `edges --in` turns the query around; `entry` wants a 64-hex hash.
    #[test]
    fn edges_and_entry() {
        let cli = parse(&["edges", "g", "bob", "--in", "--label", "follows"]).unwrap();
        assert!(matches!(cli.command, Command::Edges { incoming: true, label: Some(_), .. }));
        let hash = "0f".repeat(32);
        let cli = parse(&["entry", &hash]).unwrap();
        assert!(matches!(cli.command, Command::Entry { hash } if hash == EntryHash([0x0f; 32])));
        let err = parse(&["entry", "0f0f"]).unwrap_err();
        assert!(err.to_string().contains("entry hash as 64 hex characters"), "{err}");
    }

    /// `link` props default to empty; `submit` takes an op subcommand after the key file.
    #[test]
    fn link_and_submit() {
        let cli = parse(&["link", "g", "a", "knows", "b"]).unwrap();
        assert!(matches!(cli.command, Command::Link { props, .. } if props.is_empty()));
        let cli = parse(&["submit", "notes", "--key-file", "k.hex", "put", "todo", "milk"]).unwrap();
        let Command::Submit { log, key_file, op: OpCommand::Put { key, value } } = cli.command else {
            panic!("not submit put");
        };
        assert_eq!((log.as_str(), key.as_str(), value.as_str()), ("notes", "todo", "milk"));
        assert_eq!(key_file, std::path::PathBuf::from("k.hex"));
        assert!(parse(&["submit", "notes", "put", "a", "b"]).is_err(), "--key-file is required");
    }

    /// Every write command takes --replicas and --replicas-timeout; the timeout needs
    /// --replicas and defaults when left out; reads have no write concern.
    #[test]
    fn write_concern_on_write_commands() {
        let writes: [&[&str]; 6] = [
            &["put", "s", "k", "v"],
            &["delete", "s", "k"],
            &["append", "chat", "hi"],
            &["append", "chat", "--stdin"],
            &["link", "g", "a", "knows", "b"],
            &["unlink", "g", "a", "knows", "b"],
        ];
        for args in writes {
            let cli = parse(args).unwrap();
            assert_eq!(cli.command.write_concern().and_then(|c| c.concern()), None, "{args:?}");
            let with: Vec<&str> = args.iter().copied().chain(["--replicas", "2"]).collect();
            let cli = parse(&with).unwrap();
            assert_eq!(
                cli.command.write_concern().and_then(|c| c.concern()),
                Some((2, REPLICAS_TIMEOUT_DEFAULT)),
                "{args:?}"
            );
            let with: Vec<&str> =
                args.iter().copied().chain(["--replicas", "3", "--replicas-timeout", "1.5s"]).collect();
            let cli = parse(&with).unwrap();
            assert_eq!(
                cli.command.write_concern().and_then(|c| c.concern()),
                Some((3, Duration::from_millis(1500))),
                "{args:?}"
            );
            let without: Vec<&str> = args.iter().copied().chain(["--replicas-timeout", "5s"]).collect();
            let err = parse(&without).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{args:?}");
        }
        assert!(parse(&["put", "s", "k", "v", "--replicas", "0"]).is_err());
        assert!(parse(&["get", "s", "k", "--replicas", "2"]).is_err(), "reads take no write concern");
        assert!(parse(&["status"]).unwrap().command.write_concern().is_none());
    }

    /// `members set` needs a generation of at least 1 and takes any number of addresses.
    #[test]
    fn members_set() {
        let cli = parse(&["members", "set", "--generation", "4", "a:7070", "b:7070"]).unwrap();
        let Command::Members(MembersCommand::Set { generation, members }) = cli.command else {
            panic!("not members set");
        };
        assert_eq!(generation, 4);
        assert_eq!(members, vec!["a:7070", "b:7070"]);
        let cli = parse(&["members", "set", "--generation", "5"]).unwrap();
        assert!(
            matches!(cli.command, Command::Members(MembersCommand::Set { members, .. }) if members.is_empty())
        );
        assert!(parse(&["members", "set", "a:7070"]).is_err(), "--generation is required");
        assert!(parse(&["members", "set", "--generation", "0", "a:7070"]).is_err());
    }

    /// `drain` waits 60 s unless told otherwise.
    #[test]
    fn drain_timeout() {
        let cli = parse(&["drain"]).unwrap();
        assert!(
            matches!(cli.command, Command::Drain { timeout, cancel: false } if timeout == Duration::from_secs(60))
        );
        let cli = parse(&["drain", "--timeout", "5m"]).unwrap();
        assert!(matches!(cli.command, Command::Drain { timeout, .. } if timeout == Duration::from_secs(300)));
        let cli = parse(&["drain", "--cancel"]).unwrap();
        assert!(matches!(cli.command, Command::Drain { cancel: true, .. }));
        let err = parse(&["drain", "--timeout", "60"]).unwrap_err();
        assert!(err.to_string().contains("expected a duration with a unit"), "{err}");
    }

    /// Snapshot commands: export defaults to stdout and a full snapshot, --since must be a
    /// seq; import takes a path or `-`; backup repeats --log and keeps everything unless
    /// told.
    #[test]
    fn snapshot_commands() {
        let cli = parse(&["export", "kv"]).unwrap();
        assert!(matches!(cli.command, Command::Export { since: None, out: None, .. }));
        let cli = parse(&["export", "kv", "--since", "7", "--out", "kv.snap"]).unwrap();
        let Command::Export { log, since, out } = cli.command else { panic!("not export") };
        assert_eq!((log.as_str(), since, out), ("kv", Some(7), Some("kv.snap".into())));
        assert!(parse(&["export", "kv", "--since", "0"]).is_err());
        let cli = parse(&["import", "-"]).unwrap();
        assert!(matches!(cli.command, Command::Import { file } if file.as_os_str() == "-"));
        assert!(parse(&["import"]).is_err());
        let cli = parse(&["backup", "nightly", "--log", "a", "--log", "b", "--delta"]).unwrap();
        let Command::Backup { destination, logs, delta, retain_full } = cli.command else {
            panic!("not backup")
        };
        assert_eq!(
            (destination.as_deref(), logs, delta, retain_full),
            (Some("nightly"), vec!["a".into(), "b".into()], true, None)
        );
        let cli = parse(&["backup", "offsite", "--retain-full", "3"]).unwrap();
        assert!(matches!(cli.command, Command::Backup { retain_full: Some(3), delta: false, .. }));
        assert!(parse(&["backup", "offsite", "--retain-full", "0"]).is_err());
        let cli = parse(&["backup"]).unwrap();
        assert!(matches!(cli.command, Command::Backup { destination: None, .. }));
        assert!(parse(&["checkpoint"]).is_err());
    }

    /// Durations need a unit; fractions work; zero, negatives and junk are refused.
    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
        for bad in ["", "10", "s", "-1s", "1.2.3s", "10sec", "0s", "0.0001s", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
