//! scim-sync: keeps SCIM 2.0 apps in line with an identity directory.
pub mod model;
pub mod scim;
