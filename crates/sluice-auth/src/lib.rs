//! Who may do what: users with passwords, API tokens, roles, and the permission each HTTP
//! route needs. No network: the server (`sluice-server`'s `auth` module) enforces it, and
//! the CLI (`sluice users`, `sluice tokens`) changes it.
//!
//! - [`acl`]: limits of a user to certain topics, groups and pipelines (names or prefixes).
//! - [`cert`]: the user a client certificate names (mutual TLS).
//! - [`role`]: roles (viewer, operator, admin), permissions, and [`role::http_access`].
//! - [`secret`]: password hashes (Argon2id), API tokens and session secrets.
//! - [`store`]: the principals file in the data directory.
//! - [`sasl`]: SASL PLAIN and SCRAM for the Kafka listener.
//! - [`throttle`]: failed-login lockout per client address.

pub mod acl;
pub mod cert;
pub mod role;
pub mod sasl;
pub mod secret;
pub mod store;
pub mod throttle;

pub use acl::{http_resource, Limits, Pattern, Resource};
pub use role::{http_access, Access, Permission, Role};
pub use store::{AuthStore, Principals, Token, User};

/// Why an authentication operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot access {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    #[error("cannot hash a password: {0}")]
    Hash(String),
}
