//! SASL for the Kafka listener: PLAIN (RFC 4616) and SCRAM-SHA-256 / SCRAM-SHA-512
//! (RFC 5802, RFC 7677), on the same users as the HTTP API, with `rsasl` doing the
//! mechanisms. No network: the Kafka server feeds it the bytes of SaslAuthenticate
//! requests.
//!
//! - PLAIN checks the password against the user's Argon2id hash (tens of ms: step the
//!   exchange off the async workers).
//! - SCRAM needs the user's SCRAM credentials ([`ScramCredential`]), made from the password
//!   whenever it is set (`sluice users add` or `passwd`), with 4096 PBKDF2 iterations as
//!   Kafka's default. A user whose password was set before sluice stored them can log in
//!   with PLAIN until the password is set again.

use std::io::Cursor;
use std::sync::Arc;

use rsasl::callback::{Context, Request, SessionCallback, SessionData};
use rsasl::mechanisms::scram::properties::ScramStoredPassword;
use rsasl::mechname::Mechname;
use rsasl::prelude::{SASLConfig, SASLServer, Session, SessionError, State};
use rsasl::property::{AuthId, AuthzId, Password};
use rsasl::validate::{Validate, Validation, ValidationError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use crate::role::Role;
use crate::store::AuthStore;
use crate::AuthError;

/// The mechanisms offered, in order of preference.
pub const MECHANISMS: [&str; 3] = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"];

/// PBKDF2 iterations of new SCRAM credentials (Kafka's default, RFC 7677's minimum).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// A user's stored SCRAM credential for one mechanism (RFC 5802 section 3): never the
/// password; hex fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub mechanism: String,
    pub iterations: u32,
    pub salt: String,
    pub stored_key: String,
    pub server_key: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (s.len() % 2 == 0).then_some(())?;
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// SCRAM credentials of `password` for both SCRAM mechanisms, with new random salts.
pub fn scram_credentials(password: &str) -> Result<Vec<ScramCredential>, AuthError> {
    use rsasl::mechanisms::scram::tools::{derive_keys, hash_password};
    let mut out = Vec::new();
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| AuthError::Random(e.to_string()))?;
        let (stored_key, server_key) = if mechanism == "SCRAM-SHA-256" {
            let mut salted = Default::default();
            hash_password::<Sha256>(password.as_bytes(), SCRAM_ITERATIONS, &salt, &mut salted);
            let (client_key, server_key) = derive_keys::<Sha256>(salted.as_slice());
            (Sha256::digest(client_key).to_vec(), server_key.to_vec())
        } else {
            let mut salted = Default::default();
            hash_password::<Sha512>(password.as_bytes(), SCRAM_ITERATIONS, &salt, &mut salted);
            let (client_key, server_key) = derive_keys::<Sha512>(salted.as_slice());
            (Sha512::digest(client_key).to_vec(), server_key.to_vec())
        };
        out.push(ScramCredential { mechanism: mechanism.into(), iterations: SCRAM_ITERATIONS, salt: hex(&salt), stored_key: hex(&stored_key), server_key: hex(&server_key) });
    }
    Ok(out)
}

/// The outcome of an exchange: the user and role, or why it failed.
struct Outcome;

impl Validation for Outcome {
    type Value = Result<(String, Role), String>;
}

/// Answers rsasl's questions from the principals file.
struct Callback {
    store: Arc<AuthStore>,
}

impl SessionCallback for Callback {
    fn callback(&self, session: &SessionData, context: &Context, request: &mut Request) -> Result<(), SessionError> {
        if !request.is::<ScramStoredPassword>() {
            return Ok(());
        }
        let mechanism = session.mechanism().mechanism.as_str();
        let Some(user) = context.get_ref::<AuthId>() else { return Ok(()) };
        let Ok(principals) = self.store.fresh() else { return Ok(()) };
        let Some(c) = principals.user(user).and_then(|u| u.scram.iter().find(|c| c.mechanism == mechanism)).cloned() else { return Ok(()) };
        let (Some(salt), Some(stored), Some(server)) = (unhex(&c.salt), unhex(&c.stored_key), unhex(&c.server_key)) else { return Ok(()) };
        request.satisfy::<ScramStoredPassword>(&ScramStoredPassword::new(c.iterations, &salt, &stored, &server))?;
        Ok(())
    }

    fn validate(&self, session: &SessionData, context: &Context, validate: &mut Validate<'_>) -> Result<(), ValidationError> {
        let mechanism = session.mechanism().mechanism.as_str();
        let user = context.get_ref::<AuthId>().unwrap_or_default().to_string();
        let authz = context.get_ref::<AuthzId>();
        let outcome = (|| {
            if authz.is_some_and(|a| !a.is_empty() && a != user) {
                return Err(format!("user {user:?} may not act as {:?}", authz.unwrap_or_default()));
            }
            let principals = self.store.fresh().map_err(|e| e.to_string())?;
            if mechanism == "PLAIN" {
                let password = context.get_ref::<Password>().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default();
                return principals.by_password(&user, &password).map(|u| (u.name.clone(), u.role)).ok_or_else(|| "wrong user name or password".to_string());
            }
            // SCRAM: the mechanism has checked the client's proof against the stored keys.
            principals.user(&user).map(|u| (u.name.clone(), u.role)).ok_or_else(|| "wrong user name or password".to_string())
        })();
        validate.with::<Outcome, _>(|| Ok(outcome))?;
        Ok(())
    }
}

/// The SASL server of a listener.
pub struct SaslServer {
    config: Arc<SASLConfig>,
}

/// One client's authentication in progress.
pub struct Exchange {
    session: Session<Outcome>,
}

/// What one step of an [`Exchange`] gives.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Send these bytes and wait for the client's next message.
    Continue(Vec<u8>),
    /// Authenticated: send these bytes (possibly empty); the client is this user.
    Done { response: Vec<u8>, user: String, role: Role },
    /// Refused, with the reason (for the client's error message and the log).
    Failed(String),
}

impl SaslServer {
    pub fn new(store: Arc<AuthStore>) -> Result<SaslServer, AuthError> {
        let config = SASLConfig::builder().with_defaults().with_callback(Callback { store }).map_err(|e| AuthError::Invalid(format!("SASL setup: {e}")))?;
        Ok(SaslServer { config })
    }

    /// Starts an exchange with a mechanism the client chose. Errors: not one of
    /// [`MECHANISMS`].
    pub fn start(&self, mechanism: &str) -> Result<Exchange, String> {
        if !MECHANISMS.contains(&mechanism) {
            return Err(format!("SASL mechanism {mechanism:?} is not enabled; use one of {}", MECHANISMS.join(", ")));
        }
        let name = Mechname::parse(mechanism.as_bytes()).map_err(|e| e.to_string())?;
        let session = SASLServer::<Outcome>::new(self.config.clone()).start_suggested(name).map_err(|e| e.to_string())?;
        Ok(Exchange { session })
    }
}

impl Exchange {
    /// Feeds the client's message. Blocking (PLAIN checks an Argon2id hash).
    pub fn step(&mut self, input: &[u8]) -> Step {
        let mut out = Cursor::new(Vec::new());
        match self.session.step(Some(input), &mut out) {
            Ok(State::Running) => Step::Continue(out.into_inner()),
            Ok(State::Finished(_)) => match self.session.validation() {
                Some(Ok((user, role))) => Step::Done { response: out.into_inner(), user, role },
                Some(Err(reason)) => Step::Failed(reason),
                // SCRAM ends without a result when the client's proof does not match: a
                // wrong password, or a user with no SCRAM credential yet.
                None => Step::Failed("wrong user name or password (a user made before SCRAM was stored needs `sluice users passwd`)".into()),
            },
            // rsasl's errors say what was wrong with the exchange; a missing SCRAM
            // credential shows as a failed proof or an unknown user.
            Err(e) => Step::Failed(format!("authentication failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Change;
    use rsasl::prelude::SASLClient;

    /// Runs a whole exchange with rsasl's own client.
    fn login(server: &SaslServer, mechanism: &str, user: &str, password: &str) -> Step {
        let client = SASLClient::new(SASLConfig::with_credentials(None, user.into(), password.into()).unwrap());
        let name = Mechname::parse(mechanism.as_bytes()).unwrap();
        let mut c = client.start_suggested(&[name]).unwrap();
        let mut ex = server.start(mechanism).unwrap();
        let mut to_server = Cursor::new(Vec::new());
        c.step(None, &mut to_server).unwrap();
        loop {
            match ex.step(to_server.get_ref()) {
                Step::Continue(reply) => {
                    to_server = Cursor::new(Vec::new());
                    if c.step(Some(&reply), &mut to_server).is_err() {
                        return Step::Failed("client refused the server".into());
                    }
                }
                done => return done,
            }
        }
    }

    #[test]
    fn plain_and_scram_accept_the_password_and_refuse_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(AuthStore::new(dir.path()));
        store.update(Change::new("user_add", "ana", "t", "t"), |p| p.add_user("ana", Role::Operator, Some("pencil-42"))).unwrap();
        let server = SaslServer::new(store).unwrap();
        for mechanism in MECHANISMS {
            match login(&server, mechanism, "ana", "pencil-42") {
                Step::Done { user, role, .. } => assert_eq!((user.as_str(), role), ("ana", Role::Operator), "{mechanism}"),
                other => panic!("{mechanism}: {other:?}"),
            }
            assert!(matches!(login(&server, mechanism, "ana", "wrong"), Step::Failed(_)), "{mechanism}");
            assert!(matches!(login(&server, mechanism, "bo", "pencil-42"), Step::Failed(_)), "{mechanism}");
        }
        assert!(server.start("GSSAPI").err().unwrap_or_default().contains("SCRAM-SHA-512"));
    }
}
