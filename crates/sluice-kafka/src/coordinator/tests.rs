use super::*;

fn req(member_id: &str, client: &str) -> JoinRequest {
    JoinRequest {
        member_id: member_id.into(),
        client_id: client.into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 30_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"r")), ("roundrobin".into(), Bytes::from_static(b"rr"))],
        ..Default::default()
    }
}

fn joined(j: Join) -> String {
    match j {
        Join::Waiting { member_id } => member_id,
        other => panic!("expected to wait, got {other:?}"),
    }
}

#[test]
fn two_members_form_a_generation_after_the_initial_delay() {
    let mut g = Group::new();
    let a = joined(g.join(req("", "a"), 0, 3_000));
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(g.take_join_result(&a), Ok(None), "the initial delay holds the first generation");
    let b = joined(g.join(req("", "b"), 1_000, 3_000));
    assert!(!g.tick(2_999));
    assert!(g.tick(3_000));
    assert_eq!(g.state, GroupState::CompletingRebalance);
    let ra = g.take_join_result(&a).unwrap().unwrap();
    let rb = g.take_join_result(&b).unwrap().unwrap();
    assert_eq!((ra.generation, rb.generation), (1, 1));
    assert_eq!(ra.protocol, "range");
    assert_eq!(ra.leader, a);
    assert_eq!(ra.members.len(), 2, "the leader sees every member");
    assert!(rb.members.is_empty(), "followers see none");
    // The follower waits for the leader's assignment.
    assert_eq!(g.sync(&b, 1, vec![], 3_100), Sync::Waiting);
    let out = vec![(a.clone(), Bytes::from_static(b"A")), (b.clone(), Bytes::from_static(b"B"))];
    assert_eq!(g.sync(&a, 1, out, 3_200), Sync::Assignment(Bytes::from_static(b"A")));
    assert_eq!(g.state, GroupState::Stable);
    assert_eq!(g.sync(&b, 1, vec![], 3_300), Sync::Assignment(Bytes::from_static(b"B")));
    assert_eq!(g.heartbeat(&b, 1, 3_400), Ok(()));
    assert_eq!(g.heartbeat(&b, 0, 3_400), Err(ResponseError::IllegalGeneration));
    assert_eq!(g.heartbeat("nobody", 1, 3_400), Err(ResponseError::UnknownMemberId));
}

#[test]
fn member_id_required_then_join_with_it() {
    let mut g = Group::new();
    let mut r = req("", "c");
    r.require_known_member_id = true;
    let Join::Error { code, member_id } = g.join(r, 0, 0) else { panic!("expected MEMBER_ID_REQUIRED") };
    assert_eq!(code, ResponseError::MemberIdRequired);
    assert_eq!(joined(g.join(req(&member_id, "c"), 10, 0)), member_id);
    assert_eq!(g.take_join_result(&member_id).unwrap().unwrap().generation, 1);
    assert!(matches!(g.join(req("made-up", "c"), 20, 0), Join::Error { code: ResponseError::UnknownMemberId, .. }));
}

fn stable_pair() -> (Group, String, String) {
    let mut g = Group::new();
    let a = joined(g.join(req("", "a"), 0, 0));
    g.take_join_result(&a).unwrap().unwrap();
    g.sync(&a, 1, vec![], 0);
    let b = joined(g.join(req("", "b"), 100, 0));
    assert_eq!(g.heartbeat(&a, 1, 150), Err(ResponseError::RebalanceInProgress), "a must rejoin");
    joined(g.join(req(&a, "a"), 200, 0));
    assert_eq!(g.state, GroupState::CompletingRebalance);
    assert_eq!(g.generation, 2);
    g.take_join_result(&a).unwrap().unwrap();
    g.take_join_result(&b).unwrap().unwrap();
    g.sync(&a, 2, vec![], 300);
    assert_eq!(g.state, GroupState::Stable);
    (g, a, b)
}

#[test]
fn a_member_that_leaves_triggers_a_rebalance_for_the_rest() {
    let (mut g, a, b) = stable_pair();
    assert_eq!(g.leave(&a, 400), Ok(()));
    assert_eq!(g.state, GroupState::PreparingRebalance);
    assert_eq!(g.heartbeat(&b, 2, 450), Err(ResponseError::RebalanceInProgress));
    joined(g.join(req(&b, "b"), 500, 0));
    let r = g.take_join_result(&b).unwrap().unwrap();
    assert_eq!((r.generation, r.leader.as_str()), (3, b.as_str()));
    assert_eq!(g.leave(&a, 600), Err(ResponseError::UnknownMemberId));
}

#[test]
fn an_expired_session_removes_the_member() {
    let (mut g, a, b) = stable_pair();
    assert!(!g.tick(5_000));
    g.heartbeat(&a, 2, 9_000).unwrap();
    assert!(g.tick(10_301), "b's last heartbeat was at 300 with a 10 s session");
    assert!(!g.members.contains_key(&b));
    assert_eq!(g.state, GroupState::PreparingRebalance);
}

#[test]
fn stragglers_are_dropped_when_the_rebalance_times_out() {
    let (mut g, a, b) = stable_pair();
    joined(g.join(req(&a, "a"), 1_000, 0));
    assert_eq!(g.take_join_result(&a), Ok(None), "waiting for b to rejoin");
    // b keeps its session alive (and is told to rejoin) but never rejoins.
    for t in [10_000, 20_000, 30_000] {
        assert_eq!(g.heartbeat(&b, 2, t), Err(ResponseError::RebalanceInProgress));
        assert!(!g.tick(t + 1));
    }
    assert!(!g.tick(30_999));
    assert!(g.tick(31_000));
    assert!(!g.members.contains_key(&b));
    assert_eq!(g.take_join_result(&a).unwrap().unwrap().generation, 3);
    assert_eq!(g.take_join_result(&b), Err(ResponseError::UnknownMemberId));
}

#[test]
fn commits_need_the_current_generation() {
    let (g, a, _) = stable_pair();
    assert_eq!(g.may_commit(&a, 2), Ok(()));
    assert_eq!(g.may_commit(&a, 1), Err(ResponseError::IllegalGeneration));
    assert_eq!(g.may_commit("", -1), Err(ResponseError::UnknownMemberId), "the group has members");
    assert_eq!(Group::new().may_commit("", -1), Ok(()), "manual assignment commits to an empty group");
}

#[test]
fn inconsistent_protocols_are_refused() {
    let (mut g, _, _) = stable_pair();
    let mut r = req("", "x");
    r.protocols = vec![("sticky".into(), Bytes::new())];
    assert!(matches!(g.join(r, 1_000, 0), Join::Error { code: ResponseError::InconsistentGroupProtocol, .. }));
    let mut r = req("", "x");
    r.protocol_type = "connect".into();
    assert!(matches!(g.join(r, 1_000, 0), Join::Error { code: ResponseError::InconsistentGroupProtocol, .. }));
}

#[test]
fn consumer_assignments_are_read() {
    // version 1; topic "readings" partitions [0, 2]; user data null.
    let mut b = vec![0, 1, 0, 0, 0, 1, 0, 8];
    b.extend_from_slice(b"readings");
    b.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(consumer_assignment(&b), vec![("readings".to_string(), vec![0, 2])]);
    assert_eq!(consumer_assignment(&b[..9]), vec![], "truncated");
    assert_eq!(consumer_assignment(b"\x7f\x00"), vec![], "unknown version");
}

#[test]
fn a_static_member_rejoining_replaces_its_old_self() {
    let mut g = Group::new();
    let mut r = req("", "a");
    r.group_instance_id = Some("host-1".into());
    let first = joined(g.join(r.clone(), 0, 0));
    g.take_join_result(&first).unwrap().unwrap();
    g.sync(&first, 1, vec![], 0);
    // The process restarts and joins again without its member id.
    let second = joined(g.join(r, 1_000, 0));
    assert_ne!(first, second);
    assert!(!g.members.contains_key(&first), "the old member is gone at once");
    assert_eq!(g.take_join_result(&second).unwrap().unwrap().generation, 2);
}
