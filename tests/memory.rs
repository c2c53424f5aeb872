//! Memory in the real tree: semantic dedup across personas and platforms, recall by meaning among
//! thousands of unrelated memories, a change of embedding model that never mixes vectors, retention
//! by kind and per-persona cap, and the token-protected admin search.

mod common;

use std::time::Duration;

use chorus::memory::{MemoryMsg, Recollection, Verdict};
use chorus::service::Service;
use chorus::sim::llm::LlmSim;
use chorus::store::{MemoryKind, NewMemory};
use common::{Api, Sandbox, TOKEN, eventually};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Waits past the next full hour (UTC) when it is less than `margin` away.
async fn start_clear_of_the_hour(margin: Duration) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let to_the_hour = Duration::from_secs(3600 - now.as_secs() % 3600);
    if to_the_hour < margin {
        tokio::time::sleep(to_the_hour + Duration::from_secs(1)).await;
    }
}

fn memory(persona: &str, platform: &str, kind: MemoryKind, conversation: Option<&str>, text: &str) -> NewMemory {
    NewMemory {
        persona: persona.into(),
        platform: platform.into(),
        kind,
        conversation: conversation.map(str::to_owned),
        author: if kind == MemoryKind::Inbound { "sam".into() } else { persona.into() },
        text: text.into(),
    }
}

/// The Memory actor, once the tree has started it.
async fn actor(service: &Service) -> ractor::ActorRef<MemoryMsg> {
    eventually(WAIT, "memory is up", || async { service.memory() }).await
}

async fn remember(service: &Service, new: NewMemory) {
    actor(service).await.send_message(MemoryMsg::Remember(new)).unwrap();
}

async fn check(service: &Service, key: &str, text: &str) -> Verdict {
    let memory = actor(service).await;
    let (key, text) = (key.to_owned(), text.to_owned());
    ractor::call_t!(memory, |reply| MemoryMsg::Check { key, text, reply }, 10_000).unwrap()
}

async fn search(service: &Service, persona: &str, query: &str, k: usize) -> Vec<chorus::memory::Hit> {
    let memory = actor(service).await;
    let (persona, query) = (persona.to_owned(), query.to_owned());
    ractor::call_t!(memory, |reply| MemoryMsg::Search { persona, query, k, kind: None, since: None, reply }, 10_000)
        .unwrap()
}

/// ada's recollection for answering `query` in `conversation` (platform, id).
async fn recall(service: &Service, (platform, conversation): (&str, &str), query: &str) -> Recollection {
    let memory = actor(service).await;
    let (conversation, query) = (Some((platform.to_owned(), conversation.to_owned())), Some(query.to_owned()));
    let persona = "ada".to_owned();
    let recall =
        |reply| MemoryMsg::Recall { persona, conversation, query, recent: 5, in_conversation: 5, relevant: 3, reply };
    ractor::call_t!(memory, recall, 10_000).unwrap()
}

/// Waits until a search for `text` finds it (it is stored, embedded and indexed).
async fn indexed(service: &Service, persona: &str, text: &str) {
    eventually(WAIT, "the memory is indexed", || async {
        search(service, persona, text, 1).await.first().filter(|hit| hit.text == text).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reworded_post_is_a_duplicate_across_personas_and_platforms_but_a_new_take_is_not() {
    let sandbox = Sandbox::new("");
    let service = sandbox.start().await;
    let yesterday = "Planted garlic today. Like a good refactor, the payoff comes months later.";
    remember(&service, memory("ada", "x", MemoryKind::Post, None, yesterday)).await;
    indexed(&service, "ada", yesterday).await;

    // bob, on another platform, drafts the same thought in other words.
    let reworded = "Planted some garlic this morning: like any good refactor, the payoff comes months later!";
    match check(&service, "post:local:bob:1", reworded).await {
        Verdict::Duplicate { similarity, .. } => assert!(similarity >= 0.85, "{similarity}"),
        Verdict::Unique => panic!("a rewording of ada's post went through"),
    }
    let new_take = "My tomatoes finally ripened; gardening rewards whoever waters every single morning.";
    assert_eq!(check(&service, "post:reddit:bob:1", new_take).await, Verdict::Unique, "same topic, new post");
    // The accepted draft is reserved: a second persona cannot say it at the same moment...
    assert!(matches!(check(&service, "post:local:ada:9", new_take).await, Verdict::Duplicate { .. }));
    // ... while a retry of the same item (same outbox key) is not blocked by its own reservation.
    assert_eq!(check(&service, "post:reddit:bob:1", new_take).await, Verdict::Unique);
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_post_from_two_personas_is_published_once() {
    // The simulated model answers every post brief with the same text; ada and bob share topics.
    let llm = LlmSim::start().await.unwrap();
    let sandbox = Sandbox::new(&format!(
        "[llm]\ndefault_chain = [\"sim\"]\n\n[llm.providers.sim]\nkind = \"openai_compat\"\nbase_url = \"{}\"\nmodel = \"m\"\n\n\
         [team]\nmin_gap = \"0s\"\n",
        llm.openai_base_url()
    ));
    // One topic each, the same: the plan gives it to ada and, with nothing else left, to bob too
    // (and no gap between their posts), so the model is asked for the same post twice.
    sandbox.write_persona("ada", &["compilers"]);
    sandbox.write_persona("bob", &["compilers"]);
    // Their slots are on the hour (every 1h): a run that crossed one would plan the next slot
    // for both and ask for more posts than this test counts.
    start_clear_of_the_hour(Duration::from_secs(45)).await;
    let service = sandbox.start().await;
    let posts = eventually(WAIT, "one scheduled post", || async {
        let timeline = Api::new(service.admin_addr()).timeline().await;
        let posts: Vec<_> = timeline.into_iter().filter(|post| post.reply_to.is_none()).collect();
        (!posts.is_empty()).then_some(posts)
    })
    .await;
    // Both slots are due within seconds of the start; give the second every chance.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let timeline = Api::new(service.admin_addr()).timeline().await;
    let posts_now: Vec<_> = timeline.iter().filter(|post| post.reply_to.is_none()).collect();
    assert_eq!(posts_now.len(), 1, "the second persona's identical post was dropped: {posts_now:?}");
    assert_eq!(posts_now[0].text, posts[0].text);
    let briefs = llm.requests().iter().filter(|r| r.path.ends_with("/chat/completions")).count();
    assert_eq!(briefs, 1 + 3, "one post, then one draft and two rewrites for the duplicate");
    let metrics = reqwest::get(format!("http://{}/metrics", service.admin_addr())).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("chorus_dedup_outcomes_total{outcome=\"dropped\",kind=\"post\"} 1"),
        "counted: {}",
        metrics.lines().filter(|l| l.contains("dedup")).collect::<Vec<_>>().join("\n")
    );
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_finds_the_relevant_memory_among_thousands_of_unrelated_ones() {
    let sandbox = Sandbox::new("");
    let service = sandbox.start().await;
    let words = [
        "database", "replica", "kettle", "bicycle", "invoice", "harbour", "violin", "glacier", "pigeon", "ledger",
        "lantern", "meadow", "tractor", "saddle", "compass", "orchard", "furnace", "marble", "thimble", "canyon",
    ];
    for n in 0..3000usize {
        let text = format!(
            "Note {n}: the {} near the {} needed a new {} before the {} arrived.",
            words[n % 20],
            words[(n / 20) % 20],
            words[(n / 7) % 20],
            words[(n / 3) % 20]
        );
        remember(&service, memory("ada", "local", MemoryKind::Post, None, &text)).await;
    }
    let relevant = "Sourdough starter needs feeding twice a day when the kitchen is warm.";
    remember(&service, memory("ada", "local", MemoryKind::Post, None, relevant)).await;
    indexed(&service, "ada", relevant).await;
    // Every note is embedded (and so indexed) before the question: they all compete.
    eventually(WAIT, "the notes embedded", || async {
        let models = service.db().embedding_models().await.unwrap();
        let embedded: i64 = models.iter().filter(|(model, _)| model.is_some()).map(|(_, n)| n).sum();
        (embedded >= 3001).then_some(())
    })
    .await;

    let recollection = recall(&service, ("local", "thread-1"), "how often should I feed my sourdough starter?").await;
    assert_eq!(recollection.relevant.first().map(|m| m.text.as_str()), Some(relevant));
    // A DM-like conversation of another person on Discord never comes back by meaning.
    let secret = "My sourdough starter is named Clint and my door code is 4821.";
    remember(&service, memory("ada", "discord", MemoryKind::Inbound, Some("77:1"), secret)).await;
    indexed(&service, "ada", secret).await;
    let recollection = recall(&service, ("discord", "77:2"), "what is your sourdough starter called?").await;
    assert!(recollection.relevant.iter().all(|m| m.text != secret), "another person's DM stays out");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_persona_is_searched_from_the_store_with_what_came_since() {
    let sandbox = Sandbox::new("");
    let service = sandbox.start().await;
    let before = "The lighthouse keeper logs every ship by lantern light.";
    remember(&service, memory("ada", "local", MemoryKind::Post, None, before)).await;
    indexed(&service, "ada", before).await;
    service.shutdown().await;

    // A persona's index is read from the store at its first search; a memory stored before that
    // search (its vector goes to the store only) and one stored after are both found.
    let service = sandbox.start().await;
    let since = "Sourdough starter wants flour and water twice a day.";
    remember(&service, memory("ada", "local", MemoryKind::Post, None, since)).await;
    indexed(&service, "ada", since).await;
    let later = "Glaciers carve valleys slowly, a few metres a year.";
    remember(&service, memory("ada", "local", MemoryKind::Post, None, later)).await;
    indexed(&service, "ada", later).await;
    let hits = search(&service, "ada", before, 1).await;
    assert_eq!(hits.first().map(|hit| hit.text.as_str()), Some(before), "the memory of the first run");
    assert!(search(&service, "bob", before, 5).await.iter().all(|hit| hit.text != before), "bob's index is his own");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_embedding_model_re_embeds_in_the_background_and_never_mixes_dimensions() {
    let sandbox = Sandbox::new("");
    let service = sandbox.start().await;
    let texts = ["Garlic goes in before the first frost.", "Compilers are patient teachers.", "Water in the morning."];
    for text in texts {
        remember(&service, memory("ada", "local", MemoryKind::Post, None, text)).await;
    }
    for text in texts {
        indexed(&service, "ada", text).await;
    }
    service.shutdown().await;

    // The same database, now with an OpenAI-compatible embedding model of 16 dimensions.
    let llm = LlmSim::start().await.unwrap();
    llm.set_embedding_dimension(16);
    let config = std::fs::read_to_string(sandbox.config_path()).unwrap();
    std::fs::write(
        sandbox.config_path(),
        format!(
            "{config}\n[llm]\ndefault_chain = [\"offline\"]\nembedding = {{ provider = \"sim\", model = \"sim-embed\" }}\n\n\
             [llm.providers.offline]\nkind = \"offline\"\n\n\
             [llm.providers.sim]\nkind = \"openai_compat\"\nbase_url = \"{}\"\nmodel = \"m\"\n\n[memory]\nsweep_every = \"100ms\"\n",
            llm.openai_base_url()
        ),
    )
    .unwrap();
    let service = sandbox.start().await;
    let models = eventually(WAIT, "every memory re-embedded with the new model", || async {
        let models = service.db().embedding_models().await.unwrap();
        models.iter().all(|(model, _)| model.as_deref() == Some("sim-embed")).then_some(models)
    })
    .await;
    assert!(models.iter().map(|(_, n)| n).sum::<i64>() >= 3);
    // Searching works on the new vectors only (a 384-d offline vector is never compared with them).
    eventually(WAIT, "search on the new model", || async {
        let hits = search(&service, "ada", "Garlic goes in before the first frost.", 10).await;
        (hits.len() >= texts.len()).then_some(())
    })
    .await;
    let embedded = llm.requests().iter().filter(|r| r.path.ends_with("/embeddings")).count();
    assert!(embedded >= 1, "the new model was asked");
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_what_it_should_and_nothing_else() {
    let sandbox = Sandbox::new(
        "[memory]\nsweep_every = \"100ms\"\n\n[memory.retention]\ninbound = \"1500ms\"\nmax_per_persona = 4\n",
    );
    // Only the memories this test writes: ada posts nothing on her own.
    let persona = sandbox.dir.path().join("personas").join("ada.toml");
    let text = std::fs::read_to_string(&persona).unwrap();
    std::fs::write(&persona, format!("{text}max_per_day = 0\n")).unwrap();
    let service = sandbox.start().await;
    remember(&service, memory("ada", "local", MemoryKind::Inbound, Some("t1"), "An old question about compost.")).await;
    for n in 0..3 {
        remember(&service, memory("ada", "local", MemoryKind::Post, None, &format!("Post number {n} about tomatoes.")))
            .await;
    }
    indexed(&service, "ada", "Post number 2 about tomatoes.").await;
    // Past 1.5 s the inbound message goes; the posts stay (kept forever, under the cap of 4).
    eventually(WAIT, "the inbound memory expired", || async {
        let rows = service.db().recent_memories("ada", Some(("local", "t1")), 10).await.unwrap();
        rows.is_empty().then_some(())
    })
    .await;
    let posts = service.db().recent_memories("ada", None, 10).await.unwrap();
    assert_eq!(posts.len(), 3, "posts are kept");
    assert!(search(&service, "ada", "An old question about compost.", 10).await.iter().all(|h| h.kind != "inbound"));

    // Over the cap, the oldest go; the persona file's facts are never counted or deleted.
    for n in 3..6 {
        remember(&service, memory("ada", "local", MemoryKind::Post, None, &format!("Post number {n} about tomatoes.")))
            .await;
    }
    let kept = eventually(WAIT, "the newest stored and the rest trimmed to the cap", || async {
        let posts = service.db().recent_memories("ada", None, 10).await.unwrap();
        let newest_in = posts.first().is_some_and(|m| m.text == "Post number 5 about tomatoes.");
        (newest_in && posts.len() == 4).then_some(posts)
    })
    .await;
    let texts: Vec<&str> = kept.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Post number 5 about tomatoes.",
            "Post number 4 about tomatoes.",
            "Post number 3 about tomatoes.",
            "Post number 2 about tomatoes."
        ]
    );
    let facts = search(&service, "ada", "ada is a test persona", 10).await;
    assert!(facts.iter().any(|hit| hit.kind == "fact"), "facts stay: {facts:?}");
    assert!(
        search(&service, "ada", "Post number 0 about tomatoes.", 10)
            .await
            .iter()
            .all(|h| h.text != "Post number 0 about tomatoes.")
    );
    service.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_search_needs_the_token_and_finds_by_meaning() {
    let sandbox = Sandbox::new("");
    let service = sandbox.start().await;
    let text = "The best debugger is a clear explanation to a colleague.";
    remember(&service, memory("ada", "x", MemoryKind::Post, None, text)).await;
    indexed(&service, "ada", text).await;
    let url = format!("http://{}/admin/memory/ada/search?q=explaining+bugs+to+a+colleague&k=3", service.admin_addr());
    let client = reqwest::Client::new();
    assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
    let response = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["hits"][0]["text"], text, "{body}");
    let bad = client.get(format!("{url}&kind=gossip")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    // Filters: by kind, and by time.
    let replies: Value =
        client.get(format!("{url}&kind=reply")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert!(replies["hits"].as_array().unwrap().is_empty(), "no replies stored: {replies}");
    let future = chorus::store::now_ms() + 60_000;
    let later: Value =
        client.get(format!("{url}&since={future}")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert!(later["hits"].as_array().unwrap().is_empty(), "nothing is that new: {later}");
    service.shutdown().await;
}

/// The value of a counter sample on the admin `/metrics` page (0 when absent).
async fn counter(service: &Service, sample: &str) -> f64 {
    Api::new(service.admin_addr()).sample(sample).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_exact_threshold_a_graph_is_built_in_the_background_with_everything_stored_meanwhile() {
    let sandbox = Sandbox::new("[memory]\nexact_threshold = 300\n");
    let service = sandbox.start().await;
    let built = r#"chorus_memory_graph_builds_total{outcome="built"}"#;
    let first = "The harbour master keeps the tide tables by the door.";
    remember(&service, memory("ada", "local", MemoryKind::Post, None, first)).await;
    indexed(&service, "ada", first).await;
    assert_eq!(counter(&service, built).await, 0.0);
    let words = ["kettle", "violin", "glacier", "pigeon", "ledger", "lantern", "meadow", "saddle", "orchard", "marble"];
    let notes: Vec<String> = (0..600usize)
        .map(|n| {
            format!(
                "Note {n}: a {} and a {} beside the {}.",
                words[n % 10],
                words[(n / 10) % 10],
                words[(n / 100) % 10]
            )
        })
        .collect();
    // The 301st post starts two builds, of ada's index and of the team's outputs; the rest arrive
    // while they run (or after).
    for note in &notes {
        remember(&service, memory("ada", "local", MemoryKind::Post, None, note)).await;
    }
    eventually(WAIT, "both graphs built", || async { (counter(&service, built).await >= 2.0).then_some(()) }).await;
    eventually(WAIT, "every note embedded", || async {
        let models = service.db().embedding_models().await.unwrap();
        let embedded: i64 = models.iter().filter(|(model, _)| model.is_some()).map(|(_, n)| n).sum();
        (embedded >= 601).then_some(())
    })
    .await;
    // The notes are found by their own text, those stored before, during and after the build.
    // (An HNSW graph may leave a node or two unreachable; a lost catch-up loses every note
    // stored during the build.)
    let mut missed = Vec::new();
    for note in std::iter::once(&first.to_owned()).chain(&notes) {
        if !search(&service, "ada", note, 5).await.iter().any(|hit| &hit.text == note) {
            missed.push(note.clone());
        }
    }
    assert!(missed.len() <= 6, "{} of 601 not found: {missed:?}", missed.len());
    // The outputs' graph still catches a repeated post: one in every 30 (twenty, from those
    // stored before, during and after the build), with the same allowance for unreachable nodes.
    let mut uncaught = Vec::new();
    for (n, note) in notes.iter().enumerate().step_by(30) {
        if !matches!(check(&service, &format!("draft-{n}"), note).await, Verdict::Duplicate { .. }) {
            uncaught.push(note.clone());
        }
    }
    assert!(uncaught.len() <= 1, "{} of 20 repeated posts not caught: {uncaught:?}", uncaught.len());
    assert_eq!(counter(&service, built).await, 2.0, "a build each: an index stays a graph");
    service.shutdown().await;
}
