//! Hard risk limits, checked in code before every trade.
//!
//! [`check`] is a pure function of the operator's [`RiskLimits`], the Trader's [`RiskState`], the
//! [`ProposedTrade`] and the clock. Nothing the model writes reaches it except through a
//! [`ProposedTrade`] that the Trader builds from a parsed decision and a quote, and no limit is read
//! from a decision: [`RiskLimits`] has no `Deserialize` and is built from configuration only.
//!
//! **Units.** Every amount limit (`max_per_trade`, `max_per_day`, `max_exposure`, `approval_above`)
//! and every value in [`RiskState`] and [`ProposedTrade::value`] is in **USD micro-units**
//! (1 USD = 1 000 000, the scale of USDC), so limits mean the same across tokens. The Trader
//! values a trade from its quote before calling [`check`]. The SOL reserve is in lamports.
//!
//! **Order.** The first limit broken is reported: kill switch, allowlist (input mint, then output
//! mint), per-trade value, daily value, exposure, slippage, SOL reserve, cool-down. Only a trade
//! that passes them all can come back as [`Verdict::NeedsApproval`]: a human's approval lifts the
//! approval threshold and nothing else, so the Trader re-runs [`check`] at execution time and
//! accepts `NeedsApproval` only for the trade that was approved.
//!
//! **Exposure** is the value held outside SOL, derived from the mints and never from the model's
//! `buy`/`sell` label: a trade out of SOL opens exposure (checked, and added by
//! [`RiskState::record`]), a trade into SOL closes it (never refused for exposure, subtracted), and a
//! token-to-token swap moves it (unchanged). Stablecoins count as exposure, which is conservative.
//! The Trader may overwrite [`RiskState::exposure`] with a marked-to-market figure.

use std::collections::BTreeSet;
use std::time::Duration;

/// The mint Jupiter uses for SOL (wrapped SOL); amounts of it are lamports.
pub const SOL_MINT: &str = "So11111111111111111111111111111111111111112";
/// Milliseconds in a UTC day.
pub const DAY_MS: i64 = 86_400_000;
/// 1 USD in the accounting unit (USD micro-units).
pub const USD: u64 = 1_000_000;
/// 1 SOL in lamports.
pub const LAMPORTS_PER_SOL: u64 = 1_000_000_000;

/// The UTC day number (days since 1970-01-01) of an epoch-milliseconds instant.
pub fn utc_day(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS)
}

/// The operator's limits, from configuration (and the admin route, for the kill switch). Amounts are
/// in USD micro-units except where named otherwise.
///
/// [`RiskLimits::default`] trades nothing: the kill switch is on, the allowlist is empty and every
/// amount limit is zero, so an operator must set each limit explicitly before any trade passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskLimits {
    /// Mints that may be traded, on either side. SOL must be listed ([`SOL_MINT`]) to trade it.
    pub allowlist: BTreeSet<String>,
    /// Largest value of one trade (inclusive).
    pub max_per_trade: u64,
    /// Largest value traded per UTC day, this trade included (inclusive).
    pub max_per_day: u64,
    /// Largest value held outside SOL after a trade that opens exposure (inclusive).
    pub max_exposure: u64,
    /// Largest slippage tolerance a trade may ask for, in basis points (inclusive).
    pub max_slippage_bps: u16,
    /// Lamports of SOL that a trade selling SOL must leave in the wallet.
    pub min_sol_reserve_lamports: u64,
    /// Least time between two trades, compared in whole milliseconds.
    pub cooldown: Duration,
    /// Trades worth more than this wait for a human's approval; `None` never asks.
    pub approval_above: Option<u64>,
    /// When on, nothing trades.
    pub kill_switch: bool,
}

impl Default for RiskLimits {
    /// Safe limits that refuse every trade: kill switch on, empty allowlist, zero amounts and
    /// slippage, a 0.05 SOL reserve, a one-minute cool-down and approval for every trade.
    fn default() -> Self {
        RiskLimits {
            allowlist: BTreeSet::new(),
            max_per_trade: 0,
            max_per_day: 0,
            max_exposure: 0,
            max_slippage_bps: 0,
            min_sol_reserve_lamports: LAMPORTS_PER_SOL / 20,
            cooldown: Duration::from_secs(60),
            approval_above: Some(0),
            kill_switch: true,
        }
    }
}

/// What the Trader has done so far, as far as the limits care. Values in USD micro-units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RiskState {
    /// Value traded on UTC day [`RiskState::day`].
    pub traded_today: u64,
    /// The UTC day ([`utc_day`]) that `traded_today` belongs to.
    pub day: i64,
    /// Value held outside SOL.
    pub exposure: u64,
    /// When the last trade executed, in epoch milliseconds.
    pub last_trade_at: Option<i64>,
    /// The wallet's SOL balance in lamports.
    pub sol_balance_lamports: u64,
}

impl RiskState {
    /// Value traded on UTC day `day`: zero once the stored day is over. A stored day later than
    /// `day` (the clock went back) still counts, to stay on the safe side.
    pub fn traded_on(&self, day: i64) -> u64 {
        if day > self.day { 0 } else { self.traded_today }
    }

    /// Applies an executed trade: daily volume (rolled over at UTC midnight), exposure, the time of
    /// the last trade, and the SOL sold. SOL received is not known here; the Trader refreshes
    /// [`RiskState::sol_balance_lamports`] from the wallet or the paper broker.
    pub fn record(&mut self, trade: &ProposedTrade, now_ms: i64) {
        let today = utc_day(now_ms);
        self.traded_today = self.traded_on(today).saturating_add(trade.value);
        self.day = self.day.max(today);
        self.exposure = match trade.exposure_effect() {
            ExposureEffect::Opens => self.exposure.saturating_add(trade.value),
            ExposureEffect::Closes => self.exposure.saturating_sub(trade.value),
            ExposureEffect::Moves => self.exposure,
        };
        self.last_trade_at = Some(now_ms);
        self.sol_balance_lamports = self.sol_balance_lamports.saturating_sub(trade.sol_sold_lamports());
    }
}

/// A swap the Trader is about to make, valued from its quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedTrade {
    /// Mint given up.
    pub input_mint: String,
    /// Mint received.
    pub output_mint: String,
    /// Amount given up, in the input token's smallest units (lamports for SOL).
    pub input_amount: u64,
    /// The trade's value in USD micro-units, from the quote.
    pub value: u64,
    /// The slippage tolerance the swap would be sent with, in basis points.
    pub slippage_bps: u16,
}

/// How a trade changes the value held outside SOL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExposureEffect {
    /// Out of SOL into a token: exposure grows by the trade's value.
    Opens,
    /// Out of a token into SOL: exposure shrinks by the trade's value.
    Closes,
    /// Token to token: exposure is unchanged.
    Moves,
}

impl ProposedTrade {
    /// How this trade changes exposure, from its mints alone.
    pub fn exposure_effect(&self) -> ExposureEffect {
        match (self.input_mint == SOL_MINT, self.output_mint == SOL_MINT) {
            (true, false) => ExposureEffect::Opens,
            (false, true) => ExposureEffect::Closes,
            _ => ExposureEffect::Moves,
        }
    }

    /// Lamports this trade takes out of the wallet's SOL: the input amount when it sells SOL.
    pub fn sol_sold_lamports(&self) -> u64 {
        if self.input_mint == SOL_MINT { self.input_amount } else { 0 }
    }
}

/// The limit a trade broke, with the figures for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The kill switch is on.
    #[error("kill switch is on")]
    KillSwitch,
    /// A mint of the trade is not on the allowlist.
    #[error("mint {mint} is not on the allowlist")]
    NotAllowlisted { mint: String },
    /// The trade is worth more than one trade may be.
    #[error("trade value {value} is over the per-trade limit {max}")]
    OverPerTrade { value: u64, max: u64 },
    /// The trade would take today's volume over the daily limit.
    #[error("trade value {value} on top of {traded_today} traded today is over the daily limit {max}")]
    OverDaily { traded_today: u64, value: u64, max: u64 },
    /// The trade would take exposure over its limit.
    #[error("trade value {value} on top of exposure {exposure} is over the exposure limit {max}")]
    OverExposure { exposure: u64, value: u64, max: u64 },
    /// The trade asks for more slippage than allowed.
    #[error("slippage {bps} bps is over the limit {max} bps")]
    Slippage { bps: u16, max: u16 },
    /// Selling this much SOL would leave less than the reserve (or more than the balance).
    #[error("selling {sold} of {balance} lamports would leave less than the {min_reserve} lamport reserve")]
    SolReserve { balance: u64, sold: u64, min_reserve: u64 },
    /// The last trade was too recent.
    #[error("cool-down: next trade allowed in {remaining:?}")]
    Cooldown { remaining: Duration },
}

impl Refusal {
    /// Every label [`Refusal::as_str`] can return, in check order, to pre-register metrics.
    pub const LABELS: [&'static str; 8] =
        ["kill_switch", "allowlist", "per_trade", "daily", "exposure", "slippage", "sol_reserve", "cooldown"];

    /// A stable label naming the limit, for metrics (`trades refused by limit`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::KillSwitch => "kill_switch",
            Refusal::NotAllowlisted { .. } => "allowlist",
            Refusal::OverPerTrade { .. } => "per_trade",
            Refusal::OverDaily { .. } => "daily",
            Refusal::OverExposure { .. } => "exposure",
            Refusal::Slippage { .. } => "slippage",
            Refusal::SolReserve { .. } => "sol_reserve",
            Refusal::Cooldown { .. } => "cooldown",
        }
    }
}

/// The outcome of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every limit holds: the trade may go ahead.
    Allowed,
    /// Every hard limit holds, but the trade is above the approval threshold: it waits for a human.
    NeedsApproval { reason: String },
    /// A limit is broken: the trade must not happen.
    Refused(Refusal),
}

impl Verdict {
    /// A stable label: `allowed`, `needs_approval`, or the refusal's [`Refusal::as_str`].
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::NeedsApproval { .. } => "needs_approval",
            Verdict::Refused(refusal) => refusal.as_str(),
        }
    }
}

/// Checks `trade` against every limit at `now_ms` (epoch milliseconds), in the order of the module
/// documentation, and reports the first one broken; a trade within all of them is
/// [`Verdict::Allowed`], or [`Verdict::NeedsApproval`] above the approval threshold.
pub fn check(limits: &RiskLimits, state: &RiskState, trade: &ProposedTrade, now_ms: i64) -> Verdict {
    if let Err(refusal) = hard_limits(limits, state, trade, now_ms) {
        return Verdict::Refused(refusal);
    }
    match limits.approval_above {
        Some(threshold) if trade.value > threshold => Verdict::NeedsApproval {
            reason: format!("trade value {} is above the approval threshold {threshold}", trade.value),
        },
        _ => Verdict::Allowed,
    }
}

fn hard_limits(limits: &RiskLimits, state: &RiskState, trade: &ProposedTrade, now_ms: i64) -> Result<(), Refusal> {
    if limits.kill_switch {
        return Err(Refusal::KillSwitch);
    }
    for mint in [&trade.input_mint, &trade.output_mint] {
        if !limits.allowlist.contains(mint) {
            return Err(Refusal::NotAllowlisted { mint: mint.clone() });
        }
    }
    let value = trade.value;
    if value > limits.max_per_trade {
        return Err(Refusal::OverPerTrade { value, max: limits.max_per_trade });
    }
    let traded_today = state.traded_on(utc_day(now_ms));
    if traded_today.checked_add(value).is_none_or(|total| total > limits.max_per_day) {
        return Err(Refusal::OverDaily { traded_today, value, max: limits.max_per_day });
    }
    if trade.exposure_effect() == ExposureEffect::Opens
        && state.exposure.checked_add(value).is_none_or(|total| total > limits.max_exposure)
    {
        return Err(Refusal::OverExposure { exposure: state.exposure, value, max: limits.max_exposure });
    }
    if trade.slippage_bps > limits.max_slippage_bps {
        return Err(Refusal::Slippage { bps: trade.slippage_bps, max: limits.max_slippage_bps });
    }
    let sold = trade.sol_sold_lamports();
    if sold > 0
        && state.sol_balance_lamports.checked_sub(sold).is_none_or(|left| left < limits.min_sol_reserve_lamports)
    {
        return Err(Refusal::SolReserve {
            balance: state.sol_balance_lamports,
            sold,
            min_reserve: limits.min_sol_reserve_lamports,
        });
    }
    if let Some(last) = state.last_trade_at {
        let cooldown_ms = i64::try_from(limits.cooldown.as_millis()).unwrap_or(i64::MAX);
        let ready_at = last.saturating_add(cooldown_ms);
        if now_ms < ready_at {
            let remaining_ms = u64::try_from(ready_at.saturating_sub(now_ms)).unwrap_or(u64::MAX);
            return Err(Refusal::Cooldown { remaining: Duration::from_millis(remaining_ms) });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const USDC: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
    const BONK: &str = "DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263";
    const SCAM: &str = "ScamToken1111111111111111111111111111111111";
    /// 2025-10-09T12:00:00Z, mid-day.
    const NOW: i64 = 1_760_011_200_000;

    fn limits() -> RiskLimits {
        RiskLimits {
            allowlist: [SOL_MINT, USDC, BONK].into_iter().map(str::to_owned).collect(),
            max_per_trade: 100 * USD,
            max_per_day: 250 * USD,
            max_exposure: 300 * USD,
            max_slippage_bps: 100,
            min_sol_reserve_lamports: LAMPORTS_PER_SOL / 10,
            cooldown: Duration::from_secs(60),
            approval_above: None,
            kill_switch: false,
        }
    }

    fn state() -> RiskState {
        RiskState {
            traded_today: 0,
            day: utc_day(NOW),
            exposure: 0,
            last_trade_at: Some(NOW - 3_600_000),
            sol_balance_lamports: 10 * LAMPORTS_PER_SOL,
        }
    }

    /// Sells `sol` lamports of SOL for USDC, worth `value`.
    fn sell_sol(sol: u64, value: u64) -> ProposedTrade {
        ProposedTrade {
            input_mint: SOL_MINT.to_owned(),
            output_mint: USDC.to_owned(),
            input_amount: sol,
            value,
            slippage_bps: 50,
        }
    }

    fn swap(input: &str, output: &str, value: u64) -> ProposedTrade {
        ProposedTrade {
            input_mint: input.to_owned(),
            output_mint: output.to_owned(),
            input_amount: 1_000,
            value,
            slippage_bps: 50,
        }
    }

    fn refused(verdict: Verdict) -> Refusal {
        match verdict {
            Verdict::Refused(refusal) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_trade_within_every_limit_is_allowed() {
        let verdict = check(&limits(), &state(), &sell_sol(LAMPORTS_PER_SOL, 50 * USD), NOW);
        assert_eq!(verdict, Verdict::Allowed);
        assert_eq!(verdict.as_str(), "allowed");
    }

    #[test]
    fn every_refusal_is_reachable_and_labelled() {
        let trade = sell_sol(LAMPORTS_PER_SOL, 50 * USD);
        let cases: Vec<(RiskLimits, RiskState, ProposedTrade)> = vec![
            (RiskLimits { kill_switch: true, ..limits() }, state(), trade.clone()),
            (limits(), state(), swap(USDC, SCAM, 50 * USD)),
            (limits(), state(), sell_sol(LAMPORTS_PER_SOL, 101 * USD)),
            (limits(), RiskState { traded_today: 220 * USD, ..state() }, trade.clone()),
            (limits(), RiskState { exposure: 280 * USD, ..state() }, trade.clone()),
            (limits(), state(), ProposedTrade { slippage_bps: 101, ..trade.clone() }),
            (limits(), RiskState { sol_balance_lamports: LAMPORTS_PER_SOL, ..state() }, trade.clone()),
            (limits(), RiskState { last_trade_at: Some(NOW - 1_000), ..state() }, trade.clone()),
        ];

        let labels: Vec<&str> = cases
            .iter()
            .map(|(limits, state, trade)| {
                let refusal = refused(check(limits, state, trade, NOW));
                assert!(!refusal.to_string().is_empty());
                assert_eq!(Verdict::Refused(refusal.clone()).as_str(), refusal.as_str());
                refusal.as_str()
            })
            .collect();
        assert_eq!(labels, Refusal::LABELS);
    }

    #[test]
    fn refusals_carry_their_figures() {
        let l = limits();
        assert_eq!(
            refused(check(&l, &state(), &swap(USDC, SCAM, USD), NOW)),
            Refusal::NotAllowlisted { mint: SCAM.to_owned() }
        );
        assert_eq!(
            refused(check(&l, &state(), &swap(SCAM, USDC, USD), NOW)),
            Refusal::NotAllowlisted { mint: SCAM.to_owned() }
        );
        assert_eq!(
            refused(check(&l, &state(), &sell_sol(1, 100 * USD + 1), NOW)),
            Refusal::OverPerTrade { value: 100 * USD + 1, max: 100 * USD }
        );
        assert_eq!(
            refused(check(&l, &RiskState { last_trade_at: Some(NOW - 59_000), ..state() }, &sell_sol(1, 1), NOW)),
            Refusal::Cooldown { remaining: Duration::from_secs(1) }
        );
        assert_eq!(
            refused(check(&l, &state(), &ProposedTrade { slippage_bps: 500, ..sell_sol(1, 1) }, NOW)),
            Refusal::Slippage { bps: 500, max: 100 }
        );
    }

    #[test]
    fn kill_switch_beats_everything() {
        let everything_wrong = ProposedTrade {
            input_mint: SCAM.to_owned(),
            output_mint: SCAM.to_owned(),
            input_amount: u64::MAX,
            value: u64::MAX,
            slippage_bps: u16::MAX,
        };
        let state = RiskState {
            traded_today: u64::MAX,
            day: utc_day(NOW),
            exposure: u64::MAX,
            last_trade_at: Some(NOW),
            sol_balance_lamports: 0,
        };
        let limits = RiskLimits { kill_switch: true, ..limits() };
        assert_eq!(refused(check(&limits, &state, &everything_wrong, NOW)), Refusal::KillSwitch);
        // And it stops an otherwise perfect trade.
        assert_eq!(refused(check(&limits, &self::state(), &sell_sol(1, 1), NOW)), Refusal::KillSwitch);
    }

    #[test]
    fn limits_are_checked_in_order() {
        // Each step breaks every later limit too, and fixes one more earlier limit.
        let l = limits();
        let bad_state = RiskState {
            traded_today: 250 * USD,
            day: utc_day(NOW),
            exposure: 300 * USD,
            last_trade_at: Some(NOW),
            sol_balance_lamports: 0,
        };
        let mut trade = ProposedTrade { slippage_bps: 1_000, ..sell_sol(LAMPORTS_PER_SOL, 1_000 * USD) };
        trade.output_mint = SCAM.to_owned();
        assert_eq!(refused(check(&l, &bad_state, &trade, NOW)).as_str(), "allowlist");
        trade.output_mint = USDC.to_owned();
        assert_eq!(refused(check(&l, &bad_state, &trade, NOW)).as_str(), "per_trade");
        trade.value = USD;
        assert_eq!(refused(check(&l, &bad_state, &trade, NOW)).as_str(), "daily");
        let mut s = RiskState { traded_today: 0, ..bad_state };
        assert_eq!(refused(check(&l, &s, &trade, NOW)).as_str(), "exposure");
        s.exposure = 0;
        assert_eq!(refused(check(&l, &s, &trade, NOW)).as_str(), "slippage");
        trade.slippage_bps = 100;
        assert_eq!(refused(check(&l, &s, &trade, NOW)).as_str(), "sol_reserve");
        s.sol_balance_lamports = 10 * LAMPORTS_PER_SOL;
        assert_eq!(refused(check(&l, &s, &trade, NOW)).as_str(), "cooldown");
        s.last_trade_at = None;
        assert_eq!(check(&l, &s, &trade, NOW), Verdict::Allowed);
    }

    #[test]
    fn amount_limits_allow_exactly_the_maximum() {
        let l = limits();
        assert_eq!(check(&l, &state(), &sell_sol(1, 100 * USD), NOW), Verdict::Allowed);
        assert_eq!(refused(check(&l, &state(), &sell_sol(1, 100 * USD + 1), NOW)).as_str(), "per_trade");

        let spent = RiskState { traded_today: 150 * USD, ..state() };
        assert_eq!(check(&l, &spent, &sell_sol(1, 100 * USD), NOW), Verdict::Allowed);
        assert_eq!(
            refused(check(&l, &spent, &sell_sol(1, 100 * USD + 1), NOW)),
            Refusal::OverPerTrade { value: 100 * USD + 1, max: 100 * USD }
        );
        let spent = RiskState { traded_today: 150 * USD + 1, ..state() };
        assert_eq!(
            refused(check(&l, &spent, &sell_sol(1, 100 * USD), NOW)),
            Refusal::OverDaily { traded_today: 150 * USD + 1, value: 100 * USD, max: 250 * USD }
        );

        let exposed = RiskState { exposure: 200 * USD, ..state() };
        assert_eq!(check(&l, &exposed, &sell_sol(1, 100 * USD), NOW), Verdict::Allowed);
        let exposed = RiskState { exposure: 200 * USD + 1, ..state() };
        assert_eq!(
            refused(check(&l, &exposed, &sell_sol(1, 100 * USD), NOW)),
            Refusal::OverExposure { exposure: 200 * USD + 1, value: 100 * USD, max: 300 * USD }
        );

        let slip = ProposedTrade { slippage_bps: 100, ..sell_sol(1, USD) };
        assert_eq!(check(&l, &state(), &slip, NOW), Verdict::Allowed);
        let slip = ProposedTrade { slippage_bps: 101, ..slip };
        assert_eq!(refused(check(&l, &state(), &slip, NOW)), Refusal::Slippage { bps: 101, max: 100 });
    }

    #[test]
    fn overflowing_sums_are_refused() {
        let l = RiskLimits { max_per_trade: u64::MAX, max_per_day: u64::MAX, max_exposure: u64::MAX, ..limits() };
        let full = RiskState { traded_today: u64::MAX, ..state() };
        assert_eq!(refused(check(&l, &full, &sell_sol(1, 1), NOW)).as_str(), "daily");
        let full = RiskState { exposure: u64::MAX, ..state() };
        assert_eq!(refused(check(&l, &full, &sell_sol(1, 1), NOW)).as_str(), "exposure");
    }

    #[test]
    fn exposure_follows_the_mints_not_the_label() {
        let l = limits();
        let exposed = RiskState { exposure: 300 * USD, ..state() };
        // Out of SOL opens exposure: refused at the limit.
        assert_eq!(refused(check(&l, &exposed, &swap(SOL_MINT, BONK, USD), NOW)).as_str(), "exposure");
        // Into SOL closes it, token to token moves it: neither is refused for exposure.
        assert_eq!(check(&l, &exposed, &swap(BONK, SOL_MINT, USD), NOW), Verdict::Allowed);
        assert_eq!(check(&l, &exposed, &swap(USDC, BONK, USD), NOW), Verdict::Allowed);
        assert_eq!(swap(SOL_MINT, BONK, 1).exposure_effect(), ExposureEffect::Opens);
        assert_eq!(swap(BONK, SOL_MINT, 1).exposure_effect(), ExposureEffect::Closes);
        assert_eq!(swap(BONK, USDC, 1).exposure_effect(), ExposureEffect::Moves);
    }

    #[test]
    fn selling_sol_must_leave_the_reserve() {
        let l = limits();
        let reserve = l.min_sol_reserve_lamports;
        let s = state();
        let most = s.sol_balance_lamports - reserve;
        assert_eq!(check(&l, &s, &sell_sol(most, USD), NOW), Verdict::Allowed);
        assert_eq!(
            refused(check(&l, &s, &sell_sol(most + 1, USD), NOW)),
            Refusal::SolReserve { balance: s.sol_balance_lamports, sold: most + 1, min_reserve: reserve }
        );
        // More than the balance is refused even with no reserve.
        let no_reserve = RiskLimits { min_sol_reserve_lamports: 0, ..limits() };
        assert_eq!(check(&no_reserve, &s, &sell_sol(s.sol_balance_lamports, USD), NOW), Verdict::Allowed);
        assert_eq!(
            refused(check(&no_reserve, &s, &sell_sol(s.sol_balance_lamports + 1, USD), NOW)).as_str(),
            "sol_reserve"
        );
        // A trade that sells no SOL is not held back by a low balance: buying SOL refills it.
        let broke = RiskState { sol_balance_lamports: 0, ..state() };
        assert_eq!(check(&l, &broke, &swap(USDC, SOL_MINT, USD), NOW), Verdict::Allowed);
    }

    #[test]
    fn cooldown_ends_exactly_after_the_interval() {
        let l = limits();
        let at = |last: i64| RiskState { last_trade_at: Some(last), ..state() };
        let trade = sell_sol(1, USD);
        assert_eq!(check(&l, &at(NOW - 60_000), &trade, NOW), Verdict::Allowed);
        assert_eq!(
            refused(check(&l, &at(NOW - 59_999), &trade, NOW)),
            Refusal::Cooldown { remaining: Duration::from_millis(1) }
        );
        assert_eq!(refused(check(&l, &at(NOW), &trade, NOW)), Refusal::Cooldown { remaining: Duration::from_secs(60) });
        // A clock that went back keeps the cool-down running from the recorded trade.
        assert_eq!(
            refused(check(&l, &at(NOW + 5_000), &trade, NOW)),
            Refusal::Cooldown { remaining: Duration::from_secs(65) }
        );
        let none = RiskLimits { cooldown: Duration::ZERO, ..limits() };
        assert_eq!(check(&none, &at(NOW), &trade, NOW), Verdict::Allowed);
        let endless = RiskLimits { cooldown: Duration::MAX, ..limits() };
        assert_eq!(refused(check(&endless, &at(NOW - DAY_MS), &trade, NOW)).as_str(), "cooldown");
    }

    #[test]
    fn the_day_rolls_over_at_utc_midnight() {
        let l = limits();
        let midnight = utc_day(NOW) * DAY_MS;
        let yesterday = RiskState { traded_today: 250 * USD, day: utc_day(NOW) - 1, last_trade_at: None, ..state() };
        let trade = sell_sol(1, 100 * USD);
        assert_eq!(refused(check(&l, &yesterday, &trade, midnight - 1)).as_str(), "daily");
        assert_eq!(check(&l, &yesterday, &trade, midnight), Verdict::Allowed);
        assert_eq!(yesterday.traded_on(utc_day(midnight)), 0);
        // A state recorded on a later day (the clock went back) still counts.
        let ahead = RiskState { day: utc_day(NOW) + 1, ..yesterday.clone() };
        assert_eq!(refused(check(&l, &ahead, &trade, NOW)).as_str(), "daily");
        assert_eq!(utc_day(-1), -1, "days before the epoch floor, too");
    }

    #[test]
    fn record_applies_an_executed_trade() {
        let mut s = RiskState { last_trade_at: None, ..state() };
        s.record(&sell_sol(2 * LAMPORTS_PER_SOL, 40 * USD), NOW);
        assert_eq!(s.traded_today, 40 * USD);
        assert_eq!(s.exposure, 40 * USD);
        assert_eq!(s.last_trade_at, Some(NOW));
        assert_eq!(s.sol_balance_lamports, 8 * LAMPORTS_PER_SOL);

        s.record(&swap(USDC, BONK, 10 * USD), NOW + 60_000);
        assert_eq!((s.traded_today, s.exposure), (50 * USD, 40 * USD));
        s.record(&swap(BONK, SOL_MINT, 60 * USD), NOW + 120_000);
        assert_eq!((s.traded_today, s.exposure), (110 * USD, 0), "closing saturates at zero");
        assert_eq!(s.sol_balance_lamports, 8 * LAMPORTS_PER_SOL, "SOL received waits for a balance refresh");

        // The next UTC day starts from zero.
        let tomorrow = (utc_day(NOW) + 1) * DAY_MS;
        s.record(&swap(USDC, BONK, 5 * USD), tomorrow);
        assert_eq!((s.day, s.traded_today), (utc_day(tomorrow), 5 * USD));
        // A clock that went back adds to the later day instead of resetting it.
        s.record(&swap(USDC, BONK, 5 * USD), NOW);
        assert_eq!((s.day, s.traded_today), (utc_day(tomorrow), 10 * USD));
        assert_eq!(s.last_trade_at, Some(NOW));
    }

    #[test]
    fn approval_is_asked_above_the_threshold_only_after_every_hard_limit() {
        let l = RiskLimits { approval_above: Some(50 * USD), ..limits() };
        assert_eq!(check(&l, &state(), &sell_sol(1, 50 * USD), NOW), Verdict::Allowed);
        let verdict = check(&l, &state(), &sell_sol(1, 50 * USD + 1), NOW);
        assert!(matches!(&verdict, Verdict::NeedsApproval { reason } if reason.contains("approval threshold")));
        assert_eq!(verdict.as_str(), "needs_approval");
        // Approval never lifts a hard limit.
        assert_eq!(refused(check(&l, &state(), &sell_sol(1, 100 * USD + 1), NOW)).as_str(), "per_trade");
        let cooling = RiskState { last_trade_at: Some(NOW), ..state() };
        assert_eq!(refused(check(&l, &cooling, &sell_sol(1, 60 * USD), NOW)).as_str(), "cooldown");
        // Threshold zero asks for every trade with a value.
        let always = RiskLimits { approval_above: Some(0), ..limits() };
        assert_eq!(check(&always, &state(), &sell_sol(1, 1), NOW).as_str(), "needs_approval");
    }

    #[test]
    fn default_limits_trade_nothing() {
        let defaults = RiskLimits::default();
        assert!(defaults.kill_switch && defaults.allowlist.is_empty());
        assert_eq!(refused(check(&defaults, &state(), &sell_sol(1, 1), NOW)), Refusal::KillSwitch);
        // Turning the kill switch off is not enough: every other limit is closed too.
        let unkilled = RiskLimits { kill_switch: false, ..RiskLimits::default() };
        assert_eq!(refused(check(&unkilled, &state(), &sell_sol(1, 1), NOW)).as_str(), "allowlist");
        let listed = RiskLimits { allowlist: limits().allowlist, ..unkilled };
        assert_eq!(refused(check(&listed, &state(), &sell_sol(1, 1), NOW)).as_str(), "per_trade");
    }
}
