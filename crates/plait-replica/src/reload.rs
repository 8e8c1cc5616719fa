//! Files the replica re-reads when they change (TLS material, the auth file): one loop
//! that polls, logs what happened, and keeps the old contents when the new ones cannot
//! be used (a half-written rotation), trying again on the next tick.

use std::time::Duration;

use tokio::sync::watch;

/// Calls `reload` every `every` until `stop`; `reload` says whether it loaded anything.
pub(crate) fn spawn_reloader<E: std::fmt::Display>(
    what: &'static str,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    reload: impl Fn() -> Result<bool, E> + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => return,
            }
            match reload() {
                Ok(true) => tracing::info!(what, "reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(what, error = %e, "changed but cannot be used; keeping the old one"),
            }
        }
    });
}
