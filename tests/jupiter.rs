//! The Jupiter client against the Jupiter simulator: exact quote math, a quote round-tripping into
//! a swap transaction the user pays for, the API key, and every failure the Trader must tell apart
//! (no route, rate limit, server error, timeout, malformed or altered answers).

use std::time::{Duration, Instant};

use chorus::config::Secret;
use chorus::sim::jupiter::{JUPITER_PROGRAM_ID, JupiterFault, JupiterSim, SimSwap};
use chorus::trader::jupiter::{Jupiter, JupiterError};
use chorus::trader::tx::Pubkey;
use serde_json::{Value, json};

const SOL: &str = "So11111111111111111111111111111111111111112";
const USDC: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
const BONK: &str = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263";
/// USDT: a real mint the simulator does not price.
const UNKNOWN: &str = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB";
const ONE_SOL: u64 = 1_000_000_000;

fn user() -> Pubkey {
    Pubkey([7; 32])
}

fn client_with(sim: &JupiterSim, key: Option<&str>, timeout: Duration) -> Jupiter {
    Jupiter::new(&sim.base_url(), key.map(Secret::new), timeout).expect("client")
}

fn client(sim: &JupiterSim) -> Jupiter {
    client_with(sim, None, Duration::from_secs(2))
}

async fn started() -> (JupiterSim, Jupiter) {
    let sim = JupiterSim::start().await.expect("simulator starts");
    let jupiter = client(&sim);
    (sim, jupiter)
}

fn query_value<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn quote_math_is_exact_for_sol_to_usdc_and_usdc_to_bonk() {
    let (sim, jupiter) = started().await;

    // 1 SOL at $150 into USDC ($1, 6 decimals), less the 0.25 % route fee, 0.5 % slippage.
    let quote = jupiter.quote(SOL, USDC, ONE_SOL, 50).await.unwrap();
    assert_eq!((quote.input_mint.as_str(), quote.output_mint.as_str()), (SOL, USDC));
    assert_eq!(quote.in_amount, ONE_SOL);
    assert_eq!(quote.out_amount, 149_625_000);
    assert_eq!(quote.other_amount_threshold, 148_876_875);
    assert_eq!(quote.slippage_bps, 50);
    assert_eq!(quote.price_impact_pct, "0");
    assert!(quote.context_slot.is_some());
    let step = &quote.route[0];
    assert_eq!(
        (step.in_amount, step.out_amount, step.fee_amount, step.percent),
        (ONE_SOL, 149_625_000, 2_500_000, 100)
    );
    assert_eq!((step.input_mint.as_str(), step.output_mint.as_str(), step.fee_mint.as_str()), (SOL, USDC, SOL));
    assert_eq!(quote.raw["outAmount"], json!("149625000"));
    assert_eq!(quote.raw["platformFee"], Value::Null);

    // 1 USDC into BONK ($0.00002, 5 decimals) with 1 % slippage: 4 987 500 000 units, exactly.
    let quote = jupiter.quote(USDC, BONK, 1_000_000, 100).await.unwrap();
    assert_eq!(quote.out_amount, 4_987_500_000);
    assert_eq!(quote.other_amount_threshold, 4_937_625_000);

    // The price and fee are settable.
    sim.set_price(SOL, 200.0, 9);
    sim.set_fee_bps(0);
    let quote = jupiter.quote(SOL, USDC, ONE_SOL / 2, 0).await.unwrap();
    assert_eq!((quote.out_amount, quote.other_amount_threshold), (100_000_000, 100_000_000));

    let requests = sim.requests();
    let first = &requests[0];
    assert_eq!((first.method.as_str(), first.path.as_str()), ("GET", "/swap/v1/quote"));
    let expected = [
        ("inputMint", SOL),
        ("outputMint", USDC),
        ("amount", "1000000000"),
        ("slippageBps", "50"),
        ("swapMode", "ExactIn"),
        ("restrictIntermediateTokens", "true"),
    ];
    for (key, value) in expected {
        assert_eq!(query_value(&first.query, key), Some(value), "{key}");
    }
    assert!(!first.headers.contains_key("x-api-key"), "no key configured, none sent");
}

#[tokio::test]
async fn a_quote_round_trips_into_a_swap_the_user_pays_for() {
    let (sim, jupiter) = started().await;
    sim.set_block_height(5_000);
    let quote = jupiter.quote(SOL, BONK, ONE_SOL / 10, 50).await.unwrap();
    let swap = jupiter.swap(&quote, &user()).await.unwrap();

    assert_eq!(swap.last_valid_block_height, 5_150);
    assert_eq!(swap.prioritization_fee_lamports, 5_000);
    assert_eq!(swap.simulation_error, None);
    let keys = swap.transaction.account_keys().unwrap();
    assert_eq!(keys[0], user(), "the user is the fee payer");
    assert!(keys.iter().any(|key| key.to_string() == JUPITER_PROGRAM_ID));
    assert!(swap.transaction.signers().unwrap().contains(&user()));

    // The transaction carries the quoted swap, for a simulated chain to apply.
    let expected = SimSwap {
        input_mint: SOL.to_owned(),
        output_mint: BONK.to_owned(),
        in_amount: quote.in_amount,
        out_amount: quote.out_amount,
        min_out_amount: quote.other_amount_threshold,
    }
    .encode()
    .unwrap();
    assert!(swap.transaction.message.windows(expected.len()).any(|window| window == expected));

    let request = sim.requests().pop().unwrap();
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/swap/v1/swap"));
    assert_eq!(request.body["quoteResponse"], quote.raw, "the quote goes back exactly as received");
    assert_eq!(request.body["userPublicKey"], json!(user().to_string()));
    assert_eq!(request.body["wrapAndUnwrapSol"], json!(true));
    assert_eq!(request.body["dynamicComputeUnitLimit"], json!(true));
    assert_eq!(request.body["prioritizationFeeLamports"], json!("auto"));

    // Two swaps of the same quote get different blockhashes, hence different transactions.
    let again = jupiter.swap(&quote, &user()).await.unwrap();
    assert_ne!(again.transaction.message, swap.transaction.message);
}

#[tokio::test]
async fn a_swap_of_a_quote_the_sim_never_issued_is_refused() {
    let (_sim, jupiter) = started().await;
    let mut quote = jupiter.quote(SOL, USDC, ONE_SOL, 50).await.unwrap();
    let program: Pubkey = JUPITER_PROGRAM_ID.parse().unwrap();
    let err = jupiter.swap(&quote, &program).await.unwrap_err();
    assert!(matches!(err, JupiterError::Status { status: 400, .. }), "the program cannot pay: {err:?}");
    quote.raw["outAmount"] = json!("999999999999");
    let err = jupiter.swap(&quote, &user()).await.unwrap_err();
    assert!(matches!(err, JupiterError::Status { status: 400, .. }), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn the_api_key_is_sent_as_x_api_key_and_a_missing_or_wrong_one_fails() {
    let sim = JupiterSim::start().await.unwrap();
    sim.require_api_key(Some("sk-jup-test"));
    let keyed = client_with(&sim, Some("sk-jup-test"), Duration::from_secs(2));
    keyed.quote(SOL, USDC, ONE_SOL, 50).await.unwrap();
    assert_eq!(sim.requests()[0].headers.get("x-api-key").map(String::as_str), Some("sk-jup-test"));
    assert!(!format!("{keyed:?}").contains("sk-jup-test"), "Debug must redact the key");

    for key in [None, Some("sk-wrong")] {
        let err = client_with(&sim, key, Duration::from_secs(2)).quote(SOL, USDC, ONE_SOL, 50).await.unwrap_err();
        assert!(matches!(err, JupiterError::Status { status: 401, .. }), "{key:?}: {err:?}");
        assert!(!err.is_transient());
        assert!(!err.to_string().contains("sk-"), "errors never carry a key");
    }
}

#[tokio::test]
async fn no_route_for_an_unknown_mint_or_a_dust_amount() {
    let (sim, jupiter) = started().await;
    let err = jupiter.quote(SOL, UNKNOWN, ONE_SOL, 50).await.unwrap_err();
    match &err {
        JupiterError::NoRoute { detail } => assert!(detail.contains("COULD_NOT_FIND_ANY_ROUTE"), "{detail}"),
        other => panic!("expected NoRoute, got {other:?}"),
    }
    assert!(!err.is_transient());
    // One BONK unit is worth far less than a lamport.
    let dust = jupiter.quote(BONK, SOL, 1, 50).await.unwrap_err();
    assert!(matches!(dust, JupiterError::NoRoute { .. }), "{dust:?}");
    sim.script([JupiterFault::NoRoute]);
    let scripted = jupiter.quote(SOL, USDC, ONE_SOL, 50).await.unwrap_err();
    assert!(matches!(scripted, JupiterError::NoRoute { .. }), "{scripted:?}");
}

#[tokio::test]
async fn bad_parameters_are_a_permanent_400() {
    let (_sim, jupiter) = started().await;
    for (amount, slippage) in [(0, 50), (ONE_SOL, 10_001)] {
        let err = jupiter.quote(SOL, USDC, amount, slippage).await.unwrap_err();
        assert!(matches!(err, JupiterError::Status { status: 400, .. }), "{amount} {slippage}: {err:?}");
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn a_429_is_rate_limited_with_retry_after() {
    let (sim, jupiter) = started().await;
    sim.script([JupiterFault::RateLimited { retry_after_secs: 3 }]);
    let err = jupiter.quote(SOL, USDC, ONE_SOL, 50).await.unwrap_err();
    assert_eq!(err, JupiterError::RateLimited { retry_after: Some(Duration::from_secs(3)) });
    assert!(err.is_transient());
    jupiter.quote(SOL, USDC, ONE_SOL, 50).await.expect("the next request is answered");
}

#[tokio::test]
async fn a_500_is_a_transient_status() {
    let (sim, jupiter) = started().await;
    let quote = jupiter.quote(SOL, USDC, ONE_SOL, 50).await.unwrap();
    sim.script([JupiterFault::Status(500), JupiterFault::Status(503)]);
    for err in
        [jupiter.quote(SOL, USDC, ONE_SOL, 50).await.unwrap_err(), jupiter.swap(&quote, &user()).await.unwrap_err()]
    {
        assert!(matches!(err, JupiterError::Status { status: 500 | 503, .. }), "{err:?}");
        assert!(err.is_transient());
    }
}

#[tokio::test]
async fn malformed_bodies_are_malformed_without_panicking() {
    let (sim, jupiter) = started().await;
    let quote = jupiter.quote(SOL, USDC, ONE_SOL, 50).await.unwrap();
    sim.script([JupiterFault::MalformedBody, JupiterFault::MalformedBody]);
    let on_quote = jupiter.quote(SOL, USDC, ONE_SOL, 50).await.unwrap_err();
    let on_swap = jupiter.swap(&quote, &user()).await.unwrap_err();
    for err in [on_quote, on_swap] {
        assert!(matches!(err, JupiterError::Malformed { .. }), "{err:?}");
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn a_quote_for_another_mint_is_malformed() {
    let (sim, jupiter) = started().await;
    sim.script([JupiterFault::WrongMint]);
    let err = jupiter.quote(USDC, BONK, 1_000_000, 50).await.unwrap_err();
    match err {
        JupiterError::Malformed { detail } => assert!(detail.contains(BONK), "{detail}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_swap_paid_by_someone_else_is_malformed() {
    let (sim, jupiter) = started().await;
    let quote = jupiter.quote(SOL, USDC, ONE_SOL, 50).await.unwrap();
    sim.script([JupiterFault::WrongPayer]);
    let err = jupiter.swap(&quote, &user()).await.unwrap_err();
    match err {
        JupiterError::Malformed { detail } => assert!(detail.contains("fee payer"), "{detail}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_slow_answer_times_out_as_a_transient_transport_error() {
    let sim = JupiterSim::start().await.unwrap();
    let jupiter = client_with(&sim, None, Duration::from_millis(200));
    sim.script([JupiterFault::Slow(Duration::from_secs(5))]);
    let started = Instant::now();
    let err = jupiter.quote(SOL, USDC, ONE_SOL, 50).await.unwrap_err();
    assert_eq!(err, JupiterError::Transport { detail: "timeout".into() });
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_refused_connection_is_a_transient_transport_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let jupiter = Jupiter::new(&format!("http://127.0.0.1:{port}"), None, Duration::from_secs(1)).unwrap();
    let err = jupiter.quote(SOL, USDC, ONE_SOL, 50).await.unwrap_err();
    assert!(matches!(err, JupiterError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(!err.to_string().contains("127.0.0.1"), "errors carry no URL");
}
