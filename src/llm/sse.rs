//! What the HTTP providers share: the client, the one mapping of transport failures and HTTP
//! statuses to [`LlmError`], `Retry-After` parsing, JSON decoding that never echoes the body, and
//! the server-sent-events stream of a response.
//!
//! Error details are short and safe to log: an HTTP status, the provider's error `type` and at
//! most a clipped message, never a URL (reqwest's errors print it), a key or a response body
//! (bodies can echo prompts).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::provider::LlmError;
use crate::config::{ProviderConfig, Secret};

/// The most of an error body read to find its `type` (the rest is dropped unread).
const ERROR_BODY_LIMIT: usize = 16 * 1024;
/// The most characters of a provider's error message kept in a detail.
const MESSAGE_LIMIT: usize = 100;

/// An HTTP client whose timeout bounds each whole request, first byte to last.
pub(crate) fn client(config: &ProviderConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(config.timeout.get())
        .user_agent(concat!("chorus/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// `{base}{path}`, without a doubled slash.
pub(crate) fn endpoint(config: &ProviderConfig, path: &str) -> String {
    format!("{}{path}", config.base_url.as_deref().unwrap_or_default().trim_end_matches('/'))
}

/// A header value carrying a key, marked sensitive. A key that cannot be a header value is
/// unusable: `Auth`.
pub(crate) fn key_header(provider: &str, value: String) -> Result<HeaderValue, LlmError> {
    let mut header = HeaderValue::try_from(value).map_err(|_| LlmError::Auth { provider: provider.to_owned() })?;
    header.set_sensitive(true);
    Ok(header)
}

/// `Authorization: Bearer KEY`.
pub(crate) fn bearer(provider: &str, key: &Secret) -> Result<HeaderValue, LlmError> {
    key_header(provider, format!("Bearer {}", key.expose()))
}

/// A failure to send the request or to get the response headers.
pub(crate) fn send_error(provider: &str, err: &reqwest::Error) -> LlmError {
    let provider = provider.to_owned();
    if err.is_timeout() {
        LlmError::Timeout { provider }
    } else {
        LlmError::Unavailable { provider, detail: transport_kind(err).to_owned() }
    }
}

/// A failure while reading a 200 response's body: the answer is incomplete, so `Malformed`
/// (or `Timeout` when the request's time ran out).
pub(crate) fn body_error(provider: &str, err: &reqwest::Error) -> LlmError {
    let provider = provider.to_owned();
    if err.is_timeout() {
        LlmError::Timeout { provider }
    } else {
        LlmError::Malformed { provider, detail: "response broken off before its end".to_owned() }
    }
}

/// What kind of transport failure, without the URL reqwest's `Display` would print.
fn transport_kind(err: &reqwest::Error) -> &'static str {
    if err.is_connect() {
        "connection failed"
    } else if err.is_request() {
        "request failed"
    } else {
        "http error"
    }
}

/// Passes a success through; turns any other status into its error, reading at most
/// [`ERROR_BODY_LIMIT`] bytes of the body for the provider's error `type`.
pub(crate) async fn check_status(
    provider: &str,
    mut response: reqwest::Response,
    key: Option<&Secret>,
) -> Result<reqwest::Response, LlmError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            // The status is what matters; an unreadable body only loses the `type`.
            Ok(None) | Err(_) => break,
        }
    }
    Err(status_error(provider, status, &headers, &body, key, SystemTime::now()))
}

/// The error for a non-success HTTP status:
/// 401/403 `Auth`; 429 `RateLimited` (with [`retry_after`]); 5xx and 529 `Unavailable`; any other
/// status `Rejected`.
pub(crate) fn status_error(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    key: Option<&Secret>,
    now: SystemTime,
) -> LlmError {
    let provider = provider.to_owned();
    let code = status.as_u16();
    match code {
        401 | 403 => LlmError::Auth { provider },
        429 => LlmError::RateLimited { provider, retry_after: retry_after(headers, now) },
        529 => LlmError::Unavailable { provider, detail: "HTTP 529 overloaded".to_owned() },
        500..=599 => {
            let detail = match error_summary(body, key) {
                Some(summary) => format!("HTTP {code} {summary}"),
                None => format!("HTTP {code}"),
            };
            LlmError::Unavailable { provider, detail }
        }
        _ => {
            let detail = match error_summary(body, key) {
                Some(summary) => format!("HTTP {code} {summary}"),
                None => format!("HTTP {code}"),
            };
            LlmError::Rejected { provider, detail }
        }
    }
}

/// An error body of either format: OpenAI `{"error": {"type", "message"}}`, Anthropic
/// `{"type": "error", "error": {"type", "message"}}`.
#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorObject,
}

#[derive(Deserialize, Default)]
pub(crate) struct ErrorObject {
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    /// Some OpenAI-compatible servers put the kind here instead (`"rate_limit_exceeded"`).
    #[serde(default)]
    pub(crate) code: Option<serde_json::Value>,
}

impl ErrorObject {
    fn kind(&self) -> &str {
        match (&self.kind, &self.code) {
            (Some(kind), _) if !kind.is_empty() => kind,
            (_, Some(serde_json::Value::String(code))) => code,
            _ => "",
        }
    }
}

/// `type: clipped message` from an error body, if it has the usual shape.
fn error_summary(body: &[u8], key: Option<&Secret>) -> Option<String> {
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    let summary = summarise(&parsed.error, key);
    (!summary.is_empty()).then_some(summary)
}

/// `type: message`, the message clipped to [`MESSAGE_LIMIT`] characters, on one line, and without
/// the key should a server echo it.
fn summarise(error: &ErrorObject, key: Option<&Secret>) -> String {
    let kind: String = error.kind().chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
    let mut message: String = error
        .message
        .as_deref()
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MESSAGE_LIMIT)
        .collect();
    if error.message.as_deref().is_some_and(|m| m.chars().count() > MESSAGE_LIMIT) {
        message.push('…');
    }
    if let Some(key) = key.map(Secret::expose).filter(|key| !key.is_empty()) {
        // A clipped message may hold a key's prefix; any key material at all drops the message.
        let prefix = key.get(..8).unwrap_or(key);
        if error.message.as_deref().is_some_and(|m| m.contains(key)) || message.contains(prefix) {
            message = "[message withheld]".to_owned();
        }
    }
    match (kind.is_empty(), message.trim().is_empty()) {
        (true, true) => String::new(),
        (false, true) => kind,
        (true, false) => message.trim().to_owned(),
        (false, false) => format!("{kind}: {}", message.trim()),
    }
}

/// The error an in-stream error event reports, by its `type`, mapped as the HTTP status of that
/// type would be. An unknown type is `Unavailable`: the server gave up mid-answer.
pub(crate) fn stream_error(provider: &str, error: &ErrorObject, key: Option<&Secret>) -> LlmError {
    let provider = provider.to_owned();
    let summary = summarise(error, key);
    let detail = if summary.is_empty() { "error event in the stream".to_owned() } else { summary };
    match error.kind() {
        "authentication_error" | "permission_error" | "invalid_api_key" => LlmError::Auth { provider },
        "rate_limit_error" | "rate_limit_exceeded" | "insufficient_quota" | "tokens" | "requests" => {
            LlmError::RateLimited { provider, retry_after: None }
        }
        "overloaded_error" => LlmError::Unavailable { provider, detail: "overloaded".to_owned() },
        "invalid_request_error" | "not_found_error" | "request_too_large" => LlmError::Rejected { provider, detail },
        _ => LlmError::Unavailable { provider, detail },
    }
}

/// How long a 429 asks to wait: the larger of `retry-after-ms` (milliseconds) and `retry-after`
/// (seconds, possibly fractional, or an HTTP-date counted from `now`); `None` when neither parses.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    let millis = header("retry-after-ms").and_then(parse_seconds).map(|ms| ms / 1000);
    let seconds = header("retry-after").and_then(|value| {
        parse_seconds(value).or_else(|| {
            let at = parse_http_date(value)?;
            Some(at.duration_since(now).unwrap_or(Duration::ZERO))
        })
    });
    millis.max(seconds)
}

/// A non-negative, finite number (of seconds or milliseconds) as a duration of that many seconds.
fn parse_seconds(value: &str) -> Option<Duration> {
    let number: f64 = value.parse().ok()?;
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(number).ok()
}

/// An HTTP-date in the preferred IMF-fixdate form, `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn parse_http_date(value: &str) -> Option<SystemTime> {
    let mut parts = value.split_ascii_whitespace();
    let weekday = parts.next()?;
    if weekday.len() != 4 || !weekday.ends_with(',') {
        return None;
    }
    let day: u64 = parts.next().filter(|d| d.len() == 2)?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next().filter(|y| y.len() == 4)?.parse().ok()?;
    let mut clock = parts.next().filter(|c| c.len() == 8)?.split(':').map(|n| n.parse::<u64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 || year < 1970 {
        return None;
    }
    let days = days_from_civil(year, month, day as i64);
    let secs = u64::try_from(days).ok()? * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Decodes a JSON body or event; a failure is `Malformed` with its position only (serde's
/// messages can quote the values they choke on).
pub(crate) fn parse_json<T: DeserializeOwned>(provider: &str, bytes: &[u8]) -> Result<T, LlmError> {
    serde_json::from_slice(bytes).map_err(|err| {
        let what = match err.classify() {
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "unexpected JSON shape",
            serde_json::error::Category::Io => "unreadable JSON",
        };
        LlmError::Malformed {
            provider: provider.to_owned(),
            detail: format!("{what} at line {} column {}", err.line(), err.column()),
        }
    })
}

/// Reads a whole (success) body and decodes it.
pub(crate) async fn json_body<T: DeserializeOwned>(provider: &str, response: reqwest::Response) -> Result<T, LlmError> {
    let bytes = response.bytes().await.map_err(|err| body_error(provider, &err))?;
    parse_json(provider, &bytes)
}

/// The server-sent events of a response. Transport failures mid-stream are `Timeout` or
/// `Malformed` (the answer is incomplete); so is a stream that is not valid SSE. The stream simply
/// ends when the connection closes cleanly: the caller checks it saw its final event.
pub(crate) fn events(
    provider: &str,
    response: reqwest::Response,
) -> impl Stream<Item = Result<Event, LlmError>> + Send {
    let provider = provider.to_owned();
    response.bytes_stream().eventsource().map(move |item| {
        item.map_err(|err| match err {
            EventStreamError::Transport(err) => body_error(&provider, &err),
            EventStreamError::Utf8(_) => {
                LlmError::Malformed { provider: provider.clone(), detail: "stream is not UTF-8".to_owned() }
            }
            EventStreamError::Parser(_) => LlmError::Malformed {
                provider: provider.clone(),
                detail: "stream is not server-sent events".to_owned(),
            },
        })
    })
}

/// The error for a stream that closed before its final event.
pub(crate) fn ended_early(provider: &str, expected: &str) -> LlmError {
    LlmError::Malformed { provider: provider.to_owned(), detail: format!("stream ended without {expected}") }
}

/// A token count from an estimate.
pub(crate) fn tokens(count: usize) -> u32 {
    u32::try_from(count).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_takes_the_larger_of_seconds_and_millis() {
        let now = SystemTime::now();
        assert_eq!(retry_after(&headers(&[("retry-after", "2")]), now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&headers(&[("retry-after", "1.5")]), now), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after(&headers(&[("retry-after-ms", "250")]), now), Some(Duration::from_millis(250)));
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1"), ("retry-after-ms", "2500")]), now),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3"), ("retry-after-ms", "2500")]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "NaN")]), now), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "soon"), ("retry-after-ms", "10")]), now),
            Some(Duration::from_millis(10))
        );
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retry_after_reads_an_http_date_from_now() {
        let date = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(date.duration_since(UNIX_EPOCH).unwrap().as_secs(), 784_111_777);
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT").unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs(),
            0
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 12:00:00 GMT").unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_835_438_400
        );
        let now = date - Duration::from_secs(30);
        let waited = retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]), now);
        assert_eq!(waited, Some(Duration::from_secs(30)));
        let past =
            retry_after(&headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]), date + Duration::from_secs(5));
        assert_eq!(past, Some(Duration::ZERO));
        for bad in [
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn statuses_map_to_error_classes() {
        let now = SystemTime::now();
        let map = |code: u16, body: &str| {
            status_error("p", StatusCode::from_u16(code).unwrap(), &HeaderMap::new(), body.as_bytes(), None, now)
        };
        assert_eq!(map(401, ""), LlmError::Auth { provider: "p".into() });
        assert_eq!(map(403, ""), LlmError::Auth { provider: "p".into() });
        assert_eq!(map(429, ""), LlmError::RateLimited { provider: "p".into(), retry_after: None });
        assert_eq!(map(529, ""), LlmError::Unavailable { provider: "p".into(), detail: "HTTP 529 overloaded".into() });
        assert_eq!(
            map(500, r#"{"error": {"type": "server_error", "message": "boom"}}"#),
            LlmError::Unavailable { provider: "p".into(), detail: "HTTP 500 server_error: boom".into() }
        );
        assert_eq!(map(503, "<html>"), LlmError::Unavailable { provider: "p".into(), detail: "HTTP 503".into() });
        assert_eq!(
            map(400, r#"{"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}"#),
            LlmError::Rejected { provider: "p".into(), detail: "HTTP 400 invalid_request_error: bad".into() }
        );
        assert_eq!(map(404, ""), LlmError::Rejected { provider: "p".into(), detail: "HTTP 404".into() });
    }

    #[test]
    fn error_messages_are_clipped_and_never_carry_the_key() {
        let key = Secret::new("sk-live-0123456789");
        let long = "x".repeat(500);
        let body = format!(r#"{{"error": {{"type": "invalid_request_error", "message": "{long}"}}}}"#);
        let detail = error_summary(body.as_bytes(), Some(&key)).unwrap();
        assert!(detail.chars().count() < 140, "{detail}");
        let echo = r#"{"error": {"type": "invalid_request_error", "message": "bad key sk-live-0123456789"}}"#;
        let detail = error_summary(echo.as_bytes(), Some(&key)).unwrap();
        assert!(!detail.contains("sk-live"), "{detail}");
        assert!(detail.starts_with("invalid_request_error"), "{detail}");
    }

    #[test]
    fn bad_json_reports_a_position_not_the_values() {
        #[derive(Deserialize, Debug)]
        struct Shape {
            #[allow(dead_code)]
            n: u32,
        }
        let err = parse_json::<Shape>("p", br#"{"n": "my secret prompt"}"#).unwrap_err();
        assert!(matches!(&err, LlmError::Malformed { detail, .. } if !detail.contains("secret")), "{err}");
        let err = parse_json::<Shape>("p", br#"{"n": "#).unwrap_err();
        assert!(matches!(&err, LlmError::Malformed { detail, .. } if detail.starts_with("truncated")), "{err}");
    }
}
