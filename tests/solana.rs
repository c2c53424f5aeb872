//! The Solana JSON-RPC client against the Solana simulator: a transaction signed by the wallet
//! lands and confirms, a badly signed one is refused for good, and every ambiguous failure (a lost
//! response, a dropped transaction, an HTTP error, a malformed or slow answer) is told apart from a
//! definite rejection, without a resend.

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use chorus::sim::solana::{SolanaFault, SolanaSim};
use chorus::trader::solana::{RpcError, SignatureStatus, SolanaRpc};
use chorus::trader::tx::{Pubkey, Transaction, build_unsigned_v0};
use chorus::trader::wallet::Wallet;
use serde_json::{Value, json};

const USDC: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
const BONK: &str = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263";

fn wallet() -> Wallet {
    Wallet::from_seed([11; 32])
}

/// A v0 transaction paid by `payer`, signed by `signer`.
fn transaction(payer: &Wallet, signer: &Wallet, data: &[u8]) -> Transaction {
    let program = Pubkey([42; 32]);
    let mut tx = build_unsigned_v0(&payer.pubkey(), [3; 32], &program, data);
    if signer.pubkey() == payer.pubkey() {
        tx.sign(signer).expect("the payer signs");
    } else {
        // Another key's signature in the payer's slot, as a confused caller would produce.
        tx.signatures[0] = signer.sign(&tx.message);
    }
    tx
}

async fn started() -> (SolanaSim, SolanaRpc) {
    let sim = SolanaSim::start().await.expect("simulator starts");
    let rpc = SolanaRpc::new(&sim.url(), Duration::from_secs(2)).expect("client");
    (sim, rpc)
}

async fn status_of(rpc: &SolanaRpc, signature: &str) -> Option<SignatureStatus> {
    let mut statuses = rpc.signature_statuses(&[signature.to_owned()]).await.expect("statuses");
    assert_eq!(statuses.len(), 1);
    statuses.remove(0)
}

fn level(status: &Option<SignatureStatus>) -> Option<&str> {
    status.as_ref().and_then(|status| status.confirmation_status.as_deref())
}

/// A server answering every `POST /` with this status and body.
async fn fixed_server(status: u16, body: &'static str) -> String {
    let status = axum::http::StatusCode::from_u16(status).unwrap();
    let app = Router::new().route("/", post(move || async move { (status, body) }));
    let addr = chorus::sim::serve("127.0.0.1:0".parse().unwrap(), app).await.unwrap();
    format!("http://{addr}/")
}

#[tokio::test]
async fn a_transaction_signed_by_the_wallet_lands_and_confirms() {
    let (sim, rpc) = started().await;
    let wallet = wallet();
    let tx = transaction(&wallet, &wallet, b"swap");

    let signature = rpc.send_transaction(&tx).await.expect("accepted");
    assert_eq!(signature, tx.id());

    let sent = sim.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].verified);
    assert_eq!(sent[0].signature, signature);
    assert_eq!(sent[0].transaction, tx);
    assert_eq!(sent[0].transaction.signers().unwrap(), [wallet.pubkey()]);

    let first = status_of(&rpc, &signature).await;
    assert_eq!(level(&first), Some("processed"));
    let second = status_of(&rpc, &signature).await.expect("still known");
    assert_eq!(second.confirmation_status.as_deref(), Some("confirmed"));
    assert_eq!(second.err, None);
    assert_eq!(sim.sends_of(&signature), 1);

    let (method, params) = sim.requests().into_iter().next().unwrap();
    assert_eq!(method, "sendTransaction");
    assert_eq!(params, json!([tx.to_base64(), {"encoding": "base64", "preflightCommitment": "confirmed"}]));
    let (method, params) = sim.requests().into_iter().nth(1).unwrap();
    assert_eq!(method, "getSignatureStatuses");
    assert_eq!(params, json!([[signature], {"searchTransactionHistory": true}]));
}

#[tokio::test]
async fn a_transaction_signed_by_another_wallet_is_refused_for_good() {
    let (sim, rpc) = started().await;
    let payer = wallet();
    let tx = transaction(&payer, &Wallet::from_seed([12; 32]), b"swap");

    let error = rpc.send_transaction(&tx).await.unwrap_err();
    assert!(matches!(&error, RpcError::Rpc { code: -32003, message } if message.contains("signature verification")));
    assert!(error.is_definite_rejection());
    assert!(!sim.sent()[0].verified);
    assert_eq!(status_of(&rpc, &tx.id()).await, None);

    // An unsigned transaction is refused the same way.
    let unsigned = build_unsigned_v0(&payer.pubkey(), [3; 32], &Pubkey([42; 32]), b"other");
    let error = rpc.send_transaction(&unsigned).await.unwrap_err();
    assert_eq!(error, RpcError::Rpc { code: -32003, message: "Transaction signature verification failure".into() });
}

#[tokio::test]
async fn a_lost_send_response_is_a_transport_error_but_the_transaction_landed() {
    let (sim, rpc) = started().await;
    let wallet = wallet();
    let tx = transaction(&wallet, &wallet, b"swap");
    sim.script([SolanaFault::LoseSendResponse]);

    let error = rpc.send_transaction(&tx).await.unwrap_err();
    assert!(matches!(error, RpcError::Transport { .. }), "{error:?}");
    assert!(!error.is_definite_rejection());

    // Polling the signature (never resending) finds it: processed, then confirmed.
    assert_eq!(level(&status_of(&rpc, &tx.id()).await), Some("processed"));
    assert_eq!(level(&status_of(&rpc, &tx.id()).await), Some("confirmed"));
    assert_eq!(sim.sends_of(&tx.id()), 1);
}

#[tokio::test]
async fn a_lost_status_response_is_a_transport_error_and_not_a_poll() {
    let (sim, rpc) = started().await;
    let wallet = wallet();
    let tx = transaction(&wallet, &wallet, b"swap");
    sim.confirm_after(2);
    rpc.send_transaction(&tx).await.unwrap();
    sim.script([SolanaFault::LoseStatusResponse]);

    let error = rpc.signature_statuses(&[tx.id()]).await.unwrap_err();
    assert!(matches!(error, RpcError::Transport { .. }), "{error:?}");
    assert_eq!(level(&status_of(&rpc, &tx.id()).await), Some("processed"));
    assert_eq!(level(&status_of(&rpc, &tx.id()).await), Some("processed"));
    assert_eq!(level(&status_of(&rpc, &tx.id()).await), Some("confirmed"));
}

#[tokio::test]
async fn a_dropped_transaction_never_shows_up_while_the_chain_moves_past_its_blockhash() {
    let (sim, rpc) = started().await;
    let wallet = wallet();
    let tx = transaction(&wallet, &wallet, b"swap");
    sim.script([SolanaFault::DropTransaction]);
    sim.set_advance_per_call(100);

    let (_, last_valid) = rpc.latest_blockhash().await.unwrap();
    assert_eq!(rpc.send_transaction(&tx).await.unwrap(), tx.id());
    let mut heights = Vec::new();
    loop {
        assert_eq!(status_of(&rpc, &tx.id()).await, None);
        let height = rpc.block_height().await.unwrap();
        heights.push(height);
        if height > last_valid {
            break;
        }
        assert!(heights.len() < 10, "the chain does not advance: {heights:?}");
    }
    assert!(heights.windows(2).all(|pair| pair[1] == pair[0] + 100), "{heights:?}");
    assert_eq!(sim.sends_of(&tx.id()), 1);
}

#[tokio::test]
async fn a_transaction_failing_on_chain_reports_its_error() {
    let (sim, rpc) = started().await;
    let wallet = wallet();
    let tx = transaction(&wallet, &wallet, b"swap");
    let on_chain = json!({"InstructionError": [0, {"Custom": 6001}]});
    sim.script([SolanaFault::FailOnChain(on_chain.clone())]);
    sim.confirm_after(0);

    rpc.send_transaction(&tx).await.expect("the node accepts it");
    let status = status_of(&rpc, &tx.id()).await.expect("it landed");
    assert_eq!(status.err, Some(on_chain.clone()));
    assert_eq!(status.confirmation_status.as_deref(), Some("confirmed"));
}

#[tokio::test]
async fn a_rejected_send_is_definite_and_never_lands() {
    let (sim, rpc) = started().await;
    let wallet = wallet();
    let tx = transaction(&wallet, &wallet, b"swap");
    let message = "Transaction simulation failed: Blockhash not found".to_owned();
    sim.script([SolanaFault::RejectSend { code: -32002, message: message.clone() }]);

    let error = rpc.send_transaction(&tx).await.unwrap_err();
    assert_eq!(error, RpcError::Rpc { code: -32002, message });
    assert!(error.is_definite_rejection());
    assert_eq!(status_of(&rpc, &tx.id()).await, None);
    assert_eq!(sim.sends_of(&tx.id()), 1);
}

#[tokio::test]
async fn balances_token_balances_and_blockhash_round_trip() {
    let (sim, rpc) = started().await;
    let owner = wallet().pubkey();
    let other = Pubkey([99; 32]);
    assert_eq!(rpc.balance(&owner).await.unwrap(), 0);
    assert_eq!(rpc.token_balance(&owner, USDC).await.unwrap(), 0);

    sim.set_balance(&owner, 2_500_000_000);
    sim.set_token_balance(&owner, USDC, 123_456_789);
    sim.set_token_balance(&owner, BONK, 5);
    sim.set_token_balance(&other, USDC, 1);
    assert_eq!(rpc.balance(&owner).await.unwrap(), 2_500_000_000);
    assert_eq!(rpc.token_balance(&owner, USDC).await.unwrap(), 123_456_789);
    assert_eq!(rpc.token_balance(&owner, BONK).await.unwrap(), 5);
    assert_eq!(rpc.token_balance(&other, BONK).await.unwrap(), 0);

    let (_, params) = sim.requests().into_iter().rfind(|(method, _)| method == "getTokenAccountsByOwner").unwrap();
    assert_eq!(
        params,
        json!([other.to_string(), {"mint": BONK}, {"encoding": "jsonParsed", "commitment": "confirmed"}])
    );

    sim.set_block_height(5_000);
    let (hash, last_valid) = rpc.latest_blockhash().await.unwrap();
    assert_eq!(last_valid, 5_150);
    assert_ne!(hash, [0; 32]);
    assert_eq!(rpc.block_height().await.unwrap(), 5_000);
    assert_eq!(rpc.block_height().await.unwrap(), 5_001);
    let (next_hash, _) = rpc.latest_blockhash().await.unwrap();
    assert_ne!(next_hash, hash);
}

#[tokio::test]
async fn http_errors_and_malformed_answers_are_errors_not_panics() {
    let (sim, rpc) = started().await;
    let wallet = wallet();
    let tx = transaction(&wallet, &wallet, b"swap");

    sim.script([SolanaFault::Http(500), SolanaFault::Http(429)]);
    let error = rpc.send_transaction(&tx).await.unwrap_err();
    assert_eq!(error, RpcError::Http { status: 500 });
    assert!(!error.is_definite_rejection());
    assert_eq!(rpc.balance(&wallet.pubkey()).await.unwrap_err(), RpcError::Http { status: 429 });
    assert_eq!(sim.sends_of(&tx.id()), 1, "an HTTP error is still a recorded send");
    assert_eq!(status_of(&rpc, &tx.id()).await, None, "a send answered with an HTTP error does not land");

    let timeout = Duration::from_millis(500);
    let garbage = [
        (200, "not json"),
        (200, r#"{"jsonrpc":"2.0","result":"wrong-signature","id":1}"#),
        (200, r#"{"jsonrpc":"2.0","result":{"context":{"slot":1},"value":"lots"},"id":2}"#),
        (200, r#"{"jsonrpc":"2.0","error":"refused","id":3}"#),
        (200, r#"{"jsonrpc":"2.0","id":4}"#),
    ];
    for (status, body) in garbage {
        let rpc = SolanaRpc::new(&fixed_server(status, body).await, timeout).unwrap();
        let sent = rpc.send_transaction(&tx).await.unwrap_err();
        assert!(matches!(sent, RpcError::Malformed { .. }), "{body}: {sent:?}");
        assert!(!sent.is_definite_rejection());
        let balance = rpc.balance(&wallet.pubkey()).await.unwrap_err();
        assert!(matches!(balance, RpcError::Malformed { .. }), "{body}: {balance:?}");
    }

    // A JSON-RPC error in a 503 comes from something in front of the node: not definite.
    let proxied = r#"{"jsonrpc":"2.0","error":{"code":-32005,"message":"busy"},"id":1}"#;
    let rpc = SolanaRpc::new(&fixed_server(503, proxied).await, timeout).unwrap();
    assert_eq!(rpc.send_transaction(&tx).await.unwrap_err(), RpcError::Http { status: 503 });

    // A node that never answers in time.
    let app = Router::new().route(
        "/",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            ""
        }),
    );
    let addr = chorus::sim::serve("127.0.0.1:0".parse().unwrap(), app).await.unwrap();
    let rpc = SolanaRpc::new(&format!("http://{addr}/"), Duration::from_millis(150)).unwrap();
    assert_eq!(rpc.block_height().await.unwrap_err(), RpcError::Transport { detail: "timeout".into() });
}

#[tokio::test]
async fn the_simulator_answers_bad_requests_with_json_rpc_errors() {
    let (sim, _) = started().await;
    let http = reqwest::Client::new();
    let post = |body: String| {
        let request = http.post(sim.url()).header("content-type", "application/json").body(body);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let code = |answer: &Value| answer["error"]["code"].as_i64();

    assert_eq!(code(&post("{not json".into()).await), Some(-32700));
    assert_eq!(code(&post(r#"{"id":1,"method":"getBalance"}"#.into()).await), Some(-32600));
    let unknown = post(r#"{"jsonrpc":"2.0","id":7,"method":"getEverything","params":[]}"#.into()).await;
    assert_eq!((code(&unknown), &unknown["id"]), (Some(-32601), &json!(7)));
    let bad_key = post(r#"{"jsonrpc":"2.0","id":1,"method":"getBalance","params":["nope"]}"#.into()).await;
    assert_eq!(code(&bad_key), Some(-32602));
    let bad_tx =
        post(r#"{"jsonrpc":"2.0","id":1,"method":"sendTransaction","params":["AAAA",{"encoding":"base64"}]}"#.into())
            .await;
    assert_eq!(code(&bad_tx), Some(-32602));

    // Without an encoding, the node reads base58 (its default).
    let wallet = wallet();
    let tx = transaction(&wallet, &wallet, b"swap");
    let encoded = bs58::encode(tx.to_bytes()).into_string();
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": "sendTransaction", "params": [encoded]});
    let answer = post(request.to_string()).await;
    assert_eq!(answer["result"], json!(tx.id()));
    assert_eq!(answer["jsonrpc"], "2.0");

    let methods: Vec<String> = sim.requests().into_iter().map(|(method, _)| method).collect();
    assert_eq!(methods, ["", "", "getEverything", "getBalance", "sendTransaction", "sendTransaction"]);
}
