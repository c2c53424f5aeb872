//! Secrets: read from the environment or a file, never from the config text itself, and never
//! printed. `Secret` redacts itself in `Debug` and `Display`; the only way to the value is
//! [`Secret::expose`], which call sites use at the moment they put it on the wire.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// Where a secret comes from, as written in the config: `{ env = "NAME" }` or `{ file = "path" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub env: Option<String>,
    pub file: Option<String>,
}

/// A resolved secret value. Prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw value, for the one place that sends it (an HTTP header, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl SecretRef {
    /// Resolves the reference. `base` is the directory relative file paths are read from.
    /// Errors describe the source (variable name or path), never the value.
    pub fn resolve(&self, base: &Path) -> Result<Secret, String> {
        match (&self.env, &self.file) {
            (Some(var), None) => match std::env::var(var) {
                Ok(value) if !value.trim().is_empty() => Ok(Secret(value.trim().to_owned())),
                Ok(_) => Err(format!("environment variable {var} is empty")),
                Err(_) => Err(format!("environment variable {var} is not set")),
            },
            (None, Some(file)) => {
                let path = base.join(file);
                match std::fs::read_to_string(&path) {
                    Ok(value) if !value.trim().is_empty() => Ok(Secret(value.trim().to_owned())),
                    Ok(_) => Err(format!("secret file {} is empty", path.display())),
                    Err(err) => Err(format!("cannot read secret file {}: {err}", path.display())),
                }
            }
            _ => Err("expected exactly one of `env` or `file`".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let secret = Secret::new("sk-very-secret");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert!(!format!("{secret:?}").contains("sk-very"));
        assert_eq!(secret.expose(), "sk-very-secret");
    }

    #[test]
    fn file_secret_is_trimmed_and_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "abc\n").unwrap();
        let found = SecretRef { env: None, file: Some("key".into()) };
        assert_eq!(found.resolve(dir.path()).unwrap().expose(), "abc");
        let missing = SecretRef { env: None, file: Some("nope".into()) };
        assert!(missing.resolve(dir.path()).unwrap_err().contains("nope"));
        let both = SecretRef { env: Some("A".into()), file: Some("b".into()) };
        assert!(both.resolve(dir.path()).is_err());
    }
}
