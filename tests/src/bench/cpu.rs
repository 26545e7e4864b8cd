//! CPU time of each process of the mesh over a measured interval, read from `/proc/<pid>/stat`:
//! where a message's CPU goes (broker, workers, fake LLM, balancer, load generator) and how many
//! of the machine's cores each part used.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second of `utime`/`stime` (`USER_HZ`: 100 on every Linux ABI Rust targets).
const TICKS_PER_S: f64 = 100.0;

/// Processes by role; a role may have several (the workers).
#[derive(Clone, Debug, Default)]
pub struct Roles(pub Vec<(String, u32)>);

/// CPU use of one role over an interval.
#[derive(Clone, Debug, Serialize)]
pub struct RoleUse {
    /// Cores busy on average (CPU seconds / wall seconds).
    pub cores: f64,
    /// CPU microseconds per answered message.
    pub us_per_message: f64,
}

/// A started measurement.
pub struct Sample {
    roles: Roles,
    at: Instant,
    ticks: BTreeMap<String, u64>,
}

fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may hold spaces: fields count from after its closing parenthesis
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn by_role(roles: &Roles) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (role, pid) in &roles.0 {
        if let Some(t) = ticks(*pid) {
            *out.entry(role.clone()).or_default() += t;
        }
    }
    out
}

impl Roles {
    /// Adds a process.
    pub fn add(&mut self, role: &str, pid: Option<u32>) {
        if let Some(pid) = pid {
            self.0.push((role.to_string(), pid));
        }
    }

    /// Starts measuring.
    pub fn start(&self) -> Sample {
        Sample {
            roles: self.clone(),
            at: Instant::now(),
            ticks: by_role(self),
        }
    }
}

impl Sample {
    /// CPU use per role (and `total`) since the start, per message of `messages`.
    pub fn finish(&self, messages: usize) -> BTreeMap<String, RoleUse> {
        let wall = self.at.elapsed().as_secs_f64().max(1e-3);
        let now = by_role(&self.roles);
        let mut out = BTreeMap::new();
        let mut total = 0.0;
        for (role, t) in &now {
            let secs = t.saturating_sub(self.ticks.get(role).copied().unwrap_or(0)) as f64 / TICKS_PER_S;
            total += secs;
            out.insert(role.clone(), use_of(secs, wall, messages));
        }
        out.insert("total".into(), use_of(total, wall, messages));
        out
    }
}

fn use_of(secs: f64, wall: f64, messages: usize) -> RoleUse {
    RoleUse {
        cores: secs / wall,
        us_per_message: secs * 1e6 / messages.max(1) as f64,
    }
}

/// The process listening on a loopback TCP port (the broker), from `ss`.
pub fn listener_pid(port: u16) -> Option<u32> {
    let out = std::process::Command::new("ss")
        .args(["-ltnpH", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("pid=")? + 4;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_cpu_is_accounted_per_role_and_message() {
        let mut roles = Roles::default();
        let me = std::process::id();
        roles.add("me", Some(me));
        roles.add("me again", Some(me));
        roles.add("absent", None);
        let s = roles.start();
        // burn until the kernel has charged 0.2 s of CPU to this process, however loaded the
        // machine is (the tests run in parallel)
        let from = ticks(me).expect("own /proc stat");
        let mut x = 0u64;
        while ticks(me).is_some_and(|t| t < from + 20) {
            for _ in 0..100_000 {
                x = x.wrapping_add(std::hint::black_box(1));
            }
        }
        let u = s.finish(10);
        assert!(x > 0);
        assert!(!u.contains_key("absent"), "{u:?}");
        // 0.2 s or more over 10 messages, counted once per role and summed in `total`
        assert!(u["me"].us_per_message >= 20_000.0, "{:?}", u["me"]);
        let total = u["me"].us_per_message + u["me again"].us_per_message;
        assert!((u["total"].us_per_message - total).abs() < 1e-6, "{u:?}");
        assert!(u["me"].cores > 0.0, "{:?}", u["me"]);
    }
}
