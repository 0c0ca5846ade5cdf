//! The [`Policies`] handle: the engine, the registry and every tenant's pipelines;
//! uploads (within a tenant namespace's quota), deletions, setting pipelines (pinned to
//! exact versions), canaries, shadows and rollback, swapped atomically and persisted to
//! the state directory, and restoring them at start-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::Error;
use super::engine::{Limits, PolicyEngine, PolicyKind};
use super::facts::{BackendFacts, Candidate, FleetFacts, RequestFacts};
use super::metrics::{PolicyLabels, PolicyMetrics, TenantLabels};
use super::pipeline::{CanarySpec, Pipeline, PipelineInfo, Step, TenantPipeline};
use super::registry::{PolicyVersion, Registry};
use super::shipped;
use super::spec::{FailureMode, Picker, PipelineSpec, StageSpec};
use super::stage::Stage;
use super::tenancy::{FuelBucket, PolicyBudget, PolicyQuota, TenantUsage};
use crate::names::{PolicyName, TenantName};
use crate::state::StateDir;

/// The component bytes of the shipped policy `name`, if there is one.
pub fn shipped_component(name: &str) -> Option<&'static [u8]> {
    shipped::COMPONENTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
}

/// Everything about policies: the engine, the registry and every tenant's pipelines.
/// Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Policies {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<PolicyEngine>,
    registry: Registry,
    tenants: ArcSwap<HashMap<TenantName, Arc<TenantPipeline>>>,
    /// Serialises pipeline changes so each reads the latest map and version.
    writer: Mutex<()>,
    /// What decides for tenants with no pipeline when `default` has none either: the
    /// native least-load until the shipped policies are installed, then
    /// [`PipelineSpec::default_routing`].
    fallback: ArcSwap<TenantPipeline>,
    state: Option<StateDir>,
    metrics: PolicyMetrics,
    /// Each tenant's quota and budget; tenants not configured get the defaults.
    tenancy: RwLock<HashMap<TenantName, Tenancy>>,
    /// Serialises namespaced uploads so two cannot both pass the quota check.
    uploads: Mutex<()>,
}

/// One tenant's limits on the policy runtime.
#[derive(Clone)]
struct Tenancy {
    quota: PolicyQuota,
    /// `None`: unlimited.
    bucket: Option<Arc<FuelBucket>>,
}

impl Tenancy {
    fn new(quota: PolicyQuota, budget: Option<PolicyBudget>) -> Tenancy {
        Tenancy {
            quota,
            bucket: budget.map(|b| Arc::new(FuelBucket::new(b))),
        }
    }
}

/// Most earlier pipelines kept per tenant for rollback.
const HISTORY: usize = 16;

/// Tenant whose pipeline serves tenants that have none of their own.
pub const DEFAULT_TENANT: &str = "default";

fn default_tenant() -> TenantName {
    TenantName::new(DEFAULT_TENANT).expect("`default` is a valid tenant name")
}

const TENANTS_DIR: &str = "tenants";

impl Policies {
    /// Starts the runtime with nothing registered. Changes persist to `state`; restoring
    /// what it holds is a separate step: install the shipped and configured policies
    /// first, then call [`Policies::restore_policies`] and [`Policies::restore_pipelines`].
    ///
    /// # Errors
    ///
    /// When the engine cannot be created.
    pub fn new(limits: Limits, state: Option<StateDir>) -> Result<Policies, Error> {
        let engine = PolicyEngine::new(limits)?;
        let metrics = PolicyMetrics::default();
        let fallback = ArcSwap::from_pointee(builtin_pipeline(&default_tenant(), &metrics));
        Ok(Policies {
            inner: Arc::new(Inner {
                registry: Registry::new(engine.clone(), state.clone()),
                engine,
                tenants: ArcSwap::from_pointee(HashMap::new()),
                writer: Mutex::new(()),
                fallback,
                state,
                metrics,
                tenancy: RwLock::new(HashMap::new()),
                uploads: Mutex::new(()),
            }),
        })
    }

    /// Sets `tenant`'s quota and policy CPU budget (`None`: unlimited). Call before its
    /// pipelines are restored or set: a pipeline takes the budget it is built with.
    pub fn configure_tenant(
        &self,
        tenant: &TenantName,
        quota: PolicyQuota,
        budget: Option<PolicyBudget>,
    ) {
        self.inner
            .tenancy
            .write()
            .expect("tenancy lock")
            .insert(tenant.clone(), Tenancy::new(quota, budget));
    }

    /// `tenant`'s limits, creating the defaults for a tenant not configured.
    fn tenancy(&self, tenant: &str) -> Tenancy {
        if let Some(t) = self.inner.tenancy.read().expect("tenancy lock").get(tenant) {
            return t.clone();
        }
        let name = TenantName::new(tenant).expect("callers pass validated tenant names");
        self.inner
            .tenancy
            .write()
            .expect("tenancy lock")
            .entry(name)
            .or_insert_with(|| Tenancy::new(PolicyQuota::default(), Some(PolicyBudget::DEFAULT)))
            .clone()
    }

    /// What `tenant`'s namespace holds against its quota, and its budget.
    pub fn usage(&self, tenant: &TenantName) -> TenantUsage {
        let t = self.tenancy(tenant);
        let (versions, bytes) = self.inner.registry.namespace_usage(tenant);
        TenantUsage {
            tenant: tenant.to_string(),
            versions,
            bytes,
            quota: t.quota,
            budget: t.bucket.as_ref().map(|b| b.budget()),
            budget_available: t.bucket.as_ref().map(|b| b.available() as i64),
        }
    }

    /// Registers the uploads kept in the state directory. Call after
    /// [`Policies::install_shipped`] and before the config's policies are uploaded (an
    /// unchanged config policy is then the stored version, keeping its upload order).
    /// An entry that cannot be restored is reported to the state directory.
    pub fn restore_policies(&self) {
        self.inner.registry.restore();
    }

    /// Restores the tenants' pipelines kept in the state directory. Call once every
    /// policy is registered (shipped, stored, configured), before the config's
    /// pipelines. A pipeline with bare policy names (stored before pinning) is pinned
    /// now. An entry that cannot be restored is reported to the state directory and,
    /// unless it says to skip, its tenant's requests are refused until it is fixed.
    pub fn restore_pipelines(&self) {
        let Some(state) = &self.inner.state else {
            return;
        };
        let names = match state.list(TENANTS_DIR) {
            Ok(n) => n,
            Err(e) => {
                state.report_damaged(TENANTS_DIR, &format_args!("{e:#}"));
                return;
            }
        };
        let _writer = self.inner.writer.lock().expect("pipeline writer");
        let mut map = (**self.inner.tenants.load()).clone();
        let damaged = |tenant: &TenantName, entry: String| {
            let mut t = builtin_pipeline(tenant, &self.inner.metrics);
            t.damaged = Some(entry.into());
            Arc::new(t)
        };
        for file in &names {
            let entry = format!("{TENANTS_DIR}/{file}");
            let Some(tenant) = file
                .strip_suffix(".json")
                .and_then(|t| TenantName::new(t).ok())
            else {
                state.report_damaged(
                    &entry,
                    &"not named `<tenant>.json` after a valid tenant name",
                );
                continue;
            };
            match self.restore_tenant(state, &tenant, &entry) {
                Ok(t) => {
                    map.insert(tenant, Arc::new(t));
                }
                Err(error) => {
                    if state.report_damaged(&entry, &error) {
                        map.insert(tenant.clone(), damaged(&tenant, entry));
                    }
                }
            }
        }
        self.inner.tenants.store(Arc::new(map));
    }

    fn restore_tenant(
        &self,
        state: &StateDir,
        tenant: &TenantName,
        entry: &str,
    ) -> Result<TenantPipeline, String> {
        let bytes = state
            .read(entry)
            .map_err(|e| format!("{e:#}"))?
            .ok_or("vanished")?;
        let mut info: PipelineInfo = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if info.tenant != *tenant {
            return Err(format!("holds tenant `{}`, not `{tenant}`", info.tenant));
        }
        let stored = info.clone();
        self.pin_info(&mut info).map_err(|e| e.to_string())?;
        for spec in &mut info.history {
            // NB: best effort; a history entry naming a policy that is gone fails only
            // when rolled back to.
            let _ = self.pin(spec);
        }
        let built = self.build_tenant(info).map_err(|e| e.to_string())?;
        if built.info != stored {
            match self.persist(&built.info) {
                Ok(()) => {
                    tracing::info!(%tenant, "stored pipeline pinned to its policies' versions")
                }
                // NB: it serves pinned all the same; the next change stores it.
                Err(e) => tracing::warn!(%tenant, error = %e, "storing the pinned pipeline failed"),
            }
        }
        Ok(built)
    }

    /// Registers the policies shipped inside the binary under their crate names.
    ///
    /// # Errors
    ///
    /// When a shipped component fails to load, which is a build defect.
    pub fn install_shipped(&self) -> Result<Vec<PolicyVersion>, Error> {
        let versions = shipped::COMPONENTS
            .iter()
            .map(|(name, bytes)| {
                let name = PolicyName::new(name).expect("shipped policy names are valid");
                let prepared = self.inner.registry.prepare(&name, bytes)?;
                let v = self.inner.registry.commit(prepared, bytes, true)?;
                Ok(v.snapshot())
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let mut info = empty_info(&default_tenant());
        info.active = PipelineSpec::default_routing();
        self.pin_info(&mut info)?;
        self.inner
            .fallback
            .store(Arc::new(self.build_tenant(info)?));
        Ok(versions)
    }

    /// Checks, compiles and registers an upload; with `smoke`, first calls it once on a
    /// synthetic fleet of four backends and refuses it if that call fails.
    ///
    /// # Errors
    ///
    /// The reason the upload is refused: size, header, compile, imports, world, smoke.
    pub fn upload(
        &self,
        name: &PolicyName,
        bytes: &[u8],
        smoke: bool,
    ) -> Result<PolicyVersion, Error> {
        let prepared = self.inner.registry.prepare(name, bytes)?;
        if smoke && !prepared.is_registered() {
            smoke_test(&self.inner.engine, prepared.loaded.clone())?;
        }
        let _uploads = self.inner.uploads.lock().expect("upload lock");
        if let Some(ns) = name.namespace()
            && !prepared.is_registered()
        {
            let quota = self.tenancy(ns).quota;
            let (versions, used) = self.inner.registry.namespace_usage(ns);
            if versions >= quota.versions {
                return Err(Error::OverQuota {
                    tenant: ns.to_owned(),
                    detail: format!("versions: {versions} of {} stored", quota.versions),
                });
            }
            if used + bytes.len() as u64 > quota.bytes {
                return Err(Error::OverQuota {
                    tenant: ns.to_owned(),
                    detail: format!(
                        "bytes: {used} stored + {} uploaded > {}",
                        bytes.len(),
                        quota.bytes
                    ),
                });
            }
        }
        let version = self.inner.registry.commit(prepared, bytes, false)?;
        Ok(version.snapshot())
    }

    /// Deletes the uploaded version `name@version` (the full 12-digit version) and its
    /// stored files; its label. Refused while a pipeline depends on it: any tenant's
    /// active, canary or shadow pipeline, or the one a rollback would restore.
    ///
    /// # Errors
    ///
    /// [`Error::InUse`] naming the user, [`Error::NoSuchVersion`], [`Error::Shipped`].
    pub fn delete(&self, name: &PolicyName, version: &str) -> Result<String, Error> {
        let _writer = self.inner.writer.lock().expect("pipeline writer");
        let label = format!("{name}@{version}");
        let newest = self.inner.registry.find(name, None);
        let is_newest = newest.is_some_and(|n| n.info.version == version);
        let uses = |spec: &PipelineSpec| {
            spec.stages().any(|s| {
                s.policy == label || (s.follow_latest && s.policy == name.as_str() && is_newest)
            })
        };
        for t in self.inner.tenants.load().values() {
            let info = &t.info;
            let users = [
                ("active pipeline", Some(&info.active)),
                ("canary", info.canary.as_ref().map(|c| &c.pipeline)),
                ("shadow", info.shadow.as_ref()),
                ("rollback target", info.history.last()),
            ];
            for (what, spec) in users {
                if spec.is_some_and(uses) {
                    return Err(Error::InUse {
                        policy: label,
                        user: format!("tenant `{}`'s {what}", info.tenant),
                    });
                }
            }
        }
        let removed = self.inner.registry.remove(name, version)?;
        tracing::info!(policy = %removed.label(), "policy version deleted");
        Ok(removed.label())
    }

    /// Waits up to `timeout` for `reference`'s optimized code to replace its baseline
    /// code; whether it has. For tools and tests: requests never wait, they run on
    /// whichever code is in place.
    ///
    /// # Errors
    ///
    /// When the reference is unknown.
    pub fn wait_optimized(&self, reference: &str, timeout: Duration) -> Result<bool, Error> {
        Ok(self
            .inner
            .registry
            .resolve(reference)?
            .wait_optimized(timeout))
    }

    /// Every registered version.
    pub fn versions(&self) -> Vec<PolicyVersion> {
        self.inner.registry.list()
    }

    /// A stage outside any pipeline, for the policy authoring tools.
    ///
    /// # Errors
    ///
    /// When the reference is unknown or the policy rejects its config.
    pub fn stage(&self, reference: &str, config: &serde_json::Value) -> Result<Stage, Error> {
        let version = self.inner.registry.resolve(reference)?;
        Stage::new(self.inner.engine.clone(), version, config)
    }

    /// The snapshot of `tenant`'s pipelines; tenants without one get the `default`
    /// tenant's, and failing that [`PipelineSpec::default_routing`] (version 0). When the pipeline that would
    /// decide could not be restored, the snapshot is [`TenantPipeline::damaged`] and
    /// refuses every request: never another pipeline in its place.
    pub fn pipeline(&self, tenant: &str) -> Arc<TenantPipeline> {
        let map = self.inner.tenants.load();
        map.get(tenant)
            .or_else(|| map.get(DEFAULT_TENANT))
            .cloned()
            .unwrap_or_else(|| self.inner.fallback.load_full())
    }

    /// Forgets a damaged tenant entry the operator discarded: the tenant is served by
    /// `default` (or its configured pipeline on the next start) from now on.
    pub fn forget_damaged(&self, entry: &str) {
        let _writer = self.inner.writer.lock().expect("pipeline writer");
        let map = self.inner.tenants.load_full();
        let is_it = |t: &Arc<TenantPipeline>| t.damaged() == Some(entry);
        if !map.values().any(is_it) {
            return;
        }
        let mut next = (*map).clone();
        next.retain(|_, t| !is_it(t));
        self.inner.tenants.store(Arc::new(next));
    }

    /// Every tenant's pipelines.
    pub fn pipelines(&self) -> Vec<PipelineInfo> {
        let mut out: Vec<PipelineInfo> = self
            .inner
            .tenants
            .load()
            .values()
            .filter(|t| t.damaged.is_none())
            .map(|t| t.info.clone())
            .collect();
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        out
    }

    /// The limits every policy runs under.
    pub fn limits(&self) -> &Limits {
        &self.inner.engine.limits
    }

    /// The runtime's metrics, to register with the router's Prometheus registry.
    pub fn metrics(&self) -> &PolicyMetrics {
        &self.inner.metrics
    }

    /// Makes `spec` the tenant's active pipeline; the previous one goes to the history.
    /// Clears any canary and shadow.
    ///
    /// # Errors
    ///
    /// When the spec is invalid or names unknown policies; nothing changes then.
    pub fn set_pipeline(
        &self,
        tenant: &TenantName,
        spec: PipelineSpec,
    ) -> Result<PipelineInfo, Error> {
        self.change(tenant, true, |current| {
            let mut history = current.map(|c| c.history.clone()).unwrap_or_default();
            if let Some(c) = current {
                history.push(c.active.clone());
            }
            if history.len() > HISTORY {
                history.remove(0);
            }
            Ok((spec, None, None, history))
        })
    }

    /// Sets `spec` as the tenant's pipeline only if it has none yet (none restored from
    /// the state directory, damaged or not): config-file pipelines must not undo admin
    /// changes, nor stand in for a damaged one.
    ///
    /// # Errors
    ///
    /// As [`Policies::set_pipeline`].
    pub fn set_initial_pipeline(
        &self,
        tenant: &TenantName,
        spec: PipelineSpec,
    ) -> Result<(), Error> {
        if self.inner.tenants.load().contains_key(tenant) {
            return Ok(());
        }
        match self.set_pipeline(tenant, spec) {
            // NB: cluster mode: another replica set it first; its pipeline arrives with
            // the shared state and wins, as a stored one does.
            Err(Error::State(crate::state::Error::Conflict { .. })) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Cluster mode: applies a change another replica made to `tenant`'s pipeline.
    /// `commit` writes it into the state directory; the tenant is then rebuilt from there
    /// (or forgotten, when the entry was deleted), all under the pipeline writer lock so
    /// no local change interleaves with it.
    ///
    /// # Errors
    ///
    /// Why the stored pipeline cannot be applied; the tenant keeps its pipeline then.
    pub fn apply_shared_pipeline(
        &self,
        tenant: &TenantName,
        commit: impl FnOnce() -> Result<(), crate::state::Error>,
    ) -> Result<(), String> {
        let Some(state) = &self.inner.state else {
            return Ok(());
        };
        let _writer = self.inner.writer.lock().expect("pipeline writer");
        commit().map_err(|e| format!("{e:#}"))?;
        let entry = format!("{TENANTS_DIR}/{tenant}.json");
        let mut map = (**self.inner.tenants.load()).clone();
        if state.read(&entry).map_err(|e| format!("{e:#}"))?.is_some() {
            let built = self.restore_tenant(state, tenant, &entry)?;
            tracing::info!(%tenant, version = built.info.version, "pipeline applied from the cluster");
            map.insert(tenant.clone(), Arc::new(built));
        } else {
            map.remove(tenant);
        }
        self.inner.tenants.store(Arc::new(map));
        Ok(())
    }

    /// Cluster mode: applies the upload or deletion of the policy version `base`
    /// (`name@version`) another replica made; `commit` writes it into the state
    /// directory first.
    ///
    /// # Errors
    ///
    /// Why the stored version cannot be loaded.
    pub fn apply_shared_policy(
        &self,
        base: &str,
        commit: impl FnOnce() -> Result<(), crate::state::Error>,
    ) -> Result<(), String> {
        let _uploads = self.inner.uploads.lock().expect("upload lock");
        commit().map_err(|e| format!("{e:#}"))?;
        self.inner.registry.apply_stored(base)
    }

    /// Sets or clears the tenant's canary.
    ///
    /// # Errors
    ///
    /// When the spec is invalid or the share is outside [0, 1].
    pub fn set_canary(
        &self,
        tenant: &TenantName,
        canary: Option<CanarySpec>,
    ) -> Result<PipelineInfo, Error> {
        if let Some(c) = &canary
            && !(0.0..=1.0).contains(&c.share)
        {
            return Err(Error::InvalidPipeline(format!(
                "canary share {} is outside [0, 1]",
                c.share
            )));
        }
        self.change(tenant, false, |current| {
            let c = current.cloned().unwrap_or_else(|| empty_info(tenant));
            Ok((c.active, canary, c.shadow, c.history))
        })
    }

    /// Sets or clears the tenant's shadow pipeline.
    ///
    /// # Errors
    ///
    /// When the spec is invalid.
    pub fn set_shadow(
        &self,
        tenant: &TenantName,
        shadow: Option<PipelineSpec>,
    ) -> Result<PipelineInfo, Error> {
        self.change(tenant, false, |current| {
            let c = current.cloned().unwrap_or_else(|| empty_info(tenant));
            Ok((c.active, c.canary, shadow, c.history))
        })
    }

    /// Restores the tenant's previous active pipeline.
    ///
    /// # Errors
    ///
    /// [`Error::NoHistory`] when there is none.
    pub fn rollback(&self, tenant: &TenantName) -> Result<PipelineInfo, Error> {
        self.change(tenant, false, |current| {
            let mut c = current
                .cloned()
                .ok_or_else(|| Error::NoHistory(tenant.to_string()))?;
            let previous = c
                .history
                .pop()
                .ok_or_else(|| Error::NoHistory(tenant.to_string()))?;
            Ok((previous, None, None, c.history))
        })
    }

    /// Builds and installs a new version of a tenant's pipelines from `f`'s parts, then
    /// persists it. Every stage is pinned to `name@version` first (except
    /// `follow_latest` ones), so rebuilding for a canary, a shadow or a rollback never
    /// moves a pipeline to a newer upload. Pipelines are built before anything is
    /// swapped, so a bad spec changes nothing. On a tenant whose stored pipeline is
    /// damaged, only a change that `replaces_damaged` (setting the active pipeline) is
    /// allowed: a canary, shadow or rollback would build on a pipeline that is gone.
    fn change(
        &self,
        tenant: &TenantName,
        replaces_damaged: bool,
        f: impl FnOnce(
            Option<&PipelineInfo>,
        ) -> Result<
            (
                PipelineSpec,
                Option<CanarySpec>,
                Option<PipelineSpec>,
                Vec<PipelineSpec>,
            ),
            Error,
        >,
    ) -> Result<PipelineInfo, Error> {
        let _writer = self.inner.writer.lock().expect("pipeline writer");
        let map = self.inner.tenants.load_full();
        let current = match map.get(tenant) {
            Some(t) => match (&t.damaged, replaces_damaged) {
                (None, _) => Some(&t.info),
                (Some(_), true) => None,
                (Some(entry), false) => {
                    return Err(Error::Damaged {
                        tenant: tenant.to_string(),
                        entry: entry.to_string(),
                    });
                }
            },
            None => None,
        };
        let (active, canary, shadow, history) = f(current)?;
        let mut info = PipelineInfo {
            tenant: tenant.clone(),
            version: current.map_or(1, |c| c.version + 1),
            active,
            canary,
            shadow,
            history,
        };
        self.pin_info(&mut info)?;
        let built = Arc::new(self.build_tenant(info)?);
        self.persist(&built.info)?;
        let mut next = (*map).clone();
        next.insert(tenant.clone(), built.clone());
        self.inner.tenants.store(Arc::new(next));
        tracing::info!(%tenant, version = built.info.version, "pipeline installed");
        Ok(built.info.clone())
    }

    /// Pins the active, canary and shadow pipelines of `info`.
    fn pin_info(&self, info: &mut PipelineInfo) -> Result<(), Error> {
        self.pin(&mut info.active)?;
        if let Some(c) = &mut info.canary {
            self.pin(&mut c.pipeline)?;
        }
        if let Some(s) = &mut info.shadow {
            self.pin(s)?;
        }
        Ok(())
    }

    /// Replaces every bare policy name in `spec` by `name@version` of its newest
    /// upload, except in `follow_latest` stages (which must name no version).
    fn pin(&self, spec: &mut PipelineSpec) -> Result<(), Error> {
        for stage in spec.stages_mut() {
            if stage.follow_latest {
                if stage.policy.contains('@') {
                    return Err(Error::InvalidPipeline(format!(
                        "{}: `follow_latest` takes a bare policy name, not a version",
                        stage.policy
                    )));
                }
            } else if !stage.policy.contains('@') {
                stage.policy = self.inner.registry.resolve(&stage.policy)?.info.label();
            }
        }
        Ok(())
    }

    fn build_tenant(&self, info: PipelineInfo) -> Result<TenantPipeline, Error> {
        let active = self.build(&info.active)?;
        let canary = match &info.canary {
            Some(c) => Some((self.build(&c.pipeline)?, c.share)),
            None => None,
        };
        let shadow = info.shadow.as_ref().map(|s| self.build(s)).transpose()?;
        Ok(TenantPipeline {
            budget: self.tenancy(&info.tenant).bucket,
            damaged: None,
            tenant_labels: TenantLabels {
                tenant: info.tenant.to_string(),
            },
            info,
            active,
            canary,
            shadow,
            metrics: self.inner.metrics.clone(),
        })
    }

    fn build(&self, spec: &PipelineSpec) -> Result<Pipeline, Error> {
        if spec.placer.is_some() && !spec.scorers.is_empty() {
            return Err(Error::InvalidPipeline(
                "a pipeline has either scorers or a placer, not both".into(),
            ));
        }
        if let Picker::Softmax { temperature } = spec.picker
            && !(temperature > 0.0 && temperature.is_finite())
        {
            return Err(Error::InvalidPipeline(format!(
                "picker.temperature: {temperature} must be > 0"
            )));
        }
        let step = |s: &StageSpec, kind: PolicyKind, weight: f32, at: String| {
            let stage = self.stage(&s.policy, &s.config)?;
            if stage.kind() != kind {
                return Err(Error::InvalidPipeline(format!(
                    "{at}: {} is a {}, not a {}",
                    s.policy,
                    stage.kind().as_str(),
                    kind.as_str()
                )));
            }
            let fuel = self
                .inner
                .metrics
                .fuel
                .get_or_create(&PolicyLabels {
                    policy: stage.label().to_string(),
                })
                .clone();
            Ok(Step {
                stage: Arc::new(stage),
                weight,
                fuel,
            })
        };
        let filters = spec
            .filters
            .iter()
            .enumerate()
            .map(|(i, s)| step(s, PolicyKind::Filter, 1.0, format!("filters[{i}]")))
            .collect::<Result<_, _>>()?;
        let scorers = spec
            .scorers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if !(0.0..=1.0).contains(&s.weight) {
                    return Err(Error::InvalidPipeline(format!(
                        "scorers[{i}].weight: {} is outside [0, 1]",
                        s.weight
                    )));
                }
                step(
                    &s.stage,
                    PolicyKind::Scorer,
                    s.weight,
                    format!("scorers[{i}]"),
                )
            })
            .collect::<Result<_, _>>()?;
        let placer = spec
            .placer
            .as_ref()
            .map(|s| step(s, PolicyKind::Placer, 1.0, "placer".into()))
            .transpose()?;
        Ok(Pipeline {
            filters,
            scorers,
            placer,
            picker: spec.picker,
            failure_mode: spec.failure_mode,
        })
    }

    fn persist(&self, info: &PipelineInfo) -> Result<(), Error> {
        if let Some(state) = &self.inner.state {
            let bytes = serde_json::to_vec_pretty(info).expect("pipeline info serializes");
            // NB: `info.tenant` is a validated name, so this stays inside the directory.
            state.write(format!("{TENANTS_DIR}/{}.json", info.tenant), &bytes)?;
        }
        Ok(())
    }
}

/// The built-in least-load pipeline, as `tenant`'s.
fn builtin_pipeline(tenant: &TenantName, metrics: &PolicyMetrics) -> TenantPipeline {
    TenantPipeline {
        budget: None,
        damaged: None,
        info: empty_info(tenant),
        active: Pipeline {
            filters: Vec::new(),
            scorers: Vec::new(),
            placer: None,
            picker: Picker::Max,
            failure_mode: FailureMode::Fallback,
        },
        canary: None,
        shadow: None,
        metrics: metrics.clone(),
        tenant_labels: TenantLabels {
            tenant: tenant.to_string(),
        },
    }
}

fn empty_info(tenant: &TenantName) -> PipelineInfo {
    PipelineInfo {
        tenant: tenant.clone(),
        version: 0,
        active: PipelineSpec::builtin(),
        canary: None,
        shadow: None,
        history: Vec::new(),
    }
}

/// Calls a fresh stage of `version` once on a synthetic fleet. A policy whose
/// `configure` needs a config it was not given is instantiated but not called.
fn smoke_test(
    engine: &Arc<PolicyEngine>,
    version: Arc<super::registry::LoadedVersion>,
) -> Result<(), Error> {
    let stage = match Stage::new(engine.clone(), version, &serde_json::Value::Null) {
        Ok(s) => s,
        Err(Error::Configure { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let fleet = FleetFacts {
        generation: 1,
        backends: (0..4)
            .map(|i| BackendFacts {
                name: format!("smoke-{i}"),
                vendor: "nvidia".into(),
                accelerator: "h100".into(),
                ..BackendFacts::default()
            })
            .collect(),
    };
    let candidates: Vec<Candidate> = (0..4)
        .map(|i| Candidate {
            backend: i,
            waiting: i,
            cached_prefix_tokens: 16 * i,
            ..Candidate::default()
        })
        .collect();
    let req = RequestFacts {
        id: 42,
        tenant: DEFAULT_TENANT.into(),
        model: "smoke".into(),
        prompt_tokens: 256,
        max_tokens: 16,
        ..RequestFacts::default()
    };
    stage
        .run(&fleet, &req, &candidates)
        .map(|_| ())
        .map_err(Error::Smoke)
}
