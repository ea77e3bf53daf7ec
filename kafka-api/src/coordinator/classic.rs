//! One consumer group under the classic protocol (JoinGroup/SyncGroup/Heartbeat/
//! LeaveGroup), as Kafka's group coordinator runs it: member ids handed out first
//! (KIP-394), generations, rebalance and session timeouts, static members (KIP-345).
//!
//! Pure state: no I/O and no clock of its own (`now` is passed in), so every transition
//! is unit-tested below. Waiting JoinGroup/SyncGroup requests are oneshot senders kept
//! in the member and answered when the group moves on.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl Phase {
    /// The state name Kafka's admin APIs use.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::PreparingRebalance => "PreparingRebalance",
            Phase::CompletingRebalance => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }
}

/// What a JoinGroup request gets back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JoinOutcome {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: (member id, instance id, metadata).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    pub fn error(error: ResponseError, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

pub(crate) type SyncOutcome = Result<Bytes, ResponseError>;

/// An answer now, or a receiver that is answered when the group moves on.
pub(crate) enum Answer<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// A JoinGroup request, decoded.
#[derive(Debug, Clone)]
pub(crate) struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// Before JoinGroup v4 a member gets its id without a second round trip.
    pub requires_known_member_id: bool,
}

pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    heartbeat_deadline: Instant,
    join: Option<oneshot::Sender<JoinOutcome>>,
    sync: Option<oneshot::Sender<SyncOutcome>>,
}

impl Member {
    /// The metadata this member sent for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

pub(crate) struct ClassicGroup {
    pub phase: Phase,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// In join order: the first member becomes leader.
    pub members: IndexMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, valid until the deadline.
    pending: HashMap<String, Instant>,
    /// group.instance.id -> member id.
    statics: HashMap<String, String>,
    rebalance_deadline: Instant,
    /// A group that starts from empty waits this long for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`).
    initial_delay_until: Option<Instant>,
    initial_delay: Duration,
}

impl ClassicGroup {
    pub fn new(generation: i32, protocol_type: String, initial_delay: Duration, now: Instant) -> ClassicGroup {
        ClassicGroup {
            phase: Phase::Empty,
            generation,
            protocol_type,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            rebalance_deadline: now,
            initial_delay_until: None,
            initial_delay,
        }
    }

    /// Nothing in memory that the stored record does not hold.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Empty && self.members.is_empty() && self.pending.is_empty()
    }

    /// Handles a JoinGroup. The caller persists the group when the generation changes.
    pub fn join(&mut self, req: JoinRequest, now: Instant) -> Answer<JoinOutcome> {
        if req.protocol_type.is_empty() || req.protocols.is_empty() || !self.accepts(&req) {
            return Answer::Now(JoinOutcome::error(ResponseError::InconsistentGroupProtocol, &req.member_id));
        }
        if req.member_id.is_empty() {
            if let Some(instance) = &req.instance_id {
                let new_id = new_member_id(instance);
                return match self.statics.get(instance).cloned() {
                    Some(old_id) => self.replace_static(&old_id, new_id, req, now),
                    None => self.add_and_rebalance(new_id, req, now),
                };
            }
            let new_id = new_member_id(&req.client_id);
            if req.requires_known_member_id {
                self.pending.insert(new_id.clone(), now + req.session_timeout);
                return Answer::Now(JoinOutcome::error(ResponseError::MemberIdRequired, &new_id));
            }
            return self.add_and_rebalance(new_id, req, now);
        }
        if self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            return self.add_and_rebalance(id, req, now);
        }
        if let Err(e) = self.check_member(&req.member_id, req.instance_id.as_deref()) {
            return Answer::Now(JoinOutcome::error(e, &req.member_id));
        }
        let id = req.member_id.clone();
        let unchanged = self.members.get(&id).is_some_and(|m| m.protocols == req.protocols);
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        match self.phase {
            // A member that lost the JoinGroup response asks again: answer from the group.
            Phase::CompletingRebalance if unchanged => Answer::Now(self.current_join_outcome(&id)),
            Phase::Stable if unchanged && !is_leader => Answer::Now(self.current_join_outcome(&id)),
            _ => {
                self.update_member(&id, &req, now);
                let rx = self.await_join(&id);
                if self.phase != Phase::PreparingRebalance {
                    self.prepare_rebalance(now);
                }
                self.try_complete_join(now);
                Answer::Later(rx)
            }
        }
    }

    /// Handles a SyncGroup; the leader's request carries every member's assignment.
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Answer<SyncOutcome> {
        if let Err(e) = self.check_member(member_id, instance_id) {
            return Answer::Now(Err(e));
        }
        if generation != self.generation {
            return Answer::Now(Err(ResponseError::IllegalGeneration));
        }
        match self.phase {
            Phase::Empty => Answer::Now(Err(ResponseError::UnknownMemberId)),
            Phase::PreparingRebalance => Answer::Now(Err(ResponseError::RebalanceInProgress)),
            Phase::Stable => Answer::Now(Ok(self.members[member_id].assignment.clone())),
            Phase::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let member = &mut self.members[member_id];
                member.sync = Some(tx);
                member.heartbeat_deadline = now + member.session_timeout;
                if self.leader.as_deref() == Some(member_id) {
                    let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for member in self.members.values_mut() {
                        member.assignment = assignments.remove(&member.id).unwrap_or_default();
                        if let Some(tx) = member.sync.take() {
                            let _ = tx.send(Ok(member.assignment.clone()));
                        }
                    }
                    self.phase = Phase::Stable;
                }
                Answer::Later(rx)
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let member = &mut self.members[member_id];
        member.heartbeat_deadline = now + member.session_timeout;
        match self.phase {
            Phase::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Removes members that leave; each gets its own answer.
    pub fn leave(&mut self, members: &[(String, Option<String>)], now: Instant) -> Vec<Result<(), ResponseError>> {
        let results: Vec<_> = members
            .iter()
            .map(|(member_id, instance_id)| {
                let id = match (instance_id, member_id.is_empty()) {
                    (Some(instance), true) => {
                        self.statics.get(instance).cloned().ok_or(ResponseError::UnknownMemberId)?
                    }
                    _ => member_id.clone(),
                };
                self.check_member(&id, instance_id.as_deref())?;
                self.remove_member(&id, ResponseError::UnknownMemberId);
                Ok(())
            })
            .collect();
        if results.iter().any(Result::is_ok) {
            self.member_left(now);
        }
        results
    }

    /// Checks a commit by a member of this group (generation >= 0 commits).
    pub fn check_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if generation < 0 && member_id.is_empty() && self.members.is_empty() {
            // A consumer that only stores offsets here (assign(), no subscription).
            return Ok(());
        }
        if self.phase == Phase::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let member = &mut self.members[member_id];
        member.heartbeat_deadline = now + member.session_timeout;
        Ok(())
    }

    /// Expires members and pending ids whose session ran out and completes a join whose
    /// deadline passed. Returns true when a new generation began.
    pub fn tick(&mut self, now: Instant) -> bool {
        let generation = self.generation;
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            // A member waiting for its JoinGroup or SyncGroup answer is not expected to heartbeat.
            .filter(|m| m.heartbeat_deadline <= now && m.join.is_none() && m.sync.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            tracing::info!(member = %id, "consumer group member expired after its session timeout");
            self.remove_member(id, ResponseError::UnknownMemberId);
        }
        if !expired.is_empty() {
            self.member_left(now);
        }
        self.try_complete_join(now);
        self.generation != generation
    }

    /// Begins the next generation once every member rejoined (or the deadline passed).
    fn try_complete_join(&mut self, now: Instant) {
        if self.phase != Phase::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join.is_some()) && self.pending.is_empty();
        let delay_over = self.initial_delay_until.is_none_or(|until| now >= until);
        if !(all_joined && delay_over) && now < self.rebalance_deadline {
            return;
        }
        let late: Vec<String> = self.members.values().filter(|m| m.join.is_none()).map(|m| m.id.clone()).collect();
        for id in late {
            self.remove_member(&id, ResponseError::UnknownMemberId);
        }
        self.initial_delay_until = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.phase = Phase::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let outcome = self.current_join_outcome(&id);
            let member = &mut self.members[&id];
            member.heartbeat_deadline = now + member.session_timeout;
            if let Some(tx) = member.join.take() {
                let _ = tx.send(outcome);
            }
        }
    }

    /// The JoinGroup answer for `member_id` in the current generation.
    fn current_join_outcome(&self, member_id: &str) -> JoinOutcome {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members.values().map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol))).collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error: None,
            generation: self.generation,
            protocol_type: Some(self.protocol_type.clone()),
            protocol: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    /// Whether `req` can join: same protocol type and a protocol every member supports.
    fn accepts(&self, req: &JoinRequest) -> bool {
        if self.members.is_empty() {
            return true;
        }
        req.protocol_type == self.protocol_type
            && req.protocols.iter().any(|(name, _)| {
                self.members
                    .values()
                    .filter(|m| m.id != req.member_id)
                    .all(|m| m.protocols.iter().any(|p| &p.0 == name))
            })
    }

    /// Each member votes for its most preferred protocol that all members support.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.members.values().all(|m| m.protocols.iter().any(|p| &&p.0 == name)))
            .collect();
        let mut votes: IndexMap<&String, usize> = candidates.iter().map(|c| (*c, 0)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(name, _)| votes.contains_key(name)) {
                votes[name] += 1;
            }
        }
        let max = votes.values().copied().max()?;
        votes.into_iter().find(|(_, v)| *v == max).map(|(name, _)| name.clone())
    }

    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            match self.statics.get(instance) {
                Some(id) if id != member_id => return Err(ResponseError::FencedInstanceId),
                None if !member_id.is_empty() && self.members.contains_key(member_id) => {
                    return Err(ResponseError::FencedInstanceId)
                }
                _ => {}
            }
        }
        match self.members.contains_key(member_id) {
            true => Ok(()),
            false => Err(ResponseError::UnknownMemberId),
        }
    }

    fn add_and_rebalance(&mut self, id: String, req: JoinRequest, now: Instant) -> Answer<JoinOutcome> {
        if let Some(instance) = &req.instance_id {
            self.statics.insert(instance.clone(), id.clone());
        }
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: req.instance_id.clone(),
                client_id: String::new(),
                client_host: String::new(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                heartbeat_deadline: now + req.session_timeout,
                join: None,
                sync: None,
            },
        );
        self.update_member(&id, &req, now);
        if self.members.len() == 1 {
            self.protocol_type = req.protocol_type.clone();
        }
        let rx = self.await_join(&id);
        if self.phase != Phase::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now);
        Answer::Later(rx)
    }

    /// A restarted static member takes over its old id's place; in a stable group it
    /// gets the current generation and keeps its assignment without a rebalance.
    fn replace_static(&mut self, old_id: &str, new_id: String, req: JoinRequest, now: Instant) -> Answer<JoinOutcome> {
        let Some(mut member) = self.members.shift_remove(old_id) else {
            return self.add_and_rebalance(new_id, req, now);
        };
        if let Some(tx) = member.join.take() {
            let _ = tx.send(JoinOutcome::error(ResponseError::FencedInstanceId, old_id));
        }
        if let Some(tx) = member.sync.take() {
            let _ = tx.send(Err(ResponseError::FencedInstanceId));
        }
        member.id = new_id.clone();
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = &req.instance_id {
            self.statics.insert(instance.clone(), new_id.clone());
        }
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        let unchanged = self.members[&new_id].protocols == req.protocols;
        self.update_member(&new_id, &req, now);
        if self.phase == Phase::Stable && unchanged {
            return Answer::Now(self.current_join_outcome(&new_id));
        }
        let rx = self.await_join(&new_id);
        if self.phase != Phase::PreparingRebalance {
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now);
        Answer::Later(rx)
    }

    fn update_member(&mut self, id: &str, req: &JoinRequest, now: Instant) {
        let member = &mut self.members[id];
        member.client_id = req.client_id.clone();
        member.client_host = req.client_host.clone();
        member.session_timeout = req.session_timeout;
        member.rebalance_timeout = req.rebalance_timeout;
        member.protocols = req.protocols.clone();
        member.heartbeat_deadline = now + req.session_timeout;
    }

    fn await_join(&mut self, id: &str) -> oneshot::Receiver<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        if let Some(old) = self.members[id].join.replace(tx) {
            // The same member joined twice; the newer request wins.
            let _ = old.send(JoinOutcome::error(ResponseError::UnknownMemberId, id));
        }
        rx
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.phase == Phase::Empty {
            self.initial_delay_until = Some(now + self.initial_delay);
        }
        for member in self.members.values_mut() {
            if let Some(tx) = member.sync.take() {
                let _ = tx.send(Err(ResponseError::RebalanceInProgress));
            }
        }
        let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        self.rebalance_deadline = now + timeout;
        self.phase = Phase::PreparingRebalance;
    }

    /// After members left: rebalance the rest (or finish a rebalance without them).
    fn member_left(&mut self, now: Instant) {
        if self.members.is_empty() && self.phase != Phase::PreparingRebalance {
            self.phase = Phase::PreparingRebalance;
            self.rebalance_deadline = now;
        } else if matches!(self.phase, Phase::Stable | Phase::CompletingRebalance) {
            self.prepare_rebalance(now);
        }
        self.try_complete_join(now);
    }

    fn remove_member(&mut self, id: &str, error: ResponseError) {
        let Some(mut member) = self.members.shift_remove(id) else { return };
        if let Some(instance) = &member.instance_id {
            if self.statics.get(instance).is_some_and(|m| m == id) {
                self.statics.remove(instance);
            }
        }
        if let Some(tx) = member.join.take() {
            let _ = tx.send(JoinOutcome::error(error, id));
        }
        if let Some(tx) = member.sync.take() {
            let _ = tx.send(Err(error));
        }
    }
}

/// Kafka's member id shape: the client id (or instance id) and a random UUID.
fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(10);

    fn request(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: SESSION,
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("meta-{p}")))).collect(),
            requires_known_member_id: true,
        }
    }

    fn now_value<T>(answer: Answer<T>) -> T {
        match answer {
            Answer::Now(v) => v,
            Answer::Later(_) => panic!("expected an immediate answer"),
        }
    }

    fn later<T>(answer: Answer<T>) -> oneshot::Receiver<T> {
        match answer {
            Answer::Later(rx) => rx,
            Answer::Now(_) => panic!("expected a waiting answer"),
        }
    }

    /// Joins a new member through MEMBER_ID_REQUIRED; returns its id and join receiver.
    fn join_new(g: &mut ClassicGroup, now: Instant) -> (String, oneshot::Receiver<JoinOutcome>) {
        let first = now_value(g.join(request("", &["range"]), now));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let id = first.member_id;
        let rx = later(g.join(request(&id, &["range"]), now));
        (id, rx)
    }

    fn group(now: Instant) -> ClassicGroup {
        ClassicGroup::new(0, String::new(), Duration::ZERO, now)
    }

    #[test]
    fn first_member_becomes_leader_and_syncs_its_assignment() {
        let now = Instant::now();
        let mut g = group(now);
        let (id, mut rx) = join_new(&mut g, now);
        let joined = rx.try_recv().expect("a lone member completes the join at once");
        assert_eq!((joined.error, joined.generation, joined.leader.as_str()), (None, 1, id.as_str()));
        assert_eq!(joined.protocol.as_deref(), Some("range"));
        assert_eq!(joined.members.len(), 1);
        assert_eq!(g.phase, Phase::CompletingRebalance);

        let mut sync = later(g.sync(&id, None, 1, vec![(id.clone(), Bytes::from_static(b"A"))], now));
        assert_eq!(sync.try_recv().unwrap(), Ok(Bytes::from_static(b"A")));
        assert_eq!(g.phase, Phase::Stable);
        assert_eq!(g.heartbeat(&id, None, 1, now), Ok(()));
    }

    #[test]
    fn a_second_member_triggers_a_rebalance_that_waits_for_everyone() {
        let now = Instant::now();
        let mut g = group(now);
        let (a, mut rx_a) = join_new(&mut g, now);
        rx_a.try_recv().unwrap();
        later(g.sync(&a, None, 1, vec![], now));

        let (b, mut rx_b) = join_new(&mut g, now);
        assert_eq!(g.phase, Phase::PreparingRebalance);
        assert!(rx_b.try_recv().is_err(), "waits for the existing member to rejoin");
        assert_eq!(g.heartbeat(&a, None, 1, now), Err(ResponseError::RebalanceInProgress));
        assert_eq!(g.heartbeat(&b, None, 1, now), Err(ResponseError::RebalanceInProgress));

        let mut rx_a = later(g.join(request(&a, &["range"]), now));
        let (ja, jb) = (rx_a.try_recv().unwrap(), rx_b.try_recv().unwrap());
        assert_eq!((ja.generation, jb.generation), (2, 2));
        assert_eq!((ja.leader.clone(), ja.members.len(), jb.members.len()), (a.clone(), 2, 0));

        let mut sync_b = later(g.sync(&b, None, 2, vec![], now));
        assert!(sync_b.try_recv().is_err(), "followers wait for the leader's assignments");
        let assignments = vec![(a.clone(), Bytes::from_static(b"A")), (b.clone(), Bytes::from_static(b"B"))];
        let mut sync_a = later(g.sync(&a, None, 2, assignments, now));
        assert_eq!(sync_a.try_recv().unwrap(), Ok(Bytes::from_static(b"A")));
        assert_eq!(sync_b.try_recv().unwrap(), Ok(Bytes::from_static(b"B")));
        assert_eq!(g.heartbeat(&b, None, 1, now), Err(ResponseError::IllegalGeneration));
    }

    #[test]
    fn a_member_that_misses_the_rebalance_deadline_is_dropped() {
        let now = Instant::now();
        let mut g = group(now);
        let (a, mut rx) = join_new(&mut g, now);
        rx.try_recv().unwrap();
        later(g.sync(&a, None, 1, vec![], now));
        let (b, mut rx_b) = join_new(&mut g, now);
        assert!(!g.tick(now + Duration::from_secs(5)));
        assert!(g.tick(now + Duration::from_secs(31)), "the deadline completes the join");
        let joined = rx_b.try_recv().unwrap();
        assert_eq!((joined.generation, joined.leader), (2, b));
        assert!(!g.members.contains_key(&a));
    }

    #[test]
    fn an_expired_session_removes_the_member_and_the_last_leaves_an_empty_group() {
        let now = Instant::now();
        let mut g = group(now);
        let (a, mut rx) = join_new(&mut g, now);
        rx.try_recv().unwrap();
        later(g.sync(&a, None, 1, vec![], now));
        assert!(!g.tick(now + SESSION / 2));
        assert!(g.tick(now + SESSION + Duration::from_millis(1)));
        assert_eq!((g.phase, g.generation), (Phase::Empty, 2));
        assert_eq!(g.heartbeat(&a, None, 2, now), Err(ResponseError::UnknownMemberId));
    }

    #[test]
    fn errors_for_unknown_members_old_generations_and_mismatched_protocols() {
        let now = Instant::now();
        let mut g = group(now);
        let (a, mut rx) = join_new(&mut g, now);
        rx.try_recv().unwrap();
        assert_eq!(now_value(g.join(request("nobody", &["range"]), now)).error, Some(ResponseError::UnknownMemberId));
        assert_eq!(now_value(g.sync("nobody", None, 1, vec![], now)), Err(ResponseError::UnknownMemberId));
        assert_eq!(now_value(g.sync(&a, None, 7, vec![], now)), Err(ResponseError::IllegalGeneration));
        let other = now_value(g.join(request("", &["roundrobin"]), now));
        assert_eq!(other.error, Some(ResponseError::InconsistentGroupProtocol));
        assert_eq!(g.check_commit(&a, None, 1, now), Err(ResponseError::RebalanceInProgress));
        later(g.sync(&a, None, 1, vec![], now));
        assert_eq!(g.check_commit(&a, None, 1, now), Ok(()));
        assert_eq!(g.check_commit(&a, None, 0, now), Err(ResponseError::IllegalGeneration));
        assert_eq!(g.check_commit("", None, -1, now), Err(ResponseError::UnknownMemberId));
        assert_eq!(group(now).check_commit("", None, -1, now), Ok(()), "simple commits need an empty group");
    }

    #[test]
    fn leave_rebalances_the_rest() {
        let now = Instant::now();
        let mut g = group(now);
        let (a, mut rx_a) = join_new(&mut g, now);
        rx_a.try_recv().unwrap();
        later(g.sync(&a, None, 1, vec![], now));
        let (b, mut rx_b) = join_new(&mut g, now);
        let results = g.leave(&[(b.clone(), None), ("ghost".into(), None)], now);
        assert_eq!(results, vec![Ok(()), Err(ResponseError::UnknownMemberId)]);
        assert_eq!(rx_b.try_recv().unwrap().error, Some(ResponseError::UnknownMemberId));
        let mut rx_a = later(g.join(request(&a, &["range"]), now));
        let joined = rx_a.try_recv().expect("the rebalance completes without b");
        assert_eq!((joined.generation, joined.members.len()), (2, 1));
    }

    #[test]
    fn a_restarted_static_member_keeps_its_assignment_and_fences_the_old_id() {
        let now = Instant::now();
        let mut g = group(now);
        let mut req = request("", &["range"]);
        req.instance_id = Some("consumer-1".into());
        let mut rx = later(g.join(req.clone(), now));
        let old_id = rx.try_recv().unwrap().member_id;
        later(g.sync(&old_id, Some("consumer-1"), 1, vec![(old_id.clone(), Bytes::from_static(b"P0"))], now));

        let again = now_value(g.join(req, now));
        assert_eq!((again.error, again.generation), (None, 1), "no rebalance for a known static member");
        assert_ne!(again.member_id, old_id);
        assert_eq!(
            now_value(g.sync(&again.member_id, Some("consumer-1"), 1, vec![], now)),
            Ok(Bytes::from_static(b"P0"))
        );
        assert_eq!(g.heartbeat(&old_id, Some("consumer-1"), 1, now), Err(ResponseError::FencedInstanceId));
    }

    #[test]
    fn the_initial_delay_gathers_members_before_the_first_generation() {
        let now = Instant::now();
        let mut g = ClassicGroup::new(0, String::new(), Duration::from_secs(3), now);
        let (_a, mut rx_a) = join_new(&mut g, now);
        let (_b, mut rx_b) = join_new(&mut g, now);
        assert!(rx_a.try_recv().is_err());
        assert!(g.tick(now + Duration::from_secs(3)));
        assert_eq!((rx_a.try_recv().unwrap().generation, rx_b.try_recv().unwrap().generation), (1, 1));
    }

    #[test]
    fn protocol_selection_follows_the_members_votes() {
        let now = Instant::now();
        let mut g = group(now);
        let mut req = request("", &["cooperative-sticky", "range"]);
        req.requires_known_member_id = false;
        later(g.join(req.clone(), now));
        later(g.join(req, now));
        let mut third = request("", &["range", "cooperative-sticky"]);
        third.requires_known_member_id = false;
        later(g.join(third, now));
        assert_eq!(g.select_protocol().as_deref(), Some("cooperative-sticky"));
    }
}
