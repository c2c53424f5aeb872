//! A thin client of a Solana JSON-RPC 2.0 node: send a signed transaction, poll signature
//! statuses, read the block height, balances and the latest blockhash. Only what the Trader needs.
//!
//! Every call is one `POST` of `{"jsonrpc":"2.0","id":N,"method":…,"params":[…]}` under the
//! client's timeout; the client never retries (the Trader decides). Responses are parsed strictly
//! into the shapes the node documents: a body that breaks them is [`RpcError::Malformed`], never a
//! panic.
//!
//! **Sending is not idempotent from the caller's side of the wire.** Once `sendTransaction` has
//! left, only a well-formed JSON-RPC error object proves the node refused the transaction
//! ([`RpcError::is_definite_rejection`]). A timeout, a cut connection, an HTTP error status or an
//! unreadable body all mean "it may have landed": the caller must not send it again (which could
//! only land the same signature, or worse, a re-signed copy) but poll
//! [`SolanaRpc::signature_statuses`] until it shows up or its blockhash expires.
//!
//! Errors never carry the node URL (providers put API keys in it) or a whole body.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::trader::tx::{Pubkey, Transaction};

/// Largest response body read.
const MAX_BODY_BYTES: usize = 4 << 20;
/// Longest node error message kept in an [`RpcError::Rpc`].
const MAX_MESSAGE_CHARS: usize = 200;
/// Connection-establishment limit, whatever the whole-request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The commitment every read asks for: voted on by a supermajority, not yet final.
const COMMITMENT: &str = "confirmed";
/// The confirmation statuses a node reports.
const CONFIRMATION_STATUSES: [&str; 3] = ["processed", "confirmed", "finalized"];

/// Why a call to the node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// No complete answer: connection refused or cut, timeout, body interrupted.
    #[error("solana rpc transport error: {detail}")]
    Transport { detail: String },
    /// The node (or a proxy in front of it) answered with a non-success HTTP status.
    #[error("solana rpc answered HTTP {status}")]
    Http { status: u16 },
    /// The node answered with a JSON-RPC error object: it refused the request.
    #[error("solana rpc error {code}: {message}")]
    Rpc { code: i64, message: String },
    /// A 2xx answer that is not the documented JSON-RPC response (or, from [`SolanaRpc::new`], a
    /// URL the client cannot use).
    #[error("solana rpc response malformed: {detail}")]
    Malformed { detail: String },
}

impl RpcError {
    /// Whether the node answered and refused: true only for a well-formed JSON-RPC error object.
    /// After `sendTransaction`, anything else means the transaction may have landed: never send it
    /// again, poll its signature.
    pub fn is_definite_rejection(&self) -> bool {
        matches!(self, Self::Rpc { .. })
    }
}

fn malformed(detail: impl Into<String>) -> RpcError {
    RpcError::Malformed { detail: detail.into() }
}

/// A transaction's status as `getSignatureStatuses` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureStatus {
    /// The slot the transaction was processed in.
    pub slot: u64,
    /// Blocks since it was processed; `None` once finalized.
    pub confirmations: Option<u64>,
    /// The on-chain error when it failed (it landed and paid its fee, but did nothing else).
    pub err: Option<Value>,
    /// `"processed"`, `"confirmed"` or `"finalized"`.
    pub confirmation_status: Option<String>,
}

/// The `{"context": {"slot": N}, "value": …}` wrapper of most answers. The context must be there
/// (it is part of the shape) but is not used.
#[derive(Deserialize)]
struct WithContext<T> {
    #[serde(rename = "context")]
    _context: Context,
    value: T,
}

#[derive(Deserialize)]
struct Context {
    #[serde(rename = "slot")]
    _slot: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusWire {
    slot: u64,
    confirmations: Option<u64>,
    err: Option<Value>,
    confirmation_status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockhashWire {
    blockhash: String,
    last_valid_block_height: u64,
}

/// One entry of `getTokenAccountsByOwner` with `jsonParsed`, down to what is summed and checked.
#[derive(Deserialize)]
struct KeyedTokenAccount {
    account: TokenAccountWire,
}

#[derive(Deserialize)]
struct TokenAccountWire {
    data: TokenDataWire,
}

#[derive(Deserialize)]
struct TokenDataWire {
    parsed: ParsedTokenWire,
}

#[derive(Deserialize)]
struct ParsedTokenWire {
    info: TokenInfoWire,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenInfoWire {
    mint: String,
    owner: String,
    token_amount: TokenAmountWire,
}

#[derive(Deserialize)]
struct TokenAmountWire {
    /// Smallest units, as a decimal string.
    amount: String,
}

/// The JSON-RPC error object.
#[derive(Deserialize)]
struct ErrorWire {
    code: i64,
    message: String,
}

/// The Solana JSON-RPC client. Clones share the connection pool and the request-id counter.
#[derive(Clone)]
pub struct SolanaRpc {
    http: reqwest::Client,
    url: reqwest::Url,
    next_id: Arc<AtomicU64>,
}

impl fmt::Debug for SolanaRpc {
    /// Shows the host only: the path or query may carry a provider's API key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SolanaRpc").field("host", &self.url.host_str().unwrap_or_default()).finish_non_exhaustive()
    }
}

impl SolanaRpc {
    /// A client of the node at `url` (`http(s)://…`, used as is: providers put keys in the path or
    /// query). `timeout` bounds each whole request. `Malformed` for an unusable URL, `Transport`
    /// if the HTTP client cannot be built; neither names the URL.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, RpcError> {
        let url = reqwest::Url::parse(url).map_err(|err| malformed(format!("rpc url: {err}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(malformed("rpc url: must be http(s)://host[/path]"));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .user_agent(concat!("chorus/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| RpcError::Transport { detail: "cannot build the HTTP client".to_owned() })?;
        Ok(Self { http, url, next_id: Arc::new(AtomicU64::new(1)) })
    }

    /// Submits a signed transaction (base64, preflight at `confirmed`) and returns its signature,
    /// which must be [`Transaction::id`]. See the module docs for what an error means here.
    pub async fn send_transaction(&self, tx: &Transaction) -> Result<String, RpcError> {
        let params = json!([tx.to_base64(), {"encoding": "base64", "preflightCommitment": COMMITMENT}]);
        let signature: String = self.call("sendTransaction", params).await?;
        if signature != tx.id() {
            return Err(malformed("sendTransaction returned another signature than the transaction's"));
        }
        Ok(signature)
    }

    /// The status of each signature, in order (`None`: the node does not know it), searching the
    /// whole history so that an older landed transaction is still found.
    pub async fn signature_statuses(&self, signatures: &[String]) -> Result<Vec<Option<SignatureStatus>>, RpcError> {
        let params = json!([signatures, {"searchTransactionHistory": true}]);
        let answer: WithContext<Vec<Option<StatusWire>>> = self.call("getSignatureStatuses", params).await?;
        if answer.value.len() != signatures.len() {
            return Err(malformed(format!(
                "getSignatureStatuses: {} statuses for {} signatures",
                answer.value.len(),
                signatures.len()
            )));
        }
        answer
            .value
            .into_iter()
            .map(|status| {
                let Some(status) = status else {
                    return Ok(None);
                };
                if let Some(level) = &status.confirmation_status
                    && !CONFIRMATION_STATUSES.contains(&level.as_str())
                {
                    return Err(malformed("getSignatureStatuses: unknown confirmationStatus"));
                }
                Ok(Some(SignatureStatus {
                    slot: status.slot,
                    confirmations: status.confirmations,
                    err: status.err,
                    confirmation_status: status.confirmation_status,
                }))
            })
            .collect()
    }

    /// The chain's block height at `confirmed` (compare with a blockhash's `lastValidBlockHeight`).
    pub async fn block_height(&self) -> Result<u64, RpcError> {
        self.call("getBlockHeight", json!([{"commitment": COMMITMENT}])).await
    }

    /// `owner`'s SOL balance in lamports.
    pub async fn balance(&self, owner: &Pubkey) -> Result<u64, RpcError> {
        let params = json!([owner.to_string(), {"commitment": COMMITMENT}]);
        let answer: WithContext<u64> = self.call("getBalance", params).await?;
        Ok(answer.value)
    }

    /// `owner`'s balance of `mint` in its smallest units: the sum over all its token accounts of
    /// that mint (0 when it has none).
    pub async fn token_balance(&self, owner: &Pubkey, mint: &str) -> Result<u64, RpcError> {
        let owner = owner.to_string();
        let params = json!([owner, {"mint": mint}, {"encoding": "jsonParsed", "commitment": COMMITMENT}]);
        let answer: WithContext<Vec<KeyedTokenAccount>> = self.call("getTokenAccountsByOwner", params).await?;
        let mut total: u64 = 0;
        for (index, keyed) in answer.value.into_iter().enumerate() {
            let info = keyed.account.data.parsed.info;
            if info.mint != mint || info.owner != owner {
                return Err(malformed(format!(
                    "getTokenAccountsByOwner: account {index} is for another mint or owner"
                )));
            }
            let amount = parse_digits(&info.token_amount.amount).ok_or_else(|| {
                malformed(format!("getTokenAccountsByOwner: account {index} amount is not a decimal u64"))
            })?;
            total =
                total.checked_add(amount).ok_or_else(|| malformed("getTokenAccountsByOwner: amounts overflow u64"))?;
        }
        Ok(total)
    }

    /// The latest blockhash at `confirmed` and the last block height at which a transaction using
    /// it can land.
    pub async fn latest_blockhash(&self) -> Result<([u8; 32], u64), RpcError> {
        let answer: WithContext<BlockhashWire> =
            self.call("getLatestBlockhash", json!([{"commitment": COMMITMENT}])).await?;
        let hash: Pubkey = answer
            .value
            .blockhash
            .parse()
            .map_err(|_| malformed("getLatestBlockhash: blockhash is not 32 bytes of base58"))?;
        Ok((hash.0, answer.value.last_valid_block_height))
    }

    /// One JSON-RPC call: the `result` parsed as `T`, or the classified error.
    async fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let mut response =
            self.http.post(self.url.clone()).json(&request).send().await.map_err(|err| transport_error(&err))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|err| transport_error(&err))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(malformed(format!("{method}: body larger than {MAX_BODY_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(RpcError::Http { status: status.as_u16() });
        }
        parse_response(method, id, &body)
    }
}

/// Parses a 2xx body: a JSON-RPC 2.0 response to request `id` holding exactly one of `result`
/// (parsed as `T`) and `error`.
fn parse_response<T: DeserializeOwned>(method: &str, id: u64, body: &[u8]) -> Result<T, RpcError> {
    let Ok(Value::Object(mut envelope)) = serde_json::from_slice::<Value>(body) else {
        return Err(malformed(format!("{method}: body is not a JSON object")));
    };
    if envelope.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(malformed(format!("{method}: not a JSON-RPC 2.0 response")));
    }
    if envelope.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(malformed(format!("{method}: response id does not match the request")));
    }
    match (envelope.remove("result"), envelope.remove("error")) {
        (Some(result), None) => serde_path_to_error::deserialize(result).map_err(|err| {
            let path = err.path().to_string();
            malformed(format!("{method}: unexpected result at {path}"))
        }),
        (None, Some(error)) => {
            let error: ErrorWire =
                serde_json::from_value(error).map_err(|_| malformed(format!("{method}: malformed error object")))?;
            Err(RpcError::Rpc { code: error.code, message: short_message(&error.message) })
        }
        _ => Err(malformed(format!("{method}: a response needs exactly one of result and error"))),
    }
}

/// The node's message, single-line and bounded.
fn short_message(message: &str) -> String {
    message.chars().map(|c| if c.is_control() { ' ' } else { c }).take(MAX_MESSAGE_CHARS).collect()
}

/// What a transport error was, without its URL.
fn transport_error(err: &reqwest::Error) -> RpcError {
    let what = match crate::platform::transport_failure(err) {
        "request failed" => "request failed (no complete response)",
        other => other,
    };
    RpcError::Transport { detail: what.to_owned() }
}

/// A non-empty run of ASCII digits that fits a `u64`.
fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_json_rpc_error_object_is_a_definite_rejection() {
        let rpc =
            parse_response::<String>("m", 7, br#"{"jsonrpc":"2.0","error":{"code":-32003,"message":"no"},"id":7}"#);
        let rpc = rpc.unwrap_err();
        assert_eq!(rpc, RpcError::Rpc { code: -32003, message: "no".to_owned() });
        assert!(rpc.is_definite_rejection());
        for other in [
            RpcError::Transport { detail: "timeout".into() },
            RpcError::Http { status: 500 },
            RpcError::Malformed { detail: "x".into() },
        ] {
            assert!(!other.is_definite_rejection(), "{other:?}");
        }
    }

    #[test]
    fn responses_that_break_the_envelope_are_malformed() {
        let cases: [&[u8]; 8] = [
            b"",
            b"not json",
            b"[]",
            br#"{"jsonrpc":"1.0","result":1,"id":1}"#,
            br#"{"jsonrpc":"2.0","result":1,"id":2}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"2.0","result":1,"error":{"code":1,"message":"m"},"id":1}"#,
            br#"{"jsonrpc":"2.0","error":{"code":"x"},"id":1}"#,
        ];
        for body in cases {
            let parsed = parse_response::<u64>("m", 1, body);
            assert!(matches!(parsed, Err(RpcError::Malformed { .. })), "{}: {parsed:?}", String::from_utf8_lossy(body));
        }
        let wrong_type = parse_response::<WithContext<u64>>(
            "getBalance",
            1,
            br#"{"jsonrpc":"2.0","result":{"context":{"slot":1},"value":"9"},"id":1}"#,
        );
        assert_eq!(wrong_type.err(), Some(malformed("getBalance: unexpected result at value")));
    }

    #[test]
    fn node_messages_are_single_line_and_bounded() {
        let long = format!("line one\nline two {}", "x".repeat(500));
        let short = short_message(&long);
        assert!(!short.contains('\n'));
        assert_eq!(short.chars().count(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn urls_must_be_http_and_are_never_printed() {
        assert!(matches!(SolanaRpc::new("ftp://node", Duration::from_secs(1)), Err(RpcError::Malformed { .. })));
        assert!(matches!(SolanaRpc::new("not a url", Duration::from_secs(1)), Err(RpcError::Malformed { .. })));
        let rpc = SolanaRpc::new("https://rpc.example.com/?api-key=sekrit", Duration::from_secs(1)).unwrap();
        let debug = format!("{rpc:?}");
        assert!(debug.contains("rpc.example.com") && !debug.contains("sekrit"), "{debug}");
    }
}
