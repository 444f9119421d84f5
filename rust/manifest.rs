//! The bundle manifest: every member's size, crc32, sha256 and blake3, and the archive's sha256
//! midstates. This module owns the format, both writing and parsing; `VERSION` is its one
//! version number.
//!
//! ```text
//! {"members":{NAME:{"blake3":HEX,"crc32":N,"sha256":HEX,"size":N},...},
//!  "sha256_midstates":{"states":[HEX,...],"step":N},"version":1}
//! ```
//!
//! Written with members in archive order, keys sorted and no whitespace, so the same members
//! give the same bytes. Parsing accepts any JSON spelling of the same document (it is untrusted
//! input: every field is checked) and refuses any other version.
#![deny(clippy::arithmetic_side_effects)]

use crate::hash::hex;
use crate::json::{self, Value};
use crate::sha256::{state_bytes, state_from_bytes};

/// The manifest format's version.
pub const VERSION: u64 = 1;
/// The member that holds the manifest: the last one of a bundle.
pub const MEMBER: &str = "modelcas-manifest.json";

/// What the manifest records of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    pub crc32: u32,
    pub sha256: [u8; 32],
    pub blake3: [u8; 32],
}

/// The archive's sha256 state after every `step` bytes: `states[i]` after `(i + 1) * step`.
/// They let a reader check the sidecar in parallel segments (see `hash::sha256_chained`). The
/// writer keeps at most `MIDSTATES_MAX`: past that, every other one is dropped and the step
/// doubles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Midstates {
    pub step: u64,
    pub states: Vec<[u32; 8]>,
}

pub(crate) const MIDSTATES_MAX: usize = if cfg!(test) { 8 } else { 1024 };
/// The first step between midstates: segments big enough to stream well.
pub(crate) const MIDSTATE_STEP: u64 = if cfg!(test) { 4 << 10 } else { 16 << 20 };

impl Default for Midstates {
    fn default() -> Self {
        Midstates {
            step: MIDSTATE_STEP,
            states: Vec::new(),
        }
    }
}

impl Midstates {
    /// The next offset at which the writer takes a state.
    pub(crate) fn next(&self) -> u64 {
        let taken = u64::try_from(self.states.len()).unwrap_or(u64::MAX);
        taken.saturating_add(1).saturating_mul(self.step)
    }

    pub(crate) fn push(&mut self, state: [u32; 8]) {
        self.states.push(state);
        if self.states.len() == MIDSTATES_MAX {
            self.states = self.states.iter().skip(1).step_by(2).copied().collect();
            self.step = self.step.saturating_mul(2);
        }
    }
}

/// A bundle's manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// In archive order.
    pub members: Vec<Entry>,
    /// Absent in bundles written before midstates were recorded.
    pub midstates: Option<Midstates>,
}

impl Manifest {
    /// The entry for the member with exactly this name.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.members.iter().find(|e| e.name == name)
    }

    /// The canonical JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"members\":{");
        for (i, e) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json::write_string(&mut out, &e.name);
            out.push_str(&format!(
                ":{{\"blake3\":\"{}\",\"crc32\":{},\"sha256\":\"{}\",\"size\":{}}}",
                hex(&e.blake3),
                e.crc32,
                hex(&e.sha256),
                e.size
            ));
        }
        out.push('}');
        if let Some(m) = &self.midstates {
            out.push_str(",\"sha256_midstates\":{\"states\":[");
            for (i, state) in m.states.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!("\"{}\"", hex(&state_bytes(state))));
            }
            out.push_str(&format!("],\"step\":{}}}", m.step));
        }
        out.push_str(&format!(",\"version\":{VERSION}}}"));
        out
    }

    /// Parse and check a manifest; the error says what is wrong with it.
    pub fn parse(text: &[u8]) -> Result<Manifest, String> {
        let doc = json::parse(text)?;
        let Value::Object(_) = doc else {
            return Err(format!("expected an object, found {}", doc.kind()));
        };
        match doc.get("version") {
            Some(Value::Int(VERSION)) => {}
            Some(Value::Int(v)) => {
                return Err(format!(
                    "manifest version {v} is not one this modelcas reads ({VERSION})"
                ))
            }
            _ => return Err("it has no version".into()),
        }
        let Some(Value::Object(members)) = doc.get("members") else {
            return Err("\"members\" is not an object".into());
        };
        let members = members
            .iter()
            .map(|(name, v)| entry(name, v).map_err(|why| format!("member {name:?}: {why}")))
            .collect::<Result<Vec<_>, _>>()?;
        let midstates = match doc.get("sha256_midstates") {
            None => None,
            Some(v) => Some(midstates(v).map_err(|why| format!("sha256_midstates: {why}"))?),
        };
        Ok(Manifest { members, midstates })
    }
}

fn entry(name: &str, v: &Value) -> Result<Entry, String> {
    let int = |key: &str| match v.get(key) {
        Some(Value::Int(n)) => Ok(*n),
        _ => Err(format!("\"{key}\" is not a non-negative integer")),
    };
    let digest = |key: &str| match v.get(key) {
        Some(Value::Str(s)) => {
            parse_hex32(s).ok_or_else(|| format!("\"{key}\" is not 64 hex digits"))
        }
        _ => Err(format!("\"{key}\" is not a string")),
    };
    Ok(Entry {
        name: name.to_string(),
        size: int("size")?,
        crc32: u32::try_from(int("crc32")?).map_err(|_| "\"crc32\" is over 32 bits")?,
        sha256: digest("sha256")?,
        blake3: digest("blake3")?,
    })
}

fn midstates(v: &Value) -> Result<Midstates, String> {
    let step = match v.get("step") {
        Some(Value::Int(n)) if *n > 0 && n.is_multiple_of(64) => *n,
        _ => return Err("step is not a positive multiple of 64".into()),
    };
    let Some(Value::Array(items)) = v.get("states") else {
        return Err("states is not an array".into());
    };
    let states = items
        .iter()
        .map(|s| match s {
            Value::Str(h) => parse_hex32(h).map(|b| state_from_bytes(&b)),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .ok_or("states are not 64-digit hex strings")?;
    Ok(Midstates { step, states })
}

/// 64 lowercase hex digits to bytes.
pub fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let d = |c: u8| match c {
            b'0'..=b'9' => c.checked_sub(b'0'),
            b'a'..=b'f' => c.checked_sub(b'a' - 10),
            _ => None,
        };
        let (hi, lo) = (d(*pair.first()?)?, d(*pair.get(1)?)?);
        *o = hi << 4 | lo;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            members: vec![
                Entry {
                    name: "models/a \"b\".bin".into(),
                    size: 7,
                    crc32: 0xdead_beef,
                    sha256: [1; 32],
                    blake3: [0xab; 32],
                },
                Entry {
                    name: "config.yml".into(),
                    size: 0,
                    crc32: 0,
                    sha256: [2; 32],
                    blake3: [3; 32],
                },
            ],
            midstates: Some(Midstates {
                step: 4096,
                states: vec![[7; 8], [0x0102_0304; 8]],
            }),
        }
    }

    #[test]
    fn round_trips_and_is_canonical() {
        let m = sample();
        let text = m.to_json();
        assert!(text.starts_with("{\"members\":{\"models/a \\\"b\\\".bin\":{\"blake3\":\"abab"));
        assert!(text.ends_with("\"step\":4096},\"version\":1}"), "{text}");
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), m);
        let plain = Manifest {
            midstates: None,
            ..sample()
        };
        assert_eq!(Manifest::parse(plain.to_json().as_bytes()).unwrap(), plain);
        assert_eq!(m.get("config.yml").unwrap().sha256, [2; 32]);
    }

    #[test]
    fn accepts_other_spellings_of_the_same_document() {
        let text = format!(
            "{{\"version\": 1, \"members\": {{\"x\": {{\"size\": 3, \"crc32\": 5, \
             \"sha256\": \"{}\", \"blake3\": \"{}\"}}}}}}",
            "0".repeat(64),
            "f".repeat(64)
        );
        let m = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(m.members[0].blake3, [0xff; 32]);
        assert_eq!(m.midstates, None);
    }

    #[test]
    fn refuses_bad_fields() {
        let good = sample().to_json();
        for (from, to, want) in [
            ("\"version\":1", "\"version\":2", "version 2 is not one"),
            ("\"version\":1", "\"v\":1", "no version"),
            ("\"size\":7", "\"size\":-7", "negative"),
            (
                "\"size\":7",
                "\"size\":\"7\"",
                "\"size\" is not a non-negative integer",
            ),
            (
                "\"crc32\":3735928559",
                "\"crc32\":4294967296",
                "over 32 bits",
            ),
            (
                "\"sha256\":\"0101",
                "\"sha256\":\"0G01",
                "\"sha256\" is not 64 hex digits",
            ),
            ("\"step\":4096", "\"step\":100", "positive multiple of 64"),
            ("[\"0000", "[7,\"0000", "64-digit hex"),
        ] {
            let bad = good.replacen(from, to, 1);
            assert_ne!(bad, good, "{from}");
            let err = Manifest::parse(bad.as_bytes()).unwrap_err();
            assert!(err.contains(want), "{to}: {err}");
        }
        assert!(Manifest::parse(b"[]")
            .unwrap_err()
            .contains("expected an object"));
        assert!(
            parse_hex32(&"A".repeat(64)).is_none(),
            "uppercase is not canonical"
        );
    }

    #[test]
    fn midstates_thin_out_past_the_cap() {
        let mut m = Midstates::default();
        for i in 0..u32::try_from(MIDSTATES_MAX).unwrap() {
            assert_eq!(m.next(), (u64::from(i) + 1) * m.step);
            m.push([i; 8]);
        }
        assert_eq!(m.step, 2 * MIDSTATE_STEP);
        assert_eq!(m.states.len(), MIDSTATES_MAX / 2);
        assert_eq!(m.states[0], [1; 8]);
    }
}
