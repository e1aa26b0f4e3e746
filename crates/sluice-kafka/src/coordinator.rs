//! The group coordinator: Kafka's classic consumer-group rebalance protocol as a pure
//! state machine. Every method takes the current time in ms; no I/O, no waiting. The
//! handlers (`handlers/groups.rs`) wait for outcomes and persist committed offsets.
//!
//! Source: the Kafka protocol guide ("The Consumer Group protocol") and KIP-62 (separate
//! session and rebalance timeouts), KIP-394 (MEMBER_ID_REQUIRED for JoinGroup v4+) and
//! KIP-134 (`group.initial.rebalance.delay.ms`).
//!
//! States: `Empty` → (a member joins) `PreparingRebalance` → (every member has rejoined, or
//! the rebalance timeout passed and the stragglers are removed) `CompletingRebalance`, with
//! a new generation and a leader → (the leader's SyncGroup carries the assignment)
//! `Stable`. A join, a leave or an expired session (no heartbeat within the member's
//! `session_timeout_ms`) sends a non-empty group back to `PreparingRebalance`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

/// A group's state, named as Kafka's DescribeGroups reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup carries (the Kafka protocol guide, JoinGroup request).
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id is given one and asked to rejoin with it.
    pub require_known_member_id: bool,
}

/// The answer a member gets once its rebalance completes.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// The leader gets every member's (id, instance id, metadata); followers get none.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// One member of a group.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_heartbeat_ms: i64,
    /// Joined the rebalance in progress and waits for its JoinGroup answer.
    awaiting_join: bool,
    /// Set when the rebalance completes; taken by the waiting JoinGroup.
    join_result: Option<JoinResult>,
}

impl Member {
    /// The metadata this member gave for a protocol.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

/// One consumer group.
#[derive(Debug, Clone)]
pub struct Group {
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending: BTreeSet<String>,
    /// When the rebalance in progress ends, whoever has rejoined by then.
    rebalance_deadline_ms: i64,
    /// A rebalance of an empty group waits this long for more members (KIP-134).
    not_before_ms: i64,
    next_member: u64,
}

/// The result of a JoinGroup step.
#[derive(Debug, Clone, PartialEq)]
pub enum Join {
    /// The member is in the rebalance; wait for [`Group::take_join_result`].
    Waiting { member_id: String },
    /// Answer at once with an error (and, for MEMBER_ID_REQUIRED, the id to use).
    Error { code: ResponseError, member_id: String },
}

/// The result of a SyncGroup step.
#[derive(Debug, Clone, PartialEq)]
pub enum Sync {
    Assignment(Bytes),
    /// A follower whose leader has not sent the assignment yet: ask again later.
    Waiting,
    Error(ResponseError),
}

impl Group {
    pub fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeSet::new(),
            rebalance_deadline_ms: 0,
            not_before_ms: 0,
            next_member: 0,
        }
    }

    fn new_member_id(&mut self, client_id: &str, now_ms: i64) -> String {
        self.next_member += 1;
        format!("{client_id}-{now_ms:x}-{}", self.next_member)
    }

    /// A JoinGroup. `initial_delay_ms` is `group.initial.rebalance.delay.ms`.
    pub fn join(&mut self, req: JoinRequest, now_ms: i64, initial_delay_ms: i64) -> Join {
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return Join::Error { code: ResponseError::InconsistentGroupProtocol, member_id: req.member_id };
        }
        if req.session_timeout_ms <= 0 {
            return Join::Error { code: ResponseError::InvalidSessionTimeout, member_id: req.member_id };
        }
        if !self.members.is_empty() {
            let same_type = self.protocol_type.as_deref() == Some(req.protocol_type.as_str());
            let shared = self.candidates(Some(&req.protocols));
            if !same_type || shared.is_empty() {
                return Join::Error { code: ResponseError::InconsistentGroupProtocol, member_id: req.member_id };
            }
        }
        let mut member_id = req.member_id.clone();
        // Static membership (KIP-345), simplified: a member rejoining with a
        // group.instance.id replaces the member that had it, instead of waiting for that
        // member's session to expire. (Kafka also skips the rebalance; sluice does not.)
        if let Some(instance) = &req.group_instance_id {
            let previous: Vec<String> =
                self.members.values().filter(|m| m.group_instance_id.as_ref() == Some(instance) && m.id != member_id).map(|m| m.id.clone()).collect();
            for id in previous {
                self.members.remove(&id);
            }
        }
        if member_id.is_empty() {
            member_id = self.new_member_id(&req.client_id, now_ms);
            if req.require_known_member_id {
                self.pending.insert(member_id.clone());
                return Join::Error { code: ResponseError::MemberIdRequired, member_id };
            }
        } else if !self.members.contains_key(&member_id) && !self.pending.remove(&member_id) {
            return Join::Error { code: ResponseError::UnknownMemberId, member_id };
        }
        let rebalance_timeout = if req.rebalance_timeout_ms > 0 { req.rebalance_timeout_ms } else { req.session_timeout_ms };
        let member = self.members.entry(member_id.clone()).or_insert_with(|| Member {
            id: member_id.clone(),
            group_instance_id: None,
            client_id: String::new(),
            client_host: String::new(),
            session_timeout_ms: 0,
            rebalance_timeout_ms: 0,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            last_heartbeat_ms: now_ms,
            awaiting_join: false,
            join_result: None,
        });
        member.group_instance_id = req.group_instance_id;
        member.client_id = req.client_id;
        member.client_host = req.client_host;
        member.session_timeout_ms = req.session_timeout_ms;
        member.rebalance_timeout_ms = rebalance_timeout;
        member.protocols = req.protocols;
        member.awaiting_join = true;
        member.join_result = None;
        member.last_heartbeat_ms = now_ms;
        self.protocol_type = Some(req.protocol_type);
        if self.state != GroupState::PreparingRebalance {
            self.start_rebalance(now_ms, initial_delay_ms);
        }
        self.maybe_complete(now_ms);
        Join::Waiting { member_id }
    }

    fn start_rebalance(&mut self, now_ms: i64, initial_delay_ms: i64) {
        let timeout = self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0) as i64;
        // An empty group waits a little for more members before its first generation.
        self.not_before_ms = if self.state == GroupState::Empty { now_ms + initial_delay_ms.min(timeout) } else { now_ms };
        self.rebalance_deadline_ms = now_ms + timeout;
        self.state = GroupState::PreparingRebalance;
    }

    /// Protocols every member (and `extra`, a joining member) supports, in no order.
    fn candidates(&self, extra: Option<&Vec<(String, Bytes)>>) -> BTreeSet<String> {
        let mut sets = self.members.values().map(|m| m.protocols.iter().map(|p| p.0.clone()).collect::<BTreeSet<_>>());
        let mut all = match extra {
            Some(e) => e.iter().map(|p| p.0.clone()).collect::<BTreeSet<_>>(),
            None => sets.next().unwrap_or_default(),
        };
        for s in sets {
            all = all.intersection(&s).cloned().collect();
        }
        all
    }

    /// Completes the rebalance in progress if every member has rejoined (after the initial
    /// delay), or if its deadline passed (members that did not rejoin are removed).
    /// Returns true when it completed.
    pub fn maybe_complete(&mut self, now_ms: i64) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let all_joined = self.members.values().all(|m| m.awaiting_join);
        let timed_out = now_ms >= self.rebalance_deadline_ms;
        if !(timed_out || (all_joined && now_ms >= self.not_before_ms)) {
            return false;
        }
        self.members.retain(|_, m| m.awaiting_join);
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return true;
        }
        // Each member votes for its most preferred protocol that every member supports.
        let candidates = self.candidates(None);
        let mut votes: BTreeMap<String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(name.clone()).or_default() += 1;
            }
        }
        let protocol = votes.iter().max_by_key(|(_, v)| **v).map(|(n, _)| n.clone()).unwrap_or_default();
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        let all: Vec<(String, Option<String>, Bytes)> =
            self.members.values().map(|m| (m.id.clone(), m.group_instance_id.clone(), m.metadata(&protocol))).collect();
        let protocol_type = self.protocol_type.clone().unwrap_or_default();
        for m in self.members.values_mut() {
            m.awaiting_join = false;
            m.assignment = Bytes::new();
            m.last_heartbeat_ms = now_ms;
            m.join_result = Some(JoinResult {
                generation: self.generation,
                protocol_type: protocol_type.clone(),
                protocol: protocol.clone(),
                leader: leader.clone(),
                member_id: m.id.clone(),
                members: if m.id == leader { all.clone() } else { Vec::new() },
            });
        }
        self.protocol = Some(protocol);
        self.leader = Some(leader);
        self.state = GroupState::CompletingRebalance;
        true
    }

    /// The JoinGroup answer for a waiting member, once its rebalance completed. `Err` when
    /// the member is gone (it left, or was removed): answer UNKNOWN_MEMBER_ID.
    pub fn take_join_result(&mut self, member_id: &str) -> Result<Option<JoinResult>, ResponseError> {
        match self.members.get_mut(member_id) {
            None => Err(ResponseError::UnknownMemberId),
            Some(m) => Ok(m.join_result.take()),
        }
    }

    fn check_member(&self, member_id: &str, generation: i32) -> Result<(), ResponseError> {
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// A SyncGroup. The leader's call carries every member's assignment.
    pub fn sync(&mut self, member_id: &str, generation: i32, assignments: Vec<(String, Bytes)>, now_ms: i64) -> Sync {
        if let Err(e) = self.check_member(member_id, generation) {
            return Sync::Error(e);
        }
        match self.state {
            GroupState::Empty | GroupState::PreparingRebalance => Sync::Error(ResponseError::RebalanceInProgress),
            GroupState::Stable => Sync::Assignment(self.members[member_id].assignment.clone()),
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_heartbeat_ms = now_ms;
                }
                if self.leader.as_deref() != Some(member_id) {
                    return Sync::Waiting;
                }
                let mut given: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                for m in self.members.values_mut() {
                    m.assignment = given.remove(&m.id).unwrap_or_default();
                }
                self.state = GroupState::Stable;
                Sync::Assignment(self.members[member_id].assignment.clone())
            }
        }
    }

    /// A Heartbeat: NONE, or what the member must do (rejoin, or start over).
    pub fn heartbeat(&mut self, member_id: &str, generation: i32, now_ms: i64) -> Result<(), ResponseError> {
        self.check_member(member_id, generation)?;
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_heartbeat_ms = now_ms;
        }
        match self.state {
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// A LeaveGroup for one member; the rest of the group rebalances.
    pub fn leave(&mut self, member_id: &str, now_ms: i64) -> Result<(), ResponseError> {
        if self.members.remove(member_id).is_none() {
            return Err(ResponseError::UnknownMemberId);
        }
        self.after_removal(now_ms);
        Ok(())
    }

    fn after_removal(&mut self, now_ms: i64) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.start_rebalance(now_ms, 0),
            _ => {}
        }
        if self.state == GroupState::PreparingRebalance && self.members.is_empty() {
            // Nobody left to wait for.
            self.rebalance_deadline_ms = now_ms;
        }
        self.maybe_complete(now_ms);
    }

    /// Removes members whose session expired (no heartbeat within `session_timeout_ms`),
    /// and completes a rebalance whose deadline passed. Returns true if anything changed.
    pub fn tick(&mut self, now_ms: i64) -> bool {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join && now_ms - m.last_heartbeat_ms > m.session_timeout_ms as i64)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(member = %id, "consumer group member's session expired");
            self.members.remove(id);
        }
        if !expired.is_empty() {
            self.after_removal(now_ms);
        }
        self.maybe_complete(now_ms) || !expired.is_empty()
    }

    /// Whether the coordinator can forget this group: no members, none joining.
    pub fn is_idle(&self) -> bool {
        self.state == GroupState::Empty && self.members.is_empty() && self.pending.is_empty()
    }

    /// Whether an OffsetCommit from this member at this generation may commit: members of
    /// the current generation (not while the assignment is being handed out), or anyone
    /// with generation -1 while the group has no members (a consumer with manual
    /// assignment).
    pub fn may_commit(&self, member_id: &str, generation: i32) -> Result<(), ResponseError> {
        if generation < 0 && member_id.is_empty() && self.members.is_empty() {
            return Ok(());
        }
        self.check_member(member_id, generation)?;
        match self.state {
            GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }
}

/// The partitions in a consumer's assignment: SyncGroup's `assignment` bytes for protocol
/// type "consumer" (Kafka's ConsumerProtocolAssignment, versions 0–3: version i16, then an
/// i32 count of (topic: i16 length + UTF-8, partitions: i32 count of i32), then user data).
/// Returns (topic, partitions); empty when the bytes are not in that format.
pub fn consumer_assignment(bytes: &[u8]) -> Vec<(String, Vec<i32>)> {
    fn parse(b: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Option<&[u8]> {
            let s = b.get(at..at.checked_add(n)?)?;
            at += n;
            Some(s)
        };
        let version = i16::from_be_bytes(take(2)?.try_into().ok()?);
        if !(0..=3).contains(&version) {
            return None;
        }
        let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut out = Vec::new();
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
            let name = std::str::from_utf8(take(len.max(0) as usize)?).ok()?.to_string();
            let n = i32::from_be_bytes(take(4)?.try_into().ok()?);
            let mut parts = Vec::new();
            for _ in 0..n.max(0) {
                parts.push(i32::from_be_bytes(take(4)?.try_into().ok()?));
            }
            out.push((name, parts));
        }
        Some(out)
    }
    parse(bytes).unwrap_or_default()
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

#[cfg(test)]
mod tests;
