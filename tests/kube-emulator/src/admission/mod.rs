//! Validating admission webhooks as kube-apiserver (1.24, admissionregistration.k8s.io/v1)
//! calls them.

pub mod config;
