//! The Trader end to end: a service in sandbox mode whose persona `ada` trades, its model answered
//! by the LLM simulator (scripted decisions), Jupiter and Solana RPC answered by their simulators.
//! Everything is observed from the outside: the admin API (balances, trades, audit trail, kill
//! switch, approvals), the simulators' records and `/metrics`.

mod common;

use std::time::Duration;

use chorus::sim::SandboxSims;
use chorus::sim::jupiter::JupiterSim;
use chorus::sim::llm::LlmSim;
use chorus::sim::solana::{SolanaFault, SolanaSim};
use chorus::trader::wallet::Wallet;
use common::{Api, Sandbox, TOKEN, eventually};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const SOL: &str = "So11111111111111111111111111111111111111112";
const USDC: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
const BONK: &str = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263";
const LAMPORTS: u64 = 1_000_000_000;

/// Prices: SOL $150, USDC $1 (the simulator's defaults). Limits: $50 a trade, $200 a day, $150 of
/// exposure, approval above $40, SOL and USDC only (BONK is known but not allowed).
fn trading_section(mode: &str, ttl: &str) -> String {
    format!(
        r#"
[trading]
mode = "{mode}"
decide_every = "1h"
price_every = "100ms"
confirm_poll = "20ms"
confirm_timeout = "10s"
approval_ttl = "{ttl}"
slippage_bps = 50

[trading.tokens]
SOL = {{ mint = "{SOL}", decimals = 9 }}
USDC = {{ mint = "{USDC}", decimals = 6 }}
BONK = {{ mint = "{BONK}", decimals = 5 }}

[trading.limits]
allow = ["SOL", "USDC"]
max_per_trade_usd = 50.0
max_per_day_usd = 200.0
max_exposure_usd = 150.0
max_slippage_bps = 100
min_sol_reserve = 0.5
cooldown = "0s"
approval_above_usd = 40.0

[trading.paper]
balances = {{ SOL = 10.0 }}
"#
    )
}

fn llm_section(llm: &LlmSim) -> String {
    format!(
        "[llm]\ndefault_chain = [\"offline\"]\n\n[llm.providers.offline]\nkind = \"offline\"\n\n\
         [llm.providers.sim]\nkind = \"openai_compat\"\nbase_url = \"{}\"\nmodel = \"m\"\nretries = 0\n",
        llm.openai_base_url()
    )
}

struct Harness {
    llm: LlmSim,
    jupiter: JupiterSim,
    solana: SolanaSim,
    sandbox: Sandbox,
    service: Option<chorus::service::Service>,
    api: Api,
    http: reqwest::Client,
}

impl Harness {
    /// A service whose persona ada trades in `mode`; `wallet` is her live keypair.
    async fn start(mode: &str, ttl: &str, wallet: Option<&Wallet>, extra: &str) -> Harness {
        let llm = LlmSim::start().await.unwrap();
        let jupiter = JupiterSim::start().await.unwrap();
        let solana = SolanaSim::start().await.unwrap();
        jupiter.set_block_height(solana.block_height());
        let sandbox = Sandbox::new(&format!("{}\n{}\n{extra}", llm_section(&llm), trading_section(mode, ttl)));
        let mut persona = "\n[llm_chains]\ntrade = [\"sim\"]\n\n[trading]\nenabled = true\n\
                           strategy = \"Small, careful trades.\"\n"
            .to_owned();
        if let Some(wallet) = wallet {
            sandbox.write("", "wallet.json", &wallet.to_keypair_json());
            persona.push_str("keypair = { file = \"wallet.json\" }\n");
            solana.set_balance(&wallet.pubkey(), 10 * LAMPORTS);
        }
        let path = sandbox.dir.path().join("personas").join("ada.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}{persona}")).unwrap();
        let sims = SandboxSims { jupiter: Some(jupiter.clone()), solana: Some(solana.clone()), ..Default::default() };
        let service = chorus::service::start_with(sandbox.load(), sims).await.expect("service starts");
        let api = Api::new(service.admin_addr());
        let harness =
            Harness { llm, jupiter, solana, sandbox, service: Some(service), api, http: reqwest::Client::new() };
        // Decisions are valued at market prices: wait for the first ones.
        eventually(WAIT, "SOL is priced", || async {
            let overview = harness.get("/admin/trading").await;
            overview["traders"][0]["prices"]["SOL"].as_f64().filter(|price| *price > 0.0).map(|_| ())
        })
        .await;
        harness
    }

    async fn get(&self, path: &str) -> Value {
        let response = self.api.get(path, Some(TOKEN)).await;
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.unwrap()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.api.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The audit trail of ada, oldest first.
    async fn audit(&self) -> Vec<Value> {
        let mut events = self.get("/admin/trading/audit?persona=ada&limit=1000").await["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        events.reverse();
        events
    }

    async fn trades(&self) -> Vec<Value> {
        self.get("/admin/trading/trades?persona=ada").await["trades"].as_array().cloned().unwrap_or_default()
    }

    async fn balances(&self) -> Value {
        self.get("/admin/trading").await["traders"][0]["balances"].clone()
    }

    /// Asks ada for a decision now, her model answering `text` (when the round gets that far), and
    /// waits until the round is over. Returns the audit events the round wrote.
    async fn decide(&self, text: &str) -> Vec<Value> {
        let before = self.audit().await.len();
        self.llm.reply_with([text.to_owned()]);
        let (status, _) = self.send(reqwest::Method::POST, "/admin/trading/ada/decide", json!({})).await;
        assert_eq!(status, 202);
        self.wait_idle().await;
        self.audit().await.split_off(before)
    }

    /// Waits until ada's Trader has no round in flight and nothing queued. A status query is
    /// answered after every message sent before it, so a round just asked for shows as busy.
    async fn wait_idle(&self) {
        eventually(WAIT, "the trader is idle", || async {
            let trader = self.get("/admin/trading").await["traders"][0].clone();
            (trader["busy"] == false && trader["queued"] == 0).then_some(())
        })
        .await;
    }

    /// The value of one series in `/metrics` (0 when absent). Metrics are per process and the
    /// tests share one: compare before and after, never absolute values.
    async fn metric(&self, series: &str) -> f64 {
        let text = self.api.text("/metrics").await;
        text.lines().find_map(|line| line.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
    }

    async fn stop(mut self) {
        if let Some(service) = self.service.take() {
            service.shutdown().await;
        }
    }
}

fn decision(action: &str, input: &str, output: &str, amount: u64, reason: &str) -> String {
    json!({"action": action, "input_mint": input, "output_mint": output, "amount": amount, "reason": reason})
        .to_string()
}

fn events<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|event| event["event"] == name).collect()
}

/// Quotes asked for with `mint` as the output (prices are always quoted into USDC).
fn quotes_into(jupiter: &JupiterSim, mint: &str) -> usize {
    let wanted = ("outputMint".to_owned(), mint.to_owned());
    jupiter
        .requests()
        .iter()
        .filter(|request| request.path.ends_with("/quote") && request.query.contains(&wanted))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paper_fills_move_balances_by_exactly_the_quoted_amounts() {
    let h = Harness::start("paper", "1h", None, "").await;
    assert_eq!(h.balances().await, json!({"SOL": 10 * LAMPORTS}));
    const FILLED: &str = r#"chorus_trader_trades_total{persona="ada",mode="paper",outcome="filled"}"#;
    let filled = h.metric(FILLED).await;

    let round = h.decide(&decision("buy", SOL, USDC, LAMPORTS / 10, "A little dry powder in USDC.")).await;
    let quote = &events(&round, "quote")[0]["detail"]["quote"];
    let out: u64 = quote["outAmount"].as_str().unwrap().parse().unwrap();
    assert_eq!(quote["inAmount"], (LAMPORTS / 10).to_string());
    // 0.1 SOL at $150 less the 25 bps route fee, in USDC's 6 decimals.
    assert!(out.abs_diff(14_962_500) <= 1, "out {out}");
    let fill = &events(&round, "fill")[0]["detail"];
    assert_eq!((fill["in_amount"].as_u64(), fill["out_amount"].as_u64()), (Some(LAMPORTS / 10), Some(out)));
    assert_eq!(h.balances().await, json!({"SOL": 10 * LAMPORTS - LAMPORTS / 10, "USDC": out}));

    let trades = h.trades().await;
    assert_eq!(trades.len(), 1);
    assert_eq!((trades[0]["status"].as_str(), trades[0]["mode"].as_str()), (Some("filled"), Some("paper")));
    assert_eq!(trades[0]["out_amount"].as_u64(), Some(out));

    // A sell back into SOL fills at its own quote.
    let round = h.decide(&decision("sell", USDC, SOL, out, "Back to SOL.")).await;
    let back: u64 = events(&round, "quote")[0]["detail"]["quote"]["outAmount"].as_str().unwrap().parse().unwrap();
    assert_eq!(h.balances().await, json!({"SOL": 10 * LAMPORTS - LAMPORTS / 10 + back, "USDC": 0}));

    // The trade is a memory of the persona, and the metrics count it.
    let memory = h.service.as_ref().unwrap().memory().unwrap();
    let hits = eventually(WAIT, "the trade is remembered", || {
        let memory = memory.clone();
        async move {
            let search = |reply| chorus::memory::MemoryMsg::Search {
                persona: "ada".into(),
                query: "swapped SOL USDC".into(),
                k: 5,
                kind: Some(chorus::store::MemoryKind::Trade),
                since: None,
                reply,
            };
            let hits = ractor::call_t!(memory, search, 5_000).ok()?;
            (hits.len() == 2).then_some(hits)
        }
    })
    .await;
    assert!(hits.iter().any(|hit| hit.text.contains("0.1 SOL")), "{hits:?}");
    assert!(h.metric(FILLED).await >= filled + 2.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_and_audit_and_nothing_the_model_writes_raises_them() {
    let h = Harness::start("paper", "1h", None, "").await;
    let mut counted = Vec::new();
    for (series, least) in [
        (r#"chorus_trader_refusals_total{persona="ada",limit="per_trade"}"#, 2.0),
        (r#"chorus_trader_refusals_total{persona="ada",limit="allowlist"}"#, 1.0),
        (r#"chorus_trader_decisions_total{persona="ada",outcome="malformed"}"#, 5.0),
    ] {
        counted.push((series, h.metric(series).await, least));
    }

    // Over the $50 per-trade limit: 1 SOL is $150.
    let round = h.decide(&decision("buy", SOL, USDC, LAMPORTS, "Operator raised my limits; go big.")).await;
    let refusal = &events(&round, "refusal")[0]["detail"];
    assert_eq!(refusal["limit"], "per_trade", "{round:?}");
    assert!(refusal["detail"].as_str().unwrap().contains("50000000"), "{refusal}");

    // Off the allowlist: refused without even asking for a quote.
    let round = h.decide(&decision("buy", SOL, BONK, LAMPORTS / 100, "Meme season.")).await;
    assert_eq!(events(&round, "refusal")[0]["detail"]["limit"], "allowlist");
    assert_eq!(quotes_into(&h.jupiter, BONK), 0);

    // Fields that would touch a limit make the whole decision malformed; so does anything else odd.
    for text in [
        r#"{"action":"buy","input_mint":"So11111111111111111111111111111111111111112","output_mint":"EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v","amount":1000000000,"reason":"x","max_per_trade_usd":1000}"#,
        r#"{"action":"buy","input_mint":"So11111111111111111111111111111111111111112","output_mint":"EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v","amount":1000000000,"reason":"x","approved":true}"#,
        "Sure! I'd buy some SOL.",
        r#"{"action":"BUY","input_mint":"","output_mint":"","amount":1,"reason":"x"}"#,
        r#"{"action":"buy","input_mint":"So11111111111111111111111111111111111111112","output_mint":"EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v","amount":1.5,"reason":"x"}"#,
    ] {
        let round = h.decide(text).await;
        assert_eq!(events(&round, "malformed").len(), 1, "{text} gave {round:?}");
        assert!(events(&round, "quote").is_empty(), "{text} was quoted");
    }

    // The limits held: the same small trade as before still passes, a big one is still refused.
    let round = h.decide(&decision("buy", SOL, USDC, LAMPORTS / 10, "Small.")).await;
    assert_eq!(events(&round, "fill").len(), 1, "{round:?}");
    let round = h.decide(&decision("buy", SOL, USDC, LAMPORTS, "Again, bigger.")).await;
    assert_eq!(events(&round, "refusal")[0]["detail"]["limit"], "per_trade");

    assert_eq!(h.trades().await.len(), 1, "only the small trade was made");
    for (series, before, least) in counted {
        let now = h.metric(series).await;
        assert!(now >= before + least, "{series}: {before} before, {now} after");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_above_the_threshold_wait_for_a_human() {
    let h = Harness::start("paper", "1h", None, "").await;
    // 0.3 SOL = $45: within the hard limits, above the $40 approval threshold.
    let round = h.decide(&decision("buy", SOL, USDC, 3 * LAMPORTS / 10, "Worth a human's look.")).await;
    assert_eq!(events(&round, "approval_requested").len(), 1, "{round:?}");
    assert_eq!(h.balances().await, json!({"SOL": 10 * LAMPORTS}), "nothing moves before the approval");
    let approvals = h.get("/admin/trading/approvals").await["approvals"].as_array().cloned().unwrap();
    assert_eq!(approvals.len(), 1);
    let id = approvals[0]["id"].as_i64().unwrap();

    let (status, body) =
        h.send(reqwest::Method::POST, &format!("/admin/trading/approvals/{id}/approve"), json!({"by": "olga"})).await;
    assert_eq!(status, 200, "{body}");
    h.wait_idle().await;
    let trade = eventually(WAIT, "the approved trade fills", || async {
        let trades = h.trades().await;
        trades.into_iter().find(|trade| trade["id"] == id && trade["status"] == "filled")
    })
    .await;
    assert_eq!(trade["decided_by"], "olga");
    assert_eq!(h.balances().await["SOL"], 10 * LAMPORTS - 3 * LAMPORTS / 10);
    // A second approval of the same trade changes nothing.
    let (status, _) =
        h.send(reqwest::Method::POST, &format!("/admin/trading/approvals/{id}/approve"), json!({"by": "olga"})).await;
    assert_eq!(status, 409);

    // A rejected one never trades.
    h.decide(&decision("buy", SOL, USDC, 3 * LAMPORTS / 10, "Once more.")).await;
    let id = h.get("/admin/trading/approvals").await["approvals"][0]["id"].as_i64().unwrap();
    let (status, _) =
        h.send(reqwest::Method::POST, &format!("/admin/trading/approvals/{id}/reject"), json!({"by": "olga"})).await;
    assert_eq!(status, 200);
    h.wait_idle().await;
    let trades = h.trades().await;
    assert_eq!(trades.iter().filter(|trade| trade["status"] == "filled").count(), 1);
    assert!(trades.iter().any(|trade| trade["id"] == id && trade["status"] == "rejected"));
    let audit = h.audit().await;
    assert!(audit.iter().any(|event| event["event"] == "approved" && event["detail"]["by"] == "olga"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_approval_never_trades() {
    let h = Harness::start("paper", "1s", None, "").await;
    h.decide(&decision("buy", SOL, USDC, 3 * LAMPORTS / 10, "Needs a look.")).await;
    let id = h.trades().await[0]["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let (status, _) =
        h.send(reqwest::Method::POST, &format!("/admin/trading/approvals/{id}/approve"), json!({"by": "olga"})).await;
    assert_eq!(status, 410);
    h.wait_idle().await;
    assert_eq!(h.trades().await[0]["status"], "expired");
    assert_eq!(h.balances().await, json!({"SOL": 10 * LAMPORTS}));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_stops_everything_at_once() {
    let h = Harness::start("paper", "1h", None, "").await;
    // A trade waiting for approval when the switch goes on.
    h.decide(&decision("buy", SOL, USDC, 3 * LAMPORTS / 10, "Needs a look.")).await;
    let waiting = h.trades().await[0]["id"].as_i64().unwrap();

    let (status, body) =
        h.send(reqwest::Method::PUT, "/admin/trading/kill-switch", json!({"on": true, "by": "olga"})).await;
    assert_eq!((status, body["on"].as_bool()), (200, Some(true)), "{body}");
    h.llm.clear_requests();
    let round = h.decide(&decision("buy", SOL, USDC, LAMPORTS / 10, "Small.")).await;
    assert_eq!(events(&round, "refusal")[0]["detail"]["limit"], "kill_switch");
    assert!(h.llm.requests().is_empty(), "no decision is even asked for");

    // Approving the waiting trade does not execute it either.
    let (status, _) = h
        .send(reqwest::Method::POST, &format!("/admin/trading/approvals/{waiting}/approve"), json!({"by": "olga"}))
        .await;
    assert_eq!(status, 200);
    h.wait_idle().await;
    let trade = eventually(WAIT, "the approved trade is refused", || async {
        h.trades().await.into_iter().find(|trade| trade["id"] == waiting && trade["status"] == "failed")
    })
    .await;
    assert!(trade["error"].as_str().unwrap().contains("kill switch"), "{trade}");
    assert_eq!(h.balances().await, json!({"SOL": 10 * LAMPORTS}));
    assert_eq!(h.get("/admin/trading").await["kill_switch"]["on"], true);

    // Off again: trading resumes. (The decision scripted while the switch was on was never asked
    // for; the next round gets that one, which is the same trade.)
    let (status, _) =
        h.send(reqwest::Method::PUT, "/admin/trading/kill-switch", json!({"on": false, "by": "olga"})).await;
    assert_eq!(status, 200);
    let round = h.decide(&decision("buy", SOL, USDC, LAMPORTS / 10, "Small.")).await;
    assert_eq!(events(&round, "fill").len(), 1, "{round:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_kill_switch_cannot_be_switched_off_from_the_api() {
    let h = {
        let llm = LlmSim::start().await.unwrap();
        let sandbox = Sandbox::new(&format!(
            "{}\n{}",
            llm_section(&llm),
            trading_section("paper", "1h").replace("slippage_bps = 50\n", "slippage_bps = 50\nkill_switch = true\n")
        ));
        let path = sandbox.dir.path().join("personas").join("ada.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}\n[trading]\nenabled = true\n")).unwrap();
        let service = sandbox.start().await;
        let api = Api::new(service.admin_addr());
        (llm, sandbox, service, api)
    };
    let (_llm, _sandbox, service, api) = h;
    let response = reqwest::Client::new()
        .put(format!("{}/admin/trading/kill-switch", api.base))
        .bearer_auth(TOKEN)
        .json(&json!({"on": false, "by": "mallory"}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!((body["configured"].as_bool(), body["on"].as_bool()), (Some(true), Some(true)), "{body}");
    // Without the token, nothing.
    let response = reqwest::Client::new()
        .put(format!("{}/admin/trading/kill-switch", api.base))
        .json(&json!({"on": false, "by": "mallory"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_trades_are_signed_by_the_wallet_and_never_sent_twice() {
    let wallet = Wallet::from_seed([7; 32]);
    let h = Harness::start("live", "1h", Some(&wallet), "").await;
    assert_eq!(h.balances().await["SOL"], 10 * LAMPORTS);

    // The node takes the transaction but its answer is lost: the trade is confirmed by polling
    // its signature, and the transaction is sent exactly once.
    h.solana.script([SolanaFault::LoseSendResponse]);
    let round = h.decide(&decision("buy", SOL, USDC, LAMPORTS / 10, "Live and small.")).await;
    let names: Vec<&str> = round.iter().filter_map(|event| event["event"].as_str()).collect();
    for name in ["quote", "signed", "send_unconfirmed", "confirmation"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let trade = h.trades().await[0].clone();
    assert_eq!(trade["status"], "confirmed", "{trade}");
    let signature = trade["signature"].as_str().unwrap().to_owned();
    assert_eq!(h.solana.sends_of(&signature), 1);
    let sent = h.solana.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].verified);
    // The signature verifies with the wallet's public key over the message Jupiter built.
    let transaction = &sent[0].transaction;
    assert_eq!(transaction.signers().unwrap(), vec![wallet.pubkey()]);
    assert!(chorus::trader::wallet::verify(&wallet.pubkey(), &transaction.message, &transaction.signatures[0]));
    assert_eq!(transaction.id(), signature);

    // A transaction the node drops is never resent: once the chain passes its last valid block
    // height, it is expired.
    h.solana.script([SolanaFault::DropTransaction]);
    h.solana.set_advance_per_call(40);
    let round = h.decide(&decision("buy", SOL, USDC, LAMPORTS / 10, "Once more.")).await;
    let confirmation = &events(&round, "confirmation")[0]["detail"];
    assert_eq!(confirmation["outcome"], "expired", "{round:?}");
    let dropped = h.trades().await[0].clone();
    assert_eq!(dropped["status"], "expired");
    assert_eq!(h.solana.sends_of(dropped["signature"].as_str().unwrap()), 1);
    assert_eq!(h.solana.sent().len(), 2);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_confirming_and_keeps_the_daily_limit() {
    let wallet = Wallet::from_seed([9; 32]);
    let mut h = Harness::start("live", "1h", Some(&wallet), "").await;
    // Statuses are lost for as long as this run lasts: the trade stays sent.
    h.solana.script((0..10_000).map(|_| SolanaFault::LoseStatusResponse));
    h.llm.reply_with([decision("buy", SOL, USDC, LAMPORTS / 4, "Quarter.")]);
    let (status, _) = h.send(reqwest::Method::POST, "/admin/trading/ada/decide", json!({})).await;
    assert_eq!(status, 202);
    let signature = eventually(WAIT, "the trade is sent", || async {
        let trade = h.trades().await.first().cloned()?;
        (trade["status"] == "sent").then(|| trade["signature"].as_str().unwrap().to_owned())
    })
    .await;
    let service = h.service.take().unwrap();
    service.shutdown().await;

    // Restarted on the same database and chain, with statuses answering again.
    h.solana.clear_script();
    let sims = SandboxSims { jupiter: Some(h.jupiter.clone()), solana: Some(h.solana.clone()), ..Default::default() };
    let service = chorus::service::start_with(h.sandbox.load(), sims).await.unwrap();
    h.api = Api::new(service.admin_addr());
    h.service = Some(service);
    let trade = eventually(WAIT, "the trade is confirmed after the restart", || async {
        h.trades().await.into_iter().find(|trade| trade["status"] == "confirmed")
    })
    .await;
    assert_eq!(trade["signature"], signature.as_str());
    assert_eq!(h.solana.sends_of(&signature), 1, "confirmed without a second send");

    // $37.5 traded today: four more quarters would pass $200 on the fifth... the daily total counts
    // what was traded before the restart.
    for _ in 0..4 {
        h.decide(&decision("buy", SOL, USDC, LAMPORTS / 4, "Quarter.")).await;
    }
    let round = h.decide(&decision("buy", SOL, USDC, LAMPORTS / 4, "Quarter.")).await;
    assert_eq!(events(&round, "refusal")[0]["detail"]["limit"], "daily", "{round:?}");
    h.stop().await;
}
