//! A cluster's TLS material, application token and auth file.
//!
//! Every replica of a secured cluster serves TLS with its own certificate (subject CN
//! `<cluster>-<ordinal>`, group `plait:peers`, names for the headless and client
//! Services, `localhost` and `127.0.0.1`), authenticates peers and clients against the
//! cluster's CA, and reads an auth file holding the hash of the application token. The
//! operator talks to replicas with its own client certificate (CN `plait-operator`, group
//! `plait:admins`).
//!
//! Both certificate sources leave the same Secrets, so the pod template does not depend
//! on the source:
//!
//! | Secret | Keys | Made by |
//! |---|---|---|
//! | `<cluster>-ca` | `ca.crt`, `ca.key` | the operator (`tls: Operator` only) |
//! | `<cluster>-<n>-tls` | `tls.crt`, `tls.key`, `ca.crt` | the operator, or cert-manager |
//! | `<cluster>-operator-tls` | `tls.crt`, `tls.key`, `ca.crt` | the operator, or cert-manager |
//! | `<cluster>-client` | `token`, `ca.crt`, `address` | the operator: for applications |
//! | `<cluster>-auth` | `auth.yaml`, `ca.crt` | the operator: mounted by the replicas |
//!
//! With `tls: Operator`, certificates are renewed once less than a third of their
//! lifetime is left, and reissued at once when their names or their CA no longer match;
//! replicas load a changed file within seconds, without a restart. Certificates of
//! ordinals above the current replica count are left in place, and reused (renewed if
//! due) when the cluster grows again.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Resource, ResourceExt};
use plait_client::ClientOptions;
use plait_pki::{Ca, CertSpec, Validity};

use crate::cluster::{Error, FIELD_MANAGER, apply};
use crate::context::Context;
use crate::crd::{IssuerRef, PlaitCluster, TlsMode};
use crate::plan;
use crate::replicas::{GRPC_PORT, Target};

/// Where the replicas' TLS files and auth file are mounted.
pub(crate) const TLS_DIR: &str = "/etc/plait/tls";
/// The auth file in [`TLS_DIR`].
pub(crate) const AUTH_FILE: &str = "auth.yaml";
/// The CA certificate in [`TLS_DIR`] and in every Secret that carries it.
pub(crate) const CA_FILE: &str = "ca.crt";

/// The principal (certificate CN) the operator calls replicas as.
pub(crate) const OPERATOR_COMMON_NAME: &str = "plait-operator";

/// Lifetime of the cluster CA the operator makes.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Lifetime of replica and operator certificates.
pub(crate) const CERT_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// cert-manager's `renewBefore`: a third of [`CERT_LIFETIME`], as the operator does itself.
const CERT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// Annotation on an issued certificate's Secret: the names it was issued for, so a change
/// (a Service renamed, a new namespace) reissues it.
const NAMES_ANNOTATION: &str = "plait.dev/certificate-names";

const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_KEY: &str = "ca.key";
/// The application token's key in `<cluster>-client`.
pub(crate) const TOKEN_FIELD: &str = "token";

pub(crate) fn ca_secret_name(cluster: &str) -> String {
    format!("{cluster}-ca")
}

pub(crate) fn replica_tls_secret_name(cluster: &str, ordinal: i32) -> String {
    format!("{cluster}-{ordinal}-tls")
}

pub(crate) fn operator_tls_secret_name(cluster: &str) -> String {
    format!("{cluster}-operator-tls")
}

pub(crate) fn client_secret_name(cluster: &str) -> String {
    format!("{cluster}-client")
}

pub(crate) fn auth_secret_name(cluster: &str) -> String {
    format!("{cluster}-auth")
}

/// The principal of the application token in the auth file.
pub(crate) fn client_principal(cluster: &str) -> String {
    format!("{cluster}-client")
}

/// The DNS name replica `ordinal` is reached at inside the cluster (what
/// [`crate::DnsResolver`] resolves to, without the port).
pub(crate) fn replica_host(namespace: &str, cluster: &str, ordinal: i32) -> String {
    format!("{cluster}-{ordinal}.{}.{namespace}.svc", plan::headless_name(cluster))
}

/// Every name replica `ordinal`'s certificate covers: its own names under the headless
/// Service, the client Service's names (clients reach any replica through it), and
/// `localhost` (`kubectl port-forward`, `kubectl exec`).
pub(crate) fn replica_dns_names(namespace: &str, cluster: &str, ordinal: i32) -> Vec<String> {
    let own = replica_host(namespace, cluster, ordinal);
    vec![
        format!("{own}.cluster.local"),
        own,
        format!("{cluster}-{ordinal}.{}", plan::headless_name(cluster)),
        format!("{cluster}.{namespace}.svc.cluster.local"),
        format!("{cluster}.{namespace}.svc"),
        format!("{cluster}.{namespace}"),
        cluster.to_owned(),
        "localhost".to_owned(),
    ]
}

/// The client Service's address, as applications use it.
pub(crate) fn client_address(namespace: &str, cluster: &str) -> String {
    format!("{cluster}.{namespace}.svc:{GRPC_PORT}")
}

/// Renewal is due once less than a third of the certificate's lifetime is left.
pub(crate) fn renewal_due(validity: Validity, now: SystemTime) -> bool {
    let lifetime = validity.not_after.duration_since(validity.not_before).unwrap_or_default();
    let left = validity.not_after.duration_since(now).unwrap_or_default();
    left < lifetime / 3
}

/// What the operator presents to a cluster's replicas.
#[derive(Clone)]
pub struct Credentials {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

impl Credentials {
    /// Client options for calling the replica whose certificate carries `server_name`.
    pub fn options(&self, server_name: &str) -> ClientOptions {
        ClientOptions::new()
            .tls_ca_pem(self.ca_pem.clone())
            .client_cert_pem(self.cert_pem.clone(), self.key_pem.clone())
            .tls_server_name(server_name)
    }

    /// Credentials from a Secret holding `tls.crt`, `tls.key` and `ca.crt`.
    fn from_secret(secret: &Secret) -> Option<Credentials> {
        Some(Credentials {
            ca_pem: field(secret, CA_FILE)?,
            cert_pem: field(secret, TLS_CERT)?,
            key_pem: field(secret, TLS_KEY)?,
        })
    }
}

/// What securing a cluster left: the operator's credentials, or why there are none yet.
pub(crate) enum Secured {
    /// `tls: Disabled`: plaintext.
    Plaintext,
    /// The operator calls the replicas with these.
    Tls(Credentials),
    /// Certificates are not issued yet (cert-manager is working on them): what is missing.
    Waiting(String),
}

impl Secured {
    /// How to call replica `ordinal`, or why it cannot be called yet.
    pub(crate) fn target(
        &self,
        ctx: &Context,
        namespace: &str,
        cluster: &str,
        ordinal: i32,
    ) -> Result<Target, String> {
        self.target_at(ctx.resolver.address(namespace, cluster, ordinal), namespace, cluster, ordinal)
    }

    /// The replica's admin address, for the cluster-admin methods (SetMembers, Drain,
    /// backups), called as [`Secured::target`] is.
    pub(crate) fn admin_target(
        &self,
        ctx: &Context,
        namespace: &str,
        cluster: &str,
        ordinal: i32,
    ) -> Result<Target, String> {
        let admin = ctx.resolver.admin_address(namespace, cluster, ordinal);
        let api = ctx.resolver.address(namespace, cluster, ordinal);
        let mut target = self.target_at(admin.clone(), namespace, cluster, ordinal)?;
        target.fallback = (api != admin).then_some(api);
        Ok(target)
    }

    fn target_at(
        &self,
        address: String,
        namespace: &str,
        cluster: &str,
        ordinal: i32,
    ) -> Result<Target, String> {
        match self {
            Secured::Plaintext => Ok(Target::plaintext(address)),
            Secured::Tls(credentials) => Ok(Target {
                address,
                options: Some(credentials.options(&replica_host(namespace, cluster, ordinal))),
                fallback: None,
            }),
            Secured::Waiting(why) => Err(why.clone()),
        }
    }
}

/// How the operator calls an existing cluster's replicas, from the Secrets the cluster's
/// reconciler keeps (read only: for the backup controller).
pub(crate) async fn access(cluster: &PlaitCluster, ctx: &Context, namespace: &str) -> Result<Secured, Error> {
    if cluster.spec.security.tls == TlsMode::Disabled {
        return Ok(Secured::Plaintext);
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = operator_tls_secret_name(&cluster.name_any());
    Ok(match secrets.get_opt(&name).await?.as_ref().and_then(Credentials::from_secret) {
        Some(credentials) => Secured::Tls(credentials),
        None => Secured::Waiting(format!("the operator's certificate (Secret {name}) is not issued yet")),
    })
}

fn field(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|v| v.0.clone()).filter(|v| !v.is_empty())
}

fn system_time(ctx: &Context) -> SystemTime {
    let seconds = u64::try_from(ctx.clock.now().as_second()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

fn owned_secret(
    cluster: &PlaitCluster,
    name: String,
    type_: Option<&str>,
    data: BTreeMap<String, Vec<u8>>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: cluster.namespace(),
            labels: Some(plan::labels(&cluster.name_any())),
            owner_references: cluster.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: type_.map(str::to_owned),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Secret::default()
    }
}

/// Makes sure every Secret a secured cluster of `replicas` replicas needs exists and is
/// current, and returns what the operator calls its replicas with.
pub(crate) async fn ensure(
    cluster: &PlaitCluster,
    ctx: &Context,
    namespace: &str,
    replicas: i32,
) -> Result<Secured, Error> {
    let name = cluster.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let security = &cluster.spec.security;
    let (credentials, ca_pem) = match security.tls {
        TlsMode::Disabled => return Ok(Secured::Plaintext),
        TlsMode::Operator => {
            let ca = ensure_ca(cluster, ctx, &secrets).await?;
            let now = system_time(ctx);
            for ordinal in 0..replicas {
                let spec = CertSpec::new(format!("{name}-{ordinal}"), Validity::from_now(now, CERT_LIFETIME))
                    .group(plait_pki::GROUP_PEERS)
                    .ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
                let spec = replica_dns_names(namespace, &name, ordinal).into_iter().fold(spec, CertSpec::dns);
                ensure_certificate(
                    cluster,
                    ctx,
                    namespace,
                    &ca,
                    replica_tls_secret_name(&name, ordinal),
                    spec,
                    now,
                )
                .await?;
            }
            let spec = CertSpec::new(OPERATOR_COMMON_NAME, Validity::from_now(now, CERT_LIFETIME))
                .group(plait_pki::GROUP_ADMINS)
                .client_only();
            let secret =
                ensure_certificate(cluster, ctx, namespace, &ca, operator_tls_secret_name(&name), spec, now)
                    .await?;
            let credentials = Credentials::from_secret(&secret)
                .ok_or_else(|| Error::Invalid("the operator's certificate Secret is incomplete".into()))?;
            (credentials, ca.cert_pem().as_bytes().to_vec())
        }
        TlsMode::CertManager => {
            let issuer = security
                .issuer_ref
                .as_ref()
                .ok_or_else(|| Error::Invalid("spec.security: tls CertManager needs an issuerRef".into()))?;
            for ordinal in 0..replicas {
                let names = replica_dns_names(namespace, &name, ordinal);
                let certificate = certificate(
                    cluster,
                    &format!("{name}-{ordinal}"),
                    &replica_tls_secret_name(&name, ordinal),
                    &format!("{name}-{ordinal}"),
                    plait_pki::GROUP_PEERS,
                    &names,
                    &["server auth", "client auth"],
                    issuer,
                );
                apply_certificate(ctx, namespace, &certificate).await?;
            }
            let operator = certificate(
                cluster,
                &format!("{name}-operator"),
                &operator_tls_secret_name(&name),
                OPERATOR_COMMON_NAME,
                plait_pki::GROUP_ADMINS,
                &[],
                &["client auth"],
                issuer,
            );
            apply_certificate(ctx, namespace, &operator).await?;
            let mut missing = Vec::new();
            for ordinal in 0..replicas {
                let secret_name = replica_tls_secret_name(&name, ordinal);
                let issued = secrets.get_opt(&secret_name).await?;
                if issued.as_ref().and_then(|s| field(s, TLS_CERT)).is_none() {
                    missing.push(secret_name);
                }
            }
            let operator_secret = secrets.get_opt(&operator_tls_secret_name(&name)).await?;
            let credentials = operator_secret.as_ref().and_then(Credentials::from_secret);
            let Some(credentials) = credentials.filter(|_| missing.is_empty()) else {
                if operator_secret.is_none_or(|s| Credentials::from_secret(&s).is_none()) {
                    missing.push(operator_tls_secret_name(&name));
                }
                return Ok(Secured::Waiting(format!(
                    "waiting for cert-manager ({} {}) to issue {}",
                    issuer.kind,
                    issuer.name,
                    missing.join(", ")
                )));
            };
            let ca_pem = credentials.ca_pem.clone();
            (credentials, ca_pem)
        }
    };
    ensure_tokens(cluster, ctx, namespace, &ca_pem).await?;
    Ok(Secured::Tls(credentials))
}

/// The cluster CA: read, or made once. A CA Secret that cannot be used is an error for
/// people to resolve, never silently replaced: every certificate hangs off it.
async fn ensure_ca(cluster: &PlaitCluster, ctx: &Context, secrets: &Api<Secret>) -> Result<Ca, Error> {
    let name = ca_secret_name(&cluster.name_any());
    let from = |secret: &Secret| -> Result<Ca, Error> {
        let (Some(cert), Some(key)) = (field(secret, CA_FILE), field(secret, CA_KEY)) else {
            return Err(Error::Invalid(format!("Secret {name} lacks {CA_FILE} or {CA_KEY}")));
        };
        Ca::from_pem(&String::from_utf8_lossy(&cert), &String::from_utf8_lossy(&key))
            .map_err(|e| Error::Invalid(format!("Secret {name} does not hold a usable CA: {e}")))
    };
    if let Some(existing) = secrets.get_opt(&name).await? {
        return from(&existing);
    }
    let common_name = format!("plait {}/{} CA", cluster.namespace().unwrap_or_default(), cluster.name_any());
    let ca = Ca::generate(&common_name, Validity::from_now(system_time(ctx), CA_LIFETIME))
        .map_err(|e| Error::Invalid(format!("cannot make the cluster CA: {e}")))?;
    let secret = owned_secret(
        cluster,
        name.clone(),
        None,
        BTreeMap::from([
            (CA_FILE.to_owned(), ca.cert_pem().as_bytes().to_vec()),
            (CA_KEY.to_owned(), ca.key_pem().as_bytes().to_vec()),
        ]),
    );
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(cluster = %cluster.name_any(), "made the cluster CA in Secret {name}");
            Ok(ca)
        }
        // Another pass made it first: use theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => from(&secrets.get(&name).await?),
        Err(e) => Err(e.into()),
    }
}

/// What a certificate was issued for, as recorded on its Secret: a change reissues it.
fn issued_for(spec: &CertSpec) -> String {
    let ips: Vec<String> = spec.ip_addresses.iter().map(ToString::to_string).collect();
    format!("{}|{}|{}|{}", spec.common_name, spec.groups.join(","), spec.dns_names.join(","), ips.join(","))
}

/// Issues the certificate of `spec` into Secret `secret_name`, unless the one there was
/// issued by `ca` for the same names and is not due for renewal.
async fn ensure_certificate(
    cluster: &PlaitCluster,
    ctx: &Context,
    namespace: &str,
    ca: &Ca,
    secret_name: String,
    spec: CertSpec,
    now: SystemTime,
) -> Result<Secret, Error> {
    let wanted = issued_for(&spec);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    if let Some(existing) = secrets.get_opt(&secret_name).await? {
        let current = existing.annotations().get(NAMES_ANNOTATION) == Some(&wanted)
            && field(&existing, CA_FILE).as_deref() == Some(ca.cert_pem().as_bytes())
            && field(&existing, TLS_KEY).is_some()
            && field(&existing, TLS_CERT)
                .and_then(|pem| plait_pki::certs_from_pem(&pem).ok())
                .and_then(|certs| certs.first().and_then(|c| plait_pki::validity_of(c).ok()))
                .is_some_and(|validity| !renewal_due(validity, now));
        if current {
            return Ok(existing);
        }
    }
    let issued = ca
        .issue(&spec)
        .map_err(|e| Error::Invalid(format!("cannot issue the certificate for {secret_name}: {e}")))?;
    let mut secret = owned_secret(
        cluster,
        secret_name.clone(),
        Some("kubernetes.io/tls"),
        BTreeMap::from([
            (TLS_CERT.to_owned(), issued.cert_pem().as_bytes().to_vec()),
            (TLS_KEY.to_owned(), issued.key_pem().as_bytes().to_vec()),
            (CA_FILE.to_owned(), ca.cert_pem().as_bytes().to_vec()),
        ]),
    );
    secret.metadata.annotations = Some(BTreeMap::from([(NAMES_ANNOTATION.to_owned(), wanted)]));
    apply(&ctx.client, namespace, &secret).await?;
    tracing::info!(cluster = %cluster.name_any(), "issued the certificate in Secret {secret_name}");
    Ok(secret)
}

/// The application token (made once, kept) and the auth file holding its hash (rewritten
/// every pass, so a change of `clientRoles` or of the CA reaches the replicas).
async fn ensure_tokens(
    cluster: &PlaitCluster,
    ctx: &Context,
    namespace: &str,
    ca_pem: &[u8],
) -> Result<(), Error> {
    let name = cluster.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let client_name = client_secret_name(&name);
    let token = match secrets.get_opt(&client_name).await?.and_then(|s| field(&s, TOKEN_FIELD)) {
        Some(token) => token,
        None => {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
            format!("plait_{}", hex::encode(bytes)).into_bytes()
        }
    };
    let client = owned_secret(
        cluster,
        client_name,
        None,
        BTreeMap::from([
            (TOKEN_FIELD.to_owned(), token.clone()),
            (CA_FILE.to_owned(), ca_pem.to_vec()),
            ("address".to_owned(), client_address(namespace, &name).into_bytes()),
        ]),
    );
    apply(&ctx.client, namespace, &client).await?;
    let auth = owned_secret(
        cluster,
        auth_secret_name(&name),
        None,
        BTreeMap::from([
            (
                AUTH_FILE.to_owned(),
                auth_file(&name, &token, &cluster.spec.security.client_roles).into_bytes(),
            ),
            (CA_FILE.to_owned(), ca_pem.to_vec()),
        ]),
    );
    apply(&ctx.client, namespace, &auth).await
}

/// The replicas' auth file: the application token, by its hash. Certificates need no
/// entries: the built-in groups give replicas `peer` and the operator `admin`.
pub(crate) fn auth_file(cluster: &str, token: &[u8], roles: &[String]) -> String {
    let roles: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
    format!(
        "# Written by the plait operator for PlaitCluster {cluster}; edits are overwritten.\n\
         tokens:\n  - name: {}\n    hash: blake3:{}\n    roles: [{}]\n",
        client_principal(cluster),
        blake3::hash(token).to_hex(),
        roles.join(", ")
    )
}

fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// A cert-manager `Certificate` for one of the cluster's Secrets.
#[allow(clippy::too_many_arguments)]
pub(crate) fn certificate(
    cluster: &PlaitCluster,
    name: &str,
    secret_name: &str,
    common_name: &str,
    group: &str,
    dns_names: &[String],
    usages: &[&str],
    issuer: &IssuerRef,
) -> DynamicObject {
    let mut object = DynamicObject::new(name, &certificate_resource());
    object.metadata.namespace = cluster.namespace();
    object.metadata.labels = Some(plan::labels(&cluster.name_any()));
    object.metadata.owner_references = cluster.controller_owner_ref(&()).map(|r| vec![r]);
    let mut spec = serde_json::json!({
        "secretName": secret_name,
        "commonName": common_name,
        "subject": { "organizations": [group] },
        "duration": format!("{}h", CERT_LIFETIME.as_secs() / 3600),
        "renewBefore": format!("{}h", CERT_RENEW_BEFORE.as_secs() / 3600),
        "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
        "usages": usages,
        "issuerRef": { "name": issuer.name, "kind": issuer.kind, "group": issuer.group },
        "secretTemplate": { "labels": plan::labels(&cluster.name_any()) },
    });
    if !dns_names.is_empty() {
        spec["dnsNames"] = serde_json::json!(dns_names);
        spec["ipAddresses"] = serde_json::json!(["127.0.0.1"]);
    }
    object.data = serde_json::json!({ "spec": spec });
    object
}

async fn apply_certificate(ctx: &Context, namespace: &str, certificate: &DynamicObject) -> Result<(), Error> {
    let resource = certificate_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    let mut body = serde_json::to_value(certificate).map_err(|e| Error::Invalid(e.to_string()))?;
    body["apiVersion"] = resource.api_version.clone().into();
    body["kind"] = resource.kind.clone().into();
    match api
        .patch(&certificate.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(Error::Invalid(
            "spec.security.tls is CertManager but the cert-manager.io/v1 Certificate API is not installed"
                .into(),
        )),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renewal comes due when a third of the lifetime is left, not before.
    #[test]
    fn renewal_is_due_in_the_last_third() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let validity = Validity { not_before: start, not_after: start + Duration::from_secs(90) };
        assert!(!renewal_due(validity, start));
        assert!(!renewal_due(validity, start + Duration::from_secs(59)));
        assert!(renewal_due(validity, start + Duration::from_secs(61)));
        assert!(renewal_due(validity, start + Duration::from_secs(200)), "expired");
    }

    /// A replica's certificate covers the name peers and the operator dial, the client
    /// Service's names and localhost.
    #[test]
    fn replica_names_cover_every_way_in() {
        let names = replica_dns_names("prod", "db", 2);
        assert!(names.contains(&replica_host("prod", "db", 2)));
        assert_eq!(replica_host("prod", "db", 2), "db-2.db-headless.prod.svc");
        for name in ["db.prod.svc", "db.prod.svc.cluster.local", "localhost"] {
            assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
        }
    }

    /// A cert-manager Certificate fills the same Secret, with the same subject, names and
    /// usages as the operator's own certificates, from the spec's issuer.
    #[test]
    fn cert_manager_certificates_match_the_operators_own() {
        let mut cluster = PlaitCluster::new("db", crate::crd::PlaitClusterSpec::with_replicas(3));
        cluster.metadata.namespace = Some("prod".into());
        cluster.metadata.uid = Some("uid".into());
        let issuer =
            IssuerRef { name: "ca".into(), kind: "ClusterIssuer".into(), group: "cert-manager.io".into() };
        let names = replica_dns_names("prod", "db", 1);
        let object = certificate(
            &cluster,
            "db-1",
            &replica_tls_secret_name("db", 1),
            "db-1",
            plait_pki::GROUP_PEERS,
            &names,
            &["server auth", "client auth"],
            &issuer,
        );
        let spec = &object.data["spec"];
        assert_eq!(spec["secretName"], "db-1-tls");
        assert_eq!(spec["commonName"], "db-1");
        assert_eq!(spec["subject"]["organizations"][0], plait_pki::GROUP_PEERS);
        assert_eq!(spec["dnsNames"].as_array().unwrap().len(), names.len());
        assert_eq!(spec["issuerRef"]["kind"], "ClusterIssuer");
        assert_eq!(spec["duration"], "2160h");
        assert_eq!(spec["renewBefore"], "720h");
        assert!(object.metadata.owner_references.is_some_and(|o| o.len() == 1));
    }

    /// The auth file parses as the replica reads it: the token's blake3 hash and roles.
    #[test]
    fn auth_file_holds_the_token_hash_and_roles() {
        let text = auth_file("db", b"plait_secret", &["read".into(), "write:orders-*".into()]);
        let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let entry = &value["tokens"][0];
        assert_eq!(entry["name"].as_str(), Some("db-client"));
        assert_eq!(
            entry["hash"].as_str().map(str::to_owned),
            Some(format!("blake3:{}", blake3::hash(b"plait_secret").to_hex()))
        );
        assert_eq!(entry["roles"][1].as_str(), Some("write:orders-*"));
        assert!(!text.contains("plait_secret"), "the token itself is never in the auth file");
    }
}
