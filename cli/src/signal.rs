//! [`shutdown_signal`]: how every long-running command (services, `consume`, `dev`) learns it
//! should stop. A leaf module.

/// Completes on Ctrl-C or SIGTERM.
///
/// The handlers are registered when this is called, not when the future is first polled: once
/// tokio handles a signal, one that arrives while nothing listens is lost, so a caller that
/// prints "ready" must hold this future from before it prints (a SIGTERM right after the banner
/// used to leave `meridian dev` running).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown requested");
    }
}
