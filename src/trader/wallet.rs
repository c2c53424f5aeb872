//! The trading keypair, in a type that never prints its secret.
//!
//! A [`Wallet`] is read from a Solana CLI keypair file (a JSON array of 64 integers: the 32-byte
//! secret seed, then the 32-byte public key), usually through a resolved [`Secret`]. Its `Debug`
//! shows only the public key, it has no `Display`, and no [`WalletError`] carries key bytes: a
//! malformed file is reported by position and count, never by content. The signing key zeroizes
//! itself on drop (ed25519-dalek's `ZeroizeOnDrop`); the transient copies made while parsing a
//! keypair file are not wiped (the file's text is already in a [`Secret`] the caller holds).

use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::Value;

use crate::config::Secret;
use crate::trader::tx::{Pubkey, SIGNATURE_LEN};

/// Bytes in a keypair file: seed then public key.
const KEYPAIR_LEN: usize = 64;
/// Bytes in the secret seed.
const SEED_LEN: usize = 32;

/// An ed25519 keypair that signs Solana transactions. `Debug` prints `Wallet(<pubkey>)`.
pub struct Wallet {
    key: SigningKey,
}

impl fmt::Debug for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Wallet({})", self.pubkey())
    }
}

/// Why a keypair could not be read. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// Not a JSON array (the parser's position only, not its message, which may quote the text).
    #[error("keypair is not a JSON array (line {line}, column {column})")]
    NotAnArray { line: usize, column: usize },
    #[error("keypair has {found} numbers, expected 64")]
    Length { found: usize },
    #[error("keypair element {index} is not an integer in 0..=255")]
    ByteOutOfRange { index: usize },
    #[error("keypair public half does not match its secret seed")]
    PublicKeyMismatch,
}

impl Wallet {
    /// Reads a Solana CLI keypair file's contents. The public half must be the key derived from
    /// the seed, which catches a file assembled from two keypairs.
    pub fn from_keypair_json(text: &str) -> Result<Wallet, WalletError> {
        let items: Vec<Value> = serde_json::from_str(text)
            .map_err(|error| WalletError::NotAnArray { line: error.line(), column: error.column() })?;
        if items.len() != KEYPAIR_LEN {
            return Err(WalletError::Length { found: items.len() });
        }
        let mut bytes = [0u8; KEYPAIR_LEN];
        for (index, (item, byte)) in items.iter().zip(bytes.iter_mut()).enumerate() {
            let Some(value) = item.as_u64().and_then(|value| u8::try_from(value).ok()) else {
                return Err(WalletError::ByteOutOfRange { index });
            };
            *byte = value;
        }
        let mut seed = [0u8; SEED_LEN];
        seed.copy_from_slice(&bytes[..SEED_LEN]);
        let wallet = Self::from_seed(seed);
        if wallet.key.verifying_key().as_bytes()[..] != bytes[SEED_LEN..] {
            return Err(WalletError::PublicKeyMismatch);
        }
        Ok(wallet)
    }

    /// [`Wallet::from_keypair_json`] of a resolved secret (the keypair file's contents).
    pub fn from_secret(secret: &Secret) -> Result<Wallet, WalletError> {
        Self::from_keypair_json(secret.expose())
    }

    /// A wallet from its 32-byte secret seed (tests and simulators).
    pub fn from_seed(seed: [u8; SEED_LEN]) -> Wallet {
        Wallet { key: SigningKey::from_bytes(&seed) }
    }

    pub fn pubkey(&self) -> Pubkey {
        Pubkey(self.key.verifying_key().to_bytes())
    }

    /// The ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.key.sign(message).to_bytes()
    }

    /// The keypair file's contents (`[n,n,…]`, 64 numbers), for tests that write keypair files.
    pub fn to_keypair_json(&self) -> String {
        let numbers: Vec<String> = self.key.to_keypair_bytes().iter().map(u8::to_string).collect();
        format!("[{}]", numbers.join(","))
    }
}

/// Whether `signature` is `pubkey`'s ed25519 signature of `message`, with the strict checks the
/// Solana runtime applies (no small-order keys, canonical encodings). A key that is not a curve
/// point verifies nothing.
pub fn verify(pubkey: &Pubkey, message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&pubkey.0) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypair_json_round_trips() {
        let wallet = Wallet::from_seed([42; 32]);
        let json = wallet.to_keypair_json();
        assert!(json.starts_with("[42,42,"), "{json}");
        let again = Wallet::from_keypair_json(&json).unwrap();
        assert_eq!(again.pubkey(), wallet.pubkey());
        let from_secret = Wallet::from_secret(&Secret::new(format!("{json}\n"))).unwrap();
        assert_eq!(from_secret.pubkey(), wallet.pubkey());

        let signature = again.sign(b"hello");
        assert!(verify(&wallet.pubkey(), b"hello", &signature));
        assert!(!verify(&wallet.pubkey(), b"hellO", &signature));
        assert!(!verify(&Wallet::from_seed([1; 32]).pubkey(), b"hello", &signature));
    }

    #[test]
    fn a_mismatched_public_half_is_refused() {
        let seed_of = Wallet::from_seed([1; 32]).key.to_keypair_bytes();
        let public_of = Wallet::from_seed([2; 32]).key.to_keypair_bytes();
        let mixed: Vec<String> = seed_of[..32].iter().chain(&public_of[32..]).map(u8::to_string).collect();
        let json = format!("[{}]", mixed.join(","));
        assert_eq!(Wallet::from_keypair_json(&json).unwrap_err(), WalletError::PublicKeyMismatch);
    }

    #[test]
    fn wrong_lengths_and_values_are_refused() {
        let json = Wallet::from_seed([3; 32]).to_keypair_json();
        let numbers: Vec<&str> = json.trim_matches(['[', ']']).split(',').collect();

        let short = format!("[{}]", numbers[..63].join(","));
        assert_eq!(Wallet::from_keypair_json(&short).unwrap_err(), WalletError::Length { found: 63 });
        let long = format!("[{},0]", numbers.join(","));
        assert_eq!(Wallet::from_keypair_json(&long).unwrap_err(), WalletError::Length { found: 65 });

        for bad in ["256", "-1", "1.5", "\"7\"", "null"] {
            let mut replaced = numbers.clone();
            replaced[10] = bad;
            let text = format!("[{}]", replaced.join(","));
            assert_eq!(
                Wallet::from_keypair_json(&text).unwrap_err(),
                WalletError::ByteOutOfRange { index: 10 },
                "{bad}"
            );
        }

        for not_array in ["", "{}", "\"secret\"", "[1,2"] {
            assert!(matches!(Wallet::from_keypair_json(not_array), Err(WalletError::NotAnArray { .. })), "{not_array}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_key_material() {
        let wallet = Wallet::from_seed([200; 32]);
        let debug = format!("{wallet:?}");
        assert_eq!(debug, format!("Wallet({})", wallet.pubkey()));
        assert!(!debug.contains("200"));

        // A file that is JSON but not an array of numbers: the error must not quote it.
        let secret_text = "\"5J3mBbAH58CpQ3Y5RNJpUKPE62SQ5tfcvU2JpbnkeyhfsYB1Jcn\"";
        let error = Wallet::from_keypair_json(secret_text).unwrap_err().to_string();
        assert!(!error.contains("5J3m"), "{error}");
    }
}
