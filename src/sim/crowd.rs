//! The sandbox crowd: simulated people who mention the personas every few seconds — on the local
//! platform and on the X, Reddit and Discord simulators when those run (on Discord: an @mention
//! in #general or a direct message) — so a fresh `chorus run` shows conversations on every
//! platform without any input. Sandbox mode only.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::Rng;
use rand::seq::IndexedRandom;

use crate::config::{Config, Persona, PlatformKind};
use crate::platform::local::LocalPlatform;
use crate::sim::SandboxSims;
use crate::task::AbortOnDrop;

const PEOPLE: &[&str] = &["sam", "riley", "noor", "kai", "mina", "jules", "tomas", "ife"];
const QUESTIONS: &[&str] = &[
    "what's your take on {topic}?",
    "any advice for someone starting with {topic}?",
    "is {topic} overrated?",
    "what's the most common mistake people make with {topic}?",
    "how do you keep up with {topic}?",
    "quick one: what changed your mind about {topic}?",
];

pub struct Crowd;

pub struct CrowdArgs {
    pub local: LocalPlatform,
    pub sims: SandboxSims,
    pub config: Arc<Config>,
    pub personas: Vec<Arc<Persona>>,
    pub every: Duration,
}

pub struct CrowdState {
    args: CrowdArgs,
    _timer: AbortOnDrop,
}

pub enum CrowdMsg {
    /// Post one mention.
    Speak,
}

impl Actor for Crowd {
    type Msg = CrowdMsg;
    type State = CrowdState;
    type Arguments = CrowdArgs;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, args: CrowdArgs) -> Result<CrowdState, ActorProcessingErr> {
        let timer = myself.send_interval(args.every, || CrowdMsg::Speak).into();
        Ok(CrowdState { args, _timer: timer })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: CrowdMsg,
        state: &mut CrowdState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CrowdMsg::Speak => {
                let Some((persona, platform, question)) = compose(&state.args, &mut rand::rng()) else {
                    return Ok(());
                };
                let person = PEOPLE.choose(&mut rand::rng()).copied().unwrap_or("sam");
                let handle = persona.handle_on(platform);
                let text = format!("@{handle} {question}");
                match platform {
                    PlatformKind::Local => {
                        if let Err(err) = state.args.local.post(person, &text, None, None, "crowd").await {
                            tracing::warn!(error = %err, "crowd could not post");
                        }
                    }
                    PlatformKind::X => {
                        if let Some(sim) = &state.args.sims.x {
                            sim.mention(person, &handle, &text, None);
                        }
                    }
                    PlatformKind::Reddit => {
                        if let Some(sim) = &state.args.sims.reddit {
                            sim.mention(person, &handle, &text);
                        }
                    }
                    PlatformKind::Discord => {
                        if let Some(sim) = &state.args.sims.discord
                            && let Some(bot) = sim.user_id(&handle)
                        {
                            let user = sim.user_id(person).unwrap_or_else(|| sim.add_user(person));
                            if rand::rng().random_bool(0.7) {
                                let content = format!("<@{bot}> {question}");
                                sim.mention(&user, &sim.text_channel_id(), &content, &[&bot]);
                            } else {
                                sim.dm(&user, &bot, &question);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A random persona, one of its platforms the crowd can reach, and a question on one of its topics.
fn compose(args: &CrowdArgs, rng: &mut impl Rng) -> Option<(Arc<Persona>, PlatformKind, String)> {
    let service = &args.config.service;
    let reachable = |platform: &PlatformKind| match platform {
        PlatformKind::Local => service.platform_enabled(PlatformKind::Local),
        PlatformKind::X => service.platform_enabled(PlatformKind::X) && args.sims.x.is_some(),
        PlatformKind::Reddit => service.platform_enabled(PlatformKind::Reddit) && args.sims.reddit.is_some(),
        PlatformKind::Discord => service.platform_enabled(PlatformKind::Discord) && args.sims.discord.is_some(),
    };
    let candidates: Vec<&Arc<Persona>> =
        args.personas.iter().filter(|persona| persona.platforms.iter().any(reachable)).collect();
    let persona = *candidates.choose(rng)?;
    let platforms: Vec<PlatformKind> = persona.platforms.iter().copied().filter(reachable).collect();
    let platform = *platforms.choose(rng)?;
    let topic = persona.topics.choose(rng)?;
    let question = QUESTIONS.choose(rng)?.replace("{topic}", topic);
    Some((persona.clone(), platform, question))
}
