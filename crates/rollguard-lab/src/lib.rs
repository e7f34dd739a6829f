//! The local rollout emulator behind `rollguard lab`.
//!
//! Replicas are real processes on their own loopback addresses (127.0.1.N, like pod IPs),
//! reached through a Service that behaves like kube-proxy: it picks an endpoint per new
//! connection from its own copy of the endpoint table, which lags the controller's changes
//! by a propagation delay. Pods terminate as the kubelet terminates them (endpoint removal
//! in parallel with preStop, SIGTERM, SIGKILL at the end of the grace period), so every
//! way a rolling update drops requests happens for real and can be attributed to its cause.

pub mod attribution;
pub mod controller;
pub mod deployment;
mod http;
pub mod manifest;
pub mod pod;
pub mod prober;
pub mod run;
pub mod scenario;
pub mod service;
