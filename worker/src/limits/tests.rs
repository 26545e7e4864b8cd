use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

#[test]
fn a_users_burst_then_rate_and_other_users_and_tenants_are_not_affected() {
    let limits = Limits::new(LimitSettings {
        user_messages_per_minute: 60,
        user_message_burst: 5,
        ..LimitSettings::default()
    });
    for _ in 0..5 {
        limits.admit_message("acme", "ann").expect("within the burst");
    }
    let over = limits.admit_message("acme", "ann").expect_err("over the burst");
    assert!(over.retry_after > Duration::ZERO && over.retry_after <= Duration::from_secs(1));
    assert!(over.what.contains("60 a minute per user"), "{}", over.what);
    limits.admit_message("acme", "bob").expect("another user");
    limits
        .admit_message("globex", "ann")
        .expect("the same name in another tenant");
    // reads have their own budget
    limits.admit_read("acme", "ann").expect("reads are not messages");
}

#[test]
fn a_tenant_limit_covers_all_its_users() {
    let limits = Limits::new(LimitSettings {
        tenant_messages_per_minute: 6,
        tenant_message_burst: 3,
        ..LimitSettings::default()
    });
    for u in ["a", "b", "c"] {
        limits
            .admit_message("acme", u)
            .expect("within the tenant's burst");
    }
    let over = limits.admit_message("acme", "d").expect_err("the tenant is over");
    assert!(over.what.contains("tenant \"acme\""), "{}", over.what);
    limits.admit_message("globex", "d").expect("another tenant");
}

#[test]
fn streams_are_counted_per_user_tenant_and_worker_and_given_back() {
    let limits = Arc::new(Limits::new(LimitSettings {
        user_streams: 2,
        tenant_streams: 3,
        worker_streams: 4,
        ..LimitSettings::default()
    }));
    let a1 = limits.open_stream("acme", "ann").expect("1");
    let _a2 = limits.open_stream("acme", "ann").expect("2");
    assert!(limits.open_stream("acme", "ann").is_err(), "user cap");
    let _b1 = limits.open_stream("acme", "bob").expect("3");
    assert!(limits.open_stream("acme", "cid").is_err(), "tenant cap");
    let _g1 = limits.open_stream("globex", "gus").expect("4");
    assert!(limits.open_stream("globex", "gil").is_err(), "worker cap");
    drop(a1);
    assert_eq!(limits.streams_open(), 3);
    limits
        .open_stream("globex", "gil")
        .expect("a place was given back");
}

#[test]
fn an_exhausted_token_quota_waits_until_it_refills() {
    let t0 = Instant::now();
    let mut b = TokenBudget::new(600); // 10 a second
    assert_eq!(b.wait("acme", t0), Duration::ZERO);
    b.charge("acme", 650, t0); // 50 owed
    let wait = b.wait("acme", t0);
    assert!((wait.as_secs_f64() - 5.1).abs() < 0.01, "{wait:?}");
    assert_eq!(b.wait("globex", t0), Duration::ZERO, "per tenant");
    assert_eq!(b.wait("acme", t0 + Duration::from_secs(6)), Duration::ZERO);
    b.forget_full(t0 + Duration::from_secs(10));
    assert_eq!(b.len(), 1, "not full yet");
    b.forget_full(t0 + Duration::from_secs(66));
    assert!(b.is_empty());
}

proptest! {
    /// Over any sequence of charges, what a tenant is allowed to start within a window never
    /// exceeds a minute's quota plus the window's refill plus the last answer's overshoot.
    #[test]
    fn the_token_quota_holds_over_time(charges in prop::collection::vec((0u64..400, 0u64..5000), 1..200)) {
        let per_minute = 6000u64;
        let t0 = Instant::now();
        let mut b = TokenBudget::new(per_minute);
        let mut now = t0;
        let mut used = 0u64;
        let mut largest = 0u64;
        for (tokens, gap_ms) in charges {
            now += Duration::from_millis(gap_ms);
            now += b.wait("t", now);
            prop_assert_eq!(b.wait("t", now), Duration::ZERO);
            b.charge("t", tokens, now);
            used += tokens;
            largest = largest.max(tokens);
        }
        let elapsed = now.duration_since(t0).as_secs_f64();
        let allowed = per_minute as f64 + elapsed * per_minute as f64 / 60.0 + largest as f64 + 1.0;
        prop_assert!(used as f64 <= allowed, "{used} > {allowed}");
    }
}
