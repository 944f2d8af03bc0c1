//! Password hashes: argon2id with RustCrypto's default parameters (19 MiB,
//! two passes, one lane — OWASP's recommended set). Each check costs about
//! 19 MiB and tens of milliseconds of CPU, so checks run off the async
//! runtime a few at a time: a thousand bad logins queue instead of taking
//! 19 GiB. An unknown user name is checked against a dummy hash, so it
//! costs the same time as a wrong password.

use std::sync::{Arc, LazyLock};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use super::AuthError;

/// Password checks (or hashings) running at once.
const CONCURRENT_CHECKS: usize = 2;
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted, in bytes: enough for any passphrase, and a
/// bound on what one request can make the server hash.
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Length of a generated password: 24 characters of 62 is about 143 bits,
/// and fits the 32-character password fields of sign firmwares.
const GENERATED_LEN: usize = 24;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Hashes and checks passwords, a few at a time. Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
}

/// A hash to check against when there is no account, so that case does the
/// same work as a wrong password.
static DUMMY_HASH: LazyLock<Option<String>> = LazyLock::new(|| {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).ok()?;
    Argon2::default()
        .hash_password(&secret)
        .ok()
        .map(|h| h.to_string())
});

impl Passwords {
    pub fn new() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(CONCURRENT_CHECKS)),
        }
    }

    /// The PHC string of `password`, with a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, AuthError> {
        check_strength(password)?;
        let password = password.to_owned();
        self.off_runtime(move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| AuthError::Hash(e.to_string()))
        })
        .await?
    }

    /// Whether `password` matches `stored` (`None`: no such account, always
    /// false, after the same work).
    pub async fn verify(&self, stored: Option<&str>, password: &str) -> bool {
        if password.len() > MAX_PASSWORD_LEN {
            return false;
        }
        let known = stored.is_some();
        let stored = stored.map(str::to_owned);
        let password = password.to_owned();
        self.off_runtime(move || {
            let Some(phc) = stored.or_else(|| DUMMY_HASH.clone()) else {
                return false;
            };
            let Ok(parsed) = PasswordHash::new(&phc) else {
                return false;
            };
            let matches = Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            known && matches
        })
        .await
        .unwrap_or(false)
    }

    /// Whether `stored` was made with other parameters than today's (an
    /// older release's, or another algorithm): it still verifies, and is
    /// worth making anew once the password is known.
    pub fn outdated(&self, stored: &str) -> bool {
        static CURRENT: LazyLock<String> = LazyLock::new(|| {
            let params = argon2::Params::default();
            format!(
                "$argon2id$v=19$m={},t={},p={}$",
                params.m_cost(),
                params.t_cost(),
                params.p_cost()
            )
        });
        !stored.starts_with(CURRENT.as_str())
    }

    async fn off_runtime<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| AuthError::Hash("password checks are closed".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))
    }
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

/// Refuses passwords too short to resist guessing or too long to hash cheaply.
pub fn check_strength(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AuthError::WeakPassword(format!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(AuthError::WeakPassword(format!(
            "a password may be at most {MAX_PASSWORD_LEN} bytes"
        )));
    }
    Ok(())
}

/// A random password of letters and digits, from the operating system's
/// random source (unbiased: bytes past the largest multiple of 62 are drawn again).
pub fn generate_password() -> Result<String, AuthError> {
    let limit = 256 - 256 % ALPHABET.len();
    let mut out = String::with_capacity(GENERATED_LEN);
    let mut bytes = [0u8; 64];
    while out.len() < GENERATED_LEN {
        getrandom::fill(&mut bytes).map_err(|e| AuthError::Hash(e.to_string()))?;
        for byte in bytes {
            let byte = usize::from(byte);
            if byte < limit
                && out.len() < GENERATED_LEN
                && let Some(c) = ALPHABET.get(byte % ALPHABET.len())
            {
                out.push(char::from(*c));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_checks_its_password_and_nothing_else() {
        let passwords = Passwords::new();
        let hash = passwords.hash("correct horse").await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
        assert!(!passwords.outdated(&hash));
        assert!(passwords.outdated("$argon2id$v=19$m=8192,t=1,p=1$c2FsdA$aGFzaA"));
        assert!(passwords.verify(Some(&hash), "correct horse").await);
        assert!(!passwords.verify(Some(&hash), "correct horsE").await);
        assert!(!passwords.verify(None, "correct horse").await);
        assert!(!passwords.verify(Some("not a hash"), "correct horse").await);
        // Same password, new salt.
        assert_ne!(hash, passwords.hash("correct horse").await.unwrap());
    }

    #[tokio::test]
    async fn short_and_huge_passwords_are_refused() {
        let passwords = Passwords::new();
        assert!(matches!(
            passwords.hash("seven77").await,
            Err(AuthError::WeakPassword(_))
        ));
        assert!(matches!(
            passwords.hash(&"x".repeat(MAX_PASSWORD_LEN + 1)).await,
            Err(AuthError::WeakPassword(_))
        ));
    }

    #[test]
    fn generated_passwords_are_24_letters_and_digits_and_differ() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), GENERATED_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
