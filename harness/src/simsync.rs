//! Wires the real sync engine into a simulated world: a host running `sync::engine::Engine`
//! unchanged, reaching the simulated etcds through the turmoil connector.

use std::time::Duration;

use sim::net::{Connector as SimConnector, Links};
use sim::platform::{PRIMARY, STANDBY};
use sync::conn::{ConnConfig, Connector};
use sync::engine::{Engine, Handle, Settings};

/// Endpoint of a simulated etcd host.
pub fn endpoint(host: &str) -> String {
    format!("http://{host}:{}", sim::world::ETCD_PORT)
}

/// Keep-alive and timeouts for the sync inside the world (simulated time). The simulated etcd
/// enforces no ping policy, so the world pings every second, idle or not, and finds a held
/// link within 3 s (a real etcd would close such a connection: see [`conn_config_at`]).
pub fn conn_config(host: &str) -> ConnConfig {
    let mut c = conn_config_at(&endpoint(host));
    c.keepalive_interval = Duration::from_secs(1);
    c.keepalive_timeout = Duration::from_secs(2);
    c.keepalive_while_idle = true;
    c
}

/// For a real etcd (the real backend's, through its proxies, in real time): the shipped
/// keep-alive, which etcd's ping policy accepts.
pub fn conn_config_at(endpoint: &str) -> ConnConfig {
    let mut c = ConnConfig::new([endpoint]);
    c.connect_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(10);
    c
}

/// A sync's installation by an orchestrator (a failback's reverse sync): its baseline revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Install {
    pub baseline_revision: Option<i64>,
}

/// The orchestrator's side of an install; the host waits on the receiver.
pub type InstallTx = std::sync::Arc<tokio::sync::watch::Sender<Option<Install>>>;
pub type InstallRx = tokio::sync::watch::Receiver<Option<Install>>;

pub fn install_channel() -> (InstallTx, InstallRx) {
    let (tx, rx) = tokio::sync::watch::channel(None);
    (std::sync::Arc::new(tx), rx)
}

/// Adds host `sync-reinstalled`: the sync primary → standby a DR-aware upgrade's reinstall starts
/// through the returned sender — a new epoch over the uninstalled gate.
pub fn add_reinstallable(sim: &mut turmoil::Sim<'_>, links: Links, settings: &Settings) -> (InstallTx, Handle) {
    let (install, installed) = install_channel();
    let host = SyncHost {
        name: "sync-reinstalled".into(),
        install: Some(installed),
        ..SyncHost::new(PRIMARY, STANDBY, Settings { reinstall: true, ..settings.clone() })
    };
    (install, host.add(sim, links))
}

/// A host running the sync from `source` to `target`, started `start_delay` into the world (or at
/// once when its host starts later).
/// The host can be crashed and restarted; each start runs a fresh engine that resumes from the
/// target's bookkeeping.
pub struct SyncHost {
    pub name: String,
    pub source: String,
    pub target: String,
    pub settings: Settings,
    pub handle: Handle,
    pub start_delay: Duration,
    /// Started by an orchestrator's install rather than with the world (then after the delay).
    pub install: Option<InstallRx>,
}

impl SyncHost {
    pub fn new(source: &str, target: &str, settings: Settings) -> Self {
        SyncHost {
            name: "sync".into(),
            source: source.into(),
            target: target.into(),
            settings,
            handle: Handle::default(),
            start_delay: Duration::ZERO,
            install: None,
        }
    }

    /// Adds the host to the world; returns the handle to the engine's status and commands.
    pub fn add(self, sim: &mut turmoil::Sim<'_>, links: Links) -> Handle {
        let SyncHost { name, source, target, settings, handle, start_delay, install } = self;
        let out = handle.clone();
        sim.host(name.as_str(), move || {
            let connector = Connector::custom(SimConnector::new(links.clone()));
            let mut engine = Engine {
                source: conn_config(&source),
                target: conn_config(&target),
                source_connector: connector.clone(),
                target_connector: connector,
                settings: settings.clone(),
                handle: handle.clone(),
            };
            let install = install.clone();
            async move {
                if let Some(mut rx) = install {
                    // A restarted host finds the install where it left it.
                    let Ok(i) = rx.wait_for(|i| i.is_some()).await.map(|i| i.expect("awaited")) else {
                        std::future::pending::<()>().await;
                        return Ok(());
                    };
                    engine.settings.baseline_revision = i.baseline_revision;
                }
                // `start_delay` is a time of the world, not of this host: a sync restarted after
                // it starts at once (a crash loop before it must not push the start back; case
                // 252 of explorer seed 20261123).
                let now = sim::clock::elapsed().unwrap_or_default();
                tokio::time::sleep(start_delay.saturating_sub(now)).await;
                // A final error (a lost gate) ends the host; the world reads it from the handle.
                let _ = engine.run().await;
                Ok(())
            }
        });
        out
    }
}
