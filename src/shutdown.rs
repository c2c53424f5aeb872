//! Signals: SIGINT/SIGTERM start the ordered shutdown (a second one forces exit), SIGHUP
//! reloads the configuration.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::service::Service;

/// Exit code when a second signal cuts a graceful shutdown short.
pub const FORCED_EXIT_CODE: i32 = 130;

/// The signals Chorus handles. Install them before starting the service: a SIGHUP that arrived
/// before its handler would terminate the process (the default action).
pub struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

/// Runs `service` until SIGINT or SIGTERM, reloading on SIGHUP, then shuts it down in order.
/// Fails if the supervision tree stops on its own, so the process exits non-zero.
pub async fn run_until_signalled(service: Service, signals: Signals) -> std::io::Result<()> {
    let Signals { mut terminate, mut interrupt, mut hangup } = signals;
    let mut tree_exited = service.tree_exited();
    loop {
        tokio::select! {
            _ = tree_exited.wait_for(|exited| *exited) => {
                tracing::error!("the supervision tree stopped unexpectedly; shutting down");
                service.shutdown().await;
                return Err(std::io::Error::other("the supervision tree stopped unexpectedly"));
            }
            _ = terminate.recv() => { tracing::info!(signal = "SIGTERM", "signal received"); break; }
            _ = interrupt.recv() => { tracing::info!(signal = "SIGINT", "signal received"); break; }
            _ = hangup.recv() => {
                tracing::info!(signal = "SIGHUP", "reloading configuration");
                // Errors are logged by reload; the old configuration stays in force.
                let _ = service.reload().await;
            }
        }
    }
    // A second signal while draining: stop now.
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::warn!("second signal: forcing exit without finishing the drain");
        std::process::exit(FORCED_EXIT_CODE);
    });
    service.shutdown().await;
    Ok(())
}
