//! The sandbox crowd: simulated people who mention the personas on the local platform every few
//! seconds, so a fresh `chorus run` shows conversations without any input. Sandbox mode only.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand::Rng;
use rand::seq::IndexedRandom;

use crate::config::Persona;
use crate::platform::local::LocalPlatform;
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
    /// Personas present on the local platform.
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
                let Some(text) = compose(&state.args.personas, &mut rand::rng()) else { return Ok(()) };
                let person = PEOPLE.choose(&mut rand::rng()).copied().unwrap_or("sam");
                if let Err(err) = state.args.local.post(person, &text, None, None, "crowd").await {
                    tracing::warn!(error = %err, "crowd could not post");
                }
            }
        }
        Ok(())
    }
}

/// A question to a random persona about one of its topics.
fn compose(personas: &[Arc<Persona>], rng: &mut impl Rng) -> Option<String> {
    let persona = personas.choose(rng)?;
    let topic = persona.topics.choose(rng)?;
    let question = QUESTIONS.choose(rng)?.replace("{topic}", topic);
    Some(format!("@{} {question}", persona.name))
}
