//! Simulators of the outside world, for the sandbox and the tests: the sandbox crowd, an LLM
//! server (OpenAI-compatible and Anthropic wire formats), and the X, Reddit and Discord APIs
//! (Discord's gateway included), each with scripted faults and a record of the requests it
//! received.

pub mod crowd;
pub mod discord;
pub mod jupiter;
pub mod llm;
pub mod reddit;
pub mod solana;
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
pub(crate) use crate::sync::lock;

/// A time's UTC calendar fields (Howard Hinnant's civil-from-days), for the timestamps the
/// simulated APIs print: `(year, month, day, seconds of the day, microseconds)`.
pub(crate) fn utc_fields(at: std::time::SystemTime) -> (i64, i64, i64, u64, u32) {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem, since.subsec_micros())
}

/// A response with a JSON body (`content-type: application/json`), as the simulated APIs send.
pub(crate) fn json_response(
    status: axum::http::StatusCode,
    body: impl Into<axum::body::Body>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let content_type = axum::http::HeaderValue::from_static("application/json");
    (status, [(axum::http::header::CONTENT_TYPE, content_type)], body.into()).into_response()
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

/// The simulators a sandbox service started (`platforms.<name>.simulated`, `trading.simulated`).
#[derive(Clone, Default)]
pub struct SandboxSims {
    pub x: Option<x::XSim>,
    pub reddit: Option<reddit::RedditSim>,
    pub discord: Option<discord::DiscordSim>,
    pub jupiter: Option<jupiter::JupiterSim>,
    pub solana: Option<solana::SolanaSim>,
}
