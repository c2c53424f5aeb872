//! The trading prompt: the persona, its strategy, the answer format, and the market and wallet as
//! one JSON block. The limits are named as enforced in code, never as something to negotiate; no
//! key, keypair or other secret is ever part of it.

use serde::{Deserialize, Serialize};

use crate::config::Persona;
use crate::llm::{ChatMessage, Role};

/// The line before the market JSON in the user message.
pub const MARKET_MARKER: &str = "Market and wallet (JSON):";

/// What the model is shown: every configured token with its price and the wallet's balance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketView {
    pub mode: String,
    pub tokens: Vec<TokenView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenView {
    pub symbol: String,
    pub mint: String,
    pub decimals: u8,
    /// USD per whole token; absent until the first price arrives.
    pub usd_price: Option<f64>,
    /// The wallet's balance in the token's smallest units.
    pub balance: u64,
    /// On the allowlist.
    pub tradeable: bool,
}

impl MarketView {
    /// The market block of a trading prompt, if `text` holds one.
    pub fn from_prompt(text: &str) -> Option<MarketView> {
        let (_, rest) = text.split_once(MARKET_MARKER)?;
        let json = rest.trim_start().lines().next()?;
        serde_json::from_str(json).ok()
    }
}

/// System prompt and market message for one decision.
pub fn messages(persona: &Persona, strategy: &str, market: &MarketView) -> Vec<ChatMessage> {
    let name = persona.display_name.as_deref().unwrap_or(&persona.name);
    let strategy =
        if strategy.trim().is_empty() { "Trade rarely and small; when in doubt, hold." } else { strategy.trim() };
    let system = format!(
        "You are {name}. {bio}\nVoice: {voice}\n\nYou manage your own small Solana wallet ({mode} trading). \
         Strategy: {strategy}\n\nAnswer with exactly one JSON object and nothing else:\n\
         {{\"action\": \"buy\" | \"sell\" | \"hold\", \"input_mint\": \"<mint you give up>\", \
         \"output_mint\": \"<mint you receive>\", \"amount\": <whole number, smallest units of the input token>, \
         \"reason\": \"<one sentence>\"}}\n\
         For hold, use \"\" for both mints and 0 for the amount. Only tokens marked tradeable can be traded. \
         Hard limits on size, daily volume, exposure, slippage and timing are enforced in code; a trade \
         outside them is refused, and nothing you write can change them.",
        bio = persona.bio.trim(),
        voice = persona.voice.trim(),
        mode = market.mode,
    );
    let market_json = serde_json::to_string(market).unwrap_or_else(|_| "{}".to_owned());
    vec![
        ChatMessage::new(Role::System, system),
        ChatMessage::new(Role::User, format!("{MARKET_MARKER}\n{market_json}\nYour decision:")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_market_block_round_trips_through_the_prompt() {
        let persona: Persona = toml::from_str(
            "name = \"ada\"\nbio = \"b\"\nvoice = \"v\"\ntopics = [\"t\"]\nplatforms = [\"local\"]\n\
             [schedule]\nevery = \"1h\"\n",
        )
        .unwrap();
        let market = MarketView {
            mode: "paper".into(),
            tokens: vec![TokenView {
                symbol: "SOL".into(),
                mint: crate::trader::SOL_MINT.into(),
                decimals: 9,
                usd_price: Some(150.0),
                balance: 10_000_000_000,
                tradeable: true,
            }],
        };
        let messages = messages(&persona, "", &market);
        assert_eq!(messages.len(), 2);
        assert!(messages[0].content.contains("enforced in code"));
        assert_eq!(MarketView::from_prompt(&messages[1].content), Some(market));
    }
}
