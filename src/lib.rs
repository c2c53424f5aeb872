//! Chorus: a supervised team of AI personas on social platforms. See `actors.md` for the map.

pub mod admin;
pub mod agent;
pub mod backoff;
pub mod config;
pub mod directory;
pub mod hash;
pub mod health;
pub mod llm;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod platform;
pub mod policy;
pub mod publisher;
pub mod rate_limit;
pub mod report;
pub mod service;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod supervisor;
pub mod sync;
pub mod task;
pub mod team_leader;
pub mod telemetry;
pub mod trader;
