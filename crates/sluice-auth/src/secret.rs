//! Passwords, API tokens and session secrets: how they are made, stored and checked.
//!
//! - **Passwords** are stored as Argon2id PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$…`),
//!   with a random 16-byte salt and the parameters OWASP's Password Storage Cheat Sheet
//!   recommends (19 MiB, 2 passes, 1 lane). Checking one takes tens of ms on purpose.
//! - **API tokens** are `sluice_<id>_<secret>`: `id` is 8 random bytes and `secret` 32, both
//!   in lowercase hex. Only the id and the SHA-256 of the secret are stored; a token is
//!   shown once, when it is made. 256 random bits need no slow hash: nobody can guess
//!   them, so a fast one makes checking a token on every request cheap.
//! - **Session secrets** (the dashboard's login cookie) are 32 random bytes in hex, held
//!   in memory as their SHA-256.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

use crate::AuthError;

/// The prefix of every API token.
pub const TOKEN_PREFIX: &str = "sluice_";

/// `n` random bytes from the operating system, in lowercase hex.
pub fn random_hex(n: usize) -> Result<String, AuthError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(hex(&b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of `secret`, in lowercase hex.
pub fn sha256_hex(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// The Argon2id PHC string of `password`, with a new random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AuthError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the stored PHC string (false for a malformed one).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A new API token: (token to show once, id, SHA-256 of its secret).
pub fn new_token() -> Result<(String, String, String), AuthError> {
    let id = random_hex(8)?;
    let secret = random_hex(32)?;
    Ok((format!("{TOKEN_PREFIX}{id}_{secret}"), id, sha256_hex(&secret)))
}

/// Splits a presented token into (id, SHA-256 of its secret); `None` if it is not shaped
/// like one.
pub fn parse_token(token: &str) -> Option<(&str, String)> {
    let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    let hexy = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_hexdigit());
    (hexy(id, 16) && hexy(secret, 64)).then(|| (id, sha256_hex(secret)))
}

/// A random password for a first admin: 24 characters of lowercase hex (96 bits).
pub fn random_password() -> Result<String, AuthError> {
    random_hex(12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_round_trip_and_are_salted() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify_password("correct horse", &a));
        assert!(!verify_password("wrong", &a));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_parse_to_their_stored_hash() {
        let (token, id, hash) = new_token().unwrap();
        assert_eq!(parse_token(&token), Some((id.as_str(), hash.clone())));
        assert_eq!(token.len(), TOKEN_PREFIX.len() + 16 + 1 + 64);
        let mut wrong = token.clone();
        wrong.pop();
        wrong.push(if token.ends_with('0') { '1' } else { '0' });
        assert_ne!(parse_token(&wrong).map(|p| p.1), Some(hash));
        for bad in ["", "sluice_", "sluice_abc_def", "Bearer x", &token[1..]] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }
}
