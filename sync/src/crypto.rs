//! The Secret encryption boundary.
//!
//! kube-apiserver stores encrypted values as `k8s:enc:<provider>:v1:<key name>:<ciphertext>`.
//! The standby can read a copied value only with the same key material under that name. Given
//! both sides' EncryptionConfiguration files, the sync decides per value:
//!
//! - the target has the same secret under the same provider and key name → copy raw;
//! - otherwise, if the source key is known (aescbc) → decrypt with it and re-encrypt with the
//!   target's first provider (aescbc exactly as kube-apiserver does it: random 16-byte IV prefix,
//!   AES-CBC, PKCS#7), or store plaintext when the target's first provider is `identity`;
//! - otherwise → never write ciphertext the standby cannot read: skip it, count it, and report it
//!   as `undecryptable`.
//!
//! Without either file the sync copies ciphertext raw: shared key material is a deployment
//! requirement (seed 000) that the failover preflight verifies by fingerprint. With only one
//! file the sync cannot know, and treats ciphertext as undecryptable.
//!
//! aesgcm (which authenticates the etcd key path), secretbox and kms values are only ever copied
//! raw, when the same key name carries the same secret on both sides; kms never decrypts here.
//! Key material never appears in logs, errors or reports: only key names and fingerprints do.

use std::collections::BTreeMap;
use std::path::Path;

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::object::{ENCRYPTED_PREFIX, envelope};

const IV_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileConfig {
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
struct ResourceConfig {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    providers: Vec<BTreeMap<String, ProviderConfig>>,
}

#[derive(Deserialize, Default)]
struct ProviderConfig {
    #[serde(default)]
    keys: Vec<KeyConfig>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct KeyConfig {
    name: String,
    secret: String,
}

/// One provider of the `secrets` resource, in the file's order.
#[derive(Clone)]
pub enum Provider {
    Identity,
    /// aescbc, aesgcm, secretbox: named keys.
    Keys {
        kind: String,
        keys: Vec<(String, Vec<u8>)>,
    },
    Kms {
        name: String,
    },
}

/// The providers a cluster uses for Secrets. Debug never shows key material.
#[derive(Clone)]
pub struct Keyring {
    providers: Vec<Provider>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring(fingerprint {})", self.fingerprint())
    }
}

impl Keyring {
    pub fn load(path: &Path) -> Result<Keyring, CryptoError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| CryptoError::Config { path: shown.clone(), reason: e.to_string() })?;
        Keyring::parse(&shown, &text)
    }

    pub fn parse(name: &str, text: &str) -> Result<Keyring, CryptoError> {
        let bad = |reason: String| CryptoError::Config { path: name.to_string(), reason };
        let f: FileConfig = serde_saphyr::from_str(text).map_err(|e| {
            let (l, c) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            bad(format!("{l}:{c}: {}", e.to_string().lines().next().unwrap_or("invalid")))
        })?;
        let rc = f
            .resources
            .into_iter()
            .find(|r| r.resources.iter().any(|x| x == "secrets" || x == "*.*" || x == "*."))
            .ok_or_else(|| bad("no provider list for secrets".into()))?;
        let mut providers = Vec::new();
        for p in rc.providers {
            for (kind, cfg) in p {
                providers.push(match kind.as_str() {
                    "identity" => Provider::Identity,
                    "kms" => Provider::Kms { name: cfg.name.unwrap_or_default() },
                    "aescbc" | "aesgcm" | "secretbox" => {
                        let mut keys = Vec::new();
                        for k in cfg.keys {
                            let secret = base64::engine::general_purpose::STANDARD
                                .decode(k.secret.trim())
                                .map_err(|_| bad(format!("{kind} key {:?}: secret is not base64", k.name)))?;
                            if kind == "aescbc" && ![16, 24, 32].contains(&secret.len()) {
                                return Err(bad(format!(
                                    "aescbc key {:?}: {} bytes, want 16, 24 or 32",
                                    k.name,
                                    secret.len()
                                )));
                            }
                            keys.push((k.name, secret));
                        }
                        Provider::Keys { kind, keys }
                    }
                    other => return Err(bad(format!("unknown provider {other:?}"))),
                });
            }
        }
        if providers.is_empty() {
            return Err(bad("no providers for secrets".into()));
        }
        Ok(Keyring { providers })
    }

    /// A fingerprint of the whole provider list (safe to print and compare).
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for p in &self.providers {
            match p {
                Provider::Identity => h.update(b"identity;"),
                Provider::Kms { name } => h.update(format!("kms:{name};").as_bytes()),
                Provider::Keys { kind, keys } => {
                    for (n, s) in keys {
                        h.update(format!("{kind}:{n}:").as_bytes());
                        h.update(s);
                        h.update(b";");
                    }
                }
            }
        }
        hex::encode(&h.finalize()[..8])
    }

    fn key(&self, provider: &str, name: &str) -> Option<&[u8]> {
        self.providers.iter().find_map(|p| match p {
            Provider::Keys { kind, keys } if kind == provider => {
                keys.iter().find(|(n, _)| n == name).map(|(_, s)| s.as_slice())
            }
            _ => None,
        })
    }

    /// Whether [`Keyring::encrypt`] can write with the first provider.
    pub fn can_encrypt(&self) -> bool {
        match self.providers.first() {
            Some(Provider::Identity) => true,
            Some(Provider::Keys { kind, keys }) => kind == "aescbc" && !keys.is_empty(),
            _ => false,
        }
    }

    /// Decrypts an aescbc envelope; None when the key is unknown or the value does not decrypt.
    pub fn decrypt(&self, value: &[u8]) -> Option<Vec<u8>> {
        let (provider, name, ct) = envelope(value)?;
        if provider != "aescbc" || ct.len() < IV_BYTES * 2 || ct.len() % IV_BYTES != 0 {
            return None;
        }
        let key = self.key(provider, name)?;
        let (iv, body) = ct.split_at(IV_BYTES);
        let mut buf = body.to_vec();
        let plain = match key.len() {
            16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, iv)
                .ok()?
                .decrypt_padded_mut::<Pkcs7>(&mut buf)
                .ok()?
                .to_vec(),
            24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, iv)
                .ok()?
                .decrypt_padded_mut::<Pkcs7>(&mut buf)
                .ok()?
                .to_vec(),
            32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv)
                .ok()?
                .decrypt_padded_mut::<Pkcs7>(&mut buf)
                .ok()?
                .to_vec(),
            _ => return None,
        };
        Some(plain)
    }

    /// Encrypts with the first provider, as kube-apiserver writes. None when that provider is
    /// not one this sync can write (kms, aesgcm, secretbox).
    pub fn encrypt(&self, plain: &[u8], rng: &mut dyn RngCore) -> Option<Vec<u8>> {
        match self.providers.first()? {
            Provider::Identity => Some(plain.to_vec()),
            Provider::Keys { kind, keys } if kind == "aescbc" => {
                let (name, key) = keys.first()?;
                let mut iv = [0u8; IV_BYTES];
                rng.fill_bytes(&mut iv);
                let ct = match key.len() {
                    16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, &iv)
                        .ok()?
                        .encrypt_padded_vec_mut::<Pkcs7>(plain),
                    24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, &iv)
                        .ok()?
                        .encrypt_padded_vec_mut::<Pkcs7>(plain),
                    32 => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
                        .ok()?
                        .encrypt_padded_vec_mut::<Pkcs7>(plain),
                    _ => return None,
                };
                let mut out = ENCRYPTED_PREFIX.to_vec();
                out.extend_from_slice(format!("aescbc:v1:{name}:").as_bytes());
                out.extend_from_slice(&iv);
                out.extend_from_slice(&ct);
                Some(out)
            }
            _ => None,
        }
    }
}

/// What to write for one source value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carry {
    /// Write these bytes (raw, or re-encrypted for the target).
    Write(Vec<u8>),
    /// Ciphertext the target could not read: skip it and report it.
    Undecryptable,
}

/// Both sides' keyrings (either may be absent).
#[derive(Clone, Default, Debug)]
pub struct Boundary {
    pub source: Option<Keyring>,
    pub target: Option<Keyring>,
    /// Test-only (`raw-secret-copy` mutant): copy ciphertext raw whatever the keys.
    #[cfg(feature = "mutants")]
    pub raw_secret_copy: bool,
}

impl Boundary {
    pub fn new(source: Option<Keyring>, target: Option<Keyring>) -> Self {
        Boundary {
            source,
            target,
            #[cfg(feature = "mutants")]
            raw_secret_copy: false,
        }
    }

    /// The plaintext of a source value when it is ciphertext the source keyring opens.
    pub fn source_plain(&self, value: &[u8]) -> Option<Vec<u8>> {
        self.source.as_ref()?.decrypt(value)
    }

    /// A target value as the target reads it: decrypted with its keyring when it opens it.
    pub fn decode_target(&self, value: &[u8]) -> crate::object::Decoded {
        match self.target.as_ref().and_then(|k| k.decrypt(value)) {
            Some(plain) => crate::object::decode(&plain),
            None => crate::object::decode(value),
        }
    }

    pub fn carry(&self, value: &[u8], rng: &mut dyn RngCore) -> Carry {
        #[cfg(feature = "mutants")]
        if self.raw_secret_copy {
            return Carry::Write(value.to_vec());
        }
        let Some((provider, name, _)) = envelope(value) else { return Carry::Write(value.to_vec()) };
        match (&self.source, &self.target) {
            (None, None) => Carry::Write(value.to_vec()),
            (Some(s), Some(t)) => {
                let same = matches!((s.key(provider, name), t.key(provider, name)), (Some(a), Some(b)) if a == b);
                if same {
                    return Carry::Write(value.to_vec());
                }
                match s.decrypt(value).and_then(|p| t.encrypt(&p, rng)) {
                    Some(v) => Carry::Write(v),
                    None => Carry::Undecryptable,
                }
            }
            _ => Carry::Undecryptable,
        }
    }

    /// Whether the sync can carry this source value so that the target reads it (without
    /// encrypting anything: for the check).
    pub fn readable_by_target(&self, value: &[u8]) -> bool {
        let Some((provider, name, _)) = envelope(value) else { return true };
        match (&self.source, &self.target) {
            (None, None) => true,
            (Some(s), Some(t)) => {
                matches!((s.key(provider, name), t.key(provider, name)), (Some(a), Some(b)) if a == b)
                    || (s.decrypt(value).is_some() && t.can_encrypt())
            }
            _ => false,
        }
    }

    /// Whether a source and a target value hold the same content (plaintexts are compared when
    /// both decrypt: re-encrypted values differ byte for byte by their random IVs).
    pub fn same(&self, source: &[u8], target: &[u8]) -> bool {
        if source == target {
            return true;
        }
        let s = self.source.as_ref().and_then(|k| k.decrypt(source));
        let t = self.target.as_ref().and_then(|k| k.decrypt(target));
        match (s, t) {
            (Some(a), Some(b)) => a == b,
            (Some(a), None) if !target.starts_with(ENCRYPTED_PREFIX) => a == target,
            _ => false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::SeedableRng;

    /// An EncryptionConfiguration for Secrets: aescbc with `keys`, then identity.
    pub(crate) fn config(keys: &[(&str, &[u8])]) -> String {
        let mut s = String::from(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aescbc:\n          keys:\n",
        );
        for (n, k) in keys {
            s.push_str(&format!(
                "            - name: {n}\n              secret: {}\n",
                base64::engine::general_purpose::STANDARD.encode(k)
            ));
        }
        s.push_str("      - identity: {}\n");
        s
    }

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(1)
    }

    #[test]
    fn aescbc_round_trips_in_the_kube_apiserver_layout() {
        let k = Keyring::parse("a", &config(&[("key1", &[7u8; 32])])).expect("parses");
        let ct = k.encrypt(b"k8s\0secret-object", &mut rng()).expect("encrypts");
        assert!(ct.starts_with(b"k8s:enc:aescbc:v1:key1:"));
        assert_eq!((ct.len() - b"k8s:enc:aescbc:v1:key1:".len()) % 16, 0, "IV + whole blocks");
        assert_eq!(k.decrypt(&ct).as_deref(), Some(&b"k8s\0secret-object"[..]));
        let other = Keyring::parse("b", &config(&[("key1", &[8u8; 32])])).expect("parses");
        assert_eq!(other.decrypt(&ct), None, "same key name, other secret: unreadable");
    }

    #[test]
    fn carry_copies_raw_only_with_the_same_key_material() {
        let a = Keyring::parse("a", &config(&[("key1", &[1u8; 32])])).expect("a");
        let b_same = Keyring::parse("b", &config(&[("key1", &[1u8; 32])])).expect("b");
        let b_diff = Keyring::parse("b", &config(&[("key1", &[2u8; 32])])).expect("b");
        let ct = a.encrypt(b"plain", &mut rng()).expect("ct");
        let same = Boundary { source: Some(a.clone()), target: Some(b_same), ..Boundary::default() };
        assert_eq!(same.carry(&ct, &mut rng()), Carry::Write(ct.clone()));
        let diff = Boundary { source: Some(a.clone()), target: Some(b_diff.clone()), ..Boundary::default() };
        let Carry::Write(re) = diff.carry(&ct, &mut rng()) else { panic!("re-encrypts") };
        assert_ne!(re, ct);
        assert_eq!(b_diff.decrypt(&re).as_deref(), Some(&b"plain"[..]), "the target reads it");
        assert!(diff.same(&ct, &re), "the check compares plaintexts");
        let blind = Boundary { source: None, target: Some(b_diff), ..Boundary::default() };
        assert_eq!(blind.carry(&ct, &mut rng()), Carry::Undecryptable, "never write what the target cannot read");
        assert_eq!(blind.carry(b"plain value", &mut rng()), Carry::Write(b"plain value".to_vec()));
    }

    #[test]
    fn key_material_never_shows_in_debug_or_errors() {
        let secret = [0x41u8; 32];
        let k = Keyring::parse("a", &config(&[("key1", &secret)])).expect("a");
        let shown = format!("{k:?}");
        assert!(!shown.contains(&base64::engine::general_purpose::STANDARD.encode(secret)), "{shown}");
        let e = Keyring::parse("bad.yaml", &config(&[("key1", &[1u8; 5])])).expect_err("bad length").to_string();
        assert!(e.contains("5 bytes") && !e.contains("AQEBAQE"), "{e}");
    }
}
