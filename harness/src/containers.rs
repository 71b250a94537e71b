//! An etcd in a container, for machines with Docker (feature `containers`). Docker does not run
//! on drlab's CI machines: CI only compiles this (`cargo check --features containers`).

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

pub const IMAGE: &str = "quay.io/coreos/etcd";
pub const CLIENT_PORT: u16 = 2379;

/// A single-member etcd of `tag` (e.g. "v3.5.17"), with the same fast election flags as the
/// loopback launcher. The container stops when the handle is dropped.
pub async fn start(tag: &str) -> Result<(ContainerAsync<GenericImage>, String), testcontainers::TestcontainersError> {
    let container = GenericImage::new(IMAGE, tag)
        .with_exposed_port(CLIENT_PORT.tcp())
        .with_wait_for(WaitFor::message_on_stderr("ready to serve client requests"))
        .with_cmd([
            "etcd",
            "--listen-client-urls=http://0.0.0.0:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--heartbeat-interval=10",
            "--election-timeout=100",
        ])
        .start()
        .await?;
    let port = container.get_host_port_ipv4(CLIENT_PORT.tcp()).await?;
    Ok((container, format!("http://127.0.0.1:{port}")))
}
