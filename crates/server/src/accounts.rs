//! Creating users and API keys: shared by the admin CLI and the first-start bootstrap.
//! Passwords are hashed with argon2id; API keys are 192-bit random tokens stored as SHA-256
//! digests (a fast hash suffices for high-entropy secrets and allows lookup by digest).

use argon2::{password_hash::SaltString, Argon2, PasswordHasher};
use convertrilo_core::{time::now_ms, ApiKeyId, Neu, Scope, UserId, WireEnum};
use convertrilo_db::{ApiKey, DbError, Repos, Trial, User};
use rand::{rngs::OsRng, RngCore};
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "cvt_";

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("a user with email {0} already exists")]
    Exists(String),
    #[error("no user with email {0}")]
    NoSuchUser(String),
    #[error(transparent)]
    Db(DbError),
}

impl From<DbError> for AccountError {
    fn from(e: DbError) -> Self {
        AccountError::Db(e)
    }
}

pub fn hash_api_key(raw: &str) -> String {
    hex::encode(Sha256::digest(raw.as_bytes()))
}

fn new_raw_key() -> String {
    let mut bytes = [0u8; 24];
    OsRng.fill_bytes(&mut bytes);
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

pub fn hash_password(password: &str) -> Result<String, AccountError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccountError::Invalid(format!("cannot hash password: {e}")))
}

fn check_email(email: &str) -> Result<String, AccountError> {
    let email = email.trim().to_ascii_lowercase();
    let valid = email.len() <= 254
        && !email.contains(char::is_whitespace)
        && matches!(email.split_once('@'), Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if valid {
        Ok(email)
    } else {
        Err(AccountError::Invalid(format!(
            "{email:?} is not an email address"
        )))
    }
}

/// A new account: `grant` adds paid tokens, `trial` the expiring trial grant.
pub async fn create_user(
    repos: &Repos,
    email: &str,
    password: &str,
    is_admin: bool,
    grant: Option<Neu>,
    trial: Option<Trial>,
) -> Result<User, AccountError> {
    let email = check_email(email)?;
    if grant.is_some_and(|g| g > convertrilo_db::ledger::MAX_GRANT) {
        return Err(AccountError::Invalid(format!(
            "a grant may be at most {} NEU",
            convertrilo_db::ledger::MAX_GRANT
        )));
    }
    if password.chars().count() < 8 {
        return Err(AccountError::Invalid(
            "the password must be at least 8 characters long".into(),
        ));
    }
    let user = User {
        id: UserId::new(),
        email: email.clone(),
        password_hash: hash_password(password)?,
        is_admin,
        banned: false,
        created_at: now_ms(),
    };
    match repos.accounts.create_user(&user, grant, trial).await {
        Ok(()) => Ok(user),
        Err(DbError::Conflict(_)) => Err(AccountError::Exists(email)),
        Err(e) => Err(e.into()),
    }
}

/// Parses `jobs:create,jobs:read`; empty means every scope.
pub fn parse_scopes(list: Option<&str>) -> Result<Vec<Scope>, AccountError> {
    let Some(list) = list else {
        return Ok(Scope::ALL.to_vec());
    };
    let mut scopes = Vec::new();
    for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let scope = Scope::parse(s).ok_or_else(|| {
            AccountError::Invalid(format!(
                "unknown scope {s:?}; use any of {}",
                Scope::allowed()
            ))
        })?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err(AccountError::Invalid(format!(
            "no scopes given; name at least one of {}, or leave the option out for all",
            Scope::allowed()
        )));
    }
    Ok(scopes)
}

/// Creates a key for the user with this email; returns the stored key and the raw secret,
/// which is shown once and never stored.
pub async fn create_api_key(
    repos: &Repos,
    email: &str,
    name: &str,
    scopes: Vec<Scope>,
    expires_in_days: Option<u32>,
) -> Result<(ApiKey, String), AccountError> {
    let email = check_email(email)?;
    let user = repos
        .accounts
        .user_by_email(&email)
        .await?
        .ok_or(AccountError::NoSuchUser(email))?;
    create_api_key_for(repos, user.id, name, scopes, expires_in_days).await
}

/// As [`create_api_key`], for an account already in hand.
pub async fn create_api_key_for(
    repos: &Repos,
    user_id: UserId,
    name: &str,
    scopes: Vec<Scope>,
    expires_in_days: Option<u32>,
) -> Result<(ApiKey, String), AccountError> {
    if let Some(d) = expires_in_days {
        if !(1..=365).contains(&d) {
            return Err(AccountError::Invalid(
                "expires-in-days must be from 1 to 365".into(),
            ));
        }
    }
    let raw = new_raw_key();
    let now = now_ms();
    let key = ApiKey {
        id: ApiKeyId::new(),
        user_id,
        name: name.to_string(),
        prefix: raw[..KEY_PREFIX.len() + 8].to_string(),
        scopes,
        expires_at: expires_in_days.map(|d| now + d as i64 * 86_400_000),
        revoked_at: None,
        created_at: now,
    };
    repos
        .accounts
        .create_api_key(&key, &hash_api_key(&raw))
        .await?;
    Ok((key, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_emails() {
        assert_eq!(parse_scopes(None).unwrap().len(), Scope::ALL.len());
        assert_eq!(
            parse_scopes(Some("jobs:read, jobs:read,jobs:create")).unwrap(),
            vec![Scope::JobsRead, Scope::JobsCreate]
        );
        assert!(parse_scopes(Some("jobs:delete")).is_err());
        assert!(parse_scopes(Some("")).is_err());
        assert!(parse_scopes(Some(" , ")).is_err());
        assert_eq!(check_email(" A@B.io ").unwrap(), "a@b.io");
        assert!(check_email("nope").is_err());
        let raw = new_raw_key();
        assert!(raw.starts_with(KEY_PREFIX) && raw.len() == 52);
        assert_eq!(hash_api_key(&raw).len(), 64);
    }
}
