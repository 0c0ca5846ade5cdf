//! Static facts about the fleet, delivered when it changes and looked up by [`BackendId`].

use crate::wit::types;

/// A backend's index in the [`Fleet`]; what candidates and placements refer to.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    bytemuck::Pod,
    bytemuck::Zeroable,
)]
#[repr(transparent)]
pub struct BackendId(pub u32);

/// What a backend is deployed to do in a prefill/decode split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// Whole requests, or either leg of a split.
    #[default]
    Any,
    /// Prompts only.
    Prefill,
    /// Generation only.
    Decode,
}

impl Role {
    /// Whether a backend in this role may run a request's prompt.
    pub fn can_prefill(self) -> bool {
        matches!(self, Role::Any | Role::Prefill)
    }

    /// Whether a backend in this role may generate a request's output.
    pub fn can_decode(self) -> bool {
        matches!(self, Role::Any | Role::Decode)
    }
}

/// Static facts about one backend.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Backend {
    /// Unique name from the operator's config.
    pub name: String,
    /// Accelerator vendor, lowercase (`nvidia`, `amd`, `intel`).
    pub vendor: String,
    /// Accelerator model, lowercase (`h100`, `mi300x`).
    pub accelerator: String,
    /// Region; empty when not configured.
    pub region: String,
    /// Operator labels; keys are unique.
    pub labels: Vec<(String, String)>,
    /// Deployment role.
    pub role: Role,
    /// Price per hour; 0 when not configured.
    pub cost_per_hour: f64,
    /// Declared prefill speed, tokens per second; 0 when unknown.
    pub prefill_tokens_per_s: f32,
    /// Declared decode speed per sequence, tokens per second; 0 when unknown.
    pub decode_tokens_per_s: f32,
    /// KV cache capacity in tokens; 0 when unknown.
    pub kv_capacity_tokens: u64,
    /// KV transfer link bandwidth, gigabytes per second; 0 when unknown.
    pub kv_link_gbytes_per_s: f32,
    /// KV cache bytes per token of context; 0 when unknown.
    pub kv_bytes_per_token: u32,
}

impl Backend {
    /// The value of label `key`, if set.
    pub fn label(&self, key: &str) -> Option<&str> {
        find_label(&self.labels, key)
    }

    /// Whether every `(key, value)` in `selector` is set to that value on this backend.
    /// An empty selector matches every backend; a value of `*` matches any value.
    pub fn matches<K: AsRef<str>, V: AsRef<str>>(&self, selector: &[(K, V)]) -> bool {
        selector.iter().all(|(k, v)| match self.label(k.as_ref()) {
            Some(have) => v.as_ref() == "*" || have == v.as_ref(),
            None => false,
        })
    }
}

pub(crate) fn find_label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Every backend the router knows, indexed by [`BackendId`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Fleet {
    /// Increases on every change.
    pub generation: u64,
    /// The backends; `BackendId(i)` is `backends[i]`.
    pub backends: Vec<Backend>,
}

impl Fleet {
    /// The backend with this id.
    ///
    /// # Panics
    ///
    /// When the id is not in the fleet, which the host never sends.
    pub fn backend(&self, id: BackendId) -> &Backend {
        &self.backends[id.0 as usize]
    }

    /// The backend with this id, or `None` when it is not in the fleet.
    pub fn get(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(id.0 as usize)
    }

    /// Whether backend `id` may generate a request's output (role `any` or `decode`), so
    /// serve a whole request or the decode leg of a split. False for an unknown id.
    pub fn can_decode(&self, id: BackendId) -> bool {
        self.get(id).is_some_and(|b| b.role.can_decode())
    }

    /// Whether backend `id` may run a request's prompt (role `any` or `prefill`). False
    /// for an unknown id.
    pub fn can_prefill(&self, id: BackendId) -> bool {
        self.get(id).is_some_and(|b| b.role.can_prefill())
    }

    /// The id of the backend called `name`.
    pub fn find(&self, name: &str) -> Option<BackendId> {
        self.backends
            .iter()
            .position(|b| b.name == name)
            .map(|i| BackendId(i as u32))
    }
}

impl From<types::Role> for Role {
    fn from(r: types::Role) -> Self {
        match r {
            types::Role::Any => Role::Any,
            types::Role::Prefill => Role::Prefill,
            types::Role::Decode => Role::Decode,
        }
    }
}

impl From<types::BackendInfo> for Backend {
    fn from(b: types::BackendInfo) -> Self {
        Backend {
            name: b.name,
            vendor: b.vendor,
            accelerator: b.accelerator,
            region: b.region,
            labels: b.labels,
            role: b.role.into(),
            cost_per_hour: b.cost_per_hour,
            prefill_tokens_per_s: b.prefill_tokens_per_s,
            decode_tokens_per_s: b.decode_tokens_per_s,
            kv_capacity_tokens: b.kv_capacity_tokens,
            kv_link_gbytes_per_s: b.kv_link_gbytes_per_s,
            kv_bytes_per_token: b.kv_bytes_per_token,
        }
    }
}

impl From<types::Fleet> for Fleet {
    fn from(f: types::Fleet) -> Self {
        Fleet {
            generation: f.generation,
            backends: f.backends.into_iter().map(Backend::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_decide_which_leg_a_backend_may_take() {
        let mut fleet = crate::testing::fleet(3);
        fleet.backends[1].role = Role::Prefill;
        fleet.backends[2].role = Role::Decode;
        let ids = [0, 1, 2, 9].map(BackendId);
        assert_eq!(ids.map(|i| fleet.can_decode(i)), [true, false, true, false]);
        assert_eq!(
            ids.map(|i| fleet.can_prefill(i)),
            [true, true, false, false]
        );
    }
}
