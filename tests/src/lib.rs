//! Helpers shared by the end-to-end tests and the demo: local stand-ins for
//! the services tokenguard talks to, the detector with its AWS resources in
//! moto, and real-format fixtures.

pub mod detector;
pub mod eks_token;
pub mod fixtures;
pub mod kube_api;
pub mod kube_tls;
pub mod lambda;
pub mod moto;
