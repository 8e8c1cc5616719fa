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
