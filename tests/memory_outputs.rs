//! The team's index of recent outputs (dedup), in a process of its own: its size is a
//! process-wide gauge.

mod common;

use std::time::Duration;

use chorus::memory::{MemoryMsg, Verdict};
use chorus::service::Service;
use chorus::store::{MemoryKind, NewMemory};
use common::{Api, Sandbox, eventually};

const WAIT: Duration = Duration::from_secs(30);

async fn check(service: &Service, key: &str, text: &str) -> Verdict {
    let memory = eventually(WAIT, "memory is up", || async { service.memory() }).await;
    let (key, text) = (key.to_owned(), text.to_owned());
    ractor::call_t!(memory, |reply| MemoryMsg::Check { key, text, reply }, 10_000).unwrap()
}

async fn gauge(service: &Service, name: &str) -> Option<f64> {
    Api::new(service.admin_addr()).sample(name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_draft_keeps_one_vector_in_the_outputs_index_not_two() {
    // Only a repeated text is a duplicate here, so every draft below is unique.
    let sandbox = Sandbox::new("[memory]\ndedup_threshold = 0.9999\n");
    let service = sandbox.start().await;
    let memory = eventually(WAIT, "memory is up", || async { service.memory() }).await;
    let texts: Vec<String> = (0..40).map(|n| format!("Draft {n}: the {n}th lantern of the harbour is lit.")).collect();
    for (n, text) in texts.iter().enumerate() {
        assert!(matches!(check(&service, &format!("draft-{n}"), text).await, Verdict::Unique));
    }
    assert_eq!(gauge(&service, "chorus_memory_outputs_vectors").await, Some(40.0), "one reservation a draft");
    // Published: each draft's memory comes with the same text (and vector).
    for text in &texts {
        let post = NewMemory {
            persona: "ada".into(),
            platform: "local".into(),
            kind: MemoryKind::Post,
            conversation: None,
            author: "ada".into(),
            text: text.clone(),
        };
        memory.send_message(MemoryMsg::Remember(post)).unwrap();
    }
    // Each memory is in ada's index once it is in the outputs' (the same call adds it to both).
    for text in &texts {
        eventually(WAIT, "the draft's memory indexed", || async {
            let (persona, query) = ("ada".to_owned(), text.clone());
            let search = |reply| MemoryMsg::Search { persona, query, k: 1, kind: None, since: None, reply };
            let hits = ractor::call_t!(memory, search, 10_000).unwrap();
            hits.first().filter(|hit| &hit.text == text).map(|_| ())
        })
        .await;
    }
    // The memories took the reservations' places: still one vector a draft.
    eventually(WAIT, "one vector a draft", || async {
        (gauge(&service, "chorus_memory_outputs_vectors").await == Some(40.0)).then_some(())
    })
    .await;
    // And a draft repeating a published one is still caught, by that memory.
    assert!(matches!(check(&service, "draft-new", &texts[7]).await, Verdict::Duplicate { .. }));
    service.shutdown().await;
}
