//! The Trader's groundwork (issue 7): the two pure pieces that everything else will stand on.
//!
//! - [`decision`]: strict parsing of the structured decision a persona's trading prompt gets from
//!   the LlmPool (`action`, `input_mint`, `output_mint`, `amount`, `reason`); anything malformed is
//!   a [`DecisionError`] that names the fault, and no field of a decision can set a limit.
//! - [`risk`]: the hard limits checked in code before every trade — kill switch, token allowlist,
//!   per-trade, daily and exposure values, slippage, SOL reserve, cool-down — and the human-approval
//!   threshold, as one pure [`check`] returning a [`Verdict`] that names the limit it refused on.
//!
//! Not wired yet: there is no Trader actor, no Jupiter or Solana client, no paper broker, no
//! `trading` config section, no admin route for the kill switch or approvals, no audit storage and
//! no metrics. Those remain for the Trader issue.

pub mod decision;
pub mod risk;

pub use decision::{Action, AmountProblem, Decision, DecisionError, MintProblem, parse_decision};
pub use risk::{ExposureEffect, ProposedTrade, Refusal, RiskLimits, RiskState, SOL_MINT, Verdict, check};
