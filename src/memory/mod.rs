//! The Memory actor: stores every post, reply and inbound message of each persona, and recalls
//! the recent ones — of the persona, and of one conversation — for generation. Vector search and
//! semantic dedup arrive with the Memory issue; recall here is by recency.
//!
//! Writes are applied in mailbox order; recalls run in a task so a slow read never delays writes.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::metrics as m;
use crate::store::{Db, MemoryRow, NewMemory};

pub struct Memory;

pub struct MemoryArgs {
    pub db: Db,
}

pub struct MemoryState {
    db: Db,
}

/// What generation gets to remember.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recollection {
    /// The persona's latest own posts, newest first (replies stay in their conversation).
    pub recent: Vec<MemoryRow>,
    /// The latest messages of the conversation (both sides), newest first.
    pub conversation: Vec<MemoryRow>,
}

pub enum MemoryMsg {
    /// Store one memory.
    Remember(NewMemory),
    /// Recent memories of a persona and of one conversation.
    Recall {
        persona: String,
        /// `(platform, conversation id)`.
        conversation: Option<(String, String)>,
        recent: u32,
        in_conversation: u32,
        reply: RpcReplyPort<Recollection>,
    },
}

impl Actor for Memory {
    type Msg = MemoryMsg;
    type State = MemoryState;
    type Arguments = MemoryArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: MemoryArgs,
    ) -> Result<MemoryState, ActorProcessingErr> {
        Ok(MemoryState { db: args.db })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: MemoryMsg,
        state: &mut MemoryState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MemoryMsg::Remember(memory) => {
                // A lost memory degrades recall but must not lose the reply: log, count, go on.
                match state.db.insert_memory(&memory).await {
                    Ok(()) => metrics::counter!(m::MEMORIES_STORED, "kind" => memory.kind.as_str()).increment(1),
                    Err(err) => {
                        metrics::counter!(m::STORE_ERRORS, "operation" => "memory").increment(1);
                        tracing::warn!(error = %err, "cannot store memory");
                    }
                }
            }
            MemoryMsg::Recall { persona, conversation, recent, in_conversation, reply } => {
                let db = state.db.clone();
                tokio::spawn(async move {
                    let own = db.recent_memories(&persona, None, i64::from(recent)).await;
                    let thread = match &conversation {
                        Some((platform, id)) => {
                            db.recent_memories(&persona, Some((platform, id)), i64::from(in_conversation)).await
                        }
                        None => Ok(Vec::new()),
                    };
                    let recollection = match (own, thread) {
                        (Ok(recent), Ok(conversation)) => Recollection { recent, conversation },
                        (own, thread) => {
                            metrics::counter!(m::STORE_ERRORS, "operation" => "recall").increment(1);
                            tracing::warn!(
                                own_ok = own.is_ok(),
                                thread_ok = thread.is_ok(),
                                "recall failed, generating without memory"
                            );
                            Recollection { recent: own.unwrap_or_default(), conversation: thread.unwrap_or_default() }
                        }
                    };
                    let _ = reply.send(recollection);
                });
            }
        }
        Ok(())
    }
}
