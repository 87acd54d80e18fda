//! Where a signing key comes from. Keys are never passed on the command line (they would
//! show in `ps` and shell history): a private key or mnemonic is read from an environment
//! variable, or a password-protected keystore file is decrypted.

use std::fmt;
use std::path::PathBuf;

use alloy::signers::local::{MnemonicBuilder, PrivateKeySigner, coins_bip39::English};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::error::{LedgerError, Result};

/// A string that never shows itself in `Debug` or `Display`, and is wiped on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself. Call sites are easy to audit by searching for `expose`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Where to load a signing key from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeySource {
    /// A hex private key held in the named environment variable.
    PrivateKeyEnv { var: String },
    /// An encrypted JSON keystore; its password is in the named environment variable.
    Keystore { path: PathBuf, password_env: String },
    /// A BIP-39 mnemonic in the named environment variable, and the account index.
    MnemonicEnv { var: String, index: u32 },
}

fn read_env(var: &str, what: &str) -> Result<Secret> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim().to_string())),
        _ => Err(LedgerError::Key(format!(
            "{what} expected in environment variable {var}, which is unset or empty"
        ))),
    }
}

/// Parses a hex private key (with or without 0x).
pub fn signer_from_hex(key: &Secret) -> Result<PrivateKeySigner> {
    let text = key.expose().trim();
    let digits = text.strip_prefix("0x").unwrap_or(text);
    digits.parse::<PrivateKeySigner>().map_err(|e| {
        tracing::debug!(error = %e, "private key parse failed");
        LedgerError::Key("not a valid hex private key (64 hex digits)".into())
    })
}

/// Derives account `index` of a mnemonic on the standard Ethereum path.
pub fn signer_from_mnemonic(phrase: &Secret, index: u32) -> Result<PrivateKeySigner> {
    MnemonicBuilder::<English>::default()
        .phrase(phrase.expose())
        .index(index)
        .map_err(|e| LedgerError::Key(format!("bad derivation index {index}: {e}")))?
        .build()
        .map_err(|_| LedgerError::Key("not a valid BIP-39 mnemonic".into()))
}

/// Loads the signer described by `source`.
pub fn load_signer(source: &KeySource) -> Result<PrivateKeySigner> {
    match source {
        KeySource::PrivateKeyEnv { var } => signer_from_hex(&read_env(var, "a private key")?),
        KeySource::MnemonicEnv { var, index } => {
            signer_from_mnemonic(&read_env(var, "a mnemonic")?, *index)
        }
        KeySource::Keystore { path, password_env } => {
            let password = read_env(password_env, "the keystore password")?;
            PrivateKeySigner::decrypt_keystore(path, password.expose()).map_err(|e| {
                LedgerError::Key(format!("cannot open keystore {}: {e}", path.display()))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_themselves() {
        let s = Secret::new("0xdeadbeef");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn the_standard_test_mnemonic_derives_the_well_known_first_account() {
        let phrase = Secret::new("test test test test test test test test test test test junk");
        let signer = signer_from_mnemonic(&phrase, 0).expect("derive");
        assert_eq!(
            signer.address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
    }

    #[test]
    fn private_keys_parse_with_or_without_0x() {
        let random = PrivateKeySigner::random();
        let k = alloy::hex::encode(random.to_bytes());
        let a = signer_from_hex(&Secret::new(k.clone())).expect("bare");
        let b = signer_from_hex(&Secret::new(format!("0x{k}"))).expect("prefixed");
        assert_eq!(a.address(), b.address());
        assert_eq!(a.address(), random.address());
    }

    #[test]
    fn a_bad_private_key_is_refused_without_echoing_it() {
        let err = signer_from_hex(&Secret::new("0xnotakey")).expect_err("bad key");
        assert!(!err.to_string().contains("notakey"));
    }
}
