//! Simulators of the outside world, for the sandbox and the tests: the sandbox crowd, an LLM
//! server (OpenAI-compatible and Anthropic wire formats), and the X, Reddit and Discord APIs
//! (Discord's gateway included), each with scripted faults and a record of the requests it
//! received.

pub mod crowd;
pub mod discord;
pub mod llm;
pub mod reddit;
pub mod x;

/// Binds `addr` and serves `app` on the current tokio runtime for as long as it runs; returns
/// the bound address (useful with port 0). Every simulator starts this way.
pub async fn serve(addr: std::net::SocketAddr, app: axum::Router) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// Locks a simulator's state, carrying on after a panicked holder (a failed test assertion must
/// not poison every later request).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Request headers as the simulators record them: names lowercased, repeated headers joined with
/// `", "`.
pub fn recorded_headers(headers: &axum::http::HeaderMap) -> std::collections::BTreeMap<String, String> {
    let mut names = std::collections::BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        names
            .entry(name.as_str().to_ascii_lowercase())
            .and_modify(|existing: &mut String| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    names
}

/// The platform simulators a sandbox service started (`platforms.<name>.simulated`).
#[derive(Clone, Default)]
pub struct SandboxSims {
    pub x: Option<x::XSim>,
    pub reddit: Option<reddit::RedditSim>,
    pub discord: Option<discord::DiscordSim>,
}
