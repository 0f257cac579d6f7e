//! The file source: a JSON directory (SPEC §4) with Graph field names, re-read at every cycle.
//!
//! The file's JSON shape is private to this module. A broken file (bad JSON, a member id with
//! no user or group, a duplicate id) fails the whole read with the place named.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use rustc_hash::FxHashSet;
use serde::Deserialize;
use serde_json::Value;

use super::{Eligibility, Error, Source};
use crate::model::{AttrNames, Directory, IdText, Interner, SourceGroup, SourceId, SourceUser};

/// Reads a directory file at every snapshot.
#[derive(Clone, Debug)]
pub struct FileSource {
    path: PathBuf,
    /// Modification time and length of the file as of the last successful read.
    read: Arc<std::sync::Mutex<Option<Stamp>>>,
}

/// What tells a changed file from an unchanged one without reading it.
type Stamp = (std::time::SystemTime, u64);

impl FileSource {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            read: Arc::default(),
        }
    }

    async fn stamp(&self) -> Option<Stamp> {
        let meta = tokio::fs::metadata(&self.path).await.ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Source for FileSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Directory, Error>> {
        Box::pin(async move {
            // Stamped before the read: a file changed during it looks changed next time.
            let stamp = self.stamp().await;
            let text = tokio::fs::read_to_string(&self.path)
                .await
                .map_err(|source| Error::Read {
                    path: self.path.clone(),
                    source,
                })?;
            let dir = parse(&self.path, &text)?;
            *crate::locks::lock(&self.read, "directory file stamp") = stamp;
            Ok(dir)
        })
    }

    /// `Current` while the file's modification time and length are those of the last read.
    fn eligibility<'a>(
        &'a self,
        _group: &'a SourceId,
        _user: &'a SourceId,
    ) -> BoxFuture<'a, Eligibility> {
        Box::pin(async move {
            let last = *crate::locks::lock(&self.read, "directory file stamp");
            match (last, self.stamp().await) {
                (Some(last), Some(now)) if last == now => Eligibility::Current,
                _ => Eligibility::Unknown,
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDirectory<'a> {
    #[serde(default, borrow)]
    users: Vec<FileUser<'a>>,
    #[serde(default, borrow)]
    groups: Vec<FileGroup<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGroup<'a> {
    id: String,
    #[serde(rename = "displayName")]
    display_name: String,
    /// Borrowed from the file's text: a tenant's file lists hundreds of thousands.
    #[serde(default, borrow)]
    members: Vec<IdText<'a>>,
    #[serde(default, borrow)]
    eligible: Vec<IdText<'a>>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

/// One user object of the file, as read: its attribute names borrowed from the text (then
/// shared by every user, see [`AttrNames`]), not a `String` each.
struct FileUser<'a>(Vec<(Cow<'a, str>, Value)>);

impl<'de: 'a, 'a> Deserialize<'de> for FileUser<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Object<'a> {
            type Value = FileUser<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a user object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(12));
                while let Some(IdText(name)) = map.next_key()? {
                    pairs.push((name, map.next_value()?));
                }
                Ok(FileUser(pairs))
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
    }
}

/// Parses and validates directory JSON; `path` is only used in messages.
///
/// # Errors
/// [`Error::Syntax`] with line and column, or [`Error::Invalid`] naming the entry at fault.
pub fn parse(path: &Path, text: &str) -> Result<Directory, Error> {
    let raw: FileDirectory = serde_json::from_str(text).map_err(|e| Error::Syntax {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e
            .to_string()
            .split(" at line")
            .next()
            .unwrap_or_default()
            .to_owned(),
    })?;
    let invalid = |at: String, message: String| Error::Invalid {
        path: path.to_owned(),
        at,
        message,
    };
    let mut dir = Directory::default();
    let mut names = AttrNames::default();
    let mut users = Vec::with_capacity(raw.users.len());
    for (i, FileUser(pairs)) in raw.users.into_iter().enumerate() {
        let mut attrs = names.keyed(pairs);
        let id = match attrs.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(invalid(
                    format!("users[{i}]"),
                    "\"id\" must be a non-empty string".into(),
                ));
            }
        };
        let at = || format!("users[{i}] {id:?}");
        match attrs.get("userPrincipalName") {
            Some(Value::String(s)) if !s.is_empty() => {}
            _ => {
                return Err(invalid(
                    at(),
                    "\"userPrincipalName\" must be a non-empty string".into(),
                ));
            }
        }
        if let Some(v) = attrs.get("accountEnabled")
            && !v.is_boolean()
        {
            return Err(invalid(
                at(),
                "\"accountEnabled\" must be true or false".into(),
            ));
        }
        attrs.remove("id");
        let sid = SourceId::new(id);
        users.push((sid.clone(), i, SourceUser { id: sid, attrs }));
    }
    // Sorted once and built whole, not inserted one by one; a duplicate is then a neighbour.
    users.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    // The first repeat in the file's order is the one named.
    if let Some(w) = users
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .min_by_key(|w| w[1].1)
    {
        return Err(invalid(
            format!("users[{}] {:?}", w[1].1, w[1].0.as_str()),
            "duplicate user id".into(),
        ));
    }
    dir.users = users.into_iter().map(|(id, _, u)| (id, u)).collect();
    // Every id is held once, and each membership is checked and shared by one lookup: a
    // tenant's file has hundreds of thousands.
    let mut held = Interner::holding(dir.users.keys());
    let mut group_ids = Vec::with_capacity(raw.groups.len());
    for (i, g) in raw.groups.iter().enumerate() {
        let at = || format!("groups[{i}] {:?}", g.id);
        if g.id.is_empty() {
            return Err(invalid(
                format!("groups[{i}]"),
                "\"id\" must be a non-empty string".into(),
            ));
        }
        if dir.users.contains_key(g.id.as_str()) {
            return Err(invalid(at(), "this id is also a user's id".into()));
        }
        if held.get(&g.id).is_some() {
            return Err(invalid(at(), "duplicate group id".into()));
        }
        group_ids.push(held.intern(&g.id));
    }
    // Second pass, once every id is known: members may be users or (nested) groups.
    for ((i, g), sid) in raw.groups.into_iter().enumerate().zip(group_ids) {
        let mut members = Vec::with_capacity(g.members.len());
        // Held ids are one text each: a member listed twice is the same text twice.
        let mut seen: FxHashSet<*const u8> = FxHashSet::default();
        seen.reserve(g.members.len());
        for (j, m) in g.members.iter().map(IdText::as_str).enumerate() {
            let Some(id) = held.get(m) else {
                return Err(invalid(
                    format!("groups[{i}] {:?} members[{j}]", g.id),
                    format!("{m:?} is not the id of a user or group in this file"),
                ));
            };
            if !seen.insert(id.as_str().as_ptr()) {
                return Err(invalid(
                    format!("groups[{i}] {:?} members[{j}]", g.id),
                    format!("{m:?} is listed twice"),
                ));
            }
            members.push(id);
        }
        let mut eligible = Vec::with_capacity(g.eligible.len());
        for (j, m) in g.eligible.iter().map(IdText::as_str).enumerate() {
            let Some((id, _)) = dir.users.get_key_value(m) else {
                return Err(invalid(
                    format!("groups[{i}] {:?} eligible[{j}]", g.id),
                    format!("{m:?} is not the id of a user in this file"),
                ));
            };
            eligible.push(id.clone());
        }
        dir.groups.insert(
            sid.clone(),
            SourceGroup {
                id: sid,
                display_name: g.display_name,
                members,
                eligible,
            },
        );
    }
    Ok(dir)
}

/// Writes a directory back in the file format (used by the demo and the generator).
pub fn to_json(dir: &Directory) -> Value {
    let users: Vec<Value> = dir
        .users
        .values()
        .map(|u| {
            let mut m = serde_json::Map::new();
            m.insert("id".into(), Value::String(u.id.to_string()));
            m.extend(u.attrs.iter().map(|(k, v)| (k.to_string(), v.clone())));
            Value::Object(m)
        })
        .collect();
    let groups: Vec<Value> = dir
        .groups
        .values()
        .map(|g| {
            serde_json::json!({
                "id": g.id.as_str(),
                "displayName": g.display_name,
                "members": g.members.iter().map(SourceId::as_str).collect::<Vec<_>>(),
                "eligible": g.eligible.iter().map(SourceId::as_str).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "users": users, "groups": groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Directory, Error> {
        parse(Path::new("dir.json"), text)
    }

    #[test]
    fn parses_spec_example() {
        let d = p(r#"{"users":[{"id":"u-alice","userPrincipalName":"alice@contoso.example","accountEnabled":true,"department":"R&D"}],
                     "groups":[{"id":"g1","displayName":"CRM Users","members":["u-alice"]},
                               {"id":"g2","displayName":"CRM Admins","members":[],"eligible":["u-alice"]}]}"#).unwrap();
        assert_eq!(d.users.len(), 1);
        assert_eq!(d.groups[&SourceId::from("g2")].eligible.len(), 1);
        assert!(!d.users[&SourceId::from("u-alice")].attrs.contains_key("id"));
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let e = p("{\n \"users\": [\n  {\"id\": \"u1\",}\n ]\n}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("dir.json:3:"), "{e}");
    }

    #[test]
    fn unknown_member_is_named() {
        let e = p(r#"{"users":[{"id":"u1","userPrincipalName":"a@x"}],"groups":[{"id":"g1","displayName":"G","members":["u1","u-ghost"]}]}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            r#"dir.json: groups[0] "g1" members[1]: "u-ghost" is not the id of a user or group in this file"#
        );
    }

    #[test]
    fn duplicates_are_errors() {
        let e = p(r#"{"users":[{"id":"u1","userPrincipalName":"a@x"},{"id":"u1","userPrincipalName":"b@x"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#"users[1] "u1": duplicate user id"#), "{e}");
        let e = p(r#"{"groups":[{"id":"g","displayName":"A"},{"id":"g","displayName":"B"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate group id"), "{e}");
    }

    #[test]
    fn members_share_their_users_text_and_a_repeat_is_named() {
        let d = p(r#"{"users":[{"id":"u2","userPrincipalName":"b@x"},{"id":"u1","userPrincipalName":"a@x"}],
                     "groups":[{"id":"g1","displayName":"G","members":["u1","g2"],"eligible":["u2"]},
                               {"id":"g2","displayName":"H","members":["u2"]}]}"#)
        .unwrap();
        let key = |id: &str| d.users.get_key_value(id).unwrap().0;
        let g1 = &d.groups["g1"];
        assert!(g1.members[0].shares_text(key("u1")));
        assert!(g1.members[1].shares_text(d.groups.get_key_value("g2").unwrap().0));
        assert!(g1.eligible[0].shares_text(key("u2")));
        assert!(d.groups["g2"].members[0].shares_text(key("u2")));
        // Attribute names are shared by every user.
        let name = |id: &str| {
            d.users[id]
                .attrs
                .get_key_value("userPrincipalName")
                .unwrap()
                .0
                .clone()
        };
        assert!(Arc::ptr_eq(&name("u1"), &name("u2")));

        let e = p(r#"{"users":[{"id":"u1","userPrincipalName":"a@x"}],"groups":[{"id":"g1","displayName":"G","members":["u1","u1"]}]}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            r#"dir.json: groups[0] "g1" members[1]: "u1" is listed twice"#
        );
        // Of several repeated ids, the first repeat in the file is named.
        let e = p(r#"{"users":[{"id":"b","userPrincipalName":"1@x"},{"id":"a","userPrincipalName":"2@x"},{"id":"b","userPrincipalName":"3@x"},{"id":"a","userPrincipalName":"4@x"}]}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(e, r#"dir.json: users[2] "b": duplicate user id"#);
    }

    #[test]
    fn missing_user_principal_name_is_an_error() {
        let e = p(r#"{"users":[{"id":"u1"}]}"#).unwrap_err().to_string();
        assert!(e.contains("userPrincipalName"), "{e}");
    }

    #[test]
    fn round_trips_through_to_json() {
        let text = r#"{"users":[{"id":"u1","userPrincipalName":"a@x","jobTitle":"Eng"}],"groups":[{"id":"g1","displayName":"G","members":["u1"],"eligible":[]}]}"#;
        let d = p(text).unwrap();
        let again = p(&to_json(&d).to_string()).unwrap();
        assert_eq!(d, again);
    }
}
