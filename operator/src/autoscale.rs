//! Load-driven replica counts for ChatAgents with `autoscaling.enabled`: pure, like the
//! planner. The rule is the HorizontalPodAutoscaler's: desired = ceil(current × load / target),
//! within a 10 % tolerance, clamped to [min, max]; scale-ups are immediate, a scale-down takes
//! the highest recommendation of the stabilization window, so a short lull removes nobody.

use std::collections::VecDeque;

use meshchat_crds::AutoscalingSpec;

/// Loads within this fraction of the target change nothing.
const TOLERANCE: f64 = 0.1;

/// Recent recommendations of one ChatAgent.
#[derive(Clone, Debug, Default)]
pub struct Autoscaler {
    /// (unix ms, recommended replicas), oldest first.
    history: VecDeque<(u64, i32)>,
}

impl Autoscaler {
    /// The replica count to run now. `mean_load` is the mean load factor of the live workers,
    /// `None` when none reported (then only the bounds apply).
    pub fn desired(
        &mut self,
        spec: &AutoscalingSpec,
        current: i32,
        mean_load: Option<f64>,
        now_ms: u64,
    ) -> i32 {
        let (min, max) = (spec.min_replicas.max(0), spec.max_replicas.max(spec.min_replicas));
        let raw = match mean_load {
            Some(load) if current > 0 && (load / spec.target_load - 1.0).abs() > TOLERANCE => {
                (f64::from(current) * load / spec.target_load).ceil() as i32
            }
            _ => current,
        };
        let recommended = raw.clamp(min, max);
        let window = u64::from(spec.scale_down_stabilization_seconds) * 1000;
        self.history.push_back((now_ms, recommended));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now_ms.saturating_sub(*t) > window)
        {
            self.history.pop_front();
        }
        if recommended >= current {
            return recommended;
        }
        // scale down only as far as every recommendation of the window allows
        let highest = self.history.iter().map(|(_, r)| *r).max().unwrap_or(recommended);
        highest.min(current).clamp(min, max)
    }
}

/// An autoscaler of the cluster's that scales a ChatAgent through its `/scale` subresource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct External {
    /// `HorizontalPodAutoscaler` or `ScaledObject`.
    pub kind: String,
    /// Its name (in the ChatAgent's namespace).
    pub name: String,
}

impl External {
    /// Its API group and version.
    pub fn api_version(&self) -> &'static str {
        if self.kind == "ScaledObject" {
            "keda.sh/v1alpha1"
        } else {
            "autoscaling/v2"
        }
    }

    /// What the status condition and the Event say.
    pub fn describe(&self) -> String {
        format!(
            "{} {} scales this ChatAgent through /scale; spec.autoscaling is not applied while it does",
            self.kind, self.name
        )
    }
}

/// Whether an autoscaler of the cluster's scales a ChatAgent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// This one does.
    Found(External),
    /// None does.
    NoneFound,
    /// It could not be told (why).
    Unknown(String),
}

/// The scale target of an HPA or a ScaledObject (`spec.scaleTargetRef`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleTarget {
    /// `group/version`; KEDA leaves it out for Deployments only.
    pub api_version: Option<String>,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
}

/// The first autoscaler (in the order given) whose target is ChatAgent `agent`.
pub fn external_for<'a>(
    agent: &str,
    candidates: impl IntoIterator<Item = (&'a str, &'a str, &'a ScaleTarget)>,
) -> Option<External> {
    candidates
        .into_iter()
        .find(|(_, _, t)| {
            t.kind == "ChatAgent"
                && t.name == agent
                && t.api_version
                    .as_deref()
                    .is_some_and(|v| v.split('/').next() == Some("meshchat.io"))
        })
        .map(|(kind, name, _)| External {
            kind: kind.to_string(),
            name: name.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_autoscalers_of_this_chatagent_count() {
        let target = |v: Option<&str>, kind: &str, name: &str| ScaleTarget {
            api_version: v.map(str::to_string),
            kind: kind.into(),
            name: name.into(),
        };
        let deployment = target(Some("apps/v1"), "Deployment", "support");
        let other = target(Some("meshchat.io/v1alpha1"), "ChatAgent", "sales");
        let foreign = target(Some("example.com/v1"), "ChatAgent", "support");
        let unversioned = target(None, "ChatAgent", "support");
        let ours = target(Some("meshchat.io/v1alpha1"), "ChatAgent", "support");
        let hpa = "HorizontalPodAutoscaler";
        assert_eq!(
            external_for(
                "support",
                [
                    (hpa, "web", &deployment),
                    (hpa, "sales", &other),
                    (hpa, "foreign", &foreign),
                    ("ScaledObject", "bare", &unversioned),
                ]
            ),
            None
        );
        let found = external_for(
            "support",
            [(hpa, "web", &deployment), ("ScaledObject", "load", &ours)],
        );
        assert_eq!(
            found,
            Some(External {
                kind: "ScaledObject".into(),
                name: "load".into()
            })
        );
        assert!(found.is_some_and(|e| e.describe().starts_with("ScaledObject load scales")));
    }

    fn spec(min: i32, max: i32, window_s: u32) -> AutoscalingSpec {
        AutoscalingSpec {
            enabled: true,
            min_replicas: min,
            max_replicas: max,
            target_load: 0.6,
            scale_down_stabilization_seconds: window_s,
        }
    }

    #[test]
    fn scales_up_at_once_and_down_only_after_the_window() {
        let s = spec(1, 10, 60);
        let mut a = Autoscaler::default();
        assert_eq!(a.desired(&s, 3, Some(0.9), 0), 5, "ceil(3 * 0.9 / 0.6)");
        assert_eq!(a.desired(&s, 5, Some(0.62), 1_000), 5, "within tolerance");
        // load drops: the window still holds the 5
        assert_eq!(a.desired(&s, 5, Some(0.12), 30_000), 5);
        assert_eq!(
            a.desired(&s, 5, Some(0.12), 60_500),
            5,
            "the 5 recommended at 1 s is in the window"
        );
        assert_eq!(
            a.desired(&s, 5, Some(0.12), 61_500),
            1,
            "a whole window of low load"
        );
    }

    #[test]
    fn bounds_hold_without_reports() {
        let s = spec(2, 4, 0);
        let mut a = Autoscaler::default();
        assert_eq!(a.desired(&s, 0, None, 0), 2);
        assert_eq!(a.desired(&s, 9, None, 1), 4);
        assert_eq!(a.desired(&s, 3, Some(5.0), 2), 4);
    }

    proptest! {
        #[test]
        fn always_within_bounds(min in 0..5i32, span in 0..10i32, current in 0..20i32,
                                loads in proptest::collection::vec(proptest::option::of(0.0..2.0f64), 1..20)) {
            let s = spec(min, min + span, 30);
            let mut a = Autoscaler::default();
            let mut cur = current;
            for (i, load) in loads.into_iter().enumerate() {
                let d = a.desired(&s, cur, load, i as u64 * 5_000);
                prop_assert!(d >= min && d <= min + span);
                cur = d;
            }
        }
    }
}
