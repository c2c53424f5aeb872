//! Simulators of the outside world, for the sandbox and the tests: the sandbox crowd, an LLM
//! server (OpenAI-compatible and Anthropic wire formats), and the X and Reddit APIs, each with
//! scripted faults and a record of the requests it received.

pub mod crowd;
pub mod llm;
pub mod reddit;
pub mod x;

/// The platform simulators a sandbox service started (`platforms.<name>.simulated`).
#[derive(Clone, Default)]
pub struct SandboxSims {
    pub x: Option<x::XSim>,
    pub reddit: Option<reddit::RedditSim>,
}
