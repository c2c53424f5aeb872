//! Builds the X, Reddit and Discord platforms of a service from its configuration: real accounts
//! from the persona files and their secrets, or — in sandbox mode with
//! `platforms.<name>.simulated` — the built-in simulators with one account (or bot) per persona,
//! so no account or key is needed.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;

use super::Platforms;
use super::discord::{DiscordAccount, DiscordClient, DiscordClientConfig, DiscordPlatform};
use super::reddit::{RedditAccount, RedditClient, RedditClientConfig, RedditPlatform};
use super::x::{XAccount, XAuth, XClient, XClientConfig, XPlatform};
use crate::config::{Config, PlatformKind, Secret, XAuthConfig};
use crate::directory::Directory;
use crate::sim::SandboxSims;
use crate::sim::discord::DiscordSim;
use crate::sim::jupiter::JupiterSim;
use crate::sim::reddit::RedditSim;
use crate::sim::solana::SolanaSim;
use crate::sim::x::{SIM_CONSUMER_KEY, SIM_CONSUMER_SECRET, XSim};

/// Subreddit of scheduled posts on the Reddit simulator, and the credentials of every simulated
/// Reddit account (public so tests can act as a persona on the simulator).
pub const SIM_SUBREDDIT: &str = "chorus_sim";
pub const SIM_PASSWORD: &str = "sandbox-password";
pub const SIM_CLIENT_ID: &str = "sandbox-client";
pub const SIM_CLIENT_SECRET: &str = "sandbox-secret";

/// The bot token of a persona on the Discord simulator.
pub fn sim_discord_token(persona: &str) -> String {
    format!("sandbox-discord-{persona}")
}

/// Live trading against the simulators: each trading persona's wallet starts with the paper
/// wallet's SOL, so the sandbox can exercise signing and sending without any funds.
fn fund_sim_wallets(config: &Config, solana: &SolanaSim) {
    let sol = config.service.trading.paper_start().into_iter().find(|(mint, _)| mint == crate::trader::SOL_MINT);
    let Some((_, lamports)) = sol else { return };
    for persona in config.trading_personas() {
        let wallet = config
            .persona_secret(&persona.name, "trading.keypair")
            .and_then(|secret| crate::trader::wallet::Wallet::from_secret(&secret).ok());
        if let Some(wallet) = wallet {
            solana.set_balance(&wallet.pubkey(), lamports);
        }
    }
}

/// Adds X, Reddit and Discord to `platforms` when enabled; returns the simulators in use. Simulators in
/// `existing` are used instead of starting new ones (tests that restart a service against the
/// same simulated world).
pub async fn connect(
    config: &Config,
    directory: &Arc<Directory>,
    platforms: &mut Platforms,
    existing: SandboxSims,
) -> anyhow::Result<SandboxSims> {
    let mut sims = SandboxSims::default();
    let service = &config.service;
    let on = |platform| {
        config
            .personas
            .values()
            .filter(move |persona| persona.platforms.contains(&platform))
            .cloned()
            .collect::<Vec<_>>()
    };

    if service.platform_enabled(PlatformKind::X) {
        let x = &service.platforms.x;
        let mut accounts = HashMap::new();
        let sim = match (service.simulated(PlatformKind::X), existing.x.clone()) {
            (false, _) => None,
            (true, Some(sim)) => Some(sim),
            (true, None) => {
                let sim = XSim::start().await.context("cannot start the X simulator")?;
                tracing::info!(base_url = %sim.base_url(), "x simulator listening");
                Some(sim)
            }
        };
        for persona in on(PlatformKind::X) {
            let (auth, base_url, user_id) = match &sim {
                Some(sim) => {
                    let account = sim.add_user(&persona.handle_on(PlatformKind::X));
                    let auth = XAuth::OAuth1 {
                        consumer_key: Secret::new(SIM_CONSUMER_KEY),
                        consumer_secret: Secret::new(SIM_CONSUMER_SECRET),
                        access_token: Secret::new(account.oauth1_token),
                        access_token_secret: Secret::new(account.oauth1_token_secret),
                    };
                    (auth, sim.base_url(), Some(account.user_id))
                }
                None => (x_auth(config, &persona.name)?, x.base_url.clone(), None),
            };
            let client = XClient::new(XClientConfig { base_url, auth, timeout: x.timeout.get() })?;
            accounts.insert(persona.name.clone(), XAccount::new(client, user_id));
        }
        platforms.insert(Arc::new(XPlatform::new(accounts, directory.clone(), x.mentions_per_poll)));
        sims.x = sim;
    }

    if service.platform_enabled(PlatformKind::Reddit) {
        let reddit = &service.platforms.reddit;
        let mut accounts = HashMap::new();
        let sim = match (service.simulated(PlatformKind::Reddit), existing.reddit.clone()) {
            (false, _) => None,
            (true, Some(sim)) => Some(sim),
            (true, None) => {
                let sim = RedditSim::start().await.context("cannot start the Reddit simulator")?;
                tracing::info!(base_url = %sim.api_base_url(), "reddit simulator listening");
                Some(sim)
            }
        };
        for persona in on(PlatformKind::Reddit) {
            let handle = persona.handle_on(PlatformKind::Reddit);
            let client_config = match (&sim, &persona.reddit) {
                (Some(sim), _) => {
                    sim.add_account(&handle, SIM_PASSWORD, SIM_CLIENT_ID, SIM_CLIENT_SECRET);
                    RedditClientConfig {
                        auth_base_url: sim.auth_base_url(),
                        api_base_url: sim.api_base_url(),
                        client_id: SIM_CLIENT_ID.to_owned(),
                        client_secret: Secret::new(SIM_CLIENT_SECRET),
                        username: handle.clone(),
                        password: Secret::new(SIM_PASSWORD),
                        user_agent: reddit.user_agent.clone(),
                        timeout: reddit.timeout.get(),
                    }
                }
                (None, Some(account)) => RedditClientConfig {
                    auth_base_url: reddit.auth_base_url.clone(),
                    api_base_url: reddit.api_base_url.clone(),
                    client_id: account.client_id.clone(),
                    client_secret: secret(config, &persona.name, "reddit.client_secret")?,
                    username: account.username.clone(),
                    password: secret(config, &persona.name, "reddit.password")?,
                    user_agent: reddit.user_agent.clone(),
                    timeout: reddit.timeout.get(),
                },
                (None, None) => anyhow::bail!("persona {}: no [reddit] account", persona.name),
            };
            let subreddit = match (&sim, &persona.reddit) {
                (None, Some(account)) => account.subreddit.clone(),
                _ => SIM_SUBREDDIT.to_owned(),
            };
            accounts
                .insert(persona.name.clone(), RedditAccount { client: RedditClient::new(client_config)?, subreddit });
        }
        platforms.insert(Arc::new(RedditPlatform::new(accounts, directory.clone())));
        sims.reddit = sim;
    }

    if service.platform_enabled(PlatformKind::Discord) {
        let discord = &service.platforms.discord;
        let mut accounts = HashMap::new();
        let sim = match (service.simulated(PlatformKind::Discord), existing.discord.clone()) {
            (false, _) => None,
            (true, Some(sim)) => Some(sim),
            (true, None) => {
                let sim = DiscordSim::start().await.context("cannot start the Discord simulator")?;
                tracing::info!(base_url = %sim.base_url(), "discord simulator listening");
                Some(sim)
            }
        };
        for persona in on(PlatformKind::Discord) {
            let bot = persona.discord.as_ref();
            let channels =
                bot.map(|bot| bot.channels.iter().filter_map(|id| id.parse().ok()).collect()).unwrap_or_default();
            let (api_base_url, token, post_channel) = match &sim {
                Some(sim) => {
                    let token = sim_discord_token(&persona.name);
                    let handle = persona.handle_on(PlatformKind::Discord);
                    if sim.user_id(&handle).is_none() {
                        sim.add_bot(&token, &handle);
                    }
                    let post_channel =
                        bot.and_then(|bot| bot.post_channel.clone()).unwrap_or_else(|| sim.text_channel_id());
                    (sim.base_url(), Secret::new(token), Some(post_channel))
                }
                None => (
                    discord.api_base_url.clone(),
                    secret(config, &persona.name, "discord.token")?,
                    bot.and_then(|bot| bot.post_channel.clone()),
                ),
            };
            let client =
                DiscordClient::new(DiscordClientConfig { api_base_url, token, timeout: discord.timeout.get() })?;
            accounts.insert(persona.name.clone(), DiscordAccount::new(client, channels, post_channel));
        }
        platforms.insert(Arc::new(DiscordPlatform::new(accounts, discord.max_reply_chars)));
        sims.discord = sim;
    }
    if service.mode == crate::config::Mode::Sandbox
        && service.trading.simulated
        && !config.trading_personas().is_empty()
    {
        let (jupiter, solana) = match (existing.jupiter, existing.solana) {
            (Some(jupiter), Some(solana)) => (jupiter, solana),
            _ => {
                let jupiter = JupiterSim::start().await.context("cannot start the Jupiter simulator")?;
                let solana = SolanaSim::start().await.context("cannot start the Solana RPC simulator")?;
                jupiter.set_block_height(solana.block_height());
                fund_sim_wallets(config, &solana);
                (jupiter, solana)
            }
        };
        tracing::info!(jupiter = %jupiter.base_url(), solana = %solana.url(), "trading simulators listening");
        sims.jupiter = Some(jupiter);
        sims.solana = Some(solana);
    }
    Ok(sims)
}

fn secret(config: &Config, persona: &str, key: &str) -> anyhow::Result<Secret> {
    config.persona_secret(persona, key).with_context(|| format!("persona {persona}: {key} is not set"))
}

fn x_auth(config: &Config, persona: &str) -> anyhow::Result<XAuth> {
    let Some(account) = config.personas.get(persona).and_then(|p| p.x.as_ref()) else {
        anyhow::bail!("persona {persona}: no [x] account");
    };
    Ok(match &account.auth {
        XAuthConfig::Oauth1 { .. } => XAuth::OAuth1 {
            consumer_key: secret(config, persona, "x.auth.consumer_key")?,
            consumer_secret: secret(config, persona, "x.auth.consumer_secret")?,
            access_token: secret(config, persona, "x.auth.access_token")?,
            access_token_secret: secret(config, persona, "x.auth.access_token_secret")?,
        },
        XAuthConfig::Oauth2 { client_id, .. } => XAuth::OAuth2 {
            client_id: client_id.clone(),
            client_secret: config.persona_secret(persona, "x.auth.client_secret"),
            access_token: secret(config, persona, "x.auth.access_token")?,
            refresh_token: config.persona_secret(persona, "x.auth.refresh_token"),
        },
    })
}
