//! The Jupiter Swap API v1 simulator: an HTTP server on 127.0.0.1 answering
//! `GET /swap/v1/quote` and `POST /swap/v1/swap` in the shapes of the live API, with deterministic
//! prices, scripted faults and a record of every request.
//!
//! The contract (shared with [`crate::trader::jupiter`]) is:
//! - **Prices.** Each known mint has a USD price and decimals ([`JupiterSim::set_price`]; defaults
//!   in [`DEFAULT_TOKENS`]). Prices are held as integers of 10⁻¹² USD, and an ExactIn quote of `in`
//!   units pays, in one exact floor,
//!   `out = ⌊in × price_in / 10^dec_in ÷ price_out × 10^dec_out × (10000 − fee_bps) / 10000⌋` and
//!   `otherAmountThreshold = ⌊out × (10000 − slippageBps) / 10000⌋`. The route has one hop (100 %)
//!   whose `feeAmount` is `⌊in × fee_bps / 10000⌋` of the input mint.
//! - **Errors** look like Jupiter's, `{"error": "…", "errorCode": "…"}` with status 400: an unknown
//!   mint or an output of 0 is `COULD_NOT_FIND_ANY_ROUTE`; the same mint on both sides is
//!   `CIRCULAR_ARBITRAGE_IS_DISABLED`; missing or bad parameters (an amount that is not a positive
//!   decimal, `slippageBps` over 10000, `swapMode=ExactOut`) and products too large for 128-bit
//!   arithmetic have no `errorCode`. With [`JupiterSim::require_api_key`], a request without the
//!   matching `x-api-key` is a 401.
//! - **Swaps.** The body's `quoteResponse` must be a quote this simulator issued (same mints and
//!   amounts) and `userPublicKey` must be an address, else 400. The answer's `swapTransaction` is
//!   [`build_unsigned_v0`] paid by the user, with a blockhash derived from a counter, calling
//!   [`JUPITER_PROGRAM_ID`] with the data [`SimSwap::encode`] writes (so that a simulated chain can
//!   apply the swap); `lastValidBlockHeight` is the block height ([`JupiterSim::set_block_height`])
//!   plus 150.
//! - **Faults** ([`JupiterFault`]) are queued with [`JupiterSim::script`]: every request, to any
//!   path, pops the next one before anything else is checked.
//! - Every request, malformed ones and unknown paths included, is recorded as a [`JupiterRequest`].
//!
//! Nothing in here panics on bad input.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::lock;
use crate::hash::fnv1a;
use crate::trader::tx::{Pubkey, build_unsigned_v0};

/// Jupiter's swap program (v6), the program the simulated transactions call.
pub const JUPITER_PROGRAM_ID: &str = "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4";
/// The tokens a new simulator prices: `(symbol, mint, USD per whole token, decimals)`.
pub const DEFAULT_TOKENS: [(&str, &str, f64, u8); 4] = [
    ("SOL", "So11111111111111111111111111111111111111112", 150.0, 9),
    ("USDC", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 1.0, 6),
    ("BONK", "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", 0.00002, 5),
    ("JUP", "JUPyiwrYJFskUPiHa7hkeR8VUtAeFoSYbKedZNsDvCN", 0.80, 6),
];
/// Route fee of a new simulator, in basis points.
pub const DEFAULT_FEE_BPS: u16 = 25;
/// Block height of a new simulator (`lastValidBlockHeight` is this plus [`VALID_FOR_BLOCKS`]).
pub const DEFAULT_BLOCK_HEIGHT: u64 = 1_000;
/// How many blocks a swap transaction stays valid after the current height.
pub const VALID_FOR_BLOCKS: u64 = 150;
/// `prioritizationFeeLamports` of every swap answer.
pub const PRIORITIZATION_FEE_LAMPORTS: u64 = 5_000;
/// The first bytes of the instruction data of a simulated swap ([`SimSwap`]).
pub const SIM_SWAP_TAG: [u8; 8] = *b"simjupv1";

const SOL_MINT: &str = DEFAULT_TOKENS[0].1;
const USDC_MINT: &str = DEFAULT_TOKENS[1].1;
/// Slippage when the quote request names none (Jupiter's default).
const DEFAULT_SLIPPAGE_BPS: u16 = 50;
/// Prices are integers of this fraction of a USD.
const PRICE_SCALE: f64 = 1e12;
/// Largest price kept, in [`PRICE_SCALE`] units (10¹⁸ USD).
const MAX_SCALED_PRICE: f64 = 1e30;
/// How many issued quotes `/swap` remembers (the oldest are forgotten first).
const MAX_ISSUED_QUOTES: usize = 10_000;
/// How far slots run ahead of block heights in `contextSlot`.
const SLOT_LEAD: u64 = 10_000;
const BPS: u128 = 10_000;

/// A fault injected into one response (see [`JupiterSim::script`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JupiterFault {
    /// This status with a Jupiter-style error body (an invalid code becomes 500).
    Status(u16),
    /// 429 with `Retry-After: retry_after_secs`.
    RateLimited { retry_after_secs: u64 },
    /// Sleep this long, then answer normally.
    Slow(Duration),
    /// 200 with a truncated JSON body.
    MalformedBody,
    /// 400 `COULD_NOT_FIND_ANY_ROUTE`, whatever was asked.
    NoRoute,
    /// Quote: the answer (and its route) names another output mint than the one asked for (SOL, or
    /// USDC when SOL was asked). Swap: answered normally.
    WrongMint,
    /// Swap: the transaction's fee payer and signer is another address than `userPublicKey`.
    /// Quote: answered normally.
    WrongPayer,
}

/// One request as the simulator received it.
#[derive(Clone, Debug)]
pub struct JupiterRequest {
    pub method: String,
    pub path: String,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Names lowercased; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The JSON body; an empty body is `null`, anything else that is not JSON a string (lossy UTF-8).
    pub body: Value,
}

/// The swap a simulated transaction's instruction encodes, in its data: [`SIM_SWAP_TAG`], then
/// `in_amount`, `out_amount` and `min_out_amount` (little-endian u64), then the input and output
/// mints (32 bytes each) — 96 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSwap {
    /// Base58 mint given up.
    pub input_mint: String,
    /// Base58 mint received.
    pub output_mint: String,
    pub in_amount: u64,
    /// The quoted output.
    pub out_amount: u64,
    /// The quote's `otherAmountThreshold`: the least output the swap accepts.
    pub min_out_amount: u64,
}

impl SimSwap {
    /// Length of the encoded data.
    pub const LEN: usize = 96;

    /// The instruction data; `None` if a mint is not a base58 address.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let input: Pubkey = self.input_mint.parse().ok()?;
        let output: Pubkey = self.output_mint.parse().ok()?;
        let mut data = Vec::with_capacity(Self::LEN);
        data.extend_from_slice(&SIM_SWAP_TAG);
        for amount in [self.in_amount, self.out_amount, self.min_out_amount] {
            data.extend_from_slice(&amount.to_le_bytes());
        }
        data.extend_from_slice(&input.0);
        data.extend_from_slice(&output.0);
        Some(data)
    }

    /// Reads instruction data written by [`SimSwap::encode`]; `None` for anything else.
    pub fn decode(data: &[u8]) -> Option<Self> {
        if data.len() != Self::LEN || data[..8] != SIM_SWAP_TAG {
            return None;
        }
        let amount = |at: usize| data.get(at..at + 8).and_then(|bytes| bytes.try_into().ok()).map(u64::from_le_bytes);
        let mint = |at: usize| {
            let bytes: [u8; 32] = data.get(at..at + 32)?.try_into().ok()?;
            Some(Pubkey(bytes).to_string())
        };
        Some(Self {
            in_amount: amount(8)?,
            out_amount: amount(16)?,
            min_out_amount: amount(24)?,
            input_mint: mint(32)?,
            output_mint: mint(64)?,
        })
    }
}

/// A priced token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Token {
    /// USD per whole token, in units of 10⁻¹² USD (at least 1).
    scaled_price: u128,
    decimals: u8,
}

impl Token {
    /// `None` unless `usd_per_token` is a finite price of at least 10⁻¹² USD.
    fn new(usd_per_token: f64, decimals: u8) -> Option<Self> {
        let scaled = (usd_per_token * PRICE_SCALE).round();
        if !scaled.is_finite() || !(1.0..=MAX_SCALED_PRICE).contains(&scaled) {
            return None;
        }
        Some(Self { scaled_price: scaled as u128, decimals })
    }
}

/// The facts of an issued quote that `/swap` checks.
#[derive(Clone, Debug, PartialEq, Eq)]
struct IssuedQuote {
    input_mint: String,
    output_mint: String,
    in_amount: u64,
    out_amount: u64,
    other_amount_threshold: u64,
}

struct Market {
    tokens: HashMap<String, Token>,
    fee_bps: u16,
    block_height: u64,
    api_key: Option<String>,
    issued: VecDeque<IssuedQuote>,
}

impl Default for Market {
    fn default() -> Self {
        let tokens = DEFAULT_TOKENS
            .iter()
            .filter_map(|(_, mint, usd, decimals)| Some(((*mint).to_owned(), Token::new(*usd, *decimals)?)))
            .collect();
        Self {
            tokens,
            fee_bps: DEFAULT_FEE_BPS,
            block_height: DEFAULT_BLOCK_HEIGHT,
            api_key: None,
            issued: VecDeque::new(),
        }
    }
}

#[derive(Default)]
struct SimState {
    market: Mutex<Market>,
    script: Mutex<VecDeque<JupiterFault>>,
    requests: Mutex<Vec<JupiterRequest>>,
    /// Source of blockhashes.
    swaps: AtomicU64,
}

/// A running Jupiter simulator. Clones share the server and state; it lives as long as the runtime.
#[derive(Clone)]
pub struct JupiterSim {
    pub addr: SocketAddr,
    state: Arc<SimState>,
}

impl JupiterSim {
    /// Binds 127.0.0.1 on an ephemeral port and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` and serves on the current tokio runtime.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let state = Arc::new(SimState::default());
        let app = Router::new().fallback(handle).with_state(state.clone());
        let addr = super::serve(addr, app).await?;
        Ok(Self { addr, state })
    }

    /// `http://ADDR`, the client's base URL (it appends `/swap/v1/…`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Prices `mint` at `usd_per_token` per whole token of `decimals` decimals. A price that is not
    /// a finite number of at least 10⁻¹² USD unlists the mint (quotes get no route).
    pub fn set_price(&self, mint: &str, usd_per_token: f64, decimals: u8) {
        let mut market = lock(&self.state.market);
        match Token::new(usd_per_token, decimals) {
            Some(token) => market.tokens.insert(mint.to_owned(), token),
            None => market.tokens.remove(mint),
        };
    }

    /// Sets the route fee (default [`DEFAULT_FEE_BPS`]; capped at 10000).
    pub fn set_fee_bps(&self, bps: u16) {
        lock(&self.state.market).fee_bps = bps.min(10_000);
    }

    /// Sets the current block height: swap transactions are valid until `height + 150`.
    pub fn set_block_height(&self, height: u64) {
        lock(&self.state.market).block_height = height;
    }

    /// With `Some(key)`, requests without `x-api-key: key` get a 401; `None` lifts the requirement.
    pub fn require_api_key(&self, key: Option<&str>) {
        lock(&self.state.market).api_key = key.map(str::to_owned);
    }

    /// Queues faults after those already queued; each request pops the next one.
    pub fn script(&self, faults: impl IntoIterator<Item = JupiterFault>) {
        lock(&self.state.script).extend(faults);
    }

    /// All requests so far, oldest first.
    pub fn requests(&self) -> Vec<JupiterRequest> {
        lock(&self.state.requests).clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.state.requests).clear();
    }
}

use super::json_response;

/// A Jupiter-style error: `{"error": message}`, with `errorCode` when given.
fn error(status: StatusCode, message: &str, code: Option<&str>) -> Response {
    let body = match code {
        Some(code) => json!({"error": message, "errorCode": code}),
        None => json!({"error": message}),
    };
    json_response(status, body.to_string())
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message, None)
}

fn no_route() -> Response {
    error(StatusCode::BAD_REQUEST, "Could not find any route", Some("COULD_NOT_FIND_ANY_ROUTE"))
}

fn decode_pairs(encoded: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://sim/?{encoded}"))
        .map(|url| url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A non-empty run of ASCII digits that fits a `u64`.
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `⌊∏ numerators / ∏ denominators⌋`, exact: common factors cancel first, then the products are
/// taken in 128 bits. `None` if a product still overflows or a denominator is 0.
fn mul_div_floor(mut numerators: Vec<u128>, mut denominators: Vec<u128>) -> Option<u128> {
    for numerator in &mut numerators {
        for denominator in &mut denominators {
            let common = gcd(*numerator, *denominator);
            if common > 1 {
                *numerator /= common;
                *denominator /= common;
            }
        }
    }
    let numerator = numerators.iter().try_fold(1u128, |product, factor| product.checked_mul(*factor))?;
    let denominator = denominators.iter().try_fold(1u128, |product, factor| product.checked_mul(*factor))?;
    numerator.checked_div(denominator)
}

/// The output of an ExactIn swap of `in_amount` units of `from` into `to` (see the module docs).
/// `None` when the arithmetic overflows.
fn quote_out(in_amount: u64, from: Token, to: Token, fee_bps: u16) -> Option<u64> {
    let scale = |exponent: u8| 10u128.checked_pow(u32::from(exponent));
    let (up, down) = if to.decimals >= from.decimals {
        (scale(to.decimals - from.decimals)?, 1)
    } else {
        (1, scale(from.decimals - to.decimals)?)
    };
    let keep = BPS - u128::from(fee_bps.min(10_000));
    let out =
        mul_div_floor(vec![u128::from(in_amount), from.scaled_price, up, keep], vec![to.scaled_price, down, BPS])?;
    u64::try_from(out).ok()
}

/// `⌊amount × bps / 10000⌋`; `bps` is at most 10000, so the result fits.
fn bps_of(amount: u64, bps: u16) -> u64 {
    let part = u128::from(amount) * u128::from(bps.min(10_000)) / BPS;
    u64::try_from(part).unwrap_or(amount)
}

/// 32 bytes derived from `seed` (a blockhash, an AMM key, another payer).
fn derived_bytes(seed: &str) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (index, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&fnv1a(format!("{seed}/{index}").as_bytes()).to_le_bytes());
    }
    bytes
}

async fn handle(
    State(state): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri.query().map(decode_pairs).unwrap_or_default();
    let parsed = if body.is_empty() { Ok(Value::Null) } else { serde_json::from_slice::<Value>(&body) };
    let recorded = match &parsed {
        Ok(value) => value.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    lock(&state.requests).push(JupiterRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: query.clone(),
        headers: super::recorded_headers(&headers),
        body: recorded,
    });

    let fault = lock(&state.script).pop_front();
    match &fault {
        Some(JupiterFault::Status(status)) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(status, "simulated failure", None);
        }
        Some(JupiterFault::RateLimited { retry_after_secs }) => {
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, "Too many requests", None);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            return response;
        }
        Some(JupiterFault::Slow(delay)) => tokio::time::sleep(*delay).await,
        Some(JupiterFault::MalformedBody) => {
            return json_response(StatusCode::OK, r#"{"inputMint": "So1111111111111111111111111111111"#);
        }
        Some(JupiterFault::NoRoute) => return no_route(),
        Some(JupiterFault::WrongMint | JupiterFault::WrongPayer) | None => {}
    }

    let required_key = lock(&state.market).api_key.clone();
    if let Some(required) = required_key {
        let sent = headers.get("x-api-key").map(HeaderValue::as_bytes);
        if sent != Some(required.as_bytes()) {
            return error(StatusCode::UNAUTHORIZED, "Unauthorized: missing or invalid x-api-key", None);
        }
    }

    match (uri.path(), method) {
        ("/swap/v1/quote", Method::GET) => quote(&state, &query, fault == Some(JupiterFault::WrongMint)),
        ("/swap/v1/swap", Method::POST) => match parsed {
            Ok(body) => swap(&state, &body, fault == Some(JupiterFault::WrongPayer)),
            Err(err) => bad_request(&format!("invalid JSON body: {err}")),
        },
        ("/swap/v1/quote" | "/swap/v1/swap", _) => error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", None),
        _ => error(StatusCode::NOT_FOUND, "Not found", None),
    }
}

/// `GET /swap/v1/quote`.
fn quote(state: &SimState, query: &[(String, String)], wrong_mint: bool) -> Response {
    let (Some(input_mint), Some(output_mint)) = (param(query, "inputMint"), param(query, "outputMint")) else {
        return bad_request("inputMint and outputMint are required");
    };
    if input_mint.is_empty() || output_mint.is_empty() {
        return bad_request("inputMint and outputMint must not be empty");
    }
    let Some(in_amount) = param(query, "amount").and_then(parse_digits).filter(|amount| *amount > 0) else {
        return bad_request("amount must be a positive integer");
    };
    let slippage_bps = match param(query, "slippageBps") {
        None => DEFAULT_SLIPPAGE_BPS,
        Some(text) => match text.parse::<u16>() {
            Ok(bps) if bps <= 10_000 => bps,
            _ => return bad_request("slippageBps must be an integer in 0..=10000"),
        },
    };
    match param(query, "swapMode") {
        None | Some("ExactIn") => {}
        Some(_) => return bad_request("swapMode must be ExactIn (ExactOut is not simulated)"),
    }
    if !matches!(param(query, "restrictIntermediateTokens"), None | Some("true" | "false")) {
        return bad_request("restrictIntermediateTokens must be true or false");
    }
    if input_mint == output_mint {
        let message = "inputMint cannot be the same as outputMint";
        return error(StatusCode::BAD_REQUEST, message, Some("CIRCULAR_ARBITRAGE_IS_DISABLED"));
    }

    let mut market = lock(&state.market);
    let (Some(from), Some(to)) = (market.tokens.get(input_mint).copied(), market.tokens.get(output_mint).copied())
    else {
        return no_route();
    };
    let fee_bps = market.fee_bps;
    let Some(out_amount) = quote_out(in_amount, from, to, fee_bps) else {
        return bad_request("amount too large for the simulator");
    };
    if out_amount == 0 {
        return no_route();
    }
    let other_amount_threshold = bps_of(out_amount, 10_000 - slippage_bps);
    let output_mint = if !wrong_mint {
        output_mint
    } else if output_mint != SOL_MINT {
        SOL_MINT
    } else {
        USDC_MINT
    };
    let amm_key = Pubkey(derived_bytes(&format!("amm/{input_mint}/{output_mint}"))).to_string();
    let body = json!({
        "inputMint": input_mint,
        "inAmount": in_amount.to_string(),
        "outputMint": output_mint,
        "outAmount": out_amount.to_string(),
        "otherAmountThreshold": other_amount_threshold.to_string(),
        "swapMode": "ExactIn",
        "slippageBps": slippage_bps,
        "platformFee": null,
        "priceImpactPct": "0",
        "routePlan": [{
            "swapInfo": {
                "ammKey": amm_key,
                "label": "Chorus Sim AMM",
                "inputMint": input_mint,
                "outputMint": output_mint,
                "inAmount": in_amount.to_string(),
                "outAmount": out_amount.to_string(),
                "feeAmount": bps_of(in_amount, fee_bps).to_string(),
                "feeMint": input_mint,
            },
            "percent": 100,
            "bps": 10_000,
        }],
        "contextSlot": market.block_height.saturating_add(SLOT_LEAD),
        "timeTaken": 0.001,
    });
    if market.issued.len() >= MAX_ISSUED_QUOTES {
        market.issued.pop_front();
    }
    market.issued.push_back(IssuedQuote {
        input_mint: input_mint.to_owned(),
        output_mint: output_mint.to_owned(),
        in_amount,
        out_amount,
        other_amount_threshold,
    });
    json_response(StatusCode::OK, body.to_string())
}

/// The facts `/swap` checks in a `quoteResponse`, or why it cannot read them.
fn issued_facts(quote: &Value) -> Result<IssuedQuote, String> {
    let text = |field: &str| {
        quote
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("quoteResponse.{field} is missing"))
    };
    let amount = |field: &str| {
        quote
            .get(field)
            .and_then(Value::as_str)
            .and_then(parse_digits)
            .ok_or_else(|| format!("quoteResponse.{field} is not a decimal amount"))
    };
    Ok(IssuedQuote {
        input_mint: text("inputMint")?,
        output_mint: text("outputMint")?,
        in_amount: amount("inAmount")?,
        out_amount: amount("outAmount")?,
        other_amount_threshold: amount("otherAmountThreshold")?,
    })
}

/// `POST /swap/v1/swap`.
fn swap(state: &SimState, body: &Value, wrong_payer: bool) -> Response {
    let Some(user) = body.get("userPublicKey").and_then(Value::as_str) else {
        return bad_request("userPublicKey is required");
    };
    let Ok(user) = user.parse::<Pubkey>() else {
        return bad_request("userPublicKey is not a valid address");
    };
    let Some(quote) = body.get("quoteResponse").filter(|quote| quote.is_object()) else {
        return bad_request("quoteResponse is required");
    };
    let facts = match issued_facts(quote) {
        Ok(facts) => facts,
        Err(message) => return bad_request(&message),
    };
    let block_height = {
        let market = lock(&state.market);
        if !market.issued.contains(&facts) {
            return bad_request("quoteResponse was not issued by this simulator");
        }
        market.block_height
    };
    let data = SimSwap {
        input_mint: facts.input_mint,
        output_mint: facts.output_mint,
        in_amount: facts.in_amount,
        out_amount: facts.out_amount,
        min_out_amount: facts.other_amount_threshold,
    }
    .encode();
    let Some(data) = data else {
        return bad_request("a mint of the quote is not a valid address");
    };
    let Ok(program) = JUPITER_PROGRAM_ID.parse::<Pubkey>() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "the program id does not parse", None);
    };
    if user == program {
        return bad_request("userPublicKey cannot be the swap program");
    }
    let payer = if wrong_payer { Pubkey(derived_bytes("sim/wrong-payer")) } else { user };
    let counter = state.swaps.fetch_add(1, Ordering::Relaxed);
    let blockhash = derived_bytes(&format!("sim/blockhash/{counter}"));
    let transaction = build_unsigned_v0(&payer, blockhash, &program, &data);
    let answer = json!({
        "swapTransaction": transaction.to_base64(),
        "lastValidBlockHeight": block_height.saturating_add(VALID_FOR_BLOCKS),
        "prioritizationFeeLamports": PRIORITIZATION_FEE_LAMPORTS,
        "computeUnitLimit": 200_000,
        "prioritizationType": {"computeBudget": {"microLamports": 1_000, "estimatedMicroLamports": 1_000}},
        "dynamicSlippageReport": null,
        "simulationError": null,
    });
    json_response(StatusCode::OK, answer.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(symbol: &str) -> Token {
        let (_, _, usd, decimals) = DEFAULT_TOKENS.iter().find(|(s, ..)| *s == symbol).unwrap();
        Token::new(*usd, *decimals).unwrap()
    }

    #[test]
    fn quotes_are_exact_integers() {
        // 1 SOL at $150 into USDC, less 0.25 %.
        assert_eq!(quote_out(1_000_000_000, token("SOL"), token("USDC"), 25), Some(149_625_000));
        // 1 USDC into BONK at $0.00002 (not exact in binary floating point), less 0.25 %.
        assert_eq!(quote_out(1_000_000, token("USDC"), token("BONK"), 25), Some(4_987_500_000));
        // 1 JUP at $0.80 into SOL: 0.8 / 150 SOL = 5_333_333.33… lamports before the fee.
        assert_eq!(quote_out(1_000_000, token("JUP"), token("SOL"), 0), Some(5_333_333));
        assert_eq!(quote_out(1, token("BONK"), token("SOL"), 25), Some(0));
        assert_eq!(quote_out(u64::MAX, token("SOL"), token("BONK"), 0), None);
        assert_eq!(bps_of(149_625_000, 9_950), 148_876_875);
    }

    #[test]
    fn unusable_prices_unlist_a_token() {
        assert_eq!(Token::new(0.00002, 5).map(|t| t.scaled_price), Some(20_000_000));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-13, 1e19] {
            assert_eq!(Token::new(bad, 6), None, "{bad}");
        }
    }

    #[test]
    fn swap_data_round_trips() {
        let swap = SimSwap {
            input_mint: DEFAULT_TOKENS[0].1.to_owned(),
            output_mint: DEFAULT_TOKENS[2].1.to_owned(),
            in_amount: 5,
            out_amount: 7,
            min_out_amount: 6,
        };
        let data = swap.encode().unwrap();
        assert_eq!(data.len(), SimSwap::LEN);
        assert_eq!(SimSwap::decode(&data), Some(swap));
        assert_eq!(SimSwap::decode(&data[1..]), None);
        assert_eq!(SimSwap::decode(&[0; SimSwap::LEN]), None);
        let bad = SimSwap { input_mint: "not base58 0OIl".into(), ..SimSwap::decode(&data).unwrap() };
        assert_eq!(bad.encode(), None);
    }

    #[test]
    fn derived_bytes_are_stable_and_distinct() {
        assert_eq!(derived_bytes("a"), derived_bytes("a"));
        assert_ne!(derived_bytes("sim/blockhash/0"), derived_bytes("sim/blockhash/1"));
    }
}
