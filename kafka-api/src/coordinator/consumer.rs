//! One consumer group under the KIP-848 protocol (ConsumerGroupHeartbeat): the
//! coordinator computes the assignment. A membership or subscription change bumps the
//! group epoch; the target assignment is recomputed for that epoch; each member then
//! converges on its next heartbeats: it first gives up partitions that moved away
//! (same member epoch), then receives the new epoch and the partitions no other member
//! still holds. A partition is never assigned to two members at once.
//!
//! Pure state like `classic`: no I/O, `now` passed in, unit-tested below.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use uuid::Uuid;

/// A topic partition by topic id, as the protocol carries it.
pub(crate) type Tp = (Uuid, i32);

/// The topics a group can be assigned: name -> (id, partition count).
pub(crate) type Topics = BTreeMap<String, (Uuid, i32)>;

/// A ConsumerGroupHeartbeat, decoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// `None`: unchanged since the last heartbeat.
    pub rebalance_timeout: Option<Duration>,
    pub subscribed: Option<Vec<String>>,
    pub owned: Option<Vec<Tp>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HeartbeatOutcome {
    pub member_id: String,
    pub member_epoch: i32,
    /// `None`: the member's assignment did not change.
    pub assignment: Option<Vec<Tp>>,
}

pub(crate) struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    /// The epoch before the last bump: a member whose response was lost retries with it.
    previous_epoch: i32,
    pub subscribed: Vec<String>,
    rebalance_timeout: Duration,
    session_deadline: Instant,
    /// Partitions the member may consume now.
    pub assigned: BTreeSet<Tp>,
    /// Partitions taken away that the member has not confirmed giving up.
    revoking: BTreeSet<Tp>,
    revoke_deadline: Option<Instant>,
    /// The assignment last sent, to send only changes.
    sent: Option<BTreeSet<Tp>>,
}

pub(crate) struct ConsumerGroup {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, Member>,
    pub target: BTreeMap<String, BTreeSet<Tp>>,
    /// The subscribed topics' ids and partition counts the target was computed from.
    metadata: Topics,
    session_timeout: Duration,
    /// After a coordinator change, members of the old coordinator may still consume
    /// until their next heartbeat tells them UNKNOWN_MEMBER_ID: nothing new is granted
    /// before this instant, so no partition has two consumers.
    hold_until: Option<Instant>,
}

impl ConsumerGroup {
    pub fn new(epoch: i32, session_timeout: Duration) -> ConsumerGroup {
        ConsumerGroup {
            epoch,
            assignment_epoch: epoch,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            metadata: Topics::new(),
            session_timeout,
            hold_until: None,
        }
    }

    /// A group loaded from its stored record on a new coordinator: grants wait `hold`.
    pub fn loaded(epoch: i32, session_timeout: Duration, hold: Duration, now: Instant) -> ConsumerGroup {
        ConsumerGroup { hold_until: Some(now + hold), ..ConsumerGroup::new(epoch, session_timeout) }
    }

    /// Kafka's state names for consumer groups.
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.epoch {
            "Assigning"
        } else if self.members.values().any(|m| m.epoch != self.assignment_epoch || !m.revoking.is_empty()) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        topics: &Topics,
        now: Instant,
    ) -> Result<HeartbeatOutcome, ResponseError> {
        match hb.member_epoch {
            0 => self.join(&hb, now)?,
            -1 | -2 => {
                self.members.remove(&hb.member_id).ok_or(ResponseError::UnknownMemberId)?;
                self.epoch += 1;
                return Ok(HeartbeatOutcome {
                    member_id: hb.member_id,
                    member_epoch: hb.member_epoch,
                    assignment: None,
                });
            }
            epoch => {
                let member = self.members.get(&hb.member_id).ok_or(ResponseError::UnknownMemberId)?;
                // The previous epoch is fine if the member owns nothing it should not: its
                // last response was lost (Kafka accepts the same).
                let owns_only_assigned =
                    hb.owned.as_ref().is_none_or(|owned| owned.iter().all(|tp| member.assigned.contains(tp)));
                if epoch != member.epoch && !(epoch == member.previous_epoch && owns_only_assigned) {
                    return Err(ResponseError::FencedMemberEpoch);
                }
            }
        }
        let member_id = hb.member_id.clone();
        self.update(hb, now);
        let wanted = self.subscribed_metadata(topics);
        if wanted != self.metadata {
            self.metadata = wanted;
            self.epoch += 1;
        }
        if self.assignment_epoch < self.epoch {
            self.compute_target();
        }
        self.reconcile(&member_id, now);
        let member = self.members.get_mut(&member_id).ok_or(ResponseError::UnknownMemberId)?;
        let changed = member.sent.as_ref() != Some(&member.assigned);
        if changed {
            member.sent = Some(member.assigned.clone());
        }
        Ok(HeartbeatOutcome {
            member_id,
            member_epoch: member.epoch,
            assignment: changed.then(|| member.assigned.iter().copied().collect()),
        })
    }

    /// Checks an OffsetCommit (v9+) by a member at `epoch`.
    pub fn check_commit(&mut self, member_id: &str, epoch: i32, now: Instant) -> Result<(), ResponseError> {
        let member = self.members.get_mut(member_id).ok_or(ResponseError::UnknownMemberId)?;
        if epoch != member.epoch {
            return Err(ResponseError::StaleMemberEpoch);
        }
        member.session_deadline = now + self.session_timeout;
        Ok(())
    }

    /// Removes members whose session expired or who held on to revoked partitions past
    /// their rebalance timeout. Returns true when the group epoch changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let before = self.members.len();
        self.members.retain(|id, m| {
            let alive = m.session_deadline > now && m.revoke_deadline.is_none_or(|d| d > now);
            if !alive {
                tracing::info!(member = %id, "consumer group member fenced (session or rebalance timeout)");
            }
            alive
        });
        if self.members.len() != before {
            self.epoch += 1;
            return true;
        }
        false
    }

    fn join(&mut self, hb: &Heartbeat, now: Instant) -> Result<(), ResponseError> {
        if hb.subscribed.as_ref().is_none_or(|s| s.is_empty()) {
            return Err(ResponseError::InvalidRequest);
        }
        // A member that rejoins (after being fenced) starts over with nothing.
        self.members.insert(
            hb.member_id.clone(),
            Member {
                id: hb.member_id.clone(),
                instance_id: None,
                rack_id: None,
                client_id: String::new(),
                client_host: String::new(),
                epoch: 0,
                previous_epoch: 0,
                subscribed: Vec::new(),
                rebalance_timeout: Duration::from_secs(300),
                session_deadline: now + self.session_timeout,
                assigned: BTreeSet::new(),
                revoking: BTreeSet::new(),
                revoke_deadline: None,
                sent: None,
            },
        );
        self.epoch += 1;
        Ok(())
    }

    fn update(&mut self, hb: Heartbeat, now: Instant) {
        let Some(member) = self.members.get_mut(&hb.member_id) else { return };
        member.session_deadline = now + self.session_timeout;
        member.client_id = hb.client_id;
        member.client_host = hb.client_host;
        if hb.instance_id.is_some() {
            member.instance_id = hb.instance_id;
        }
        if hb.rack_id.is_some() {
            member.rack_id = hb.rack_id;
        }
        if let Some(timeout) = hb.rebalance_timeout {
            member.rebalance_timeout = timeout;
        }
        if let Some(mut subscribed) = hb.subscribed {
            subscribed.sort();
            subscribed.dedup();
            if subscribed != member.subscribed {
                member.subscribed = subscribed;
                if member.epoch != 0 {
                    self.epoch += 1;
                }
            }
        }
        if let Some(owned) = hb.owned {
            // Revocation is done once the member no longer reports revoked partitions.
            if owned.iter().all(|tp| !member.revoking.contains(tp)) {
                member.revoking.clear();
                member.revoke_deadline = None;
            }
            // A member that owns something else than we think missed a response: resend.
            let owned: BTreeSet<Tp> = owned.into_iter().collect();
            if owned != member.assigned {
                member.sent = None;
            }
        }
    }

    fn subscribed_metadata(&self, topics: &Topics) -> Topics {
        let names: BTreeSet<&String> = self.members.values().flat_map(|m| &m.subscribed).collect();
        names.into_iter().filter_map(|n| Some((n.clone(), *topics.get(n)?))).collect()
    }

    /// Uniform and sticky: each member keeps what it has up to its fair share, and the
    /// remaining partitions go to the subscribed member with the fewest.
    fn compute_target(&mut self) {
        let mut target: BTreeMap<String, BTreeSet<Tp>> =
            self.members.keys().map(|id| (id.clone(), BTreeSet::new())).collect();
        let mut all: Vec<(String, Tp)> = Vec::new();
        for (name, (id, count)) in &self.metadata {
            all.extend((0..*count).map(|p| (name.clone(), (*id, p))));
        }
        let subscribers =
            |name: &str| -> usize { self.members.values().filter(|m| m.subscribed.iter().any(|s| s == name)).count() };
        let fair = |name: &str| -> usize {
            let total: usize = self.metadata.get(name).map_or(0, |(_, c)| *c as usize);
            total.div_ceil(subscribers(name).max(1))
        };
        let mut unassigned = Vec::new();
        for (name, tp) in all {
            let owner = self.members.values().find(|m| m.assigned.contains(&tp) || m.revoking.contains(&tp));
            match owner {
                Some(m) if m.subscribed.contains(&name) && target[&m.id].len() < fair(&name) => {
                    target.entry(m.id.clone()).or_default().insert(tp);
                }
                _ => unassigned.push((name, tp)),
            }
        }
        for (name, tp) in unassigned {
            let least = self
                .members
                .values()
                .filter(|m| m.subscribed.contains(&name))
                .min_by_key(|m| (target[&m.id].len(), m.id.clone()));
            if let Some(m) = least {
                target.entry(m.id.clone()).or_default().insert(tp);
            }
        }
        self.target = target;
        self.assignment_epoch = self.epoch;
    }

    /// Moves `member_id` one step towards its target assignment.
    fn reconcile(&mut self, member_id: &str, now: Instant) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_by_others: BTreeSet<Tp> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .flat_map(|m| m.assigned.iter().chain(m.revoking.iter()).copied())
            .collect();
        let assignment_epoch = self.assignment_epoch;
        let Some(member) = self.members.get_mut(member_id) else { return };
        let to_revoke: BTreeSet<Tp> = member.assigned.difference(&target).copied().collect();
        if !to_revoke.is_empty() {
            member.assigned.retain(|tp| target.contains(tp));
            member.revoking.extend(to_revoke);
            member.revoke_deadline = Some(now + member.rebalance_timeout);
            return;
        }
        if !member.revoking.is_empty() {
            return;
        }
        if member.epoch != assignment_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = assignment_epoch;
        }
        let grantable = target.difference(&held_by_others).copied();
        member.assigned = match self.hold_until.is_some_and(|until| now < until) {
            true => grantable.filter(|tp| member.assigned.contains(tp)).collect(),
            false => grantable.collect(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(45);

    fn topics() -> Topics {
        Topics::from([("t".to_string(), (Uuid::from_u128(7), 4))])
    }

    fn join(id: &str) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            subscribed: Some(vec!["t".into()]),
            rebalance_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: &[Tp]) -> Heartbeat {
        Heartbeat { member_id: id.into(), member_epoch: epoch, owned: Some(owned.to_vec()), ..Default::default() }
    }

    fn partitions(tps: &[Tp]) -> Vec<i32> {
        tps.iter().map(|tp| tp.1).collect()
    }

    #[test]
    fn a_lone_member_gets_every_partition() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new(0, SESSION);
        let out = g.heartbeat(join("a"), &topics(), now).unwrap();
        assert_eq!(out.member_epoch, g.epoch);
        assert_eq!(partitions(out.assignment.as_ref().unwrap()), [0, 1, 2, 3]);
        let owned = out.assignment.unwrap();
        let again = g.heartbeat(beat("a", out.member_epoch, &owned), &topics(), now).unwrap();
        assert_eq!(again.assignment, None, "unchanged assignments are not resent");
        assert_eq!(g.state(), "Stable");
    }

    #[test]
    fn partitions_move_only_after_the_old_owner_gives_them_up() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new(0, SESSION);
        let a = g.heartbeat(join("a"), &topics(), now).unwrap();
        let a_owned = a.assignment.unwrap();
        let b = g.heartbeat(join("b"), &topics(), now).unwrap();
        assert_eq!(b.assignment, Some(vec![]), "b waits: a still holds everything");
        assert_eq!(g.state(), "Reconciling");

        let a2 = g.heartbeat(beat("a", a.member_epoch, &a_owned), &topics(), now).unwrap();
        assert_eq!(a2.member_epoch, a.member_epoch, "epoch stays until revocation is confirmed");
        let a_kept = a2.assignment.unwrap();
        assert_eq!(a_kept.len(), 2);
        let b2 = g.heartbeat(beat("b", b.member_epoch, &[]), &topics(), now).unwrap();
        assert_eq!(b2.assignment, None, "a has not confirmed yet");

        let a3 = g.heartbeat(beat("a", a2.member_epoch, &a_kept), &topics(), now).unwrap();
        assert_eq!(a3.member_epoch, g.epoch);
        let b3 = g.heartbeat(beat("b", b2.member_epoch, &[]), &topics(), now).unwrap();
        assert_eq!(b3.member_epoch, g.epoch);
        let b_got = b3.assignment.unwrap();
        assert_eq!(b_got.len(), 2);
        assert!(b_got.iter().all(|tp| !a_kept.contains(tp)), "no partition is assigned twice");
        assert_eq!(g.state(), "Stable");
    }

    #[test]
    fn stale_epochs_unknown_members_and_leaving() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new(0, SESSION);
        let a = g.heartbeat(join("a"), &topics(), now).unwrap();
        assert_eq!(
            g.heartbeat(beat("a", a.member_epoch + 5, &[]), &topics(), now),
            Err(ResponseError::FencedMemberEpoch)
        );
        assert_eq!(g.heartbeat(beat("x", 3, &[]), &topics(), now), Err(ResponseError::UnknownMemberId));
        assert_eq!(g.check_commit("a", a.member_epoch - 1, now), Err(ResponseError::StaleMemberEpoch));
        assert_eq!(g.check_commit("a", a.member_epoch, now), Ok(()));
        let left = g.heartbeat(beat("a", -1, &[]), &topics(), now).unwrap();
        assert_eq!(left.member_epoch, -1);
        assert_eq!(g.state(), "Empty");
        assert_eq!(g.heartbeat(beat("a", -1, &[]), &topics(), now), Err(ResponseError::UnknownMemberId));
    }

    #[test]
    fn an_expired_member_releases_its_partitions() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new(0, SESSION);
        let a = g.heartbeat(join("a"), &topics(), now).unwrap();
        let b = g.heartbeat(join("b"), &topics(), now).unwrap();
        g.heartbeat(beat("a", a.member_epoch, &a.assignment.unwrap()), &topics(), now).unwrap();
        let later = now + SESSION / 2;
        g.heartbeat(beat("b", b.member_epoch, &[]), &topics(), later).unwrap();
        assert!(g.tick(now + SESSION + Duration::from_millis(1)), "a stopped heartbeating");
        let b2 = g.heartbeat(beat("b", b.member_epoch, &[]), &topics(), now + SESSION).unwrap();
        assert_eq!(partitions(&b2.assignment.unwrap()), [0, 1, 2, 3]);
    }

    #[test]
    fn a_lost_response_is_resent_and_the_previous_epoch_accepted() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new(0, SESSION);
        let a = g.heartbeat(join("a"), &topics(), now).unwrap();
        let b = g.heartbeat(join("b"), &topics(), now).unwrap();
        let a2 = g.heartbeat(beat("a", a.member_epoch, &a.assignment.clone().unwrap()), &topics(), now).unwrap();
        let a3 = g.heartbeat(beat("a", a2.member_epoch, &a2.assignment.clone().unwrap()), &topics(), now).unwrap();
        assert!(a3.member_epoch > a.member_epoch);
        // b's grant is lost on the way: b retries, owning nothing, and gets it again.
        let granted = g.heartbeat(beat("b", b.member_epoch, &[]), &topics(), now).unwrap();
        assert!(!granted.assignment.clone().unwrap().is_empty());
        let again = g.heartbeat(beat("b", b.member_epoch, &[]), &topics(), now).unwrap();
        assert_eq!(again.assignment, granted.assignment, "resent because b does not own it");
        // a's epoch bump was lost too: its previous epoch still works.
        let retry = g.heartbeat(beat("a", a.member_epoch, &a2.assignment.unwrap()), &topics(), now).unwrap();
        assert_eq!(retry.member_epoch, a3.member_epoch);
    }

    #[test]
    fn a_loaded_group_grants_nothing_until_old_members_had_a_heartbeat() {
        let now = Instant::now();
        let mut g = ConsumerGroup::loaded(7, SESSION, Duration::from_secs(6), now);
        let a = g.heartbeat(join("a"), &topics(), now).unwrap();
        assert_eq!(a.assignment.unwrap_or_default(), vec![]);
        let later = g.heartbeat(beat("a", a.member_epoch, &[]), &topics(), now + Duration::from_secs(6)).unwrap();
        assert_eq!(partitions(&later.assignment.unwrap()), [0, 1, 2, 3]);
    }

    #[test]
    fn new_partitions_bump_the_epoch_and_get_assigned() {
        let now = Instant::now();
        let mut g = ConsumerGroup::new(0, SESSION);
        let a = g.heartbeat(join("a"), &topics(), now).unwrap();
        let grown = Topics::from([("t".to_string(), (Uuid::from_u128(7), 6))]);
        let a2 = g.heartbeat(beat("a", a.member_epoch, &a.assignment.unwrap()), &grown, now).unwrap();
        assert!(a2.member_epoch > a.member_epoch);
        assert_eq!(a2.assignment.unwrap().len(), 6);
    }
}
