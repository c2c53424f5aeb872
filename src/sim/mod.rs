//! Simulators of the outside world, for the sandbox and the tests: the sandbox crowd on the local
//! platform, and a minimal OpenAI-compatible chat server.

pub mod crowd;
#[cfg(feature = "sim")]
pub mod llm;
#[cfg(feature = "sim")]
pub mod openai;
