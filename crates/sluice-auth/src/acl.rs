//! Resource limits on a user: the topics, consumer groups and pipelines their role applies
//! to, as Kafka's
//! ACL resource patterns (Kafka documentation, "Authorization and ACLs": a `LITERAL`
//! pattern names one resource, a `PREFIXED` pattern every resource whose name starts with
//! it).
//!
//! A pattern is written as the name (`heartbeat-raw-topic`, literal), or as a prefix with a
//! trailing `*` (`team-a.*`, prefixed); `*` alone matches every name. A user without limits
//! (the default) reaches every topic, group and pipeline their role allows. With limits, a
//! resource outside them is refused (HTTP 403 `forbidden`, Kafka `TOPIC_AUTHORIZATION_FAILED`
//! or `GROUP_AUTHORIZATION_FAILED`) and left out of listings (the Kafka Metadata, ListGroups
//! and OffsetFetch responses, `GET /v1/topics`, `/v1/groups`, `/v1/pipelines`), as Kafka hides
//! what a principal may not describe. Users, tokens and the cluster are not resources here:
//! those follow the role.

use serde::{Deserialize, Serialize};

/// One resource pattern: a name, or a prefix (written with a trailing `*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Pattern {
    Literal(String),
    Prefixed(String),
}

impl Pattern {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Literal(n) => n == name,
            Pattern::Prefixed(p) => name.starts_with(p.as_str()),
        }
    }
}

impl std::str::FromStr for Pattern {
    type Err = String;
    /// Errors: an empty pattern, or a `*` anywhere but at the end.
    fn from_str(s: &str) -> Result<Pattern, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an empty resource pattern: give a name, or a prefix ending in `*`".into());
        }
        let (body, prefixed) = match s.strip_suffix('*') {
            Some(b) => (b, true),
            None => (s, false),
        };
        if body.contains('*') {
            return Err(format!("resource pattern {s:?}: `*` may only end a prefix (as in `team-a.*`)"));
        }
        Ok(if prefixed { Pattern::Prefixed(body.into()) } else { Pattern::Literal(body.into()) })
    }
}

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(s: String) -> Result<Pattern, String> {
        s.parse()
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.to_string()
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pattern::Literal(n) => f.write_str(n),
            Pattern::Prefixed(p) => write!(f, "{p}*"),
        }
    }
}

/// The topics, consumer groups and pipelines a user is limited to. `None`: every one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<Pattern>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipelines: Option<Vec<Pattern>>,
    /// Consumer groups (Kafka's `GROUP` resource): joining, committing, fetching offsets,
    /// describing and deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<Pattern>>,
}

/// A resource a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Topic(&'a str),
    Pipeline(&'a str),
    Group(&'a str),
}

impl Resource<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Topic(_) => "topic",
            Resource::Pipeline(_) => "pipeline",
            Resource::Group(_) => "group",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Resource::Topic(n) | Resource::Pipeline(n) | Resource::Group(n) => n,
        }
    }
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.topics.is_none() && self.pipelines.is_none() && self.groups.is_none()
    }

    pub fn topic(&self, name: &str) -> bool {
        self.topics.as_ref().is_none_or(|ps| ps.iter().any(|p| p.matches(name)))
    }

    pub fn pipeline(&self, name: &str) -> bool {
        self.pipelines.as_ref().is_none_or(|ps| ps.iter().any(|p| p.matches(name)))
    }

    pub fn group(&self, name: &str) -> bool {
        self.groups.as_ref().is_none_or(|ps| ps.iter().any(|p| p.matches(name)))
    }

    pub fn allows(&self, r: Resource) -> bool {
        match r {
            Resource::Topic(n) => self.topic(n),
            Resource::Pipeline(n) => self.pipeline(n),
            Resource::Group(n) => self.group(n),
        }
    }

    /// Why `r` is refused, for error messages: the patterns the user is limited to.
    pub fn refusal(&self, user: &str, r: Resource) -> String {
        let list = |ps: &Option<Vec<Pattern>>| ps.as_ref().map(|ps| ps.iter().map(|p| format!("{:?}", p.to_string())).collect::<Vec<_>>().join(", ")).unwrap_or_default();
        let (kind, patterns) = match r {
            Resource::Topic(_) => ("topics", list(&self.topics)),
            Resource::Pipeline(_) => ("pipelines", list(&self.pipelines)),
            Resource::Group(_) => ("groups", list(&self.groups)),
        };
        format!("user {user:?} is limited to the {kind} [{patterns}], which do not include {} {:?} (an admin changes this with `sluice users acl {user}`)", r.kind(), r.name())
    }
}

/// The resource an HTTP request names in its path, if any: `/v1/topics/{t}/…` is topic `t`,
/// `/v1/groups/{g}/…` is group `g`,
/// `/v1/pipelines/{p}/…` and `/v1/jobs/{p}/…` are pipeline `p`, and `/v1/sessions…` (the
/// heart-rate sessions) is pipeline `heart_rate`. Creating a topic or a pipeline names it
/// in the body; the route checks that itself.
pub fn http_resource(path: &str) -> Option<Resource<'_>> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segs.as_slice() {
        ["v1", "topics", t, ..] => Some(Resource::Topic(t)),
        ["v1", "groups", g, ..] => Some(Resource::Group(g)),
        ["v1", "pipelines", p, ..] | ["v1", "jobs", p, ..] => Some(Resource::Pipeline(p)),
        ["v1", "sessions", ..] => Some(Resource::Pipeline("heart_rate")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(topics: &[&str], pipelines: Option<&[&str]>) -> Limits {
        Limits { topics: Some(topics.iter().map(|t| t.parse().unwrap()).collect()), pipelines: pipelines.map(|ps| ps.iter().map(|p| p.parse().unwrap()).collect()), groups: None }
    }

    #[test]
    fn literal_and_prefixed_patterns() {
        let l = limits(&["heartbeat-raw-topic", "team-a.*"], None);
        assert!(l.topic("heartbeat-raw-topic") && l.topic("team-a.x") && l.topic("team-a."));
        assert!(!l.topic("heartbeat-raw-topic2") && !l.topic("team-b.x") && !l.topic("team-a"));
        assert!(l.pipeline("anything"), "no pipeline limits: every pipeline");
        assert!(Limits::default().topic("x") && Limits::default().is_unlimited());
        assert!(limits(&["*"], Some(&[])).topic("x") && !limits(&["*"], Some(&[])).pipeline("p"));
        assert!(l.refusal("ann", Resource::Topic("t")).contains("\"team-a.*\""));
        let g = Limits { groups: Some(vec!["app-*".parse().unwrap()]), ..Limits::default() };
        assert!(g.group("app-1") && !g.group("other") && g.topic("any") && !g.is_unlimited());
        assert!(g.refusal("ann", Resource::Group("other")).contains("groups [\"app-*\"]"));
    }

    #[test]
    fn patterns_parse_and_round_trip() {
        assert_eq!("a*".parse::<Pattern>(), Ok(Pattern::Prefixed("a".into())));
        assert!("a*b".parse::<Pattern>().unwrap_err().contains("only end"));
        assert!("".parse::<Pattern>().is_err());
        let json = serde_json::to_string(&limits(&["a", "b*"], Some(&["hr"]))).unwrap();
        assert_eq!(json, r#"{"topics":["a","b*"],"pipelines":["hr"]}"#);
        assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), limits(&["a", "b*"], Some(&["hr"])));
        assert!(serde_json::from_str::<Limits>(r#"{"topics":["a*b"]}"#).is_err());
    }

    #[test]
    fn paths_name_their_resource() {
        assert_eq!(http_resource("/v1/topics/t/partitions/0/records"), Some(Resource::Topic("t")));
        assert_eq!(http_resource("/v1/topics/t"), Some(Resource::Topic("t")));
        assert_eq!(http_resource("/v1/topics"), None);
        assert_eq!(http_resource("/v1/pipelines/p/drain"), Some(Resource::Pipeline("p")));
        assert_eq!(http_resource("/v1/jobs/heart_rate/drain"), Some(Resource::Pipeline("heart_rate")));
        assert_eq!(http_resource("/v1/sessions/stream"), Some(Resource::Pipeline("heart_rate")));
        assert_eq!(http_resource("/v1/groups/g/offsets"), Some(Resource::Group("g")));
        assert_eq!(http_resource("/v1/groups"), None);
        assert_eq!(http_resource("/metrics"), None);
    }
}
