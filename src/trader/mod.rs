//! The Trader: Solana swaps through Jupiter for personas that trade, paper by default, behind hard
//! limits enforced in code, with an audit trail of every step.
//!
//! - [`actor`]: the Trader actor (one per trading persona): decision rounds, quotes, the risk check,
//!   paper fills, live signing and sending, confirmation without resends, approvals, memories.
//! - [`decision`]: strict parsing of the model's decision; nothing in it can set a limit.
//! - [`risk`]: the hard limits as one pure [`check`] naming the limit it refused on.
//! - [`control`]: the kill switch (configuration or admin route; stored, so it survives restarts).
//! - [`prompt`]: the trading prompt (persona, strategy, market and wallet; no secret).
//! - [`jupiter`], [`solana`]: thin clients of Jupiter's swap API and a Solana JSON-RPC node.
//! - [`tx`], [`wallet`]: the Solana transaction format and the keypair, enough to sign Jupiter's
//!   transaction with ed25519 without the Solana SDK.

pub mod actor;
pub mod control;
pub mod decision;
pub mod jupiter;
pub mod prompt;
pub mod risk;
pub mod solana;
pub mod tx;
pub mod wallet;

pub use actor::{Trader, TraderArgs, TraderMsg, TraderStatus};
pub use control::{KillSwitchState, TradingControl};
pub use decision::{Action, AmountProblem, Decision, DecisionError, MintProblem, parse_decision};
pub use risk::{ExposureEffect, ProposedTrade, Refusal, RiskLimits, RiskState, SOL_MINT, Verdict, check};
