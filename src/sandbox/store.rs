//! The sandbox's in-memory resource store: Users and Groups with their indexes.
//!
//! Lookups a provisioning client makes are indexed: by id, by case-folded `userName`, by
//! `externalId`, by case-folded `displayName`, by case-folded email value, and group
//! membership in both directions (group → members, user → groups). Listing order is a
//! vector of ids in creation order with lazy compaction, so a page is a slice and a paged
//! walk over many users is linear overall. Nothing here does IO or locking; the HTTP layer
//! holds the store behind a mutex for the duration of one synchronous call.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::error::ScimError;
use super::filter::{AttrPath, Comparison, parse_filter};
use super::patch::{self, GroupStep, MemberOp, Operation};
use super::quirks::Quirks;
use super::schema::{
    ENTERPRISE_USER_SCHEMA, Kind, LIST_RESPONSE_SCHEMA, canonicalize, get_ci, key_ci,
};

/// Largest page a list request returns (`filter.maxResults` in `/ServiceProviderConfig`).
pub(crate) const MAX_RESULTS: usize = 1000;
/// Page size when the request gives no `count`.
pub(crate) const DEFAULT_COUNT: usize = 100;

/// Case folding for attributes with `caseExact: false`.
fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// Server-maintained metadata of one resource.
#[derive(Debug, Clone)]
struct Meta {
    /// Creation sequence number (orders filtered results).
    seq: u64,
    created: String,
    last_modified: String,
    version: u64,
}

/// One stored resource. `attrs` excludes `id`, `meta`, `schemas` and (for groups) members.
#[derive(Debug, Clone)]
struct Rec {
    meta: Meta,
    attrs: Map<String, Value>,
    /// Member user ids (groups only). Sorted, so rendering needs no sort.
    members: BTreeSet<String>,
}

/// Ids in creation order; deleted ids stay until the next listing compacts them away.
#[derive(Debug, Default)]
struct Order {
    ids: Vec<String>,
    stale: usize,
}

impl Order {
    fn compact(&mut self, live: &HashMap<String, Rec>) {
        if self.stale > 0 {
            self.ids.retain(|id| live.contains_key(id));
            self.stale = 0;
        }
    }
}

/// How to render resources: base URL and the `attributes`/`excludedAttributes` selection.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    /// Base URL of the SCIM service, e.g. `http://127.0.0.1:8080/scim/v2`.
    base: String,
    /// Top-level attributes to return (case-folded keys), or `None` for all.
    attributes: Option<Vec<String>>,
    /// Top-level attributes to leave out (case-folded keys).
    excluded: Vec<String>,
}

impl View {
    /// A view with every attribute.
    pub(crate) fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            attributes: None,
            excluded: Vec::new(),
        }
    }

    /// Applies comma-separated `attributes` / `excludedAttributes` query parameters.
    pub(crate) fn select(
        mut self,
        kind: Kind,
        attributes: Option<&str>,
        excluded: Option<&str>,
    ) -> Self {
        let split = |list: &str| -> Vec<String> {
            list.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| Self::top_level(e, kind))
                .collect()
        };
        self.attributes = attributes.map(split);
        self.excluded = excluded.map(split).unwrap_or_default();
        self
    }

    /// Reduces a selection entry (`urn:…:User:name.givenName`) to a case-folded top-level key.
    fn top_level(entry: &str, kind: Kind) -> String {
        let core = format!("{}:", kind.core_schema().to_lowercase());
        let lower = entry.to_lowercase();
        let lower = lower.strip_prefix(&core).unwrap_or(&lower).to_owned();
        if lower.starts_with("urn:") {
            let ext = ENTERPRISE_USER_SCHEMA.to_lowercase();
            if lower.starts_with(&ext) {
                return ext;
            }
            return lower;
        }
        lower
            .split(['.', '['])
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    fn wants(&self, key: &str) -> bool {
        if self.attributes.is_none() && self.excluded.is_empty() {
            return true;
        }
        let key = key.to_lowercase();
        if key == "id" || key == "schemas" {
            return true;
        }
        if self.excluded.contains(&key) {
            return false;
        }
        self.attributes
            .as_ref()
            .is_none_or(|list| list.contains(&key))
    }
}

/// Which indexed attribute a filter term compares.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Id,
    UserName,
    ExternalId,
    DisplayName,
    /// `emails.value`, optionally restricted to one `type`.
    Email(Option<String>),
    /// `members.value` (groups).
    Member,
}

/// All Users and Groups of one sandbox.
#[derive(Debug, Default)]
pub(crate) struct Store {
    /// How this app departs from the generic one on User writes (default: it does not).
    pub(crate) quirks: Quirks,
    next_seq: u64,
    users: HashMap<String, Rec>,
    user_order: Order,
    user_by_name: HashMap<String, String>,
    user_by_external: HashMap<String, HashSet<String>>,
    user_by_display: HashMap<String, HashSet<String>>,
    user_by_email: HashMap<String, HashSet<String>>,
    groups: HashMap<String, Rec>,
    group_order: Order,
    group_by_name: HashMap<String, String>,
    group_by_external: HashMap<String, HashSet<String>>,
    /// User id → ids of the groups it is a member of.
    member_of: HashMap<String, HashSet<String>>,
}

fn index_add(index: &mut HashMap<String, HashSet<String>>, key: String, id: &str) {
    index.entry(key).or_default().insert(id.to_owned());
}

fn index_remove(index: &mut HashMap<String, HashSet<String>>, key: &str, id: &str) {
    if let Some(set) = index.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

fn str_attr<'a>(attrs: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    attrs.get(name).and_then(Value::as_str)
}

fn email_values(attrs: &Map<String, Value>) -> impl Iterator<Item = (&str, Option<&str>)> {
    attrs
        .get("emails")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter_map(|e| {
            let value = get_ci(e, "value").and_then(Value::as_str)?;
            Some((value, get_ci(e, "type").and_then(Value::as_str)))
        })
}

/// A random version-4 UUID string.
fn new_uuid() -> String {
    let mut n: u128 = rand::random();
    n = (n & !(0xF_u128 << 76)) | (0x4_u128 << 76);
    n = (n & !(0x3_u128 << 62)) | (0x2_u128 << 62);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Checks and normalises a User's attributes; returns the case-folded `userName`.
fn validate_user(attrs: &mut Map<String, Value>) -> Result<String, ScimError> {
    let user_name = match attrs.get("userName") {
        Some(Value::String(s)) if !s.trim().is_empty() => fold(s),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ScimError::invalid_value("userName is required"));
        }
        Some(_) => return Err(ScimError::invalid_value("userName must be a string")),
    };
    if let Some(active) = attrs.get_mut("active") {
        // Entra sends "True"/"False" strings.
        let b = match &*active {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
            Value::Null => None,
            other => {
                return Err(ScimError::invalid_value(format!(
                    "active must be a boolean, not {other}"
                )));
            }
        };
        match b {
            Some(b) => *active = Value::Bool(b),
            None => {
                attrs.remove("active");
            }
        }
    }
    validate_common(attrs, Kind::User)?;
    Ok(user_name)
}

/// Checks a Group's attributes; returns the case-folded `displayName`.
fn validate_group(attrs: &mut Map<String, Value>) -> Result<String, ScimError> {
    validate_common(attrs, Kind::Group)?;
    match attrs.get("displayName") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(fold(s)),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ScimError::invalid_value("displayName is required"))
        }
        Some(_) => Err(ScimError::invalid_value("displayName must be a string")),
    }
}

fn validate_common(attrs: &Map<String, Value>, kind: Kind) -> Result<(), ScimError> {
    if let Some(v) = attrs.get("externalId")
        && !(v.is_string() || v.is_null())
    {
        return Err(ScimError::invalid_value("externalId must be a string"));
    }
    for def in kind.attrs().iter().filter(|d| d.multi) {
        if let Some(v) = attrs.get(def.name)
            && !(v.is_array() || v.is_null())
        {
            return Err(ScimError::invalid_value(format!(
                "{} must be an array",
                def.name
            )));
        }
    }
    Ok(())
}

fn object(body: Value) -> Result<Map<String, Value>, ScimError> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(ScimError::invalid_syntax("body must be a JSON object")),
    }
}

fn not_found(kind: Kind, id: &str) -> ScimError {
    ScimError::not_found(format!("{} {id} not found", kind.name()))
}

impl Store {
    fn table(&self, kind: Kind) -> &HashMap<String, Rec> {
        match kind {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    /// Number of stored resources of a kind.
    pub(crate) fn count(&self, kind: Kind) -> usize {
        self.table(kind).len()
    }

    fn fresh_id(&self) -> String {
        loop {
            let id = new_uuid();
            if !self.users.contains_key(&id) && !self.groups.contains_key(&id) {
                return id;
            }
        }
    }

    fn new_meta(&mut self) -> Meta {
        self.next_seq += 1;
        let t = now();
        Meta {
            seq: self.next_seq,
            created: t.clone(),
            last_modified: t,
            version: 1,
        }
    }

    // ----- indexes -------------------------------------------------------------------

    fn index_user(&mut self, id: &str, attrs: &Map<String, Value>) {
        if let Some(n) = str_attr(attrs, "userName") {
            self.user_by_name.insert(fold(n), id.to_owned());
        }
        if let Some(e) = str_attr(attrs, "externalId") {
            index_add(&mut self.user_by_external, e.to_owned(), id);
        }
        if let Some(d) = str_attr(attrs, "displayName") {
            index_add(&mut self.user_by_display, fold(d), id);
        }
        for (value, _) in email_values(attrs) {
            index_add(&mut self.user_by_email, fold(value), id);
        }
    }

    fn unindex_user(&mut self, id: &str, attrs: &Map<String, Value>) {
        if let Some(n) = str_attr(attrs, "userName") {
            let key = fold(n);
            if self.user_by_name.get(&key).is_some_and(|v| v == id) {
                self.user_by_name.remove(&key);
            }
        }
        if let Some(e) = str_attr(attrs, "externalId") {
            index_remove(&mut self.user_by_external, e, id);
        }
        if let Some(d) = str_attr(attrs, "displayName") {
            index_remove(&mut self.user_by_display, &fold(d), id);
        }
        for (value, _) in email_values(attrs) {
            index_remove(&mut self.user_by_email, &fold(value), id);
        }
    }

    fn index_group(&mut self, id: &str, attrs: &Map<String, Value>) {
        if let Some(n) = str_attr(attrs, "displayName") {
            self.group_by_name.insert(fold(n), id.to_owned());
        }
        if let Some(e) = str_attr(attrs, "externalId") {
            index_add(&mut self.group_by_external, e.to_owned(), id);
        }
    }

    fn unindex_group(&mut self, id: &str, attrs: &Map<String, Value>) {
        if let Some(n) = str_attr(attrs, "displayName") {
            let key = fold(n);
            if self.group_by_name.get(&key).is_some_and(|v| v == id) {
                self.group_by_name.remove(&key);
            }
        }
        if let Some(e) = str_attr(attrs, "externalId") {
            index_remove(&mut self.group_by_external, e, id);
        }
    }

    // ----- writes ----------------------------------------------------------------------

    /// `POST /Users` or `POST /Groups`; returns the new id.
    pub(crate) fn create(&mut self, kind: Kind, body: Value) -> Result<String, ScimError> {
        let mut raw = object(body)?;
        match kind {
            Kind::User => {
                self.quirks.admit_user_body(&raw)?;
                let mut attrs = canonicalize(raw, kind.attrs(), Some(kind));
                self.quirks.discard_dropped(&mut attrs);
                let key = validate_user(&mut attrs)?;
                if self.user_by_name.contains_key(&key) {
                    return Err(ScimError::uniqueness("userName is already taken"));
                }
                let id = self.fresh_id();
                let meta = self.new_meta();
                self.index_user(&id, &attrs);
                self.user_order.ids.push(id.clone());
                self.users.insert(
                    id.clone(),
                    Rec {
                        meta,
                        attrs,
                        members: BTreeSet::new(),
                    },
                );
                Ok(id)
            }
            Kind::Group => {
                let members = self.take_members(&mut raw)?;
                let mut attrs = canonicalize(raw, kind.attrs(), Some(kind));
                let key = validate_group(&mut attrs)?;
                if self.group_by_name.contains_key(&key) {
                    return Err(ScimError::uniqueness("displayName is already taken"));
                }
                let id = self.fresh_id();
                let meta = self.new_meta();
                self.index_group(&id, &attrs);
                self.group_order.ids.push(id.clone());
                self.groups.insert(
                    id.clone(),
                    Rec {
                        meta,
                        attrs,
                        members: BTreeSet::new(),
                    },
                );
                for uid in members {
                    self.add_member(&id, &uid);
                }
                Ok(id)
            }
        }
    }

    /// Removes `members` from a group body and checks that every id is a user.
    fn take_members(&self, raw: &mut Map<String, Value>) -> Result<Vec<String>, ScimError> {
        let Some(key) = key_ci(raw, "members") else {
            return Ok(Vec::new());
        };
        match raw.remove(&key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(v) => {
                let ids = patch::member_ids(&v)?;
                self.check_users_exist(&ids)?;
                Ok(ids)
            }
        }
    }

    fn check_users_exist(&self, ids: &[String]) -> Result<(), ScimError> {
        match ids.iter().find(|id| !self.users.contains_key(*id)) {
            Some(id) => Err(ScimError::invalid_value(format!(
                "member {id} is not a known user"
            ))),
            None => Ok(()),
        }
    }

    fn add_member(&mut self, gid: &str, uid: &str) -> bool {
        let Some(group) = self.groups.get_mut(gid) else {
            return false;
        };
        let added = group.members.insert(uid.to_owned());
        if added {
            self.member_of
                .entry(uid.to_owned())
                .or_default()
                .insert(gid.to_owned());
        }
        added
    }

    fn remove_member(&mut self, gid: &str, uid: &str) -> bool {
        let Some(group) = self.groups.get_mut(gid) else {
            return false;
        };
        let removed = group.members.remove(uid);
        if removed && let Some(set) = self.member_of.get_mut(uid) {
            set.remove(gid);
            if set.is_empty() {
                self.member_of.remove(uid);
            }
        }
        removed
    }

    fn clear_members(&mut self, gid: &str) {
        let old = match self.groups.get_mut(gid) {
            Some(g) => std::mem::take(&mut g.members),
            None => return,
        };
        for uid in old {
            if let Some(set) = self.member_of.get_mut(&uid) {
                set.remove(gid);
                if set.is_empty() {
                    self.member_of.remove(&uid);
                }
            }
        }
    }

    fn touch(&mut self, kind: Kind, id: &str) {
        let table = match kind {
            Kind::User => &mut self.users,
            Kind::Group => &mut self.groups,
        };
        if let Some(rec) = table.get_mut(id) {
            rec.meta.last_modified = now();
            rec.meta.version += 1;
        }
    }

    /// Stores new attributes for an existing user (without those the app drops) after the
    /// uniqueness check.
    fn commit_user(&mut self, id: &str, mut attrs: Map<String, Value>) -> Result<(), ScimError> {
        self.quirks.discard_dropped(&mut attrs);
        let key = validate_user(&mut attrs)?;
        if self.user_by_name.get(&key).is_some_and(|other| other != id) {
            return Err(ScimError::uniqueness("userName is already taken"));
        }
        let old = match self.users.get_mut(id) {
            Some(rec) => std::mem::replace(&mut rec.attrs, Map::new()),
            None => return Err(not_found(Kind::User, id)),
        };
        self.unindex_user(id, &old);
        self.index_user(id, &attrs);
        if let Some(rec) = self.users.get_mut(id) {
            rec.attrs = attrs;
        }
        self.touch(Kind::User, id);
        Ok(())
    }

    /// Stores new attributes for an existing group after the uniqueness check.
    fn commit_group(&mut self, id: &str, mut attrs: Map<String, Value>) -> Result<(), ScimError> {
        let key = validate_group(&mut attrs)?;
        if self
            .group_by_name
            .get(&key)
            .is_some_and(|other| other != id)
        {
            return Err(ScimError::uniqueness("displayName is already taken"));
        }
        let old = match self.groups.get_mut(id) {
            Some(rec) => std::mem::replace(&mut rec.attrs, Map::new()),
            None => return Err(not_found(Kind::Group, id)),
        };
        self.unindex_group(id, &old);
        self.index_group(id, &attrs);
        if let Some(rec) = self.groups.get_mut(id) {
            rec.attrs = attrs;
        }
        self.touch(Kind::Group, id);
        Ok(())
    }

    /// `PUT`: replaces every client-writable attribute (and, for groups, the members).
    pub(crate) fn replace(&mut self, kind: Kind, id: &str, body: Value) -> Result<(), ScimError> {
        if !self.table(kind).contains_key(id) {
            return Err(not_found(kind, id));
        }
        let mut raw = object(body)?;
        match kind {
            Kind::User => {
                self.quirks.admit_user_body(&raw)?;
                self.commit_user(id, canonicalize(raw, kind.attrs(), Some(kind)))
            }
            Kind::Group => {
                let members = self.take_members(&mut raw)?;
                self.commit_group(id, canonicalize(raw, kind.attrs(), Some(kind)))?;
                self.clear_members(id);
                for uid in members {
                    self.add_member(id, &uid);
                }
                Ok(())
            }
        }
    }

    /// `PATCH`: applies all operations or none.
    pub(crate) fn patch(
        &mut self,
        kind: Kind,
        id: &str,
        ops: Vec<Operation>,
    ) -> Result<(), ScimError> {
        let Some(rec) = self.table(kind).get(id) else {
            return Err(not_found(kind, id));
        };
        let mut attrs = rec.attrs.clone();
        match kind {
            Kind::User => {
                self.quirks.admit_user_patch(&ops)?;
                for op in &ops {
                    patch::apply(&mut attrs, kind, op.op, op.path.as_ref(), op.value.as_ref())?;
                }
                self.commit_user(id, attrs)
            }
            Kind::Group => {
                let steps = patch::group_steps(ops)?;
                let mut member_ops = Vec::new();
                for step in steps {
                    match step {
                        GroupStep::Attr(op) => patch::apply(
                            &mut attrs,
                            kind,
                            op.op,
                            op.path.as_ref(),
                            op.value.as_ref(),
                        )?,
                        GroupStep::Members(m) => {
                            if let MemberOp::Add(ids) | MemberOp::Replace(ids) = &m {
                                self.check_users_exist(ids)?;
                            }
                            member_ops.push(m);
                        }
                    }
                }
                // Everything validated: from here on nothing fails.
                self.commit_group(id, attrs)?;
                for m in member_ops {
                    match m {
                        MemberOp::Add(ids) => {
                            for uid in ids {
                                self.add_member(id, &uid);
                            }
                        }
                        MemberOp::Remove(ids) => {
                            for uid in ids {
                                self.remove_member(id, &uid);
                            }
                        }
                        MemberOp::Replace(ids) => {
                            self.clear_members(id);
                            for uid in ids {
                                self.add_member(id, &uid);
                            }
                        }
                        MemberOp::RemoveAll => self.clear_members(id),
                    }
                }
                Ok(())
            }
        }
    }

    /// `DELETE`; deleting a user also removes it from every group.
    pub(crate) fn delete(&mut self, kind: Kind, id: &str) -> Result<(), ScimError> {
        match kind {
            Kind::User => {
                let rec = self.users.remove(id).ok_or_else(|| not_found(kind, id))?;
                self.unindex_user(id, &rec.attrs);
                self.user_order.stale += 1;
                for gid in self.member_of.remove(id).unwrap_or_default() {
                    if let Some(g) = self.groups.get_mut(&gid) {
                        g.members.remove(id);
                    }
                    self.touch(Kind::Group, &gid);
                }
            }
            Kind::Group => {
                self.clear_members(id);
                let rec = self.groups.remove(id).ok_or_else(|| not_found(kind, id))?;
                self.unindex_group(id, &rec.attrs);
                self.group_order.stale += 1;
            }
        }
        Ok(())
    }

    // ----- reads -----------------------------------------------------------------------

    /// The resource as `GET` returns it, or `None` for an unknown id.
    pub(crate) fn render(&self, kind: Kind, id: &str, view: &View) -> Option<Value> {
        let rec = self.table(kind).get(id)?;
        let mut schemas = vec![Value::String(kind.core_schema().to_owned())];
        let mut out = Map::new();
        out.insert("id".to_owned(), Value::String(id.to_owned()));
        for (k, v) in &rec.attrs {
            if k == "password" || !view.wants(k) {
                continue;
            }
            if k.starts_with("urn:") && v.is_object() {
                schemas.push(Value::String(k.clone()));
            }
            out.insert(k.clone(), v.clone());
        }
        let member_json = |uid: &str| -> Option<Value> {
            let user = self.users.get(uid)?;
            Some(json!({
                "value": uid,
                "display": str_attr(&user.attrs, "userName"),
                "type": "User",
                "$ref": format!("{}/Users/{uid}", view.base),
            }))
        };
        match kind {
            Kind::Group if view.wants("members") => {
                let members: Vec<Value> =
                    rec.members.iter().filter_map(|m| member_json(m)).collect();
                out.insert("members".to_owned(), Value::Array(members));
            }
            Kind::User if view.wants("groups") => {
                if let Some(gids) = self.member_of.get(id) {
                    let mut groups: Vec<(u64, Value)> = gids
                        .iter()
                        .filter_map(|gid| {
                            let g = self.groups.get(gid)?;
                            Some((
                                g.meta.seq,
                                json!({
                                    "value": gid,
                                    "display": str_attr(&g.attrs, "displayName"),
                                    "type": "direct",
                                    "$ref": format!("{}/Groups/{gid}", view.base),
                                }),
                            ))
                        })
                        .collect();
                    groups.sort_by_key(|(seq, _)| *seq);
                    out.insert(
                        "groups".to_owned(),
                        Value::Array(groups.into_iter().map(|(_, g)| g).collect()),
                    );
                }
            }
            _ => {}
        }
        out.insert("schemas".to_owned(), Value::Array(schemas));
        if view.wants("meta") {
            out.insert(
                "meta".to_owned(),
                json!({
                    "resourceType": kind.name(),
                    "created": rec.meta.created,
                    "lastModified": rec.meta.last_modified,
                    "location": format!("{}/{}/{id}", view.base, kind.endpoint()),
                    "version": format!("W/\"{}\"", rec.meta.version),
                }),
            );
        }
        Some(Value::Object(out))
    }

    /// Every resource of a kind in creation order.
    pub(crate) fn render_all(&self, kind: Kind, view: &View) -> Vec<Value> {
        let order = match kind {
            Kind::User => &self.user_order,
            Kind::Group => &self.group_order,
        };
        order
            .ids
            .iter()
            .filter_map(|id| self.render(kind, id, view))
            .collect()
    }

    /// `GET /Users` or `GET /Groups` with optional filter and paging; returns a ListResponse.
    pub(crate) fn list(
        &mut self,
        kind: Kind,
        filter: Option<&str>,
        start_index: usize,
        count: usize,
        view: &View,
    ) -> Result<Value, ScimError> {
        let start = start_index.max(1);
        let count = count.min(MAX_RESULTS);
        let (total, page): (usize, Vec<String>) = match filter {
            None => {
                let (order, table) = match kind {
                    Kind::User => (&mut self.user_order, &self.users),
                    Kind::Group => (&mut self.group_order, &self.groups),
                };
                order.compact(table);
                let total = order.ids.len();
                let page = order
                    .ids
                    .get(start - 1..)
                    .unwrap_or_default()
                    .iter()
                    .take(count)
                    .cloned()
                    .collect();
                (total, page)
            }
            Some(f) => {
                let terms = parse_filter(f).map_err(ScimError::invalid_filter)?;
                let ids = self.filtered(kind, &terms)?;
                let total = ids.len();
                let page = ids.into_iter().skip(start - 1).take(count).collect();
                (total, page)
            }
        };
        let resources: Vec<Value> = page
            .iter()
            .filter_map(|id| self.render(kind, id, view))
            .collect();
        Ok(json!({
            "schemas": [LIST_RESPONSE_SCHEMA],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }))
    }

    fn filter_key(kind: Kind, path: &AttrPath) -> Result<Key, ScimError> {
        let unsupported = || {
            ScimError::invalid_filter(format!(
                "filtering {} on '{}' is not supported",
                kind.endpoint(),
                path_text(path)
            ))
        };
        if let Some(urn) = &path.urn
            && !urn.eq_ignore_ascii_case(kind.core_schema())
        {
            return Err(unsupported());
        }
        let attr = path.attr.to_ascii_lowercase();
        let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
        let simple = path.value_filter.is_none() && sub.is_none();
        match (kind, attr.as_str()) {
            (_, "id") if simple => Ok(Key::Id),
            (_, "externalid") if simple => Ok(Key::ExternalId),
            (_, "displayname") if simple => Ok(Key::DisplayName),
            (Kind::User, "username") if simple => Ok(Key::UserName),
            (Kind::User, "emails") if matches!(sub.as_deref(), None | Some("value")) => {
                match &path.value_filter {
                    None => Ok(Key::Email(None)),
                    Some(vf) if vf.attr.eq_ignore_ascii_case("type") => match vf.value.as_str() {
                        Some(t) => Ok(Key::Email(Some(fold(t)))),
                        None => Err(unsupported()),
                    },
                    Some(_) => Err(unsupported()),
                }
            }
            (Kind::Group, "members")
                if path.value_filter.is_none()
                    && matches!(sub.as_deref(), None | Some("value")) =>
            {
                Ok(Key::Member)
            }
            _ => Err(unsupported()),
        }
    }

    /// Ids (in creation order) of the resources matching every term.
    fn filtered(&self, kind: Kind, terms: &[Comparison]) -> Result<Vec<String>, ScimError> {
        let mut keyed = Vec::with_capacity(terms.len());
        for t in terms {
            let key = Self::filter_key(kind, &t.path)?;
            let value = t.value.as_str().ok_or_else(|| {
                ScimError::invalid_filter(format!(
                    "'{}' must be compared with a string",
                    path_text(&t.path)
                ))
            })?;
            keyed.push((key, value));
        }
        // Start from the most selective index; check the other terms on each candidate.
        let mut best: Option<Vec<&str>> = None;
        for (key, value) in &keyed {
            let cands = self.candidates(kind, key, value);
            if best.as_ref().is_none_or(|b| cands.len() < b.len()) {
                best = Some(cands);
            }
        }
        let table = self.table(kind);
        let mut hits: Vec<(u64, String)> = best
            .unwrap_or_default()
            .into_iter()
            .filter_map(|id| {
                let rec = table.get(id)?;
                keyed
                    .iter()
                    .all(|(k, v)| Self::matches(id, rec, k, v))
                    .then(|| (rec.meta.seq, id.to_owned()))
            })
            .collect();
        hits.sort_unstable();
        hits.dedup();
        Ok(hits.into_iter().map(|(_, id)| id).collect())
    }

    fn candidates<'a>(&'a self, kind: Kind, key: &Key, value: &'a str) -> Vec<&'a str> {
        let set = |index: &'a HashMap<String, HashSet<String>>, k: &str| -> Vec<&'a str> {
            index
                .get(k)
                .map(|s| s.iter().map(String::as_str).collect())
                .unwrap_or_default()
        };
        match (kind, key) {
            (_, Key::Id) => match self.table(kind).get_key_value(value) {
                Some((k, _)) => vec![k.as_str()],
                None => Vec::new(),
            },
            (Kind::User, Key::UserName) => self
                .user_by_name
                .get(&fold(value))
                .map(|id| vec![id.as_str()])
                .unwrap_or_default(),
            (Kind::Group, Key::DisplayName) => self
                .group_by_name
                .get(&fold(value))
                .map(|id| vec![id.as_str()])
                .unwrap_or_default(),
            (Kind::User, Key::DisplayName) => set(&self.user_by_display, &fold(value)),
            (Kind::User, Key::ExternalId) => set(&self.user_by_external, value),
            (Kind::Group, Key::ExternalId) => set(&self.group_by_external, value),
            (Kind::User, Key::Email(_)) => set(&self.user_by_email, &fold(value)),
            (Kind::Group, Key::Member) => set(&self.member_of, value),
            _ => Vec::new(),
        }
    }

    fn matches(id: &str, rec: &Rec, key: &Key, value: &str) -> bool {
        let folded_eq =
            |name: &str| str_attr(&rec.attrs, name).is_some_and(|v| fold(v) == fold(value));
        match key {
            Key::Id => id == value,
            Key::UserName => folded_eq("userName"),
            Key::DisplayName => folded_eq("displayName"),
            Key::ExternalId => str_attr(&rec.attrs, "externalId") == Some(value),
            Key::Email(ty) => email_values(&rec.attrs).any(|(v, t)| {
                fold(v) == fold(value)
                    && ty
                        .as_ref()
                        .is_none_or(|want| t.is_some_and(|t| &fold(t) == want))
            }),
            Key::Member => rec.members.contains(value),
        }
    }
}

fn path_text(p: &AttrPath) -> String {
    let mut s = String::new();
    if let Some(urn) = &p.urn {
        s.push_str(urn);
        s.push(':');
    }
    s.push_str(&p.attr);
    if let Some(vf) = &p.value_filter {
        s.push_str(&format!("[{} eq {}]", vf.attr, vf.value));
    }
    if let Some(sub) = &p.sub {
        s.push('.');
        s.push_str(sub);
    }
    s
}
