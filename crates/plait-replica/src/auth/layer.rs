//! The one place calls are authenticated and authorized: a tower layer in front of every
//! service. It finds the caller (bearer token, else verified client certificate), maps
//! the method to the permission it needs, refuses with `UNAUTHENTICATED` or
//! `PERMISSION_DENIED` before any handler runs (logged and counted), and otherwise puts
//! the [`Principal`] in the request for handlers. It also marks the call open on its
//! connection (for the idle timeout) and gives unary calls a default deadline.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tonic::body::Body;

use super::Principal;
use super::config::{AuthConfigError, Directory};
use crate::error::ReplicaError;
use crate::net::{ActiveCall, ConnInfo};
use crate::status::refusal;
use crate::telemetry::Metrics;

/// What a method needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Anyone, even unauthenticated: health checks.
    Public,
    /// Any authenticated caller: Status (which says who you are), reflection.
    Authenticated,
    Read,
    /// Some write grant; which logs is checked where the log is known.
    Write,
    LogAdmin,
    ClusterAdmin,
    Peer,
}

/// Every method the replica serves: what it needs of its caller, and whether the default
/// deadline applies (unary calls that are not meant to run long). The whole
/// authorization policy is this table; a method missing here needs authentication and
/// nothing more, and tonic answers it UNIMPLEMENTED.
const RULES: &[(&str, Need, bool)] = &[
    ("/grpc.health.v1.Health/Check", Need::Public, true),
    ("/grpc.health.v1.Health/Watch", Need::Public, false),
    ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Need::Authenticated, false),
    ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Need::Authenticated, false),
    ("/plait.v1.Admin/Status", Need::Authenticated, true),
    ("/plait.v1.Data/Get", Need::Read, true),
    ("/plait.v1.Data/Scan", Need::Read, true),
    ("/plait.v1.Data/ReadFeed", Need::Read, true),
    ("/plait.v1.Data/Edges", Need::Read, true),
    ("/plait.v1.Data/GetEntry", Need::Read, true),
    ("/plait.v1.Data/Heads", Need::Read, true),
    ("/plait.v1.Data/Subscribe", Need::Read, false),
    ("/plait.v1.Data/History", Need::Read, true),
    // Consumers are readers' bookmarks: whoever may read a log may keep one (bounded per
    // log by --consumers-per-log-max).
    ("/plait.v1.Data/CommitConsumer", Need::Read, true),
    ("/plait.v1.Data/DeleteConsumer", Need::Read, true),
    ("/plait.v1.Data/ListConsumers", Need::Read, true),
    ("/plait.v1.Logs/GetLog", Need::Read, true),
    ("/plait.v1.Logs/ListLogs", Need::Read, true),
    ("/plait.v1.Data/Append", Need::Write, true),
    ("/plait.v1.Data/Put", Need::Write, true),
    ("/plait.v1.Data/Delete", Need::Write, true),
    ("/plait.v1.Data/Link", Need::Write, true),
    ("/plait.v1.Data/Unlink", Need::Write, true),
    ("/plait.v1.Data/Write", Need::Write, true),
    ("/plait.v1.Data/Submit", Need::Write, true),
    ("/plait.v1.Logs/CreateLog", Need::LogAdmin, true),
    ("/plait.v1.Logs/DropLog", Need::LogAdmin, true),
    ("/plait.v1.Admin/SetMembers", Need::ClusterAdmin, true),
    ("/plait.v1.Admin/Checkpoint", Need::ClusterAdmin, true),
    // Long by nature: a drain waits on peers, a backup writes everything, the rest stream.
    ("/plait.v1.Admin/Drain", Need::ClusterAdmin, false),
    ("/plait.v1.Admin/ExportSnapshot", Need::ClusterAdmin, false),
    ("/plait.v1.Admin/ImportSnapshot", Need::ClusterAdmin, false),
    ("/plait.v1.Admin/Backup", Need::ClusterAdmin, false),
    // The background form answers at once.
    ("/plait.v1.Admin/StartBackup", Need::ClusterAdmin, true),
    ("/plait.v1.Admin/GetBackupJob", Need::ClusterAdmin, true),
    ("/plait.v1.Sync/Hello", Need::Peer, true),
    ("/plait.v1.Sync/Fetch", Need::Peer, true),
    ("/plait.v1.Sync/Pull", Need::Peer, false),
    ("/plait.v1.Sync/Reconcile", Need::Peer, false),
    ("/plait.v1.Sync/Watch", Need::Peer, false),
    ("/plait.v1.Sync/Push", Need::Peer, false),
];

/// A method's row of [`RULES`]: its known name (a bounded metrics label), its need and
/// whether the default deadline applies.
pub(crate) fn rule(path: &str) -> (&'static str, Need, bool) {
    RULES.iter().find(|(known, _, _)| *known == path).copied().unwrap_or((
        "unknown",
        Need::Authenticated,
        true,
    ))
}

fn allowed(principal: &Principal, need: Need) -> bool {
    let g = &principal.grants;
    match need {
        Need::Public | Need::Authenticated => true,
        Need::Read => g.read,
        Need::Write => !g.write.is_empty(),
        Need::LogAdmin => g.log_admin,
        Need::ClusterAdmin => g.cluster_admin,
        Need::Peer => g.peer,
    }
}

/// How callers are identified: off (everyone is the trusted anonymous principal), or
/// required, from the auth file (re-read when it changes) and verified certificates.
#[derive(Clone)]
pub(crate) struct Authenticator {
    inner: Arc<AuthInner>,
}

struct AuthInner {
    required: bool,
    file: Option<PathBuf>,
    directory: RwLock<(Option<SystemTime>, Arc<Directory>)>,
    metrics: Metrics,
    call_timeout: Duration,
    /// Shared, so a call costs a reference count, not an allocation.
    anonymous: Principal,
    public: Principal,
}

fn mtime(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Authenticator {
    /// `required`: security is configured (a client CA or an auth file); callers must
    /// then prove who they are.
    pub(crate) fn new(
        required: bool,
        file: Option<PathBuf>,
        metrics: Metrics,
        call_timeout: Duration,
    ) -> Result<Authenticator, AuthConfigError> {
        let directory = match &file {
            Some(path) => (mtime(path), Arc::new(Directory::load(path)?)),
            None => (None, Arc::new(Directory::builtin())),
        };
        Ok(Authenticator {
            inner: Arc::new(AuthInner {
                required,
                file,
                directory: RwLock::new(directory),
                metrics,
                call_timeout,
                anonymous: Principal::anonymous(),
                public: Principal::anonymous_public(),
            }),
        })
    }

    pub(crate) fn required(&self) -> bool {
        self.inner.required
    }

    /// Re-reads the auth file if it changed; a file that no longer parses keeps the old
    /// directory (and says so).
    pub(crate) fn reload_if_changed(&self) -> Result<bool, AuthConfigError> {
        let Some(path) = &self.inner.file else { return Ok(false) };
        let now = mtime(path);
        if self.inner.directory.read().expect("auth lock poisoned").0 == now {
            return Ok(false);
        }
        let directory = Directory::load(path)?;
        *self.inner.directory.write().expect("auth lock poisoned") = (now, Arc::new(directory));
        Ok(true)
    }

    pub(crate) fn spawn_reloader(self, every: Duration, stop: tokio::sync::watch::Receiver<bool>) {
        if self.inner.file.is_some() {
            crate::reload::spawn_reloader("auth file", every, stop, move || self.reload_if_changed());
        }
    }

    /// Who is calling, from the request's token or its connection's certificate.
    fn identify<B>(&self, request: &http::Request<B>) -> Result<Principal, (ReplicaError, &'static str)> {
        if !self.inner.required {
            return Ok(self.inner.anonymous.clone());
        }
        let directory = self.inner.directory.read().expect("auth lock poisoned").1.clone();
        if let Some(value) = request.headers().get(http::header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .filter(|t| !t.is_empty() && t.len() <= 4096);
            let Some(token) = token else {
                return Err((
                    ReplicaError::Unauthenticated("the authorization header must be `Bearer <token>`".into()),
                    "malformed_token",
                ));
            };
            return match directory.bearer(token, super::peer::now_secs()) {
                Ok(Some(principal)) => Ok(principal),
                Ok(None) => Err((
                    ReplicaError::Unauthenticated("the bearer token is not known to this replica".into()),
                    "unknown_token",
                )),
                Err(why) => Err((
                    ReplicaError::Unauthenticated(format!("the bearer JWT is refused: {why}")),
                    "bad_jwt",
                )),
            };
        }
        let cert = request.extensions().get::<ConnInfo>().and_then(|c| c.cert.clone());
        match cert {
            Some(cert) => Ok(directory.certificate(&cert)),
            None => Err((
                ReplicaError::Unauthenticated(
                    "this replica requires authentication: present a client certificate from its CA \
                     (--cert/--key) or a bearer token (--token, PLAIT_TOKEN)"
                        .into(),
                ),
                "no_credentials",
            )),
        }
    }
}

/// The layer for `Server::builder().layer(..)`: the authenticator, and whether this
/// listener leaves the cluster-admin methods to a separate admin address (`Some`: that
/// address, which the refusal names).
#[derive(Clone)]
pub(crate) struct AuthLayer {
    pub(crate) auth: Authenticator,
    pub(crate) admin_elsewhere: Option<std::net::SocketAddr>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, auth: self.auth.clone(), admin_elsewhere: self.admin_elsewhere }
    }
}

#[derive(Clone)]
pub(crate) struct AuthService<S> {
    inner: S,
    auth: Authenticator,
    admin_elsewhere: Option<std::net::SocketAddr>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AuthService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let call = request.extensions().get::<ConnInfo>().map(|c| c.activity.begin());
        let path = request.uri().path().to_owned();
        let (label, need, default_deadline) = rule(&path);
        let decision = if let Some(admin) = self.admin_elsewhere.filter(|_| need == Need::ClusterAdmin) {
            Err((
                ReplicaError::PermissionDenied(format!(
                    "{path} is served on this replica's admin address only (--admin-listen, port {}); call it \
                     there",
                    admin.port()
                )),
                "admin_address_only",
            ))
        } else if need == Need::Public {
            Ok(self.auth.inner.public.clone())
        } else {
            self.auth.identify(&request).and_then(|principal| {
                if allowed(&principal, need) {
                    Ok(principal)
                } else {
                    Err((
                        ReplicaError::PermissionDenied(format!(
                            "{} may not call {path}: it needs the {} role",
                            principal.name,
                            need_role(need)
                        )),
                        "not_granted",
                    ))
                }
            })
        };
        let principal = match decision {
            Ok(p) => p,
            Err((error, reason)) => {
                let remote = request.extensions().get::<ConnInfo>().map(|c| c.remote);
                tracing::warn!(method = %path, ?remote, reason, error = %error, "call refused");
                self.auth.inner.metrics.record_auth_denied(label, reason);
                return Box::pin(async move { Ok(guarded(refusal(error), call)) });
            }
        };
        request.extensions_mut().insert(principal);
        // The clone is ready-checked by tower's contract: swap so `self.inner` stays ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let timeout = (default_deadline && !request.headers().contains_key("grpc-timeout"))
            .then_some(self.auth.inner.call_timeout);
        Box::pin(async move {
            let future = inner.call(request);
            let response = match timeout {
                Some(limit) => match tokio::time::timeout(limit, future).await {
                    Ok(r) => r?,
                    Err(_) => {
                        return Ok(guarded(
                            refusal(ReplicaError::DeadlineExceeded(format!(
                                "the call took longer than this replica's default deadline of {} ms \
                                 (--call-timeout-ms); set a deadline on the call to choose another",
                                limit.as_millis()
                            ))),
                            call,
                        ));
                    }
                },
                None => future.await?,
            };
            Ok(guarded(response, call))
        })
    }
}

fn need_role(need: Need) -> &'static str {
    match need {
        Need::Public | Need::Authenticated => "any",
        Need::Read => "read",
        Need::Write => "write",
        Need::LogAdmin => "log-admin",
        Need::ClusterAdmin => "cluster-admin",
        Need::Peer => "peer",
    }
}

/// The response with the call kept open on its connection until its body ends.
fn guarded<B>(response: http::Response<B>, call: Option<ActiveCall>) -> http::Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    response.map(|body| Body::new(GuardedBody { inner: body, _call: call }))
}

pin_project_lite::pin_project! {
    struct GuardedBody<B> {
        #[pin]
        inner: B,
        _call: Option<ActiveCall>,
    }
}

impl<B: http_body::Body> http_body::Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every method of every service maps to the role the security docs give it; an
    /// unknown method still needs authentication.
    #[test]
    fn methods_need_their_roles() {
        let cases = [
            ("/grpc.health.v1.Health/Check", Need::Public),
            ("/grpc.health.v1.Health/Watch", Need::Public),
            ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Need::Authenticated),
            ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Need::Authenticated),
            ("/plait.v1.Admin/Status", Need::Authenticated),
            ("/plait.v1.Data/Get", Need::Read),
            ("/plait.v1.Data/Scan", Need::Read),
            ("/plait.v1.Data/ReadFeed", Need::Read),
            ("/plait.v1.Data/Edges", Need::Read),
            ("/plait.v1.Data/GetEntry", Need::Read),
            ("/plait.v1.Data/Heads", Need::Read),
            ("/plait.v1.Data/Subscribe", Need::Read),
            ("/plait.v1.Data/History", Need::Read),
            ("/plait.v1.Logs/GetLog", Need::Read),
            ("/plait.v1.Logs/ListLogs", Need::Read),
            ("/plait.v1.Data/Append", Need::Write),
            ("/plait.v1.Data/Put", Need::Write),
            ("/plait.v1.Data/Delete", Need::Write),
            ("/plait.v1.Data/Link", Need::Write),
            ("/plait.v1.Data/Unlink", Need::Write),
            ("/plait.v1.Data/Write", Need::Write),
            ("/plait.v1.Data/Submit", Need::Write),
            ("/plait.v1.Data/CommitConsumer", Need::Read),
            ("/plait.v1.Data/DeleteConsumer", Need::Read),
            ("/plait.v1.Data/ListConsumers", Need::Read),
            ("/plait.v1.Logs/CreateLog", Need::LogAdmin),
            ("/plait.v1.Logs/DropLog", Need::LogAdmin),
            ("/plait.v1.Admin/SetMembers", Need::ClusterAdmin),
            ("/plait.v1.Admin/Drain", Need::ClusterAdmin),
            ("/plait.v1.Admin/Checkpoint", Need::ClusterAdmin),
            ("/plait.v1.Admin/ExportSnapshot", Need::ClusterAdmin),
            ("/plait.v1.Admin/ImportSnapshot", Need::ClusterAdmin),
            ("/plait.v1.Admin/Backup", Need::ClusterAdmin),
            ("/plait.v1.Admin/StartBackup", Need::ClusterAdmin),
            ("/plait.v1.Admin/GetBackupJob", Need::ClusterAdmin),
            ("/plait.v1.Sync/Hello", Need::Peer),
            ("/plait.v1.Sync/Pull", Need::Peer),
            ("/plait.v1.Sync/Reconcile", Need::Peer),
            ("/plait.v1.Sync/Fetch", Need::Peer),
            ("/plait.v1.Sync/Watch", Need::Peer),
            ("/plait.v1.Sync/Push", Need::Peer),
            ("/plait.v1.Nope/Nope", Need::Authenticated),
            ("garbage", Need::Authenticated),
        ];
        for (path, need) in cases {
            assert_eq!(rule(path).1, need, "{path}");
        }
        // The table is the list above, no more: a method added to a service must be
        // given its role here.
        assert_eq!(RULES.len(), cases.len() - 2);
        // Streams and long calls get no default deadline.
        for path in [
            "/plait.v1.Data/Subscribe",
            "/plait.v1.Sync/Pull",
            "/plait.v1.Admin/Backup",
            "/plait.v1.Admin/Drain",
        ] {
            assert!(!rule(path).2, "{path}");
        }
        assert!(rule("/plait.v1.Data/Put").2);
        // Metric labels are bounded: an unknown path, even in a known service, is one value.
        assert_eq!(rule("/evil/\u{1F600}").0, "unknown");
        assert_eq!(rule("/plait.v1.Data/Bogus").0, "unknown");
        assert_eq!(rule("/plait.v1.Data/Put").0, "/plait.v1.Data/Put");
    }
}
