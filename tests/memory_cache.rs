//! Memory's embedding cache in the real tree: answering a mention embeds the mention once (it is
//! remembered, and is the query of the recall) and the reply once (its draft is checked for
//! duplicates, and the published reply is remembered) — counted at an embedding provider
//! (`LlmSim`'s OpenAI-compatible `/embeddings`), which records every text it is asked for.

mod common;

use std::time::Duration;

use chorus::sim::llm::LlmSim;
use common::{Api, Sandbox, eventually};

const WAIT: Duration = Duration::from_secs(30);

/// How many times `text` was sent to the embedding provider.
fn times_embedded(llm: &LlmSim, text: &str) -> usize {
    llm.requests()
        .iter()
        .filter(|request| request.path.ends_with("/embeddings"))
        .filter_map(|request| request.body.get("input").and_then(|input| input.as_array()).cloned())
        .flatten()
        .filter(|input| input.as_str() == Some(text))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_embeds_the_mention_once_and_the_reply_once() {
    let llm = LlmSim::start().await.unwrap();
    let sandbox = Sandbox::new(&format!(
        "[llm]\ndefault_chain = [\"offline\"]\nembedding = {{ provider = \"sim\", model = \"sim-embed\" }}\n\n\
         [llm.providers.offline]\nkind = \"offline\"\n\n\
         [llm.providers.sim]\nkind = \"openai_compat\"\nbase_url = \"{}\"\nmodel = \"m\"\n",
        llm.openai_base_url()
    ));
    let service = sandbox.start().await;
    let api = Api::new(service.admin_addr());

    let text = "@ada what do you think about gardening in the rain?";
    let mention = api.post("sam", text).await;
    let reply = eventually(WAIT, "a reply to the mention", || async { api.replies(mention.id).await.pop() }).await;
    assert_eq!(reply.author, "ada");
    // The published reply is remembered, then embedded: wait until its memory has a vector.
    eventually(WAIT, "the reply's memory embedded", || async {
        let vectors = service.db().memory_vectors("sim-embed", 0, 10_000).await.ok()?;
        vectors.iter().any(|stored| stored.row.text == reply.text && stored.row.author == "ada").then_some(())
    })
    .await;
    // A few more sweeps and polls: nothing embeds either text again.
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(times_embedded(&llm, text), 1, "the mention: remembered and recalled with, embedded once");
    assert_eq!(times_embedded(&llm, &reply.text), 1, "the reply: checked and remembered, embedded once");
    service.shutdown().await;
}
