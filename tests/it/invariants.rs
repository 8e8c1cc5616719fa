//! The write path's promises against a real replica: a write of any mix of op sizes
//! within the bounds succeeds (split into entries as needed), a refused write leaves no
//! trace and never fails another caller's write, and a nearly full disk refuses writes
//! with RESOURCE_EXHAUSTED instead of poisoning the store, and still stops cleanly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use plait_proto::pb;
use plait_tests::{Plaitd, check};
use tonic::Code;

use crate::support::{Clients, connect, create, put_op, start};

fn put_bytes(log: &str, key: &str, value: Vec<u8>) -> pb::RoutedOp {
    pb::RoutedOp {
        log: log.into(),
        op: Some(pb::Op { op: Some(pb::op::Op::Put(pb::KvPut { key: key.into(), value })) }),
    }
}

async fn seq_of(c: &mut Clients, log: &str) -> u64 {
    c.logs.get_log(pb::GetLogRequest { log: log.into() }).await.unwrap().into_inner().seq
}

/// One `Data.Write` with a small put to `a` and three 400 KiB puts to `b` (each op
/// within the format's bounds, the call far under the message limit) is stored as two or
/// more entries; the next put to `a` continues its seq, and `plaitd check` is clean.
#[tokio::test]
async fn mixed_sizes_in_one_write_are_split_into_entries() {
    let (_dir, mut replica) = start();
    let mut c = connect(&replica).await;
    create(&mut c, "a", pb::LogType::Kv).await;
    create(&mut c, "b", pb::LogType::Kv).await;
    let mut ops = vec![put_op("a", "small", "1")];
    for i in 0..3 {
        ops.push(put_bytes("b", &format!("big{i}"), vec![i as u8 + 1; 400 * 1024]));
    }
    let acks = c.data.write(pb::WriteRequest { ops, concern: None }).await.unwrap().into_inner().acks;
    assert_eq!(acks.len(), 4);
    let b_entries: std::collections::BTreeSet<_> = acks[1..].iter().map(|a| a.entry_hash.clone()).collect();
    assert!(b_entries.len() >= 2, "1.2 MB of ops cannot fit in one entry");
    assert_eq!(seq_of(&mut c, "a").await, 1);
    assert_eq!(seq_of(&mut c, "b").await, b_entries.len() as u64);
    let next =
        c.data.write(pb::WriteRequest { ops: vec![put_op("a", "next", "2")], concern: None }).await.unwrap();
    assert_eq!(next.into_inner().acks[0].seq, 2, "the next write to a continues its seq");
    let got = c
        .data
        .get(pb::GetRequest { log: "b".into(), key: b"big2".to_vec(), as_of: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, vec![3; 400 * 1024]);
    assert!(replica.terminate().unwrap().success());
    let (clean, report) = check(&replica.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// Callers whose writes the store refuses (a log whose ACL leaves the replica out)
/// share groups with callers whose writes are valid: every valid write is acknowledged,
/// every refused one gets PERMISSION_DENIED, nothing of the refused ones is stored, and
/// the data directory checks clean.
#[tokio::test]
async fn a_refused_write_never_fails_another_callers_write() {
    let (_dir, mut replica) = start();
    let mut c = connect(&replica).await;
    create(&mut c, "ours", pb::LogType::Kv).await;
    let theirs = pb::CreateLogRequest {
        name: "theirs".into(),
        r#type: pb::LogType::Kv as i32,
        writers: vec![plait_core::WriterKey::from_secret([9; 32]).public().0.to_vec()],
        exclude_replica_writer: true,
        ..Default::default()
    };
    c.logs.create_log(theirs).await.unwrap();
    const CALLERS: usize = 8;
    const WRITES: usize = 40;
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let mut data = c.data.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..WRITES {
                let bad = caller % 2 == 1;
                let log = if bad { "theirs" } else { "ours" };
                let ops = vec![put_op(log, &format!("{caller}-{i}"), "v")];
                let result = data.write(pb::WriteRequest { ops, concern: None }).await;
                match (bad, result) {
                    (false, Ok(_)) => {}
                    (true, Err(status)) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
                    (bad, result) => panic!("caller {caller} (refused: {bad}) got {result:?}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let ours = c.logs.get_log(pb::GetLogRequest { log: "ours".into() }).await.unwrap().into_inner();
    assert_eq!(ours.ops, (CALLERS / 2 * WRITES) as u64, "every valid write is stored");
    assert_eq!(seq_of(&mut c, "theirs").await, 0, "nothing of a refused write is stored");
    let after =
        c.data.write(pb::WriteRequest { ops: vec![put_op("ours", "after", "v")], concern: None }).await;
    assert!(after.is_ok(), "the next valid write continues normally");
    assert!(replica.terminate().unwrap().success());
    let (clean, report) = check(&replica.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// A tmpfs of a fixed size, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(parent: &Path, mib: u64) -> SmallDisk {
        let path = parent.join("disk");
        std::fs::create_dir_all(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it, which needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { path }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// On a disk that fills up, writes are refused with RESOURCE_EXHAUSTED once free space
/// falls under the floor: nothing is poisoned, reads go on, SIGTERM stops the replica
/// promptly and cleanly, the data checks clean, and after a restart on the same disk
/// the replica serves (no crash loop), refuses writes again at the floor, and everything
/// acknowledged is there.
#[tokio::test]
async fn a_full_disk_refuses_writes_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // The floor is well above what the data takes, so the engine's compactions (which
    // write their output before dropping their inputs) always have room.
    let disk = SmallDisk::mount(dir.path(), 256);
    let data = disk.path.join("data");
    let flags = ["--disk-free-min-mib", "160"];
    let mut replica =
        Plaitd::start_with_env(&data, &flags, vec![("PLAIT_LOG", "info,fjall=info,lsm_tree=warn".into())])
            .unwrap();
    let mut c = connect(&replica).await;
    create(&mut c, "kv", pb::LogType::Kv).await;
    let mut acknowledged = 0u32;
    let refusal = loop {
        assert!(acknowledged < 1000, "256 MiB cannot hold 1000 writes of 256 KiB");
        let ops = vec![put_bytes("kv", &format!("k{acknowledged}"), vec![7; 256 * 1024])];
        match c.data.write(pb::WriteRequest { ops, concern: None }).await {
            Ok(_) => acknowledged += 1,
            Err(status) => break status,
        }
    };
    eprintln!(
        "refused after {acknowledged}; df: {}",
        String::from_utf8_lossy(&Command::new("df").arg("-m").arg(&disk.path).output().unwrap().stdout)
    );
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
    assert!(refusal.message().contains("free"), "{}", refusal.message());
    assert!(acknowledged > 0);
    let got = c
        .data
        .get(pb::GetRequest { log: "kv".into(), key: b"k0".to_vec(), as_of: None })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value.len(), 256 * 1024, "reads go on");
    let started = std::time::Instant::now();
    let status = replica.terminate().unwrap();
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap_or_default();
    assert!(status.success(), "SIGTERM on a full disk exits cleanly: {status:?}\n{log}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let (clean, report) = check(&data).unwrap();
    assert!(clean, "{report}");

    replica.restart().unwrap();
    let mut c = connect(&replica).await;
    // Compactions may have given space back since; either way the floor holds again.
    let mut more = 0u32;
    let again = loop {
        assert!(more < 1000, "256 MiB cannot hold 1000 more writes of 256 KiB");
        let ops = vec![put_bytes("kv", &format!("again{more}"), vec![8; 256 * 1024])];
        match c.data.write(pb::WriteRequest { ops, concern: None }).await {
            Ok(_) => more += 1,
            Err(status) => break status,
        }
    };
    assert_eq!(again.code(), Code::ResourceExhausted, "{again:?}");
    let last = format!("k{}", acknowledged - 1);
    let got =
        c.data.get(pb::GetRequest { log: "kv".into(), key: last.into_bytes(), as_of: None }).await.unwrap();
    assert_eq!(got.into_inner().value.len(), 256 * 1024, "every acknowledged write survived");
    assert!(replica.terminate().unwrap().success());
    drop(disk);
}
