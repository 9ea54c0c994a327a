//! Who may connect, publish and subscribe: anonymous on/off, users with PBKDF2-SHA256 password
//! hashes, and ACL topic patterns with `%u` (user name) and `%c` (client id) substitution.

use std::collections::HashMap;

use super::topic;

/// Prefix of a password hash line: `pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX`.
pub const HASH_SCHEME: &str = "pbkdf2-sha256";
/// Iterations `edgegate passwd` uses unless told otherwise. Each CONNECT with a password costs
/// this many HMAC-SHA256 rounds, done off the I/O threads.
pub const DEFAULT_ITERATIONS: u32 = 100_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// A stored password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str, iterations: u32) -> std::io::Result<PasswordHash> {
        let mut salt = vec![0u8; SALT_LEN];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut salt)?;
        let hash = derive(password.as_bytes(), &salt, iterations);
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }

    /// Parses a line written by [`PasswordHash::to_line`].
    pub fn parse(line: &str) -> Result<PasswordHash, String> {
        let bad = || {
            format!("`{line}` is not a password hash; expected {HASH_SCHEME}$ITERATIONS$SALT$HASH as printed by `edgegate passwd`")
        };
        let mut parts = line.split('$');
        if parts.next() != Some(HASH_SCHEME) {
            return Err(bad());
        }
        let iterations = parts
            .next()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(bad)?;
        let salt = parts.next().and_then(from_hex).ok_or_else(bad)?;
        let hash = parts
            .next()
            .and_then(from_hex)
            .filter(|h| h.len() == HASH_LEN)
            .ok_or_else(bad)?;
        if salt.is_empty() || parts.next().is_some() {
            return Err(bad());
        }
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }

    pub fn to_line(&self) -> String {
        format!(
            "{HASH_SCHEME}${}${}${}",
            self.iterations,
            to_hex(&self.salt),
            to_hex(&self.hash)
        )
    }

    /// Whether `password` matches, compared in constant time.
    pub fn verify(&self, password: &[u8]) -> bool {
        let got = derive(password, &self.salt, self.iterations);
        got.len() == self.hash.len()
            && got.iter().zip(&self.hash).fold(0, |d, (a, b)| d | (a ^ b)) == 0
    }
}

fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut out = vec![0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, &mut out);
    out
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// One ACL rule: the topics a client may publish to and the filters it may subscribe to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AclRule {
    /// `None`: applies to every client, anonymous ones included.
    pub user: Option<String>,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// `broker.auth` in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Clients without a user name may connect.
    pub anonymous: bool,
    pub users: HashMap<String, PasswordHash>,
    /// `None`: every client may publish and subscribe to anything. `Some`: only what a rule
    /// allows.
    pub acl: Option<Vec<AclRule>>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            anonymous: true,
            users: HashMap::new(),
            acl: None,
        }
    }
}

/// The result of checking CONNECT credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `verified`: the user name was checked against a password, so ACL rules for it and `%u`
    /// apply; otherwise the client is anonymous to the ACL.
    Allowed { verified: bool },
    /// CONNACK 0x04: unknown user or wrong password.
    BadCredentials,
    /// CONNACK 0x05: no user name while anonymous clients are refused.
    NotAuthorized,
}

impl AuthConfig {
    /// Checks CONNECT credentials; slow when a password is verified (PBKDF2), so call it from a
    /// blocking thread when [`AuthConfig::is_slow`].
    pub fn authenticate(&self, username: Option<&str>, password: Option<&[u8]>) -> Verdict {
        let Some(user) = username else {
            return if self.anonymous {
                Verdict::Allowed { verified: false }
            } else {
                Verdict::NotAuthorized
            };
        };
        match (self.users.get(user), password) {
            (Some(hash), Some(pw)) if hash.verify(pw) => Verdict::Allowed { verified: true },
            // No users configured: user names are not checked (and not trusted by the ACL).
            (None, _) if self.users.is_empty() && self.anonymous => {
                Verdict::Allowed { verified: false }
            }
            _ => Verdict::BadCredentials,
        }
    }

    /// Whether a password check is needed (the caller then moves it off the I/O threads).
    pub fn is_slow(&self, username: Option<&str>) -> bool {
        username.is_some_and(|u| self.users.contains_key(u))
    }

    pub fn may_publish(&self, username: Option<&str>, client_id: &str, topic_name: &str) -> bool {
        self.allowed(
            username,
            client_id,
            |r| &r.publish,
            |p| topic::matches(p, topic_name),
        )
    }

    /// A shared subscription is judged by its filter after `$share/{group}/`.
    pub fn may_subscribe(&self, username: Option<&str>, client_id: &str, filter: &str) -> bool {
        let filter = topic::share_parts(filter).map_or(filter, |(_, inner)| inner);
        self.allowed(username, client_id, |r| &r.subscribe, |p| covers(p, filter))
    }

    fn allowed(
        &self,
        username: Option<&str>,
        client_id: &str,
        patterns: impl Fn(&AclRule) -> &Vec<String>,
        test: impl Fn(&str) -> bool,
    ) -> bool {
        let Some(rules) = &self.acl else {
            return true;
        };
        rules
            .iter()
            .filter(|r| r.user.is_none() || r.user.as_deref() == username)
            .flat_map(|r| patterns(r).iter())
            .filter_map(|p| substitute(p, username, client_id))
            .any(|p| test(&p))
    }
}

/// Replaces `%u` and `%c`. `None` (the pattern does not apply) when a placeholder has no value,
/// or the value would change the pattern's levels (`/`, `+`, `#`): a client named `#` must not
/// be granted everything.
fn substitute(pattern: &str, username: Option<&str>, client_id: &str) -> Option<String> {
    let safe = |v: &str| !v.is_empty() && !v.contains(['/', '+', '#']);
    let mut out = pattern.to_owned();
    if out.contains("%u") {
        let user = username.filter(|u| safe(u))?;
        out = out.replace("%u", user);
    }
    if out.contains("%c") {
        if !safe(client_id) {
            return None;
        }
        out = out.replace("%c", client_id);
    }
    Some(out)
}

/// Whether every topic `filter` can match is matched by `pattern` (both valid filters).
pub fn covers(pattern: &str, filter: &str) -> bool {
    // As in matching: a leading wildcard does not reach `$` topics.
    if filter.starts_with('$') && pattern.starts_with(['+', '#']) {
        return false;
    }
    let mut p = pattern.split('/');
    let mut f = filter.split('/');
    loop {
        match (p.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(l)) if l != "#" => {}
            (Some(a), Some(b)) if a == b && b != "+" && b != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
