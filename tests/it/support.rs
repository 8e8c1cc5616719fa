//! Connecting generated clients to a test replica.

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
