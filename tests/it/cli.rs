//! plaitctl end to end against a real plaitd: the first session the README shows, JSON
//! output for scripts, stdin batching, following a feed, client-held keys and errors.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use crate::support::start;

fn plaitctl(addr: &str, args: &[&str]) -> Output {
    Command::new(plait_tests::binary("plaitctl").unwrap())
        .env("PLAIT_ADDR", addr)
        .args(args)
        .output()
        .unwrap()
}

fn ok(addr: &str, args: &[&str]) -> String {
    let out = plaitctl(addr, args);
    assert!(out.status.success(), "plaitctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn json(addr: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(addr, &all)).unwrap()
}

/// The README's first session works as written, with human and JSON output.
#[test]
fn first_session() {
    let (_dir, replica) = start();
    let addr = replica.endpoint();
    ok(&addr, &["log", "create", "settings", "--type", "kv"]);
    ok(&addr, &["put", "settings", "theme", "dark"]);
    assert_eq!(ok(&addr, &["get", "settings", "theme"]).trim(), "dark");
    let got = json(&addr, &["get", "settings", "theme"]);
    assert_eq!(got["value"], "dark");
    ok(&addr, &["delete", "settings", "theme"]);
    let missing = plaitctl(&addr, &["get", "settings", "theme"]);
    assert_eq!(missing.status.code(), Some(1));

    ok(&addr, &["log", "create", "people", "--type", "graph"]);
    ok(&addr, &["link", "people", "ann", "knows", "bob"]);
    assert!(ok(&addr, &["edges", "people", "bob", "--in"]).contains("ann"));

    let logs = json(&addr, &["log", "list"]);
    assert_eq!(logs.as_array().unwrap().len(), 2);
    let status = ok(&addr, &["status"]);
    assert!(status.contains("settings") && status.contains("people"), "{status}");
    assert!(ok(&addr, &["health"]).to_lowercase().contains("serving"));
}

/// `append --stdin` batches lines into entries; `tail -n` reads the last ones; `tail
/// --follow` prints items written after it started.
#[test]
fn feeds_from_stdin_and_follow() {
    let (_dir, replica) = start();
    let addr = replica.endpoint();
    ok(&addr, &["log", "create", "chat", "--type", "feed"]);
    let mut child = Command::new(plait_tests::binary("plaitctl").unwrap())
        .env("PLAIT_ADDR", &addr)
        .args(["append", "chat", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines: String = (0..2500).map(|i| format!("line {i}\n")).collect();
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let info = json(&addr, &["log", "get", "chat"]);
    assert_eq!(info["ops"], 2500);
    assert!(info["seq"].as_u64().unwrap() < 2500, "lines were batched into fewer entries");
    assert_eq!(
        ok(&addr, &["tail", "chat", "-n", "2"]).lines().collect::<Vec<_>>(),
        vec!["line 2498", "line 2499"]
    );

    let mut follow = Command::new(plait_tests::binary("plaitctl").unwrap())
        .env("PLAIT_ADDR", &addr)
        .args(["--output", "json", "tail", "chat", "-n", "0", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    // Writes keep coming until the follower has printed one: no sleep decides timing.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        tx.send(line).unwrap();
    });
    let line = loop {
        ok(&addr, &["append", "chat", "live"]);
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            break line;
        }
    };
    follow.kill().unwrap();
    follow.wait().unwrap();
    let item: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(item["value"], "live");
}

/// A key generated with `keygen` signs entries through `submit`; a key not on the ACL is
/// refused with a clear error and exit status 1.
#[test]
fn client_held_keys() {
    let (dir, replica) = start();
    let addr = replica.endpoint();
    let key_file = dir.path().join("me.key");
    let other_file = dir.path().join("other.key");
    let key_path = key_file.to_str().unwrap();
    let public = json(&addr, &["keygen", "--out", key_path]);
    let public = public["public"].as_str().expect("public key in keygen output").to_owned();
    ok(&addr, &["keygen", "--out", other_file.to_str().unwrap()]);
    ok(&addr, &["log", "create", "mine", "--type", "kv", "--writer", &public, "--exclude-replica-writer"]);
    ok(&addr, &["submit", "mine", "--key-file", key_path, "put", "k", "v"]);
    assert_eq!(ok(&addr, &["get", "mine", "k"]).trim(), "v");
    let refused =
        plaitctl(&addr, &["submit", "mine", "--key-file", other_file.to_str().unwrap(), "put", "k", "x"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.starts_with("error:") && stderr.contains("ACL"), "{stderr}");
}

/// Errors from the server reach the user as one readable line and exit status 1.
#[test]
fn errors_are_readable() {
    let (_dir, replica) = start();
    let addr = replica.endpoint();
    let out = plaitctl(&addr, &["put", "nope", "k", "v"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no log named \"nope\""), "{stderr}");
    let unreachable = plaitctl("http://127.0.0.1:1", &["status"]);
    assert_eq!(unreachable.status.code(), Some(1));
}

// ---------------------------------------------------------------------------------------
// Replication through plaitctl: two replicas, membership, write concern, drain.

/// How long a replication condition may take to hold on a loaded machine.
const REPLICATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs plaitctl expecting exit status 1; returns its stderr.
fn fails(addr: &str, args: &[&str]) -> String {
    let out = plaitctl(addr, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "plaitctl {args:?} should exit 1; stderr: {stderr}");
    stderr
}

/// Polls `condition` until it holds or `timeout` passes: tests wait on conditions, never
/// on fixed sleeps. `condition` returns what it saw, for the failure message.
fn eventually(what: &str, mut condition: impl FnMut() -> Result<(), String>) {
    let deadline = std::time::Instant::now() + REPLICATION_TIMEOUT;
    loop {
        match condition() {
            Ok(()) => return,
            Err(seen) if std::time::Instant::now() > deadline => {
                panic!("timed out after {REPLICATION_TIMEOUT:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// plaitd runs on the allocator its build configures (`.cargo/config.toml`): jemalloc
/// with a background thread that hands freed pages back to the kernel. Without that
/// setting (or with the system allocator) no `jemalloc_bg_thd` thread exists and the
/// replica's memory figures in docs/benchmarks.md no longer describe it.
#[test]
fn plaitd_returns_freed_memory_with_a_background_thread() {
    let (_dir, replica) = start();
    let addr = replica.endpoint();
    ok(&addr, &["log", "create", "settings", "--type", "kv"]);
    ok(&addr, &["put", "settings", "theme", "dark"]);
    let tasks = format!("/proc/{}/task", replica.pid());
    eventually("a jemalloc background thread in plaitd", || {
        let names: Vec<String> = std::fs::read_dir(&tasks)
            .map_err(|e| e.to_string())?
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect();
        if names.iter().any(|n| n == "jemalloc_bg_thd") { Ok(()) } else { Err(format!("threads {names:?}")) }
    });
}

/// Two replicas that replicate with each other: B knows A from its `--peer` flag, and A
/// learns of B through `plaitctl members set --generation 1`.
fn two_replicas() -> (tempfile::TempDir, plait_tests::Plaitd, plait_tests::Plaitd) {
    let dir = tempfile::tempdir().unwrap();
    let a = plait_tests::Plaitd::start(&dir.path().join("a"), &["--anti-entropy-ms", "200"]).unwrap();
    let a_grpc = a.grpc.to_string();
    let b =
        plait_tests::Plaitd::start(&dir.path().join("b"), &["--peer", &a_grpc, "--anti-entropy-ms", "200"])
            .unwrap();
    let set = ok(&a.endpoint(), &["members", "set", "--generation", "1", &b.grpc.to_string()]);
    assert_eq!(set, "members generation 1: 1 member\n");
    (dir, a, b)
}

/// `put --replicas 2` returns only once both replicas hold the write, and A's status
/// then lists B as a connected member peer, with B's node id, and the log fully
/// replicated both ways (lag 0, B holding everything of A's), in JSON and in the human
/// PEER tables.
#[test]
fn replicated_put_and_peer_status() {
    let (_dir, a, b) = two_replicas();
    let (a_addr, b_addr) = (a.endpoint(), b.endpoint());
    ok(&a_addr, &["log", "create", "settings", "--type", "kv"]);
    let ack =
        json(&a_addr, &["put", "--replicas", "2", "--replicas-timeout", "30s", "settings", "theme", "dark"]);
    // The concern was met, so B holds the write now: no waiting.
    assert_eq!(ok(&b_addr, &["get", "settings", "theme"]).trim(), "dark");
    let a_seq = ack["seq"].as_u64().unwrap();
    let b_node = json(&b_addr, &["status"])["node_id"].as_str().unwrap().to_owned();
    let b_grpc = b.grpc.to_string();

    eventually("A to report B connected with settings at lag 0", || {
        let status = json(&a_addr, &["status"]);
        let seen = || status.to_string();
        let peer = status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["address"] == b_grpc.as_str())
            .ok_or_else(seen)?;
        let log =
            peer["logs"].as_array().unwrap().iter().find(|l| l["name"] == "settings").ok_or_else(seen)?;
        let replicated = peer["connected"] == true
            && peer["source"] == "members"
            && peer["node_id"] == b_node.as_str()
            && log["lag"] == 0
            && log["peer_seq"].as_u64() >= Some(1)
            && log["peer_holds"].as_u64() >= Some(a_seq);
        if replicated { Ok(()) } else { Err(seen()) }
    });
    let status = json(&a_addr, &["status"]);
    assert_eq!(status["members_generation"], 1);
    assert_eq!(status["draining"], false);

    let human = ok(&a_addr, &["status"]);
    assert!(human.contains("members   generation 1\n") && human.contains("draining  no\n"), "{human}");
    assert!(human.contains("\nPEER ") && human.contains("LAST CONTACT"), "{human}");
    let peer_row = human.lines().find(|l| l.starts_with(&b_grpc) && l.contains("members")).expect(&human);
    assert!(peer_row.contains(&b_node[..16]) && peer_row.contains(" yes "), "{human}");
    assert!(human.lines().any(|l| l.starts_with(&b_grpc) && l.contains("settings")), "{human}");
}

/// A membership update with a generation that is not newer than the one in force is
/// refused with exit status 1 and a message saying it is stale, and changes nothing; a
/// newer generation then goes through.
#[test]
fn stale_member_generation_is_refused() {
    let (_dir, a, b) = two_replicas();
    let a_addr = a.endpoint();
    let b_grpc = b.grpc.to_string();
    let stderr = fails(&a_addr, &["members", "set", "--generation", "1", &b_grpc]);
    assert!(stderr.starts_with("error:") && stderr.contains("stale"), "{stderr}");
    assert_eq!(json(&a_addr, &["status"])["members_generation"], 1);
    let set = json(&a_addr, &["members", "set", "--generation", "2", &b_grpc]);
    assert_eq!(set["generation"], 2);
    assert_eq!(json(&a_addr, &["status"])["members_generation"], 2);
}

/// `drain` on B returns once A holds everything B holds, naming A as the holder of the
/// log; from then on B refuses writes, and `put` on B exits 1 saying it is draining.
#[test]
fn drain_then_writes_are_refused() {
    let (_dir, a, b) = two_replicas();
    let (a_addr, b_addr) = (a.endpoint(), b.endpoint());
    ok(&a_addr, &["log", "create", "settings", "--type", "kv"]);
    ok(&a_addr, &["put", "--replicas", "2", "--replicas-timeout", "30s", "settings", "theme", "dark"]);
    let a_node = json(&a_addr, &["status"])["node_id"].as_str().unwrap().to_owned();

    let drained = json(&b_addr, &["drain", "--timeout", "30s"]);
    assert_eq!(drained["drained"], true);
    let logs = drained["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 1, "{drained}");
    assert_eq!(logs[0]["name"], "settings");
    assert!(logs[0]["seq"].as_u64().unwrap() >= 1, "{drained}");
    assert_eq!(logs[0]["held_by"], a_node.as_str());
    // Draining again is idempotent and prints the holder's id prefix for people.
    let human = ok(&b_addr, &["drain"]);
    assert!(human.lines().any(|l| l.starts_with("settings") && l.ends_with(&a_node[..16])), "{human}");

    let stderr = fails(&b_addr, &["put", "settings", "theme", "light"]);
    assert!(stderr.contains("draining"), "{stderr}");
    assert_eq!(json(&b_addr, &["status"])["draining"], true);
    // A was not drained and still takes writes.
    ok(&a_addr, &["put", "settings", "theme", "light"]);
}

/// A drain that cannot finish in time (the only peer is unreachable) exits 1 with the
/// replica's own message naming the log still waiting; the replica stays draining.
#[test]
fn drain_timeout_reports_the_waiting_logs() {
    let dir = tempfile::tempdir().unwrap();
    let replica = plait_tests::Plaitd::start(&dir.path().join("data"), &["--peer", "127.0.0.1:1"]).unwrap();
    let addr = replica.endpoint();
    ok(&addr, &["log", "create", "settings", "--type", "kv"]);
    ok(&addr, &["put", "settings", "theme", "dark"]);
    let stderr = fails(&addr, &["drain", "--timeout", "300ms"]);
    assert!(stderr.starts_with("error:") && stderr.contains("settings (seq"), "{stderr}");
    assert!(stderr.contains("stays draining"), "{stderr}");
    assert_eq!(json(&addr, &["status"])["draining"], true);
}

// ---------------------------------------------------------------------------------------
// Checkpoints, snapshots and backups through plaitctl.

/// Creates a kv log `kv` holding `a=1`, `b=2`, `c=3`.
fn kv_with_keys(addr: &str) {
    ok(addr, &["log", "create", "kv", "--type", "kv"]);
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        ok(addr, &["put", "kv", key, value]);
    }
}

/// `checkpoint` reports the log's seq, heads, a 32-byte state root and its ops; `export
/// --out FILE` writes a whole snapshot; `import FILE` on a second, empty replica restores
/// the log as a full import of every entry, at the same state root, and `get` there
/// returns the same values.
#[test]
fn export_then_import_on_another_replica() {
    let (dir, first) = start();
    let addr = first.endpoint();
    kv_with_keys(&addr);

    let checkpoint = json(&addr, &["checkpoint", "kv"]);
    assert_eq!(checkpoint["seq"], 3, "{checkpoint}");
    assert_eq!(checkpoint["ops"], 3, "{checkpoint}");
    assert_eq!(checkpoint["heads"].as_array().unwrap().len(), 1, "{checkpoint}");
    let root = checkpoint["state_root"].as_str().unwrap().to_owned();
    assert_eq!(root.len(), 64, "{checkpoint}");
    let human = ok(&addr, &["checkpoint", "kv"]);
    assert!(human.contains("seq         3\n") && human.contains(&root), "{human}");

    let file = dir.path().join("kv.snap");
    let file_arg = file.to_str().unwrap();
    let exported = json(&addr, &["export", "kv", "--out", file_arg]);
    let size = std::fs::metadata(&file).unwrap().len();
    assert_eq!(exported["bytes"].as_u64(), Some(size), "{exported}");
    assert!(std::fs::read(&file).unwrap().starts_with(b"PLAITSNP"));
    assert!(!dir.path().join("kv.snap.partial").exists(), "the partial file was renamed");

    let second = plait_tests::Plaitd::start(&dir.path().join("second"), &[]).unwrap();
    let second_addr = second.endpoint();
    let imported = json(&second_addr, &["import", file_arg]);
    assert_eq!(imported["kind"], "full", "{imported}");
    assert_eq!(imported["entries_read"], 3, "{imported}");
    assert_eq!(imported["entries_stored"], 3, "{imported}");
    assert_eq!(imported["checkpoint"]["seq"], 3, "{imported}");
    assert_eq!(imported["checkpoint"]["state_root"], root.as_str(), "{imported}");
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        assert_eq!(ok(&second_addr, &["get", "kv", key]).trim(), value);
    }
    assert_eq!(json(&second_addr, &["checkpoint", "kv"])["state_root"], root.as_str());

    // The same snapshot again, through stdin: every entry is already there.
    let again = Command::new(plait_tests::binary("plaitctl").unwrap())
        .env("PLAIT_ADDR", &second_addr)
        .args(["import", "-"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(stdout.contains("entries     3 read, 0 stored"), "{stdout}");
}

/// `backup NAME` writes a full object per log to the replica's file:// destination of
/// that name and lists it; a following `backup --delta` (no name: the only destination)
/// writes a delta that starts at the full one's seq. `status` lists the destination's
/// name, and `backup` with a URL exits 1 saying it takes a name.
#[test]
fn full_then_delta_backup() {
    let dir = tempfile::tempdir().unwrap();
    let destination = format!("local=file://{}", dir.path().join("backups").display());
    let replica =
        plait_tests::Plaitd::start(&dir.path().join("data"), &["--backup-destination", &destination])
            .unwrap();
    let addr = replica.endpoint();
    kv_with_keys(&addr);
    assert_eq!(json(&addr, &["status"])["backup_destinations"], serde_json::json!(["local"]));
    assert!(ok(&addr, &["status"]).contains("backups   local\n"));
    let refused = plaitctl(&addr, &["backup", "file:///tmp/plait-cli-elsewhere"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a URL"), "{refused:?}");
    assert!(!std::path::Path::new("/tmp/plait-cli-elsewhere").exists());

    let full = json(&addr, &["backup", "local"]);
    let objects = full["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{full}");
    assert_eq!(objects[0]["name"], "kv");
    assert_eq!(objects[0]["kind"], "full");
    assert_eq!(objects[0]["checkpoint"]["seq"], 3);
    let full_key = objects[0]["key"].as_str().unwrap();
    let full_file = dir.path().join("backups").join(full_key);
    assert_eq!(objects[0]["bytes"].as_u64(), Some(std::fs::metadata(&full_file).unwrap().len()), "{full}");

    ok(&addr, &["put", "kv", "d", "4"]);
    let human = ok(&addr, &["backup", "--delta", "--log", "kv"]);
    assert!(human.contains("LOG  KIND   BYTES"), "{human}");
    let row = human.lines().find(|l| l.starts_with("kv ")).expect(&human);
    assert!(row.contains(" delta ") && row.contains(" 3..4 ") && row.contains("logs/"), "{human}");
}

/// A snapshot cut short is refused whole: `import` exits 1 saying it is truncated, and
/// the replica holds nothing of it.
#[test]
fn truncated_snapshot_is_refused() {
    let (dir, replica) = start();
    let addr = replica.endpoint();
    kv_with_keys(&addr);
    let file = dir.path().join("kv.snap");
    ok(&addr, &["export", "kv", "--out", file.to_str().unwrap()]);
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.path().join("cut.snap");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();

    let second = plait_tests::Plaitd::start(&dir.path().join("second"), &[]).unwrap();
    let stderr = fails(&second.endpoint(), &["import", cut.to_str().unwrap()]);
    assert!(stderr.starts_with("error:") && stderr.contains("truncated"), "{stderr}");
    assert_eq!(json(&second.endpoint(), &["log", "list"]).as_array().unwrap().len(), 0);
}

/// `--write-buffer-mib` under what the active memtables alone may hold is refused at
/// start with the reason and the least it takes, leaving nothing in the data directory;
/// 0 (no bound) and the least value start.
#[test]
fn a_write_buffer_bound_too_small_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = plait_tests::plaitd_command()
        .unwrap()
        .args(["serve", "--listen", "127.0.0.1:0", "--write-buffer-mib", "10", "--data-dir"])
        .arg(dir.path().join("small"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a 10 MiB bound was accepted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let least = (plait_store::MEMTABLES_BYTES_MAX / (1024 * 1024)).to_string();
    assert!(
        stderr.contains("--write-buffer-mib 10 is under") && stderr.contains(&format!("{least} MiB")),
        "{stderr}"
    );
    assert!(!dir.path().join("small").exists(), "a refused start left a data directory");
    for bound in ["0", least.as_str()] {
        let replica =
            plait_tests::Plaitd::start(&dir.path().join(format!("b{bound}")), &["--write-buffer-mib", bound]);
        assert!(replica.is_ok(), "--write-buffer-mib {bound} did not start: {:?}", replica.err());
    }
}

/// `--as-of` reads the past by seq and by a checkpoint's state root; `history` lists a
/// key's and an edge's versions (deletes too) and a writer's entries; a point that does
/// not exist is refused with a message saying what is valid.
#[test]
fn reads_of_the_past_and_history() {
    let (_dir, replica) = start();
    let addr = replica.endpoint();
    ok(&addr, &["log", "create", "settings", "--type", "kv"]);
    ok(&addr, &["put", "settings", "theme", "dark"]);
    let checkpoint = json(&addr, &["checkpoint", "settings"]);
    let root = checkpoint["state_root"].as_str().unwrap().to_owned();
    ok(&addr, &["put", "settings", "theme", "light"]);
    ok(&addr, &["delete", "settings", "theme"]);
    assert_eq!(ok(&addr, &["get", "settings", "theme", "--as-of", "1"]).trim(), "dark");
    assert_eq!(ok(&addr, &["get", "settings", "theme", "--as-of", "2"]).trim(), "light");
    assert_eq!(ok(&addr, &["get", "settings", "theme", "--as-of", &root]).trim(), "dark");
    assert!(fails(&addr, &["get", "settings", "theme", "--as-of", "3"]).contains("was not set"));
    assert!(fails(&addr, &["get", "settings", "theme", "--as-of", "4"]).contains("seqs 0 to 3"));
    let usage = plaitctl(&addr, &["get", "settings", "theme", "--as-of", "nonsense"]);
    assert_eq!(usage.status.code(), Some(2), "a malformed point is a usage error");
    assert!(String::from_utf8_lossy(&usage.stderr).contains("state root"));
    assert_eq!(ok(&addr, &["scan", "settings", "--as-of", "2"]).trim(), "theme\tlight");

    let history = ok(&addr, &["history", "settings", "theme"]);
    let lines: Vec<_> = history.lines().collect();
    assert_eq!(lines.len(), 3, "{history}");
    assert!(
        lines[0].ends_with("dark") && lines[1].ends_with("light") && lines[2].ends_with("deleted"),
        "{history}"
    );
    let versions = json(&addr, &["history", "settings", "theme"]);
    assert_eq!(versions[2]["live"], false);
    let hash = versions[0]["entry_hash"].as_str().unwrap();
    assert!(ok(&addr, &["entry", hash]).contains("dark"), "each version names its entry");
    let writer = versions[0]["clock"]["writer"].as_str().unwrap();
    let entries = json(&addr, &["history", "settings", "--writer", writer, "--from", "2"]);
    assert_eq!(
        entries.as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect::<Vec<_>>(),
        [2, 3]
    );

    ok(&addr, &["log", "create", "people", "--type", "graph"]);
    ok(&addr, &["link", "people", "ann", "knows", "bob"]);
    ok(&addr, &["unlink", "people", "ann", "knows", "bob"]);
    assert!(ok(&addr, &["edges", "people", "ann", "--as-of", "1"]).contains("bob"));
    assert!(!ok(&addr, &["edges", "people", "ann"]).contains("bob"));
    let edge = json(&addr, &["history", "people", "--edge", "ann", "knows", "bob"]);
    assert_eq!(
        edge.as_array().unwrap().iter().map(|v| v["live"].as_bool().unwrap()).collect::<Vec<_>>(),
        [true, false]
    );

    ok(&addr, &["log", "create", "chat", "--type", "feed"]);
    ok(&addr, &["append", "chat", "one"]);
    ok(&addr, &["append", "chat", "two"]);
    assert_eq!(ok(&addr, &["tail", "chat", "--as-of", "1"]).trim(), "one");
}

/// `plaitctl subscribe --consumer NAME --commit` prints every op once across runs: a
/// second run prints nothing, a run after more writes prints only the new ops; `consumer
/// list` shows the committed seq and lag, `status` shows them per log, `consumer commit`
/// moves the consumer back, `consumer delete` removes it, and a bad name is refused.
#[test]
fn durable_consumers_from_the_command_line() {
    let (_dir, replica) = start();
    let addr = replica.endpoint();
    ok(&addr, &["log", "create", "orders", "--type", "kv"]);
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
        ok(&addr, &["put", "orders", k, v]);
    }
    let run = || ok(&addr, &["subscribe", "orders", "--consumer", "billing", "--commit"]);
    let first = run();
    assert_eq!(first.lines().count(), 3, "{first}");
    assert!(first.lines().next().unwrap().starts_with("1\t0\tlocal\tkv.put a = 1"), "{first}");
    assert_eq!(run(), "", "everything printed was committed");
    ok(&addr, &["put", "orders", "d", "4"]);
    let later = run();
    assert!(later.starts_with("4\t0\tlocal\tkv.put d = 4") && later.lines().count() == 1, "{later}");

    let listed = json(&addr, &["consumer", "list", "orders"]);
    assert_eq!(listed["consumers"][0]["committed_seq"], 4);
    assert_eq!(listed["consumers"][0]["lag"], 0);
    ok(&addr, &["consumer", "commit", "orders", "billing", "2"]);
    assert!(ok(&addr, &["status"]).contains("billing"), "status lists consumers");
    let status = json(&addr, &["status"]);
    assert_eq!(status["logs"][0]["consumers"][0]["lag"], 2);
    assert_eq!(run().lines().count(), 2, "moved back, it reads seqs 3 and 4 again");
    assert!(fails(&addr, &["consumer", "commit", "orders", "billing", "9"]).contains("seqs 0 to 4"));
    assert!(fails(&addr, &["consumer", "commit", "orders", "bad/name", "1"]).contains("consumer name"));
    ok(&addr, &["consumer", "delete", "orders", "billing"]);
    assert!(ok(&addr, &["consumer", "list", "orders"]).starts_with("no consumers"));
    assert!(fails(&addr, &["consumer", "delete", "orders", "billing"]).contains("no consumer"));
}
