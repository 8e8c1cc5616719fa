//! Runs the controllers: `PlaitCluster` (owning StatefulSets and Services, and woken by
//! the `PlaitBackup`s of a cluster) and `PlaitBackup`; with leader election, only while
//! this operator holds the Lease.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};

use crate::context::Context;
use crate::crd::{PlaitBackup, PlaitCluster};
use crate::leader::{Elector, LeaseSettings, LostLease};

/// Where the operator looks.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// One namespace, or every namespace when `None`.
    pub namespace: Option<String>,
}

fn api<K>(client: &kube::Client, scope: &Scope) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match &scope.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs both controllers until `shutdown` resolves (or, when `on_signal` is set, until
/// SIGTERM or Ctrl-C).
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    on_signal: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=plait-operator");
    let mut clusters = Controller::new(api::<PlaitCluster>(&client, &scope), watcher::Config::default())
        .owns(api::<StatefulSet>(&client, &scope), owned.clone())
        .owns(api::<Service>(&client, &scope), owned)
        .watches(api::<PlaitBackup>(&client, &scope), watcher::Config::default(), |backup| {
            backup.namespace().map(|ns| ObjectRef::<PlaitCluster>::new(&backup.spec.cluster).within(&ns))
        });
    let mut backups = Controller::new(api::<PlaitBackup>(&client, &scope), watcher::Config::default());
    let (stop_clusters, stop_backups) = {
        let shared = futures::FutureExt::shared(Box::pin(shutdown));
        (shared.clone(), shared)
    };
    clusters = clusters.graceful_shutdown_on(stop_clusters);
    backups = backups.graceful_shutdown_on(stop_backups);
    if on_signal {
        clusters = clusters.shutdown_on_signal();
        backups = backups.shutdown_on_signal();
    }
    let clusters = clusters
        .run(crate::cluster::reconcile, crate::cluster::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!("cluster controller: {error}");
            }
        });
    let backups = backups.run(crate::backup::reconcile, crate::backup::error_policy, ctx).for_each(
        |result| async move {
            if let Err(error) = result {
                tracing::debug!("backup controller: {error}");
            }
        },
    );
    futures::join!(clusters, backups);
}

/// Runs the controllers only while this operator leads (see [`crate::leader`]): stands
/// by until it takes the Lease, reconciles while it holds it, and on `shutdown` stops the
/// controllers and releases the Lease. Returns an error, having stopped reconciling at
/// once (in-flight passes are dropped, not finished), when leadership is lost: the
/// process should then exit, and start over as a candidate.
pub async fn run_leading(
    ctx: Arc<Context>,
    scope: Scope,
    settings: LeaseSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), LostLease> {
    let mut stop = futures::FutureExt::shared(Box::pin(shutdown));
    let mut elector = Elector::new(ctx.client.clone(), settings, ctx.clock.clone());
    ctx.metrics.set_leader(false);
    if !elector.acquire(&mut stop).await {
        return Ok(());
    }
    tracing::info!(
        lease = %elector.settings().name,
        identity = %elector.settings().identity,
        "leading: reconciling"
    );
    ctx.metrics.set_leader(true);
    let outcome = {
        let controllers = run(ctx.clone(), scope, false, stop);
        tokio::select! {
            () = controllers => None,
            lost = elector.keep() => Some(lost),
        }
    };
    ctx.metrics.set_leader(false);
    match outcome {
        None => {
            if let Err(error) = elector.release().await {
                tracing::warn!("releasing the lease failed (a standby takes over once it expires): {error}");
            }
            Ok(())
        }
        Some(lost) => Err(lost),
    }
}
