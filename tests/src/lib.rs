//! Helpers shared by the end-to-end tests.

pub mod kube_api;
pub mod lambda;
pub mod moto;
