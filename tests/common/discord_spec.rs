//! Discord's OpenAPI document (github.com/discord/discord-api-spec `specs/openapi.json`, MIT,
//! copied to `tests/fixtures/discord-openapi.json`) and JSON Schema checks against it, for the
//! simulator's contract test and the client's.

use serde_json::{Value, json};

/// The document.
pub fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/discord-openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("tests/fixtures/discord-openapi.json")).unwrap()
}

/// Validates `instance` against `schema` (OpenAPI 3.1 = JSON Schema 2020-12), with
/// `#/components/...` references resolved against the document.
pub fn check(spec: &Value, schema: &Value, instance: &Value, what: &str) {
    let mut root = schema.as_object().cloned().unwrap_or_default();
    root.insert("components".into(), spec["components"].clone());
    let validator = jsonschema::draft202012::new(&Value::Object(root)).expect("schema compiles");
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what}: {instance}\n{}", errors.join("\n"));
}

pub fn component(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The spec operation for a concrete method and path (without `/api/v10`): literal segments win.
pub fn operation<'a>(spec: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<(usize, &Value)> = None;
    for (template, item) in spec["paths"].as_object()? {
        let parts: Vec<&str> = template.split('/').collect();
        let matches = parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')));
        let Some(op) = item.get(method.to_lowercase()).filter(|_| matches) else { continue };
        let literal = parts.iter().filter(|t| !t.starts_with('{')).count();
        if best.is_none_or(|(n, _)| literal > n) {
            best = Some((literal, op));
        }
    }
    best.map(|(_, op)| op)
}

/// The success response schema of an operation.
pub fn response_schema<'a>(op: &'a Value, status: &str) -> &'a Value {
    &op["responses"][status]["content"]["application/json"]["schema"]
}
