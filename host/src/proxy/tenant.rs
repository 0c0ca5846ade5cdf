//! Tenants: who a request is for (API key or a configured header) and the tenant's
//! limits (concurrent requests, requests per second, tokens per second).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, header};
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;
use crate::config::{AuthConfig, TenantConfig};
use crate::policy::DEFAULT_TENANT;

/// One tenant and its limiters.
#[derive(Debug)]
pub struct Tenant {
    /// Tenant name.
    pub name: String,
    /// Whether the tenant has API keys: then only a key selects it, never the tenant
    /// header.
    keyed: bool,
    concurrency: Option<Arc<Semaphore>>,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<DefaultDirectRateLimiter>,
    /// With cache isolation: the secret `cache_salt` its requests carry.
    pub cache_salt: Option<Arc<str>>,
}

/// A request's admission: holds the tenant's concurrency slot until dropped.
#[derive(Debug)]
pub struct Admission {
    _slot: Option<OwnedSemaphorePermit>,
}

impl Tenant {
    fn new(c: &TenantConfig, secret: &[u8; 32]) -> Tenant {
        let limiter = |n: NonZeroU32| RateLimiter::direct(Quota::per_second(n));
        Tenant {
            cache_salt: c
                .cache_isolation
                .then(|| cache_salt(secret, &c.name).into()),
            name: c.name.to_string(),
            keyed: !c.api_keys.is_empty(),
            concurrency: c
                .max_concurrent
                .map(|n| Arc::new(Semaphore::new(n as usize))),
            requests: c.requests_per_s.map(limiter),
            tokens: c.tokens_per_s.map(limiter),
        }
    }

    fn unlimited(name: &str) -> Tenant {
        Tenant {
            name: name.into(),
            keyed: false,
            concurrency: None,
            requests: None,
            tokens: None,
            cache_salt: None,
        }
    }

    /// Admits one request of about `tokens` tokens.
    ///
    /// # Errors
    ///
    /// [`ApiError::RateLimited`] naming the limit and when to retry.
    pub fn admit(&self, tokens: u32) -> Result<Admission, ApiError> {
        let limited = |limit, retry_after| ApiError::RateLimited {
            tenant: self.name.clone(),
            limit,
            retry_after,
        };
        // NB: each limiter's own clock; making a `DefaultClock` per request calibrates a
        // new quanta clock with CPUID, which a profile of the router at 2000 req/s put at
        // 9% of its CPU (CPUID traps to the hypervisor on a VM).
        if let Some(r) = &self.requests {
            r.check()
                .map_err(|n| limited("requests per second", n.wait_time_from(r.clock().now())))?;
        }
        if let (Some(t), Some(n)) = (&self.tokens, NonZeroU32::new(tokens)) {
            match t.check_n(n) {
                Ok(Ok(())) => {}
                Ok(Err(n)) => {
                    return Err(limited(
                        "tokens per second",
                        n.wait_time_from(t.clock().now()),
                    ));
                }
                Err(_) => return Err(limited("tokens per second", Duration::from_secs(1))),
            }
        }
        let slot = match &self.concurrency {
            Some(s) => Some(
                s.clone()
                    .try_acquire_owned()
                    .map_err(|_| limited("concurrency", Duration::from_secs(1)))?,
            ),
            None => None,
        };
        Ok(Admission { _slot: slot })
    }
}

/// A tenant's cache salt: 32 hex digits of sha256(secret, tenant). Not guessable
/// without the secret, the same across restarts with the same state directory.
fn cache_salt(secret: &[u8; 32], tenant: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(secret);
    h.update(tenant.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The tenant table.
#[derive(Debug)]
pub struct Tenants {
    by_key: HashMap<String, Arc<Tenant>>,
    by_name: HashMap<String, Arc<Tenant>>,
    default: Arc<Tenant>,
    require_api_key: bool,
    header: Option<HeaderName>,
}

impl Tenants {
    /// Builds the table from the config; `secret` derives the cache salts of tenants
    /// with cache isolation.
    pub fn new(auth: &AuthConfig, tenants: &[TenantConfig], secret: &[u8; 32]) -> Tenants {
        let by_name: HashMap<String, Arc<Tenant>> = tenants
            .iter()
            .map(|t| (t.name.to_string(), Arc::new(Tenant::new(t, secret))))
            .collect();
        let by_key = tenants
            .iter()
            .flat_map(|t| {
                t.api_keys
                    .iter()
                    .map(move |k| (k.clone(), t.name.to_string()))
            })
            .filter_map(|(k, name)| by_name.get(&name).map(|t| (k, t.clone())))
            .collect();
        let default = by_name
            .get(DEFAULT_TENANT)
            .cloned()
            .unwrap_or_else(|| Arc::new(Tenant::unlimited(DEFAULT_TENANT)));
        Tenants {
            by_key,
            by_name,
            default,
            require_api_key: auth.require_api_key,
            header: auth.tenant_header.clone(),
        }
    }

    /// The tenant of a request: its API key's, else (when keys are not required) the
    /// one its tenant header names, else `default`. The header selects only tenants
    /// without API keys: naming one that has keys is refused, never served under its
    /// limits and pipeline.
    ///
    /// # Errors
    ///
    /// [`ApiError::Unauthorized`] when keys are required and none matched;
    /// [`ApiError::KeyRequired`] when the header names a tenant that has API keys.
    pub fn resolve(&self, headers: &HeaderMap) -> Result<Arc<Tenant>, ApiError> {
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(t) = key.and_then(|k| self.by_key.get(k)) {
            return Ok(t.clone());
        }
        if self.require_api_key {
            return Err(ApiError::Unauthorized);
        }
        let named = self
            .header
            .as_ref()
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|name| self.by_name.get(name));
        match named {
            Some(t) if t.keyed => Err(ApiError::KeyRequired(t.name.clone())),
            Some(t) => Ok(t.clone()),
            None => Ok(self.default.clone()),
        }
    }
}
