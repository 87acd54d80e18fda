//! How a provider runs jobs on its cluster: the runner image, how pods reach the
//! gateway, and the resources each run may use. Validated once, when built.

use std::collections::BTreeMap;

use url::Url;

use crate::error::{ComputeError, Result};

/// What runs a job on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// A batch/v1 Job: stage and algorithm as init containers, publish as the main one.
    #[default]
    Job,
    /// An Argo Workflow of the same steps (one pod, a `containerSet`), for providers
    /// that run pipelines through Argo.
    Workflow,
}

/// The cluster side of a provider's compute service.
#[derive(Debug, Clone)]
pub struct KubeSettings {
    pub(crate) namespace: String,
    pub(crate) image: String,
    pub(crate) gateway_url: Url,
    pub(crate) gateway_selector: BTreeMap<String, String>,
    pub(crate) gateway_namespace: Option<String>,
    pub(crate) cpu: String,
    pub(crate) memory_overhead_mib: u64,
    pub(crate) ttl_after_finished_secs: i32,
    pub(crate) transfer_allowance_secs: i64,
    pub(crate) flavor: Flavor,
    pub(crate) executor_service_account: Option<String>,
    pub(crate) api_server: Option<(String, i32)>,
}

impl KubeSettings {
    /// Starts settings for pods running `image` (which holds the `insitu` binary) and
    /// reaching the provider's gateway at `gateway_url`.
    pub fn builder(image: impl Into<String>, gateway_url: Url) -> KubeSettingsBuilder {
        KubeSettingsBuilder {
            settings: KubeSettings {
                namespace: "default".into(),
                image: image.into(),
                gateway_url,
                gateway_selector: BTreeMap::new(),
                gateway_namespace: None,
                cpu: "2".into(),
                memory_overhead_mib: 256,
                ttl_after_finished_secs: 600,
                transfer_allowance_secs: 300,
                flavor: Flavor::Job,
                executor_service_account: None,
                api_server: None,
            },
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The gateway's TCP port as pods dial it.
    pub(crate) fn gateway_port(&self) -> i32 {
        i32::from(self.gateway_url.port_or_known_default().unwrap_or(80))
    }
}

/// Builder for [`KubeSettings`].
#[derive(Debug, Clone)]
pub struct KubeSettingsBuilder {
    settings: KubeSettings,
}

impl KubeSettingsBuilder {
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.settings.namespace = ns.into();
        self
    }

    /// Labels of the provider's pods (where the gateway listens): the only egress a
    /// run's pod gets.
    pub fn gateway_selector(mut self, labels: BTreeMap<String, String>) -> Self {
        self.settings.gateway_selector = labels;
        self
    }

    /// The provider's namespace, when runs go to another one.
    pub fn gateway_namespace(mut self, ns: impl Into<String>) -> Self {
        self.settings.gateway_namespace = Some(ns.into());
        self
    }

    /// CPU limit of the algorithm container (a Kubernetes quantity, e.g. `"2"`).
    pub fn cpu(mut self, cpu: impl Into<String>) -> Self {
        self.settings.cpu = cpu.into();
        self
    }

    /// Memory the runner needs beyond the module's own limit.
    pub fn memory_overhead_mib(mut self, mib: u64) -> Self {
        self.settings.memory_overhead_mib = mib;
        self
    }

    /// How long a finished run's Job stays for inspection before the cluster deletes it
    /// (insitu deletes it itself once it has read the outcome).
    pub fn ttl_after_finished_secs(mut self, secs: i32) -> Self {
        self.settings.ttl_after_finished_secs = secs;
        self
    }

    /// Time allowed for staging and publishing, on top of the algorithm's deadline.
    pub fn transfer_allowance_secs(mut self, secs: i64) -> Self {
        self.settings.transfer_allowance_secs = secs;
        self
    }

    pub fn flavor(mut self, flavor: Flavor) -> Self {
        self.settings.flavor = flavor;
        self
    }

    /// The service account of Argo's executor (Workflow flavor only): Argo's own
    /// containers need one; the algorithm's never gets its token.
    pub fn executor_service_account(mut self, name: impl Into<String>) -> Self {
        self.settings.executor_service_account = Some(name.into());
        self
    }

    /// The API server's address block and port (Workflow flavor only): Argo's executor
    /// in the run's pod reports to it, so the pod's egress rule must allow it. The
    /// algorithm container has no token to show it.
    pub fn api_server_egress(mut self, cidr: impl Into<String>, port: u16) -> Self {
        self.settings.api_server = Some((cidr.into(), i32::from(port)));
        self
    }

    /// Checks the settings. Refuses a gateway named by host name: pods get no DNS
    /// (a resolver is a channel out), so they must dial the gateway's address.
    pub fn build(self) -> Result<KubeSettings> {
        let s = self.settings;
        let invalid = |m: String| Err(ComputeError::Invalid(format!("kubernetes settings: {m}")));
        if s.image.trim().is_empty() {
            return invalid("the runner image is empty".into());
        }
        match s.gateway_url.host() {
            Some(url::Host::Ipv4(_)) | Some(url::Host::Ipv6(_)) => {}
            _ => {
                return invalid(format!(
                    "gateway URL {} must use an IP address (the Service's ClusterIP): run pods get no DNS",
                    s.gateway_url
                ));
            }
        }
        if s.gateway_url.scheme() != "http" && s.gateway_url.scheme() != "https" {
            return invalid("the gateway URL must be http or https".into());
        }
        if s.gateway_selector.is_empty() {
            return invalid(
                "gateway_selector is empty: the pods' only egress must name the provider's pods"
                    .into(),
            );
        }
        if s.flavor == Flavor::Workflow && s.api_server.is_none() {
            return invalid(
                "the Workflow flavor needs api_server_egress (Argo's executor reports through the API)"
                    .into(),
            );
        }
        if s.flavor == Flavor::Workflow && s.executor_service_account.is_none() {
            return invalid(
                "the Workflow flavor needs executor_service_account (Argo's executor reports through the API)"
                    .into(),
            );
        }
        Ok(s)
    }
}
