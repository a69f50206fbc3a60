//! SIGINT/SIGTERM turned into a [`CancellationToken`] that every long-running loop watches.
//!
//! Loops finish their unit of work (publish, commit, release locks) once the token is
//! cancelled; a second signal exits at once for an operator who really means it.

pub use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGINT or SIGTERM; the second one exits with 130.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the SIGTERM handler");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!("shutdown requested; finishing the current unit of work");
                cancel.cancel();
            } else {
                tracing::warn!("second signal; exiting now");
                std::process::exit(130);
            }
        }
    });
    token
}
