//! The sharing rule (docs/contract.md) against its definition: arbitrary
//! requests, claims and mounts through `sharing::check`.
//!
//! Checked, for every non-Force request:
//! - `Ok` ⇒ no mount on a requested key is read-write, and there is no mount
//!   on a requested key at all if the request is Write;
//! - `Ok` ⇒ no claim on a requested key from another VM (per `same_vm`,
//!   ignoring our own backend) holds it Write, and if the request is Write
//!   no such claim exists at all;
//! - `Err` ⇒ the refusal names the first offender, which really offends
//!   (so `check` refuses exactly when the definition says so);
//! - the message for people is one line.
//!
//! Plus: `same_vm` is symmetric and a frontend with an identity is the same
//! VM as itself; `DevNum` text and `dev_t` forms round-trip; the mountinfo
//! parser takes any text.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use xenblock::sharing::{self, Claim, DevNum, Key, Mode, Mount, Refusal, Request, VmIdentity};

/// Small values collide often, which is where the rule is interesting.
#[derive(Arbitrary, Debug)]
enum Text {
    Small(u8),
    Raw(String),
}

impl Text {
    fn get(&self, prefix: &str) -> String {
        match self {
            Text::Small(n) => format!("{prefix}{}", n % 4),
            Text::Raw(s) => s.clone(),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum AMode {
    Read,
    Write,
    Force,
}

impl AMode {
    fn get(&self) -> Mode {
        match self {
            AMode::Read => Mode::Read,
            AMode::Write => Mode::Write,
            AMode::Force => Mode::Force,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum AKey {
    Dev(u8, u8),
    File(u8, u8),
    BigDev(u32, u32),
}

impl AKey {
    fn get(&self) -> Key {
        match *self {
            AKey::Dev(a, b) => Key::Dev(DevNum {
                major: u32::from(a % 3),
                minor: u32::from(b % 3),
            }),
            AKey::File(d, i) => Key::File {
                dev: u64::from(d % 3),
                ino: u64::from(i % 3),
            },
            AKey::BigDev(major, minor) => Key::Dev(DevNum { major, minor }),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct AId {
    vm: Option<Text>,
    target_vm: Option<Text>,
}

impl AId {
    fn get(&self) -> VmIdentity {
        VmIdentity {
            vm: self.vm.as_ref().map(|t| t.get("/vm/")),
            target_vm: self.target_vm.as_ref().map(|t| t.get("/vm/")),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct AClaim {
    backend: Text,
    domid: Text,
    key: AKey,
    mode: AMode,
    identity: AId,
}

#[derive(Arbitrary, Debug)]
struct AMount {
    dev: AKey,
    mount_point: String,
    read_only: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    backend: Text,
    target: String,
    mode: AMode,
    identity: AId,
    keys: Vec<AKey>,
    claims: Vec<AClaim>,
    mounts: Vec<AMount>,
    mountinfo: String,
}

const BACKEND: &str = "backend/vbd/";

fn mount_offends(req: &Request, m: &Mount) -> bool {
    req.keys.contains(&Key::Dev(m.dev)) && (req.mode == Mode::Write || !m.read_only)
}

fn claim_offends(req: &Request, c: &Claim) -> bool {
    c.backend != req.backend
        && req.keys.contains(&c.key)
        && !sharing::same_vm(&req.identity, &c.identity)
        && (req.mode == Mode::Write || c.mode == Mode::Write)
}

fuzz_target!(|inp: Input| {
    let req = Request {
        backend: inp.backend.get(BACKEND),
        target: inp.target.clone(),
        mode: inp.mode.get(),
        identity: inp.identity.get(),
        keys: inp.keys.iter().map(AKey::get).collect(),
    };
    let claims: Vec<Claim> = inp
        .claims
        .iter()
        .map(|c| Claim {
            backend: c.backend.get(BACKEND),
            domid: c.domid.get(""),
            key: c.key.get(),
            mode: c.mode.get(),
            identity: c.identity.get(),
        })
        .collect();
    let mounts: Vec<Mount> = inp
        .mounts
        .iter()
        .map(|m| Mount {
            dev: match m.dev.get() {
                Key::Dev(d) => d,
                Key::File { dev, ino } => DevNum {
                    major: dev as u32,
                    minor: ino as u32,
                },
            },
            mount_point: m.mount_point.clone(),
            read_only: m.read_only,
        })
        .collect();

    let verdict = sharing::check(&req, &mounts, &claims);

    if req.mode == Mode::Force {
        assert_eq!(verdict, Ok(()), "mode ! skips all checks");
    } else {
        match &verdict {
            Ok(()) => {
                for m in &mounts {
                    if req.keys.contains(&Key::Dev(m.dev)) {
                        assert!(m.read_only, "passed over a read-write mount {m:?}");
                        assert_ne!(req.mode, Mode::Write, "write over a mount {m:?}");
                    }
                }
                for c in &claims {
                    if c.backend != req.backend
                        && req.keys.contains(&c.key)
                        && !sharing::same_vm(&req.identity, &c.identity)
                    {
                        assert_ne!(c.mode, Mode::Write, "another VM holds it rw: {c:?}");
                        assert_ne!(req.mode, Mode::Write, "rw while another VM holds it: {c:?}");
                    }
                }
            }
            Err(Refusal::Local {
                dev,
                mount_point,
                read_only,
            }) => {
                let first = mounts
                    .iter()
                    .find(|m| mount_offends(&req, m))
                    .expect("a local refusal has an offending mount");
                assert_eq!(
                    (&first.dev, &first.mount_point, &first.read_only),
                    (dev, mount_point, read_only)
                );
            }
            Err(Refusal::Guest {
                backend,
                domid,
                key,
                mode,
            }) => {
                assert!(
                    !mounts.iter().any(|m| mount_offends(&req, m)),
                    "mounts are checked first"
                );
                let first = claims
                    .iter()
                    .find(|c| claim_offends(&req, c))
                    .expect("a guest refusal has an offending claim");
                assert_eq!(
                    (&first.backend, &first.domid, &first.key, &first.mode),
                    (backend, domid, key, mode)
                );
            }
        }
        // Refuses exactly when something offends.
        let offends = mounts.iter().any(|m| mount_offends(&req, m))
            || claims.iter().any(|c| claim_offends(&req, c));
        assert_eq!(verdict.is_err(), offends);
    }
    if let Err(r) = &verdict {
        let msg = r.message(&req);
        assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
    }

    // same_vm: symmetric; reflexive exactly when there is an identity.
    for c in &claims {
        assert_eq!(
            sharing::same_vm(&req.identity, &c.identity),
            sharing::same_vm(&c.identity, &req.identity)
        );
    }
    let id = &req.identity;
    assert_eq!(
        sharing::same_vm(id, id),
        id.vm.is_some() || id.target_vm.is_some()
    );

    // Device numbers: the physical-device text and dev_t forms round-trip.
    for k in &req.keys {
        if let Key::Dev(d) = k {
            assert_eq!(DevNum::parse_hex(&d.to_string()), Some(*d));
            assert_eq!(DevNum::from_dev_t(d.to_dev_t()), *d);
        }
        let _ = k.to_string();
    }
    for m in xenblock::sys::mountinfo::parse(&inp.mountinfo) {
        let _ = DevNum::parse_decimal(&format!("{}:{}", m.dev.major, m.dev.minor));
    }
});
