//! Growing the replicas' volumes when `spec.storage.size` grows.
//!
//! A StatefulSet's volume claim templates cannot change, so the template keeps the size
//! the cluster was created with and the operator grows each claim itself: every pass it
//! compares each replica's PersistentVolumeClaim with the spec and, when the claim asks
//! for less, checks that its storage class allows expansion and patches the claim's
//! request. The storage system then resizes the volume (and the kubelet the
//! filesystem); until the claim's capacity reaches its request the volume is listed in
//! `status.resizingVolumes`. A class that does not allow expansion is reported, with a
//! Warning event, and the claim is left alone. The CRD refuses a smaller size (a CEL rule
//! with `quantity()`), so a claim never needs to shrink.
//!
//! With `watchNamespace` the operator may not read cluster-scoped StorageClasses; it then
//! asks the API server directly, whose admission refuses a claim of a class that cannot
//! expand, and reports that refusal the same way.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};

use crate::cluster::Error;
use crate::context::Context;
use crate::crd::{PlaitCluster, VolumeStatus};
use crate::plan;

/// The annotation that marks the cluster's default storage class.
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// What one pass found and did about the volumes.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StorageObservation {
    /// Claims whose capacity has not reached their request yet.
    pub resizing: Vec<VolumeStatus>,
    /// Claims that should grow but cannot, and why.
    pub problems: Vec<String>,
}

/// The claim of replica `ordinal`, as the StatefulSet names it.
pub(crate) fn claim_name(cluster: &str, ordinal: i32) -> String {
    format!("{}-{cluster}-{ordinal}", plan::DATA_VOLUME)
}

/// What a claim asks for.
fn requested(claim: &PersistentVolumeClaim) -> Option<&Quantity> {
    claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?.get("storage")
}

/// What the claim's volume has now.
fn capacity(claim: &PersistentVolumeClaim) -> Option<&Quantity> {
    claim.status.as_ref()?.capacity.as_ref()?.get("storage")
}

/// A quantity in bytes.
fn bytes(quantity: Option<&Quantity>) -> Option<u128> {
    quantity.and_then(|q| plan::quantity_bytes(&q.0))
}

/// A quantity as the claim wrote it.
fn shown(quantity: Option<&Quantity>) -> String {
    quantity.map(|q| q.0.clone()).unwrap_or_default()
}

/// Whether storage class `name` (the default class when `None`) allows expansion:
/// `Ok(None)` when the operator may not read StorageClasses (the API server's admission
/// then decides), `Err` with the reason when it does not allow it.
async fn class_allows_expansion(ctx: &Context, name: Option<&str>) -> Result<Option<()>, String> {
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let class = match name {
        Some(name) => classes.get_opt(name).await,
        None => classes.list(&ListParams::default()).await.map(|list| {
            list.items.into_iter().find(|c| c.annotations().get(DEFAULT_CLASS).is_some_and(|v| v == "true"))
        }),
    };
    let described =
        name.map_or_else(|| "the default storage class".to_owned(), |n| format!("storage class {n}"));
    match class {
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(None),
        Err(e) => Err(format!("cannot read {described}: {e}")),
        Ok(None) => Err(format!("{described} does not exist")),
        Ok(Some(class)) if class.allow_volume_expansion == Some(true) => Ok(Some(())),
        Ok(Some(class)) => Err(format!(
            "storage class {} does not allow volume expansion (allowVolumeExpansion is not true)",
            class.name_any()
        )),
    }
}

/// Grows the claims of replicas `0..replicas` to the spec's size, and reports the ones
/// still resizing and the ones that cannot grow. Events are recorded only when something
/// changes: a patch, or a problem the last status did not already carry.
pub(crate) async fn grow(
    cluster: &PlaitCluster,
    ctx: &Context,
    namespace: &str,
    replicas: i32,
    previous_problems: &str,
) -> Result<StorageObservation, Error> {
    let mut obs = StorageObservation::default();
    let name = cluster.name_any();
    let Some(wanted) = plan::quantity_bytes(&cluster.spec.storage.size) else {
        // The CRD's pattern admits only quantities this parses; nothing to do otherwise.
        return Ok(obs);
    };
    let reference = cluster.object_ref(&());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    for ordinal in 0..replicas {
        let claim_name = claim_name(&name, ordinal);
        // Not made yet: the StatefulSet creates it with the template's size, and the next
        // pass grows it.
        let Some(mut claim) = claims.get_opt(&claim_name).await? else { continue };
        // Only a bound claim's request may change; an unbound one is grown once bound.
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            continue;
        }
        if bytes(requested(&claim)).is_some_and(|r| r < wanted) {
            let class = claim.spec.as_ref().and_then(|s| s.storage_class_name.clone());
            let refused = match class_allows_expansion(ctx, class.as_deref()).await {
                Err(why) => Some(why),
                Ok(_) => {
                    let patch = serde_json::json!({
                        "spec": { "resources": { "requests": { "storage": cluster.spec.storage.size } } }
                    });
                    match claims.patch(&claim_name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                        Ok(patched) => {
                            ctx.event(
                                &reference,
                                false,
                                "VolumeExpansion",
                                "Resize",
                                format!(
                                    "growing PersistentVolumeClaim {claim_name} from {} to {}",
                                    shown(requested(&claim)),
                                    cluster.spec.storage.size
                                ),
                            )
                            .await;
                            claim = patched;
                            None
                        }
                        Err(kube::Error::Api(e)) if matches!(e.code, 403 | 422) => Some(e.message),
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            if let Some(why) = refused {
                let problem = format!(
                    "cannot grow PersistentVolumeClaim {claim_name} to {}: {why}",
                    cluster.spec.storage.size
                );
                if !previous_problems.contains(&problem) {
                    ctx.event(&reference, true, "VolumeExpansionFailed", "Resize", problem.clone()).await;
                }
                obs.problems.push(problem);
                continue;
            }
        }
        let condition = claim
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.status == "True").map(|c| c.type_.clone()));
        let (wants, has) = (bytes(requested(&claim)), bytes(capacity(&claim)));
        if wants.zip(has).is_some_and(|(r, c)| c < r) || condition.is_some() {
            obs.resizing.push(VolumeStatus {
                name: claim_name,
                requested: shown(requested(&claim)),
                capacity: shown(capacity(&claim)),
                state: condition.unwrap_or_else(|| "Pending".into()),
            });
        }
    }
    Ok(obs)
}
