//! A thin client of Jupiter's Swap API v1: an ExactIn quote (`GET {base}/swap/v1/quote`) and the
//! unsigned swap transaction for it (`POST {base}/swap/v1/swap`).
//!
//! `base` is `https://lite-api.jup.ag` (no key) or `https://api.jup.ag` (key in `x-api-key`), or a
//! simulator ([`crate::sim::jupiter`]). The key is a [`Secret`]: it goes on the wire as a header
//! marked sensitive and nowhere else.
//!
//! **Strict validation.** Every amount is a decimal string that must parse to a `u64`. A quote must
//! be ExactIn, name the mints that were asked for, spend exactly the amount asked for, promise a
//! positive output with a threshold no larger than it, carry the slippage asked for and a non-empty
//! route. A swap transaction must decode, and the user must be its fee payer (account 0) and a
//! required signer. Anything else is [`JupiterError::Malformed`]: the Trader never fills or signs
//! something it did not ask for.
//!
//! **Errors** are classified for the caller, which decides whether to retry (the client never
//! retries): transport failures, 429 and 5xx are transient ([`JupiterError::is_transient`]); a 400
//! whose `errorCode` says there is no route is [`JupiterError::NoRoute`]. Error details carry a
//! status, Jupiter's `errorCode` and at most a short message: never a URL, a key or a whole body.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Secret;
use crate::trader::tx::{Pubkey, Transaction};

/// Path of the quote endpoint, appended to the base URL.
pub const QUOTE_PATH: &str = "/swap/v1/quote";
/// Path of the swap endpoint, appended to the base URL.
pub const SWAP_PATH: &str = "/swap/v1/swap";
/// The header carrying the API key on `https://api.jup.ag`.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The `errorCode`s of a 400 that mean "no route for this pair and amount".
pub const NO_ROUTE_CODES: [&str; 3] = ["COULD_NOT_FIND_ANY_ROUTE", "NO_ROUTES_FOUND", "TOKEN_NOT_TRADABLE"];

/// Largest response body read; Jupiter's answers are a few kilobytes.
const MAX_BODY_BYTES: usize = 1 << 20;
/// Longest server message kept in an error detail.
const MAX_MESSAGE_CHARS: usize = 120;
/// Connection-establishment limit, whatever the whole-request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to Jupiter failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JupiterError {
    /// The request did not complete: connection refused, timeout, body cut short. Transient.
    #[error("jupiter transport error: {detail}")]
    Transport { detail: String },
    /// HTTP 429. `retry_after` comes from a `Retry-After` header in seconds, when there is one.
    #[error("jupiter rate limited (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// Jupiter found no route for this pair and amount (a 400 with a no-route `errorCode`).
    #[error("jupiter found no route: {detail}")]
    NoRoute { detail: String },
    /// Any other non-success status. Transient for 5xx.
    #[error("jupiter answered HTTP {status}: {detail}")]
    Status { status: u16, detail: String },
    /// A success whose body breaks the contract (or a base URL / key unusable by [`Jupiter::new`]).
    /// Never transient: asking again is not expected to help.
    #[error("jupiter response malformed: {detail}")]
    Malformed { detail: String },
}

impl JupiterError {
    /// Whether asking again later may succeed: transport failures, 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::RateLimited { .. } => true,
            Self::Status { status, .. } => (500..=599).contains(status),
            Self::NoRoute { .. } | Self::Malformed { .. } => false,
        }
    }
}

fn malformed(detail: impl Into<String>) -> JupiterError {
    JupiterError::Malformed { detail: detail.into() }
}

/// An ExactIn quote, validated against what was asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quote {
    pub input_mint: String,
    pub output_mint: String,
    /// Smallest units of the input mint spent (exactly the amount asked for).
    pub in_amount: u64,
    /// Smallest units of the output mint expected.
    pub out_amount: u64,
    /// The least output the swap accepts (after slippage); never above `out_amount`.
    pub other_amount_threshold: u64,
    pub slippage_bps: u16,
    /// Price impact as Jupiter writes it (a decimal string, `"0"` for none).
    pub price_impact_pct: String,
    /// The hops, in order.
    pub route: Vec<RouteStep>,
    /// The slot the quote was computed at, when Jupiter says.
    pub context_slot: Option<u64>,
    /// The quote response exactly as received: sent back as `quoteResponse` by [`Jupiter::swap`]
    /// and stored in the audit trail.
    pub raw: Value,
}

/// One hop of a quote's route (`routePlan[].swapInfo` with its `percent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteStep {
    /// The venue, e.g. `Whirlpool`.
    pub label: String,
    pub amm_key: String,
    pub input_mint: String,
    pub output_mint: String,
    pub in_amount: u64,
    pub out_amount: u64,
    pub fee_amount: u64,
    pub fee_mint: String,
    /// Share of the input routed through this hop (0..=100).
    pub percent: u8,
}

/// The unsigned swap transaction Jupiter built for a quote.
#[derive(Debug, Clone)]
pub struct SwapTx {
    /// Fee payer and signer: the user (checked).
    pub transaction: Transaction,
    /// The transaction expires once the chain passes this block height.
    pub last_valid_block_height: u64,
    /// Priority fee Jupiter put in the transaction.
    pub prioritization_fee_lamports: u64,
    /// Jupiter's `simulationError`, when it simulated the transaction and the simulation failed:
    /// sending it will most likely fail too. `None` when absent or `null`.
    pub simulation_error: Option<String>,
}

/// The Jupiter Swap API client. Clones share the connection pool.
#[derive(Clone)]
pub struct Jupiter {
    http: reqwest::Client,
    /// Without a trailing `/`.
    base_url: String,
    /// The `x-api-key` value, marked sensitive; `None` for the keyless lite API.
    api_key: Option<HeaderValue>,
}

impl fmt::Debug for Jupiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let api_key = self.api_key.as_ref().map(|_| "[redacted]");
        f.debug_struct("Jupiter").field("base_url", &self.base_url).field("api_key", &api_key).finish()
    }
}

/// A response that came back (any status), its body read.
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Jupiter {
    /// A client of the API at `base_url` (`/swap/v1/…` is appended), sending `api_key` as
    /// `x-api-key` when given. `timeout` bounds each whole request.
    ///
    /// Fails with `Malformed` for a base URL that is not `http(s)://…` or a key that cannot be a
    /// header value, and with `Transport` if the HTTP client cannot be built.
    pub fn new(base_url: &str, api_key: Option<Secret>, timeout: Duration) -> Result<Self, JupiterError> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base_url).map_err(|err| malformed(format!("base url: {err}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
            return Err(malformed("base url: must be http(s)://host[/path] without a query"));
        }
        let api_key = match api_key {
            None => None,
            Some(key) => {
                let mut value =
                    HeaderValue::from_str(key.expose()).map_err(|_| malformed("api key: not a valid header value"))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .user_agent(concat!("chorus/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| JupiterError::Transport { detail: "cannot build the HTTP client".to_owned() })?;
        Ok(Self { http, base_url, api_key })
    }

    /// ExactIn quote of `amount` (smallest units of input) with `slippage_bps` tolerance.
    pub async fn quote(
        &self,
        input_mint: &str,
        output_mint: &str,
        amount: u64,
        slippage_bps: u16,
    ) -> Result<Quote, JupiterError> {
        let query = [
            ("inputMint", input_mint.to_owned()),
            ("outputMint", output_mint.to_owned()),
            ("amount", amount.to_string()),
            ("slippageBps", slippage_bps.to_string()),
            ("swapMode", "ExactIn".to_owned()),
            ("restrictIntermediateTokens", "true".to_owned()),
        ];
        let request = self.http.get(format!("{}{QUOTE_PATH}", self.base_url)).query(&query);
        let body = self.call(request).await?;
        let asked = Asked { input_mint, output_mint, amount, slippage_bps };
        parse_quote(body, &asked)
    }

    /// The unsigned swap transaction for `quote`, paid by `user`.
    pub async fn swap(&self, quote: &Quote, user: &Pubkey) -> Result<SwapTx, JupiterError> {
        let body = json!({
            "userPublicKey": user.to_string(),
            "quoteResponse": quote.raw,
            "wrapAndUnwrapSol": true,
            "dynamicComputeUnitLimit": true,
            "prioritizationFeeLamports": "auto",
        });
        let request = self.http.post(format!("{}{SWAP_PATH}", self.base_url)).json(&body);
        let body = self.call(request).await?;
        parse_swap(&body, user)
    }

    /// Sends a request with the key, and returns the JSON object of a success or the classified
    /// error.
    async fn call(&self, mut request: reqwest::RequestBuilder) -> Result<Value, JupiterError> {
        if let Some(key) = &self.api_key {
            request = request.header(API_KEY_HEADER, key.clone());
        }
        let raw = send(request).await?;
        if !raw.status.is_success() {
            return Err(classify(&raw));
        }
        match serde_json::from_slice::<Value>(&raw.body) {
            Ok(value) if value.is_object() => Ok(value),
            Ok(_) => Err(malformed("body is not a JSON object")),
            Err(_) => Err(malformed("body is not JSON")),
        }
    }
}

/// Sends the request and reads at most [`MAX_BODY_BYTES`] of the body.
async fn send(request: reqwest::RequestBuilder) -> Result<Raw, JupiterError> {
    let mut response = request.send().await.map_err(|err| transport_error(&err))?;
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|err| transport_error(&err))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(malformed(format!("body larger than {MAX_BODY_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Raw { status, headers, body })
}

/// What a transport error was, without its URL.
fn transport_error(err: &reqwest::Error) -> JupiterError {
    JupiterError::Transport { detail: crate::platform::transport_failure(err).to_owned() }
}

/// Classifies a non-success response.
fn classify(raw: &Raw) -> JupiterError {
    let status = raw.status.as_u16();
    if raw.status == StatusCode::TOO_MANY_REQUESTS {
        return JupiterError::RateLimited { retry_after: retry_after(&raw.headers) };
    }
    let (code, message) = error_fields(&raw.body);
    if raw.status == StatusCode::BAD_REQUEST
        && let Some(code) = &code
        && NO_ROUTE_CODES.contains(&code.as_str())
    {
        return JupiterError::NoRoute { detail: describe(Some(code), message.as_deref()) };
    }
    JupiterError::Status { status, detail: describe(code.as_deref(), message.as_deref()) }
}

/// `Retry-After` as a number of seconds; an HTTP date or garbage counts as absent.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    parse_digits(text).map(Duration::from_secs)
}

/// Jupiter's error body `{"error": "...", "errorCode": "..."}`: the code (if it looks like one) and
/// a short, single-line message (dropped if it carries a URL).
fn error_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let code = value
        .get("errorCode")
        .and_then(Value::as_str)
        .filter(|code| !code.is_empty() && code.len() <= 64)
        .filter(|code| code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(str::to_owned);
    let message = value
        .get("error")
        .and_then(Value::as_str)
        .map(|text| text.chars().filter(|c| !c.is_control()).take(MAX_MESSAGE_CHARS).collect::<String>())
        .filter(|text| !text.trim().is_empty() && !text.contains("://"));
    (code, message)
}

fn describe(code: Option<&str>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        (None, Some(message)) => message.to_owned(),
        (None, None) => "no error details".to_owned(),
    }
}

/// A non-empty run of ASCII digits that fits a `u64` (no sign, no spaces, no exponent).
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A string field.
fn string_field(object: &Value, field: &str) -> Result<String, JupiterError> {
    match object.get(field) {
        Some(Value::String(text)) => Ok(text.clone()),
        _ => Err(malformed(format!("{field} is not a string"))),
    }
}

/// An amount: a decimal string that parses to a `u64`.
fn amount_field(object: &Value, field: &str) -> Result<u64, JupiterError> {
    object
        .get(field)
        .and_then(Value::as_str)
        .and_then(parse_digits)
        .ok_or_else(|| malformed(format!("{field} is not a decimal string fitting u64")))
}

/// A non-negative JSON integer.
fn integer_field(object: &Value, field: &str) -> Result<u64, JupiterError> {
    object.get(field).and_then(Value::as_u64).ok_or_else(|| malformed(format!("{field} is not a non-negative integer")))
}

/// What a quote was asked for.
struct Asked<'a> {
    input_mint: &'a str,
    output_mint: &'a str,
    amount: u64,
    slippage_bps: u16,
}

/// Validates a quote response against what was asked.
fn parse_quote(raw: Value, asked: &Asked<'_>) -> Result<Quote, JupiterError> {
    let input_mint = string_field(&raw, "inputMint")?;
    let output_mint = string_field(&raw, "outputMint")?;
    if input_mint != asked.input_mint || output_mint != asked.output_mint {
        return Err(malformed(format!(
            "quote is for {input_mint} -> {output_mint}, asked {} -> {}",
            asked.input_mint, asked.output_mint
        )));
    }
    match raw.get("swapMode").and_then(Value::as_str) {
        Some("ExactIn") => {}
        _ => return Err(malformed("swapMode is not ExactIn")),
    }
    let in_amount = amount_field(&raw, "inAmount")?;
    if in_amount != asked.amount {
        return Err(malformed(format!("inAmount is {in_amount}, asked {}", asked.amount)));
    }
    let out_amount = amount_field(&raw, "outAmount")?;
    if out_amount == 0 {
        return Err(malformed("outAmount is 0"));
    }
    let other_amount_threshold = amount_field(&raw, "otherAmountThreshold")?;
    if other_amount_threshold > out_amount {
        return Err(malformed("otherAmountThreshold is above outAmount"));
    }
    let slippage_bps = integer_field(&raw, "slippageBps")?;
    if slippage_bps != u64::from(asked.slippage_bps) {
        return Err(malformed(format!("slippageBps is {slippage_bps}, asked {}", asked.slippage_bps)));
    }
    let price_impact_pct = string_field(&raw, "priceImpactPct")?;
    let context_slot = match raw.get("contextSlot") {
        None | Some(Value::Null) => None,
        Some(_) => Some(integer_field(&raw, "contextSlot")?),
    };
    let route = match raw.get("routePlan") {
        Some(Value::Array(steps)) if !steps.is_empty() => {
            steps.iter().enumerate().map(|(index, step)| parse_step(index, step)).collect::<Result<Vec<_>, _>>()?
        }
        _ => return Err(malformed("routePlan is not a non-empty list")),
    };
    Ok(Quote {
        input_mint,
        output_mint,
        in_amount,
        out_amount,
        other_amount_threshold,
        slippage_bps: asked.slippage_bps,
        price_impact_pct,
        route,
        context_slot,
        raw,
    })
}

/// One `routePlan` entry.
fn parse_step(index: usize, step: &Value) -> Result<RouteStep, JupiterError> {
    let in_step = |err: JupiterError| match err {
        JupiterError::Malformed { detail } => malformed(format!("routePlan[{index}]: {detail}")),
        other => other,
    };
    let info = step.get("swapInfo").filter(|info| info.is_object()).ok_or_else(|| in_step(malformed("no swapInfo")))?;
    // `percent` is the documented share; newer answers also carry `bps`, used if `percent` is absent.
    let percent = match step.get("percent") {
        None | Some(Value::Null) => integer_field(step, "bps").ok().filter(|bps| *bps <= 10_000).map(|bps| bps / 100),
        Some(percent) => percent.as_u64().filter(|percent| *percent <= 100),
    };
    let percent = percent
        .and_then(|percent| u8::try_from(percent).ok())
        .ok_or_else(|| in_step(malformed("percent is not an integer in 0..=100")))?;
    Ok(RouteStep {
        label: string_field(info, "label").map_err(in_step)?,
        amm_key: string_field(info, "ammKey").map_err(in_step)?,
        input_mint: string_field(info, "inputMint").map_err(in_step)?,
        output_mint: string_field(info, "outputMint").map_err(in_step)?,
        in_amount: amount_field(info, "inAmount").map_err(in_step)?,
        out_amount: amount_field(info, "outAmount").map_err(in_step)?,
        fee_amount: amount_field(info, "feeAmount").map_err(in_step)?,
        fee_mint: string_field(info, "feeMint").map_err(in_step)?,
        percent,
    })
}

/// Validates a swap response: the transaction decodes and `user` pays for and signs it.
fn parse_swap(body: &Value, user: &Pubkey) -> Result<SwapTx, JupiterError> {
    let encoded = string_field(body, "swapTransaction")?;
    let transaction = Transaction::from_base64(&encoded).map_err(|err| malformed(format!("swapTransaction: {err}")))?;
    let keys = transaction.account_keys().map_err(|err| malformed(format!("swapTransaction: {err}")))?;
    match keys.first() {
        Some(payer) if payer == user => {}
        Some(payer) => return Err(malformed(format!("fee payer is {payer}, not the user {user}"))),
        None => return Err(malformed("swapTransaction has no accounts")),
    }
    let signers = transaction.signers().map_err(|err| malformed(format!("swapTransaction: {err}")))?;
    if !signers.contains(user) {
        return Err(malformed(format!("the user {user} is not a required signer")));
    }
    let simulation_error = match body.get("simulationError") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.chars().take(MAX_MESSAGE_CHARS).collect()),
        Some(other) => Some(other.to_string().chars().take(MAX_MESSAGE_CHARS).collect()),
    };
    Ok(SwapTx {
        transaction,
        last_valid_block_height: integer_field(body, "lastValidBlockHeight")?,
        prioritization_fee_lamports: integer_field(body, "prioritizationFeeLamports")?,
        simulation_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOL: &str = "So11111111111111111111111111111111111111112";
    const USDC: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";

    fn asked() -> Asked<'static> {
        Asked { input_mint: SOL, output_mint: USDC, amount: 1_000_000_000, slippage_bps: 50 }
    }

    fn good_quote() -> Value {
        json!({
            "inputMint": SOL, "inAmount": "1000000000", "outputMint": USDC, "outAmount": "149625000",
            "otherAmountThreshold": "148876875", "swapMode": "ExactIn", "slippageBps": 50,
            "platformFee": null, "priceImpactPct": "0",
            "routePlan": [{"swapInfo": {"ammKey": "k", "label": "Sim", "inputMint": SOL, "outputMint": USDC,
                "inAmount": "1000000000", "outAmount": "149625000", "feeAmount": "2500000", "feeMint": SOL},
                "percent": 100}],
            "contextSlot": 7, "timeTaken": 0.001
        })
    }

    fn detail_of(err: JupiterError) -> String {
        match err {
            JupiterError::Malformed { detail } => detail,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn a_good_quote_parses_and_keeps_the_raw_response() {
        let quote = parse_quote(good_quote(), &asked()).unwrap();
        assert_eq!(
            (quote.in_amount, quote.out_amount, quote.other_amount_threshold),
            (1_000_000_000, 149_625_000, 148_876_875)
        );
        assert_eq!(quote.route[0].fee_amount, 2_500_000);
        assert_eq!(quote.context_slot, Some(7));
        assert_eq!(quote.raw, good_quote());
    }

    #[test]
    fn amounts_must_be_plain_decimal_strings_fitting_u64() {
        assert_eq!(parse_digits("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "+5", "-5", " 5", "5.0", "1e9", "18446744073709551616", "0x10"] {
            assert_eq!(parse_digits(bad), None, "{bad:?}");
        }
        let mut quote = good_quote();
        quote["outAmount"] = json!(149_625_000);
        assert!(detail_of(parse_quote(quote, &asked()).unwrap_err()).contains("outAmount"));
    }

    #[test]
    fn a_quote_for_something_else_is_malformed() {
        let cases: [(&str, Value); 7] = [
            ("outputMint", json!(SOL)),
            ("inAmount", json!("999999999")),
            ("outAmount", json!("0")),
            ("otherAmountThreshold", json!("149625001")),
            ("swapMode", json!("ExactOut")),
            ("slippageBps", json!(300)),
            ("routePlan", json!([])),
        ];
        for (field, value) in cases {
            let mut quote = good_quote();
            quote[field] = value;
            assert!(parse_quote(quote, &asked()).is_err(), "{field}");
        }
        let mut quote = good_quote();
        quote["routePlan"][0]["percent"] = json!(101);
        assert!(detail_of(parse_quote(quote, &asked()).unwrap_err()).starts_with("routePlan[0]"));
        let mut quote = good_quote();
        quote["routePlan"][0]["percent"] = Value::Null;
        quote["routePlan"][0]["bps"] = json!(10_000);
        assert_eq!(parse_quote(quote, &asked()).unwrap().route[0].percent, 100);
    }

    fn raw(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> Raw {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        Raw { status: StatusCode::from_u16(status).unwrap(), headers: map, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn errors_are_classified() {
        let no_route = raw(400, &[], r#"{"error":"Could not find any route","errorCode":"COULD_NOT_FIND_ANY_ROUTE"}"#);
        assert_eq!(
            classify(&no_route),
            JupiterError::NoRoute { detail: "COULD_NOT_FIND_ANY_ROUTE: Could not find any route".into() }
        );
        assert!(matches!(
            classify(&raw(400, &[], r#"{"errorCode":"TOKEN_NOT_TRADABLE"}"#)),
            JupiterError::NoRoute { .. }
        ));
        let bad = classify(&raw(400, &[], r#"{"error":"see https://example.com/?key=abc"}"#));
        assert_eq!(bad, JupiterError::Status { status: 400, detail: "no error details".into() });
        assert!(!bad.is_transient());
        let limited = classify(&raw(429, &[("retry-after", "7")], ""));
        assert_eq!(limited, JupiterError::RateLimited { retry_after: Some(Duration::from_secs(7)) });
        assert!(limited.is_transient());
        let dated = classify(&raw(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], ""));
        assert_eq!(dated, JupiterError::RateLimited { retry_after: None });
        assert!(classify(&raw(503, &[], "<html>")).is_transient());
        assert!(!classify(&raw(401, &[], "")).is_transient());
        assert!(JupiterError::Transport { detail: "timeout".into() }.is_transient());
        assert!(!malformed("x").is_transient());
    }

    #[test]
    fn new_refuses_unusable_urls_and_keys_without_printing_them() {
        let timeout = Duration::from_secs(1);
        assert!(Jupiter::new("ftp://example.com", None, timeout).is_err());
        assert!(Jupiter::new("not a url", None, timeout).is_err());
        let err = Jupiter::new("https://api.jup.ag", Some(Secret::new("bad\nkey-value")), timeout).unwrap_err();
        assert!(!err.to_string().contains("key-value"));
        let client = Jupiter::new("https://api.jup.ag/", Some(Secret::new("sk-secret")), timeout).unwrap();
        assert_eq!(client.base_url, "https://api.jup.ag");
        assert!(!format!("{client:?}").contains("sk-secret"));
    }
}
