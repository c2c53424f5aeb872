//! The Trader actor: one per persona that trades.
//!
//! On its `decide_every` timer (or an operator's request) it asks the persona's model for one
//! decision, parses it strictly, quotes it on Jupiter, values it, checks every hard limit in code
//! and then fills it on paper, holds it for a human, or signs and sends it. Every step lands in the
//! audit trail (`trade_audit`) and executed trades become memories of the persona.
//!
//! **One round at a time.** A round (decide, execute an approved trade, reconcile sent
//! transactions) runs in a task so the mailbox stays free for status queries and timers; jobs that
//! arrive meanwhile wait in a small de-duplicated queue. Limits are checked against state read
//! from the database and the wallet at the moment of the check (daily volume, last trade, balances),
//! so a restart cannot reset a cool-down or a daily limit.
//!
//! **Live transactions are never resent.** A signed transaction is stored before it is sent. If
//! the node's answer is lost, the trade is `sent` and only its signature is polled; once the chain
//! is past the transaction's last valid block height without it, it is `expired` (it can no longer
//! land). After a restart, `signed` and `sent` trades are reconciled the same way.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use serde_json::json;

use super::control::TradingControl;
use super::decision::parse_decision;
use super::jupiter::{Jupiter, Quote};
use super::prompt::{self, MarketView, TokenView};
use super::risk::{self, DAY_MS, ProposedTrade, RiskLimits, RiskState, SOL_MINT, Verdict, utc_day};
use super::solana::SolanaRpc;
use super::wallet::Wallet;
use crate::config::AirlockMode;
use crate::config::{Config, Persona, TradingConfig, TradingMode, USDC_MINT};
use crate::directory::Directory;
use crate::llm::{CompletionRequest, LlmMsg, Task};
use crate::memory::MemoryMsg;
use crate::metrics as m;
use crate::store::{Db, MemoryKind, NewAudit, NewMemory, NewTrade, PaperFill, TradeRow, TradeStatus, now_ms};
use crate::task::AbortOnDrop;

/// Longest wait for the model's decision.
const DECISION_TIMEOUT_MS: u64 = 120_000;
/// Jobs waiting behind the round in flight; more are dropped (and logged).
const MAX_QUEUED: usize = 32;

pub struct Trader;

pub struct TraderArgs {
    pub persona: Arc<Persona>,
    pub config: Arc<Config>,
    pub db: Db,
    pub directory: Arc<Directory>,
    pub control: Arc<TradingControl>,
    /// Where Jupiter and the RPC node are (the simulators' in the sandbox).
    pub jupiter_url: String,
    pub rpc_url: String,
}

pub enum TraderMsg {
    /// Ask the model for a decision (timer, or an operator's request).
    Decide,
    /// Price the tokens, expire old approvals, reconcile sent transactions (timer).
    Tick,
    /// A human approved trade `trade_id`: execute it.
    Execute { trade_id: i64 },
    /// The round in flight finished.
    RoundDone,
    /// New prices (USD micro-units per whole token, by mint).
    Prices(BTreeMap<String, u64>),
    /// What the Trader holds and knows, for the admin API.
    Status { reply: RpcReplyPort<TraderStatus> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Decide,
    Execute(i64),
    Reconcile,
}

/// The Trader's view for operators.
#[derive(Debug, Clone, Serialize)]
pub struct TraderStatus {
    pub persona: String,
    pub mode: &'static str,
    /// The live wallet's public key.
    pub wallet: Option<String>,
    pub busy: bool,
    pub queued: usize,
    /// Token symbol → smallest units.
    pub balances: BTreeMap<String, u64>,
    /// Token symbol → USD per whole token.
    pub prices: BTreeMap<String, f64>,
    /// Marked-to-market value in USD, when every holding is priced.
    pub value_usd: Option<f64>,
    /// Paper P&L in USD since the first valuation.
    pub pnl_usd: Option<f64>,
}

/// Everything a round needs; shared with its task.
struct Core {
    persona: Arc<Persona>,
    strategy: String,
    trading: TradingConfig,
    limits: RiskLimits,
    db: Db,
    directory: Arc<Directory>,
    control: Arc<TradingControl>,
    jupiter: Jupiter,
    /// Live mode only.
    live: Option<Live>,
}

struct Live {
    rpc: SolanaRpc,
    wallet: Wallet,
}

pub struct TraderState {
    core: Arc<Core>,
    prices: BTreeMap<String, u64>,
    queue: VecDeque<Job>,
    round: Option<AbortOnDrop>,
    pricing: Option<AbortOnDrop>,
    _timers: [AbortOnDrop; 2],
}

impl Actor for Trader {
    type Msg = TraderMsg;
    type State = TraderState;
    type Arguments = TraderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TraderMsg>,
        args: TraderArgs,
    ) -> Result<TraderState, ActorProcessingErr> {
        let trading = args.config.service.trading.clone();
        let jupiter = Jupiter::new(&args.jupiter_url, args.config.jupiter_key.clone(), trading.timeout.get())?;
        let live = match trading.mode {
            TradingMode::Paper => None,
            TradingMode::Live => {
                let secret = args
                    .config
                    .persona_secret(&args.persona.name, "trading.keypair")
                    .ok_or("live trading needs the persona's trading.keypair")?;
                let wallet = Wallet::from_secret(&secret)?;
                let rpc = SolanaRpc::new(&args.rpc_url, trading.timeout.get())?;
                Some(Live { rpc, wallet })
            }
        };
        let strategy = args.persona.trading.as_ref().map(|t| t.strategy.clone()).unwrap_or_default();
        let mut limits = trading.risk_limits();
        // The airlock for trades: `hold` sends every trade to a human, `auto` none, and
        // `hold-if-flagged` those above `approval_above_usd` (the flag).
        limits.approval_above = match args.config.airlock_for(&args.persona).trades {
            AirlockMode::Hold => Some(0),
            AirlockMode::Auto => None,
            AirlockMode::HoldIfFlagged => limits.approval_above,
        };
        let core = Arc::new(Core {
            persona: args.persona,
            strategy,
            limits,
            db: args.db,
            directory: args.directory,
            control: args.control,
            jupiter,
            live,
            trading,
        });
        if core.live.is_none() {
            let seeded = core.db.paper_seed(&core.persona.name, &core.trading.paper_start()).await?;
            if seeded {
                tracing::info!(persona = %core.persona.name, "paper wallet opened");
            }
        }
        for limit in risk::Refusal::LABELS.into_iter().chain(["balance", "unpriced"]) {
            metrics::counter!(m::TRADER_REFUSALS, "persona" => core.persona.name.clone(), "limit" => limit).absolute(0);
        }
        let decide = myself.send_interval(core.trading.decide_every.get(), || TraderMsg::Decide).into();
        let tick = myself.send_interval(core.trading.price_every.get(), || TraderMsg::Tick).into();
        Ok(TraderState {
            core,
            prices: BTreeMap::new(),
            queue: VecDeque::new(),
            round: None,
            pricing: None,
            _timers: [decide, tick],
        })
    }

    async fn post_start(&self, myself: ActorRef<TraderMsg>, state: &mut TraderState) -> Result<(), ActorProcessingErr> {
        tracing::info!(
            persona = %state.core.persona.name,
            mode = state.core.trading.mode.as_str(),
            wallet = ?state.core.live.as_ref().map(|live| live.wallet.pubkey().to_string()),
            "trader started"
        );
        // Prices first, then whatever a previous run left signed or sent.
        let _ = myself.send_message(TraderMsg::Tick);
        if state.core.live.is_some() {
            enqueue(state, Job::Reconcile);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TraderMsg>,
        message: TraderMsg,
        state: &mut TraderState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TraderMsg::Decide => enqueue(state, Job::Decide),
            TraderMsg::Execute { trade_id } => enqueue(state, Job::Execute(trade_id)),
            TraderMsg::Tick => {
                if state.pricing.as_ref().is_none_or(AbortOnDrop::is_finished) {
                    let (core, me) = (state.core.clone(), myself.clone());
                    state.pricing = Some(
                        tokio::spawn(async move {
                            let prices = fetch_prices(&core).await;
                            let _ = me.send_message(TraderMsg::Prices(prices));
                        })
                        .into(),
                    );
                }
                expire_approvals(&state.core).await;
                if state.core.live.is_some() {
                    enqueue(state, Job::Reconcile);
                }
            }
            TraderMsg::Prices(prices) => {
                state.prices.extend(prices);
                update_pnl(&state.core, &state.prices).await;
            }
            TraderMsg::RoundDone => state.round = None,
            TraderMsg::Status { reply } => {
                let _ = reply.send(status(state).await);
            }
        }
        start_next(&myself, state);
        Ok(())
    }
}

fn enqueue(state: &mut TraderState, job: Job) {
    if state.queue.contains(&job) {
        return;
    }
    if state.queue.len() >= MAX_QUEUED {
        tracing::warn!(persona = %state.core.persona.name, ?job, "trader queue full; job dropped");
        return;
    }
    state.queue.push_back(job);
}

/// Starts the next queued job unless a round is in flight.
fn start_next(myself: &ActorRef<TraderMsg>, state: &mut TraderState) {
    if state.round.is_some() {
        return;
    }
    let Some(job) = state.queue.pop_front() else { return };
    let (core, prices, me) = (state.core.clone(), state.prices.clone(), myself.clone());
    state.round = Some(
        tokio::spawn(async move {
            match job {
                Job::Decide => decide(&core, &prices).await,
                Job::Execute(trade_id) => execute_approved(&core, &prices, trade_id).await,
                Job::Reconcile => reconcile(&core).await,
            }
            let _ = me.send_message(TraderMsg::RoundDone);
        })
        .into(),
    );
}

impl Core {
    fn name(&self) -> &str {
        &self.persona.name
    }

    fn mode(&self) -> &'static str {
        self.trading.mode.as_str()
    }

    /// The limits right now: the configured ones with the kill switch as it stands.
    fn limits_now(&self) -> RiskLimits {
        RiskLimits { kill_switch: self.control.killed(), ..self.limits.clone() }
    }

    async fn audit(&self, trade_id: Option<i64>, event: &str, detail: serde_json::Value) {
        let entry = NewAudit { persona: self.name(), trade_id, event, detail };
        if let Err(err) = self.db.insert_audit(&entry).await {
            tracing::error!(persona = %self.name(), event, error = %err, "cannot write the trade audit trail");
        }
    }

    fn count_trade(&self, outcome: &'static str) {
        metrics::counter!(m::TRADER_TRADES, "persona" => self.name().to_owned(), "mode" => self.mode(), "outcome" => outcome)
            .increment(1);
    }

    async fn refuse(&self, trade_id: Option<i64>, limit: &'static str, detail: String, extra: serde_json::Value) {
        tracing::info!(persona = %self.name(), limit, detail = %detail, "trade refused");
        metrics::counter!(m::TRADER_REFUSALS, "persona" => self.name().to_owned(), "limit" => limit).increment(1);
        self.audit(trade_id, "refusal", json!({"limit": limit, "detail": detail, "trade": extra})).await;
    }

    /// Balances by mint: the paper wallet, or the live wallet on chain.
    async fn balances(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let Some(live) = &self.live else { return Ok(self.db.paper_balances(self.name()).await?) };
        let owner = live.wallet.pubkey();
        let mut balances = BTreeMap::new();
        for token in self.trading.tokens.values() {
            let amount = if token.mint == SOL_MINT {
                live.rpc.balance(&owner).await?
            } else {
                live.rpc.token_balance(&owner, &token.mint).await?
            };
            balances.insert(token.mint.clone(), amount);
        }
        Ok(balances)
    }
}

/// USD micro-units of `amount` smallest units of `mint`, from the latest prices.
fn value_of(trading: &TradingConfig, prices: &BTreeMap<String, u64>, mint: &str, amount: u64) -> Option<u64> {
    let (_, token) = trading.token_by_mint(mint)?;
    let price = if mint == USDC_MINT { crate::trader::risk::USD } else { *prices.get(mint)? };
    let value = u128::from(amount) * u128::from(price) / 10u128.pow(u32::from(token.decimals));
    u64::try_from(value).ok()
}

/// Value held outside SOL; a holding without a price counts as unlimited (nothing opens more
/// exposure until it is priced).
fn exposure(trading: &TradingConfig, prices: &BTreeMap<String, u64>, balances: &BTreeMap<String, u64>) -> u64 {
    balances
        .iter()
        .filter(|(mint, amount)| mint.as_str() != SOL_MINT && **amount > 0)
        .map(|(mint, amount)| value_of(trading, prices, mint, *amount).unwrap_or(u64::MAX))
        .fold(0u64, u64::saturating_add)
}

/// Marked-to-market value of a wallet, when every holding is priced.
fn wallet_value(
    trading: &TradingConfig,
    prices: &BTreeMap<String, u64>,
    balances: &BTreeMap<String, u64>,
) -> Option<u64> {
    balances
        .iter()
        .filter(|(_, amount)| **amount > 0)
        .map(|(mint, amount)| value_of(trading, prices, mint, *amount))
        .try_fold(0u64, |total, value| Some(total.saturating_add(value?)))
}

/// One decision round: ask the model, parse, and attempt the trade it asks for.
async fn decide(core: &Core, prices: &BTreeMap<String, u64>) {
    let persona = core.name().to_owned();
    let count = |outcome: &'static str| {
        metrics::counter!(m::TRADER_DECISIONS, "persona" => persona.clone(), "outcome" => outcome).increment(1);
    };
    if core.control.killed() {
        count("killed");
        core.refuse(None, "kill_switch", "kill switch is on: no decision asked".to_owned(), json!(null)).await;
        return;
    }
    let balances = match core.balances().await {
        Ok(balances) => balances,
        Err(err) => {
            tracing::warn!(persona = %persona, error = %err, "cannot read the wallet; no decision this round");
            count("wallet_error");
            core.audit(None, "decision_failed", json!({"stage": "wallet", "error": err.to_string()})).await;
            return;
        }
    };
    let market = market_view(core, prices, &balances);
    let request = CompletionRequest {
        persona: core.persona.clone(),
        task: Task::Trade,
        messages: prompt::messages(&core.persona, &core.strategy, &market),
        reply_to_author: None,
        seed: now_ms() as u64,
    };
    let completion = match core.directory.llm() {
        None => Err("the llm pool is restarting".to_owned()),
        Some(llm) => match ractor::call_t!(llm, |reply| LlmMsg::Complete { request, reply }, DECISION_TIMEOUT_MS) {
            Ok(Ok(completion)) => Ok(completion),
            Ok(Err(err)) => Err(err.to_string()),
            Err(err) => Err(format!("llm pool did not answer: {err}")),
        },
    };
    let completion = match completion {
        Ok(completion) => completion,
        Err(error) => {
            count("llm_error");
            core.audit(None, "decision_failed", json!({"stage": "llm", "error": error})).await;
            return;
        }
    };
    let decision = match parse_decision(&completion.text) {
        Ok(decision) => decision,
        Err(err) => {
            count("malformed");
            tracing::warn!(persona = %persona, error = %err, "malformed trading decision rejected");
            let detail = json!({"error": err.as_str(), "detail": err.to_string(), "provider": completion.provider, "model": completion.model});
            core.audit(None, "malformed", detail).await;
            return;
        }
    };
    let detail = json!({"decision": decision, "provider": completion.provider, "model": completion.model});
    core.audit(None, "decision", detail).await;
    if !decision.is_trade() {
        count("hold");
        return;
    }
    count("trade");
    let intent = Intent {
        input_mint: decision.input_mint,
        output_mint: decision.output_mint,
        amount: decision.amount,
        reason: decision.reason,
    };
    attempt(core, prices, intent, None).await;
}

fn market_view(core: &Core, prices: &BTreeMap<String, u64>, balances: &BTreeMap<String, u64>) -> MarketView {
    let tokens = core
        .trading
        .tokens
        .iter()
        .map(|(symbol, token)| TokenView {
            symbol: symbol.clone(),
            mint: token.mint.clone(),
            decimals: token.decimals,
            usd_price: value_of(&core.trading, prices, &token.mint, 10u64.pow(u32::from(token.decimals)))
                .map(|micro| micro as f64 / 1e6),
            balance: balances.get(&token.mint).copied().unwrap_or(0),
            tradeable: core.limits.allowlist.contains(&token.mint),
        })
        .collect();
    MarketView { mode: core.mode().to_owned(), tokens }
}

/// A swap someone asked for: the model's decision, or an approved trade.
struct Intent {
    input_mint: String,
    output_mint: String,
    amount: u64,
    reason: String,
}

/// Quotes, values and checks a swap, then holds it for approval, or executes it. `approved` is the
/// trade a human approved (it is executed only if every hard limit still holds now).
async fn attempt(core: &Core, prices: &BTreeMap<String, u64>, intent: Intent, approved: Option<&TradeRow>) {
    let approved_id = approved.map(|row| row.id);
    let summary = json!({"input_mint": intent.input_mint, "output_mint": intent.output_mint, "amount": intent.amount});
    // What needs no quote is refused without one: an off-list token is never even quoted.
    let limits = core.limits_now();
    let unquoted = ProposedTrade {
        input_mint: intent.input_mint.clone(),
        output_mint: intent.output_mint.clone(),
        input_amount: intent.amount,
        value: 0,
        slippage_bps: 0,
    };
    if let Verdict::Refused(refusal @ (risk::Refusal::KillSwitch | risk::Refusal::NotAllowlisted { .. })) =
        risk::check(&limits, &RiskState::default(), &unquoted, now_ms())
    {
        fail_approved(core, approved_id, &refusal.to_string()).await;
        core.refuse(approved_id, refusal.as_str(), refusal.to_string(), summary).await;
        return;
    }
    let slippage_bps = core.trading.slippage_bps;
    let quote = match core.jupiter.quote(&intent.input_mint, &intent.output_mint, intent.amount, slippage_bps).await {
        Ok(quote) => quote,
        Err(err) => {
            fail_approved(core, approved_id, &format!("quote failed: {err}")).await;
            core.audit(approved_id, "quote_failed", json!({"error": err.to_string(), "trade": summary})).await;
            return;
        }
    };
    core.audit(approved_id, "quote", json!({"quote": quote.raw})).await;
    let value = value_of(&core.trading, prices, &quote.input_mint, quote.in_amount)
        .or_else(|| value_of(&core.trading, prices, &quote.output_mint, quote.out_amount));
    let Some(value) = value else {
        fail_approved(core, approved_id, "no price yet").await;
        core.refuse(approved_id, "unpriced", "neither side of the trade has a price yet".to_owned(), summary).await;
        return;
    };
    let balances = match core.balances().await {
        Ok(balances) => balances,
        Err(err) => {
            fail_approved(core, approved_id, &format!("cannot read the wallet: {err}")).await;
            core.audit(approved_id, "decision_failed", json!({"stage": "wallet", "error": err.to_string()})).await;
            return;
        }
    };
    let held = balances.get(&quote.input_mint).copied().unwrap_or(0);
    if held < quote.in_amount {
        let detail = format!("selling {} but the wallet holds {held}", quote.in_amount);
        fail_approved(core, approved_id, &detail).await;
        core.refuse(approved_id, "balance", detail, summary).await;
        return;
    }
    let now = now_ms();
    let state = match risk_state(core, prices, &balances, now).await {
        Ok(state) => state,
        Err(err) => {
            fail_approved(core, approved_id, &format!("cannot read the trade history: {err}")).await;
            core.audit(approved_id, "decision_failed", json!({"stage": "history", "error": err.to_string()})).await;
            return;
        }
    };
    let trade = ProposedTrade {
        input_mint: quote.input_mint.clone(),
        output_mint: quote.output_mint.clone(),
        input_amount: quote.in_amount,
        value,
        slippage_bps,
    };
    let verdict = risk::check(&core.limits_now(), &state, &trade, now);
    let detail = json!({"trade": summary, "value": value, "verdict": verdict.as_str()});
    core.audit(approved_id, "risk_check", detail).await;
    match (verdict, approved) {
        (Verdict::Refused(refusal), _) => {
            fail_approved(core, approved_id, &refusal.to_string()).await;
            core.refuse(approved_id, refusal.as_str(), refusal.to_string(), json!({"trade": summary, "value": value}))
                .await;
        }
        (Verdict::NeedsApproval { reason }, None) => hold_for_approval(core, &intent, &quote, value, &reason).await,
        (Verdict::Allowed | Verdict::NeedsApproval { .. }, approved) => {
            let id = match approved {
                Some(row) => {
                    match core.db.transition_trade(row.id, &[TradeStatus::Approved], TradeStatus::Executing, None).await
                    {
                        Ok(true) => row.id,
                        Ok(false) => return,
                        Err(err) => {
                            tracing::error!(persona = %core.name(), error = %err, "cannot start the approved trade");
                            return;
                        }
                    }
                }
                None => {
                    let new = new_trade(core, &intent, &quote, value, TradeStatus::Executing, None);
                    match core.db.insert_trade(&new).await {
                        Ok(id) => id,
                        Err(err) => {
                            tracing::error!(persona = %core.name(), error = %err, "cannot record the trade; not executing it");
                            return;
                        }
                    }
                }
            };
            match &core.live {
                None => fill_on_paper(core, prices, id, &intent, &quote, value).await,
                Some(live) => execute_live(core, live, id, &intent, &quote, value).await,
            }
        }
    }
}

fn new_trade(
    core: &Core,
    intent: &Intent,
    quote: &Quote,
    value: u64,
    status: TradeStatus,
    approval_expires_at: Option<i64>,
) -> NewTrade {
    NewTrade {
        persona: core.name().to_owned(),
        mode: core.mode().to_owned(),
        status,
        input_mint: quote.input_mint.clone(),
        output_mint: quote.output_mint.clone(),
        in_amount: quote.in_amount,
        out_amount: quote.out_amount,
        value,
        slippage_bps: quote.slippage_bps,
        reason: intent.reason.clone(),
        quote: quote.raw.to_string(),
        approval_expires_at,
    }
}

/// Marks an approved trade failed when it cannot go ahead after all.
async fn fail_approved(core: &Core, approved_id: Option<i64>, error: &str) {
    let Some(id) = approved_id else { return };
    match core.db.transition_trade(id, &[TradeStatus::Approved], TradeStatus::Failed, Some(error)).await {
        Ok(true) => core.count_trade("failed"),
        Ok(false) => {}
        Err(err) => tracing::error!(persona = %core.name(), trade = id, error = %err, "cannot mark the trade failed"),
    }
}

async fn hold_for_approval(core: &Core, intent: &Intent, quote: &Quote, value: u64, reason: &str) {
    let expires = now_ms().saturating_add(core.trading.approval_ttl.get().as_millis() as i64);
    let new = new_trade(core, intent, quote, value, TradeStatus::AwaitingApproval, Some(expires));
    match core.db.insert_trade(&new).await {
        Ok(id) => {
            core.count_trade("awaiting_approval");
            tracing::info!(persona = %core.name(), trade = id, value, "trade waits for a human's approval");
            core.audit(
                Some(id),
                "approval_requested",
                json!({"reason": reason, "value": value, "expires_at": expires}),
            )
            .await;
        }
        Err(err) => tracing::error!(persona = %core.name(), error = %err, "cannot record the trade awaiting approval"),
    }
}

/// The limits' view of the persona's trading: today's volume and the last trade from the database,
/// balances and exposure from the wallet at current prices.
async fn risk_state(
    core: &Core,
    prices: &BTreeMap<String, u64>,
    balances: &BTreeMap<String, u64>,
    now: i64,
) -> anyhow::Result<RiskState> {
    let day = utc_day(now);
    let (traded_today, _) = core.db.executed_value_since(core.name(), day * DAY_MS).await?;
    let (_, last_trade_at) = core.db.executed_value_since(core.name(), 0).await?;
    Ok(RiskState {
        traded_today,
        day,
        exposure: exposure(&core.trading, prices, balances),
        last_trade_at,
        sol_balance_lamports: balances.get(SOL_MINT).copied().unwrap_or(0),
    })
}

async fn fill_on_paper(
    core: &Core,
    prices: &BTreeMap<String, u64>,
    id: i64,
    intent: &Intent,
    quote: &Quote,
    value: u64,
) {
    if core.control.killed() {
        let _ = core.db.transition_trade(id, &[TradeStatus::Executing], TradeStatus::Failed, Some("kill switch")).await;
        core.count_trade("failed");
        core.refuse(Some(id), "kill_switch", "kill switch went on before the fill".to_owned(), json!(null)).await;
        return;
    }
    let fill = core
        .db
        .paper_fill(id, core.name(), &quote.input_mint, quote.in_amount, &quote.output_mint, quote.out_amount)
        .await;
    match fill {
        Ok(PaperFill::Filled { balances }) => {
            core.count_trade("filled");
            metrics::counter!(m::TRADER_VOLUME, "persona" => core.name().to_owned(), "mode" => core.mode())
                .increment(value);
            let route: Vec<&str> = quote.route.iter().map(|step| step.label.as_str()).collect();
            let detail = json!({
                "input_mint": quote.input_mint, "in_amount": quote.in_amount,
                "output_mint": quote.output_mint, "out_amount": quote.out_amount,
                "value": value, "route": route, "balances": balances,
            });
            core.audit(Some(id), "fill", detail).await;
            remember_row(core, intent, quote.out_amount, "paper trade").await;
            update_pnl(core, prices).await;
        }
        Ok(PaperFill::Insufficient { balance }) => {
            let error = format!("the paper wallet holds {balance}, the trade sells {}", quote.in_amount);
            let _ = core.db.transition_trade(id, &[TradeStatus::Executing], TradeStatus::Failed, Some(&error)).await;
            core.count_trade("failed");
            core.refuse(Some(id), "balance", error, json!(null)).await;
        }
        Ok(PaperFill::NotExecuting) => {
            tracing::warn!(persona = %core.name(), trade = id, "trade is no longer executing")
        }
        Err(err) => {
            tracing::error!(persona = %core.name(), trade = id, error = %err, "paper fill failed");
            let _ = core
                .db
                .transition_trade(id, &[TradeStatus::Executing], TradeStatus::Failed, Some(&err.to_string()))
                .await;
            core.count_trade("failed");
            core.audit(Some(id), "failure", json!({"stage": "fill", "error": err.to_string()})).await;
        }
    }
}

async fn execute_live(core: &Core, live: &Live, id: i64, intent: &Intent, quote: &Quote, value: u64) {
    let fail = |stage: &'static str, from: TradeStatus, error: String| async move {
        let _ = core.db.transition_trade(id, &[from], TradeStatus::Failed, Some(&error)).await;
        core.count_trade("failed");
        core.audit(Some(id), "failure", json!({"stage": stage, "error": error})).await;
    };
    let swap = match core.jupiter.swap(quote, &live.wallet.pubkey()).await {
        Ok(swap) => swap,
        Err(err) => return fail("swap", TradeStatus::Executing, err.to_string()).await,
    };
    if let Some(error) = swap.simulation_error {
        // Jupiter already expects it to fail on chain: it would cost a fee and swap nothing.
        return fail("swap", TradeStatus::Executing, format!("Jupiter's simulation fails: {error}")).await;
    }
    let mut transaction = swap.transaction;
    if let Err(err) = transaction.sign(&live.wallet).and_then(|()| transaction.verify()) {
        return fail("sign", TradeStatus::Executing, err.to_string()).await;
    }
    let signature = transaction.id();
    // Stored before it is sent: whatever happens next, this signature is what gets polled.
    match core.db.record_signed(id, &signature, &transaction.to_base64(), swap.last_valid_block_height).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(err) => return fail("record", TradeStatus::Executing, err.to_string()).await,
    }
    core.audit(
        Some(id),
        "signed",
        json!({"signature": signature, "last_valid_block_height": swap.last_valid_block_height}),
    )
    .await;
    if core.control.killed() {
        core.refuse(Some(id), "kill_switch", "kill switch went on before sending".to_owned(), json!(null)).await;
        return fail("send", TradeStatus::Signed, "kill switch: not sent".to_owned()).await;
    }
    match live.rpc.send_transaction(&transaction).await {
        Ok(_) => {
            let _ = core.db.transition_trade(id, &[TradeStatus::Signed], TradeStatus::Sent, None).await;
            core.audit(Some(id), "sent", json!({"signature": signature})).await;
        }
        Err(err) if err.is_definite_rejection() => {
            return fail("send", TradeStatus::Signed, err.to_string()).await;
        }
        Err(err) => {
            // It may have landed: never send it again, only look for its signature.
            tracing::warn!(persona = %core.name(), trade = id, error = %err, "send answer lost; polling the signature");
            let _ = core.db.transition_trade(id, &[TradeStatus::Signed], TradeStatus::Sent, None).await;
            core.audit(Some(id), "send_unconfirmed", json!({"signature": signature, "error": err.to_string()})).await;
        }
    }
    let Ok(Some(row)) = core.db.trade(id).await else { return };
    if confirm(core, live, &row).await == Some(TradeStatus::Confirmed) {
        metrics::counter!(m::TRADER_VOLUME, "persona" => core.name().to_owned(), "mode" => core.mode())
            .increment(value);
        remember_row(core, intent, quote.out_amount, "trade").await;
    }
}

/// Polls a sent trade's signature until it is confirmed, failed or expired, or `confirm_timeout`
/// passes (it stays `sent` and a later round looks again). Returns the final status reached.
async fn confirm(core: &Core, live: &Live, row: &TradeRow) -> Option<TradeStatus> {
    let signature = row.signature.clone()?;
    let deadline = Instant::now() + core.trading.confirm_timeout.get();
    loop {
        match live.rpc.signature_statuses(std::slice::from_ref(&signature)).await {
            Ok(statuses) => match statuses.into_iter().next().flatten() {
                Some(status) if status.err.is_some() => {
                    let error = status.err.as_ref().map(ToString::to_string).unwrap_or_default();
                    return finish(core, row, TradeStatus::Failed, Some(&error), json!({"status": status})).await;
                }
                Some(status) if matches!(status.confirmation_status.as_deref(), Some("confirmed" | "finalized")) => {
                    return finish(core, row, TradeStatus::Confirmed, None, json!({"status": status})).await;
                }
                _ => {
                    // Not (yet) seen: once the chain is past its last valid block, it never will be.
                    if let (Some(last_valid), Ok(height)) = (row.last_valid_block_height, live.rpc.block_height().await)
                        && height > last_valid
                    {
                        let detail = json!({"block_height": height, "last_valid_block_height": last_valid});
                        return finish(
                            core,
                            row,
                            TradeStatus::Expired,
                            Some("blockhash expired; never landed"),
                            detail,
                        )
                        .await;
                    }
                }
            },
            Err(err) => tracing::debug!(persona = %core.name(), trade = row.id, error = %err, "status poll failed"),
        }
        if Instant::now() >= deadline {
            tracing::info!(persona = %core.name(), trade = row.id, "not confirmed yet; a later round looks again");
            return None;
        }
        tokio::time::sleep(core.trading.confirm_poll.get()).await;
    }
}

async fn finish(
    core: &Core,
    row: &TradeRow,
    to: TradeStatus,
    error: Option<&str>,
    detail: serde_json::Value,
) -> Option<TradeStatus> {
    match core.db.transition_trade(row.id, &[TradeStatus::Sent], to, error).await {
        Ok(true) => {
            core.count_trade(to.as_str());
            core.audit(Some(row.id), "confirmation", json!({"outcome": to.as_str(), "detail": detail})).await;
            Some(to)
        }
        Ok(false) => None,
        Err(err) => {
            tracing::error!(persona = %core.name(), trade = row.id, error = %err, "cannot record the confirmation");
            None
        }
    }
}

/// Looks again at live trades left signed or sent (by a timeout or a restart). None is resent.
async fn reconcile(core: &Core) {
    let Some(live) = &core.live else { return };
    let rows = match core.db.trades(Some(core.name()), &[TradeStatus::Signed, TradeStatus::Sent], 100).await {
        Ok(rows) => rows,
        Err(err) => return tracing::warn!(persona = %core.name(), error = %err, "cannot list trades to reconcile"),
    };
    for row in rows {
        if row.status == TradeStatus::Signed {
            // Signed before a crash: it may have been sent. Treat it as sent; never send it again.
            let _ = core.db.transition_trade(row.id, &[TradeStatus::Signed], TradeStatus::Sent, None).await;
            core.audit(
                Some(row.id),
                "send_unconfirmed",
                json!({"signature": row.signature, "error": "found signed at start"}),
            )
            .await;
        }
        let Ok(Some(row)) = core.db.trade(row.id).await else { continue };
        if confirm(core, live, &row).await == Some(TradeStatus::Confirmed) {
            metrics::counter!(m::TRADER_VOLUME, "persona" => core.name().to_owned(), "mode" => core.mode())
                .increment(row.value);
            let intent = Intent {
                input_mint: row.input_mint.clone(),
                output_mint: row.output_mint.clone(),
                amount: row.in_amount,
                reason: row.reason.clone(),
            };
            remember_row(core, &intent, row.out_amount, "trade").await;
        }
    }
}

/// Executes a trade a human approved, re-quoted and re-checked against every hard limit now.
async fn execute_approved(core: &Core, prices: &BTreeMap<String, u64>, trade_id: i64) {
    let row = match core.db.trade(trade_id).await {
        Ok(Some(row)) if row.persona == core.name() && row.status == TradeStatus::Approved => row,
        Ok(_) => return,
        Err(err) => {
            return tracing::warn!(persona = %core.name(), trade = trade_id, error = %err, "cannot read the trade");
        }
    };
    let intent = Intent {
        input_mint: row.input_mint.clone(),
        output_mint: row.output_mint.clone(),
        amount: row.in_amount,
        reason: row.reason.clone(),
    };
    attempt(core, prices, intent, Some(&row)).await;
}

async fn expire_approvals(core: &Core) {
    match core.db.expire_approvals(now_ms()).await {
        Ok(rows) => {
            for row in rows {
                metrics::counter!(m::TRADER_TRADES, "persona" => row.persona.clone(), "mode" => core.mode(), "outcome" => "expired")
                    .increment(1);
                let entry = NewAudit {
                    persona: &row.persona,
                    trade_id: Some(row.id),
                    event: "expired",
                    detail: json!({"approval_expires_at": row.approval_expires_at}),
                };
                let _ = core.db.insert_audit(&entry).await;
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot expire old approvals"),
    }
}

/// Prices every configured token in USDC by quoting one whole token (USDC itself is 1 USD).
async fn fetch_prices(core: &Core) -> BTreeMap<String, u64> {
    let mut prices = BTreeMap::new();
    for (symbol, token) in &core.trading.tokens {
        if token.mint == USDC_MINT {
            continue;
        }
        let one = 10u64.pow(u32::from(token.decimals));
        match core.jupiter.quote(&token.mint, USDC_MINT, one, core.trading.slippage_bps).await {
            Ok(quote) => {
                prices.insert(token.mint.clone(), quote.out_amount);
            }
            Err(err) => tracing::debug!(token = %symbol, error = %err, "cannot price token"),
        }
    }
    prices
}

/// Paper P&L: the wallet's value now minus its value at the first valuation.
async fn update_pnl(core: &Core, prices: &BTreeMap<String, u64>) {
    if core.live.is_some() {
        return;
    }
    let Ok(balances) = core.db.paper_balances(core.name()).await else { return };
    let Some(value) = wallet_value(&core.trading, prices, &balances) else { return };
    let _ = core.db.set_paper_starting_value(core.name(), value).await;
    if let Ok(Some(start)) = core.db.paper_starting_value(core.name()).await {
        let pnl = (value as f64 - start as f64) / 1e6;
        metrics::gauge!(m::TRADER_PAPER_PNL, "persona" => core.name().to_owned()).set(pnl);
    }
}

async fn status(state: &TraderState) -> TraderStatus {
    let core = &state.core;
    let balances = core.balances().await.unwrap_or_default();
    let symbol = |mint: &str| core.trading.token_by_mint(mint).map(|(symbol, _)| symbol.to_owned());
    let value = wallet_value(&core.trading, &state.prices, &balances);
    let pnl = match (core.live.is_none(), value) {
        (true, Some(value)) => core
            .db
            .paper_starting_value(core.name())
            .await
            .ok()
            .flatten()
            .map(|start| (value as f64 - start as f64) / 1e6),
        _ => None,
    };
    TraderStatus {
        persona: core.name().to_owned(),
        mode: core.mode(),
        wallet: core.live.as_ref().map(|live| live.wallet.pubkey().to_string()),
        busy: state.round.is_some(),
        queued: state.queue.len(),
        balances: balances.iter().filter_map(|(mint, amount)| Some((symbol(mint)?, *amount))).collect(),
        prices: state.prices.iter().filter_map(|(mint, price)| Some((symbol(mint)?, *price as f64 / 1e6))).collect(),
        value_usd: value.map(|value| value as f64 / 1e6),
        pnl_usd: pnl,
    }
}

/// Human-readable amount of `units` smallest units of `mint`.
fn amount_text(trading: &TradingConfig, mint: &str, units: u64) -> String {
    match trading.token_by_mint(mint) {
        Some((symbol, token)) => {
            let whole = units as f64 / 10f64.powi(i32::from(token.decimals));
            format!("{} {symbol}", trim_float(whole))
        }
        None => format!("{units} units of {mint}"),
    }
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A trade becomes a memory of the persona, so it can talk about it.
async fn remember_row(core: &Core, intent: &Intent, out_amount: u64, what: &str) {
    let Some(memory) = core.directory.memory() else { return };
    let text = format!(
        "I swapped {} for {} ({what}). Why: {}",
        amount_text(&core.trading, &intent.input_mint, intent.amount),
        amount_text(&core.trading, &intent.output_mint, out_amount),
        intent.reason
    );
    let _ = memory.send_message(MemoryMsg::Remember(NewMemory {
        persona: core.name().to_owned(),
        platform: "solana".to_owned(),
        kind: MemoryKind::Trade,
        conversation: None,
        author: core.name().to_owned(),
        text,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trading() -> TradingConfig {
        let mut trading = TradingConfig::default();
        trading.tokens.insert(
            "BONK".into(),
            crate::config::TokenConfig { mint: "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263".into(), decimals: 5 },
        );
        trading
    }

    #[test]
    fn values_and_exposure_come_from_prices_and_decimals() {
        let trading = trading();
        let prices: BTreeMap<String, u64> = [(SOL_MINT.to_owned(), 150_000_000)].into_iter().collect();
        // 0.5 SOL at $150 = $75.
        assert_eq!(value_of(&trading, &prices, SOL_MINT, 500_000_000), Some(75_000_000));
        // USDC is worth its face value without a quote.
        assert_eq!(value_of(&trading, &prices, USDC_MINT, 2_500_000), Some(2_500_000));
        // An unknown token and an unpriced one have no value.
        assert_eq!(value_of(&trading, &prices, "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263", 5), None);
        let balances: BTreeMap<String, u64> =
            [(SOL_MINT.to_owned(), 10_000_000_000), (USDC_MINT.to_owned(), 3_000_000)].into_iter().collect();
        assert_eq!(exposure(&trading, &prices, &balances), 3_000_000, "SOL is not exposure");
        assert_eq!(wallet_value(&trading, &prices, &balances), Some(1_503_000_000));
        let mut unpriced = balances.clone();
        unpriced.insert("DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263".into(), 1);
        assert_eq!(exposure(&trading, &prices, &unpriced), u64::MAX, "an unpriced holding blocks new exposure");
        assert_eq!(wallet_value(&trading, &prices, &unpriced), None);
    }

    #[test]
    fn amounts_read_like_people_write_them() {
        let trading = trading();
        assert_eq!(amount_text(&trading, SOL_MINT, 1_500_000_000), "1.5 SOL");
        assert_eq!(amount_text(&trading, USDC_MINT, 75_120_000), "75.12 USDC");
    }
}
