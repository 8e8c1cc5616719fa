//! The client itself: one connection to a replica and a typed method per RPC.
//!
//! The generated tonic clients take `&mut self`; they are cheap handles over one shared
//! HTTP/2 channel, so each call clones the one it needs and `Client` methods take
//! `&self`. A `Client` can be cloned and used from many tasks at once.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use plait_core::{EntryHash, LogId, Op, SignedManifest, VerifiedEntry, WriterKey};
use plait_proto::pb::admin_client::AdminClient;
use plait_proto::pb::data_client::DataClient;
use plait_proto::pb::logs_client::LogsClient;
use plait_proto::{convert, pb};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;

use crate::error::ClientError;
use crate::options::{ClientOptions, Credentials};
use crate::types::{
    AppliedOp, AsOf, BackupJobReport, BackupReport, CheckpointInfo, ConsumerInfo, CreateLogOptions,
    Direction, DrainedLog, Edge, EdgePage, EdgesOptions, FeedItem, FeedPage, Heads, HistoryPage,
    HistoryTarget, ImportReport, KeyValue, LogInfo, ReadFeedOptions, RoutedOp, ScanOptions, ScanPage, Status,
    StoredEntry, SubmitResult, Version, Versioned, WriteAck, WriterEntry,
};

/// Largest gRPC message the client sends or accepts, both ways. Set on purpose rather
/// than left at tonic's 4 MiB decoding default: a batch `Write` or `Submit` of many
/// entries, or a page of large values, is bigger than that, while an entry itself is at
/// most 1 MiB (`plait_core::limits::ENTRY_BYTES_MAX`).
pub const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// How long [`Client::connect`] waits for the TCP and HTTP/2 handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an idle connection is pinged, so a long `Subscribe` notices a dead peer
/// instead of waiting forever.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a keep-alive ping may go unanswered before the connection is dropped.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How much longer than its own timeout [`Client::drain`] waits for the replica's answer.
pub const DRAIN_REPLY_GRACE: Duration = Duration::from_secs(5);

/// Health of the replica as the standard gRPC health service reports it.
pub use tonic_health::pb::health_check_response::ServingStatus;

/// The bytes of a [`Client::export_snapshot`], chunk by chunk, in order.
pub type SnapshotStream = BoxStream<'static, Result<Bytes, ClientError>>;

/// The operations of a [`Client::subscribe`], in seq order, each checked on arrival.
pub type AppliedOpStream = BoxStream<'static, Result<AppliedOp, ClientError>>;

/// The channel with the client's credentials attached to every call.
type Service = InterceptedService<Channel, Credentials>;

/// A connection to one Plait replica.
#[derive(Clone)]
pub struct Client {
    logs: LogsClient<Service>,
    data: DataClient<Service>,
    admin: AdminClient<Service>,
    health: HealthClient<Service>,
    /// Attached to every write: how many replicas must hold it before it is acknowledged.
    concern: Option<pb::WriteConcern>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// The URI for an address: `host:port` gets `https://` in front when TLS is set up,
/// `http://` otherwise; a URI with a scheme is taken as it is, and must agree with the
/// options.
fn uri_for(addr: &str, options: &ClientOptions) -> Result<String, ClientError> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(ClientError::Invalid("the replica address is empty: expected host:port or a URI".into()));
    }
    if let Some(rest) = addr.strip_prefix("http://") {
        if options.uses_tls() {
            return Err(ClientError::Invalid(format!(
                "{addr:?} is a plaintext address but TLS settings are given: use https://{rest}, or drop the \
                 TLS settings"
            )));
        }
        return Ok(addr.to_owned());
    }
    if addr.starts_with("https://") {
        return Ok(addr.to_owned());
    }
    if addr.contains("://") {
        return Err(ClientError::Invalid(format!(
            "{addr:?}: the scheme must be http:// or https:// (or none: host:port)"
        )));
    }
    Ok(if options.uses_tls() { format!("https://{addr}") } else { format!("http://{addr}") })
}

impl Client {
    /// The endpoint for `addr` (`127.0.0.1:7070` or `http://host:7070`) with the client's
    /// timeouts and keep-alives, for callers that build channels themselves.
    pub fn endpoint(addr: impl Into<String>) -> Result<Endpoint, ClientError> {
        Client::endpoint_with(addr, &ClientOptions::new())
    }

    /// [`Client::endpoint`] with TLS set up from `options` for `https://` addresses (the
    /// token is not part of an endpoint: [`Client::from_channel_with`] attaches it).
    pub fn endpoint_with(addr: impl Into<String>, options: &ClientOptions) -> Result<Endpoint, ClientError> {
        let addr = addr.into();
        let uri = uri_for(&addr, options)?;
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| ClientError::Invalid(format!("{addr:?} is not a valid replica address: {e}")))?;
        if uri.starts_with("https://") {
            endpoint = endpoint.tls_config(options.tls_config()).map_err(|e| {
                ClientError::Tls(format!("cannot set up TLS for {addr}: {}", ClientError::from(e)))
            })?;
        }
        Ok(endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT))
    }

    /// Connects to the replica at `addr` (`127.0.0.1:7070` or `http://host:7070`),
    /// failing at once with [`ClientError::Transport`] if it cannot be reached.
    pub async fn connect(addr: impl Into<String>) -> Result<Client, ClientError> {
        Client::connect_with(addr, &ClientOptions::new()).await
    }

    /// Connects with TLS and credentials (`https://host:7070`, or `host:7070` with TLS
    /// options), failing at once with [`ClientError::Tls`] if the certificates do not
    /// check out and [`ClientError::Transport`] if the replica cannot be reached.
    pub async fn connect_with(
        addr: impl Into<String>,
        options: &ClientOptions,
    ) -> Result<Client, ClientError> {
        let addr = addr.into();
        let channel =
            Client::endpoint_with(addr.clone(), options)?.connect().await.map_err(
                |e| match ClientError::from(e) {
                    ClientError::Transport(m) => {
                        ClientError::Transport(format!("cannot connect to {addr}: {m}"))
                    }
                    ClientError::Tls(m) => ClientError::Tls(format!("cannot connect to {addr}: {m}")),
                    other => other,
                },
            )?;
        Ok(Client::from_channel_with(channel, options))
    }

    /// A client that connects on first use and reconnects as needed; connection errors
    /// surface from the calls as [`ClientError::Unavailable`].
    pub fn connect_lazy(addr: impl Into<String>) -> Result<Client, ClientError> {
        Client::connect_lazy_with(addr, &ClientOptions::new())
    }

    /// [`Client::connect_lazy`] with TLS and credentials.
    pub fn connect_lazy_with(
        addr: impl Into<String>,
        options: &ClientOptions,
    ) -> Result<Client, ClientError> {
        Ok(Client::from_channel_with(Client::endpoint_with(addr, options)?.connect_lazy(), options))
    }

    /// A client whose writes return only once `replicas` replicas (the one called
    /// included) hold them, or fail with `Unavailable` (deadline exceeded) after `timeout`
    /// without being undone.
    pub fn with_write_concern(mut self, replicas: u32, timeout: std::time::Duration) -> Client {
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        self.concern = Some(pb::WriteConcern { replicas, timeout_ms });
        self
    }

    /// A client over an existing channel; message size limits are set here.
    pub fn from_channel(channel: Channel) -> Client {
        Client::from_channel_with(channel, &ClientOptions::new())
    }

    /// A client over an existing channel that sends the token of `options` on every call.
    /// (TLS is the channel's: see [`Client::endpoint_with`].)
    pub fn from_channel_with(channel: Channel, options: &ClientOptions) -> Client {
        let service = |channel: Channel| InterceptedService::new(channel, options.credentials());
        Client {
            logs: LogsClient::new(service(channel.clone()))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
            data: DataClient::new(service(channel.clone()))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
            admin: AdminClient::new(service(channel.clone()))
                .max_decoding_message_size(MESSAGE_BYTES_MAX)
                .max_encoding_message_size(MESSAGE_BYTES_MAX),
            health: HealthClient::new(service(channel)),
            concern: None,
        }
    }

    // -----------------------------------------------------------------------------------
    // Logs.

    /// Creates a log signed by the replica's writer key. Creating the same log twice
    /// returns the existing one.
    pub async fn create_log(&self, options: &CreateLogOptions) -> Result<LogInfo, ClientError> {
        let reply = self.logs.clone().create_log(options.to_request()).await?;
        LogInfo::try_from(reply.into_inner())
    }

    /// Registers a manifest the caller signed with its own key.
    pub async fn register_log(&self, manifest: &SignedManifest) -> Result<LogInfo, ClientError> {
        let request =
            pb::CreateLogRequest { signed_manifest: manifest.bytes().to_vec(), ..Default::default() };
        let reply = self.logs.clone().create_log(request).await?;
        LogInfo::try_from(reply.into_inner())
    }

    /// One log, by name or 64-character hex id.
    pub async fn get_log(&self, log: &str) -> Result<LogInfo, ClientError> {
        let reply = self.logs.clone().get_log(pb::GetLogRequest { log: log.to_owned() }).await?;
        LogInfo::try_from(reply.into_inner())
    }

    /// Every log the replica hosts.
    pub async fn list_logs(&self) -> Result<Vec<LogInfo>, ClientError> {
        let reply = self.logs.clone().list_logs(pb::ListLogsRequest {}).await?;
        reply.into_inner().logs.into_iter().map(LogInfo::try_from).collect()
    }

    /// Removes a log and everything stored for it from this replica; returns its id.
    pub async fn drop_log(&self, log: &str) -> Result<LogId, ClientError> {
        let reply = self.logs.clone().drop_log(pb::DropLogRequest { log: log.to_owned() }).await?;
        Ok(convert::log_id("log_id", &reply.into_inner().log_id)?)
    }

    // -----------------------------------------------------------------------------------
    // Writes.

    /// Appends a value to a feed log.
    pub async fn append(&self, log: &str, value: impl Into<Vec<u8>>) -> Result<WriteAck, ClientError> {
        let request = pb::AppendRequest { log: log.to_owned(), value: value.into(), concern: self.concern };
        WriteAck::try_from(self.data.clone().append(request).await?.into_inner())
    }

    /// Sets a key of a kv log.
    pub async fn put(
        &self,
        log: &str,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<WriteAck, ClientError> {
        let request = pb::PutRequest {
            log: log.to_owned(),
            key: key.into(),
            value: value.into(),
            concern: self.concern,
        };
        WriteAck::try_from(self.data.clone().put(request).await?.into_inner())
    }

    /// Deletes a key of a kv log.
    pub async fn delete(&self, log: &str, key: impl Into<Vec<u8>>) -> Result<WriteAck, ClientError> {
        let request = pb::DeleteRequest { log: log.to_owned(), key: key.into(), concern: self.concern };
        WriteAck::try_from(self.data.clone().delete(request).await?.into_inner())
    }

    /// Adds or updates the edge `(src, label, dst)` of a graph log.
    pub async fn link(
        &self,
        log: &str,
        src: impl Into<Vec<u8>>,
        label: impl Into<String>,
        dst: impl Into<Vec<u8>>,
        props: impl Into<Vec<u8>>,
    ) -> Result<WriteAck, ClientError> {
        let request = pb::LinkRequest {
            log: log.to_owned(),
            src: src.into(),
            label: label.into(),
            dst: dst.into(),
            props: props.into(),
            concern: self.concern,
        };
        WriteAck::try_from(self.data.clone().link(request).await?.into_inner())
    }

    /// Removes the edge `(src, label, dst)` of a graph log.
    pub async fn unlink(
        &self,
        log: &str,
        src: impl Into<Vec<u8>>,
        label: impl Into<String>,
        dst: impl Into<Vec<u8>>,
    ) -> Result<WriteAck, ClientError> {
        let request = pb::UnlinkRequest {
            log: log.to_owned(),
            src: src.into(),
            label: label.into(),
            dst: dst.into(),
            concern: self.concern,
        };
        WriteAck::try_from(self.data.clone().unlink(request).await?.into_inner())
    }

    /// Writes many ops for one or more logs, all accepted or all refused. Returns one
    /// acknowledgement per op, in order.
    pub async fn write(&self, ops: Vec<RoutedOp>) -> Result<Vec<WriteAck>, ClientError> {
        let count = ops.len();
        let request = pb::WriteRequest {
            ops: ops
                .into_iter()
                .map(|routed| pb::RoutedOp { log: routed.log, op: Some(routed.op.into()) })
                .collect(),
            concern: self.concern,
        };
        let acks = self.data.clone().write(request).await?.into_inner().acks;
        if acks.len() != count {
            return Err(ClientError::corrupt_reply(
                "write",
                format_args!("{} acknowledgements for {count} ops", acks.len()),
            ));
        }
        acks.into_iter().map(WriteAck::try_from).collect()
    }

    /// Submits entries signed by the caller. Parents may come in the same call, before
    /// their children. Returns one result per entry, in order.
    pub async fn submit(&self, entries: &[VerifiedEntry]) -> Result<Vec<SubmitResult>, ClientError> {
        self.submit_encoded(entries.iter().map(|e| e.bytes().to_vec()).collect()).await
    }

    /// Submits entries already in canonical CBOR, for callers that relay entries they
    /// did not decode. The replica verifies them.
    pub async fn submit_encoded(&self, entries: Vec<Vec<u8>>) -> Result<Vec<SubmitResult>, ClientError> {
        let count = entries.len();
        let results = self.data.clone().submit(pb::SubmitRequest { entries }).await?.into_inner().results;
        if results.len() != count {
            return Err(ClientError::corrupt_reply(
                "submit",
                format_args!("{} results for {count} entries", results.len()),
            ));
        }
        results.into_iter().map(SubmitResult::try_from).collect()
    }

    /// Signs `ops` with `key` as one entry on the log's current heads and submits it: reads
    /// the heads, builds the draft with [`Heads::draft`], signs, submits. The key must be
    /// in the log's ACL (or the ACL open).
    pub async fn submit_signed(
        &self,
        log: &str,
        ops: Vec<Op>,
        key: &WriterKey,
    ) -> Result<SubmitResult, ClientError> {
        let heads = self.heads(log).await?;
        let entry = heads
            .draft(ops)
            .sign(key)
            .map_err(|e| ClientError::Invalid(format!("cannot sign the entry: {e}")))?;
        let mut results = self.submit(std::slice::from_ref(&entry)).await?;
        // `submit` checked that there is one result per entry.
        let result = results.remove(0);
        if result.entry_hash != entry.hash() {
            return Err(ClientError::corrupt_reply(
                "submit",
                format_args!("result for {} but entry {} was sent", result.entry_hash, entry.hash()),
            ));
        }
        Ok(result)
    }

    // -----------------------------------------------------------------------------------
    // Reads.

    /// The current value of a kv key, or `None` if it was never set or is deleted.
    pub async fn get(&self, log: &str, key: impl Into<Vec<u8>>) -> Result<Option<Versioned>, ClientError> {
        self.get_as_of(log, key, None).await
    }

    /// The value a kv key had at a point in the log's past (`None`: now).
    pub async fn get_as_of(
        &self,
        log: &str,
        key: impl Into<Vec<u8>>,
        as_of: Option<AsOf>,
    ) -> Result<Option<Versioned>, ClientError> {
        let request = pb::GetRequest { log: log.to_owned(), key: key.into(), as_of: as_of.map(AsOf::to_pb) };
        let reply = self.data.clone().get(request).await?.into_inner();
        if !reply.found {
            return Ok(None);
        }
        let clock = convert::clock("clock", reply.clock.as_ref())?;
        Ok(Some(Versioned { value: reply.value, clock }))
    }

    /// One page of live keys of a kv log, in key order. Continue with
    /// `start = page.next_start` while it is set.
    pub async fn scan(&self, log: &str, options: &ScanOptions) -> Result<ScanPage, ClientError> {
        let request = pb::ScanRequest {
            log: log.to_owned(),
            prefix: options.prefix.clone(),
            start: options.start.clone(),
            end: options.end.clone(),
            limit: options.limit,
            as_of: options.as_of.map(AsOf::to_pb),
        };
        let reply = self.data.clone().scan(request).await?.into_inner();
        let items = reply.items.into_iter().map(KeyValue::try_from).collect::<Result<Vec<_>, _>>()?;
        let next_start = (!reply.next_start.is_empty()).then_some(reply.next_start);
        Ok(ScanPage { items, next_start })
    }

    /// Feed items in the total order, from the start, after a position, or the tail: one
    /// page ([`Client::read_feed_page`] says whether more follow).
    pub async fn read_feed(
        &self,
        log: &str,
        options: &ReadFeedOptions,
    ) -> Result<Vec<FeedItem>, ClientError> {
        Ok(self.read_feed_page(log, options).await?.items)
    }

    /// One page of a feed, and whether more items follow it.
    pub async fn read_feed_page(
        &self,
        log: &str,
        options: &ReadFeedOptions,
    ) -> Result<FeedPage, ClientError> {
        let request = pb::ReadFeedRequest {
            log: log.to_owned(),
            after: options.after.clone(),
            limit: options.limit,
            tail: options.tail,
            as_of: options.as_of.map(AsOf::to_pb),
        };
        let reply = self.data.clone().read_feed(request).await?.into_inner();
        let items = reply.items.into_iter().map(FeedItem::try_from).collect::<Result<_, _>>()?;
        let next_after = (!reply.next_after.is_empty()).then_some(reply.next_after);
        Ok(FeedPage { items, more: reply.more, next_after })
    }

    /// The last `n` items of a feed, oldest first (`n` of 0 lets the server choose).
    pub async fn tail(&self, log: &str, n: u32) -> Result<Vec<FeedItem>, ClientError> {
        self.read_feed(log, &ReadFeedOptions { limit: n, tail: true, ..Default::default() }).await
    }

    /// Edges of a graph log out of or into `node`: one page ([`Client::edges_page`]
    /// says where the next starts).
    pub async fn edges(
        &self,
        log: &str,
        node: impl Into<Vec<u8>>,
        options: &EdgesOptions,
    ) -> Result<Vec<Edge>, ClientError> {
        Ok(self.edges_page(log, node, options).await?.edges)
    }

    /// One page of edges, and where the next page starts.
    pub async fn edges_page(
        &self,
        log: &str,
        node: impl Into<Vec<u8>>,
        options: &EdgesOptions,
    ) -> Result<EdgePage, ClientError> {
        let direction = match options.direction {
            Direction::Out => pb::Direction::Out,
            Direction::In => pb::Direction::In,
        };
        let request = pb::EdgesRequest {
            log: log.to_owned(),
            node: node.into(),
            direction: direction as i32,
            label: options.label.clone().unwrap_or_default(),
            limit: options.limit,
            after: options.after.clone(),
            as_of: options.as_of.map(AsOf::to_pb),
        };
        let reply = self.data.clone().edges(request).await?.into_inner();
        let edges = reply.edges.into_iter().map(Edge::try_from).collect::<Result<_, _>>()?;
        Ok(EdgePage { edges, next_after: (!reply.next_after.is_empty()).then_some(reply.next_after) })
    }

    /// One page of a log's history: every version of a key or edge in the total order,
    /// or a writer's entries in a range of seqs. Continue with `after =
    /// page.next_after` while it is set (`after` empty for the first page; `limit` 0
    /// lets the server choose).
    pub async fn history(
        &self,
        log: &str,
        target: &HistoryTarget,
        after: Vec<u8>,
        limit: u32,
    ) -> Result<HistoryPage, ClientError> {
        use pb::history_request::Target;
        let target = match target {
            HistoryTarget::Key(key) => Target::Key(key.clone()),
            HistoryTarget::Edge { src, label, dst } => {
                Target::Edge(pb::EdgeRef { src: src.clone(), label: label.clone(), dst: dst.clone() })
            }
            HistoryTarget::Writer { writer, from, to } => {
                Target::Writer(pb::WriterRange { writer: writer.0.to_vec(), from: *from, to: *to })
            }
        };
        let request = pb::HistoryRequest { log: log.to_owned(), target: Some(target), limit, after };
        let reply = self.data.clone().history(request).await?.into_inner();
        let versions = reply
            .versions
            .into_iter()
            .map(|v| {
                Ok(Version {
                    seq: v.seq,
                    entry_hash: convert::entry_hash("entry_hash", &v.entry_hash)?,
                    op_index: v.op_index,
                    clock: convert::clock("clock", v.clock.as_ref())?,
                    value: v.live.then_some(v.value),
                })
            })
            .collect::<Result<_, ClientError>>()?;
        let entries = reply
            .entries
            .into_iter()
            .map(|e| {
                Ok(WriterEntry {
                    seq: e.seq,
                    entry_hash: convert::entry_hash("entry_hash", &e.entry_hash)?,
                    clock: convert::clock("clock", e.clock.as_ref())?,
                    op_count: e.op_count,
                })
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(HistoryPage {
            versions,
            entries,
            next_after: (!reply.next_after.is_empty()).then_some(reply.next_after),
        })
    }

    /// One entry by hash, verified against that hash and its writer's signature.
    pub async fn get_entry(&self, hash: EntryHash) -> Result<StoredEntry, ClientError> {
        let reply = self.data.clone().get_entry(pb::GetEntryRequest { hash: hash.0.to_vec() }).await?;
        StoredEntry::verify(reply.into_inner(), hash)
    }

    /// The heads of a log with their clocks.
    pub async fn heads(&self, log: &str) -> Result<Heads, ClientError> {
        let reply = self.data.clone().heads(pb::HeadsRequest { log: log.to_owned() }).await?;
        Heads::try_from(reply.into_inner())
    }

    /// The applied ops of a log in seq order, of entries with seq above `after_seq`.
    /// With `follow`, the stream stays open and delivers new ops as they land; without,
    /// it ends at the current seq.
    pub async fn subscribe(
        &self,
        log: &str,
        after_seq: u64,
        follow: bool,
    ) -> Result<AppliedOpStream, ClientError> {
        let request =
            pb::SubscribeRequest { log: log.to_owned(), after_seq, follow, consumer: String::new() };
        self.subscribe_request(request).await
    }

    /// The applied ops of a log after the committed seq of durable consumer `consumer`,
    /// which the replica keeps across restarts of either side; commit progress with
    /// [`Client::commit_consumer`]. A consumer the replica does not know yet is created,
    /// committed at `start_after`; for a known one `start_after` is ignored.
    pub async fn subscribe_consumer(
        &self,
        log: &str,
        consumer: &str,
        start_after: u64,
        follow: bool,
    ) -> Result<AppliedOpStream, ClientError> {
        let request = pb::SubscribeRequest {
            log: log.to_owned(),
            after_seq: start_after,
            follow,
            consumer: consumer.to_owned(),
        };
        self.subscribe_request(request).await
    }

    async fn subscribe_request(&self, request: pb::SubscribeRequest) -> Result<AppliedOpStream, ClientError> {
        let stream = self.data.clone().subscribe(request).await?.into_inner();
        Ok(stream.map(|item| item.map_err(ClientError::from).and_then(AppliedOp::try_from)).boxed())
    }

    /// Stores, durably, that `consumer` processed every entry of `log` up to `seq`,
    /// creating the consumer if it is new. A seq past the log's end on the replica is
    /// [`ClientError::Invalid`]; a new consumer over the replica's limit per log,
    /// [`ClientError::ResourceExhausted`].
    pub async fn commit_consumer(
        &self,
        log: &str,
        consumer: &str,
        seq: u64,
    ) -> Result<ConsumerInfo, ClientError> {
        let request = pb::CommitConsumerRequest { log: log.to_owned(), consumer: consumer.to_owned(), seq };
        Ok(self.data.clone().commit_consumer(request).await?.into_inner().into())
    }

    /// Removes a durable consumer ([`ClientError::NotFound`] if the log has none by
    /// that name).
    pub async fn delete_consumer(&self, log: &str, consumer: &str) -> Result<(), ClientError> {
        let request = pb::DeleteConsumerRequest { log: log.to_owned(), consumer: consumer.to_owned() };
        self.data.clone().delete_consumer(request).await?;
        Ok(())
    }

    /// A log's durable consumers by name, and the most one log may have on the replica.
    pub async fn consumers(&self, log: &str) -> Result<(Vec<ConsumerInfo>, u32), ClientError> {
        let request = pb::ListConsumersRequest { log: log.to_owned() };
        let reply = self.data.clone().list_consumers(request).await?.into_inner();
        Ok((reply.consumers.into_iter().map(ConsumerInfo::from).collect(), reply.limit))
    }

    // -----------------------------------------------------------------------------------
    // Admin and health.

    /// The replica's view of itself: identity, epoch, version, every log, its peers and
    /// how far replication has come with each, membership and drain state.
    pub async fn status(&self) -> Result<Status, ClientError> {
        let reply = self.admin.clone().status(pb::StatusRequest {}).await?;
        Status::try_from(reply.into_inner())
    }

    /// Replaces the replica's member list (the peers it replicates with besides those
    /// from `--peer` flags and DNS) and returns the generation now in force. The list is
    /// stored and survives restarts. `generation` must be higher than the current one
    /// (see [`Status::members_generation`]); a stale update is refused with
    /// [`ClientError::FailedPrecondition`], so of two racing updates the newer wins.
    pub async fn set_members(&self, generation: u64, members: Vec<String>) -> Result<u64, ClientError> {
        let request = pb::SetMembersRequest { generation, members };
        let reply = self.admin.clone().set_members(request).await?.into_inner();
        Ok(reply.generation)
    }

    /// Makes the replica refuse new local writes, then waits until every entry it holds
    /// is held by at least one other member, for at most `timeout`; call it before
    /// removing a replica. Returns, per log, the seq reached and a member holding it.
    /// On timeout the replica stays draining and the call fails with
    /// [`ClientError::Unavailable`] naming the logs still waiting; call it again.
    pub async fn drain(&self, timeout: Duration) -> Result<Vec<DrainedLog>, ClientError> {
        // 0 would mean the server's default, not "do not wait".
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX).max(1);
        let mut request = tonic::Request::new(pb::DrainRequest { timeout_ms, cancel: false });
        // The gRPC deadline tells the server when this client stops listening; the grace
        // lets the server's own timeout, which names the logs still waiting, come first.
        request.set_timeout(Duration::from_millis(u64::from(timeout_ms)) + DRAIN_REPLY_GRACE);
        let reply = self.admin.clone().drain(request).await?.into_inner();
        reply
            .logs
            .into_iter()
            .enumerate()
            .map(|(i, log)| DrainedLog::from_pb(&format!("logs[{i}]"), log))
            .collect()
    }

    /// Stops draining: the replica accepts local writes again (a removal called off).
    pub async fn cancel_drain(&self) -> Result<(), ClientError> {
        self.admin.clone().drain(pb::DrainRequest { timeout_ms: 0, cancel: true }).await?;
        Ok(())
    }

    /// Takes and records a checkpoint of a log: a consistent cut with the Merkle root of
    /// the log's view. A recorded checkpoint's seq can be the base of a delta export.
    pub async fn checkpoint(&self, log: &str) -> Result<CheckpointInfo, ClientError> {
        let reply = self.admin.clone().checkpoint(pb::CheckpointRequest { log: log.to_owned() }).await?;
        CheckpointInfo::from_pb("checkpoint", reply.into_inner())
    }

    /// Streams a snapshot of a log in the format of `docs/snapshot-format.md`: a full
    /// one, or with `base_seq` a delta of the entries after that recorded checkpoint
    /// (refused with [`ClientError::FailedPrecondition`] if there is none at that seq).
    /// The bytes are passed on as they come; a reader such as
    /// [`Client::import_snapshot`] verifies them. An error mid-stream ends it, so a
    /// stream that ended with an error holds an incomplete snapshot.
    pub async fn export_snapshot(
        &self,
        log: &str,
        base_seq: Option<u64>,
    ) -> Result<SnapshotStream, ClientError> {
        let request = pb::ExportSnapshotRequest { log: log.to_owned(), base_seq: base_seq.unwrap_or(0) };
        let stream = self.admin.clone().export_snapshot(request).await?.into_inner();
        Ok(stream.map(|chunk| chunk.map(|c| Bytes::from(c.data)).map_err(ClientError::from)).boxed())
    }

    /// Sends a snapshot (the bytes of an [`Client::export_snapshot`], in chunks of any
    /// size up to [`MESSAGE_BYTES_MAX`]) to the replica, which verifies all of it before
    /// it applies any. A source that fails should just end the stream: the replica then
    /// refuses the snapshot as truncated and applies nothing.
    pub async fn import_snapshot<S>(&self, chunks: S) -> Result<ImportReport, ClientError>
    where
        S: Stream<Item = Bytes> + Send + 'static,
    {
        let request = chunks.map(|data| pb::SnapshotChunk { data: data.into() });
        let reply = self.admin.clone().import_snapshot(request).await?;
        ImportReport::try_from(reply.into_inner())
    }

    /// Writes snapshots of `logs` (names or ids; empty for all) to the backup
    /// destination the replica knows as `destination` (a name it was started with,
    /// `plaitd --backup-destination NAME=URL`, never a URL; empty for its only one) and
    /// records them in that destination's catalog. With `delta`, each log gets the entries since this
    /// replica's last backup of it (a full one if there is none); `retain_full` keeps
    /// that many full backups per log and deletes older chains (0: keep everything).
    pub async fn backup(
        &self,
        destination: &str,
        logs: Vec<String>,
        delta: bool,
        retain_full: u32,
    ) -> Result<BackupReport, ClientError> {
        let request = pb::BackupRequest { destination: destination.to_owned(), logs, delta, retain_full };
        let reply = self.admin.clone().backup(request).await?;
        BackupReport::try_from(reply.into_inner())
    }

    /// Starts the backup [`Client::backup`] takes, in the background on the replica,
    /// under `job_id` (1 to 128 characters of `[A-Za-z0-9._:-]`, the caller's choice), and
    /// returns at once; [`Client::backup_job`] follows it. Asking again with the same id
    /// and request returns the same job and starts nothing; the same id with another
    /// request is [`ClientError::AlreadyExists`]. Jobs are forgotten when the replica
    /// restarts.
    pub async fn start_backup(
        &self,
        job_id: &str,
        destination: &str,
        logs: Vec<String>,
        delta: bool,
        retain_full: u32,
    ) -> Result<BackupJobReport, ClientError> {
        let backup = pb::BackupRequest { destination: destination.to_owned(), logs, delta, retain_full };
        let request = pb::StartBackupRequest { job_id: job_id.to_owned(), backup: Some(backup) };
        let reply = self.admin.clone().start_backup(request).await?;
        BackupJobReport::try_from(reply.into_inner())
    }

    /// A backup job started with [`Client::start_backup`]: [`ClientError::NotFound`] when
    /// the replica does not know it (it restarted, or never had it).
    pub async fn backup_job(&self, job_id: &str) -> Result<BackupJobReport, ClientError> {
        let request = pb::GetBackupJobRequest { job_id: job_id.to_owned() };
        let reply = self.admin.clone().get_backup_job(request).await?;
        BackupJobReport::try_from(reply.into_inner())
    }

    /// The replica's overall health from the standard gRPC health service.
    pub async fn health(&self) -> Result<ServingStatus, ClientError> {
        self.health_of("").await
    }

    /// The health of one service (`plait.v1.Data`, ...); the empty name is the server.
    pub async fn health_of(&self, service: &str) -> Result<ServingStatus, ClientError> {
        let request = tonic_health::pb::HealthCheckRequest { service: service.to_owned() };
        let reply = self.health.clone().check(request).await?.into_inner();
        ServingStatus::try_from(reply.status).map_err(|_| {
            ClientError::corrupt_reply("health", format_args!("unknown serving status {}", reply.status))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare `host:port` gets `http://`, or `https://` once TLS is set up; a URI keeps
    /// its scheme; empty, other schemes and `http://` with TLS settings are refused.
    #[test]
    fn addresses_become_uris() {
        let plain = ClientOptions::new();
        let tls = ClientOptions::new().tls_ca_pem(b"-----BEGIN CERTIFICATE-----".to_vec());
        assert_eq!(uri_for("127.0.0.1:7070", &plain).unwrap(), "http://127.0.0.1:7070");
        assert_eq!(uri_for("  localhost:7070 ", &plain).unwrap(), "http://localhost:7070");
        assert_eq!(uri_for("http://10.0.0.1:7070", &plain).unwrap(), "http://10.0.0.1:7070");
        assert_eq!(uri_for("https://plait.example:443", &plain).unwrap(), "https://plait.example:443");
        assert_eq!(uri_for("plait-0:7070", &tls).unwrap(), "https://plait-0:7070");
        assert_eq!(uri_for("https://plait-0:7070", &tls).unwrap(), "https://plait-0:7070");
        assert!(matches!(uri_for("", &plain), Err(ClientError::Invalid(_))));
        let err = uri_for("http://plait-0:7070", &tls).unwrap_err();
        assert!(err.message().contains("use https://plait-0:7070"), "{err}");
        assert!(matches!(uri_for("grpc://plait-0:7070", &plain), Err(ClientError::Invalid(_))));
    }

    /// An address that is not a URI is refused as invalid, naming the address.
    #[test]
    fn bad_address_is_invalid() {
        let err = Client::endpoint("http://exa mple:70").unwrap_err();
        assert!(matches!(err, ClientError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains("exa mple"), "{err}");
    }

    /// Nothing listens on port 1: connecting fails fast as a retryable transport error
    /// that names the address.
    #[tokio::test]
    async fn connection_refused_is_transport() {
        let err = Client::connect("127.0.0.1:1").await.unwrap_err();
        assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }

    /// A lazy client builds without a server; its first call fails as unavailable.
    #[tokio::test]
    async fn lazy_client_fails_on_first_call() {
        let client = Client::connect_lazy("127.0.0.1:1").unwrap();
        let err = client.status().await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
    }
}
