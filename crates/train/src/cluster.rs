//! Several machines (nodes) training one run, as torchrun's ranks do: one process per node,
//! each with `run.devices` devices, all joined by Burn's global collective.
//!
//! Node 0 is the lead: it hosts the coordinator (Burn's global orchestrator) at
//! `coordinator`, and it alone evaluates, logs, samples and writes checkpoints. Every node
//! serves its share of each all-reduce on its own `node_address`.

use std::time::Duration;

use crate::error::{Result, TrainError};

/// Where this process sits among the run's nodes. The default is one node.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// Processes (machines) in the run; 1 trains on this process's devices only.
    pub nodes: usize,
    /// This process, `0..nodes`; 0 coordinates, evaluates and saves.
    pub rank: usize,
    /// `HOST:PORT` of node 0's coordinator, the same on every node.
    pub coordinator: Option<String>,
    /// `HOST:PORT` where the other nodes reach this one. On loopback it defaults to the
    /// coordinator's host and port + 1 + rank; across machines, pass it.
    pub node_address: Option<String>,
    /// How long to wait for the other nodes at any one exchange (joining, each step's
    /// all-reduce, leaving) before giving up with an error.
    pub timeout: Duration,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            nodes: 1,
            rank: 0,
            coordinator: None,
            node_address: None,
            timeout: Duration::from_secs(600),
        }
    }
}

/// A `HOST:PORT` pair.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    fn parse(flag: &str, s: &str) -> Result<Self> {
        let bad = || {
            TrainError::Config(format!(
                "{flag} must be HOST:PORT (such as 10.0.0.1:29500), got {s:?}"
            ))
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }

    /// The WebSocket address Burn's collective takes.
    pub fn ws(&self) -> String {
        format!("ws://{}:{}", self.host, self.port)
    }

    fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl Cluster {
    /// More than one node?
    pub fn is_multi_node(&self) -> bool {
        self.nodes > 1
    }

    /// Node 0: the one that evaluates and writes.
    pub fn is_lead(&self) -> bool {
        self.rank == 0
    }

    /// Checks the settings, naming the flag at fault.
    pub fn validate(&self) -> Result<()> {
        if self.nodes == 0 {
            return Err(TrainError::Config("--nodes must be at least 1".into()));
        }
        if self.rank >= self.nodes {
            return Err(TrainError::Config(format!(
                "--node-rank is {} but there are {} node(s): ranks run from 0 to {}",
                self.rank,
                self.nodes,
                self.nodes - 1
            )));
        }
        if self.timeout.is_zero() {
            return Err(TrainError::Config(
                "--collective-timeout must be positive".into(),
            ));
        }
        if self.is_multi_node() {
            self.node()?;
        }
        Ok(())
    }

    /// The coordinator's address.
    pub(crate) fn coordinator(&self) -> Result<HostPort> {
        let s = self.coordinator.as_deref().ok_or_else(|| {
            TrainError::Config(format!(
                "--nodes is {}: pass --coordinator HOST:PORT (node 0's address, the same on every node)",
                self.nodes
            ))
        })?;
        HostPort::parse("--coordinator", s)
    }

    /// This node's address for the other nodes.
    pub(crate) fn node(&self) -> Result<HostPort> {
        let coordinator = self.coordinator()?;
        let node = match &self.node_address {
            Some(s) => HostPort::parse("--node-address", s)?,
            None if self.is_lead() || coordinator.is_loopback() => HostPort {
                host: coordinator.host.clone(),
                port: coordinator
                    .port
                    .checked_add(1 + self.rank as u16)
                    .ok_or_else(|| {
                        TrainError::Config(format!(
                            "--coordinator's port {} leaves no port for node {} (pass --node-address)",
                            coordinator.port, self.rank
                        ))
                    })?,
            },
            None => {
                return Err(TrainError::Config(format!(
                    "node {}: pass --node-address HOST:PORT, where the other nodes reach this one (the coordinator {} is not on this machine)",
                    self.rank, coordinator.host
                )))
            }
        };
        if node == coordinator {
            return Err(TrainError::Config(format!(
                "--node-address {}:{} is the coordinator's own: give this node another port",
                node.host, node.port
            )));
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(nodes: usize, rank: usize, coordinator: &str) -> Cluster {
        Cluster {
            nodes,
            rank,
            coordinator: Some(coordinator.into()),
            ..Cluster::default()
        }
    }

    #[test]
    fn node_addresses_default_on_loopback_only() {
        let c = cluster(2, 1, "127.0.0.1:29500");
        assert_eq!(c.node().unwrap().ws(), "ws://127.0.0.1:29502");
        assert_eq!(
            cluster(2, 0, "10.0.0.1:29500").node().unwrap().ws(),
            "ws://10.0.0.1:29501"
        );
        let err = cluster(2, 1, "10.0.0.1:29500").validate().unwrap_err();
        assert!(err.to_string().contains("--node-address"), "{err}");
        let mut c = cluster(2, 1, "10.0.0.1:29500");
        c.node_address = Some("10.0.0.2:29600".into());
        assert_eq!(c.node().unwrap().ws(), "ws://10.0.0.2:29600");
    }

    #[test]
    fn bad_settings_name_the_flag() {
        for (c, flag) in [
            (cluster(2, 2, "127.0.0.1:29500"), "--node-rank"),
            (cluster(2, 0, "127.0.0.1"), "--coordinator"),
            (cluster(2, 0, "host:http"), "--coordinator"),
            (
                Cluster {
                    nodes: 2,
                    ..Cluster::default()
                },
                "--coordinator",
            ),
        ] {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
        assert!(Cluster::default().validate().is_ok());
    }
}
