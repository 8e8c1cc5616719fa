//! What a secured deployment needs besides a replica: a CA, certificates it signs, bearer
//! tokens for the auth file, and the TLS and credentials plaitctl itself calls with.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use plait_client::ClientOptions;
use plait_pki::{Ca, CertSpec, Validity};
use serde_json::json;

use crate::cli::{CertCommand, ConnectArgs, TokenCommand};
use crate::run::{Printer, write_new_file};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Roles an auth-file entry may grant (besides `write:<glob>`), as replicas know them.
const ROLES: &[&str] = &["read", "log-admin", "cluster-admin", "peer", "admin"];

/// The TLS and token settings of the command line, checked.
pub(crate) fn client_options(args: &ConnectArgs) -> anyhow::Result<ClientOptions> {
    let mut options = ClientOptions::new();
    if let Some(ca) = &args.tls_ca {
        options = options.tls_ca_file(ca)?;
    }
    match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            check_client_cert(cert, now())?;
            options = options.client_cert_files(cert, key)?;
        }
        (Some(_), None) => bail!("--cert needs --key (PLAIT_KEY): the private key of the client certificate"),
        (None, Some(_)) => bail!("--key needs --cert (PLAIT_CERT): the client certificate it belongs to"),
        (None, None) => {}
    }
    if let Some(name) = &args.tls_server_name {
        options = options.tls_server_name(name.clone());
    }
    match (&args.token, &args.token_file) {
        (Some(_), Some(_)) => {
            bail!("give --token (PLAIT_TOKEN) or --token-file (PLAIT_TOKEN_FILE), not both")
        }
        (Some(token), None) => options = options.token(token).context("--token")?,
        (None, Some(path)) => options = options.token_file(path)?,
        (None, None) => {}
    }
    Ok(options)
}

/// Adds a hint to an error that may be a refused client certificate: over TLS 1.3 a
/// replica that refuses one closes the connection after the handshake, and the client
/// may see only that.
pub(crate) fn explain(error: anyhow::Error, args: &ConnectArgs) -> anyhow::Error {
    const CLOSED: &[&str] = [
        "connection closed",
        "operation was canceled",
        "transport error",
        "broken pipe",
        "reset by peer",
        "http2 error",
    ]
    .as_slice();
    let closed = error.chain().find_map(|cause| match cause.downcast_ref::<plait_client::ClientError>() {
        Some(
            e @ (plait_client::ClientError::Unavailable(m)
            | plait_client::ClientError::Internal(m)
            | plait_client::ClientError::Transport(m)),
        ) if CLOSED.iter().any(|c| m.contains(c)) => Some(e.to_string()),
        _ => None,
    });
    match (&args.cert, closed) {
        (Some(cert), Some(message)) => {
            // This client speaks TLS: the client library's hint about plaintext does not
            // apply.
            let message = message.split(" (a replica that serves TLS").next().unwrap_or(&message).to_owned();
            anyhow!(
                "the replica closed the connection: if every call fails this way, it refuses the client \
                 certificate {} (issued by another CA, or not for client use): {message}",
                cert.display()
            )
        }
        _ => error,
    }
}

/// Refuses a client certificate that is not valid at `now`, before anything is sent: a
/// replica refuses it too, but over TLS 1.3 it can only close the connection, which the
/// client cannot tell from other failures.
fn check_client_cert(path: &Path, now: SystemTime) -> anyhow::Result<()> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the client certificate {}", path.display()))?;
    let certs = plait_pki::certs_from_pem(&pem)
        .with_context(|| format!("the client certificate {}", path.display()))?;
    let validity = plait_pki::validity_of(&certs[0])
        .with_context(|| format!("the client certificate {}", path.display()))?;
    let ago = |t: SystemTime| now.duration_since(t).map_or(0, |d| d.as_secs());
    let until = |t: SystemTime| t.duration_since(now).map_or(0, |d| d.as_secs());
    if now > validity.not_after {
        bail!(
            "the client certificate {} expired {} s ago: issue a new one (`plaitctl cert issue`) or check this \
             machine's clock",
            path.display(),
            ago(validity.not_after)
        );
    }
    if now < validity.not_before {
        bail!(
            "the client certificate {} is not valid for another {} s: check this machine's clock",
            path.display(),
            until(validity.not_before)
        );
    }
    Ok(())
}

/// The clock edge of plaitctl: certificates start now.
#[allow(clippy::disallowed_methods)]
fn now() -> SystemTime {
    SystemTime::now()
}

/// Fails before anything is written if any of `paths` exists.
fn refuse_existing(paths: &[&Path]) -> anyhow::Result<()> {
    for path in paths {
        if path.exists() {
            bail!(
                "{} already exists; it is never overwritten: choose another --out or remove it",
                path.display()
            );
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the directory {}", dir.display()))
}

pub(crate) fn cert(printer: &Printer, command: CertCommand) -> anyhow::Result<()> {
    match command {
        CertCommand::Ca { out, name, days } => {
            let ca = Ca::generate(&name, Validity::from_now(now(), DAY * days))?;
            create_dir(&out)?;
            let (crt, key) = (out.join("ca.crt"), out.join("ca.key"));
            refuse_existing(&[&crt, &key])?;
            write_new_file(&key, ca.key_pem(), 0o600)?;
            write_new_file(&crt, ca.cert_pem(), 0o644)?;
            printer.emit(
                || {
                    format!(
                        "CA {name:?}, valid {days} days\ncertificate: {}\nkey:         {} (mode 0600; keep it off the replicas)\n",
                        crt.display(),
                        key.display()
                    )
                },
                || json!({ "name": name, "days": days, "cert": crt, "key": key }),
            )
        }
        CertCommand::Issue { name, ca_dir, out, groups, dns, ips, days, client_only } => {
            let read = |file: &str| -> anyhow::Result<String> {
                let path = ca_dir.join(file);
                std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "cannot read {} (make a CA with `plaitctl cert ca --out {}`)",
                        path.display(),
                        ca_dir.display()
                    )
                })
            };
            let ca = Ca::from_pem(&read("ca.crt")?, &read("ca.key")?)
                .with_context(|| format!("the CA in {}", ca_dir.display()))?;
            if !client_only && dns.is_empty() && ips.is_empty() {
                bail!(
                    "a replica's certificate needs the names it is called by: give --dns and/or --ip, or \
                     --client-only for a client certificate"
                );
            }
            let mut spec = CertSpec::new(name.clone(), Validity::from_now(now(), DAY * days));
            for group in &groups {
                spec = spec.group(group.clone());
            }
            for name in &dns {
                spec = spec.dns(name.clone());
            }
            for ip in &ips {
                spec = spec.ip(*ip);
            }
            if client_only {
                spec = spec.client_only();
            }
            let issued = ca.issue(&spec)?;
            create_dir(&out)?;
            let file = file_stem(&name)?;
            let (crt, key) = (out.join(format!("{file}.crt")), out.join(format!("{file}.key")));
            refuse_existing(&[&crt, &key])?;
            write_new_file(&key, issued.key_pem(), 0o600)?;
            write_new_file(&crt, issued.cert_pem(), 0o644)?;
            printer.emit(
                || {
                    format!(
                        "certificate for {name:?}{}, valid {days} days, signed by {:?}\ncertificate: {}\nkey:         {} (mode 0600)\n",
                        if groups.is_empty() { String::new() } else { format!(" in {}", groups.join(", ")) },
                        ca.common_name(),
                        crt.display(),
                        key.display()
                    )
                },
                || {
                    json!({
                        "name": name, "groups": groups, "dns": dns,
                        "ips": ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "days": days, "client_only": client_only, "cert": crt, "key": key,
                    })
                },
            )
        }
    }
}

/// A name as a file name: what a common name may hold beyond that is refused.
fn file_stem(name: &str) -> anyhow::Result<&str> {
    if name.is_empty()
        || name.starts_with('.')
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        bail!("{name:?} cannot name the output files: use letters, digits, '-', '_', '.', '@'");
    }
    Ok(name)
}

fn check_role(role: &str) -> anyhow::Result<()> {
    if ROLES.contains(&role) {
        return Ok(());
    }
    if let Some(glob) = role.strip_prefix("write:") {
        if glob.is_empty() {
            bail!("role {role:?}: write: needs a log name pattern, for example write:orders-*");
        }
        return Ok(());
    }
    bail!("unknown role {role:?}: roles are {}, write:<log glob>", ROLES.join(", "))
}

pub(crate) fn token(printer: &Printer, command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::New { name, roles, out } = command;
    if name.is_empty() || name.chars().any(char::is_control) {
        bail!("the principal's name must be non-empty, without control characters");
    }
    for role in &roles {
        check_role(role)?;
    }
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let token = format!("plait_{}", hex::encode(secret));
    let hash = format!("blake3:{}", blake3::hash(token.as_bytes()).to_hex());
    let roles_yaml: Vec<String> =
        roles.iter().map(|r| serde_json::to_string(r).unwrap_or_default()).collect();
    let entry = format!(
        "  - name: {}\n    hash: {hash}\n    roles: [{}]\n",
        serde_json::to_string(&name).unwrap_or_default(),
        roles_yaml.join(", ")
    );
    let written: Option<PathBuf> = match out {
        Some(path) => {
            write_new_file(&path, &format!("{token}\n"), 0o600)?;
            Some(path)
        }
        None => None,
    };
    printer.emit(
        || match &written {
            Some(path) => format!(
                "token for {name:?} written to {} (mode 0600)\nadd under `tokens:` in the replica's --auth-file:\n{entry}",
                path.display()
            ),
            None => format!(
                "token: {token}\n(give it to the caller; the replica stores only its hash)\nadd under `tokens:` in the replica's --auth-file:\n{entry}"
            ),
        },
        || match &written {
            Some(path) => json!({ "name": name, "hash": hash, "roles": roles, "token_file": path }),
            None => json!({ "name": name, "hash": hash, "roles": roles, "token": token }),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Roles are the replica's: known names and `write:<glob>`; anything else is refused
    /// before a token is made.
    #[test]
    fn roles_are_checked() {
        for ok in ["read", "write:orders-*", "log-admin", "cluster-admin", "peer", "admin"] {
            check_role(ok).unwrap();
        }
        assert!(check_role("write:").unwrap_err().to_string().contains("pattern"));
        assert!(check_role("superuser").unwrap_err().to_string().contains("unknown role"));
    }

    /// Names that would escape the output directory cannot name files.
    #[test]
    fn file_names_stay_in_the_directory() {
        assert_eq!(file_stem("plait-0").unwrap(), "plait-0");
        assert_eq!(file_stem("alice@example.com").unwrap(), "alice@example.com");
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(file_stem(bad).is_err(), "{bad:?}");
        }
    }

    /// The command line's TLS settings must come in pairs, tokens one way only.
    #[test]
    fn connect_flags_are_checked() {
        let args = ConnectArgs { cert: Some("c.crt".into()), ..ConnectArgs::default() };
        assert!(client_options(&args).unwrap_err().to_string().contains("--cert needs --key"));
        let args = ConnectArgs { key: Some("c.key".into()), ..ConnectArgs::default() };
        assert!(client_options(&args).unwrap_err().to_string().contains("--key needs --cert"));
        let args = ConnectArgs {
            token: Some("t".into()),
            token_file: Some("t.txt".into()),
            ..ConnectArgs::default()
        };
        assert!(client_options(&args).unwrap_err().to_string().contains("not both"));
        let options = client_options(&ConnectArgs::default()).unwrap();
        assert!(!options.uses_tls());
    }
}
