//! Strict parsing of a persona's trading decision.
//!
//! The LlmPool answers a trading prompt with one JSON object:
//!
//! ```json
//! {"action": "buy", "input_mint": "So11111111111111111111111111111111111111112",
//!  "output_mint": "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", "amount": 250000000,
//!  "reason": "SOL is up 12 % this week; take some profit into USDC"}
//! ```
//!
//! [`parse_decision`] accepts exactly that shape and nothing it would have to guess about:
//!
//! - the whole text is one JSON object, optionally wrapped in a single fenced block (```` ```json ````
//!   or a bare ```` ``` ````, the opening fence on its own line); only whitespace may surround it;
//! - exactly the fields `action`, `input_mint`, `output_mint`, `amount`, `reason`; an unknown or
//!   duplicate field is an error, so a model that writes `"max_amount"`, `"slippage_bps"` or
//!   `"override"` is refused rather than ignored — nothing in a decision can touch a risk limit;
//! - `action` is exactly `"buy"`, `"sell"` or `"hold"` (lowercase);
//! - for `buy` and `sell`: both mints are Solana addresses (32–44 base58 characters decoding to 32
//!   bytes) and differ, and `amount` is a plain positive JSON integer in the input token's smallest
//!   units (no fraction, exponent, string, sign or zero);
//! - for `hold`: the mints are absent, `null` or `""`, and `amount` is absent, `null` or `0`; the
//!   parsed [`Decision`] then has empty mints and a zero amount;
//! - `reason` is a string of 1 to [`MAX_REASON_CHARS`] characters after trimming.
//!
//! `buy` and `sell` are the model's own labels: the swap is defined by the mints alone, and the risk
//! checks never trust the label (see [`super::risk`]).
//!
//! A [`DecisionError`] says precisely what was wrong, for the audit trail, and never echoes more
//! than [`MAX_ECHO_CHARS`] characters of the model's text.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// Longest decision text considered at all; a valid decision is far shorter.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;
/// Longest `reason`, in characters, after trimming.
pub const MAX_REASON_CHARS: usize = 500;
/// Most characters of the model's text that an error repeats.
pub const MAX_ECHO_CHARS: usize = 100;
/// The only fields a decision may have.
pub const FIELDS: [&str; 5] = ["action", "input_mint", "output_mint", "amount", "reason"];

const BASE58_ALPHABET: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const FENCE: &str = "```";

/// What the model wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Swap `amount` of the input token into the output token (the model's label).
    Buy,
    /// Swap `amount` of the input token into the output token (the model's label).
    Sell,
    /// Do nothing this round.
    Hold,
}

impl Action {
    /// The action as written in a decision: `buy`, `sell` or `hold`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Buy => "buy",
            Action::Sell => "sell",
            Action::Hold => "hold",
        }
    }
}

/// A decision that passed [`parse_decision`]. Serializable for the audit trail; it can only be
/// built from text through [`parse_decision`] (there is deliberately no `Deserialize`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// Mint of the token given up; empty for [`Action::Hold`].
    pub input_mint: String,
    /// Mint of the token received; empty for [`Action::Hold`].
    pub output_mint: String,
    /// Amount of the input token in its smallest units (lamports for SOL); 0 for [`Action::Hold`].
    pub amount: u64,
    /// The model's explanation, trimmed.
    pub reason: String,
}

impl Decision {
    /// Whether this decision asks for a swap (`buy` or `sell`) rather than `hold`.
    pub fn is_trade(&self) -> bool {
        self.action != Action::Hold
    }
}

/// Why a mint is not a Solana address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintProblem {
    /// Not 32–44 characters long.
    Length { chars: usize },
    /// A character outside the base58 alphabet, at this character index.
    Alphabet { at: usize, ch: char },
    /// Valid base58 that does not decode to 32 bytes.
    Decoded { bytes: usize },
}

impl fmt::Display for MintProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MintProblem::Length { chars } => write!(f, "{chars} characters, expected 32 to 44"),
            MintProblem::Alphabet { at, ch } => write!(f, "character {ch:?} at {at} is not base58"),
            MintProblem::Decoded { bytes } => write!(f, "decodes to {bytes} bytes, expected 32"),
        }
    }
}

/// Why an `amount` is not a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountProblem {
    /// A fraction or an exponent (`1.5`, `1.0`, `1e6`).
    NotInteger,
    /// Below zero.
    Negative,
    /// Zero, for a trade.
    Zero,
    /// Above `u64::MAX`.
    TooLarge,
}

impl fmt::Display for AmountProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AmountProblem::NotInteger => "must be a plain integer (no fraction or exponent)",
            AmountProblem::Negative => "must not be negative",
            AmountProblem::Zero => "must be positive for a trade",
            AmountProblem::TooLarge => "is larger than a u64",
        })
    }
}

/// Why a decision text was rejected. Echoes of the model's text are cut to [`MAX_ECHO_CHARS`]
/// characters (with a trailing `…`) and printed escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// Nothing but whitespace.
    #[error("empty decision")]
    Empty,
    /// Longer than [`MAX_TEXT_BYTES`].
    #[error("decision is {bytes} bytes, more than the {} allowed", MAX_TEXT_BYTES)]
    TooLong { bytes: usize },
    /// Text before or after the fenced block, or a second fence.
    #[error("text outside the fenced block: only one ```json block and whitespace are allowed")]
    TextOutsideFence,
    /// A fence that is not closed or whose opening line does not end before the JSON.
    #[error("malformed fenced block: {problem}")]
    MalformedFence { problem: &'static str },
    /// A fence labelled with something other than `json`.
    #[error("fenced block language {found:?} is not json")]
    FenceLanguage { found: String },
    /// Not exactly one JSON value (syntax error, trailing text, two objects…).
    #[error("not one JSON object: {detail}")]
    NotJson { detail: String },
    /// Valid JSON, but not an object.
    #[error("expected a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    /// The same field twice.
    #[error("duplicate field {field:?}")]
    DuplicateField { field: String },
    /// A field outside [`FIELDS`], including any attempt to set a limit.
    #[error("unknown field {field:?} (allowed: action, input_mint, output_mint, amount, reason)")]
    UnknownField { field: String },
    /// A required field is absent.
    #[error("missing field {field}")]
    MissingField { field: &'static str },
    /// A field of the wrong JSON type.
    #[error("field {field} must be {expected}, found {found}")]
    WrongType { field: &'static str, expected: &'static str, found: &'static str },
    /// `action` is not `buy`, `sell` or `hold`.
    #[error("action {found:?} is not one of \"buy\", \"sell\", \"hold\"")]
    BadAction { found: String },
    /// A mint that is not a Solana address.
    #[error("{field} {value:?} is not a Solana address: {problem}")]
    BadMint { field: &'static str, value: String, problem: MintProblem },
    /// `input_mint` equals `output_mint`.
    #[error("input_mint and output_mint are the same")]
    SameMint,
    /// `amount` is not a positive integer.
    #[error("amount {problem}")]
    BadAmount { problem: AmountProblem },
    /// A `hold` that names a mint or a non-zero amount.
    #[error("hold must not carry {field}")]
    HoldWithTrade { field: &'static str },
    /// `reason` is empty or only whitespace.
    #[error("reason is empty")]
    EmptyReason,
    /// `reason` is longer than [`MAX_REASON_CHARS`].
    #[error("reason is {chars} characters, more than the {} allowed", MAX_REASON_CHARS)]
    ReasonTooLong { chars: usize },
}

impl DecisionError {
    /// A stable label for metrics (`decisions rejected by cause`).
    pub fn as_str(&self) -> &'static str {
        match self {
            DecisionError::Empty => "empty",
            DecisionError::TooLong { .. } => "too_long",
            DecisionError::TextOutsideFence
            | DecisionError::MalformedFence { .. }
            | DecisionError::FenceLanguage { .. } => "fence",
            DecisionError::NotJson { .. } => "not_json",
            DecisionError::NotAnObject { .. } => "not_object",
            DecisionError::DuplicateField { .. } => "duplicate_field",
            DecisionError::UnknownField { .. } => "unknown_field",
            DecisionError::MissingField { .. } => "missing_field",
            DecisionError::WrongType { .. } => "wrong_type",
            DecisionError::BadAction { .. } => "action",
            DecisionError::BadMint { .. } => "mint",
            DecisionError::SameMint => "same_mint",
            DecisionError::BadAmount { .. } => "amount",
            DecisionError::HoldWithTrade { .. } => "hold_with_trade",
            DecisionError::EmptyReason | DecisionError::ReasonTooLong { .. } => "reason",
        }
    }
}

/// Parses a model's answer into a [`Decision`], strictly (see the module documentation for the
/// accepted shape). Anything else is a [`DecisionError`]; nothing is repaired or guessed.
pub fn parse_decision(text: &str) -> Result<Decision, DecisionError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(DecisionError::TooLong { bytes: text.len() });
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DecisionError::Empty);
    }
    let json = unfence(trimmed)?;
    let value: Value = serde_json::from_str(json).map_err(|err| {
        if json.contains(FENCE) || trimmed.contains(FENCE) {
            DecisionError::TextOutsideFence
        } else {
            DecisionError::NotJson { detail: excerpt(&err.to_string()) }
        }
    })?;
    if !value.is_object() {
        return Err(DecisionError::NotAnObject { found: json_kind(&value) });
    }
    // Parsed a second time, in order and with repeats, to refuse duplicate keys that a map hides.
    let Entries(entries) =
        serde_json::from_str(json).map_err(|err| DecisionError::NotJson { detail: excerpt(&err.to_string()) })?;
    let fields = Fields::new(entries)?;

    let action = parse_action(fields.get("action").ok_or(DecisionError::MissingField { field: "action" })?)?;
    let (input_mint, output_mint, amount) = match action {
        Action::Hold => {
            fields.expect_hold()?;
            (String::new(), String::new(), 0)
        }
        Action::Buy | Action::Sell => {
            let input = parse_mint("input_mint", fields.get("input_mint"))?;
            let output = parse_mint("output_mint", fields.get("output_mint"))?;
            if input == output {
                return Err(DecisionError::SameMint);
            }
            (input, output, parse_amount(fields.get("amount"))?)
        }
    };
    let reason = parse_reason(fields.get("reason"))?;
    Ok(Decision { action, input_mint, output_mint, amount, reason })
}

/// The JSON inside a single fenced block, or the text itself when it is not fenced.
fn unfence(trimmed: &str) -> Result<&str, DecisionError> {
    let Some(rest) = trimmed.strip_prefix(FENCE) else {
        return Ok(trimmed);
    };
    let (language, body) = rest
        .split_once('\n')
        .ok_or(DecisionError::MalformedFence { problem: "the opening ``` must be followed by a newline" })?;
    let language = language.trim();
    if !(language.is_empty() || language.eq_ignore_ascii_case("json")) {
        return Err(DecisionError::FenceLanguage { found: excerpt(language) });
    }
    match body.strip_suffix(FENCE) {
        Some(inner) => Ok(inner),
        None if body.contains(FENCE) => Err(DecisionError::TextOutsideFence),
        None => Err(DecisionError::MalformedFence { problem: "the block is not closed" }),
    }
}

/// An object's entries in order, duplicates kept.
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// The decision's fields, checked to be known and unique.
struct Fields(Vec<(String, Value)>);

impl Fields {
    /// Refuses the first duplicate or unknown field, in the order the model wrote them.
    fn new(entries: Vec<(String, Value)>) -> Result<Self, DecisionError> {
        for (index, (key, _)) in entries.iter().enumerate() {
            if !FIELDS.contains(&key.as_str()) {
                return Err(DecisionError::UnknownField { field: excerpt(key) });
            }
            if entries[..index].iter().any(|(earlier, _)| earlier == key) {
                return Err(DecisionError::DuplicateField { field: excerpt(key) });
            }
        }
        Ok(Fields(entries))
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.0.iter().find(|(key, _)| key == field).map(|(_, value)| value)
    }

    /// A `hold` names no mint (absent, `null` or `""`) and no amount (absent, `null` or `0`).
    fn expect_hold(&self) -> Result<(), DecisionError> {
        for field in ["input_mint", "output_mint"] {
            match self.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(mint)) if mint.is_empty() => {}
                Some(_) => return Err(DecisionError::HoldWithTrade { field }),
            }
        }
        match self.get("amount") {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(()),
            Some(_) => Err(DecisionError::HoldWithTrade { field: "amount" }),
        }
    }
}

fn parse_action(value: &Value) -> Result<Action, DecisionError> {
    let Value::String(action) = value else {
        return Err(DecisionError::WrongType { field: "action", expected: "a string", found: json_kind(value) });
    };
    match action.as_str() {
        "buy" => Ok(Action::Buy),
        "sell" => Ok(Action::Sell),
        "hold" => Ok(Action::Hold),
        other => Err(DecisionError::BadAction { found: excerpt(other) }),
    }
}

fn parse_mint(field: &'static str, value: Option<&Value>) -> Result<String, DecisionError> {
    match value {
        None => Err(DecisionError::MissingField { field }),
        Some(Value::String(mint)) => match check_mint(mint) {
            Ok(()) => Ok(mint.clone()),
            Err(problem) => Err(DecisionError::BadMint { field, value: excerpt(mint), problem }),
        },
        Some(other) => Err(DecisionError::WrongType { field, expected: "a string", found: json_kind(other) }),
    }
}

/// Whether `mint` looks like a Solana address: 32–44 base58 characters that decode to 32 bytes.
pub fn check_mint(mint: &str) -> Result<(), MintProblem> {
    let chars = mint.chars().count();
    if !(32..=44).contains(&chars) {
        return Err(MintProblem::Length { chars });
    }
    let mut digits = Vec::with_capacity(chars);
    for (at, ch) in mint.chars().enumerate() {
        match BASE58_ALPHABET.find(ch) {
            Some(digit) => digits.push(digit),
            None => return Err(MintProblem::Alphabet { at, ch }),
        }
    }
    let bytes = base58_decoded_len(&digits);
    if bytes == 32 { Ok(()) } else { Err(MintProblem::Decoded { bytes }) }
}

/// Length in bytes of the base58 number written with `digits` (values 0..58), leading zeros kept.
fn base58_decoded_len(digits: &[usize]) -> usize {
    let leading_zeros = digits.iter().take_while(|&&digit| digit == 0).count();
    // Little-endian base-256 digits of the number after the leading zeros.
    let mut number: Vec<u8> = Vec::new();
    for &digit in &digits[leading_zeros..] {
        let mut carry = digit;
        for byte in number.iter_mut() {
            carry += usize::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            number.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    leading_zeros + number.len()
}

fn parse_amount(value: Option<&Value>) -> Result<u64, DecisionError> {
    let number = match value {
        None => return Err(DecisionError::MissingField { field: "amount" }),
        Some(Value::Number(number)) => number,
        Some(other) => {
            return Err(DecisionError::WrongType { field: "amount", expected: "an integer", found: json_kind(other) });
        }
    };
    let problem = if let Some(amount) = number.as_u64() {
        if amount > 0 {
            return Ok(amount);
        }
        AmountProblem::Zero
    } else if number.is_i64() {
        AmountProblem::Negative
    } else {
        // serde_json keeps integers within u64/i64 exactly; anything else was written with a
        // fraction or an exponent, or is beyond both ranges.
        let float = number.as_f64().unwrap_or(f64::NAN);
        if float < 0.0 {
            AmountProblem::Negative
        } else if float >= 18_446_744_073_709_551_616.0 {
            AmountProblem::TooLarge
        } else {
            AmountProblem::NotInteger
        }
    };
    Err(DecisionError::BadAmount { problem })
}

fn parse_reason(value: Option<&Value>) -> Result<String, DecisionError> {
    let reason = match value {
        None => return Err(DecisionError::MissingField { field: "reason" }),
        Some(Value::String(reason)) => reason.trim(),
        Some(other) => {
            return Err(DecisionError::WrongType { field: "reason", expected: "a string", found: json_kind(other) });
        }
    };
    let chars = reason.chars().count();
    if chars == 0 {
        Err(DecisionError::EmptyReason)
    } else if chars > MAX_REASON_CHARS {
        Err(DecisionError::ReasonTooLong { chars })
    } else {
        Ok(reason.to_owned())
    }
}

/// The JSON type of `value`, for error messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// At most [`MAX_ECHO_CHARS`] characters of `text`, with `…` when cut.
fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let mut head: String = chars.by_ref().take(MAX_ECHO_CHARS).collect();
    if chars.next().is_some() {
        head.push('…');
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOL: &str = "So11111111111111111111111111111111111111112";
    const USDC: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
    const SYSTEM: &str = "11111111111111111111111111111111";

    fn buy_json() -> String {
        format!(
            r#"{{"action":"buy","input_mint":"{SOL}","output_mint":"{USDC}","amount":250000000,"reason":"take profit"}}"#
        )
    }

    fn with(field: &str, raw: &str) -> String {
        let mut object: serde_json::Map<String, Value> = serde_json::from_str(&buy_json()).expect("fixture");
        object.insert(field.to_owned(), serde_json::from_str(raw).expect("raw JSON"));
        Value::Object(object).to_string()
    }

    fn without(field: &str) -> String {
        let mut object: serde_json::Map<String, Value> = serde_json::from_str(&buy_json()).expect("fixture");
        object.remove(field);
        Value::Object(object).to_string()
    }

    fn err(text: &str) -> DecisionError {
        parse_decision(text).expect_err(text)
    }

    #[test]
    fn a_well_formed_buy_parses_exactly() {
        let decision = parse_decision(&buy_json()).expect("valid");
        assert_eq!(
            decision,
            Decision {
                action: Action::Buy,
                input_mint: SOL.to_owned(),
                output_mint: USDC.to_owned(),
                amount: 250_000_000,
                reason: "take profit".to_owned(),
            }
        );
        assert!(decision.is_trade());
        let sell = parse_decision(&with("action", r#""sell""#)).expect("valid sell");
        assert_eq!(sell.action, Action::Sell);
        assert_eq!(Action::Sell.as_str(), "sell");
    }

    #[test]
    fn surrounding_whitespace_and_one_json_fence_are_accepted() {
        let json = buy_json();
        let expected = parse_decision(&json).expect("valid");
        for text in [
            format!("\n  {json}\n\t"),
            format!("```json\n{json}\n```"),
            format!("  \n```json\n{json}\n```\n  "),
            format!("```JSON\r\n{json}\r\n```"),
            format!("```\n{json}\n```"),
            format!("```json\n{json}```"),
        ] {
            assert_eq!(parse_decision(&text).as_ref(), Ok(&expected), "{text}");
        }
    }

    #[test]
    fn prose_around_a_fence_or_a_broken_fence_is_rejected() {
        let json = buy_json();
        assert_eq!(err(&format!("Here is my decision:\n```json\n{json}\n```")), DecisionError::TextOutsideFence);
        assert_eq!(err(&format!("```json\n{json}\n```\nHope this helps!")), DecisionError::TextOutsideFence);
        assert_eq!(err(&format!("```json\n{json}\n```\n```json\n{json}\n```")), DecisionError::TextOutsideFence);
        assert!(matches!(err(&format!("```json\n{json}\n")), DecisionError::MalformedFence { .. }));
        assert!(matches!(err(&format!("```json {json} ```")), DecisionError::MalformedFence { .. }));
        assert_eq!(
            err(&format!("```python\n{json}\n```")),
            DecisionError::FenceLanguage { found: "python".to_owned() }
        );
        assert_eq!(DecisionError::TextOutsideFence.as_str(), "fence");
    }

    #[test]
    fn text_that_is_not_exactly_one_json_object_is_rejected() {
        let json = buy_json();
        for text in [
            "buy 2 SOL of USDC please".to_owned(),
            format!("{json}{json}"),
            format!("{json}\n{json}"),
            format!("{json} because I said so"),
            format!("Decision: {json}"),
            json[..json.len() - 1].to_owned(),
            "{'action': 'hold', 'reason': 'single quotes'}".to_owned(),
            r#"{"action":"hold","reason":"trailing comma",}"#.to_owned(),
        ] {
            let error = err(&text);
            assert!(matches!(error, DecisionError::NotJson { .. }), "{text}: {error:?}");
            assert_eq!(error.as_str(), "not_json");
        }
        assert_eq!(err(""), DecisionError::Empty);
        assert_eq!(err(" \n\t "), DecisionError::Empty);
        assert_eq!(err(&format!("[{json}]")), DecisionError::NotAnObject { found: "an array" });
        assert_eq!(err(r#""buy""#), DecisionError::NotAnObject { found: "a string" });
        assert_eq!(err("null"), DecisionError::NotAnObject { found: "null" });
        let huge = format!("{json}{}", " ".repeat(MAX_TEXT_BYTES));
        assert_eq!(err(&huge), DecisionError::TooLong { bytes: huge.len() });
    }

    #[test]
    fn nothing_the_model_writes_can_set_a_limit() {
        for field in [
            "max_amount",
            "max_per_trade",
            "max_per_day",
            "slippage_bps",
            "max_slippage_bps",
            "override",
            "kill_switch",
            "allowlist",
            "approved",
            "Action",
            "",
        ] {
            let error = err(&with(field, "true"));
            assert_eq!(error, DecisionError::UnknownField { field: field.to_owned() }, "{field}");
            assert_eq!(error.as_str(), "unknown_field");
        }
        // Even on a hold, and even when the field comes first and the rest is otherwise broken.
        let hold = r#"{"slippage_bps": 10000, "action":"hold","reason":"wait"}"#;
        assert_eq!(err(hold), DecisionError::UnknownField { field: "slippage_bps".to_owned() });
        let nested = r#"{"override":{"max_amount":1e18},"action":"buy","amount":-1}"#;
        assert_eq!(err(nested), DecisionError::UnknownField { field: "override".to_owned() });
    }

    #[test]
    fn duplicate_fields_are_rejected_not_resolved() {
        let json = buy_json();
        let twice = format!(r#"{},"amount":1}}"#, &json[..json.len() - 1]);
        assert_eq!(err(&twice), DecisionError::DuplicateField { field: "amount".to_owned() });
    }

    #[test]
    fn missing_and_mistyped_fields_are_named() {
        for field in FIELDS {
            assert_eq!(err(&without(field)), DecisionError::MissingField { field }, "{field}");
        }
        assert_eq!(
            err(&with("action", "1")),
            DecisionError::WrongType { field: "action", expected: "a string", found: "a number" }
        );
        assert_eq!(
            err(&with("input_mint", "null")),
            DecisionError::WrongType { field: "input_mint", expected: "a string", found: "null" }
        );
        assert_eq!(
            err(&with("reason", r#"["a"]"#)),
            DecisionError::WrongType { field: "reason", expected: "a string", found: "an array" }
        );
    }

    #[test]
    fn action_must_be_an_exact_lowercase_word() {
        for action in ["BUY", "Buy", " buy", "purchase", "swap", ""] {
            let error = err(&with("action", &Value::from(action).to_string()));
            assert_eq!(error, DecisionError::BadAction { found: action.to_owned() });
            assert_eq!(error.as_str(), "action");
        }
    }

    #[test]
    fn amount_must_be_a_plain_positive_integer() {
        let cases = [
            ("1.5", AmountProblem::NotInteger),
            ("1.0", AmountProblem::NotInteger),
            ("1e6", AmountProblem::NotInteger),
            ("-1", AmountProblem::Negative),
            ("-2.5", AmountProblem::Negative),
            ("-18446744073709551616", AmountProblem::Negative),
            ("0", AmountProblem::Zero),
            ("18446744073709551616", AmountProblem::TooLarge),
        ];
        for (raw, problem) in cases {
            assert_eq!(err(&with("amount", raw)), DecisionError::BadAmount { problem }, "{raw}");
        }
        assert_eq!(
            err(&with("amount", r#""250000000""#)),
            DecisionError::WrongType { field: "amount", expected: "an integer", found: "a string" }
        );
        assert_eq!(parse_decision(&with("amount", "1")).map(|d| d.amount), Ok(1));
        assert_eq!(parse_decision(&with("amount", "18446744073709551615")).map(|d| d.amount), Ok(u64::MAX));
    }

    #[test]
    fn mints_must_be_solana_addresses_and_differ() {
        assert!(check_mint(SOL).is_ok() && check_mint(USDC).is_ok() && check_mint(SYSTEM).is_ok());
        let cases = [
            ("0So1111111111111111111111111111111111111112", MintProblem::Alphabet { at: 0, ch: '0' }),
            ("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1l", MintProblem::Alphabet { at: 43, ch: 'l' }),
            ("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDtOv", MintProblem::Alphabet { at: 42, ch: 'O' }),
            ("So1111111111111111111111111111111111111111-", MintProblem::Alphabet { at: 42, ch: '-' }),
            ("USDC", MintProblem::Length { chars: 4 }),
            ("", MintProblem::Length { chars: 0 }),
            ("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", MintProblem::Alphabet { at: 0, ch: '0' }),
            (&"z".repeat(44), MintProblem::Decoded { bytes: 33 }),
            (&"1".repeat(33), MintProblem::Decoded { bytes: 33 }),
        ];
        for (mint, problem) in cases {
            assert_eq!(check_mint(mint), Err(problem.clone()), "{mint}");
            assert_eq!(
                err(&with("output_mint", &Value::from(mint).to_string())),
                DecisionError::BadMint { field: "output_mint", value: mint.to_owned(), problem },
            );
        }
        assert_eq!(err(&with("output_mint", &format!("\"{SOL}\""))), DecisionError::SameMint);
    }

    #[test]
    fn reason_must_be_present_and_bounded() {
        assert_eq!(err(&with("reason", r#""""#)), DecisionError::EmptyReason);
        assert_eq!(err(&with("reason", r#"" \n ""#)), DecisionError::EmptyReason);
        let longest = "é".repeat(MAX_REASON_CHARS);
        let decision = parse_decision(&with("reason", &Value::from(format!("  {longest}  ")).to_string()));
        assert_eq!(decision.map(|d| d.reason), Ok(longest));
        let too_long = "a".repeat(MAX_REASON_CHARS + 1);
        assert_eq!(
            err(&with("reason", &Value::from(too_long).to_string())),
            DecisionError::ReasonTooLong { chars: MAX_REASON_CHARS + 1 }
        );
    }

    #[test]
    fn hold_carries_no_trade() {
        let expected = Decision {
            action: Action::Hold,
            input_mint: String::new(),
            output_mint: String::new(),
            amount: 0,
            reason: "wait".to_owned(),
        };
        for text in [
            r#"{"action":"hold","reason":"wait"}"#,
            r#"{"action":"hold","input_mint":null,"output_mint":null,"amount":null,"reason":"wait"}"#,
            r#"{"action":"hold","input_mint":"","output_mint":"","amount":0,"reason":"wait"}"#,
        ] {
            let decision = parse_decision(text).expect(text);
            assert_eq!(decision, expected);
            assert!(!decision.is_trade());
        }
        for (text, field) in [
            (format!(r#"{{"action":"hold","input_mint":"{SOL}","reason":"wait"}}"#), "input_mint"),
            (format!(r#"{{"action":"hold","output_mint":"{USDC}","reason":"wait"}}"#), "output_mint"),
            (r#"{"action":"hold","amount":5,"reason":"wait"}"#.to_owned(), "amount"),
            (r#"{"action":"hold","amount":0.0,"reason":"wait"}"#.to_owned(), "amount"),
            (r#"{"action":"hold","amount":"0","reason":"wait"}"#.to_owned(), "amount"),
        ] {
            assert_eq!(err(&text), DecisionError::HoldWithTrade { field }, "{text}");
        }
        assert_eq!(err(r#"{"action":"hold"}"#), DecisionError::MissingField { field: "reason" });
    }

    #[test]
    fn errors_echo_at_most_a_hundred_characters_of_the_model() {
        let long = "x".repeat(5_000);
        let cases = [
            with(&long, "1"),
            with("action", &Value::from(long.clone()).to_string()),
            with("input_mint", &Value::from(long.clone()).to_string()),
            format!("```{long}\n{}\n```", buy_json()),
        ];
        for text in cases {
            let error = err(&text);
            let shown = error.to_string();
            assert!(shown.len() < 300, "{} chars: {shown}", shown.len());
            assert!(shown.contains(&format!("{}…", "x".repeat(MAX_ECHO_CHARS))), "{shown}");
            assert!(!shown.contains(&"x".repeat(MAX_ECHO_CHARS + 1)), "{shown}");
        }
        let control = err(&with("action", r#""hold\nINJECTED""#)).to_string();
        assert!(!control.contains('\n'), "echoes are escaped: {control}");
    }

    #[test]
    fn decisions_serialize_for_the_audit_trail() {
        let decision = parse_decision(&buy_json()).expect("valid");
        let json = serde_json::to_value(&decision).expect("serializes");
        assert_eq!(json["action"], "buy");
        assert_eq!(json["amount"], 250_000_000);
    }
}
