//! Rate-limit state as the platforms report it in their response headers. The platform clients
//! parse every response with these functions and hand the snapshot to the account's RateLimiter,
//! so the budget spent is exactly the one the platform counts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

/// What a response said about the account's budget for that endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitSnapshot {
    /// Requests allowed per window, when the platform says.
    pub limit: Option<u32>,
    /// Requests left in the current window.
    pub remaining: u32,
    /// Time until the window resets.
    pub reset_after: Duration,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim)
}

/// X: `x-rate-limit-limit`, `x-rate-limit-remaining`, `x-rate-limit-reset` (epoch seconds).
pub fn parse_x(headers: &HeaderMap, now: SystemTime) -> Option<RateLimitSnapshot> {
    let remaining = header(headers, "x-rate-limit-remaining")?.parse::<u32>().ok()?;
    let reset_at = header(headers, "x-rate-limit-reset")?.parse::<u64>().ok()?;
    let now_secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default();
    let reset_after = Duration::from_secs_f64((reset_at as f64 - now_secs).max(0.0));
    let limit = header(headers, "x-rate-limit-limit").and_then(|value| value.parse().ok());
    Some(RateLimitSnapshot { limit, remaining, reset_after })
}

/// Reddit: `x-ratelimit-used`, `x-ratelimit-remaining` (may be fractional, e.g. `595.0`),
/// `x-ratelimit-reset` (seconds until the window resets).
pub fn parse_reddit(headers: &HeaderMap) -> Option<RateLimitSnapshot> {
    let remaining = header(headers, "x-ratelimit-remaining")?.parse::<f64>().ok()?;
    let reset_after = header(headers, "x-ratelimit-reset")?.parse::<f64>().ok()?;
    let used = header(headers, "x-ratelimit-used").and_then(|value| value.parse::<f64>().ok());
    Some(RateLimitSnapshot {
        limit: used.map(|used| (used + remaining).max(0.0) as u32),
        remaining: remaining.max(0.0).floor() as u32,
        reset_after: Duration::from_secs_f64(reset_after.max(0.0)),
    })
}

/// Discord, per route bucket: `x-ratelimit-limit`, `x-ratelimit-remaining`,
/// `x-ratelimit-reset-after` (seconds, fractional). A global 429 carries none of them.
pub fn parse_discord(headers: &HeaderMap) -> Option<RateLimitSnapshot> {
    let remaining = header(headers, "x-ratelimit-remaining")?.parse::<u32>().ok()?;
    let reset_after = header(headers, "x-ratelimit-reset-after")?.parse::<f64>().ok()?;
    let limit = header(headers, "x-ratelimit-limit").and_then(|value| value.parse().ok());
    let reset_after = if reset_after.is_finite() { reset_after.max(0.0) } else { 0.0 };
    Some(RateLimitSnapshot { limit, remaining, reset_after: Duration::from_secs_f64(reset_after) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn x_headers_give_remaining_and_time_to_reset() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let map = headers(&[
            ("x-rate-limit-limit", "300"),
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", "1700000090"),
        ]);
        let snapshot = parse_x(&map, now).unwrap();
        assert_eq!(
            snapshot,
            RateLimitSnapshot { limit: Some(300), remaining: 0, reset_after: Duration::from_secs(90) }
        );
        assert_eq!(parse_x(&headers(&[("x-rate-limit-remaining", "1")]), now), None, "no reset, no snapshot");
        let past = parse_x(&headers(&[("x-rate-limit-remaining", "5"), ("x-rate-limit-reset", "1")]), now).unwrap();
        assert_eq!(past.reset_after, Duration::ZERO);
    }

    #[test]
    fn reddit_headers_as_recorded() {
        let map =
            headers(&[("x-ratelimit-used", "5"), ("x-ratelimit-remaining", "595.0"), ("x-ratelimit-reset", "412")]);
        let snapshot = parse_reddit(&map).unwrap();
        assert_eq!(
            snapshot,
            RateLimitSnapshot { limit: Some(600), remaining: 595, reset_after: Duration::from_secs(412) }
        );
    }

    #[test]
    fn discord_bucket_headers() {
        let map = headers(&[
            ("x-ratelimit-limit", "5"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "1.5"),
            ("x-ratelimit-bucket", "abcd1234"),
        ]);
        assert_eq!(
            parse_discord(&map),
            Some(RateLimitSnapshot { limit: Some(5), remaining: 0, reset_after: Duration::from_millis(1500) })
        );
        assert_eq!(parse_discord(&headers(&[("retry-after", "2")])), None, "a global 429 has no bucket headers");
        let odd = headers(&[("x-ratelimit-remaining", "1"), ("x-ratelimit-reset-after", "-3")]);
        assert_eq!(parse_discord(&odd).map(|s| s.reset_after), Some(Duration::ZERO));
    }
}
