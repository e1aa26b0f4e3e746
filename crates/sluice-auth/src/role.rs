//! Roles and permissions, with the seeds' permission levels (viewer, operator, admin).
//!
//! | permission | what it allows | viewer | operator | admin |
//! |---|---|---|---|---|
//! | `read` | dashboards, sessions, metrics, listing topics, groups and pipelines, queries | ✓ | ✓ | ✓ |
//! | `produce` | writing records (HTTP, WebSocket, Kafka Produce) | | ✓ | ✓ |
//! | `consume` | reading records (of internal topics such as `__audit`: `admin`), committing group offsets | | ✓ | ✓ |
//! | `operate` | draining and stopping pipelines | | ✓ | ✓ |
//! | `manage` | creating, altering and deleting topics, schemas, groups and pipelines | | | ✓ |
//! | `admin` | users and tokens | | | ✓ |

use serde::{Deserialize, Serialize};

/// A principal's role. Each role has every permission of the roles before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role has `p` (see the module's table).
    pub fn allows(self, p: Permission) -> bool {
        self >= p.least_role()
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| format!("unknown role {s:?}: use viewer, operator or admin"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a request needs (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Produce,
    Consume,
    Operate,
    Manage,
    Admin,
}

impl Permission {
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Produce => "produce",
            Permission::Consume => "consume",
            Permission::Operate => "operate",
            Permission::Manage => "manage",
            Permission::Admin => "admin",
        }
    }

    /// The least role that has this permission.
    pub fn least_role(self) -> Role {
        match self {
            Permission::Read => Role::Viewer,
            Permission::Produce | Permission::Consume | Permission::Operate => Role::Operator,
            Permission::Manage | Permission::Admin => Role::Admin,
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an HTTP request needs: nothing (public) or a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The dashboard's page and assets, the login page and calls, and `/healthz` and
    /// `/readyz` (for load balancers and orchestrators).
    Public,
    Needs(Permission),
}

/// The permission an HTTP request needs, from its method and path. A path sluice does not
/// serve needs `admin`, so that nothing new is open by accident.
pub fn http_access(method: &str, path: &str) -> Access {
    use Access::*;
    use Permission::*;
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let read_only = matches!(method, "GET" | "HEAD");
    match (segs.as_slice(), read_only) {
        ([] | [""], true) | (["login"], true) | (["assets", _], true) | (["healthz"] | ["readyz"] | ["favicon.ico"], true) => Public,
        // The dashboard's pages (one static shell; their data comes from the API).
        (["pipelines" | "players" | "topics"] | ["pipelines" | "players" | "topics", _] | ["groups"] | ["alerts"], true) => Public,
        (["v1", "login"] | ["v1", "logout"], false) => Public,
        (["metrics"], true) | (["v1", "whoami"], true) => Needs(Read),
        (["v1", "sessions"] | ["v1", "sessions", "stream"] | ["v1", "events"] | ["v1", "players", _, "readings"], true) => Needs(Read),
        (["v1", "query"], _) => Needs(Read),
        (["v1", "tables"] | ["v1", "tables", _] | ["v1", "tables", _, "history"], true) => Needs(Read),
        (["v1", "topics"] | ["v1", "topics", _] | ["v1", "topics", _, "schema"], true) => Needs(Read),
        (["v1", "topics", _, "records"], false) | (["v1", "topics", _, "ws"], true) => Needs(Produce),
        // Internal topics (`__audit`, `__consumer_offsets`) are for admins to read.
        (["v1", "topics", t, "partitions", _, "records"], true) if t.starts_with("__") => Needs(Admin),
        (["v1", "topics", _, "partitions", _, "records"], true) => Needs(Consume),
        (["v1", "groups"] | ["v1", "groups", _], true) => Needs(Read),
        (["v1", "groups", _, "offsets"], false) => Needs(Consume),
        (["v1", "pipelines"] | ["v1", "pipelines", _] | ["v1", "pipelines", _, "stream"], true) => Needs(Read),
        (["v1", "pipelines", _, "drain"] | ["v1", "jobs", _, "drain"], false) => Needs(Operate),
        (["v1", "topics"] | ["v1", "topics", _] | ["v1", "topics", _, "schema"], false) => Needs(Manage),
        (["v1", "groups", _], false) | (["v1", "pipelines"] | ["v1", "pipelines", _], false) => Needs(Manage),
        _ => Needs(Admin),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest() {
        for p in [Permission::Read, Permission::Produce, Permission::Consume, Permission::Operate, Permission::Manage, Permission::Admin] {
            let allowed: Vec<Role> = Role::ALL.into_iter().filter(|r| r.allows(p)).collect();
            assert_eq!(allowed.first(), Some(&p.least_role()), "{p}");
            assert_eq!(allowed.last(), Some(&Role::Admin), "{p}");
        }
        assert!(!Role::Viewer.allows(Permission::Produce));
        assert!(Role::Operator.allows(Permission::Operate) && !Role::Operator.allows(Permission::Manage));
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().unwrap_err().contains("viewer"));
    }

    #[test]
    fn every_route_needs_its_permission() {
        use Access::*;
        use Permission::*;
        let cases = [
            ("GET", "/", Public),
            ("GET", "/assets/app.js", Public),
            ("GET", "/login", Public),
            ("GET", "/healthz", Public),
            ("GET", "/readyz", Public),
            ("GET", "/pipelines/hr", Public),
            ("GET", "/players/ann", Public),
            ("GET", "/alerts", Public),
            ("GET", "/v1/events", Needs(Read)),
            ("POST", "/v1/login", Public),
            ("GET", "/metrics", Needs(Read)),
            ("GET", "/v1/sessions", Needs(Read)),
            ("GET", "/v1/sessions/stream", Needs(Read)),
            ("GET", "/v1/players/ann/readings", Needs(Read)),
            ("GET", "/v1/topics", Needs(Read)),
            ("GET", "/v1/topics/t/schema", Needs(Read)),
            ("POST", "/v1/topics/t/records", Needs(Produce)),
            ("GET", "/v1/topics/t/ws", Needs(Produce)),
            ("GET", "/v1/topics/t/partitions/0/records", Needs(Consume)),
            ("GET", "/v1/topics/__audit/partitions/0/records", Needs(Admin)),
            ("POST", "/v1/groups/g/offsets", Needs(Consume)),
            ("POST", "/v1/pipelines/p/drain", Needs(Operate)),
            ("POST", "/v1/jobs/heart_rate/drain", Needs(Operate)),
            ("POST", "/v1/topics", Needs(Manage)),
            ("DELETE", "/v1/topics/t", Needs(Manage)),
            ("PUT", "/v1/topics/t/schema", Needs(Manage)),
            ("DELETE", "/v1/groups/g", Needs(Manage)),
            ("POST", "/v1/pipelines", Needs(Manage)),
            ("DELETE", "/v1/pipelines/p", Needs(Manage)),
            ("GET", "/v1/users", Needs(Admin)),
            ("POST", "/v1/tokens", Needs(Admin)),
            ("DELETE", "/", Needs(Admin)),
            ("GET", "/v1/unknown", Needs(Admin)),
        ];
        for (method, path, want) in cases {
            assert_eq!(http_access(method, path), want, "{method} {path}");
        }
    }
}
