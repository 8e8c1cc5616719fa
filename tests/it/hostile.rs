//! Hostile peers: a fake replica inside the test process speaks the Sync protocol and
//! answers pulls with bad signatures, tampered entries, writers not on the ACL, entries
//! of another log, oversized entries and messages, endless orphans and garbage. A real
//! `plaitd` that pulls from it must refuse every bad entry with an error that names the
//! problem, store none of it, keep its memory bounded, cut the peer off, keep serving
//! and keep replicating from honest peers. Push, the other way bad entries come in from
//! the network, is attacked directly.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use plait_core::limits::ENTRY_BYTES_MAX;
use plait_core::{EntryDraft, EntryHash, LogId, LogType, Manifest, Op, SignedManifest, WriterKey, Writers};
use plait_proto::pb;
use plait_proto::pb::sync_server::{Sync as SyncService, SyncServer};
use plait_tests::Plaitd;
use plait_tests::cluster::channel;
use rand::SeedableRng;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

/// How long a replica may take to notice a hostile peer, or to replicate honest entries.
const DEADLINE: Duration = Duration::from_secs(30);
/// The per-peer pending bound the endless-orphans tests give the replica.
const PEER_PENDING_MAX: u64 = 50;
/// Orphans the endless peer sends per page: so "the bound plus one page" is 70.
const ORPHANS_PER_PAGE: u64 = 20;
/// What the session asks for per pull (`replication::PULL_PAGE_ENTRIES`).
const PULL_PAGE_ENTRIES: u64 = 1024;
/// Resident memory the replica must stay under while attacked.
const RSS_BYTES_MAX: u64 = 200 * 1024 * 1024;
/// Push's own pending bound per stream (`services::sync::PUSH_PENDING_MAX`).
const PUSH_PENDING_MAX: usize = 10_000;
/// Entries one Push message may carry (`replication::PUSH_ENTRIES_MAX`).
const PUSH_ENTRIES_MAX: usize = 1024;
/// Logs the flooding peer names in all: enough that their manifests together are far
/// over the replica's 16 MiB message limit, few enough that a replica that hosts every one
/// does not take the test machine down with it.
const FLOOD_LOGS: u64 = 400;
/// The epoch every fake peer claims.
const FAKE_EPOCH: [u8; 16] = [0xfa; 16];
/// The seq a fake peer claims for each log it hosts: far ahead, so the replica keeps pulling.
const FAKE_SEQ: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------
// Keys, manifests and entries.

fn key(seed: u64) -> WriterKey {
    WriterKey::generate(&mut rand::rngs::StdRng::seed_from_u64(seed))
}

/// The writer on every test log's ACL.
fn alice() -> WriterKey {
    key(1)
}

/// A validly signing writer on no ACL.
fn mallory() -> WriterKey {
    key(2)
}

/// A kv log named `name` that only alice may write.
fn manifest(name: &str) -> SignedManifest {
    let alice = alice();
    Manifest {
        name: name.into(),
        log_type: LogType::Kv,
        writers: Writers::keys(vec![alice.public()]),
        created_by: alice.public(),
        created_at_lamport: 1,
        options: vec![],
    }
    .sign(&alice)
    .unwrap()
}

fn put(key: &str, value: &[u8]) -> Vec<Op> {
    vec![Op::Put { key: key.as_bytes().to_vec(), value: value.to_vec() }]
}

/// A signed kv entry's canonical bytes.
fn signed(writer: &WriterKey, log: LogId, time: u64, next: Vec<EntryHash>, ops: Vec<Op>) -> Vec<u8> {
    EntryDraft { log, time, next, refs: vec![], ops }.sign(writer).unwrap().into_bytes()
}

/// A valid entry by alice with no parents.
fn good(log: LogId, k: &str) -> Vec<u8> {
    signed(&alice(), log, 1, vec![], put(k, b"value"))
}

/// A valid entry whose signature has one bit flipped.
fn bad_signature(log: LogId) -> Vec<u8> {
    let mut bytes = good(log, "bad-signature");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    bytes
}

/// A valid entry whose op was changed after signing: still canonical CBOR, same length.
fn tampered(log: LogId) -> Vec<u8> {
    let mut bytes = signed(&alice(), log, 1, vec![], put("tampered", b"pay alice 10"));
    let at = bytes.windows(12).position(|w| w == b"pay alice 10").expect("the value is in the bytes");
    bytes[at + 10] = b'9';
    plait_core::DecodedEntry::decode(&bytes).expect("still a canonical entry");
    bytes
}

/// A hash no entry has.
fn unknown_hash(n: u64) -> EntryHash {
    let mut hash = [0x5a; 32];
    hash[..8].copy_from_slice(&n.to_be_bytes());
    EntryHash(hash)
}

/// A valid entry by alice whose one parent never exists.
fn orphan(log: LogId, n: u64) -> Vec<u8> {
    signed(&alice(), log, 2, vec![unknown_hash(n)], put(&format!("orphan-{n}"), b"x"))
}

/// A canonical entry over `ENTRY_BYTES_MAX`: a signed entry with one 512,000-byte put
/// whose ops array was then grown to three copies of it (the signature no longer
/// matches, but the size is what a replica must check first).
fn oversized(log: LogId) -> Vec<u8> {
    let bytes = signed(&alice(), log, 1, vec![], put("big", &vec![7; 512_000]));
    // [0x88, v, log (34), time, writer (34), next [], refs [], ops header, op, sig (66)]
    const OPS_HEADER: usize = 1 + 1 + 34 + 1 + 34 + 1 + 1;
    assert_eq!(bytes[OPS_HEADER], 0x81, "an ops array of one item");
    let op = &bytes[OPS_HEADER + 1..bytes.len() - 66];
    let mut out = bytes[..OPS_HEADER].to_vec();
    out.push(0x83);
    for _ in 0..3 {
        out.extend_from_slice(op);
    }
    out.extend_from_slice(&bytes[bytes.len() - 66..]);
    assert!(out.len() > ENTRY_BYTES_MAX);
    out
}

/// Bytes that are not CBOR at all.
fn garbage() -> Vec<u8> {
    let mut bytes = b"\xff\xff\xff not an entry".to_vec();
    bytes.extend((0..200u32).map(|i| (i * 37 % 251) as u8));
    bytes
}

// ---------------------------------------------------------------------------------------
// The fake peer.

/// The logs a fake peer says it hosts, asked anew on every Hello.
type Hosted = Arc<dyn Fn() -> Vec<SignedManifest> + Send + Sync>;

/// What a fake peer answers to a Pull of `log` after `after_seq`: the pages of the stream.
type Answer = Arc<dyn Fn(LogId, u64) -> Vec<pb::EntryPage> + Send + Sync>;

/// A page of `entries` numbered from `after + 1`.
fn page(after: u64, entries: Vec<Vec<u8>>) -> pb::EntryPage {
    let n = entries.len() as u64;
    pb::EntryPage {
        entries: entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| pb::SeqEntry { seq: after + 1 + i as u64, entry })
            .collect(),
        epoch: FAKE_EPOCH.to_vec(),
        server_seq: after + n,
        through_seq: after + n,
    }
}

/// What the replica did with the fake peer.
#[derive(Default)]
struct Calls {
    /// Connections the replica opened. A session has its own connection, so this counts
    /// sessions: the first, and one more each time the replica comes back after a cut-off.
    sessions: AtomicU64,
    /// The session number (from 1) of each connection, by the replica's address.
    session_of: Mutex<HashMap<SocketAddr, u64>>,
}

/// A replica in name only: it hosts the logs `hosted` names and answers every Pull
/// (and Reconcile) with `answer`, Fetch with nothing, and Watch with silence.
struct FakePeer {
    node_id: Vec<u8>,
    hosted: Hosted,
    answer: Answer,
    calls: Arc<Calls>,
    /// Sessions from this number on are held at Hello until the test lets go of the
    /// fake peer, and then refused: so a test can look at what earlier sessions left
    /// without more arriving.
    hold_from: Option<u64>,
    release: watch::Receiver<()>,
    /// How Watch answers; `None`: open and silent.
    watch: Option<WatchScript>,
}

/// A Watch that answers the caller's challenge with a proof signed by `signer` and then
/// sends, in order, each batch of notices the test gives it.
#[derive(Clone)]
struct WatchScript {
    signer: WriterKey,
    next: watch::Receiver<Vec<pb::WatchNotice>>,
}

type Pages = Pin<Box<dyn Stream<Item = Result<pb::EntryPage, Status>> + Send>>;
type Notices = Pin<Box<dyn Stream<Item = Result<pb::WatchNotice, Status>> + Send>>;

impl FakePeer {
    fn pages(&self, log_id: &[u8], after: u64) -> Result<Response<Pages>, Status> {
        let log = LogId::from_slice(log_id).ok_or_else(|| Status::invalid_argument("log_id"))?;
        let pages = (self.answer)(log, after);
        Ok(Response::new(Box::pin(futures::stream::iter(pages.into_iter().map(Ok)))))
    }
}

#[tonic::async_trait]
impl SyncService for FakePeer {
    async fn hello(&self, request: Request<pb::HelloRequest>) -> Result<Response<pb::HelloResponse>, Status> {
        let session =
            request.remote_addr().and_then(|a| self.calls.session_of.lock().unwrap().get(&a).copied());
        if let (Some(session), Some(from)) = (session, self.hold_from)
            && session >= from
        {
            // Waits until the sender is dropped with the fake peer.
            let _ = self.release.clone().changed().await;
            return Err(Status::unavailable("this fake peer is gone"));
        }
        let logs = (self.hosted)()
            .iter()
            .map(|m| pb::HostedLog {
                log_id: m.log_id().0.to_vec(),
                manifest: m.bytes().to_vec(),
                seq: FAKE_SEQ,
                heads: vec![],
                ..Default::default()
            })
            .collect();
        Ok(Response::new(pb::HelloResponse {
            node_id: self.node_id.clone(),
            epoch: FAKE_EPOCH.to_vec(),
            logs,
        }))
    }

    type PullStream = Pages;

    async fn pull(&self, request: Request<pb::PullRequest>) -> Result<Response<Pages>, Status> {
        let r = request.into_inner();
        self.pages(&r.log_id, r.after_seq)
    }

    type ReconcileStream = Pages;

    async fn reconcile(&self, request: Request<pb::ReconcileRequest>) -> Result<Response<Pages>, Status> {
        self.pages(&request.into_inner().log_id, 0)
    }

    async fn fetch(&self, _: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        // The parents the replica asks for never come.
        Ok(Response::new(pb::FetchResponse { entries: vec![] }))
    }

    type WatchStream = Notices;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Notices>, Status> {
        let Some(script) = self.watch.clone() else {
            // Open and silent: the session ends only because of what Pull sends.
            return Ok(Response::new(Box::pin(futures::stream::pending())));
        };
        // The caller's node id, from the node proof it attaches (`<node hex>.<secs>.<sig>`).
        let caller = request
            .metadata()
            .get("plait-node-proof")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split('.').next())
            .and_then(|hex| plait_core::PublicKey::from_hex(hex).ok())
            .ok_or_else(|| Status::unauthenticated("no node proof"))?;
        let mut message = caller.0.to_vec();
        message.extend_from_slice(&request.get_ref().challenge);
        let proof = script.signer.sign_statement("plait.v1 server proof", &message).to_hex();
        // The batch there is when the call comes, then each new one.
        let batches = futures::stream::unfold((script.next, true), |(mut next, first)| async move {
            if !first {
                next.changed().await.ok()?;
            }
            let batch = next.borrow_and_update().clone();
            Some((futures::stream::iter(batch.into_iter().map(Ok)), (next, false)))
        });
        let notices = futures::StreamExt::flatten(batches);
        let mut response = Response::new(Box::pin(notices) as Notices);
        response.metadata_mut().insert("plait-server-proof", proof.parse().unwrap());
        Ok(response)
    }

    async fn push(
        &self,
        _: Request<Streaming<pb::PushRequest>>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        Err(Status::unimplemented("a fake peer takes no pushes"))
    }
}

/// A fake peer serving on a loopback port until dropped.
struct Hostile {
    addr: SocketAddr,
    calls: Arc<Calls>,
    server: tokio::task::JoinHandle<()>,
    /// Dropped with the fake peer, which lets held sessions go.
    _release: watch::Sender<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn listen() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Serves a fake peer with its own node id (from `seed`) hosting `manifests`.
async fn serve(seed: u64, manifests: Vec<SignedManifest>, answer: Answer) -> Hostile {
    serve_holding(seed, manifests, answer, None).await
}

/// Serves a fake peer that holds sessions from number `hold_from` on at Hello.
async fn serve_holding(
    seed: u64,
    manifests: Vec<SignedManifest>,
    answer: Answer,
    hold_from: Option<u64>,
) -> Hostile {
    serve_with(seed, Arc::new(move || manifests.clone()), answer, hold_from, None).await
}

async fn serve_with(
    seed: u64,
    hosted: Hosted,
    answer: Answer,
    hold_from: Option<u64>,
    watch: Option<WatchScript>,
) -> Hostile {
    let calls = Arc::new(Calls::default());
    let (release_tx, release) = watch::channel(());
    let peer = FakePeer {
        node_id: key(1000 + seed).public().0.to_vec(),
        hosted,
        answer,
        calls: calls.clone(),
        hold_from,
        release,
        watch,
    };
    let (listener, addr) = listen().await;
    let counter = calls.clone();
    let incoming = futures::stream::unfold(listener, move |listener| {
        let calls = counter.clone();
        async move {
            let connection = listener.accept().await.map(|(stream, from)| {
                let session = calls.sessions.fetch_add(1, Ordering::SeqCst) + 1;
                calls.session_of.lock().unwrap().insert(from, session);
                stream
            });
            Some((connection, listener))
        }
    });
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(SyncServer::new(peer))
            .serve_with_incoming(incoming)
            .await;
    });
    Hostile { addr, calls, server, _release: release_tx }
}

/// A "peer" that answers every connection with bytes that are not HTTP/2.
async fn serve_garbage() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let (listener, addr) = listen().await;
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                for _ in 0..64 {
                    if stream.write_all(&garbage()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, server)
}

// ---------------------------------------------------------------------------------------
// The replica under attack.

/// Starts a real replica with `peers` and `extra` flags; a short anti-entropy pass so it
/// keeps coming back to its peers.
fn start_replica(dir: &Path, peers: &[SocketAddr], extra: &[&str]) -> Plaitd {
    let mut args: Vec<String> = vec!["--anti-entropy-ms".into(), "200".into()];
    for peer in peers {
        args.push("--peer".into());
        args.push(peer.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    std::fs::create_dir_all(dir).unwrap();
    tokio::task::block_in_place(|| Plaitd::start(&dir.join("data"), &args)).unwrap()
}

async fn status(endpoint: &str) -> pb::StatusResponse {
    let mut admin = pb::admin_client::AdminClient::new(channel(endpoint).await.unwrap());
    admin.status(pb::StatusRequest {}).await.unwrap().into_inner()
}

/// The replica's status of the peer at `addr`.
async fn peer_status(endpoint: &str, addr: SocketAddr) -> Option<pb::PeerStatus> {
    status(endpoint).await.peers.into_iter().find(|p| p.address == addr.to_string())
}

/// Waits until the replica reports an error for the peer at `addr` that names every one
/// of `words`; returns it.
async fn wait_peer_error(endpoint: &str, addr: SocketAddr, words: &[&str]) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut last = String::new();
    loop {
        if let Some(peer) = peer_status(endpoint, addr).await
            && !peer.last_error.is_empty()
        {
            last = peer.last_error;
            if words.iter().all(|w| last.contains(w)) {
                return last;
            }
        }
        assert!(Instant::now() < deadline, "no error naming {words:?} for peer {addr}; last error: {last:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `condition` until it holds; fails with `what` after the deadline.
async fn wait_for<F, Fut>(what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    plait_tests::wait_until(DEADLINE, what, condition).await.unwrap();
}

/// Waits until the replica has opened at least `n` sessions with each of `peers`: it
/// keeps coming back to a peer it cut off.
async fn wait_sessions(peers: &[&Hostile], n: u64) {
    let calls: Vec<Arc<Calls>> = peers.iter().map(|p| p.calls.clone()).collect();
    wait_for(&format!("{n} sessions with each hostile peer"), move || {
        let calls = calls.clone();
        async move { calls.iter().all(|c| c.sessions.load(Ordering::SeqCst) >= n) }
    })
    .await;
}

async fn log_info(endpoint: &str, log: &str) -> Option<pb::LogInfo> {
    let mut logs = pb::logs_client::LogsClient::new(channel(endpoint).await.unwrap());
    logs.get_log(pb::GetLogRequest { log: log.into() }).await.ok().map(|r| r.into_inner())
}

/// Waits until the replica hosts the log named `name`.
async fn wait_hosted(endpoint: &str, name: &str) {
    wait_for(&format!("the replica to host log {name}"), || async move {
        log_info(endpoint, name).await.is_some()
    })
    .await;
}

/// The replica still takes writes: an honest entry by alice for `log` is stored.
async fn assert_serves(endpoint: &str, log: LogId, name: &str) {
    let before = log_info(endpoint, name).await.unwrap().seq;
    let mut data = pb::data_client::DataClient::new(channel(endpoint).await.unwrap());
    let out = data
        .submit(pb::SubmitRequest { entries: vec![good(log, "honest")] })
        .await
        .expect("the replica keeps serving")
        .into_inner();
    assert_eq!(out.results[0].outcome, pb::SubmitOutcome::Stored as i32);
    assert_eq!(log_info(endpoint, name).await.unwrap().seq, before + 1);
}

/// The replica's peak resident memory so far (Linux `VmHWM`), in bytes: a peak, so a
/// spike between two samples is not missed.
fn peak_rss_bytes(replica: &Plaitd) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", replica.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// The replica's memory, peak and current, stayed under `RSS_BYTES_MAX` since it was
/// `rss_before` bytes.
fn assert_rss_bounded(replica: &Plaitd, rss_before: u64) {
    let (peak, now) = (peak_rss_bytes(replica), replica.rss_bytes().unwrap());
    assert!(
        peak < RSS_BYTES_MAX && now < RSS_BYTES_MAX,
        "the replica's RSS went from {} MiB to {} MiB, with a peak of {} MiB: over {} MiB",
        rss_before >> 20,
        now >> 20,
        peak >> 20,
        RSS_BYTES_MAX >> 20,
    );
}

/// SIGTERM, then the integrity check: every stored entry re-verifies, is on its log's
/// ACL and in its log; seqs, heads and views agree.
fn assert_clean(replica: &mut Plaitd) {
    tokio::task::block_in_place(|| {
        replica.terminate().unwrap();
        let (clean, report) = plait_tests::check(&replica.data_dir).unwrap();
        assert!(clean, "{report}");
    });
}

/// One hostile peer hosting `manifests` and answering pulls with `answer`, against a
/// fresh replica: waits for the replica to host the first log and to report an error
/// for the peer naming `words`; then checks that nothing from the peer was stored in any
/// of its logs, that the replica still takes honest writes, and that its data is clean.
async fn hostile_case(manifests: Vec<SignedManifest>, answer: Answer, words: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let fake = serve(1, manifests.clone(), answer).await;
    let mut replica = start_replica(dir.path(), &[fake.addr], &[]);
    let endpoint = replica.endpoint();
    let first = manifests[0].manifest().name.clone();
    wait_hosted(&endpoint, &first).await;
    let error = wait_peer_error(&endpoint, fake.addr, words).await;
    // It keeps coming back for more, and still gets nothing in.
    wait_sessions(&[&fake], 3).await;
    for m in &manifests {
        let info = log_info(&endpoint, &m.manifest().name).await.unwrap();
        assert_eq!((info.seq, info.pending), (0, 0), "nothing from the hostile peer is stored: {info:?}");
    }
    assert_serves(&endpoint, manifests[0].log_id(), &first).await;
    assert_clean(&mut replica);
    error
}

/// A pull answer that sends the same bad entries on every pull, numbered after the cursor.
fn always(entries: impl Fn(LogId) -> Vec<Vec<u8>> + Send + Sync + 'static) -> Answer {
    Arc::new(move |log, after| vec![page(after, entries(log))])
}

// ---------------------------------------------------------------------------------------
// One test per kind of bad entry a peer can send.

/// An entry whose signature does not verify is refused, and the error says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_sending_bad_signatures_is_cut_off() {
    let error = hostile_case(
        vec![manifest("hostile")],
        always(|log| vec![bad_signature(log)]),
        &["refuses", "bad signature", "cutting it off"],
    )
    .await;
    assert!(error.contains("nothing of it was stored"), "{error}");
}

/// An entry changed after signing (its op's value edited, still canonical CBOR) fails
/// its signature check and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_sending_tampered_entries_is_cut_off() {
    hostile_case(
        vec![manifest("hostile")],
        always(|log| vec![tampered(log)]),
        &["refuses", "bad signature", "cutting it off"],
    )
    .await;
}

/// A validly signed entry by a key that is not on the log's ACL is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_sending_writers_not_on_the_acl_is_cut_off() {
    let writer = mallory();
    let error = hostile_case(
        vec![manifest("hostile")],
        always(move |log| vec![signed(&writer, log, 1, vec![], put("k", b"mallory was here"))]),
        &["refuses", "not on the ACL", "cutting it off"],
    )
    .await;
    assert!(error.contains(&mallory().public().to_hex()), "the error names the writer: {error}");
}

/// Entries of another log, even one this replica hosts too, in a pull of one log are
/// refused: neither log gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_sending_entries_of_another_log_is_cut_off() {
    let (a, b) = (manifest("hostile"), manifest("other"));
    let (a_id, b_id) = (a.log_id(), b.log_id());
    let answer: Answer = Arc::new(move |pulled, after| {
        let other = if pulled == a_id { b_id } else { a_id };
        vec![page(after, vec![good(other, "wrong-log")])]
    });
    hostile_case(vec![a, b], answer, &["belongs to log", "nothing of it was stored", "cutting it off"]).await;
}

/// An entry over `ENTRY_BYTES_MAX` is refused by size before anything else is done with
/// it; a page over the session's message limit (64 MiB) is refused by the transport
/// before it is read, so neither costs the replica memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_sending_oversized_entries_and_messages_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let big_entry = serve(1, vec![manifest("hostile")], always(|log| vec![oversized(log)])).await;
    // 65 entries of 1 MiB and a bit: one message over 64 MiB.
    let big_message = serve(
        2,
        vec![manifest("hostile")],
        Arc::new(|_, after| vec![page(after, vec![vec![0xee; ENTRY_BYTES_MAX + 1024]; 65])]),
    )
    .await;
    let mut replica = start_replica(dir.path(), &[big_entry.addr, big_message.addr], &[]);
    let endpoint = replica.endpoint();
    wait_hosted(&endpoint, "hostile").await;
    let rss_before = replica.rss_bytes().unwrap();
    let limit = ENTRY_BYTES_MAX.to_string();
    wait_peer_error(&endpoint, big_entry.addr, &["refuses", "over the limit", &limit]).await;
    wait_peer_error(&endpoint, big_message.addr, &["too large"]).await;
    wait_sessions(&[&big_entry, &big_message], 3).await;
    assert_rss_bounded(&replica, rss_before);
    let info = log_info(&endpoint, "hostile").await.unwrap();
    assert_eq!((info.seq, info.pending), (0, 0), "nothing from the hostile peers is stored");
    assert_serves(&endpoint, manifest("hostile").log_id(), "hostile").await;
    assert_clean(&mut replica);
}

/// Bytes that are not CBOR are refused as entries; a peer that does not even speak
/// HTTP/2 is an error for that peer only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_sending_garbage_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let fake = serve(1, vec![manifest("hostile")], always(|_| vec![garbage()])).await;
    let (noise, noise_server) = serve_garbage().await;
    let mut replica = start_replica(dir.path(), &[fake.addr, noise], &[]);
    let endpoint = replica.endpoint();
    wait_hosted(&endpoint, "hostile").await;
    wait_peer_error(&endpoint, fake.addr, &["refuses", "not valid CBOR", "cutting it off"]).await;
    let noise_error = wait_peer_error(&endpoint, noise, &[]).await;
    assert!(
        noise_error.contains("cannot connect") || noise_error.contains("hello"),
        "the error says the peer could not be talked to: {noise_error}"
    );
    wait_sessions(&[&fake], 3).await;
    let info = log_info(&endpoint, "hostile").await.unwrap();
    assert_eq!((info.seq, info.pending), (0, 0), "nothing from the hostile peers is stored");
    assert_serves(&endpoint, manifest("hostile").log_id(), "hostile").await;
    assert_clean(&mut replica);
    noise_server.abort();
}

// ---------------------------------------------------------------------------------------
// Endless orphans, and pages bigger than asked for.

/// Every pull brings `per_page` new valid entries by alice, each naming a parent that
/// never exists (numbered by seq, so each pull's orphans are new).
fn endless_orphans(per_page: u64) -> Answer {
    Arc::new(move |log, after| {
        vec![page(after, (after + 1..=after + per_page).map(|n| orphan(log, n)).collect())]
    })
}

/// Starts a replica with `--peer-pending-max 50` pulling from `fake`, and waits until it
/// hosts the fake's log; returns it with its RSS then.
async fn start_against(dir: &Path, fake: &Hostile) -> (Plaitd, u64) {
    let pending_max = PEER_PENDING_MAX.to_string();
    let replica = start_replica(dir, &[fake.addr], &["--peer-pending-max", &pending_max]);
    wait_hosted(&replica.endpoint(), "hostile").await;
    let rss = replica.rss_bytes().unwrap();
    (replica, rss)
}

/// A peer that sends endless valid entries whose parents never exist is cut off at the
/// first such page: a pulled page comes in the peer's seq order, so every parent must be
/// held here or earlier in the page. None of the orphans is applied or even held as
/// pending, memory stays bounded, and the replica keeps serving.
/// (The fake holds the replica's next session at Hello so pending can be read still.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_sending_endless_orphans_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let fake = serve_holding(1, vec![manifest("hostile")], endless_orphans(ORPHANS_PER_PAGE), Some(2)).await;
    let (mut replica, rss_before) = start_against(dir.path(), &fake).await;
    let endpoint = replica.endpoint();
    wait_peer_error(&endpoint, fake.addr, &["names parent", "nothing of it was stored", "cutting it off"])
        .await;
    wait_sessions(&[&fake], 2).await;
    let info = log_info(&endpoint, "hostile").await.unwrap();
    assert_eq!((info.seq, info.pending), (0, 0), "no orphan is applied or held");
    assert_rss_bounded(&replica, rss_before);
    assert_serves(&endpoint, manifest("hostile").log_id(), "hostile").await;
    drop(fake);
    assert_clean(&mut replica);
}

/// The per-peer pending bound holds for as long as the peer keeps at it, not only within
/// one session: after the replica has come back to the endless peer five times (it
/// retries a cut-off peer after a backoff of at most 5 s), pending is still at most
/// `--peer-pending-max` plus one page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_pending_bound_holds_across_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let fake = serve(1, vec![manifest("hostile")], endless_orphans(ORPHANS_PER_PAGE)).await;
    let (mut replica, rss_before) = start_against(dir.path(), &fake).await;
    let endpoint = replica.endpoint();
    wait_sessions(&[&fake], 5).await;
    wait_peer_error(&endpoint, fake.addr, &["names parent"]).await;
    let info = log_info(&endpoint, "hostile").await.unwrap();
    assert_rss_bounded(&replica, rss_before);
    assert_eq!(info.seq, 0, "no orphan is applied");
    assert!(
        info.pending <= PEER_PENDING_MAX + ORPHANS_PER_PAGE,
        "after {} sessions with the endless peer, {} entries are pending: over the per-peer bound \
         {PEER_PENDING_MAX} plus one page of {ORPHANS_PER_PAGE}",
        fake.calls.sessions.load(Ordering::SeqCst),
        info.pending
    );
    assert_clean(&mut replica);
}

/// One page may not bring in more orphans than the page the replica asked for: a peer
/// answering a pull of 1024 entries with one page of 3072 orphans leaves at most
/// `--peer-pending-max` plus 1024 pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_page_larger_than_asked_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let per_page = 3 * PULL_PAGE_ENTRIES;
    let fake = serve_holding(1, vec![manifest("hostile")], endless_orphans(per_page), Some(2)).await;
    let (mut replica, _) = start_against(dir.path(), &fake).await;
    let endpoint = replica.endpoint();
    wait_peer_error(&endpoint, fake.addr, &["cutting it off"]).await;
    wait_sessions(&[&fake], 2).await;
    let info = log_info(&endpoint, "hostile").await.unwrap();
    assert_eq!(info.seq, 0, "no orphan is applied");
    assert!(
        info.pending <= PEER_PENDING_MAX + PULL_PAGE_ENTRIES,
        "one page of {per_page} orphans, where {PULL_PAGE_ENTRIES} were asked for, left {} pending",
        info.pending
    );
    drop(fake);
    assert_clean(&mut replica);
}

/// One 60 MiB page of small valid entries (one 187-byte orphan, repeated) is refused by
/// the session's message limit, which is the size of a page an honest peer sends, so it
/// never costs the replica more memory than an honest page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_page_of_many_small_entries_keeps_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let one = orphan(manifest("hostile").log_id(), 1);
    let per_page = 60 * 1024 * 1024 / (one.len() + 8);
    let answer: Answer = Arc::new(move |_, after| vec![page(after, vec![one.clone(); per_page])]);
    let fake = serve_holding(1, vec![manifest("hostile")], answer, Some(2)).await;
    let (mut replica, rss_before) = start_against(dir.path(), &fake).await;
    let endpoint = replica.endpoint();
    wait_peer_error(&endpoint, fake.addr, &["too large"]).await;
    wait_sessions(&[&fake], 2).await;
    let info = log_info(&endpoint, "hostile").await.unwrap();
    assert_eq!(info.seq, 0, "no orphan is applied");
    assert_rss_bounded(&replica, rss_before);
    drop(fake);
    assert_clean(&mut replica);
}

// ---------------------------------------------------------------------------------------
// Honest traffic under attack.

/// Every kind of bad page, one after another, on every pull.
fn every_kind_of_bad() -> Answer {
    let mallory = mallory();
    // The cursor only moves on pages that verify, so count pulls to change the kind.
    let pulls = AtomicU64::new(0);
    Arc::new(move |log, after| {
        let n = pulls.fetch_add(1, Ordering::SeqCst);
        let entries = match n % 6 {
            0 => vec![bad_signature(log)],
            1 => vec![tampered(log)],
            2 => vec![signed(&mallory, log, 1, vec![], put("k", b"v"))],
            3 => vec![good(LogId([9; 32]), "wrong-log")],
            4 => vec![garbage()],
            _ => (0..ORPHANS_PER_PAGE).map(|i| orphan(log, n * 100 + i)).collect(),
        };
        vec![page(after, entries)]
    })
}

/// While a hostile peer keeps sending every kind of bad entry, entries written on an
/// honest peer keep replicating to the replica, and the honest peer's session has no
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_peer_replicates_while_hostile_peer_misbehaves() {
    let dir = tempfile::tempdir().unwrap();
    let honest = start_replica(&dir.path().join("honest"), &[], &[]);
    let fake = serve(1, vec![manifest("hostile")], every_kind_of_bad()).await;
    let mut replica = start_replica(&dir.path().join("replica"), &[honest.grpc, fake.addr], &[]);
    let endpoint = replica.endpoint();
    let ch = channel(&honest.endpoint()).await.unwrap();
    pb::logs_client::LogsClient::new(ch.clone())
        .create_log(pb::CreateLogRequest {
            name: "honest".into(),
            r#type: pb::LogType::Kv as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    wait_hosted(&endpoint, "honest").await;
    wait_hosted(&endpoint, "hostile").await;

    let mut data = pb::data_client::DataClient::new(ch);
    for round in 0..10 {
        let sessions_before = fake.calls.sessions.load(Ordering::SeqCst);
        for i in 0..20 {
            let key = format!("round-{round}-{i}").into_bytes();
            data.put(pb::PutRequest { log: "honest".into(), key: key.clone(), value: key, concern: None })
                .await
                .unwrap();
        }
        let want = (round + 1) * 20;
        wait_for("honest writes to replicate", || {
            let e = endpoint.clone();
            async move { log_info(&e, "honest").await.is_some_and(|i| i.seq == want) }
        })
        .await;
        // The hostile peer is being dealt with all along, not only before or after.
        if round % 3 == 0 {
            wait_sessions(&[&fake], sessions_before + 1).await;
        }
    }
    let ours = plait_tests::cluster::state(&endpoint, &[]).await.unwrap();
    let theirs = plait_tests::cluster::state(&honest.endpoint(), &[]).await.unwrap();
    assert_eq!(ours["honest"], theirs["honest"], "the replica holds exactly the honest peer's log");
    assert_eq!(ours["honest"].rows.len(), 200);
    assert_eq!(ours["hostile"].ops, 0, "nothing of the hostile peer's log was applied");
    let honest_status = peer_status(&endpoint, honest.grpc).await.unwrap();
    assert!(honest_status.connected && honest_status.last_error.is_empty(), "{honest_status:?}");
    wait_peer_error(&endpoint, fake.addr, &["cutting it off"]).await;
    assert!(fake.calls.sessions.load(Ordering::SeqCst) >= 4, "the hostile peer was cut off again and again");
    assert_clean(&mut replica);
}

// ---------------------------------------------------------------------------------------
// Push.

async fn push_client(endpoint: &str) -> pb::sync_client::SyncClient<Channel> {
    pb::sync_client::SyncClient::new(channel(endpoint).await.unwrap())
}

/// Pushes `messages` as one stream.
async fn push(endpoint: &str, messages: Vec<Vec<Vec<u8>>>) -> Result<pb::PushResponse, Status> {
    let requests: Vec<pb::PushRequest> =
        messages.into_iter().map(|entries| pb::PushRequest { entries, from: None }).collect();
    push_client(endpoint).await.push(futures::stream::iter(requests)).await.map(Response::into_inner)
}

fn expect(result: Result<pb::PushResponse, Status>, code: Code, words: &[&str]) {
    let status = result.expect_err("the push should fail");
    assert_eq!(status.code(), code, "{status:?}");
    for w in words {
        assert!(status.message().contains(w), "message {:?} should mention {w:?}", status.message());
    }
}

/// Push, the way an edge node sends entries in, refuses each kind of bad entry with its
/// own status code and a message naming the entry; a push flooding pending entries is cut
/// off; none of it is stored and honest pushes still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_refuses_bad_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut replica = start_replica(dir.path(), &[], &[]);
    let endpoint = replica.endpoint();
    let mut logs = pb::logs_client::LogsClient::new(channel(&endpoint).await.unwrap());
    let info = logs
        .create_log(pb::CreateLogRequest {
            signed_manifest: manifest("pushed").bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let log = LogId::from_slice(&info.log_id).unwrap();
    assert_eq!(log, manifest("pushed").log_id());

    expect(
        push(&endpoint, vec![vec![garbage()]]).await,
        Code::InvalidArgument,
        &["entries[0]", "not valid CBOR"],
    );
    expect(
        push(&endpoint, vec![vec![good(log, "a"), bad_signature(log)]]).await,
        Code::InvalidArgument,
        &["entries[1]", "bad signature"],
    );
    expect(
        push(&endpoint, vec![vec![tampered(log)]]).await,
        Code::InvalidArgument,
        &["entries[0]", "bad signature"],
    );
    expect(
        push(&endpoint, vec![vec![signed(&mallory(), log, 1, vec![], put("k", b"v"))]]).await,
        Code::PermissionDenied,
        &["entries[0]", "not on the ACL"],
    );
    expect(
        push(&endpoint, vec![vec![good(LogId([9; 32]), "a")]]).await,
        Code::NotFound,
        &["not hosted on this replica"],
    );
    expect(
        push(&endpoint, vec![vec![oversized(log)]]).await,
        Code::InvalidArgument,
        &["entries[0]", "over the limit"],
    );
    expect(
        push(&endpoint, vec![vec![garbage(); PUSH_ENTRIES_MAX + 1]]).await,
        Code::InvalidArgument,
        &["at most 1024 entries"],
    );
    // One message over the replica's 16 MiB message limit is refused before it is read.
    expect(
        push(&endpoint, vec![vec![vec![0xee; 1024 * 1024]; 17]]).await,
        Code::OutOfRange,
        &["message length too large"],
    );
    let info = log_info(&endpoint, "pushed").await.unwrap();
    assert_eq!((info.seq, info.pending), (0, 0), "no refused push stored anything");

    // A flood of valid orphans, in messages of 1000: cut off past PUSH_PENDING_MAX.
    let orphans: Vec<Vec<u8>> = (0..=PUSH_PENDING_MAX as u64).map(|n| orphan(log, n)).collect();
    let messages: Vec<Vec<Vec<u8>>> = orphans.chunks(1000).map(<[Vec<u8>]>::to_vec).collect();
    expect(push(&endpoint, messages).await, Code::ResourceExhausted, &["cut off", "parents"]);
    let info = log_info(&endpoint, "pushed").await.unwrap();
    assert_eq!(info.seq, 0, "no orphan is applied");
    assert!(info.pending <= PUSH_PENDING_MAX as u64 + 1, "pending stays bounded: {info:?}");

    // Honest pushes still work: a chain of three.
    let first = plait_core::DecodedEntry::decode(&good(log, "chain")).unwrap().hash();
    let second = signed(&alice(), log, 2, vec![first], put("chain", b"2"));
    let second_hash = plait_core::DecodedEntry::decode(&second).unwrap().hash();
    let third = signed(&alice(), log, 3, vec![second_hash], put("chain", b"3"));
    let out = push(&endpoint, vec![vec![good(log, "chain"), second], vec![third]]).await.unwrap();
    assert_eq!((out.stored, out.duplicate, out.pending), (3, 0, 0));
    assert_eq!(log_info(&endpoint, "pushed").await.unwrap().seq, 3);
    assert_clean(&mut replica);
}

// ---------------------------------------------------------------------------------------
// Logs without end.

/// A kv log by alice whose manifest is as big as the format allows (64 options of
/// 1 KiB keys and values: about 130 KiB), so every log it makes a replica host costs that
/// replica as much as one log can.
fn big_manifest(name: &str) -> SignedManifest {
    let alice = alice();
    let options = (0..plait_core::limits::OPTIONS_MAX)
        .map(|i| {
            let width = plait_core::limits::OPTION_BYTES_MAX - 4;
            (format!("{i:04}{}", "k".repeat(width)), "v".repeat(plait_core::limits::OPTION_BYTES_MAX))
        })
        .collect();
    Manifest {
        name: name.into(),
        log_type: LogType::Kv,
        writers: Writers::keys(vec![alice.public()]),
        created_by: alice.public(),
        created_at_lamport: 1,
        options,
    }
    .sign(&alice)
    .unwrap()
}

/// A peer whose every Hello names 50 logs the replica has never seen (400 in all), with
/// manifests as big as the format allows, does not take the replica down: its memory
/// stays bounded, its own Logs.ListLogs keeps answering, and an honest replica pulling
/// from it keeps getting new writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_naming_endless_logs_keeps_the_replica_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let per_hello = 50;
    let named = AtomicU64::new(0);
    let hosted: Hosted = Arc::new(move || {
        let first = named.fetch_add(per_hello, Ordering::SeqCst) % FLOOD_LOGS;
        (first..first + per_hello).map(|i| big_manifest(&format!("flood-{i}"))).collect()
    });
    let fake = serve_with(1, hosted, Arc::new(|_, _| vec![]), None, None).await;
    let mut replica = start_replica(&dir.path().join("replica"), &[fake.addr], &[]);
    let rss_before = replica.rss_bytes().unwrap();
    let endpoint = replica.endpoint();
    let honest = start_replica(&dir.path().join("honest"), &[replica.grpc], &[]);
    let mut logs = pb::logs_client::LogsClient::new(channel(&endpoint).await.unwrap());
    logs.create_log(pb::CreateLogRequest {
        name: "honest".into(),
        r#type: pb::LogType::Kv as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    wait_hosted(&honest.endpoint(), "honest").await;
    wait_hosted(&endpoint, &format!("flood-{}", FLOOD_LOGS - 1)).await;

    let mut data = pb::data_client::DataClient::new(channel(&endpoint).await.unwrap());
    data.put(pb::PutRequest {
        log: "honest".into(),
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        concern: None,
    })
    .await
    .unwrap();
    let replicated = plait_tests::wait_until(DEADLINE, "the write to replicate", || {
        let e = honest.endpoint();
        async move { log_info(&e, "honest").await.is_some_and(|i| i.seq == 1) }
    })
    .await;
    let listed = logs.list_logs(pb::ListLogsRequest {}).await.map(|r| r.into_inner().logs.len());
    let (peak, now) = (peak_rss_bytes(&replica), replica.rss_bytes().unwrap());
    let bounded = peak < RSS_BYTES_MAX;
    assert!(
        replicated.is_ok() && listed.is_ok() && bounded,
        "after a peer made the replica host {FLOOD_LOGS} logs with big manifests:\n\
         honest replication: {replicated:?}\n\
         ListLogs: {listed:?}\n\
         RSS: {} MiB before, {} MiB now, {} MiB at the peak (bound {} MiB)",
        rss_before >> 20,
        now >> 20,
        peak >> 20,
        RSS_BYTES_MAX >> 20
    );
    assert_clean(&mut replica);
}

/// A peer counts as holding this replica's writes only when it proves its node id. A fake
/// peer whose Watch notice says it holds a waiting write, with an answer to the
/// challenge signed by another key than the node id its Hello named, is cut off with an
/// error that says so, and a write waiting for two replicas times out; the same notices
/// with an answer signed by its own key meet the same write concern at once (so the
/// refusal is the proof's, not a write concern that never counts notices). Both replicas
/// keep taking writes and are clean afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_from_a_peer_that_cannot_prove_its_node_id_do_not_count() {
    for honest in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (named, next) = watch::channel(Vec::new());
        // The fake's node id is key(1001)'s, as its Hello says.
        let signer = if honest { key(1001) } else { key(7) };
        let hosted: Hosted = Arc::new(Vec::new);
        let fake =
            serve_with(1, hosted, Arc::new(|_, _| vec![]), None, Some(WatchScript { signer, next })).await;
        let mut replica = start_replica(dir.path(), &[fake.addr], &[]);
        let endpoint = replica.endpoint();
        let mut logs = pb::logs_client::LogsClient::new(channel(&endpoint).await.unwrap());
        let info = logs
            .create_log(pb::CreateLogRequest {
                name: "own".into(),
                r#type: pb::LogType::Kv as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let log = LogId::from_slice(&info.log_id).unwrap();
        if !honest {
            wait_peer_error(&endpoint, fake.addr, &["does not prove node id"]).await;
        }
        let data = pb::data_client::DataClient::new(channel(&endpoint).await.unwrap());
        let put = |key: &str, replicas: u32| pb::PutRequest {
            log: "own".into(),
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            concern: Some(pb::WriteConcern { replicas, timeout_ms: if honest { 10_000 } else { 1_000 } }),
        };
        // The write is stored at seq 1 and waits; only then does the fake say it holds it
        // (a hold past what the replica stored would not count either way).
        let waiting = tokio::spawn({
            let (mut data, request) = (data.clone(), put("two", 2));
            async move { data.put(request).await }
        });
        wait_for("the write to be stored", || {
            let endpoint = endpoint.clone();
            async move { log_info(&endpoint, "own").await.is_some_and(|i| i.seq == 1) }
        })
        .await;
        named.send_replace(vec![pb::WatchNotice { held: 1, ..fake_notice(log, 0) }]);
        let waited = waiting.await.unwrap();
        if honest {
            waited.expect("a proven peer's hold notice meets the write concern");
        } else {
            let err = waited.expect_err("an unproven peer's hold notice must not count");
            assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
        }
        let mut data = data;
        data.put(put("one", 1)).await.expect("the replica keeps taking writes");
        assert_clean(&mut replica);
    }
}

/// A fake peer's notice that its seq of `log` is `seq`.
fn fake_notice(log: LogId, seq: u64) -> pb::WatchNotice {
    pb::WatchNotice { log_id: log.0.to_vec(), seq, epoch: FAKE_EPOCH.to_vec(), ..Default::default() }
}

/// Listens to the replica at `endpoint` as the node `key`, so it reports holds to that
/// node and takes entries sent along with that node's notices: a Watch with a challenge
/// and the node's proof. The stream must be kept open.
async fn listen_as(endpoint: &str, key: &WriterKey) -> Streaming<pb::WatchNotice> {
    let node_id = status(endpoint).await.node_id;
    let mut sync = pb::sync_client::SyncClient::new(channel(endpoint).await.unwrap());
    let identity = pb::PeerIdentity { node_id: key.public().0.to_vec(), epoch: FAKE_EPOCH.to_vec() };
    let mut request =
        Request::new(pb::WatchRequest { from: Some(identity), challenge: vec![5; 32], entries: false });
    request
        .metadata_mut()
        .insert("plait-node-proof", crate::support::node_proof(key, &node_id).parse().unwrap());
    sync.watch(request).await.unwrap().into_inner()
}

/// Entries sent along with a Watch notice are checked as a pulled page is. Notices whose
/// entries are numbered from 0, wrap past u64::MAX or come out of order (for a second log)
/// are not stored from and do not end the session; the notice after them, carrying an
/// entry with a bad signature right after the one good entry the replica pulled, cuts
/// the peer off with an error that says why. Nothing of the notices is stored (both logs
/// stay at seq 1), and the replica keeps serving and is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_sending_bad_entries_in_notices_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (carried, other) = (manifest("carried"), manifest("other"));
    let (log, other_log) = (carried.log_id(), other.log_id());
    // The first pull of each log brings one good entry; every later one brings nothing.
    let answer: Answer =
        Arc::new(move |log, after| if after == 0 { vec![page(0, vec![good(log, "first")])] } else { vec![] });
    let (notices, next) = watch::channel(Vec::new());
    let fake = serve_with(
        1,
        Arc::new(move || vec![carried.clone(), other.clone()]),
        answer,
        None,
        Some(WatchScript { signer: key(1001), next }),
    )
    .await;
    let mut replica = start_replica(dir.path(), &[fake.addr], &[]);
    let endpoint = replica.endpoint();
    let _listening = listen_as(&endpoint, &key(1001)).await;
    wait_for("the replica to pull the good entries", || {
        let endpoint = endpoint.clone();
        async move {
            log_info(&endpoint, "carried").await.is_some_and(|i| i.seq == 1)
                && log_info(&endpoint, "other").await.is_some_and(|i| i.seq == 1)
        }
    })
    .await;
    let carrying = |log: LogId, seq: u64, seqs: &[u64], entry: Vec<u8>| pb::WatchNotice {
        entries: seqs.iter().map(|&seq| pb::SeqEntry { seq, entry: entry.clone() }).collect(),
        ..fake_notice(log, seq)
    };
    notices.send_replace(vec![
        carrying(other_log, 0, &[0], good(other_log, "numbered 0")),
        carrying(other_log, u64::MAX, &[u64::MAX, 0], good(other_log, "wraps")),
        carrying(other_log, 3, &[3, 2], good(other_log, "out of order")),
        carrying(log, 2, &[2], bad_signature(log)),
    ]);
    wait_peer_error(&endpoint, fake.addr, &["refuses", "signature"]).await;
    for name in ["carried", "other"] {
        let info = log_info(&endpoint, name).await.unwrap();
        assert_eq!((info.seq, info.pending), (1, 0), "nothing of the notices is stored in {name}: {info:?}");
    }
    assert_serves(&endpoint, log, "carried").await;
    assert_clean(&mut replica);
}
