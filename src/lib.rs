//! scim-sync keeps SCIM 2.0 apps in line with an identity directory.
pub mod config;
pub mod mapping;
pub mod model;
pub mod plan;
pub mod report;
pub mod sandbox;
pub mod scim;
pub mod source;
pub mod store;
