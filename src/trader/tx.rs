//! The Solana transaction wire format, just enough to check and sign the transaction Jupiter's
//! `POST /swap` returns, without the Solana SDK.
//!
//! A serialized transaction is a compact-u16 count of signatures, the 64-byte signatures, then the
//! message: the exact bytes every signer signs. A message is either legacy or versioned (first
//! byte `0x80 | version`; only version 0 exists). Both hold a [`MessageHeader`], the static
//! account keys (fee payer first, signers before non-signers), a recent blockhash and the
//! instructions; a v0 message ends with its address table lookups.
//!
//! [`Transaction::from_bytes`] parses the whole message and checks its structure (counts that
//! fit, indexes in range, no trailing bytes, one signature slot per required signer), so that a
//! [`Transaction`] held by the Trader is well formed. It does not check signatures:
//! [`Transaction::verify`] does. Signing with [`Transaction::sign`] fills the wallet's slot.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::trader::wallet::{self, Wallet};

/// Length of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of a public key and of a blockhash.
const KEY_LEN: usize = 32;
/// The high bit of a message's first byte marks a versioned message.
const VERSION_PREFIX: u8 = 0x80;

/// A Solana address: an ed25519 public key (or a program-derived address). `Display`, `Debug` and
/// [`FromStr`] use base58, as every Solana tool does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pubkey(pub [u8; KEY_LEN]);

impl fmt::Display for Pubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for Pubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pubkey({self})")
    }
}

impl FromStr for Pubkey {
    type Err = TxError;

    /// Base58 decoding to exactly 32 bytes.
    fn from_str(text: &str) -> Result<Self, TxError> {
        let bytes = bs58::decode(text).into_vec().map_err(|_| TxError::Base58)?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| TxError::KeyLength)?;
        Ok(Self(key))
    }
}

/// A transaction: its signature slots and the message they sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// One slot per required signer, in the order of the message's account keys; an unsigned slot
    /// is all zeros.
    pub signatures: Vec<[u8; SIGNATURE_LEN]>,
    /// The serialized message: the exact bytes that are signed.
    pub message: Vec<u8>,
}

/// The message header: its version and how its account keys split into signers and read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// `None` for a legacy message, `Some(0)` for v0.
    pub version: Option<u8>,
    /// The first this many account keys must sign; the first of them pays the fee.
    pub num_required_signatures: u8,
    /// The last this many signers are read-only.
    pub num_readonly_signed: u8,
    /// The last this many non-signer static keys are read-only.
    pub num_readonly_unsigned: u8,
}

/// Why bytes are not a transaction this module accepts, or why signing or verifying failed.
/// Messages name positions and counts, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transaction truncated")]
    Truncated,
    #[error("trailing bytes after the transaction message")]
    TrailingBytes,
    #[error("invalid compact-u16 length")]
    BadCompactU16,
    #[error("unsupported message version {0}")]
    UnsupportedVersion(u8),
    /// The message is well encoded but inconsistent (a header that does not fit the keys, an
    /// index out of range, a duplicate key).
    #[error("invalid message: {0}")]
    InvalidMessage(&'static str),
    #[error("{found} signature slots for {required} required signers")]
    SignatureCount { found: usize, required: usize },
    #[error("{pubkey} is not a required signer of this transaction")]
    NotASigner { pubkey: Pubkey },
    #[error("signature {index} is missing")]
    MissingSignature { index: usize },
    #[error("signature {index} does not verify")]
    BadSignature { index: usize },
    #[error("invalid base64")]
    Base64,
    #[error("invalid base58")]
    Base58,
    #[error("a public key must be 32 bytes")]
    KeyLength,
}

/// A message's fields that callers read; the instructions are validated and dropped.
struct Message {
    header: MessageHeader,
    keys: Vec<Pubkey>,
    blockhash: [u8; KEY_LEN],
}

/// A cursor over bytes that refuses to read past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], TxError> {
        let end = self.at.checked_add(len).ok_or(TxError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(TxError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, TxError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TxError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    /// A compact-u16 ("short vec" length): 7 bits per byte, least significant first, the high bit
    /// meaning "more follows", at most 3 bytes. An overlong encoding (a final zero byte after the
    /// first) or a value above `u16::MAX` is refused, as Solana does.
    fn compact_u16(&mut self) -> Result<usize, TxError> {
        let mut value: usize = 0;
        for position in 0..3 {
            let byte = self.u8()?;
            let bits = usize::from(byte & 0x7f);
            if position == 2 && byte > 0x03 {
                return Err(TxError::BadCompactU16);
            }
            value |= bits << (7 * position);
            if byte & 0x80 == 0 {
                if byte == 0 && position > 0 {
                    return Err(TxError::BadCompactU16);
                }
                return Ok(value);
            }
        }
        // Not reached: the third byte either returned or failed above.
        Err(TxError::BadCompactU16)
    }

    fn finish(&self) -> Result<(), TxError> {
        if self.at == self.bytes.len() { Ok(()) } else { Err(TxError::TrailingBytes) }
    }
}

/// Appends `value` as a compact-u16.
///
/// # Panics
/// If `value` exceeds `u16::MAX`: only builders call this, with lengths they control.
fn write_compact_u16(out: &mut Vec<u8>, value: usize) {
    assert!(value <= usize::from(u16::MAX), "compact-u16 value {value} out of range");
    let mut rest = value;
    loop {
        let low = (rest & 0x7f) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Parses and validates a whole message.
fn parse_message(bytes: &[u8]) -> Result<Message, TxError> {
    let mut reader = Reader::new(bytes);
    let first = reader.u8()?;
    let (version, num_required_signatures) = if first & VERSION_PREFIX != 0 {
        let version = first & !VERSION_PREFIX;
        if version != 0 {
            return Err(TxError::UnsupportedVersion(version));
        }
        (Some(version), reader.u8()?)
    } else {
        (None, first)
    };
    let header = MessageHeader {
        version,
        num_required_signatures,
        num_readonly_signed: reader.u8()?,
        num_readonly_unsigned: reader.u8()?,
    };
    let key_count = reader.compact_u16()?;
    let keys = (0..key_count).map(|_| reader.array::<KEY_LEN>().map(Pubkey)).collect::<Result<Vec<_>, _>>()?;
    let blockhash = reader.array::<KEY_LEN>()?;

    let instructions = reader.compact_u16()?;
    let mut programs = Vec::with_capacity(instructions);
    let mut accounts = Vec::new();
    for _ in 0..instructions {
        programs.push(reader.u8()?);
        let count = reader.compact_u16()?;
        accounts.extend_from_slice(reader.take(count)?);
        let data = reader.compact_u16()?;
        reader.take(data)?;
    }

    let mut loaded = 0usize;
    if version.is_some() {
        let tables = reader.compact_u16()?;
        for _ in 0..tables {
            reader.take(KEY_LEN)?;
            let writable = reader.compact_u16()?;
            reader.take(writable)?;
            let readonly = reader.compact_u16()?;
            reader.take(readonly)?;
            if writable + readonly == 0 {
                return Err(TxError::InvalidMessage("an address table lookup loads no account"));
            }
            loaded += writable + readonly;
        }
    }
    reader.finish()?;

    validate(&header, &keys, loaded, &programs, &accounts)?;
    Ok(Message { header, keys, blockhash })
}

/// The structural rules Solana's sanitizer applies to a message: `loaded` accounts come from
/// lookup tables; `programs` and `accounts` are the instructions' indexes.
fn validate(
    header: &MessageHeader,
    keys: &[Pubkey],
    loaded: usize,
    programs: &[u8],
    accounts: &[u8],
) -> Result<(), TxError> {
    let signers = usize::from(header.num_required_signatures);
    if signers == 0 {
        return Err(TxError::InvalidMessage("no required signer"));
    }
    if header.num_readonly_signed >= header.num_required_signatures {
        return Err(TxError::InvalidMessage("the fee payer must be writable"));
    }
    if signers + usize::from(header.num_readonly_unsigned) > keys.len() {
        return Err(TxError::InvalidMessage("the header counts more accounts than there are keys"));
    }
    let total = keys.len() + loaded;
    if total > 256 {
        return Err(TxError::InvalidMessage("more than 256 accounts"));
    }
    // Programs cannot be loaded from lookup tables, and the fee payer is never one.
    if programs.iter().any(|&index| index == 0 || usize::from(index) >= keys.len()) {
        return Err(TxError::InvalidMessage("an instruction's program is not a static non-payer key"));
    }
    if accounts.iter().any(|&index| usize::from(index) >= total) {
        return Err(TxError::InvalidMessage("an instruction names an account out of range"));
    }
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(TxError::InvalidMessage("duplicate account key"));
    }
    Ok(())
}

impl Transaction {
    /// Parses a serialized transaction and validates its message (see the module docs). The
    /// number of signature slots must equal the message's required signers.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TxError> {
        let mut reader = Reader::new(bytes);
        let count = reader.compact_u16()?;
        let signatures = (0..count).map(|_| reader.array::<SIGNATURE_LEN>()).collect::<Result<Vec<_>, _>>()?;
        let message = bytes[reader.at..].to_vec();
        let parsed = parse_message(&message)?;
        let required = usize::from(parsed.header.num_required_signatures);
        if signatures.len() != required {
            return Err(TxError::SignatureCount { found: signatures.len(), required });
        }
        Ok(Self { signatures, message })
    }

    /// [`Transaction::from_bytes`] of standard (padded) base64, as Jupiter and RPC nodes use.
    pub fn from_base64(text: &str) -> Result<Self, TxError> {
        let bytes = STANDARD.decode(text).map_err(|_| TxError::Base64)?;
        Self::from_bytes(&bytes)
    }

    /// The wire bytes: signature count, signatures, message.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.signatures.len() * SIGNATURE_LEN + self.message.len());
        write_compact_u16(&mut out, self.signatures.len());
        for signature in &self.signatures {
            out.extend_from_slice(signature);
        }
        out.extend_from_slice(&self.message);
        out
    }

    /// [`Transaction::to_bytes`] in standard base64, the `sendTransaction` encoding.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.to_bytes())
    }

    pub fn header(&self) -> Result<MessageHeader, TxError> {
        Ok(parse_message(&self.message)?.header)
    }

    /// The static account keys, fee payer first (keys loaded from lookup tables are not known
    /// without the chain).
    pub fn account_keys(&self) -> Result<Vec<Pubkey>, TxError> {
        Ok(parse_message(&self.message)?.keys)
    }

    pub fn recent_blockhash(&self) -> Result<[u8; KEY_LEN], TxError> {
        Ok(parse_message(&self.message)?.blockhash)
    }

    /// The keys that must sign, in signature-slot order (the first pays the fee).
    pub fn signers(&self) -> Result<Vec<Pubkey>, TxError> {
        let Message { header, mut keys, .. } = parse_message(&self.message)?;
        keys.truncate(usize::from(header.num_required_signatures));
        Ok(keys)
    }

    /// Signs the message with `wallet` and writes the signature into the wallet's slot.
    /// `NotASigner` if the wallet's key is not a required signer; other slots are left alone.
    pub fn sign(&mut self, wallet: &Wallet) -> Result<(), TxError> {
        let signers = self.signers()?;
        if self.signatures.len() != signers.len() {
            return Err(TxError::SignatureCount { found: self.signatures.len(), required: signers.len() });
        }
        let pubkey = wallet.pubkey();
        let Some(index) = signers.iter().position(|signer| *signer == pubkey) else {
            return Err(TxError::NotASigner { pubkey });
        };
        self.signatures[index] = wallet.sign(&self.message);
        Ok(())
    }

    /// Checks every required signature against its key: an all-zero slot is `MissingSignature`,
    /// one that does not verify is `BadSignature`. The first failing slot is reported.
    pub fn verify(&self) -> Result<(), TxError> {
        let signers = self.signers()?;
        if self.signatures.len() != signers.len() {
            return Err(TxError::SignatureCount { found: self.signatures.len(), required: signers.len() });
        }
        for (index, (signature, signer)) in self.signatures.iter().zip(&signers).enumerate() {
            if signature.iter().all(|&byte| byte == 0) {
                return Err(TxError::MissingSignature { index });
            }
            if !wallet::verify(signer, &self.message, signature) {
                return Err(TxError::BadSignature { index });
            }
        }
        Ok(())
    }

    /// The transaction's id: the base58 of its first signature (the fee payer's), which is what
    /// `sendTransaction` returns and `getSignatureStatuses` takes. Empty if there is no slot.
    pub fn id(&self) -> String {
        self.signatures.first().map(|signature| bs58::encode(signature).into_string()).unwrap_or_default()
    }
}

/// For simulators: an unsigned v0 transaction (one zeroed signature slot) paid by `payer`
/// (account 0, the only signer) with one instruction calling `program` (a read-only non-signer)
/// with `payer` as its only account and `data`, and no address table lookups.
///
/// `program` must differ from `payer`, else the result does not parse back (duplicate key).
///
/// # Panics
/// If `data` is longer than 65535 bytes (a real transaction is at most 1232 bytes).
pub fn build_unsigned_v0(payer: &Pubkey, recent_blockhash: [u8; 32], program: &Pubkey, data: &[u8]) -> Transaction {
    let mut message = vec![VERSION_PREFIX, 1, 0, 1];
    write_compact_u16(&mut message, 2);
    message.extend_from_slice(&payer.0);
    message.extend_from_slice(&program.0);
    message.extend_from_slice(&recent_blockhash);
    write_compact_u16(&mut message, 1);
    message.push(1);
    write_compact_u16(&mut message, 1);
    message.push(0);
    write_compact_u16(&mut message, data.len());
    message.extend_from_slice(data);
    write_compact_u16(&mut message, 0);
    Transaction { signatures: vec![[0; SIGNATURE_LEN]], message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(value: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_compact_u16(&mut out, value);
        out
    }

    fn read_compact(bytes: &[u8]) -> Result<usize, TxError> {
        let mut reader = Reader::new(bytes);
        let value = reader.compact_u16()?;
        reader.finish()?;
        Ok(value)
    }

    fn sample() -> (Wallet, Transaction) {
        let wallet = Wallet::from_seed([1; 32]);
        let program = Pubkey([9; 32]);
        let tx = build_unsigned_v0(&wallet.pubkey(), [5; 32], &program, b"swap");
        (wallet, tx)
    }

    #[test]
    fn compact_u16_edge_cases() {
        let cases: [(usize, &[u8]); 6] = [
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16383, &[0xff, 0x7f]),
            (16384, &[0x80, 0x80, 0x01]),
            (65535, &[0xff, 0xff, 0x03]),
        ];
        for (value, encoded) in cases {
            assert_eq!(compact(value), encoded, "{value}");
            assert_eq!(read_compact(encoded), Ok(value), "{value}");
        }
    }

    #[test]
    fn compact_u16_refuses_overlong_and_too_long_encodings() {
        for bad in [
            &[0x80, 0x00][..],
            &[0xff, 0x80, 0x00],
            &[0x80, 0x80, 0x80, 0x01],
            &[0xff, 0xff, 0x04],
            &[0x80, 0x80, 0x83],
        ] {
            assert_eq!(read_compact(bad), Err(TxError::BadCompactU16), "{bad:?}");
        }
        assert_eq!(read_compact(&[0x80]), Err(TxError::Truncated));
        assert_eq!(read_compact(&[]), Err(TxError::Truncated));
    }

    #[test]
    fn built_transaction_round_trips() {
        let (wallet, tx) = sample();
        let parsed = Transaction::from_bytes(&tx.to_bytes()).unwrap();
        assert_eq!(parsed, tx);
        assert_eq!(Transaction::from_base64(&tx.to_base64()).unwrap(), tx);
        let header = parsed.header().unwrap();
        assert_eq!(
            header,
            MessageHeader {
                version: Some(0),
                num_required_signatures: 1,
                num_readonly_signed: 0,
                num_readonly_unsigned: 1
            }
        );
        assert_eq!(parsed.account_keys().unwrap(), [wallet.pubkey(), Pubkey([9; 32])]);
        assert_eq!(parsed.signers().unwrap(), [wallet.pubkey()]);
        assert_eq!(parsed.recent_blockhash().unwrap(), [5; 32]);
        assert_eq!(parsed.verify(), Err(TxError::MissingSignature { index: 0 }));
    }

    #[test]
    fn signed_transaction_verifies_and_a_changed_byte_does_not() {
        let (wallet, mut tx) = sample();
        tx.sign(&wallet).unwrap();
        assert_eq!(tx.verify(), Ok(()));
        assert_eq!(tx.id(), bs58::encode(tx.signatures[0]).into_string());
        let reparsed = Transaction::from_base64(&tx.to_base64()).unwrap();
        assert_eq!(reparsed.verify(), Ok(()));

        let mut tampered = tx.clone();
        let last = tampered.message.len() - 2;
        tampered.message[last] ^= 1;
        assert_eq!(tampered.verify(), Err(TxError::BadSignature { index: 0 }));
    }

    #[test]
    fn a_wallet_that_is_not_a_signer_is_refused() {
        let (_, mut tx) = sample();
        let stranger = Wallet::from_seed([2; 32]);
        assert_eq!(tx.sign(&stranger), Err(TxError::NotASigner { pubkey: stranger.pubkey() }));
        assert_eq!(tx.signatures, [[0; SIGNATURE_LEN]]);

        // Signed by the wrong key by other means: the slot does not verify.
        tx.signatures[0] = stranger.sign(&tx.message);
        assert_eq!(tx.verify(), Err(TxError::BadSignature { index: 0 }));
    }

    #[test]
    fn truncated_and_trailing_bytes_are_refused() {
        let (_, tx) = sample();
        let bytes = tx.to_bytes();
        for len in 0..bytes.len() {
            assert!(Transaction::from_bytes(&bytes[..len]).is_err(), "prefix of {len} bytes parsed");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Transaction::from_bytes(&longer), Err(TxError::TrailingBytes));
    }

    #[test]
    fn signature_count_must_match_the_header() {
        let (_, mut tx) = sample();
        tx.signatures.push([0; SIGNATURE_LEN]);
        assert_eq!(Transaction::from_bytes(&tx.to_bytes()), Err(TxError::SignatureCount { found: 2, required: 1 }));
    }

    #[test]
    fn other_versions_and_bad_encodings_are_refused() {
        let (_, mut tx) = sample();
        tx.message[0] = 0x81;
        assert_eq!(Transaction::from_bytes(&tx.to_bytes()), Err(TxError::UnsupportedVersion(1)));
        assert_eq!(Transaction::from_base64("not base64!"), Err(TxError::Base64));
        assert_eq!("0OIl".parse::<Pubkey>(), Err(TxError::Base58));
        assert_eq!("abc".parse::<Pubkey>(), Err(TxError::KeyLength));
    }

    #[test]
    fn pubkey_prints_and_parses_base58() {
        let system = Pubkey([0; 32]);
        assert_eq!(system.to_string(), "11111111111111111111111111111111");
        assert_eq!(format!("{system:?}"), "Pubkey(11111111111111111111111111111111)");
        let token: Pubkey = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA".parse().unwrap();
        assert_eq!(token.to_string(), "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA");
    }

    #[test]
    fn legacy_message_parses_with_two_signers_and_a_lookup_free_tail() {
        let payer = Wallet::from_seed([3; 32]);
        let cosigner = Wallet::from_seed([4; 32]);
        let program = Pubkey([8; 32]);
        // Legacy: no version byte, no address table lookups.
        let mut message = vec![2, 1, 1];
        write_compact_u16(&mut message, 3);
        for key in [payer.pubkey(), cosigner.pubkey(), program] {
            message.extend_from_slice(&key.0);
        }
        message.extend_from_slice(&[6; 32]);
        write_compact_u16(&mut message, 1);
        message.extend_from_slice(&[2, 2, 0, 1, 3, 0xaa, 0xbb, 0xcc]);
        let mut tx = Transaction { signatures: vec![[0; SIGNATURE_LEN]; 2], message };

        let parsed = Transaction::from_bytes(&tx.to_bytes()).unwrap();
        assert_eq!(parsed.header().unwrap().version, None);
        assert_eq!(parsed.signers().unwrap(), [payer.pubkey(), cosigner.pubkey()]);

        tx.sign(&cosigner).unwrap();
        assert_eq!(tx.verify(), Err(TxError::MissingSignature { index: 0 }));
        tx.sign(&payer).unwrap();
        assert_eq!(tx.verify(), Ok(()));
    }

    #[test]
    fn v0_address_table_lookups_parse_and_count_as_accounts() {
        // Two static keys, then one instruction, then `tables` lookup tables loading two accounts
        // each (indexes 2 and 3 when there is one table).
        let message = |instruction: &[u8], tables: usize| {
            let mut message = vec![VERSION_PREFIX, 1, 0, 1];
            write_compact_u16(&mut message, 2);
            message.extend_from_slice(&[3; 32]);
            message.extend_from_slice(&[8; 32]);
            message.extend_from_slice(&[6; 32]);
            write_compact_u16(&mut message, 1);
            message.extend_from_slice(instruction);
            write_compact_u16(&mut message, tables);
            for _ in 0..tables {
                message.extend_from_slice(&[7; 32]);
                message.extend_from_slice(&[1, 4, 1, 5]);
            }
            Transaction { signatures: vec![[0; SIGNATURE_LEN]], message }.to_bytes()
        };
        let invalid = |bytes: Vec<u8>| matches!(Transaction::from_bytes(&bytes), Err(TxError::InvalidMessage(_)));

        // Program 1 with accounts 0 and 3; account 3 only exists through the table.
        let names_a_loaded_account = [1, 2, 0, 3, 0];
        assert!(Transaction::from_bytes(&message(&names_a_loaded_account, 1)).is_ok());
        assert!(invalid(message(&names_a_loaded_account, 0)));
        // A program must be a static key other than the fee payer.
        assert!(invalid(message(&[3, 0, 0], 1)));
        assert!(invalid(message(&[0, 0, 0], 1)));
    }
}
