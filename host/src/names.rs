//! Validated names of tenants, backends and policies: the one grammar every entry point
//! (config file, admin API paths and bodies, state directory) checks once.
//!
//! A name matches `[A-Za-z0-9][A-Za-z0-9._-]{0,62}` and contains no `..`. Names become
//! file names in the state directory, so the grammar excludes everything a path could
//! use to leave its folder: `/`, `\`, a leading `.`, `..`, NUL, and anything non-ASCII.
//!
//! A policy name may carry a tenant namespace, `<tenant>/<name>` (both parts names),
//! which becomes one folder level in the state directory.

use std::fmt;

/// Why a string is not a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name `{name}`: {reason}")]
pub struct InvalidName {
    /// `tenant`, `backend` or `policy`.
    pub kind: &'static str,
    /// The offending input, escaped for display.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Longest name, bytes.
pub const MAX_LEN: usize = 63;

/// Checks `s` against the grammar; the reason when it does not match.
fn check(s: &str) -> Result<(), &'static str> {
    let Some(first) = s.bytes().next() else {
        return Err("it is empty");
    };
    if s.len() > MAX_LEN {
        return Err("it is longer than 63 bytes");
    }
    if !first.is_ascii_alphanumeric() {
        return Err("it must start with a letter or digit");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("use only letters, digits, `.`, `_` and `-`");
    }
    if s.contains("..") {
        return Err("it must not contain `..`");
    }
    Ok(())
}

/// Checks a policy name: a name, or `<tenant>/<name>`.
fn check_policy(s: &str) -> Result<(), &'static str> {
    match s.split_once('/') {
        Some((namespace, name)) => {
            check(namespace)
                .map_err(|_| "its namespace (before `/`) is not a valid tenant name")?;
            check(name)
        }
        None => check(s),
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        name_type!($(#[$doc])* $ty, $kind, check);
    };
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $check:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String)]
        pub struct $ty(Box<str>);

        impl $ty {
            /// Validates `s`.
            ///
            /// # Errors
            ///
            /// [`InvalidName`] saying what is wrong.
            pub fn new(s: &str) -> Result<Self, InvalidName> {
                $check(s).map(|()| $ty(s.into())).map_err(|reason| InvalidName {
                    kind: $kind,
                    name: s.escape_debug().to_string(),
                    reason,
                })
            }

            /// The name.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, InvalidName> {
                $ty::new(s)
            }
        }

        impl std::ops::Deref for $ty {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0.into()
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $ty::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A tenant's name. Example: `acme`.
    TenantName,
    "tenant"
);
name_type!(
    /// A backend's name. Example: `h100-a`.
    BackendName,
    "backend"
);
name_type!(
    /// A policy's name (without `@version`): global (`prefix-affinity`) or in a tenant's
    /// namespace (`acme/eu-only`).
    PolicyName,
    "policy",
    check_policy
);
name_type!(
    /// An admin credential's name, as the audit log records it. Example: `acme-ci`.
    CredentialName,
    "credential"
);

impl PolicyName {
    /// The tenant namespace, for `<tenant>/<name>`; `None` for a global name.
    pub fn namespace(&self) -> Option<&str> {
        self.0.split_once('/').map(|(ns, _)| ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_one_grammar() {
        for ok in ["acme", "h100-a", "A.b_c-9", "default", "0", &"x".repeat(63)] {
            assert!(TenantName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../../pwned",
            "a/b",
            "a\\b",
            ".hidden",
            "-x",
            "_x",
            "a..b",
            "a\0",
            "é",
            "a b",
            "a@b",
            &"x".repeat(64),
        ] {
            assert!(BackendName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn policy_names_may_have_one_tenant_namespace() {
        let n = PolicyName::new("acme/eu-only").unwrap();
        assert_eq!(n.namespace(), Some("acme"));
        assert_eq!(PolicyName::new("eu-only").unwrap().namespace(), None);
        for bad in [
            "acme/", "/x", "a/b/c", "../x", "acme/..", "acme/.x", "a b/x",
        ] {
            assert!(PolicyName::new(bad).is_err(), "{bad:?}");
        }
        assert!(TenantName::new("acme/x").is_err());
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<PolicyName>("\"prefix-affinity\"").is_ok());
        let err = serde_json::from_str::<TenantName>("\"../x\"").unwrap_err();
        assert!(err.to_string().contains("invalid tenant name"), "{err}");
    }
}
