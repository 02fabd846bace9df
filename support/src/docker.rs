//! The Docker runtime: testcontainers starts the container and awaits its ready line; faults
//! go through the Docker engine (pause, kill, start, network disconnect).
//!
//! The host port is fixed at start (a free loopback port mapped to the container port) rather
//! than left to Docker, so the address clients hold stays valid across a restart.

use std::time::Duration;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::{Runtime, ServiceError, ServiceSpec};

pub(super) struct DockerService {
    name: String,
    id: String,
    network: String,
    /// `None` only after `Drop` took it.
    container: Option<ContainerAsync<GenericImage>>,
}

/// Whether `image` exists locally (it is never pulled: nothing can be pulled here, and a
/// silent pull of a different Redis would change what is tested).
pub(super) async fn image_exists(image: &str) -> Result<(), String> {
    let status = docker(&["image", "inspect", "--format", "{{.Id}}", image]).await;
    status.map(|_| ()).map_err(|_| format!("no Docker image {image} (build it with scripts/setup/*.sh)"))
}

/// Runs the docker command line; its stdout, or its stderr as the error.
pub(crate) async fn docker(args: &[&str]) -> Result<String, String> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("docker").args(args).kill_on_drop(true).output(),
    )
    .await
    .map_err(|_| format!("docker {} took over 30 s", args.join(" ")))?
    .map_err(|e| format!("docker: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

impl DockerService {
    pub(super) async fn start(spec: &ServiceSpec, host_port: u16) -> Result<Self, ServiceError> {
        let start_error =
            |message: String| ServiceError::Start { name: spec.name.clone(), runtime: Runtime::Docker, message };
        crate::orphans::sweep_once().await;
        let (repository, tag) = match spec.image.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, tag),
            _ => (spec.image.as_str(), "latest"),
        };
        let mut image = GenericImage::new(repository, tag);
        if let Some(line) = &spec.ready_log {
            image = image.with_wait_for(WaitFor::message_on_either_std(line.as_bytes()));
        }
        let mut request = image
            .with_mapped_port(host_port, spec.port.tcp())
            .with_cmd((spec.args)(spec.port))
            .with_startup_timeout(spec.startup_timeout)
            .with_label("lockcheck.service", spec.name.clone())
            .with_label(crate::orphans::OWNER_LABEL, crate::orphans::owner());
        if let Some(network) = &spec.network {
            request = request.with_network(network.clone());
        }
        let container = request.start().await.map_err(|e| start_error(e.to_string()))?;
        let id = container.id().to_owned();
        let network = match &spec.network {
            Some(network) => network.clone(),
            None => {
                let networks = docker(&[
                    "inspect",
                    "--format",
                    "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                    &id,
                ])
                .await
                .map_err(start_error)?;
                networks.split_whitespace().next().unwrap_or("bridge").to_owned()
            }
        };
        Ok(DockerService { name: spec.name.clone(), id, network, container: Some(container) })
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    fn container(&self) -> &ContainerAsync<GenericImage> {
        self.container.as_ref().expect("container present until drop")
    }

    fn fault(&self, operation: &'static str, message: impl ToString) -> ServiceError {
        ServiceError::Fault {
            operation,
            name: self.name.clone(),
            runtime: Runtime::Docker,
            message: message.to_string(),
        }
    }

    pub(super) async fn pause(&self) -> Result<(), ServiceError> {
        self.container().pause().await.map_err(|e| self.fault("pause", e))
    }

    pub(super) async fn unpause(&self) -> Result<(), ServiceError> {
        self.container().unpause().await.map_err(|e| self.fault("unpause", e))
    }

    pub(super) async fn kill(&mut self) -> Result<(), ServiceError> {
        docker(&["kill", "--signal", "KILL", &self.id]).await.map_err(|e| self.fault("kill", e))?;
        // `docker kill` returns once the signal is sent; wait for the engine to see it exit so
        // a following start does not race the old process for the port.
        docker(&["wait", &self.id]).await.map_err(|e| self.fault("kill", e))?;
        Ok(())
    }

    pub(super) async fn start_again(&mut self) -> Result<(), ServiceError> {
        self.container().start().await.map_err(|e| self.fault("start", e))
    }

    pub(super) async fn disconnect(&self) -> Result<(), ServiceError> {
        docker(&["network", "disconnect", &self.network, &self.id]).await.map_err(|e| self.fault("disconnect", e))?;
        Ok(())
    }

    pub(super) async fn reconnect(&self) -> Result<(), ServiceError> {
        docker(&["network", "connect", &self.network, &self.id]).await.map_err(|e| self.fault("reconnect", e))?;
        Ok(())
    }
}

impl Drop for DockerService {
    fn drop(&mut self) {
        let Some(container) = self.container.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            // testcontainers removes the container (blocking this thread until it is gone).
            drop(container);
        } else {
            // Outside a runtime testcontainers' drop would panic: remove it synchronously and
            // forget the handle.
            let _ = std::process::Command::new("docker").args(["rm", "--force", "--volumes", &self.id]).output();
            std::mem::forget(container);
        }
    }
}
