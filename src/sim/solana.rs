//! The Solana JSON-RPC simulator: a node on 127.0.0.1 answering the methods the Trader uses, in
//! the real wire format (`POST /` with a JSON-RPC 2.0 request; HTTP 200 for results and JSON-RPC
//! errors alike), with scripted faults and a record of every request.
//!
//! The contract (shared with [`crate::trader::solana`]):
//! - `sendTransaction` decodes the transaction (`encoding` `base64`, or `base58`, the node's
//!   default), parses it with [`Transaction::from_bytes`] and checks [`Transaction::verify`]. A
//!   signature that does not verify is refused with -32003 "Transaction signature verification
//!   failure"; otherwise the transaction lands in the current slot and the answer is its signature.
//!   Sending a landed signature again answers the signature and changes nothing. Every call with a
//!   decodable transaction is recorded ([`SolanaSim::sent`]), whatever the fault or the outcome.
//! - `getSignatureStatuses` answers `null` for an unknown signature. A landed one reports
//!   `processed` for the first [`SolanaSim::confirm_after`] polls (default 1), then `confirmed`;
//!   it never becomes `finalized`. A poll whose response is lost does not count.
//! - `getBlockHeight` answers the current height, then advances it by
//!   [`SolanaSim::set_advance_per_call`] (default 1). Slots are the height plus [`SLOT_OFFSET`].
//! - `getLatestBlockhash` answers a blockhash derived from the height, valid for
//!   [`BLOCKHASH_VALIDITY`] blocks. Transactions are not checked against it.
//! - `getBalance` and `getTokenAccountsByOwner` (`jsonParsed` only; filter by `mint` or by the
//!   token `programId`) answer what [`SolanaSim::set_balance`] and
//!   [`SolanaSim::set_token_balance`] set (0 lamports / no token account otherwise).
//! - Faults ([`SolanaFault`]) are queued with [`SolanaSim::script`]; each request pops the first
//!   queued fault that applies to its method, leaving the others queued.
//!
//! Bad input gets the node's JSON-RPC errors: -32700 for a body that is not JSON, -32600 for a
//! request that is not a JSON-RPC 2.0 call, -32601 for an unknown method (which consumes no
//! fault), -32602 for bad params. Nothing in here panics on bad input.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::stream;
use serde_json::{Value, json};

use super::lock;
use crate::hash::fnv1a;
use crate::trader::tx::{Pubkey, Transaction};

/// Slot of the context = block height + this (a real chain skips some slots).
pub const SLOT_OFFSET: u64 = 1_000;
/// Blocks a blockhash stays valid after the height it was handed out at.
pub const BLOCKHASH_VALIDITY: u64 = 150;
/// The SPL Token program, owner of every simulated token account.
pub const TOKEN_PROGRAM_ID: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
/// Wrapped SOL, the one simulated mint with 9 decimals (every other mint has 6).
const WRAPPED_SOL_MINT: &str = "So11111111111111111111111111111111111111112";
/// Block height of a fresh simulator.
const INITIAL_BLOCK_HEIGHT: u64 = 100;
/// Most signatures one `getSignatureStatuses` accepts.
const MAX_STATUS_SIGNATURES: usize = 256;
/// The `apiVersion` reported in every context.
const API_VERSION: &str = "2.2.0";

/// A fault injected into one request (see [`SolanaSim::script`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SolanaFault {
    /// `sendTransaction`: the transaction lands, but the response is lost: the simulator starts a
    /// 200 answer and aborts the connection before any body byte. The client sees a transport
    /// error (reqwest: a body error) right away.
    LoseSendResponse,
    /// `sendTransaction`: the transaction never lands and the node answers this JSON-RPC error.
    RejectSend { code: i64, message: String },
    /// `sendTransaction`: the node answers the signature, but the transaction is dropped: it never
    /// lands and its status stays `null`.
    DropTransaction,
    /// `getSignatureStatuses`: the response is lost, like [`SolanaFault::LoseSendResponse`].
    LoseStatusResponse,
    /// `sendTransaction`: the transaction lands but fails on chain with this error (its status
    /// carries it as `err` and `status.Err`).
    FailOnChain(Value),
    /// Any method the simulator serves: this HTTP status with an empty body, and nothing else
    /// happens (a sent transaction does not land). An invalid code becomes 500.
    Http(u16),
}

impl SolanaFault {
    fn applies_to(&self, method: RpcMethod) -> bool {
        match self {
            Self::LoseSendResponse | Self::RejectSend { .. } | Self::DropTransaction | Self::FailOnChain(_) => {
                method == RpcMethod::SendTransaction
            }
            Self::LoseStatusResponse => method == RpcMethod::GetSignatureStatuses,
            Self::Http(_) => true,
        }
    }
}

/// One `sendTransaction` call that carried a decodable transaction.
#[derive(Clone, Debug)]
pub struct SentTx {
    /// The transaction's id (base58 of its first signature).
    pub signature: String,
    pub transaction: Transaction,
    /// Whether every required signature verified.
    pub verified: bool,
}

/// The methods the simulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RpcMethod {
    SendTransaction,
    GetSignatureStatuses,
    GetBlockHeight,
    GetBalance,
    GetTokenAccountsByOwner,
    GetLatestBlockhash,
}

impl RpcMethod {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "sendTransaction" => Self::SendTransaction,
            "getSignatureStatuses" => Self::GetSignatureStatuses,
            "getBlockHeight" => Self::GetBlockHeight,
            "getBalance" => Self::GetBalance,
            "getTokenAccountsByOwner" => Self::GetTokenAccountsByOwner,
            "getLatestBlockhash" => Self::GetLatestBlockhash,
            _ => return None,
        })
    }
}

/// A landed transaction.
struct Landed {
    slot: u64,
    /// Status answers served so far.
    polls: u32,
    /// The on-chain error, for a transaction that failed.
    err: Option<Value>,
}

/// The simulated chain and the simulator's bookkeeping, behind one lock.
struct Node {
    block_height: u64,
    advance_per_call: u64,
    confirm_after: u32,
    balances: HashMap<Pubkey, u64>,
    /// Token balances by owner and mint.
    token_balances: BTreeMap<(Pubkey, String), u64>,
    landed: HashMap<String, Landed>,
    script: VecDeque<SolanaFault>,
    sent: Vec<SentTx>,
    requests: Vec<(String, Value)>,
}

impl Default for Node {
    fn default() -> Self {
        Self {
            block_height: INITIAL_BLOCK_HEIGHT,
            advance_per_call: 1,
            confirm_after: 1,
            balances: HashMap::new(),
            token_balances: BTreeMap::new(),
            landed: HashMap::new(),
            script: VecDeque::new(),
            sent: Vec::new(),
            requests: Vec::new(),
        }
    }
}

impl Node {
    fn slot(&self) -> u64 {
        self.block_height + SLOT_OFFSET
    }

    fn context(&self) -> Value {
        json!({"slot": self.slot(), "apiVersion": API_VERSION})
    }

    /// Removes and returns the first queued fault that applies to `method`.
    fn take_fault(&mut self, method: RpcMethod) -> Option<SolanaFault> {
        let index = self.script.iter().position(|fault| fault.applies_to(method))?;
        self.script.remove(index)
    }
}

/// A running Solana RPC simulator. Clones share the same server and state. Dropping it does not
/// stop the server: it lives as long as the tokio runtime it was started on.
#[derive(Clone)]
pub struct SolanaSim {
    /// The address the server listens on.
    pub addr: SocketAddr,
    node: Arc<Mutex<Node>>,
}

impl SolanaSim {
    /// Binds 127.0.0.1 on an ephemeral port and serves on the current tokio runtime.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` and serves on the current tokio runtime.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let node = Arc::new(Mutex::new(Node::default()));
        let app = Router::new().route("/", post(handle)).with_state(node.clone());
        let addr = super::serve(addr, app).await?;
        Ok(Self { addr, node })
    }

    /// The RPC URL: `http://ADDR/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn set_balance(&self, owner: &Pubkey, lamports: u64) {
        lock(&self.node).balances.insert(*owner, lamports);
    }

    /// Gives `owner` one token account of `mint` holding `amount` smallest units (0 keeps an
    /// empty account).
    pub fn set_token_balance(&self, owner: &Pubkey, mint: &str, amount: u64) {
        lock(&self.node).token_balances.insert((*owner, mint.to_owned()), amount);
    }

    pub fn set_block_height(&self, height: u64) {
        lock(&self.node).block_height = height;
    }

    /// The current block height (what the next `getBlockHeight` answers).
    pub fn block_height(&self) -> u64 {
        lock(&self.node).block_height
    }

    /// How far each `getBlockHeight` call advances the chain (default 1; 0 freezes it).
    pub fn set_advance_per_call(&self, blocks: u64) {
        lock(&self.node).advance_per_call = blocks;
    }

    /// A landed transaction reports `processed` for this many status polls, then `confirmed`
    /// (default 1; 0 confirms at once).
    pub fn confirm_after(&self, polls: u32) {
        lock(&self.node).confirm_after = polls;
    }

    /// Queues faults after those already queued.
    pub fn script(&self, faults: impl IntoIterator<Item = SolanaFault>) {
        lock(&self.node).script.extend(faults);
    }

    /// Drops every queued fault.
    pub fn clear_script(&self) {
        lock(&self.node).script.clear();
    }

    /// Every `sendTransaction` call with a decodable transaction, in order, resends included.
    pub fn sent(&self) -> Vec<SentTx> {
        lock(&self.node).sent.clone()
    }

    /// How many times this signature was sent.
    pub fn sends_of(&self, signature: &str) -> usize {
        lock(&self.node).sent.iter().filter(|sent| sent.signature == signature).count()
    }

    /// Every request as `(method, params)`, oldest first. A body that is not a JSON-RPC call is
    /// recorded with an empty method and the body (lossy UTF-8) as a string.
    pub fn requests(&self) -> Vec<(String, Value)> {
        lock(&self.node).requests.clone()
    }
}

/// What a method handler decided.
enum Outcome {
    Result(Value),
    Error(i64, String),
    /// The response is lost (the connection is aborted).
    Lost,
    /// This HTTP status with an empty body.
    Http(u16),
}

fn invalid_params(message: impl Into<String>) -> Outcome {
    Outcome::Error(-32602, message.into())
}

/// A 200 with a JSON body.
fn json_response(body: &Value) -> Response {
    super::json_response(StatusCode::OK, body.to_string())
}

fn error_response(id: Value, code: i64, message: &str) -> Response {
    json_response(&json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id}))
}

/// `status` with an empty body; an invalid code becomes 500.
fn http_response(status: u16) -> Response {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response()
}

/// A response whose body fails before its first byte: hyper aborts the connection, and the
/// client gets no answer it can read.
fn lost_response() -> Response {
    let abort = stream::once(async {
        Err::<Bytes, _>(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "simulated lost response"))
    });
    (StatusCode::OK, Body::from_stream(abort)).into_response()
}

/// `POST /`.
async fn handle(State(node): State<Arc<Mutex<Node>>>, body: Bytes) -> Response {
    let mut node = lock(&node);
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        node.requests.push((String::new(), Value::String(String::from_utf8_lossy(&body).into_owned())));
        return error_response(Value::Null, -32700, "Parse error");
    };
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let method = request.get("method").and_then(Value::as_str);
    let params = request.get("params").cloned().unwrap_or_else(|| json!([]));
    let (Some(method), Some("2.0")) = (method, request.get("jsonrpc").and_then(Value::as_str)) else {
        node.requests.push((String::new(), request.clone()));
        return error_response(id, -32600, "Invalid request");
    };
    node.requests.push((method.to_owned(), params.clone()));
    let Some(method) = RpcMethod::from_name(method) else {
        return error_response(id, -32601, "Method not found");
    };
    let fault = node.take_fault(method);
    // `sendTransaction` records the transaction before answering its HTTP fault.
    if method != RpcMethod::SendTransaction
        && let Some(SolanaFault::Http(status)) = fault
    {
        return http_response(status);
    }
    let Some(params) = params.as_array() else {
        return error_response(id, -32602, "Invalid params: expected an array");
    };
    let outcome = match method {
        RpcMethod::SendTransaction => send_transaction(&mut node, params, fault),
        RpcMethod::GetSignatureStatuses => signature_statuses(&mut node, params, fault),
        RpcMethod::GetBlockHeight => {
            let height = node.block_height;
            node.block_height = height.saturating_add(node.advance_per_call);
            Outcome::Result(json!(height))
        }
        RpcMethod::GetBalance => balance(&node, params),
        RpcMethod::GetTokenAccountsByOwner => token_accounts(&node, params),
        RpcMethod::GetLatestBlockhash => {
            let height = node.block_height;
            let blockhash = Pubkey(derived_bytes(&format!("blockhash/{height}"))).to_string();
            let value = json!({"blockhash": blockhash, "lastValidBlockHeight": height + BLOCKHASH_VALIDITY});
            Outcome::Result(json!({"context": node.context(), "value": value}))
        }
    };
    match outcome {
        Outcome::Result(result) => json_response(&json!({"jsonrpc": "2.0", "result": result, "id": id})),
        Outcome::Error(code, message) => error_response(id, code, &message),
        Outcome::Lost => lost_response(),
        Outcome::Http(status) => http_response(status),
    }
}

/// `sendTransaction [encoded, {encoding}]`.
fn send_transaction(node: &mut Node, params: &[Value], fault: Option<SolanaFault>) -> Outcome {
    let decoded = decode_transaction(params);
    if let Ok(transaction) = &decoded {
        let verified = transaction.verify().is_ok();
        node.sent.push(SentTx { signature: transaction.id(), transaction: transaction.clone(), verified });
    }
    // After recording: a send answered with an HTTP error still reached the node.
    if let Some(SolanaFault::Http(status)) = fault {
        return Outcome::Http(status);
    }
    let transaction = match decoded {
        Ok(transaction) => transaction,
        Err(outcome) => return outcome,
    };
    if let Some(SolanaFault::RejectSend { code, message }) = &fault {
        return Outcome::Error(*code, message.clone());
    }
    if transaction.verify().is_err() {
        return Outcome::Error(-32003, "Transaction signature verification failure".to_owned());
    }
    let signature = transaction.id();
    if fault != Some(SolanaFault::DropTransaction) && !node.landed.contains_key(&signature) {
        let err = match &fault {
            Some(SolanaFault::FailOnChain(err)) => Some(err.clone()),
            _ => None,
        };
        let slot = node.slot();
        node.landed.insert(signature.clone(), Landed { slot, polls: 0, err });
    }
    if fault == Some(SolanaFault::LoseSendResponse) {
        return Outcome::Lost;
    }
    Outcome::Result(Value::String(signature))
}

/// The transaction in `sendTransaction`'s params, or the -32602 answer.
fn decode_transaction(params: &[Value]) -> Result<Transaction, Outcome> {
    let Some(encoded) = params.first().and_then(Value::as_str) else {
        return Err(invalid_params("Invalid params: the transaction must be a string"));
    };
    let encoding = params.get(1).and_then(|config| config.get("encoding")).and_then(Value::as_str);
    let bytes = match encoding.unwrap_or("base58") {
        "base64" => STANDARD.decode(encoded).map_err(|_| "invalid base64 encoding"),
        "base58" => bs58::decode(encoded).into_vec().map_err(|_| "invalid base58 encoding"),
        _ => Err("unsupported encoding"),
    };
    let bytes = bytes.map_err(|problem| invalid_params(format!("invalid transaction: {problem}")))?;
    Transaction::from_bytes(&bytes).map_err(|error| invalid_params(format!("invalid transaction: {error}")))
}

/// `getSignatureStatuses [[signature, …], {searchTransactionHistory}]`.
fn signature_statuses(node: &mut Node, params: &[Value], fault: Option<SolanaFault>) -> Outcome {
    let Some(items) = params.first().and_then(Value::as_array) else {
        return invalid_params("Invalid params: expected an array of signatures");
    };
    if items.len() > MAX_STATUS_SIGNATURES {
        return invalid_params(format!("Too many inputs provided; max {MAX_STATUS_SIGNATURES}"));
    }
    let mut signatures = Vec::with_capacity(items.len());
    for item in items {
        let valid = item.as_str().filter(|text| bs58::decode(text).into_vec().is_ok_and(|bytes| bytes.len() == 64));
        let Some(signature) = valid else {
            return invalid_params("Invalid param: WrongSize");
        };
        signatures.push(signature);
    }
    let lost = fault == Some(SolanaFault::LoseStatusResponse);
    let confirm_after = node.confirm_after;
    let mut value = Vec::with_capacity(signatures.len());
    for signature in signatures {
        let Some(landed) = node.landed.get_mut(signature) else {
            value.push(Value::Null);
            continue;
        };
        let confirmed = landed.polls >= confirm_after;
        if !lost {
            landed.polls = landed.polls.saturating_add(1);
        }
        let status = match &landed.err {
            Some(err) => json!({"Err": err}),
            None => json!({"Ok": null}),
        };
        value.push(json!({
            "slot": landed.slot,
            "confirmations": if confirmed { 1 } else { 0 },
            "err": landed.err,
            "status": status,
            "confirmationStatus": if confirmed { "confirmed" } else { "processed" },
        }));
    }
    if lost {
        return Outcome::Lost;
    }
    Outcome::Result(json!({"context": node.context(), "value": value}))
}

/// The first param as an address.
fn pubkey_param(params: &[Value]) -> Result<Pubkey, Outcome> {
    params
        .first()
        .and_then(Value::as_str)
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| invalid_params("Invalid param: Invalid"))
}

/// `getBalance [owner, {commitment}]`.
fn balance(node: &Node, params: &[Value]) -> Outcome {
    let owner = match pubkey_param(params) {
        Ok(owner) => owner,
        Err(outcome) => return outcome,
    };
    let lamports = node.balances.get(&owner).copied().unwrap_or(0);
    Outcome::Result(json!({"context": node.context(), "value": lamports}))
}

/// `getTokenAccountsByOwner [owner, {mint} | {programId}, {encoding: "jsonParsed"}]`.
fn token_accounts(node: &Node, params: &[Value]) -> Outcome {
    let owner = match pubkey_param(params) {
        Ok(owner) => owner,
        Err(outcome) => return outcome,
    };
    let filter = params.get(1).and_then(Value::as_object);
    let wanted_mint = match filter.map(|filter| (filter.len(), filter.get("mint"), filter.get("programId"))) {
        Some((1, Some(Value::String(mint)), None)) if mint.parse::<Pubkey>().is_ok() => Some(mint.as_str()),
        Some((1, None, Some(Value::String(program)))) if program == TOKEN_PROGRAM_ID => None,
        Some((1, None, Some(Value::String(_)))) => {
            return invalid_params("Invalid param: unrecognized Token program id");
        }
        _ => return invalid_params("Invalid params: expected a filter with exactly one of mint or programId"),
    };
    let encoding = params.get(2).and_then(|config| config.get("encoding")).and_then(Value::as_str);
    if encoding != Some("jsonParsed") {
        return invalid_params("Invalid params: the simulator answers only the jsonParsed encoding");
    }
    let accounts: Vec<Value> = node
        .token_balances
        .iter()
        .filter(|((holder, mint), _)| *holder == owner && wanted_mint.is_none_or(|wanted| wanted == mint))
        .map(|((holder, mint), amount)| token_account(holder, mint, *amount))
        .collect();
    Outcome::Result(json!({"context": node.context(), "value": accounts}))
}

/// One keyed token account in the `jsonParsed` shape.
fn token_account(owner: &Pubkey, mint: &str, amount: u64) -> Value {
    let decimals: u32 = if mint == WRAPPED_SOL_MINT { 9 } else { 6 };
    let scale = 10u64.pow(decimals);
    let (whole, fraction) = (amount / scale, amount % scale);
    let ui_amount_string = if fraction == 0 {
        whole.to_string()
    } else {
        let digits = format!("{fraction:0width$}", width = decimals as usize);
        format!("{whole}.{}", digits.trim_end_matches('0'))
    };
    let ui_amount = amount as f64 / scale as f64;
    let address = Pubkey(derived_bytes(&format!("token-account/{owner}/{mint}")));
    json!({
        "pubkey": address.to_string(),
        "account": {
            "data": {
                "parsed": {
                    "info": {
                        "isNative": mint == WRAPPED_SOL_MINT,
                        "mint": mint,
                        "owner": owner.to_string(),
                        "state": "initialized",
                        "tokenAmount": {
                            "amount": amount.to_string(),
                            "decimals": decimals,
                            "uiAmount": ui_amount,
                            "uiAmountString": ui_amount_string,
                        },
                    },
                    "type": "account",
                },
                "program": "spl-token",
                "space": 165,
            },
            "executable": false,
            "lamports": 2_039_280,
            "owner": TOKEN_PROGRAM_ID,
            "rentEpoch": u64::MAX,
            "space": 165,
        },
    })
}

/// 32 stable bytes derived from `seed`.
fn derived_bytes(seed: &str) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (index, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&fnv1a(format!("solana/{seed}/{index}").as_bytes()).to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_taken_by_the_methods_they_apply_to() {
        let mut node = Node::default();
        node.script.extend([SolanaFault::LoseStatusResponse, SolanaFault::Http(503), SolanaFault::DropTransaction]);
        assert_eq!(node.take_fault(RpcMethod::SendTransaction), Some(SolanaFault::Http(503)));
        assert_eq!(node.take_fault(RpcMethod::SendTransaction), Some(SolanaFault::DropTransaction));
        assert_eq!(node.take_fault(RpcMethod::GetBalance), None);
        assert_eq!(node.take_fault(RpcMethod::GetSignatureStatuses), Some(SolanaFault::LoseStatusResponse));
        assert!(node.script.is_empty());
    }

    #[test]
    fn token_amounts_print_like_the_node() {
        let owner = Pubkey([1; 32]);
        let info =
            |mint: &str, amount| token_account(&owner, mint, amount)["account"]["data"]["parsed"]["info"].clone();
        let usdc = info("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", 1_500_000);
        assert_eq!(usdc["tokenAmount"]["uiAmountString"], "1.5");
        assert_eq!(usdc["tokenAmount"]["amount"], "1500000");
        assert_eq!(info(WRAPPED_SOL_MINT, 2_000_000_000)["tokenAmount"]["uiAmountString"], "2");
        assert_eq!(info(WRAPPED_SOL_MINT, 1)["tokenAmount"]["uiAmountString"], "0.000000001");
    }
}
