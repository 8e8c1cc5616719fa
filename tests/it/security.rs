//! Security against real plaitd processes with TLS and authentication on: who may call
//! what, what a refused call leaves behind (nothing), certificates that must be refused,
//! rotation without a restart, peer identity, and the listener's bounds.

// Certificates are judged by the real clock of the plaitd processes, so they are issued
// against the real clock too.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use plait_pki::{Ca, CertSpec, Validity};
use plait_proto::pb;
use plait_tests::{Plaitd, check, wait_until};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A CA and the files a secured replica and its callers use.
struct Pki {
    dir: PathBuf,
    ca: Ca,
}

/// A certificate and key written to files.
#[derive(Clone)]
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

impl Pair {
    fn identity(&self) -> Identity {
        Identity::from_pem(std::fs::read(&self.cert).unwrap(), std::fs::read(&self.key).unwrap())
    }
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let ca = Ca::generate("plait test CA", Validity::from_now(SystemTime::now(), 30 * DAY)).unwrap();
        std::fs::write(dir.join("ca.crt"), ca.cert_pem()).unwrap();
        Pki { dir: dir.to_owned(), ca }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_path()).unwrap()
    }

    fn issue(&self, file: &str, spec: CertSpec) -> Pair {
        let issued = self.ca.issue(&spec).unwrap();
        let pair =
            Pair { cert: self.dir.join(format!("{file}.crt")), key: self.dir.join(format!("{file}.key")) };
        std::fs::write(&pair.cert, issued.cert_pem()).unwrap();
        std::fs::write(&pair.key, issued.key_pem()).unwrap();
        pair
    }

    /// A replica certificate: serves 127.0.0.1 and localhost, group plait:peers.
    fn replica(&self, file: &str) -> Pair {
        let spec = CertSpec::new(file, Validity::from_now(SystemTime::now(), DAY))
            .group("plait:peers")
            .ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .dns("localhost");
        self.issue(file, spec)
    }

    fn client(&self, name: &str, groups: &[&str]) -> Pair {
        let mut spec = CertSpec::new(name, Validity::from_now(SystemTime::now(), DAY)).client_only();
        for g in groups {
            spec = spec.group(*g);
        }
        self.issue(name, spec)
    }
}

/// Tokens of every role, for the role matrix, and the auth file naming them.
const TOKENS: &[(&str, &str, &[&str])] = &[
    ("reader", "tok-reader", &["read"]),
    ("writer", "tok-writer", &["read", "write:orders-*"]),
    ("logadmin", "tok-logadmin", &["log-admin"]),
    ("clusteradmin", "tok-clusteradmin", &["cluster-admin"]),
    ("peer", "tok-peer", &["peer"]),
    ("nobody", "tok-nobody", &[]),
];

fn auth_file(dir: &Path) -> PathBuf {
    let mut text = String::from("tokens:\n");
    for (name, token, roles) in TOKENS {
        let roles: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
        text.push_str(&format!(
            "  - name: {name}\n    hash: blake3:{}\n    roles: [{}]\n",
            blake3::hash(token.as_bytes()).to_hex(),
            roles.join(", ")
        ));
    }
    let path = dir.join("auth.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A replica with TLS, client certificates and the tokens above.
fn secured(pki: &Pki, data: &Path, name: &str, extra: &[&str]) -> Plaitd {
    let server = pki.replica(name);
    let auth = auth_file(&pki.dir);
    let mut args = vec![
        "--tls-cert".to_owned(),
        server.cert.display().to_string(),
        "--tls-key".to_owned(),
        server.key.display().to_string(),
        "--tls-client-ca".to_owned(),
        pki.ca_path().display().to_string(),
        "--auth-file".to_owned(),
        auth.display().to_string(),
        "--security-reload-ms".to_owned(),
        "200".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Plaitd::start(data, &args).unwrap()
}

fn https(node: &Plaitd) -> String {
    format!("https://{}", node.grpc)
}

async fn tls_channel(
    addr: &str,
    ca: &[u8],
    identity: Option<Identity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(addr.to_owned())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn put(log: &str, key: &[u8]) -> pb::PutRequest {
    pb::PutRequest { log: log.to_owned(), key: key.to_vec(), value: b"v".to_vec(), concern: None }
}

fn manifest_request(name: &str) -> pb::CreateLogRequest {
    pb::CreateLogRequest { name: name.to_owned(), r#type: pb::LogType::Kv as i32, ..Default::default() }
}

/// The logs an admin certificate sees, to prove a refused call changed nothing.
async fn log_names(channel: &Channel) -> Vec<String> {
    let mut logs = pb::logs_client::LogsClient::new(channel.clone());
    let mut names: Vec<String> = logs
        .list_logs(pb::ListLogsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .logs
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    names
}

/// With security on, a caller with no credentials is refused every call but the health
/// check with UNAUTHENTICATED (cases 1, 4, 5, 10: drop, recreate, backup, SetMembers,
/// Drain, CreateLog), plaintext gets no answer at all, and nothing changes: the logs are
/// as they were, the data directory checks clean, and the next valid write works.
#[tokio::test(flavor = "multi_thread")]
async fn anonymous_callers_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let mut node = secured(&pki, &dir.path().join("n0"), "n0", &[]);
    let admin_pair = pki.client("operator", &["plait:admins"]);
    let admin = tls_channel(&https(&node), &pki.ca_pem(), Some(admin_pair.identity())).await.unwrap();
    let mut logs = pb::logs_client::LogsClient::new(admin.clone());
    logs.create_log(manifest_request("orders")).await.unwrap();
    let mut data = pb::data_client::DataClient::new(admin.clone());
    data.put(put("orders", b"k")).await.unwrap();
    let before = log_names(&admin).await;

    let anonymous = tls_channel(&https(&node), &pki.ca_pem(), None).await.unwrap();
    let mut a_logs = pb::logs_client::LogsClient::new(anonymous.clone());
    let mut a_admin = pb::admin_client::AdminClient::new(anonymous.clone());
    let mut a_data = pb::data_client::DataClient::new(anonymous.clone());
    let codes = [
        a_logs.drop_log(pb::DropLogRequest { log: "orders".into() }).await.map(|_| ()),
        a_logs.create_log(manifest_request("squat")).await.map(|_| ()),
        a_logs.list_logs(pb::ListLogsRequest::default()).await.map(|_| ()),
        a_admin
            .backup(pb::BackupRequest {
                destination: "file:///tmp/x".into(),
                retain_full: 1,
                ..Default::default()
            })
            .await
            .map(|_| ()),
        a_admin
            .set_members(pb::SetMembersRequest { generation: u64::MAX, members: vec!["evil:1".into()] })
            .await
            .map(|_| ()),
        a_admin.drain(pb::DrainRequest { timeout_ms: 1, ..Default::default() }).await.map(|_| ()),
        a_admin.status(pb::StatusRequest {}).await.map(|_| ()),
        a_data
            .put(pb::PutRequest {
                log: "orders".into(),
                key: b"k".to_vec(),
                value: b"x".to_vec(),
                concern: None,
            })
            .await
            .map(|_| ()),
    ];
    for (i, result) in codes.iter().enumerate() {
        assert_eq!(result.as_ref().unwrap_err().code(), Code::Unauthenticated, "call {i}: {result:?}");
    }
    // A token nobody issued is refused the same way.
    let err = a_logs.list_logs(with_token(pb::ListLogsRequest::default(), Some("guess"))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // The health check stays open (probes carry no credentials).
    let mut health = tonic_health::pb::health_client::HealthClient::new(anonymous.clone());
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();

    // Plaintext to the TLS listener gets no gRPC answer.
    let plain =
        Endpoint::from_shared(format!("http://{}", node.grpc)).unwrap().timeout(Duration::from_secs(5));
    if let Ok(channel) = plain.connect().await {
        let err = pb::logs_client::LogsClient::new(channel)
            .list_logs(pb::ListLogsRequest::default())
            .await
            .unwrap_err();
        assert_ne!(err.code(), Code::Ok);
    }

    // Nothing changed, and the replica is not draining.
    assert_eq!(log_names(&admin).await, before);
    let status = pb::admin_client::AdminClient::new(admin.clone())
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.draining && status.members_generation == 0 && status.peers.is_empty(), "{status:?}");
    assert_eq!(status.principal, "operator");
    assert_eq!(status.authenticated_by, "certificate");
    data.put(put("orders", b"k2")).await.unwrap();
    node.terminate().unwrap();
    let (clean, report) = check(&node.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// Every role reaches exactly its methods: the matrix of role × RPC, each cell either
/// passing authorization (any code but UNAUTHENTICATED/PERMISSION_DENIED) or refused with
/// PERMISSION_DENIED; and a write grant covers only the logs its pattern names (case 2).
#[tokio::test(flavor = "multi_thread")]
async fn roles_reach_exactly_their_methods() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let mut node = secured(&pki, &dir.path().join("n0"), "n0", &[]);
    let channel = tls_channel(&https(&node), &pki.ca_pem(), None).await.unwrap();
    let admin =
        tls_channel(&https(&node), &pki.ca_pem(), Some(pki.client("op", &["plait:admins"]).identity()))
            .await
            .unwrap();
    pb::logs_client::LogsClient::new(admin.clone()).create_log(manifest_request("orders-eu")).await.unwrap();
    pb::logs_client::LogsClient::new(admin.clone()).create_log(manifest_request("users")).await.unwrap();

    // (method, the role it needs)
    async fn call(channel: &Channel, method: &str, token: &str) -> Result<(), tonic::Status> {
        let t = Some(token);
        let mut logs = pb::logs_client::LogsClient::new(channel.clone());
        let mut data = pb::data_client::DataClient::new(channel.clone());
        let mut admin = pb::admin_client::AdminClient::new(channel.clone());
        let mut sync = pb::sync_client::SyncClient::new(channel.clone());
        match method {
            "ListLogs" => logs.list_logs(with_token(pb::ListLogsRequest::default(), t)).await.map(|_| ()),
            "Get" => data
                .get(with_token(
                    pb::GetRequest { log: "orders-eu".into(), key: b"k".to_vec(), as_of: None },
                    t,
                ))
                .await
                .map(|_| ()),
            "Put" => data.put(with_token(put("orders-eu", b"k"), t)).await.map(|_| ()),
            "CreateLog" => {
                logs.create_log(with_token(manifest_request(&format!("new-{token}")), t)).await.map(|_| ())
            }
            "Checkpoint" => admin
                .checkpoint(with_token(pb::CheckpointRequest { log: "orders-eu".into() }, t))
                .await
                .map(|_| ()),
            "Hello" => sync.hello(with_token(pb::HelloRequest { from: None }, t)).await.map(|_| ()),
            "Status" => admin.status(with_token(pb::StatusRequest {}, t)).await.map(|_| ()),
            other => panic!("no such method in the matrix: {other}"),
        }
    }
    let needs = [
        ("ListLogs", "read"),
        ("Get", "read"),
        ("Put", "write"),
        ("CreateLog", "log-admin"),
        ("Checkpoint", "cluster-admin"),
        ("Hello", "peer"),
        ("Status", "any"),
    ];
    for (name, token, roles) in TOKENS {
        for (method, need) in needs {
            let granted = need == "any"
                || roles.iter().any(|r| *r == need || (need == "write" && r.starts_with("write")));
            let result = call(&channel, method, token).await;
            match result {
                Err(s) if s.code() == Code::PermissionDenied => {
                    assert!(!granted, "{name} was refused {method}: {s:?}")
                }
                Err(s) if s.code() == Code::Unauthenticated => panic!("{name} is unknown? {s:?}"),
                _ => assert!(granted, "{name} was let through to {method}: {result:?}"),
            }
        }
    }

    // The writer's grant is orders-*: users is refused, and nothing is stored there.
    let mut data = pb::data_client::DataClient::new(channel.clone());
    let err = data.put(with_token(put("users", b"k"), Some("tok-writer"))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = data
        .write(with_token(
            pb::WriteRequest {
                ops: vec![
                    pb::RoutedOp {
                        log: "orders-eu".into(),
                        op: Some(pb::Op {
                            op: Some(pb::op::Op::Put(pb::KvPut { key: b"a".to_vec(), value: b"1".to_vec() })),
                        }),
                    },
                    pb::RoutedOp {
                        log: "users".into(),
                        op: Some(pb::Op {
                            op: Some(pb::op::Op::Put(pb::KvPut { key: b"a".to_vec(), value: b"1".to_vec() })),
                        }),
                    },
                ],
                concern: None,
            },
            Some("tok-writer"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let mut admin_logs = pb::logs_client::LogsClient::new(admin.clone());
    let users = admin_logs.get_log(pb::GetLogRequest { log: "users".into() }).await.unwrap().into_inner();
    assert_eq!(users.seq, 0, "a refused write stored something");

    // Status says who each caller is.
    let status = pb::admin_client::AdminClient::new(channel.clone())
        .status(with_token(pb::StatusRequest {}, Some("tok-writer")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.principal, "writer");
    assert_eq!(status.authenticated_by, "token");
    assert_eq!(status.roles, vec!["read".to_owned(), "write:orders-*".to_owned()]);
    let nobody = pb::admin_client::AdminClient::new(channel.clone())
        .status(with_token(pb::StatusRequest {}, Some("tok-nobody")))
        .await
        .unwrap()
        .into_inner();
    assert!(nobody.logs.is_empty() && nobody.peers.is_empty(), "a caller with no roles sees the logs");

    // After the refusals the writer's next write goes on as normal.
    pb::data_client::DataClient::new(channel.clone())
        .put(with_token(put("orders-eu", b"after"), Some("tok-writer")))
        .await
        .unwrap();
    node.terminate().unwrap();
    let (clean, report) = check(&node.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// Client certificates from another CA, expired, or not yet valid are refused at the
/// handshake; the replica keeps serving good callers.
#[tokio::test(flavor = "multi_thread")]
async fn bad_client_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let node = secured(&pki, &dir.path().join("n0"), "n0", &[]);
    let other = Pki::new(&dir.path().join("other"));
    let now = SystemTime::now();
    let expired = pki.issue(
        "expired",
        CertSpec::new("expired", Validity { not_before: now - 2 * DAY, not_after: now - DAY })
            .group("plait:admins")
            .client_only(),
    );
    let future = pki.issue(
        "future",
        CertSpec::new("future", Validity { not_before: now + DAY, not_after: now + 2 * DAY })
            .group("plait:admins")
            .client_only(),
    );
    let foreign = other.client("foreign", &["plait:admins"]);
    for (what, pair) in [("another CA", foreign), ("expired", expired), ("not yet valid", future)] {
        let result = match tls_channel(&https(&node), &pki.ca_pem(), Some(pair.identity())).await {
            Err(e) => Err(e.to_string()),
            Ok(channel) => pb::logs_client::LogsClient::new(channel)
                .list_logs(pb::ListLogsRequest::default())
                .await
                .map(|_| ())
                .map_err(|s| s.to_string()),
        };
        assert!(result.is_err(), "a client certificate from {what} was accepted");
    }
    // A client that does not trust the replica's CA refuses the replica.
    assert!(
        match tls_channel(&https(&node), &other.ca_pem(), None).await {
            Err(_) => true,
            Ok(channel) =>
                pb::admin_client::AdminClient::new(channel).status(pb::StatusRequest {}).await.is_err(),
        },
        "a client trusting another CA talked to the replica"
    );
    let good =
        tls_channel(&https(&node), &pki.ca_pem(), Some(pki.client("op", &["plait:admins"]).identity()))
            .await
            .unwrap();
    pb::logs_client::LogsClient::new(good).list_logs(pb::ListLogsRequest::default()).await.unwrap();
}

/// The server certificate is replaced in place (as cert-manager does) and new
/// connections get the new one without a restart: a client trusting only the new CA
/// connects once the files change.
#[tokio::test(flavor = "multi_thread")]
async fn certificate_rotation_needs_no_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let node = secured(&pki, &dir.path().join("n0"), "n0", &[]);
    let pid = node.pid();
    let admin = pki.client("op", &["plait:admins"]);
    let first = tls_channel(&https(&node), &pki.ca_pem(), Some(admin.identity())).await.unwrap();
    pb::logs_client::LogsClient::new(first).list_logs(pb::ListLogsRequest::default()).await.unwrap();

    // A new CA issues a new server certificate into the same files; the client CA file
    // gets both CAs so old client certificates keep working during the rotation.
    let next = Pki::new(&dir.path().join("next"));
    let rotated = next.replica("n0");
    std::fs::copy(&rotated.cert, pki.dir.join("n0.crt")).unwrap();
    std::fs::copy(&rotated.key, pki.dir.join("n0.key")).unwrap();
    let both = [pki.ca_pem(), next.ca_pem()].concat();
    std::fs::write(pki.ca_path(), &both).unwrap();

    wait_until(Duration::from_secs(20), "the rotated certificate is served", || {
        let (addr, ca, id) = (https(&node), next.ca_pem(), admin.identity());
        async move {
            match tls_channel(&addr, &ca, Some(id)).await {
                Ok(c) => pb::logs_client::LogsClient::new(c)
                    .list_logs(pb::ListLogsRequest::default())
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(node.pid(), pid, "the replica restarted");
}

/// On a non-loopback address plaitd refuses to start without TLS and authentication
/// and says how to set them up; `--insecure` lets it start.
#[tokio::test(flavor = "multi_thread")]
async fn non_loopback_needs_security_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let out = plait_tests::plaitd_command()
        .unwrap()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to serve")
            && stderr.contains("--insecure")
            && stderr.contains("--tls-cert"),
        "{stderr}"
    );
    let mut child = plait_tests::plaitd_command()
        .unwrap()
        .args(["serve", "--listen", "0.0.0.0:0", "--insecure", "--data-dir"])
        .arg(dir.path().join("d2"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("plaitd ready"), "with --insecure plaitd did not start: {line:?}");
}

/// Replicas talk mutual TLS with certificates of the cluster's CA and converge; a
/// caller that claims a peer's node id in Sync.Pull without its node key counts for
/// nothing (case 3): Drain of a replica whose only peer is down does not succeed, and
/// a write asking for 2 replicas is not acknowledged as held by 2.
#[tokio::test(flavor = "multi_thread")]
async fn peers_use_mtls_and_claimed_identities_count_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let mut a = secured(&pki, &dir.path().join("a"), "a", &["--anti-entropy-ms", "200"]);
    let admin_id = pki.client("op", &["plait:admins"]);
    let admin_a = tls_channel(&https(&a), &pki.ca_pem(), Some(admin_id.identity())).await.unwrap();
    let a_addr = a.grpc.to_string();
    let mut b = secured(&pki, &dir.path().join("b"), "b", &["--anti-entropy-ms", "200", "--peer", &a_addr]);
    let admin_b = tls_channel(&https(&b), &pki.ca_pem(), Some(admin_id.identity())).await.unwrap();
    let b_addr = b.grpc.to_string();
    pb::admin_client::AdminClient::new(admin_a.clone())
        .set_members(pb::SetMembersRequest { generation: 1, members: vec![b_addr] })
        .await
        .unwrap();
    pb::logs_client::LogsClient::new(admin_a.clone()).create_log(manifest_request("orders")).await.unwrap();
    pb::data_client::DataClient::new(admin_a.clone()).put(put("orders", b"k")).await.unwrap();
    // b pulls over mutual TLS.
    wait_until(Duration::from_secs(30), "b holds a's write", || {
        let c = admin_b.clone();
        async move {
            pb::logs_client::LogsClient::new(c)
                .get_log(pb::GetLogRequest { log: "orders".into() })
                .await
                .is_ok_and(|l| l.into_inner().seq >= 1)
        }
    })
    .await
    .unwrap();
    let status = pb::admin_client::AdminClient::new(admin_a.clone())
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let b_node =
        status.peers.iter().find_map(|p| (!p.node_id.is_empty()).then(|| p.node_id.clone())).unwrap();
    let a_epoch = status.epoch.clone();
    let log_id = status.logs[0].log_id.clone();

    b.kill9();
    // Another write that b never sees.
    pb::data_client::DataClient::new(admin_a.clone()).put(put("orders", b"k2")).await.unwrap();
    let seq = pb::logs_client::LogsClient::new(admin_a.clone())
        .get_log(pb::GetLogRequest { log: "orders".into() })
        .await
        .unwrap()
        .into_inner()
        .seq;
    // A caller with the peer role claims to be b, holding everything.
    let claimer = tls_channel(&https(&a), &pki.ca_pem(), None).await.unwrap();
    let mut sync = pb::sync_client::SyncClient::new(claimer.clone());
    let pull = pb::PullRequest {
        log_id: log_id.clone(),
        epoch: a_epoch.clone(),
        after_seq: seq,
        from: Some(pb::PeerIdentity { node_id: b_node.clone(), epoch: vec![0; 16] }),
        page_entries: 0,
        page_bytes: 0,
        omit_yours: false,
    };
    let mut stream = sync.pull(with_token(pull, Some("tok-peer"))).await.unwrap().into_inner();
    while let Ok(Some(_)) = stream.message().await {}
    // A forged proof is refused outright.
    let mut forged = with_token(
        pb::PullRequest {
            log_id,
            epoch: a_epoch,
            after_seq: seq,
            from: None,
            page_entries: 0,
            page_bytes: 0,
            omit_yours: false,
        },
        Some("tok-peer"),
    );
    forged
        .metadata_mut()
        .insert("plait-node-proof", format!("{}.1.00", hex::encode(&b_node)).parse().unwrap());
    let err = sync.pull(forged).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let drained = pb::admin_client::AdminClient::new(admin_a.clone())
        .drain(pb::DrainRequest { timeout_ms: 1500, ..Default::default() })
        .await;
    assert!(drained.is_err(), "drain succeeded on a claimed identity: {drained:?}");
    a.terminate().unwrap();
    let (clean, report) = check(&a.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// Silent TCP connections cannot starve real callers (case 7): the listener caps
/// connections, closes those that do not finish a handshake in time, and a real call
/// then gets through.
#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_do_not_starve_callers() {
    let dir = tempfile::tempdir().unwrap();
    let node =
        Plaitd::start(&dir.path().join("n0"), &["--connections-max", "16", "--handshake-timeout-ms", "500"])
            .unwrap();
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(tokio::net::TcpStream::connect(node.grpc).await.unwrap());
    }
    wait_until(Duration::from_secs(30), "a real call gets through", || {
        let endpoint = node.endpoint();
        async move {
            match plait_client::Client::connect(endpoint).await {
                Ok(client) => client.list_logs().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
    .unwrap();
    drop(silent);
}

/// Runs plaitctl with `env` set and the rest of the environment's PLAIT_* cleared.
fn plaitctl(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(plait_tests::binary("plaitctl").unwrap());
    for var in ["PLAIT_ADDR", "PLAIT_TLS_CA", "PLAIT_CERT", "PLAIT_KEY", "PLAIT_TOKEN", "PLAIT_TOKEN_FILE"] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied()).args(args).output().unwrap()
}

/// plaitctl's stderr, asserting it failed.
fn plaitctl_fails(env: &[(&str, &str)], args: &[&str]) -> String {
    let out = plaitctl(env, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "plaitctl {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    stderr
}

/// plaitctl and the client library reach a secured replica over TLS with a client
/// certificate or a token (flag, variable or file), and each misconfiguration fails
/// with an error that says what to fix: a wrong CA, an expired client certificate, no
/// credentials, a role that does not allow the call, plaintext to a TLS listener, TLS to
/// a plaintext one. Nothing a refused call sent is stored.
#[tokio::test(flavor = "multi_thread")]
async fn clients_use_tls_and_tokens_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let mut node = secured(&pki, &dir.path().join("n0"), "n0", &[]);
    let addr = node.grpc.to_string();
    let ca = pki.ca_path().display().to_string();
    let admin = pki.client("operator", &["plait:admins"]);
    let (cert, key) = (admin.cert.display().to_string(), admin.key.display().to_string());

    // A client certificate, a bare address: https:// because --tls-ca is given.
    let out = plaitctl(
        &[],
        &[
            "--addr",
            &addr,
            "--tls-ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "log",
            "create",
            "orders-eu",
            "--type",
            "kv",
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A token from the environment.
    let env = [("PLAIT_ADDR", addr.as_str()), ("PLAIT_TLS_CA", ca.as_str())];
    let out = plaitctl(&[env[0], env[1], ("PLAIT_TOKEN", "tok-writer")], &["put", "orders-eu", "k1", "v1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A token from a file; status says who the caller is.
    let token_file = dir.path().join("reader.token");
    std::fs::write(&token_file, "tok-reader\n").unwrap();
    let token_path = token_file.display().to_string();
    let out = plaitctl(&env, &["--token-file", &token_path, "--output", "json", "status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["caller"]["principal"], "reader", "{status}");
    assert_eq!(status["caller"]["authenticated_by"], "token", "{status}");
    assert_eq!(status["caller"]["roles"], serde_json::json!(["read"]), "{status}");

    // A reader may not write.
    let stderr = plaitctl_fails(&env, &["--token-file", &token_path, "put", "orders-eu", "k2", "v"]);
    assert!(stderr.contains("permission denied"), "{stderr}");
    // No credentials at all: the replica says how to authenticate.
    let stderr = plaitctl_fails(&env, &["log", "list"]);
    assert!(stderr.contains("requires authentication") && stderr.contains("--token"), "{stderr}");
    // Another cluster's CA: the replica's certificate is not trusted.
    let other = Pki::new(&dir.path().join("other"));
    let other_ca = other.ca_path().display().to_string();
    let stderr =
        plaitctl_fails(&[("PLAIT_TOKEN", "tok-reader")], &["--addr", &addr, "--tls-ca", &other_ca, "status"]);
    assert!(stderr.contains("not signed by a CA this client trusts"), "{stderr}");
    // An expired client certificate is refused by the replica.
    let now = SystemTime::now();
    let expired = pki.issue(
        "expired",
        CertSpec::new("late", Validity { not_before: now - 3 * DAY, not_after: now - DAY })
            .group("plait:admins")
            .client_only(),
    );
    let (ecert, ekey) = (expired.cert.display().to_string(), expired.key.display().to_string());
    let stderr = plaitctl_fails(&env, &["--cert", &ecert, "--key", &ekey, "status"]);
    assert!(stderr.contains("expired") && stderr.contains("cert issue"), "{stderr}");
    // The library sends it, and the replica refuses it: the call fails, nothing is done.
    let options = plait_client::ClientOptions::new()
        .tls_ca_file(pki.ca_path())
        .unwrap()
        .client_cert_files(&expired.cert, &expired.key)
        .unwrap();
    if let Ok(client) = plait_client::Client::connect_with(addr.clone(), &options).await {
        client.put("orders-eu", "late", "v").await.unwrap_err();
    }
    // A client certificate from another CA is refused by the replica; plaitctl says the
    // certificate is the likely cause whichever way the refusal reaches it.
    let stranger = other.client("stranger", &["plait:admins"]);
    let (scert, skey) = (stranger.cert.display().to_string(), stranger.key.display().to_string());
    let stderr = plaitctl_fails(&env, &["--cert", &scert, "--key", &skey, "status"]);
    assert!(
        stderr.contains("refused this client's certificate")
            || stderr.contains("refuses the client certificate"),
        "{stderr}"
    );
    // Half a certificate is a usage error before anything is sent.
    let stderr = plaitctl_fails(&env, &["--cert", &cert, "status"]);
    assert!(stderr.contains("--cert needs --key"), "{stderr}");
    // Plaintext to the TLS listener, and http:// with TLS flags.
    let plain = format!("http://{addr}");
    let stderr = plaitctl_fails(&[("PLAIT_TOKEN", "tok-reader")], &["--addr", &plain, "status"]);
    assert!(stderr.contains("call it with https://"), "{stderr}");
    let stderr = plaitctl_fails(&env, &["--addr", &plain, "status"]);
    assert!(stderr.contains("use https://"), "{stderr}");

    // The library: the same errors as kinds.
    let options = plait_client::ClientOptions::new().tls_ca_file(other.ca_path()).unwrap();
    let err = plait_client::Client::connect_with(addr.clone(), &options).await.unwrap_err();
    assert!(matches!(err, plait_client::ClientError::Tls(_)), "{err:?}");
    let options = plait_client::ClientOptions::new()
        .tls_ca_file(pki.ca_path())
        .unwrap()
        .client_cert_files(&admin.cert, &admin.key)
        .unwrap();
    let client = plait_client::Client::connect_with(addr.clone(), &options).await.unwrap();
    assert_eq!(client.status().await.unwrap().caller.principal, "operator");
    let value = client.get("orders-eu", "k1").await.unwrap().unwrap();
    assert_eq!(value.value, b"v1");
    assert!(client.get("orders-eu", "k2").await.unwrap().is_none(), "a refused put left a trace");

    // TLS to a plaintext replica says so.
    let open = Plaitd::start(&dir.path().join("open"), &[]).unwrap();
    let stderr =
        plaitctl_fails(&[], &["--addr", &format!("https://{}", open.grpc), "--tls-ca", &ca, "status"]);
    assert!(stderr.contains("did not answer in TLS"), "{stderr}");

    // The next valid write continues, and the data directory checks clean.
    let out = plaitctl(&[env[0], env[1], ("PLAIT_TOKEN", "tok-writer")], &["put", "orders-eu", "k3", "v3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    node.terminate().unwrap();
    let (clean, report) = check(&node.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// Read pages are bounded by bytes as well as count (case 9): a feed and a kv log of 64
/// values of 512 KiB read with the default page in pages of a few MiB, each of which
/// succeeds, and paging on reads every value exactly once. Before, every read with the
/// default page failed OUT_OF_RANGE after building 32 MiB in memory.
#[tokio::test(flavor = "multi_thread")]
async fn large_values_read_in_pages_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let mut node = secured(&pki, &dir.path().join("n0"), "n0", &[]);
    let admin = pki.client("operator", &["plait:admins"]);
    let options = plait_client::ClientOptions::new()
        .tls_ca_file(pki.ca_path())
        .unwrap()
        .client_cert_files(&admin.cert, &admin.key)
        .unwrap();
    let client = plait_client::Client::connect_with(node.grpc.to_string(), &options).await.unwrap();
    use plait_core::LogType;
    client.create_log(&plait_client::CreateLogOptions::new("photos", LogType::Feed)).await.unwrap();
    client.create_log(&plait_client::CreateLogOptions::new("blobs", LogType::Kv)).await.unwrap();
    let value = vec![0x5au8; plait_core::limits::VALUE_BYTES_MAX];
    for i in 0..64u32 {
        client.append("photos", value.clone()).await.unwrap();
        client.put("blobs", format!("b{i:02}"), value.clone()).await.unwrap();
    }

    // The feed, with the default page: every page answers, none is over ~4 MiB.
    let (mut seen, mut after, mut pages) = (0, Vec::new(), 0);
    loop {
        let read = plait_client::ReadFeedOptions { after: after.clone(), ..Default::default() };
        let page = client.read_feed_page("photos", &read).await.unwrap();
        assert!(!page.items.is_empty() && page.items.len() <= 8, "a page of {} items", page.items.len());
        seen += page.items.len();
        pages += 1;
        after = page.items.last().unwrap().position.clone();
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, 64);
    assert!(pages >= 8, "{pages} pages");
    // The tail too.
    let tail = client.tail("photos", 0).await.unwrap();
    assert!(!tail.is_empty() && tail.len() <= 8, "{}", tail.len());

    // The kv log, with the default page.
    let (mut keys, mut start) = (Vec::new(), Vec::new());
    loop {
        let scan = plait_client::ScanOptions { start: start.clone(), ..Default::default() };
        let page = client.scan("blobs", &scan).await.unwrap();
        assert!(page.items.len() <= 8, "a page of {} items", page.items.len());
        keys.extend(page.items.into_iter().map(|kv| kv.key));
        match page.next_start {
            Some(next) => start = next,
            None => break,
        }
    }
    assert_eq!(keys, (0..64).map(|i| format!("b{i:02}").into_bytes()).collect::<Vec<_>>());

    node.terminate().unwrap();
    let (clean, report) = check(&node.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// Clients holding every Subscribe slot do not starve replication (case 8): peers' Watch
/// streams have a limit of their own, so a write still reaches the peer at once (the
/// peer's anti-entropy pass is ten minutes away, so only its Watch can bring it).
#[tokio::test(flavor = "multi_thread")]
async fn subscribers_cannot_starve_peer_streams() {
    let dir = tempfile::tempdir().unwrap();
    let a = Plaitd::start(&dir.path().join("a"), &["--subscriptions-max", "1"]).unwrap();
    let client = plait_client::Client::connect(a.endpoint()).await.unwrap();
    client.create_log(&plait_client::CreateLogOptions::new("chat", plait_core::LogType::Feed)).await.unwrap();
    client.append("chat", "first").await.unwrap();
    // Every client slot taken, and the next subscriber refused.
    let _held = client.subscribe("chat", 0, true).await.unwrap();
    let mut extra = client.subscribe("chat", 0, true).await;
    if let Ok(stream) = &mut extra {
        use futures::StreamExt;
        extra = match stream.next().await {
            Some(Err(e)) => Err(e),
            _ => panic!("a second subscription was served over --subscriptions-max 1"),
        };
    }
    assert!(matches!(extra, Err(plait_client::ClientError::ResourceExhausted(_))), "{:?}", extra.err());

    let peer = a.grpc.to_string();
    let b = Plaitd::start(&dir.path().join("b"), &["--peer", &peer, "--anti-entropy-ms", "600000"]).unwrap();
    let b_client = plait_client::Client::connect(b.endpoint()).await.unwrap();
    wait_until(Duration::from_secs(30), "b learns the log", || {
        let b_client = b_client.clone();
        async move { b_client.get_log("chat").await.is_ok_and(|l| l.ops == 1) }
    })
    .await
    .unwrap();
    client.append("chat", "second").await.unwrap();
    wait_until(Duration::from_secs(30), "the write reaches b through its Watch", || {
        let b_client = b_client.clone();
        async move { b_client.get_log("chat").await.is_ok_and(|l| l.ops == 2) }
    })
    .await
    .unwrap();
}

/// Client-created logs cannot use up the log limit (case 10): a tenth of --logs-max is
/// kept for logs learned from peers, so a log made elsewhere still replicates in when
/// clients have created all they may; and a Drain can be called off without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn log_limit_keeps_room_for_peers_and_drains_can_be_cancelled() {
    use plait_client::{ClientError, CreateLogOptions};
    use plait_core::LogType;
    let dir = tempfile::tempdir().unwrap();
    let mut b = Plaitd::start(&dir.path().join("b"), &[]).unwrap();
    let peer = b.grpc.to_string();
    let mut a = Plaitd::start(
        &dir.path().join("a"),
        &["--logs-max", "5", "--peer", &peer, "--anti-entropy-ms", "200"],
    )
    .unwrap();
    let client = plait_client::Client::connect(a.endpoint()).await.unwrap();
    for i in 0..4 {
        client.create_log(&CreateLogOptions::new(format!("l{i}"), LogType::Kv)).await.unwrap();
    }
    let err = client.create_log(&CreateLogOptions::new("l4", LogType::Kv)).await.unwrap_err();
    assert!(matches!(&err, ClientError::ResourceExhausted(m) if m.contains("learned from peers")), "{err}");
    // The refused create left nothing behind.
    assert!(matches!(client.get_log("l4").await, Err(ClientError::NotFound(_))));

    let b_client = plait_client::Client::connect(b.endpoint()).await.unwrap();
    b_client.create_log(&CreateLogOptions::new("from-b", LogType::Kv)).await.unwrap();
    b_client.put("from-b", "k", "v").await.unwrap();
    wait_until(Duration::from_secs(30), "a learns b's log through the reserve", || {
        let client = client.clone();
        async move { client.get_log("from-b").await.is_ok_and(|l| l.ops == 1) }
    })
    .await
    .unwrap();

    // Drain (no other member holds a's logs, so it times out), then call it off.
    let err = client.drain(Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, ClientError::Unavailable(_)), "{err}");
    let refused = client.put("l0", "k", "v").await.unwrap_err();
    assert!(refused.message().contains("draining"), "{refused}");
    client.cancel_drain().await.unwrap();
    assert!(!client.status().await.unwrap().draining);
    client.put("l0", "k", "v").await.unwrap();

    a.terminate().unwrap();
    b.terminate().unwrap();
    for node in [&a, &b] {
        let (clean, report) = check(&node.data_dir).unwrap();
        assert!(clean, "{report}");
    }
}

/// Imports are bounded (case 6): one stream may carry at most --import-bytes-max (the
/// rest is refused, the staged part deleted, nothing imported), and at most
/// --imports-max run at once; afterwards a valid import works and the data directory
/// checks clean.
#[tokio::test(flavor = "multi_thread")]
async fn imports_are_bounded_and_leave_nothing() {
    use bytes::Bytes;
    use futures::StreamExt;
    use plait_client::ClientError;
    let dir = tempfile::tempdir().unwrap();
    // A real snapshot of a small log, from another replica.
    let source = Plaitd::start(&dir.path().join("source"), &[]).unwrap();
    let source_client = plait_client::Client::connect(source.endpoint()).await.unwrap();
    source_client
        .create_log(&plait_client::CreateLogOptions::new("kv", plait_core::LogType::Kv))
        .await
        .unwrap();
    source_client.put("kv", "k", "v").await.unwrap();
    let mut snapshot = Vec::new();
    let mut export = source_client.export_snapshot("kv", None).await.unwrap();
    while let Some(chunk) = export.next().await {
        snapshot.extend_from_slice(&chunk.unwrap());
    }

    let mut node =
        Plaitd::start(&dir.path().join("n0"), &["--import-bytes-max", "1048576", "--imports-max", "1"])
            .unwrap();
    let client = plait_client::Client::connect(node.endpoint()).await.unwrap();
    // 4 MiB in 64 KiB chunks: refused at the first MiB.
    let junk = futures::stream::iter((0..64).map(|_| Bytes::from(vec![0u8; 64 * 1024])));
    let err = client.import_snapshot(junk).await.unwrap_err();
    assert!(matches!(&err, ClientError::ResourceExhausted(m) if m.contains("--import-bytes-max")), "{err}");
    let staged: Vec<_> = std::fs::read_dir(node.data_dir.join("tmp")).unwrap().collect();
    assert!(staged.is_empty(), "the refused import left {staged:?}");
    assert!(client.list_logs().await.unwrap().is_empty());

    // One import held open: the next is refused until it ends.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let held = {
        let client = client.clone();
        let chunks = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
        tokio::spawn(async move { client.import_snapshot(chunks).await })
    };
    tx.send(Bytes::from(snapshot[..snapshot.len() / 2].to_vec())).await.unwrap();
    // The held import stages into the data directory's tmp/ once it holds its slot.
    let tmp = node.data_dir.join("tmp");
    wait_until(Duration::from_secs(30), "the held import is staging", || {
        let tmp = tmp.clone();
        async move { std::fs::read_dir(&tmp).is_ok_and(|mut d| d.next().is_some()) }
    })
    .await
    .unwrap();
    let probe = futures::stream::iter([Bytes::from(snapshot.clone())]);
    let err = client.import_snapshot(probe).await.unwrap_err();
    assert!(matches!(&err, ClientError::ResourceExhausted(m) if m.contains("--imports-max")), "{err}");
    tx.send(Bytes::from(snapshot[snapshot.len() / 2..].to_vec())).await.unwrap();
    drop(tx);
    let report = held.await.unwrap().unwrap();
    assert_eq!(report.entries_stored, 1);
    assert_eq!(client.get("kv", "k").await.unwrap().unwrap().value, b"v");

    node.terminate().unwrap();
    let (clean, report) = check(&node.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// A JWT signed with a raw Ed25519 key, for the JWT test.
fn jwt(pair: &ring::signature::Ed25519KeyPair, claims: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
    let signed = format!("{header}.{}", b64.encode(claims.to_string()));
    format!("{signed}.{}", b64.encode(pair.sign(signed.as_bytes()).as_ref()))
}

/// JWTs from an identity provider authenticate callers once the auth file names its
/// public key: the `sub` is the principal, the roles claim its roles. An expired token,
/// one for another audience and one signed by another key are refused UNAUTHENTICATED
/// with the reason, and change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn jwts_from_the_configured_issuer_authenticate() {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let rng = ring::rand::SystemRandom::new();
    let idp = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let stranger =
        Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    // The SubjectPublicKeyInfo of an Ed25519 key: a fixed 12-byte prefix, then the key.
    let mut spki = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    spki.extend_from_slice(idp.public_key().as_ref());
    let pem = {
        use base64::Engine;
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&spki)
        )
    };
    std::fs::write(pki.dir.join("idp.pem"), pem).unwrap();
    let mut node = secured(&pki, &dir.path().join("n0"), "n0", &[]);
    // The test's auth file, with a jwt section added (reloaded within 200 ms).
    let auth = pki.dir.join("auth.yaml");
    let mut text = std::fs::read_to_string(&auth).unwrap();
    text.push_str("jwt:\n  public_key_file: idp.pem\n  issuer: https://idp.example\n  audience: plait\n");
    std::fs::write(&auth, text).unwrap();

    let now = SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = |exp: u64, aud: &str| {
        serde_json::json!({
            "iss": "https://idp.example", "aud": aud, "sub": "orders-app", "exp": exp,
            "roles": ["read", "log-admin", "write:orders-*"],
        })
    };
    let good = jwt(&idp, claims(now + 600, "plait"));
    let connect = |token: String| {
        let options =
            plait_client::ClientOptions::new().tls_ca_file(pki.ca_path()).unwrap().token(&token).unwrap();
        let addr = node.grpc.to_string();
        async move { plait_client::Client::connect_with(addr, &options).await.unwrap() }
    };
    let client = connect(good).await;
    wait_until(Duration::from_secs(30), "the auth file with jwt is loaded", || {
        let client = client.clone();
        async move { client.status().await.is_ok() }
    })
    .await
    .unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(
        (status.caller.principal.as_str(), status.caller.authenticated_by.as_str()),
        ("orders-app", "jwt")
    );
    client
        .create_log(&plait_client::CreateLogOptions::new("orders-1", plait_core::LogType::Kv))
        .await
        .unwrap();
    client.put("orders-1", "k", "v").await.unwrap();

    for (token, why) in [
        (jwt(&idp, claims(now - 3600, "plait")), "expired"),
        (jwt(&idp, claims(now + 600, "elsewhere")), "audience"),
        (jwt(&stranger, claims(now + 600, "plait")), "signature"),
    ] {
        let err = connect(token).await.put("orders-1", "k", "forged").await.unwrap_err();
        assert!(
            matches!(&err, plait_client::ClientError::Unauthorized(m) if m.contains(why)),
            "{why}: {err}"
        );
    }
    assert_eq!(client.get("orders-1", "k").await.unwrap().unwrap().value, b"v");
    client.put("orders-1", "k2", "v2").await.unwrap();
    node.terminate().unwrap();
    let (clean, report) = check(&node.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// Log creation is bounded per principal (case 10, item 6): with --logs-per-principal 2
/// the log-admin token creates two logs and its third is RESOURCE_EXHAUSTED naming it,
/// storing nothing, while another principal still creates; ListLogs names each log's
/// creator and Status counts the caller's logs against its quota; the count survives a
/// SIGKILL and restart, and dropping one of its logs frees a place at once.
#[tokio::test(flavor = "multi_thread")]
async fn log_creation_is_bounded_per_principal() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let data = dir.path().join("n0");
    let quota = ["--logs-per-principal", "2"];
    let mut node = secured(&pki, &data, "n0", &quota);
    let admin_pair = pki.client("operator", &["plait:admins"]);
    let token = Some("tok-logadmin");
    let channel = tls_channel(&https(&node), &pki.ca_pem(), None).await.unwrap();
    let mut logs = pb::logs_client::LogsClient::new(channel.clone());
    for name in ["mine-0", "mine-1"] {
        let info = logs.create_log(with_token(manifest_request(name), token)).await.unwrap().into_inner();
        assert_eq!(info.creator, "token:logadmin");
    }
    let err = logs.create_log(with_token(manifest_request("mine-2"), token)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("token:logadmin") && err.message().contains("2 logs"), "{err:?}");
    // The same manifest again is the existing log, not a new one.
    logs.create_log(with_token(manifest_request("mine-0"), token)).await.unwrap();

    let admin = tls_channel(&https(&node), &pki.ca_pem(), Some(admin_pair.identity())).await.unwrap();
    let mut admin_logs = pb::logs_client::LogsClient::new(admin.clone());
    let other = admin_logs.create_log(manifest_request("theirs")).await.unwrap().into_inner();
    assert_eq!(other.creator, "certificate:operator", "another principal has its own quota");
    assert_eq!(log_names(&admin).await, ["mine-0", "mine-1", "theirs"], "the refused create stored nothing");
    let status = pb::admin_client::AdminClient::new(channel.clone())
        .status(with_token(pb::StatusRequest {}, token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.logs_created, status.logs_quota), (2, Some(2)), "{status:?}");

    node.kill9();
    let mut node = secured(&pki, &data, "n0", &quota);
    let channel = tls_channel(&https(&node), &pki.ca_pem(), None).await.unwrap();
    let mut logs = pb::logs_client::LogsClient::new(channel.clone());
    let err = logs.create_log(with_token(manifest_request("mine-2"), token)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "the count is durable: {err:?}");
    logs.drop_log(with_token(pb::DropLogRequest { log: "mine-1".into() }, token)).await.unwrap();
    logs.create_log(with_token(manifest_request("mine-2"), token)).await.unwrap();
    let admin = tls_channel(&https(&node), &pki.ca_pem(), Some(admin_pair.identity())).await.unwrap();
    let mut data_client = pb::data_client::DataClient::new(admin.clone());
    data_client.put(put("mine-2", b"k")).await.unwrap();
    node.terminate().unwrap();
    let (clean, report) = check(&node.data_dir).unwrap();
    assert!(clean, "{report}");
}

/// With `--admin-listen`, the cluster-admin methods are served on the admin address
/// only: on the API address they are refused with PERMISSION_DENIED naming the admin
/// port (nothing done: no checkpoint recorded, no drain begun, no members set), while
/// reads, writes, `Status` and health go on there; the admin address serves every method.
/// A non-loopback admin address needs TLS and authentication like the API address. The
/// data directory checks clean afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn admin_methods_are_served_on_the_admin_address_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut replica = Plaitd::start(&dir.path().join("d"), &["--admin-listen", "127.0.0.1:0"]).unwrap();
    let admin_addr = replica.admin.expect("the ready line names the admin address");
    assert_ne!(admin_addr, replica.grpc);
    let api = Channel::from_shared(replica.endpoint()).unwrap().connect().await.unwrap();
    let admin = Channel::from_shared(replica.admin_endpoint()).unwrap().connect().await.unwrap();
    let mut logs = pb::logs_client::LogsClient::new(api.clone());
    logs.create_log(pb::CreateLogRequest {
        name: "kv".into(),
        r#type: pb::LogType::Kv as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut data = pb::data_client::DataClient::new(api.clone());
    let put = |key: &str| pb::PutRequest {
        log: "kv".into(),
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    };
    data.put(put("before")).await.unwrap();

    let mut on_api = pb::admin_client::AdminClient::new(api.clone());
    let refused = |status: tonic::Status| {
        assert_eq!(status.code(), Code::PermissionDenied, "{}", status.message());
        assert!(
            status.message().contains("--admin-listen")
                && status.message().contains(&admin_addr.port().to_string()),
            "{}",
            status.message()
        );
    };
    refused(on_api.checkpoint(pb::CheckpointRequest { log: "kv".into() }).await.unwrap_err());
    refused(on_api.drain(pb::DrainRequest { timeout_ms: 1, cancel: false }).await.unwrap_err());
    refused(
        on_api
            .set_members(pb::SetMembersRequest { generation: 1, members: vec!["127.0.0.1:1".into()] })
            .await
            .unwrap_err(),
    );
    let status = on_api.status(pb::StatusRequest {}).await.unwrap().into_inner();
    assert!(!status.draining, "a refused drain began");
    assert_eq!(status.members_generation, 0, "a refused member update landed");
    data.put(put("after-refusals")).await.unwrap();

    let mut on_admin = pb::admin_client::AdminClient::new(admin.clone());
    let checkpoint =
        on_admin.checkpoint(pb::CheckpointRequest { log: "kv".into() }).await.unwrap().into_inner();
    assert_eq!(checkpoint.n_ops, 2, "the checkpoint covers both writes");
    let mut data_on_admin = pb::data_client::DataClient::new(admin);
    let got = data_on_admin.get(pb::GetRequest { log: "kv".into(), key: b"before".to_vec(), as_of: None });
    assert!(got.await.unwrap().into_inner().found);
    drop((api, on_api, on_admin, data, logs, data_on_admin));
    replica.terminate().unwrap();
    let (clean, report) = check(&replica.data_dir).unwrap();
    assert!(clean, "{report}");

    let out = plait_tests::plaitd_command()
        .unwrap()
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("exposed"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "an open admin address was served without security");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve 0.0.0.0:0"), "{stderr}");
}
