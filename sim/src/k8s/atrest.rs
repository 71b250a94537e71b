//! Encryption at rest as kube-apiserver does it for Secrets with an `aescbc` provider:
//! `k8s:enc:aescbc:v1:<key name>:` + 16-byte IV + AES-CBC(PKCS#7) of the stored bytes.
//!
//! This is the API server's side, written independently of the sync's decryptor so each checks
//! the other. IVs come from the cluster's seeded RNG. Key bytes never reach the trace.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use rand::RngCore;

const PREFIX: &str = "k8s:enc:aescbc:v1:";
const IV_BYTES: usize = 16;

/// One cluster's EncryptionConfiguration for Secrets: aescbc keys, the first of which encrypts
/// (all of them decrypt), then identity. No keys: identity only.
#[derive(Clone)]
pub struct AtRest {
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for AtRest {
    // Never prints key bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&String> = self.keys.iter().map(|(n, _)| n).collect();
        f.debug_struct("AtRest").field("key_names", &names).finish()
    }
}

impl AtRest {
    pub fn identity() -> Self {
        AtRest { keys: Vec::new() }
    }

    pub fn aescbc(name: &str, key: [u8; 32]) -> Self {
        AtRest { keys: vec![(name.into(), key)] }
    }

    /// Key rotation's first step: `name` becomes the key that encrypts; the older keys still
    /// decrypt (existing Secrets are rewritten only when next written, as kube-apiserver does).
    pub fn rotated(&self, name: &str, key: [u8; 32]) -> Self {
        let mut keys = vec![(name.to_string(), key)];
        keys.extend(self.keys.iter().filter(|(n, _)| n != name).cloned());
        AtRest { keys }
    }

    pub fn key_names(&self) -> Vec<String> {
        self.keys.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The EncryptionConfiguration file kube-apiserver reads for this (what an operator hands
    /// the sync as well). Contains the key: never log it.
    pub fn encryption_configuration(&self) -> String {
        use base64::Engine as _;
        let aescbc = if self.keys.is_empty() {
            String::new()
        } else {
            let mut a = String::from("      - aescbc:\n          keys:\n");
            for (name, key) in &self.keys {
                let secret = base64::engine::general_purpose::STANDARD.encode(key);
                a.push_str(&format!("            - name: {name}\n              secret: {secret}\n"));
            }
            a
        };
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{aescbc}      - identity: {{}}\n"
        )
    }

    pub fn seal(&self, plain: &[u8], rng: &mut dyn RngCore) -> Vec<u8> {
        let Some((name, key)) = self.keys.first() else { return plain.to_vec() };
        let mut iv = [0u8; IV_BYTES];
        rng.fill_bytes(&mut iv);
        let ct = cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &iv)
            .expect("a 32-byte key and a 16-byte IV")
            .encrypt_padded_vec_mut::<Pkcs7>(plain);
        let mut out = format!("{PREFIX}{name}:").into_bytes();
        out.extend_from_slice(&iv);
        out.extend_from_slice(&ct);
        out
    }

    /// The stored bytes behind `value`; None when it is sealed with a key this cluster lacks
    /// (what kube-apiserver reports as "unable to transform key").
    pub fn open(&self, value: &[u8]) -> Option<Vec<u8>> {
        let Some(rest) = value.strip_prefix(PREFIX.as_bytes()) else { return Some(value.to_vec()) };
        let (_, key) =
            self.keys.iter().find(|(n, _)| rest.strip_prefix(n.as_bytes()).is_some_and(|r| r.starts_with(b":")))?;
        let name_len = rest.iter().position(|b| *b == b':')?;
        let body = &rest[name_len + 1..];
        if body.len() < IV_BYTES * 2 || body.len() % IV_BYTES != 0 {
            return None;
        }
        let (iv, ct) = body.split_at(IV_BYTES);
        let mut buf = ct.to_vec();
        let dec = cbc::Decryptor::<aes::Aes256>::new_from_slices(key, iv).expect("a 32-byte key and a 16-byte IV");
        dec.decrypt_padded_mut::<Pkcs7>(&mut buf).ok().map(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn seals_and_opens_only_with_the_same_key() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let a = AtRest::aescbc("k1", [7; 32]);
        let sealed = a.seal(b"k8s\0secret", &mut rng);
        assert!(sealed.starts_with(b"k8s:enc:aescbc:v1:k1:"));
        assert_eq!(a.open(&sealed).as_deref(), Some(&b"k8s\0secret"[..]));
        assert_eq!(AtRest::aescbc("k1", [8; 32]).open(&sealed), None);
        assert_eq!(AtRest::aescbc("k2", [7; 32]).open(&sealed), None);
        assert_eq!(AtRest::identity().open(&sealed), None);
        assert_eq!(AtRest::identity().seal(b"x", &mut rng), b"x");
        assert!(!format!("{a:?}").contains('7'));
        // After a rotation the new key encrypts and the old one still opens what it sealed.
        let r = a.rotated("k2", [9; 32]);
        let newer = r.seal(b"x", &mut rng);
        assert!(newer.starts_with(b"k8s:enc:aescbc:v1:k2:"));
        assert_eq!(r.open(&sealed).as_deref(), Some(&b"k8s\0secret"[..]));
        assert_eq!(a.open(&newer), None, "the old configuration cannot read the new key's Secrets");
        assert_eq!(r.key_names(), ["k2", "k1"]);
    }
}
