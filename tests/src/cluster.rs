//! A cluster of real `plaitd` processes whose every directed link goes through its own
//! fault-injecting proxy, and a way to read a replica's whole state to compare replicas.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use plait_proto::pb;
use tonic::transport::Channel;

use crate::Plaitd;
use crate::proxy::Proxy;

/// Flags every cluster member gets: a short anti-entropy pass so a missed notice is
/// caught quickly in tests.
const CLUSTER_FLAGS: &[&str] = &["--anti-entropy-ms", "300"];

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Plaitd>,
    /// `links[i][j]`: the proxy replica `i` reaches replica `j` through.
    pub links: Vec<Vec<Option<Proxy>>>,
    extra: Vec<String>,
    generation: u64,
}

impl Cluster {
    /// Starts `n` replicas, each with every other as a `--peer` through a proxy.
    pub async fn start(n: usize, extra: &[&str]) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let mut links: Vec<Vec<Option<Proxy>>> = Vec::new();
        for i in 0..n {
            let mut row = Vec::new();
            for j in 0..n {
                row.push(if i == j { None } else { Some(Proxy::start().await?) });
            }
            links.push(row);
        }
        // Replicas of one cluster share a writer key, so a log whose ACL names it accepts
        // writes through any of them (and a wiped replica can still write).
        let writer_key = dir.path().join("writer.key");
        let out = crate::plaitd_command()?.arg("keygen").arg("--out").arg(&writer_key).output()?;
        anyhow::ensure!(
            out.status.success(),
            "plaitd keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.push("--writer-key-file".into());
        extra.push(writer_key.display().to_string());
        let mut nodes = Vec::new();
        for (i, row) in links.iter().enumerate() {
            let mut args: Vec<String> = CLUSTER_FLAGS.iter().map(|s| s.to_string()).collect();
            args.extend(extra.iter().cloned());
            for proxy in row.iter().flatten() {
                args.push("--peer".into());
                args.push(proxy.addr.to_string());
            }
            let data = dir.path().join(format!("node{i}"));
            let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
            nodes.push(tokio::task::block_in_place(|| Plaitd::start(&data, &args_ref))?);
        }
        let cluster = Cluster { dir, nodes, links, extra, generation: 0 };
        cluster.point_links();
        Ok(cluster)
    }

    /// Aims every proxy at its replica's current address.
    fn point_links(&self) {
        for row in &self.links {
            for (j, proxy) in row.iter().enumerate() {
                if let Some(proxy) = proxy {
                    proxy.set_target(self.nodes[j].grpc);
                }
            }
        }
    }

    pub fn endpoint(&self, i: usize) -> String {
        self.nodes[i].endpoint()
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.clone()
    }

    /// SIGKILL and start again on the same data directory.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        tokio::task::block_in_place(|| self.nodes[i].restart())?;
        self.point_links();
        Ok(())
    }

    /// SIGKILL, delete the data directory, start again: a new epoch and node id.
    pub fn wipe(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].kill9();
        std::fs::remove_dir_all(&self.nodes[i].data_dir).context("wiping the data directory")?;
        self.restart(i)
    }

    /// Cuts replica `i` off from every other, both ways.
    pub fn isolate(&self, i: usize) {
        for (a, row) in self.links.iter().enumerate() {
            for (b, proxy) in row.iter().enumerate() {
                if let Some(proxy) = proxy
                    && (a == i || b == i)
                {
                    proxy.partition();
                }
            }
        }
    }

    pub fn heal_all(&self) {
        for proxy in self.links.iter().flatten().flatten() {
            proxy.heal();
        }
    }

    /// Adds a replica that knows every other, and tells every other about it with
    /// `Admin.SetMembers` (the static `--peer` flags of the others cannot change).
    pub async fn add_node(&mut self) -> anyhow::Result<usize> {
        let n = self.nodes.len();
        for row in &mut self.links {
            row.push(Some(Proxy::start().await?));
        }
        let mut row = Vec::new();
        for _ in 0..n {
            row.push(Some(Proxy::start().await?));
        }
        row.push(None);
        self.links.push(row);
        let mut args: Vec<String> = CLUSTER_FLAGS.iter().map(|s| s.to_string()).collect();
        args.extend(self.extra.iter().cloned());
        for proxy in self.links[n].iter().flatten() {
            args.push("--peer".into());
            args.push(proxy.addr.to_string());
        }
        let data = self.dir.path().join(format!("node{n}"));
        let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes.push(tokio::task::block_in_place(|| Plaitd::start(&data, &args_ref))?);
        self.point_links();
        self.generation += 1;
        for i in 0..n {
            let proxy = self.links[i][n].as_ref().expect("link to the new node");
            let mut admin = pb::admin_client::AdminClient::new(channel(&self.endpoint(i)).await?);
            admin
                .set_members(pb::SetMembersRequest {
                    generation: self.generation,
                    members: vec![proxy.addr.to_string()],
                })
                .await?;
        }
        Ok(n)
    }
}

pub async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(endpoint.to_owned())?.connect_timeout(Duration::from_secs(5)).connect().await?)
}

/// One log as a replica holds it: heads, ops, and the whole view as rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogState {
    pub heads: Vec<Vec<u8>>,
    pub ops: u64,
    pub pending: u64,
    pub rows: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Every log of a replica, by name. kv logs list their live pairs; feed logs their
/// items in total order; graph logs the edges out of `graph_nodes`.
pub async fn state(endpoint: &str, graph_nodes: &[&[u8]]) -> anyhow::Result<BTreeMap<String, LogState>> {
    let ch = channel(endpoint).await?;
    let mut logs = pb::logs_client::LogsClient::new(ch.clone());
    let mut data = pb::data_client::DataClient::new(ch);
    let mut out = BTreeMap::new();
    for info in logs.list_logs(pb::ListLogsRequest {}).await?.into_inner().logs {
        let mut heads: Vec<Vec<u8>> = data
            .heads(pb::HeadsRequest { log: info.name.clone() })
            .await?
            .into_inner()
            .heads
            .into_iter()
            .map(|h| h.hash)
            .collect();
        heads.sort();
        let mut rows = Vec::new();
        match pb::LogType::try_from(info.r#type) {
            Ok(pb::LogType::Kv) => {
                let mut start = Vec::new();
                loop {
                    let page = data
                        .scan(pb::ScanRequest {
                            log: info.name.clone(),
                            start: start.clone(),
                            limit: 10_000,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    rows.extend(page.items.into_iter().map(|kv| (kv.key, kv.value)));
                    if page.next_start.is_empty() {
                        break;
                    }
                    start = page.next_start;
                }
            }
            Ok(pb::LogType::Feed) => {
                let mut after = Vec::new();
                loop {
                    let page = data
                        .read_feed(pb::ReadFeedRequest {
                            log: info.name.clone(),
                            after: after.clone(),
                            limit: 10_000,
                            tail: false,
                            as_of: None,
                        })
                        .await?
                        .into_inner();
                    let Some(last) = page.items.last() else { break };
                    after = last.position.clone();
                    rows.extend(page.items.into_iter().map(|i| (i.position, i.value)));
                }
            }
            _ => {
                for node in graph_nodes {
                    let edges = data
                        .edges(pb::EdgesRequest {
                            log: info.name.clone(),
                            node: node.to_vec(),
                            limit: 10_000,
                            ..Default::default()
                        })
                        .await?
                        .into_inner()
                        .edges;
                    rows.extend(
                        edges.into_iter().map(|e| ([e.src, e.label.into_bytes(), e.dst].concat(), e.props)),
                    );
                }
            }
        }
        out.insert(info.name, LogState { heads, ops: info.ops, pending: info.pending, rows });
    }
    Ok(out)
}

/// Waits until every replica in `nodes` holds the same state, and returns it.
pub async fn converged(
    endpoints: &[String],
    graph_nodes: &[&[u8]],
    timeout: Duration,
) -> anyhow::Result<BTreeMap<String, LogState>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let mut states = Vec::new();
        for e in endpoints {
            states.push(state(e, graph_nodes).await);
        }
        if let Some(Ok(first)) = states.first()
            && states.iter().all(|s| s.as_ref().is_ok_and(|s| s == first))
        {
            return Ok(first.clone());
        }
        if std::time::Instant::now() > deadline {
            let summary: Vec<String> = states
                .iter()
                .map(|s| match s {
                    Ok(s) => s
                        .iter()
                        .map(|(n, l)| {
                            format!("{n}: {} heads, {} ops, {} pending", l.heads.len(), l.ops, l.pending)
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    Err(e) => format!("error: {e:#}"),
                })
                .collect();
            anyhow::bail!("replicas did not converge within {timeout:?}:\n  {}", summary.join("\n  "));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
