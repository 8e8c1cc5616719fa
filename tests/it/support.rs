//! Connecting generated clients to a test replica.

use plait_core::WriterKey;
use plait_proto::pb;
use plait_proto::pb::admin_client::AdminClient;
use plait_proto::pb::data_client::DataClient;
use plait_proto::pb::logs_client::LogsClient;
use plait_tests::Plaitd;
use tonic::transport::Channel;

pub(crate) struct Clients {
    pub(crate) logs: LogsClient<Channel>,
    pub(crate) data: DataClient<Channel>,
    pub(crate) admin: AdminClient<Channel>,
    pub(crate) channel: Channel,
}

pub(crate) async fn connect(replica: &Plaitd) -> Clients {
    let channel = Channel::from_shared(replica.endpoint()).unwrap().connect().await.unwrap();
    Clients {
        logs: LogsClient::new(channel.clone()),
        data: DataClient::new(channel.clone()),
        admin: AdminClient::new(channel.clone()),
        channel,
    }
}

pub(crate) fn start() -> (tempfile::TempDir, Plaitd) {
    let dir = tempfile::tempdir().unwrap();
    let replica = Plaitd::start(&dir.path().join("data"), &[]).unwrap();
    (dir, replica)
}

pub(crate) async fn create(c: &mut Clients, name: &str, log_type: pb::LogType) -> pb::LogInfo {
    c.logs
        .create_log(pb::CreateLogRequest { name: name.into(), r#type: log_type as i32, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
}

pub(crate) fn put_op(log: &str, key: &str, value: &str) -> pb::RoutedOp {
    pb::RoutedOp {
        log: log.into(),
        op: Some(pb::Op { op: Some(pb::op::Op::Put(pb::KvPut { key: key.into(), value: value.into() })) }),
    }
}

/// The time now, for a node proof (the one place these tests read the wall clock).
#[allow(clippy::disallowed_methods)]
fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A `plait-node-proof` value by `key` for the replica `audience`: its node key signs the
/// audience and the time.
pub(crate) fn node_proof(key: &WriterKey, audience: &[u8]) -> String {
    let secs = now_secs();
    let mut message = audience.to_vec();
    message.extend_from_slice(&secs.to_le_bytes());
    let signature = key.sign_statement("plait.v1 node proof", &message);
    format!("{}.{secs}.{}", key.public().to_hex(), signature.to_hex())
}
