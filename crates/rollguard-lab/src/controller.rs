//! The Deployment controller's decisions, as pure functions of what pods exist.
//!
//! A rolling update alternates two moves, as Kubernetes' Deployment controller does:
//! scale the new version up as far as `maxSurge` allows, and scale the old version down as
//! far as `maxUnavailable` allows, counting only *available* pods (ready for at least
//! `minReadySeconds`). Pods being terminated no longer count, so new pods may start while
//! old ones are still shutting down, exactly as on a cluster.

use rollguard_core::rollout::Fenceposts;

/// What the controller sees of one pod that is not being terminated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// The pod's name.
    pub name: String,
    /// Whether it runs the version being rolled out.
    pub current: bool,
    /// Whether it has been ready for at least `minReadySeconds`.
    pub available: bool,
}

/// One reconcile step of a rolling update.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Step {
    /// New-version pods to create.
    pub create: u32,
    /// Old-version pods to delete (terminate), unavailable ones first.
    pub delete: Vec<String>,
    /// The rollout is complete: only new pods, `replicas` of them, all available.
    pub done: bool,
}

/// Decides the next rolling-update step.
pub fn rolling_step(pods: &[PodView], budget: Fenceposts) -> Step {
    let replicas = budget.replicas as usize;
    let new = pods.iter().filter(|p| p.current).count();
    let old: Vec<&PodView> = pods.iter().filter(|p| !p.current).collect();
    let new_available = pods.iter().filter(|p| p.current && p.available).count();
    if old.is_empty() && new == replicas && new_available == replicas {
        return Step {
            done: true,
            ..Step::default()
        };
    }

    // Scale up the new version: never more than replicas + maxSurge pods in all.
    let max_total = budget.max_total() as usize;
    let room = max_total.saturating_sub(pods.len());
    let create = room.min(replicas.saturating_sub(new));

    // Scale down the old version: keep replicas - maxUnavailable available, counting new
    // pods that are not available yet against the budget (reconcileOldReplicaSets).
    let min_available = budget.min_available() as usize;
    let new_unavailable = new - new_available;
    let all = pods.len() + create;
    let mut can_delete = all
        .saturating_sub(min_available)
        .saturating_sub(new_unavailable);
    let mut delete = Vec::new();
    // Unavailable old pods go first: deleting them costs no availability.
    for pod in old.iter().filter(|p| !p.available) {
        if can_delete == 0 {
            break;
        }
        delete.push(pod.name.clone());
        can_delete -= 1;
    }
    // Available old pods only while enough pods stay available.
    let available = pods.iter().filter(|p| p.available).count();
    let mut spare = available.saturating_sub(min_available);
    for pod in old.iter().filter(|p| p.available) {
        if can_delete == 0 || spare == 0 {
            break;
        }
        delete.push(pod.name.clone());
        can_delete -= 1;
        spare -= 1;
    }
    Step {
        create: u32::try_from(create).unwrap_or(u32::MAX),
        delete,
        done: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(
        old_available: usize,
        old_unavailable: usize,
        new_available: usize,
        new_pending: usize,
    ) -> Vec<PodView> {
        let mut v = Vec::new();
        let mut push = |n: usize, current: bool, available: bool, tag: &str| {
            for i in 0..n {
                v.push(PodView {
                    name: format!("{tag}-{i}"),
                    current,
                    available,
                });
            }
        };
        push(old_available, false, true, "old");
        push(old_unavailable, false, false, "old-unavailable");
        push(new_available, true, true, "new");
        push(new_pending, true, false, "new-pending");
        v
    }

    fn budget(replicas: u32, max_surge: u32, max_unavailable: u32) -> Fenceposts {
        Fenceposts {
            replicas,
            max_surge,
            max_unavailable,
        }
    }

    #[test]
    fn surge_only_creates_first_and_deletes_nothing_until_new_pods_are_available() {
        // 3 replicas, 25%/25% resolves to surge 1, unavailable 0.
        let step = rolling_step(&pods(3, 0, 0, 0), budget(3, 1, 0));
        assert_eq!((step.create, step.delete.len()), (1, 0));
        let step = rolling_step(&pods(3, 0, 0, 1), budget(3, 1, 0));
        assert_eq!((step.create, step.delete.len()), (0, 0), "{step:?}");
        let step = rolling_step(&pods(3, 0, 1, 0), budget(3, 1, 0));
        assert_eq!((step.create, step.delete), (0, vec!["old-0".to_owned()]));
    }

    #[test]
    fn unavailable_budget_deletes_before_new_pods_are_ready() {
        // 10 replicas, 25%/25%: surge 3, unavailable 2.
        let step = rolling_step(&pods(10, 0, 0, 0), budget(10, 3, 2));
        assert_eq!(step.create, 3);
        assert_eq!(step.delete.len(), 2, "{step:?}");
    }

    #[test]
    fn unavailable_old_pods_are_deleted_first() {
        let step = rolling_step(&pods(2, 1, 0, 0), budget(3, 1, 0));
        assert_eq!(step.delete, vec!["old-unavailable-0".to_owned()]);
    }

    #[test]
    fn never_below_min_available() {
        // 2 replicas, surge 0, unavailable 1: one old pod at a time.
        let step = rolling_step(&pods(2, 0, 0, 0), budget(2, 0, 1));
        assert_eq!((step.create, step.delete.len()), (0, 1));
        let step = rolling_step(&pods(1, 0, 0, 1), budget(2, 0, 1));
        assert_eq!((step.create, step.delete.len()), (0, 0), "{step:?}");
    }

    #[test]
    fn done_only_with_all_new_available() {
        assert!(!rolling_step(&pods(0, 0, 2, 1), budget(3, 1, 0)).done);
        assert!(!rolling_step(&pods(1, 0, 3, 0), budget(3, 1, 0)).done);
        assert!(rolling_step(&pods(0, 0, 3, 0), budget(3, 1, 0)).done);
    }

    #[test]
    fn a_full_rollout_converges() {
        for (replicas, surge, unavailable) in
            [(3, 1, 0), (3, 0, 1), (10, 3, 2), (1, 1, 0), (5, 5, 5)]
        {
            let b = budget(replicas, surge, unavailable);
            let (mut old, mut new_pending, mut new_ready) = (replicas as usize, 0, 0);
            for round in 0.. {
                assert!(round < 100, "no convergence for {b:?}");
                let step = rolling_step(&pods(old, 0, new_ready, new_pending), b);
                if step.done {
                    break;
                }
                let total = old + new_pending + new_ready;
                assert!(
                    total <= (replicas + surge) as usize,
                    "{b:?}: surge exceeded"
                );
                old -= step.delete.len();
                // Pods made last round become ready; this round's are pending.
                new_ready += new_pending;
                new_pending = step.create as usize;
                let available = old + new_ready;
                let floor = (replicas - unavailable.min(replicas)) as usize;
                assert!(available >= floor, "{b:?}: too few available");
            }
        }
    }
}
