//! Who is calling: the admin API's credentials (a name, a role and a bearer token from
//! the config, the environment or a file) and the [`Caller`] a checked token becomes.
//!
//! Tokens are compared as sha256 digests in constant time, against every credential, so
//! neither the timing nor the order of the list tells a guesser anything. A token file is
//! re-read when its modification time or size changes, so a token rotates by rewriting
//! the file; a file that becomes unreadable or too short disables its credential (logged)
//! until it is fixed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Error;
use crate::names::{CredentialName, TenantName};

/// Shortest accepted token, bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// What a credential may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Operator,
    /// Its own tenant's policies, pipelines, decisions and audit records, and a redacted
    /// view of the backends.
    Tenant(TenantName),
}

impl Role {
    /// `operator` or `tenant`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Tenant(_) => "tenant",
        }
    }
}

/// Where a credential's token comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// Given in the config or read from the environment at start.
    Fixed(Arc<str>),
    /// Read from this file, and re-read whenever it changes.
    File(PathBuf),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Fixed(_) => f.write_str("Fixed(<redacted>)"),
            TokenSource::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// One admin credential.
#[derive(Debug, Clone)]
pub struct Credential {
    /// Its name, as the audit log records it.
    pub name: CredentialName,
    /// What it may do.
    pub role: Role,
    /// Its token.
    pub token: TokenSource,
}

/// Longest token file read, bytes: a path to a device or a huge file is refused, not
/// read forever.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Reads a token file: its content without surrounding whitespace.
///
/// # Errors
///
/// When it cannot be read, is longer than 4 KiB, is not UTF-8, or holds fewer than
/// [`MIN_TOKEN_BYTES`] bytes.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(format!("longer than {MAX_TOKEN_FILE_BYTES} bytes"));
    }
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let token = text.trim();
    check_token(token)?;
    Ok(token.to_owned())
}

/// Checks a token's length.
///
/// # Errors
///
/// When it is shorter than [`MIN_TOKEN_BYTES`] bytes.
pub fn check_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_BYTES {
        return Err(format!(
            "the token is {} bytes; at least {MIN_TOKEN_BYTES} are required",
            token.len()
        ));
    }
    Ok(())
}

/// A checked caller of the admin API.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The credential's name.
    pub credential: CredentialName,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// The tenant the caller is bound to; `None` for operators.
    pub fn tenant(&self) -> Option<&TenantName> {
        match &self.role {
            Role::Operator => None,
            Role::Tenant(t) => Some(t),
        }
    }

    /// Whether the caller may act for `tenant`: operators for any.
    pub fn acts_for(&self, tenant: &str) -> bool {
        self.tenant().is_none_or(|t| t.as_str() == tenant)
    }

    /// Ok for operators; [`Error::Forbidden`] naming `right` otherwise.
    ///
    /// # Errors
    ///
    /// When the caller is not an operator.
    pub fn require_operator(&self, right: &str) -> Result<(), Error> {
        match &self.role {
            Role::Operator => Ok(()),
            Role::Tenant(_) => Err(self.forbidden(right)),
        }
    }

    /// Ok for operators and for `tenant`'s own credentials.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] naming `right` on another tenant.
    pub fn require_tenant(&self, tenant: &str, right: &str) -> Result<(), Error> {
        if self.acts_for(tenant) {
            Ok(())
        } else {
            Err(self.forbidden(&format!("{right} of tenant `{tenant}`")))
        }
    }

    /// The refusal of `right` to this caller.
    pub fn forbidden(&self, right: &str) -> Error {
        Error::Forbidden {
            credential: self.credential.to_string(),
            role: self.role.as_str(),
            right: right.to_owned(),
        }
    }
}

/// The admin API's credentials, checked on every call.
pub struct Credentials {
    entries: Vec<Entry>,
}

struct Entry {
    credential: Credential,
    /// The token in force. `None`: the credential is disabled (its file is unusable).
    digest: Mutex<Option<Digest32>>,
}

/// A token's digest; for a token file, with the file's (mtime, size) it was read at.
type Digest32 = (Option<(SystemTime, u64)>, [u8; 32]);

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Credentials {
    /// The credentials, tokens read now (files are re-read on change later).
    pub fn new(credentials: Vec<Credential>) -> Credentials {
        let entries = credentials
            .into_iter()
            .map(|credential| {
                let fixed = match &credential.token {
                    TokenSource::Fixed(t) => Some((None, digest(t.as_bytes()))),
                    TokenSource::File(_) => None,
                };
                Entry {
                    credential,
                    digest: Mutex::new(fixed),
                }
            })
            .collect();
        Credentials { entries }
    }

    /// The caller `token` belongs to, if any. Every credential is compared, in constant
    /// time, whatever matches.
    pub fn authenticate(&self, token: &[u8]) -> Option<Caller> {
        let presented = digest(token);
        let mut found = None;
        for entry in &self.entries {
            if let Some(d) = entry.current()
                && bool::from(d.ct_eq(&presented))
            {
                found = Some(&entry.credential);
            }
        }
        found.map(|c| Caller {
            credential: c.name.clone(),
            role: c.role.clone(),
        })
    }
}

impl Entry {
    /// The digest of the token in force, re-reading a changed token file.
    fn current(&self) -> Option<[u8; 32]> {
        let mut cached = self.digest.lock().expect("credential lock");
        let TokenSource::File(path) = &self.credential.token else {
            return cached.map(|(_, d)| d);
        };
        let stamp = std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if let (Some(stamp), Some((Some(seen), d))) = (stamp, *cached)
            && stamp == seen
        {
            return Some(d);
        }
        *cached = match read_token_file(path) {
            Ok(token) => {
                tracing::info!(credential = %self.credential.name, path = %path.display(), "admin token file read");
                Some((stamp, digest(token.as_bytes())))
            }
            Err(e) => {
                tracing::error!(credential = %self.credential.name, path = %path.display(), error = %e, "admin token file unusable; the credential is disabled until it is fixed");
                None
            }
        };
        cached.map(|(_, d)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(name: &str, role: Role, token: TokenSource) -> Credential {
        Credential {
            name: CredentialName::new(name).unwrap(),
            role,
            token,
        }
    }

    #[test]
    fn each_token_maps_to_its_credential() {
        let acme = TenantName::new("acme").unwrap();
        let creds = Credentials::new(vec![
            cred(
                "ops",
                Role::Operator,
                TokenSource::Fixed("ops-token-0123456789".into()),
            ),
            cred(
                "acme-ci",
                Role::Tenant(acme.clone()),
                TokenSource::Fixed("acme-token-0123456789".into()),
            ),
        ]);
        let c = creds.authenticate(b"acme-token-0123456789").unwrap();
        assert_eq!(c.credential.as_str(), "acme-ci");
        assert_eq!(c.role, Role::Tenant(acme));
        assert!(c.require_tenant("acme", "pipeline").is_ok());
        let err = c.require_tenant("globex", "pipeline").unwrap_err();
        assert!(err.to_string().contains("tenant `globex`"), "{err}");
        assert!(c.require_operator("backends").is_err());
        let ops = creds.authenticate(b"ops-token-0123456789").unwrap();
        assert!(ops.require_operator("backends").is_ok());
        assert!(creds.authenticate(b"ops-token-012345678").is_none());
        assert!(creds.authenticate(b"").is_none());
    }

    #[test]
    fn a_token_file_rotates_and_a_short_one_disables_the_credential() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "first-token-0123456789\n").unwrap();
        let creds = Credentials::new(vec![cred(
            "ops",
            Role::Operator,
            TokenSource::File(path.clone()),
        )]);
        assert!(creds.authenticate(b"first-token-0123456789").is_some());
        // A different size changes the stamp even within one mtime tick.
        std::fs::write(&path, "second-token-0123456789").unwrap();
        assert!(creds.authenticate(b"first-token-0123456789").is_none());
        assert!(creds.authenticate(b"second-token-0123456789").is_some());
        std::fs::write(&path, "short").unwrap();
        assert!(creds.authenticate(b"short").is_none());
        assert!(creds.authenticate(b"second-token-0123456789").is_none());
        assert!(read_token_file(std::path::Path::new("/dev/zero")).is_err());
    }
}
