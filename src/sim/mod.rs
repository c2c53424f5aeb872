//! Simulators of the outside world, for the sandbox and the tests: the sandbox crowd on the local
//! platform, and an LLM server speaking the OpenAI-compatible and Anthropic wire formats with
//! scripted faults.

pub mod crowd;
#[cfg(feature = "sim")]
pub mod llm;
#[cfg(feature = "sim")]
pub mod reddit;
#[cfg(feature = "sim")]
pub mod x;
