//! `[trading]` in `chorus.toml` and `[trading]` in a persona file: the Trader's markets, clients
//! and hard limits.
//!
//! Limits are written in USD and SOL for people and converted once, here, into the units the risk
//! check works in ([`crate::trader::RiskLimits`]: USD micro-units and lamports). Nothing else builds
//! `RiskLimits`, so no decision of a model can raise one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{Dur, SecretRef};
use crate::trader::risk::{LAMPORTS_PER_SOL, RiskLimits, SOL_MINT, USD};

/// USDC, the currency every value is measured in (1 USDC smallest unit = 1 USD micro-unit).
pub const USDC_MINT: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";

/// `[trading]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TradingConfig {
    /// `paper` (default): fills at the quoted amounts, balances in the database. `live`: signs and
    /// sends real transactions with each trading persona's keypair.
    pub mode: TradingMode,
    /// In sandbox mode: use the built-in Jupiter and Solana RPC simulators.
    pub simulated: bool,
    /// Jupiter's API root (`/swap/v1/quote` and `/swap/v1/swap` are appended).
    pub jupiter_url: String,
    /// Sent as `x-api-key` (needed on `https://api.jup.ag`, not on `lite-api`).
    pub jupiter_api_key: Option<SecretRef>,
    /// Solana JSON-RPC endpoint (live mode).
    pub rpc_url: String,
    /// Limit of one HTTP request to Jupiter or the RPC node.
    pub timeout: Dur,
    /// How often each trading persona asks its model for a decision.
    pub decide_every: Dur,
    /// How often the watched tokens are priced.
    pub price_every: Dur,
    /// Slippage tolerance each swap is quoted and sent with (basis points).
    pub slippage_bps: u16,
    /// How long a trade above the approval threshold waits for a human.
    pub approval_ttl: Dur,
    /// How often a sent transaction's status is polled ...
    pub confirm_poll: Dur,
    /// ... and for how long in one go (later rounds keep reconciling it; it is never resent).
    pub confirm_timeout: Dur,
    /// On: nothing trades. The admin route can also switch it on (and off again, unless it is on here).
    pub kill_switch: bool,
    /// Tokens by symbol. Only tokens listed here are priced, shown to the model or tradeable.
    pub tokens: BTreeMap<String, TokenConfig>,
    pub limits: LimitsConfig,
    pub paper: PaperConfig,
}

impl Default for TradingConfig {
    fn default() -> Self {
        let tokens = [("SOL", SOL_MINT, 9), ("USDC", USDC_MINT, 6)]
            .into_iter()
            .map(|(symbol, mint, decimals)| (symbol.to_owned(), TokenConfig { mint: mint.to_owned(), decimals }))
            .collect();
        Self {
            mode: TradingMode::Paper,
            simulated: true,
            jupiter_url: "https://lite-api.jup.ag".to_owned(),
            jupiter_api_key: None,
            rpc_url: "https://api.mainnet-beta.solana.com".to_owned(),
            timeout: Dur::secs(10),
            decide_every: Dur::secs(15 * 60),
            price_every: Dur::secs(60),
            slippage_bps: 50,
            approval_ttl: Dur::secs(30 * 60),
            confirm_poll: Dur::secs(2),
            confirm_timeout: Dur::secs(90),
            kill_switch: false,
            tokens,
            limits: LimitsConfig::default(),
            paper: PaperConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TradingMode {
    #[default]
    Paper,
    Live,
}

impl TradingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TradingMode::Paper => "paper",
            TradingMode::Live => "live",
        }
    }
}

/// One token: its mint and decimals.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub mint: String,
    pub decimals: u8,
}

/// `[trading.limits]`. The defaults trade nothing: an empty allowlist and zero amounts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Symbols (from `[trading.tokens]`) that may be traded, on either side.
    pub allow: Vec<String>,
    pub max_per_trade_usd: f64,
    pub max_per_day_usd: f64,
    /// Most value held outside SOL after a trade that buys into a token.
    pub max_exposure_usd: f64,
    pub max_slippage_bps: u16,
    /// SOL a trade selling SOL must leave in the wallet.
    pub min_sol_reserve: f64,
    pub cooldown: Dur,
    /// Trades worth more than this wait for a human's approval (absent: none do).
    pub approval_above_usd: Option<f64>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            max_per_trade_usd: 0.0,
            max_per_day_usd: 0.0,
            max_exposure_usd: 0.0,
            max_slippage_bps: 0,
            min_sol_reserve: 0.05,
            cooldown: Dur::secs(600),
            approval_above_usd: Some(0.0),
        }
    }
}

/// `[trading.paper]`: each trading persona's paper wallet at its first start, in whole tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaperConfig {
    pub balances: BTreeMap<String, f64>,
}

impl Default for PaperConfig {
    fn default() -> Self {
        Self { balances: [("SOL".to_owned(), 10.0)].into_iter().collect() }
    }
}

/// A persona's `[trading]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaTrading {
    /// Give this persona a Trader.
    #[serde(default)]
    pub enabled: bool,
    /// The persona's trading brief, given to its model with the market (never the limits' values
    /// as something it can change: they are enforced in code).
    #[serde(default)]
    pub strategy: String,
    /// Live mode: the Solana CLI keypair file (a JSON array of 64 numbers) of the persona's wallet.
    #[serde(default)]
    pub keypair: Option<SecretRef>,
}

/// Whole tokens to smallest units, rounded down; `None` if negative, not finite or too large.
pub fn to_units(amount: f64, decimals: u8) -> Option<u64> {
    let units = amount * 10f64.powi(i32::from(decimals));
    (units.is_finite() && units >= 0.0 && units < u64::MAX as f64).then_some(units.floor() as u64)
}

/// USD to USD micro-units; `None` if negative, not finite or too large.
pub fn usd_micro(usd: f64) -> Option<u64> {
    let micro = (usd * USD as f64).round();
    (micro.is_finite() && micro >= 0.0 && micro < u64::MAX as f64).then_some(micro as u64)
}

impl TradingConfig {
    /// The token with this mint, as `(symbol, token)`.
    pub fn token_by_mint(&self, mint: &str) -> Option<(&str, &TokenConfig)> {
        self.tokens.iter().find(|(_, token)| token.mint == mint).map(|(symbol, token)| (symbol.as_str(), token))
    }

    /// The hard limits of every Trader, in the risk check's units, with the configured kill switch.
    /// Amounts that do not convert (caught by validation) become zero: refuse, never allow.
    pub fn risk_limits(&self) -> RiskLimits {
        let limits = &self.limits;
        RiskLimits {
            allowlist: limits
                .allow
                .iter()
                .filter_map(|symbol| self.tokens.get(symbol))
                .map(|t| t.mint.clone())
                .collect(),
            max_per_trade: usd_micro(limits.max_per_trade_usd).unwrap_or(0),
            max_per_day: usd_micro(limits.max_per_day_usd).unwrap_or(0),
            max_exposure: usd_micro(limits.max_exposure_usd).unwrap_or(0),
            max_slippage_bps: limits.max_slippage_bps,
            min_sol_reserve_lamports: to_units(limits.min_sol_reserve, 9).unwrap_or(LAMPORTS_PER_SOL),
            cooldown: limits.cooldown.get(),
            approval_above: limits.approval_above_usd.map(|usd| usd_micro(usd).unwrap_or(0)),
            kill_switch: self.kill_switch,
        }
    }

    /// The paper wallet a persona starts with, in smallest units by mint.
    pub fn paper_start(&self) -> Vec<(String, u64)> {
        self.paper
            .balances
            .iter()
            .filter_map(|(symbol, amount)| {
                let token = self.tokens.get(symbol)?;
                Some((token.mint.clone(), to_units(*amount, token.decimals)?))
            })
            .collect()
    }

    /// Problems with `[trading]`, as `(key, message)`.
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut push = |key: &str, message: String| problems.push((format!("trading.{key}"), message));
        for (key, url) in [("jupiter_url", &self.jupiter_url), ("rpc_url", &self.rpc_url)] {
            if let Err(err) = reqwest::Url::parse(url) {
                push(key, format!("not a URL: {err}"));
            }
        }
        for (key, every, least) in [
            ("timeout", self.timeout, Duration::from_millis(1)),
            ("decide_every", self.decide_every, Duration::from_millis(100)),
            ("price_every", self.price_every, Duration::from_millis(100)),
            ("approval_ttl", self.approval_ttl, Duration::from_secs(1)),
            ("confirm_poll", self.confirm_poll, Duration::from_millis(10)),
            ("confirm_timeout", self.confirm_timeout, Duration::from_millis(10)),
        ] {
            if every.get() < least {
                push(key, format!("must be at least {}", humantime::format_duration(least)));
            }
        }
        if self.slippage_bps > 10_000 {
            push("slippage_bps", "must be at most 10000 (100 %)".to_owned());
        }
        match self.tokens.get("USDC") {
            Some(usdc) if usdc.mint == USDC_MINT && usdc.decimals == 6 => {}
            _ => push("tokens.USDC", format!("must be {{ mint = \"{USDC_MINT}\", decimals = 6 }}: values are in USDC")),
        }
        match self.tokens.get("SOL") {
            Some(sol) if sol.mint == SOL_MINT && sol.decimals == 9 => {}
            _ => push("tokens.SOL", format!("must be {{ mint = \"{SOL_MINT}\", decimals = 9 }}")),
        }
        let mut mints = BTreeMap::new();
        for (symbol, token) in &self.tokens {
            if let Err(problem) = crate::trader::decision::check_mint(&token.mint) {
                push(&format!("tokens.{symbol}.mint"), format!("not a Solana address: {problem}"));
            }
            if token.decimals > 18 {
                push(&format!("tokens.{symbol}.decimals"), "must be at most 18".to_owned());
            }
            if let Some(other) = mints.insert(token.mint.clone(), symbol.clone()) {
                push(&format!("tokens.{symbol}.mint"), format!("is also the mint of {other}"));
            }
        }
        for symbol in &self.limits.allow {
            if !self.tokens.contains_key(symbol) {
                push("limits.allow", format!("unknown token {symbol:?} (not in [trading.tokens])"));
            }
        }
        let limits = &self.limits;
        let amounts = [
            ("limits.max_per_trade_usd", Some(limits.max_per_trade_usd)),
            ("limits.max_per_day_usd", Some(limits.max_per_day_usd)),
            ("limits.max_exposure_usd", Some(limits.max_exposure_usd)),
            ("limits.approval_above_usd", limits.approval_above_usd),
        ];
        for (key, usd) in amounts {
            if usd.is_some_and(|usd| usd_micro(usd).is_none()) {
                push(key, "must be an amount of zero or more".to_owned());
            }
        }
        if to_units(limits.min_sol_reserve, 9).is_none() {
            push("limits.min_sol_reserve", "must be an amount of zero or more".to_owned());
        }
        if limits.max_slippage_bps > 10_000 {
            push("limits.max_slippage_bps", "must be at most 10000 (100 %)".to_owned());
        }
        for (symbol, amount) in &self.paper.balances {
            match self.tokens.get(symbol) {
                None => push("paper.balances", format!("unknown token {symbol:?} (not in [trading.tokens])")),
                Some(token) if to_units(*amount, token.decimals).is_none() => {
                    push(&format!("paper.balances.{symbol}"), "must be an amount of zero or more".to_owned())
                }
                Some(_) => {}
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_trade_nothing() {
        let config = TradingConfig::default();
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let limits = config.risk_limits();
        assert!(limits.allowlist.is_empty());
        assert_eq!((limits.max_per_trade, limits.max_per_day, limits.max_exposure), (0, 0, 0));
        assert_eq!(limits.approval_above, Some(0));
    }

    #[test]
    fn limits_convert_to_micro_usd_and_lamports() {
        let config = TradingConfig {
            limits: LimitsConfig {
                allow: vec!["SOL".into(), "USDC".into()],
                max_per_trade_usd: 25.5,
                max_per_day_usd: 100.0,
                max_exposure_usd: 200.0,
                max_slippage_bps: 100,
                min_sol_reserve: 0.05,
                cooldown: Dur::secs(60),
                approval_above_usd: None,
            },
            ..TradingConfig::default()
        };
        let limits = config.risk_limits();
        assert_eq!(limits.max_per_trade, 25_500_000);
        assert_eq!(limits.min_sol_reserve_lamports, 50_000_000);
        assert_eq!(limits.allowlist.len(), 2);
        assert!(limits.allowlist.contains(SOL_MINT) && limits.allowlist.contains(USDC_MINT));
        assert_eq!(config.paper_start(), vec![(SOL_MINT.to_owned(), 10 * LAMPORTS_PER_SOL)]);
    }

    #[test]
    fn bad_values_are_named() {
        let mut config = TradingConfig::default();
        config.limits.allow = vec!["DOGE".into()];
        config.limits.max_per_trade_usd = -1.0;
        config.slippage_bps = 20_000;
        config.tokens.insert("BAD".into(), TokenConfig { mint: "not-a-mint".into(), decimals: 6 });
        let keys: Vec<String> = config.problems().into_iter().map(|(key, _)| key).collect();
        for key in [
            "trading.limits.allow",
            "trading.limits.max_per_trade_usd",
            "trading.slippage_bps",
            "trading.tokens.BAD.mint",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
        }
    }
}
