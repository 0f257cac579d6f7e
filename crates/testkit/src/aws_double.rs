//! An AWS IAM Identity Center SCIM double for tests: a small axum server on loopback that
//! serves the SCIM endpoint of Identity Center (`/scim/v2`) as AWS's public "IAM Identity
//! Center SCIM implementation" developer guide describes it, quirks included, so that
//! scim-sync's AWS profile is tested against what AWS does rather than against RFC 7644.
//!
//! What it models:
//! - A fixed bearer token ([`AWS_TOKEN`]); a request without it answers `401`.
//! - Errors as AWS writes them: `{"schemas":[Error],"status":"400","detail":"…"}`, the status
//!   a string, never a `scimType`; only `400` (ValidationException), `404`
//!   (ResourceNotFoundException), `409` (ConflictException) and `429` (ThrottlingException,
//!   never with `Retry-After`).
//! - Users with only the attributes Identity Center stores (others are dropped silently);
//!   `userName`, `displayName`, `name.givenName` and `name.familyName` are required, `emails`,
//!   `addresses` and `phoneNumbers` hold at most one value, `userName` is unique
//!   case-insensitively. Ids look like Identity Store ids (`{10 hex}-{uuid}`).
//! - Groups whose `members` are never returned (always `[]`, on reads and in lists alike):
//!   a membership is seen only through `filter=id eq "G" and members eq "U"` (or
//!   `members eq "U"`, or a user list with `groups.value eq "G"`). No `PUT` on groups;
//!   `PATCH` adds and removes members (at most 100 changes a request, `replace` of members
//!   refused) and answers `204`.
//! - Lists: only `eq` filters on a few attributes; `startIndex` ignored; at most 100 a page.
//!   Without `cursor`, only the first page is reachable and its `totalResults` counts that
//!   page, not the matches (a client paging on `totalResults` stops after it); with
//!   `cursor` (empty for the first page) pages follow opaque `nextCursor`s.
//! - Discovery: `ServiceProviderConfig`, `ResourceTypes`, `Schemas` (short but honest).
//!
//! For tests it throttles on demand ([`AwsDouble::throttle_every`],
//! [`AwsDouble::throttle_next`]), counts and logs requests, reads its state directly (the
//! ground truth a test compares with) and changes it out of band, as an administrator in the
//! AWS console would. It is not an Identity Store emulator: only the SCIM endpoint is served.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The bearer token the double accepts (`Authorization: Bearer AWS_TOKEN`).
pub const AWS_TOKEN: &str = "aws-double-scim-access-token";

/// Path prefix of every route, as in `https://scim.REGION.amazonaws.com/TENANT/scim/v2`.
const BASE_PATH: &str = "/scim/v2";
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// Largest `count` of a list (and its default).
const MAX_COUNT: usize = 100;
/// Most members a group `POST` may carry, and most membership changes of one `PATCH`.
const MAX_MEMBER_CHANGES: usize = 100;

/// The single-valued string attributes of a user that Identity Center stores.
const USER_STRINGS: [&str; 10] = [
    "userName",
    "externalId",
    "displayName",
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
];
const NAME_SUBS: [&str; 6] = [
    "formatted",
    "familyName",
    "givenName",
    "middleName",
    "honorificPrefix",
    "honorificSuffix",
];
const EMAIL_SUBS: [&str; 3] = ["value", "type", "primary"];
const ADDRESS_SUBS: [&str; 8] = [
    "formatted",
    "streetAddress",
    "locality",
    "region",
    "postalCode",
    "country",
    "type",
    "primary",
];
const PHONE_SUBS: [&str; 3] = ["value", "type", "primary"];
/// The multi-valued attributes of a user (one value at most each).
const MULTI: [(&str, &[&str]); 3] = [
    ("emails", &EMAIL_SUBS),
    ("addresses", &ADDRESS_SUBS),
    ("phoneNumbers", &PHONE_SUBS),
];
/// The enterprise extension's string attributes kept (besides `manager`).
const ENTERPRISE_STRINGS: [&str; 5] = [
    "employeeNumber",
    "costCenter",
    "organization",
    "division",
    "department",
];

// ---------------------------------------------------------------------------------------
// Errors and replies

/// An error answered with AWS's SCIM error body.
#[derive(Debug)]
struct ScimError {
    status: StatusCode,
    detail: String,
}

impl ScimError {
    /// `400`, AWS's ValidationException.
    fn validation(detail: impl Into<String>) -> Self {
        ScimError {
            status: StatusCode::BAD_REQUEST,
            detail: detail.into(),
        }
    }

    /// `404`, AWS's ResourceNotFoundException.
    fn not_found(detail: impl Into<String>) -> Self {
        ScimError {
            status: StatusCode::NOT_FOUND,
            detail: detail.into(),
        }
    }

    /// `409`, AWS's ConflictException.
    fn conflict(detail: impl Into<String>) -> Self {
        ScimError {
            status: StatusCode::CONFLICT,
            detail: detail.into(),
        }
    }
}

/// AWS's error body: `status` is a string and there is never a `scimType`.
fn error_response(status: StatusCode, detail: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "schemas": [ERROR_SCHEMA],
            "status": status.as_u16().to_string(),
            "detail": detail,
        })),
    )
        .into_response()
}

fn unparsable() -> ScimError {
    ScimError::validation("Request is unparsable, syntactically incorrect, or violates schema.")
}

fn unsupported_op() -> ScimError {
    ScimError::validation("The operation is not supported.")
}

/// A successful answer: a status and, unless `204`, a body.
struct Reply(StatusCode, Option<Value>);

fn ok(body: Value) -> Result<Reply, ScimError> {
    Ok(Reply(StatusCode::OK, Some(body)))
}

// ---------------------------------------------------------------------------------------
// State

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Users,
    Groups,
}

/// What a cursor stands for: the list it continues and the last resource it answered.
struct CursorRec {
    kind: Kind,
    filter: String,
    after: u64,
}

struct GroupRec {
    /// The group as served, without `members`.
    resource: Map<String, Value>,
    /// Member user ids.
    members: BTreeSet<String>,
}

#[derive(Default)]
struct Store {
    next_seq: u64,
    /// Prefix of every id, as an Identity Store id starts with its store's.
    id_prefix: String,
    /// Creation number → the user as served.
    users: BTreeMap<u64, Map<String, Value>>,
    user_seq: HashMap<String, u64>,
    /// Lower-cased userName → creation number (userName is unique, case-insensitively).
    user_names: HashMap<String, u64>,
    groups: BTreeMap<u64, GroupRec>,
    group_seq: HashMap<String, u64>,
    cursors: HashMap<String, CursorRec>,
}

#[derive(Default)]
struct Counts {
    requests: u64,
    writes: u64,
    by_method: BTreeMap<String, u64>,
    log: Vec<(String, String)>,
}

#[derive(Default)]
struct Throttle {
    every: u32,
    next: u32,
    seen: u64,
}

impl Throttle {
    /// Whether this (authenticated) request answers `429`.
    fn hit(&mut self) -> bool {
        self.seen += 1;
        if self.next > 0 {
            self.next -= 1;
            return true;
        }
        self.every > 0 && self.seen.is_multiple_of(u64::from(self.every))
    }
}

#[derive(Default)]
struct Inner {
    store: Store,
    counts: Counts,
    throttle: Throttle,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn hex(n: u128, digits: usize) -> String {
    format!("{n:0digits$x}")
}

/// A random version-4 UUID string.
fn uuid() -> String {
    let r: u128 = rand::random();
    let r = (r & !(0xf_u128 << 76)) | (0x4_u128 << 76);
    let r = (r & !(0x3_u128 << 62)) | (0x2_u128 << 62);
    format!(
        "{}-{}-{}-{}-{}",
        hex(r >> 96, 8),
        hex((r >> 80) & 0xffff, 4),
        hex((r >> 64) & 0xffff, 4),
        hex((r >> 48) & 0xffff, 4),
        hex(r & 0xffff_ffff_ffff, 12)
    )
}

/// Standard base64 with padding (cursors are opaque, in `[-a-zA-Z0-9+=/:_]*`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn cursor_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-+=/:_".contains(c)
}

impl Store {
    fn new_id(&self) -> String {
        format!("{}-{}", self.id_prefix, uuid())
    }

    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn user(&self, id: &str) -> Option<&Map<String, Value>> {
        self.users.get(self.user_seq.get(id)?)
    }

    /// Changes user `id` through `edit`, keeping the userName index current; `None` if the
    /// user is unknown.
    fn edit_user<T>(
        &mut self,
        id: &str,
        edit: impl FnOnce(&mut Map<String, Value>) -> T,
    ) -> Option<T> {
        let seq = *self.user_seq.get(id)?;
        let user = self.users.get_mut(&seq)?;
        self.user_names
            .remove(&str_of(user, "userName").to_lowercase());
        let out = edit(user);
        self.user_names
            .insert(str_of(user, "userName").to_lowercase(), seq);
        Some(out)
    }

    fn user_by_name(&self, name: &str) -> Option<&Map<String, Value>> {
        self.users.get(self.user_names.get(&name.to_lowercase())?)
    }

    fn username_taken(&self, name: &str, except: Option<&str>) -> bool {
        self.user_by_name(name)
            .is_some_and(|u| Some(str_of(u, "id")) != except)
    }

    /// Stores a new user from its (normalized) attributes; answers it as served.
    fn insert_user(&mut self, attrs: Map<String, Value>) -> Map<String, Value> {
        let seq = self.next_seq();
        let id = self.new_id();
        let t = now();
        let user = user_resource(
            &id,
            json!({"resourceType": "User", "created": t, "lastModified": t}),
            attrs,
        );
        self.user_seq.insert(id, seq);
        self.user_names
            .insert(str_of(&user, "userName").to_lowercase(), seq);
        self.users.insert(seq, user.clone());
        user
    }

    /// Deletes a user and every membership of it.
    fn delete_user(&mut self, id: &str) -> bool {
        let Some(seq) = self.user_seq.remove(id) else {
            return false;
        };
        if let Some(u) = self.users.remove(&seq) {
            self.user_names
                .remove(&str_of(&u, "userName").to_lowercase());
        }
        for g in self.groups.values_mut() {
            g.members.remove(id);
        }
        true
    }

    fn group(&self, id: &str) -> Option<&GroupRec> {
        self.groups.get(self.group_seq.get(id)?)
    }

    fn group_mut(&mut self, id: &str) -> Option<&mut GroupRec> {
        let seq = *self.group_seq.get(id)?;
        self.groups.get_mut(&seq)
    }

    fn group_by_name(&self, name: &str) -> Option<&GroupRec> {
        let name = name.to_lowercase();
        self.groups
            .values()
            .find(|g| str_of(&g.resource, "displayName").to_lowercase() == name)
    }

    fn display_name_taken(&self, name: &str, except: Option<&str>) -> bool {
        self.group_by_name(name)
            .is_some_and(|g| Some(str_of(&g.resource, "id")) != except)
    }

    fn insert_group(
        &mut self,
        display_name: &str,
        external_id: Option<String>,
        members: BTreeSet<String>,
    ) -> Value {
        let seq = self.next_seq();
        let id = self.new_id();
        let t = now();
        let mut resource = Map::new();
        resource.insert("schemas".into(), json!([GROUP_SCHEMA]));
        resource.insert("id".into(), json!(id));
        resource.insert("displayName".into(), json!(display_name));
        if let Some(e) = external_id {
            resource.insert("externalId".into(), json!(e));
        }
        resource.insert(
            "meta".into(),
            json!({"resourceType": "Group", "created": t, "lastModified": t}),
        );
        let rec = GroupRec { resource, members };
        let served = render_group(&rec);
        self.group_seq.insert(id, seq);
        self.groups.insert(seq, rec);
        served
    }

    fn new_cursor(&mut self, kind: Kind, filter: String, after: u64) -> String {
        let salt: u64 = rand::random();
        let cursor = base64(format!("{after}:{salt:016x}").as_bytes());
        self.cursors.insert(
            cursor.clone(),
            CursorRec {
                kind,
                filter,
                after,
            },
        );
        cursor
    }
}

/// A user as served: `schemas`, `id`, `meta` and its attributes.
fn user_resource(id: &str, meta: Value, attrs: Map<String, Value>) -> Map<String, Value> {
    let mut schemas = vec![json!(USER_SCHEMA)];
    if attrs.contains_key(ENTERPRISE) {
        schemas.push(json!(ENTERPRISE));
    }
    let mut user = Map::new();
    user.insert("schemas".into(), Value::Array(schemas));
    user.insert("id".into(), json!(id));
    user.insert("meta".into(), meta);
    user.extend(attrs);
    user
}

/// A group as AWS serves it: `members` always empty.
fn render_group(rec: &GroupRec) -> Value {
    let mut g = rec.resource.clone();
    g.insert("members".into(), json!([]));
    Value::Object(g)
}

fn str_of<'a>(obj: &'a Map<String, Value>, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A member of `obj` by case-insensitive name (null is absent).
fn get_ci<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

/// The key `name` has in `obj` (case-insensitively), or `name` if it has none.
fn key_ci(obj: &Map<String, Value>, name: &str) -> String {
    obj.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_owned())
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        let key = key_ci(into, k);
        into.insert(key, v.clone());
    }
}

// ---------------------------------------------------------------------------------------
// Users: what Identity Center keeps

/// Keeps the sub-attributes `subs` of `obj` (`primary` a boolean, the others strings).
fn pick_subs(
    obj: &Map<String, Value>,
    subs: &[&str],
    strict: bool,
) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for sub in subs {
        let Some(v) = get_ci(obj, sub) else { continue };
        let fits = if *sub == "primary" {
            v.is_boolean()
        } else {
            v.is_string()
        };
        if fits {
            out.insert((*sub).to_owned(), v.clone());
        } else if strict {
            return Err(ScimError::validation(format!(
                "The attribute {sub} has the wrong type."
            )));
        }
    }
    Ok(out)
}

/// The attributes of `body` that Identity Center stores, validated (when `strict`: required
/// attributes, one value per multi-valued attribute, types) or not (bad values are dropped).
fn normalize_user(body: &Value, strict: bool) -> Result<Map<String, Value>, ScimError> {
    let fail = |msg: String| {
        if strict {
            Err(ScimError::validation(msg))
        } else {
            Ok(())
        }
    };
    let empty = Map::new();
    let obj = match body.as_object() {
        Some(o) => o,
        None => {
            fail("The user must be a JSON object.".into())?;
            &empty
        }
    };
    let mut out = Map::new();
    for name in USER_STRINGS {
        match get_ci(obj, name) {
            None => {}
            Some(Value::String(s)) => {
                out.insert(name.into(), json!(s));
            }
            Some(_) => fail(format!("The attribute {name} must be a string."))?,
        }
    }
    let active = match get_ci(obj, "active") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            fail("The attribute active must be a boolean.".into())?;
            true
        }
    };
    out.insert("active".into(), json!(active));
    if let Some(n) = get_ci(obj, "name") {
        match n.as_object() {
            Some(n) => {
                let name = pick_subs(n, &NAME_SUBS, strict)?;
                if !name.is_empty() {
                    out.insert("name".into(), Value::Object(name));
                }
            }
            None => fail("The attribute name must be complex.".into())?,
        }
    }
    for (attr, subs) in MULTI {
        let Some(v) = get_ci(obj, attr) else { continue };
        let Some(items) = v.as_array() else {
            fail(format!("The attribute {attr} must be multi-valued."))?;
            continue;
        };
        if items.len() > 1 {
            fail(format!(
                "The attribute {attr} cannot have more than one value."
            ))?;
        }
        let mut kept = Vec::new();
        for item in items.iter().take(1) {
            match item.as_object() {
                Some(o) => {
                    let o = pick_subs(o, subs, strict)?;
                    if !o.is_empty() {
                        kept.push(Value::Object(o));
                    }
                }
                None => fail(format!("A value of {attr} must be complex."))?,
            }
        }
        if !kept.is_empty() {
            out.insert(attr.into(), Value::Array(kept));
        }
    }
    if let Some(e) = get_ci(obj, ENTERPRISE) {
        match e.as_object() {
            Some(e) => {
                let mut ext = pick_subs(e, &ENTERPRISE_STRINGS, strict)?;
                if let Some(m) = get_ci(e, "manager") {
                    match m.as_object().and_then(|m| get_ci(m, "value")) {
                        Some(Value::String(v)) => {
                            ext.insert("manager".into(), json!({ "value": v }));
                        }
                        _ => fail("The attribute manager must be {\"value\": id}.".into())?,
                    }
                }
                if !ext.is_empty() {
                    out.insert(ENTERPRISE.into(), Value::Object(ext));
                }
            }
            None => fail("The enterprise extension must be an object.".into())?,
        }
    }
    if strict {
        let name = out.get("name").and_then(Value::as_object);
        let required = [
            ("userName", out.get("userName")),
            ("displayName", out.get("displayName")),
            ("name.givenName", name.and_then(|n| n.get("givenName"))),
            ("name.familyName", name.and_then(|n| n.get("familyName"))),
        ];
        for (attr, v) in required {
            if v.and_then(Value::as_str)
                .is_none_or(|s| s.trim().is_empty())
            {
                return Err(ScimError::validation(format!(
                    "The attribute {attr} is required."
                )));
            }
        }
    }
    Ok(out)
}

/// A user's own attributes: the resource without `schemas`, `id` and `meta`.
fn own_attrs(user: &Map<String, Value>) -> Map<String, Value> {
    let mut attrs = user.clone();
    for k in ["schemas", "id", "meta"] {
        attrs.remove(k);
    }
    attrs
}

// ---------------------------------------------------------------------------------------
// Filters and patch paths

/// One `attr eq value` of a filter.
#[derive(Clone, Debug)]
struct Cmp {
    attr: String,
    value: Value,
}

impl Cmp {
    fn is(&self, attr: &str) -> bool {
        self.attr.eq_ignore_ascii_case(attr)
    }

    fn string(&self) -> Result<&str, ScimError> {
        self.value.as_str().ok_or_else(|| {
            ScimError::validation(format!("The filter on {} needs a string.", self.attr))
        })
    }
}

fn bad_filter(filter: &str) -> ScimError {
    ScimError::validation(format!("The filter is not supported: {filter}"))
}

/// Parses `attr eq "value" [and attr eq "value"]…`: attribute names and operators are
/// case-insensitive, values double-quoted strings (`\"` and `\\` escaped) or `true`,
/// `false`, `null`. Any other operator, `or`, `not` or grouping is refused.
fn parse_filter(filter: &str) -> Result<Vec<Cmp>, ScimError> {
    let chars: Vec<char> = filter.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
    };
    let word = |i: &mut usize| {
        let start = *i;
        while chars
            .get(*i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || "._:$-".contains(*c))
        {
            *i += 1;
        }
        chars
            .get(start..*i)
            .map(String::from_iter)
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    loop {
        skip_ws(&mut i);
        let attr = word(&mut i);
        skip_ws(&mut i);
        let op = word(&mut i);
        skip_ws(&mut i);
        if attr.is_empty() || !op.eq_ignore_ascii_case("eq") {
            return Err(bad_filter(filter));
        }
        let value = if chars.get(i) == Some(&'"') {
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(bad_filter(filter)),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        i += 1;
                        match chars.get(i) {
                            Some(c) => s.push(*c),
                            None => return Err(bad_filter(filter)),
                        }
                        i += 1;
                    }
                    Some(c) => {
                        s.push(*c);
                        i += 1;
                    }
                }
            }
            Value::String(s)
        } else {
            match word(&mut i).to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                _ => return Err(bad_filter(filter)),
            }
        };
        out.push(Cmp { attr, value });
        skip_ws(&mut i);
        if i >= chars.len() {
            return Ok(out);
        }
        let join = word(&mut i);
        if !join.eq_ignore_ascii_case("and") || !chars.get(i).is_some_and(|c| c.is_whitespace()) {
            return Err(bad_filter(filter));
        }
    }
}

/// Whether a multi-valued attribute's value matches a value filter (strings compared
/// case-insensitively).
fn matches_filter(item: &Value, filter: &[Cmp]) -> bool {
    let Some(o) = item.as_object() else {
        return false;
    };
    filter.iter().all(|c| match (get_ci(o, &c.attr), &c.value) {
        (Some(Value::String(a)), Value::String(b)) => a.to_lowercase() == b.to_lowercase(),
        (Some(a), b) => a == b,
        (None, b) => b.is_null(),
    })
}

/// A PATCH path: `attr`, `attr.sub`, `attr[filter]`, `attr[filter].sub`, optionally after a
/// schema URN (the enterprise extension's sets `ext`).
#[derive(Debug)]
struct PPath {
    ext: bool,
    attr: String,
    filter: Option<Vec<Cmp>>,
    sub: Option<String>,
}

fn parse_path(path: &str) -> Result<PPath, ScimError> {
    let bad = || ScimError::validation(format!("The path is not supported: {path}"));
    let trimmed = path.trim();
    let lower = trimmed.to_ascii_lowercase();
    let mut ext = false;
    let mut rest = trimmed;
    for (urn, is_ext) in [
        (ENTERPRISE, true),
        (USER_SCHEMA, false),
        (GROUP_SCHEMA, false),
    ] {
        let prefix = format!("{}:", urn.to_ascii_lowercase());
        if lower.starts_with(&prefix) {
            ext = is_ext;
            rest = trimmed.get(prefix.len()..).unwrap_or_default();
            break;
        }
    }
    let end = rest.find(['.', '[']).unwrap_or(rest.len());
    let attr = rest.get(..end).unwrap_or_default().to_owned();
    if attr.is_empty() || !attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '$') {
        return Err(bad());
    }
    let mut rest = rest.get(end..).unwrap_or_default();
    let mut filter = None;
    if rest.starts_with('[') {
        // The closing bracket outside quotes.
        let mut quoted = false;
        let mut escaped = false;
        let mut close = None;
        for (n, c) in rest.char_indices().skip(1) {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ']' if !quoted => {
                    close = Some(n);
                    break;
                }
                _ => {}
            }
        }
        let close = close.ok_or_else(bad)?;
        filter = Some(parse_filter(rest.get(1..close).unwrap_or_default())?);
        rest = rest.get(close + 1..).unwrap_or_default();
    }
    let sub = match rest.strip_prefix('.') {
        Some(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '$') => {
            Some(s.to_owned())
        }
        Some(_) => return Err(bad()),
        None if rest.is_empty() => None,
        None => return Err(bad()),
    };
    Ok(PPath {
        ext,
        attr,
        filter,
        sub,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Add,
    Replace,
    Remove,
}

struct Op<'a> {
    kind: OpKind,
    path: Option<&'a str>,
    value: Option<&'a Value>,
}

/// The operations of a PatchOp body (op names case-insensitive).
fn operations(body: &Value) -> Result<Vec<Op<'_>>, ScimError> {
    let ops = body
        .as_object()
        .and_then(|b| get_ci(b, "Operations"))
        .and_then(Value::as_array)
        .filter(|ops| !ops.is_empty())
        .ok_or_else(|| ScimError::validation("The request has no Operations."))?;
    ops.iter()
        .map(|op| {
            let o = op.as_object().ok_or_else(unparsable)?;
            let name = get_ci(o, "op").and_then(Value::as_str).unwrap_or_default();
            let kind = match name.to_ascii_lowercase().as_str() {
                "add" => OpKind::Add,
                "replace" => OpKind::Replace,
                "remove" => OpKind::Remove,
                _ => {
                    return Err(ScimError::validation(format!(
                        "The operation {name:?} is not supported."
                    )));
                }
            };
            let path = match get_ci(o, "path") {
                None => None,
                Some(Value::String(p)) if p.trim().is_empty() => None,
                Some(Value::String(p)) => Some(p.as_str()),
                Some(_) => return Err(unparsable()),
            };
            Ok(Op {
                kind,
                path,
                value: get_ci(o, "value"),
            })
        })
        .collect()
}

fn set_sub(o: &mut Map<String, Value>, sub: &str, value: Option<&Value>) {
    let key = key_ci(o, sub);
    match value {
        Some(v) => {
            o.insert(key, v.clone());
        }
        None => {
            o.remove(&key);
        }
    }
}

/// Applies one operation at `p` inside `obj` (`value` `None` removes).
fn apply_at(
    obj: &mut Map<String, Value>,
    p: &PPath,
    kind: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let key = key_ci(obj, &p.attr);
    match (&p.filter, &p.sub) {
        (None, None) => match value {
            None => {
                obj.remove(&key);
            }
            Some(v) => match obj.get_mut(&key) {
                Some(Value::Object(cur)) if v.is_object() => {
                    if let Some(v) = v.as_object() {
                        merge(cur, v);
                    }
                }
                Some(Value::Array(cur)) if kind == OpKind::Add => {
                    let items = match v {
                        Value::Array(a) => a.clone(),
                        other => vec![other.clone()],
                    };
                    for item in items {
                        if !cur.contains(&item) {
                            cur.push(item);
                        }
                    }
                }
                _ => {
                    obj.insert(key, v.clone());
                }
            },
        },
        (None, Some(sub)) => {
            let multi = MULTI.iter().any(|(m, _)| m.eq_ignore_ascii_case(&p.attr));
            let entry = obj
                .entry(key)
                .or_insert_with(|| if multi { json!([]) } else { json!({}) });
            match entry {
                Value::Object(o) => set_sub(o, sub, value),
                Value::Array(items) if items.is_empty() => {
                    if let Some(v) = value {
                        let mut o = Map::new();
                        o.insert(sub.clone(), v.clone());
                        items.push(Value::Object(o));
                    }
                }
                Value::Array(items) => {
                    for item in items.iter_mut() {
                        if let Some(o) = item.as_object_mut() {
                            set_sub(o, sub, value);
                        }
                    }
                }
                _ => {
                    return Err(ScimError::validation(format!(
                        "The attribute {} has no sub-attributes.",
                        p.attr
                    )));
                }
            }
        }
        (Some(f), sub) => {
            let entry = obj.entry(key).or_insert_with(|| json!([]));
            let Value::Array(items) = entry else {
                return Err(ScimError::validation(format!(
                    "The attribute {} is not multi-valued.",
                    p.attr
                )));
            };
            let hits = items.iter().filter(|i| matches_filter(i, f)).count();
            match (value, sub) {
                (None, None) => items.retain(|i| !matches_filter(i, f)),
                (Some(v), _) if hits == 0 => {
                    // A filter that matches nothing adds a value it would match.
                    let mut o = Map::new();
                    for c in f {
                        o.insert(c.attr.clone(), c.value.clone());
                    }
                    match (sub, v.as_object()) {
                        (Some(s), _) => {
                            o.insert(s.clone(), v.clone());
                        }
                        (None, Some(vo)) => merge(&mut o, vo),
                        (None, None) => {
                            return Err(ScimError::validation(
                                "The value of a filtered path must be complex.",
                            ));
                        }
                    }
                    items.push(Value::Object(o));
                }
                (value, sub) => {
                    for item in items.iter_mut().filter(|i| matches_filter(i, f)) {
                        match (sub, value) {
                            (Some(s), value) => {
                                if let Some(o) = item.as_object_mut() {
                                    set_sub(o, s, value);
                                }
                            }
                            (None, Some(v)) => match (item.as_object_mut(), v.as_object()) {
                                (Some(o), Some(vo)) => merge(o, vo),
                                _ => *item = v.clone(),
                            },
                            (None, None) => {}
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Applies `p` to a user's attributes, inside the enterprise extension when `p.ext`.
fn apply_user_path(
    attrs: &mut Map<String, Value>,
    p: &PPath,
    kind: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if !p.ext {
        return apply_at(attrs, p, kind, value);
    }
    // `manager` given as a bare id is taken as `{"value": id}`.
    let wrapped;
    let value = match value {
        Some(Value::String(s))
            if p.attr.eq_ignore_ascii_case("manager") && p.filter.is_none() && p.sub.is_none() =>
        {
            wrapped = json!({ "value": s });
            Some(&wrapped)
        }
        v => v,
    };
    let key = key_ci(attrs, ENTERPRISE);
    let ext = attrs.entry(key).or_insert_with(|| json!({}));
    if !ext.is_object() {
        *ext = json!({});
    }
    match ext.as_object_mut() {
        Some(ext) => apply_at(ext, p, kind, value),
        None => Ok(()),
    }
}

fn patch_user_attrs(attrs: &mut Map<String, Value>, op: &Op<'_>) -> Result<(), ScimError> {
    match op.path {
        Some(path) => {
            let p = parse_path(path)?;
            let value = match op.kind {
                OpKind::Remove => {
                    if !p.ext
                        && p.filter.is_none()
                        && p.sub.is_none()
                        && (p.attr.eq_ignore_ascii_case("userName")
                            || p.attr.eq_ignore_ascii_case("active"))
                    {
                        return Err(ScimError::validation(format!(
                            "The attribute {} cannot be removed.",
                            p.attr
                        )));
                    }
                    None
                }
                _ => Some(
                    op.value
                        .ok_or_else(|| ScimError::validation("The operation needs a value."))?,
                ),
            };
            apply_user_path(attrs, &p, op.kind, value)
        }
        None => {
            if op.kind == OpKind::Remove {
                return Err(ScimError::validation("A remove operation needs a path."));
            }
            let obj = op.value.and_then(Value::as_object).ok_or_else(|| {
                ScimError::validation("An operation without a path needs an object value.")
            })?;
            for (k, v) in obj {
                if k.eq_ignore_ascii_case(ENTERPRISE) {
                    let ext = v.as_object().ok_or_else(unparsable)?;
                    for (ek, ev) in ext {
                        let mut p = parse_path(ek)?;
                        p.ext = true;
                        apply_user_path(attrs, &p, op.kind, Some(ev))?;
                    }
                } else {
                    apply_user_path(attrs, &parse_path(k)?, op.kind, Some(v))?;
                }
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lists

struct Params {
    filter: Option<String>,
    count: usize,
    cursor: Option<String>,
}

fn params(uri: &Uri) -> Result<Params, ScimError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|_| ScimError::validation("The query string is malformed."))?;
    let mut p = Params {
        filter: None,
        count: MAX_COUNT,
        cursor: None,
    };
    for (k, v) in pairs {
        match k.to_ascii_lowercase().as_str() {
            "filter" if !v.trim().is_empty() => p.filter = Some(v),
            "count" => {
                p.count = v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_COUNT).contains(n))
                    .ok_or_else(|| {
                        ScimError::validation(format!("count must be between 1 and {MAX_COUNT}."))
                    })?;
            }
            "cursor" => p.cursor = Some(v),
            // startIndex is not supported: a list always starts at the beginning.
            _ => {}
        }
    }
    Ok(p)
}

/// One page of `items` (in creation order): the first `count` without a cursor (with
/// `totalResults` the page's size), else the page after the cursor with a `nextCursor`
/// while more remain.
fn page(store: &mut Store, kind: Kind, p: &Params, items: Vec<u64>) -> Result<Reply, ScimError> {
    let render = |store: &Store, seq: &u64| match kind {
        Kind::Users => Value::Object(store.users[seq].clone()),
        Kind::Groups => render_group(&store.groups[seq]),
    };
    let Some(cursor) = &p.cursor else {
        let page: Vec<Value> = items
            .iter()
            .take(p.count)
            .map(|seq| render(store, seq))
            .collect();
        let n = page.len();
        return ok(json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": n,
            "itemsPerPage": n,
            "startIndex": 1,
            "Resources": page,
        }));
    };
    let filter = p.filter.clone().unwrap_or_default();
    let after = if cursor.is_empty() {
        0
    } else {
        match store.cursors.get(cursor.as_str()) {
            Some(c) if cursor.chars().all(cursor_char) && c.kind == kind && c.filter == filter => {
                c.after
            }
            _ => return Err(ScimError::validation("The cursor is invalid.")),
        }
    };
    let mut rest = items.iter().filter(|seq| **seq > after).peekable();
    let mut page = Vec::new();
    let mut last = after;
    while page.len() < p.count {
        let Some(seq) = rest.next() else { break };
        last = *seq;
        page.push(render(store, seq));
    }
    let mut body = json!({
        "schemas": [LIST_SCHEMA],
        "itemsPerPage": page.len(),
        "Resources": page,
    });
    if rest.peek().is_some() {
        body["nextCursor"] = json!(store.new_cursor(kind, filter, last));
    }
    ok(body)
}

/// The creation numbers of the users `filter` selects, in creation order.
fn user_matches(store: &Store, filter: &str) -> Result<Vec<u64>, ScimError> {
    let cmps = parse_filter(filter)?;
    let select = |f: &dyn Fn(&Map<String, Value>) -> bool| -> Vec<u64> {
        store
            .users
            .iter()
            .filter(|(_, u)| f(u))
            .map(|(s, _)| *s)
            .collect()
    };
    match cmps.as_slice() {
        [c] => {
            let v = c.string()?;
            match c.attr.to_ascii_lowercase().as_str() {
                "username" => Ok(store
                    .user_names
                    .get(&v.to_lowercase())
                    .copied()
                    .into_iter()
                    .collect()),
                "externalid" => Ok(select(&|u| str_of(u, "externalId") == v)),
                "id" => Ok(select(&|u| str_of(u, "id") == v)),
                "groups.value" => {
                    let mut seqs: Vec<u64> = store
                        .group(v)
                        .into_iter()
                        .flat_map(|g| g.members.iter())
                        .filter_map(|id| store.user_seq.get(id).copied())
                        .collect();
                    seqs.sort_unstable();
                    Ok(seqs)
                }
                _ => Err(bad_filter(filter)),
            }
        }
        [a, b] => {
            let (id, manager) = match (a.is("id"), b.is("id")) {
                (true, false) => (a, b),
                (false, true) => (b, a),
                _ => return Err(bad_filter(filter)),
            };
            if !manager.is("manager") {
                return Err(bad_filter(filter));
            }
            let (id, manager) = (id.string()?, manager.string()?);
            Ok(select(&|u| {
                str_of(u, "id") == id
                    && u.get(ENTERPRISE)
                        .and_then(|e| e.get("manager"))
                        .and_then(|m| m.get("value"))
                        .and_then(Value::as_str)
                        == Some(manager)
            }))
        }
        _ => Err(bad_filter(filter)),
    }
}

/// The creation numbers of the groups `filter` selects, in creation order.
fn group_matches(store: &Store, filter: &str) -> Result<Vec<u64>, ScimError> {
    let cmps = parse_filter(filter)?;
    let select = |f: &dyn Fn(&GroupRec) -> bool| -> Vec<u64> {
        store
            .groups
            .iter()
            .filter(|(_, g)| f(g))
            .map(|(s, _)| *s)
            .collect()
    };
    let is_members = |c: &Cmp| c.is("members") || c.is("members.value");
    match cmps.as_slice() {
        [c] => {
            let v = c.string()?;
            if is_members(c) {
                return Ok(select(&|g| g.members.contains(v)));
            }
            match c.attr.to_ascii_lowercase().as_str() {
                "displayname" => {
                    let v = v.to_lowercase();
                    Ok(select(&|g| {
                        str_of(&g.resource, "displayName").to_lowercase() == v
                    }))
                }
                "externalid" => Ok(select(&|g| str_of(&g.resource, "externalId") == v)),
                _ => Err(bad_filter(filter)),
            }
        }
        [a, b] => {
            let (id, member) = match (a.is("id") && is_members(b), b.is("id") && is_members(a)) {
                (true, _) => (a, b),
                (_, true) => (b, a),
                _ => return Err(bad_filter(filter)),
            };
            let (id, member) = (id.string()?, member.string()?);
            Ok(select(&|g| {
                str_of(&g.resource, "id") == id && g.members.contains(member)
            }))
        }
        _ => Err(bad_filter(filter)),
    }
}

// ---------------------------------------------------------------------------------------
// Routes

fn json_body(body: &Bytes) -> Result<Value, ScimError> {
    serde_json::from_slice(body).map_err(|_| unparsable())
}

fn user_not_found(id: &str) -> ScimError {
    ScimError::not_found(format!("User {id} not found."))
}

fn group_not_found(id: &str) -> ScimError {
    ScimError::not_found(format!("Group {id} not found."))
}

fn create_user(store: &mut Store, body: &Value) -> Result<Reply, ScimError> {
    let attrs = normalize_user(body, true)?;
    if store.username_taken(str_of(&attrs, "userName"), None) {
        return Err(ScimError::conflict("Duplicate userName."));
    }
    let user = store.insert_user(attrs);
    Ok(Reply(StatusCode::CREATED, Some(Value::Object(user))))
}

/// Stores `attrs` (validated) as the attributes of user `id`, keeping `id` and `created`.
fn replace_user(
    store: &mut Store,
    id: &str,
    attrs: Map<String, Value>,
) -> Result<Reply, ScimError> {
    if store.username_taken(str_of(&attrs, "userName"), Some(id)) {
        return Err(ScimError::conflict("Duplicate userName."));
    }
    let user = store
        .edit_user(id, |user| {
            let mut meta = user.get("meta").cloned().unwrap_or_else(|| json!({}));
            meta["lastModified"] = json!(now());
            *user = user_resource(id, meta, attrs);
            user.clone()
        })
        .ok_or_else(|| user_not_found(id))?;
    ok(Value::Object(user))
}

fn patch_user(store: &mut Store, id: &str, body: &Value) -> Result<Reply, ScimError> {
    let user = store.user(id).ok_or_else(|| user_not_found(id))?;
    let ops = operations(body)?;
    let mut attrs = own_attrs(user);
    for op in &ops {
        patch_user_attrs(&mut attrs, op)?;
    }
    let attrs = normalize_user(&Value::Object(attrs), true)?;
    replace_user(store, id, attrs)
}

fn create_group(store: &mut Store, body: &Value) -> Result<Reply, ScimError> {
    let obj = body.as_object().ok_or_else(unparsable)?;
    let display = get_ci(obj, "displayName")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ScimError::validation("The attribute displayName is required."))?;
    let external = match get_ci(obj, "externalId") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ScimError::validation("externalId must be a string.")),
    };
    let members = match get_ci(obj, "members") {
        None => Vec::new(),
        Some(v) => member_ids(v)?,
    };
    if members.len() > MAX_MEMBER_CHANGES {
        return Err(ScimError::validation(format!(
            "A group may be created with at most {MAX_MEMBER_CHANGES} members."
        )));
    }
    if let Some(unknown) = members.iter().find(|m| store.user(m).is_none()) {
        return Err(ScimError::validation(format!(
            "User {unknown} does not exist."
        )));
    }
    if store.display_name_taken(display, None) {
        return Err(ScimError::conflict("Duplicate displayName."));
    }
    let group = store.insert_group(display, external, members.into_iter().collect());
    Ok(Reply(StatusCode::CREATED, Some(group)))
}

/// The user ids of a members value: `[{"value": id}, …]` or one `{"value": id}`.
fn member_ids(v: &Value) -> Result<Vec<String>, ScimError> {
    let items = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![v],
        _ => return Err(ScimError::validation("members must be [{\"value\": id}].")),
    };
    items
        .into_iter()
        .map(|m| {
            m.as_object()
                .and_then(|m| get_ci(m, "value"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| ScimError::validation("A member needs a string value."))
        })
        .collect()
}

/// Membership changes an operation asks (an estimate that never undercounts a valid one).
fn member_changes(op: &Op<'_>) -> usize {
    let list_len = |v: Option<&Value>| match v {
        Some(Value::Array(a)) => a.len(),
        Some(Value::Object(_)) => 1,
        _ => 0,
    };
    match op.path {
        Some(path) => match parse_path(path) {
            Ok(p) if p.attr.eq_ignore_ascii_case("members") => match &p.filter {
                Some(f) => f.len(),
                None => list_len(op.value),
            },
            _ => 0,
        },
        None => op
            .value
            .and_then(Value::as_object)
            .map_or(0, |o| list_len(get_ci(o, "members"))),
    }
}

/// A group being patched.
struct GroupDraft {
    display: String,
    external: Option<String>,
    members: BTreeSet<String>,
}

fn group_op(
    store: &Store,
    g: &mut GroupDraft,
    p: &PPath,
    kind: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let unsupported = || {
        ScimError::validation(format!(
            "The attribute {} is not supported for groups.",
            p.attr
        ))
    };
    if p.ext || p.sub.is_some() {
        return Err(unsupported());
    }
    match p.attr.to_ascii_lowercase().as_str() {
        "members" => match (kind, &p.filter) {
            (OpKind::Replace, _) => Err(ScimError::validation(
                "Replacing members is not supported: add and remove them.",
            )),
            (OpKind::Add, Some(_)) => Err(unsupported()),
            (OpKind::Remove, Some(f)) => {
                for c in f {
                    if !c.is("value") {
                        return Err(unsupported());
                    }
                    g.members.remove(c.string()?);
                }
                Ok(())
            }
            (OpKind::Add, None) => {
                let v = value.ok_or_else(|| ScimError::validation("add needs a value."))?;
                for id in member_ids(v)? {
                    if store.user(&id).is_none() {
                        return Err(ScimError::validation(format!("User {id} does not exist.")));
                    }
                    g.members.insert(id);
                }
                Ok(())
            }
            (OpKind::Remove, None) => {
                let v = value.ok_or_else(|| {
                    ScimError::validation("Removing all members is not supported.")
                })?;
                for id in member_ids(v)? {
                    g.members.remove(&id);
                }
                Ok(())
            }
        },
        "displayname" if p.filter.is_none() => match (kind, value.and_then(Value::as_str)) {
            (OpKind::Remove, _) => Err(ScimError::validation(
                "The attribute displayName cannot be removed.",
            )),
            (_, Some(s)) if !s.trim().is_empty() => {
                g.display = s.to_owned();
                Ok(())
            }
            _ => Err(ScimError::validation("displayName must be a string.")),
        },
        "externalid" if p.filter.is_none() => match (kind, value) {
            (OpKind::Remove, _) => {
                g.external = None;
                Ok(())
            }
            (_, Some(Value::String(s))) => {
                g.external = Some(s.clone());
                Ok(())
            }
            _ => Err(ScimError::validation("externalId must be a string.")),
        },
        _ => Err(unsupported()),
    }
}

fn patch_group(store: &mut Store, id: &str, body: &Value) -> Result<Reply, ScimError> {
    let rec = store.group(id).ok_or_else(|| group_not_found(id))?;
    let ops = operations(body)?;
    let changes: usize = ops.iter().map(member_changes).sum();
    if changes > MAX_MEMBER_CHANGES {
        return Err(ScimError::validation(format!(
            "A request may change at most {MAX_MEMBER_CHANGES} memberships."
        )));
    }
    let mut g = GroupDraft {
        display: str_of(&rec.resource, "displayName").to_owned(),
        external: rec
            .resource
            .get("externalId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        members: rec.members.clone(),
    };
    for op in &ops {
        match op.path {
            Some(path) => group_op(store, &mut g, &parse_path(path)?, op.kind, op.value)?,
            None => {
                if op.kind == OpKind::Remove {
                    return Err(ScimError::validation("A remove operation needs a path."));
                }
                let obj = op.value.and_then(Value::as_object).ok_or_else(|| {
                    ScimError::validation("An operation without a path needs an object value.")
                })?;
                for (k, v) in obj {
                    let p = PPath {
                        ext: false,
                        attr: k.clone(),
                        filter: None,
                        sub: None,
                    };
                    group_op(store, &mut g, &p, op.kind, Some(v))?;
                }
            }
        }
    }
    if store.display_name_taken(&g.display, Some(id)) {
        return Err(ScimError::conflict("Duplicate displayName."));
    }
    let rec = store.group_mut(id).ok_or_else(|| group_not_found(id))?;
    rec.resource.insert("displayName".into(), json!(g.display));
    match g.external {
        Some(e) => rec.resource.insert("externalId".into(), json!(e)),
        None => rec.resource.remove("externalId"),
    };
    if let Some(meta) = rec.resource.get_mut("meta") {
        meta["lastModified"] = json!(now());
    }
    rec.members = g.members;
    Ok(Reply(StatusCode::NO_CONTENT, None))
}

fn route(store: &mut Store, method: &Method, uri: &Uri, body: &Bytes) -> Result<Reply, ScimError> {
    let not_found = || ScimError::not_found(format!("No resource at {}.", uri.path()));
    let rest = uri.path().strip_prefix(BASE_PATH).ok_or_else(not_found)?;
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let m = method.as_str();
    match (segs.as_slice(), m) {
        (["Users"], "GET") => {
            let p = params(uri)?;
            let items = match &p.filter {
                Some(f) => user_matches(store, f)?,
                None => store.users.keys().copied().collect(),
            };
            page(store, Kind::Users, &p, items)
        }
        (["Users"], "POST") => create_user(store, &json_body(body)?),
        (["Users", id], "GET") => ok(Value::Object(
            store.user(id).ok_or_else(|| user_not_found(id))?.clone(),
        )),
        (["Users", id], "PUT") => {
            store.user(id).ok_or_else(|| user_not_found(id))?;
            let attrs = normalize_user(&json_body(body)?, true)?;
            replace_user(store, id, attrs)
        }
        (["Users", id], "PATCH") => patch_user(store, id, &json_body(body)?),
        (["Users", id], "DELETE") => {
            if store.delete_user(id) {
                Ok(Reply(StatusCode::NO_CONTENT, None))
            } else {
                Err(user_not_found(id))
            }
        }
        (["Groups"], "GET") => {
            let p = params(uri)?;
            let items = match &p.filter {
                Some(f) => group_matches(store, f)?,
                None => store.groups.keys().copied().collect(),
            };
            page(store, Kind::Groups, &p, items)
        }
        (["Groups"], "POST") => create_group(store, &json_body(body)?),
        (["Groups", id], "GET") => ok(render_group(
            store.group(id).ok_or_else(|| group_not_found(id))?,
        )),
        (["Groups", id], "PATCH") => patch_group(store, id, &json_body(body)?),
        (["Groups", id], "DELETE") => {
            let seq = store
                .group_seq
                .remove(*id)
                .ok_or_else(|| group_not_found(id))?;
            store.groups.remove(&seq);
            Ok(Reply(StatusCode::NO_CONTENT, None))
        }
        (["ServiceProviderConfig"], "GET") => ok(service_provider_config()),
        (["ResourceTypes"], "GET") => ok(list_of(resource_types())),
        (["ResourceTypes", id], "GET") => one_of(resource_types(), id),
        (["Schemas"], "GET") => ok(list_of(schemas())),
        (["Schemas", id], "GET") => one_of(schemas(), id),
        (
            ["Users" | "Groups" | "ServiceProviderConfig" | "ResourceTypes" | "Schemas"]
            | ["Users" | "Groups" | "ResourceTypes" | "Schemas", _],
            _,
        ) => Err(unsupported_op()),
        _ => Err(not_found()),
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && token.trim() == AWS_TOKEN
        })
}

/// Every request: logged, authenticated, counted, maybe throttled, then served. The lock is
/// held only by this synchronous body (there is no `.await` in it).
async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = lock(&shared);
    let Inner {
        store,
        counts,
        throttle,
    } = &mut *inner;
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    counts
        .log
        .push((method.as_str().to_owned(), path_and_query));
    if !authorized(&headers) {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "The security token included in the request is invalid.",
        );
    }
    counts.requests += 1;
    *counts
        .by_method
        .entry(method.as_str().to_owned())
        .or_default() += 1;
    if throttle.hit() {
        return error_response(StatusCode::TOO_MANY_REQUESTS, "Rate exceeded.");
    }
    match route(store, &method, &uri, &body) {
        Ok(Reply(status, body)) => {
            if matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE") {
                counts.writes += 1;
            }
            match body {
                Some(b) => (status, axum::Json(b)).into_response(),
                None => status.into_response(),
            }
        }
        Err(e) => error_response(e.status, &e.detail),
    }
}

// ---------------------------------------------------------------------------------------
// Discovery

fn service_provider_config() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://docs.aws.amazon.com/singlesignon/latest/developerguide/what-is-scim.html",
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication scheme using the OAuth Bearer Token Standard",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true,
        }],
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 1, "maxPayloadSize": 1_048_576},
        "filter": {"supported": true, "maxResults": MAX_COUNT},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
    })
}

fn list_of(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": resources.len(),
        "itemsPerPage": resources.len(),
        "startIndex": 1,
        "Resources": resources,
    })
}

fn one_of(resources: Vec<Value>, id: &str) -> Result<Reply, ScimError> {
    resources
        .into_iter()
        .find(|r| r["id"].as_str() == Some(id))
        .map(|r| Reply(StatusCode::OK, Some(r)))
        .ok_or_else(|| ScimError::not_found(format!("{id} not found.")))
}

fn resource_types() -> Vec<Value> {
    let schema = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
    vec![
        json!({
            "schemas": [schema], "id": "User", "name": "User", "endpoint": "/Users",
            "description": "User Account", "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": ENTERPRISE, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": "/ResourceTypes/User"},
        }),
        json!({
            "schemas": [schema], "id": "Group", "name": "Group", "endpoint": "/Groups",
            "description": "Group", "schema": GROUP_SCHEMA, "schemaExtensions": [],
            "meta": {"resourceType": "ResourceType", "location": "/ResourceTypes/Group"},
        }),
    ]
}

/// A schema attribute (RFC 7643 §7): `ty` `string`, `boolean`, `complex` or `reference`.
fn attr(name: &str, ty: &str, multi: bool, required: bool, subs: Vec<Value>) -> Value {
    let mut a = json!({
        "name": name, "type": ty, "multiValued": multi, "required": required,
        "caseExact": false, "mutability": "readWrite", "returned": "default",
        "uniqueness": if name == "userName" { "server" } else { "none" },
    });
    if !subs.is_empty() {
        a["subAttributes"] = Value::Array(subs);
    }
    a
}

fn strings(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|n| {
            let ty = if *n == "primary" { "boolean" } else { "string" };
            attr(n, ty, false, false, vec![])
        })
        .collect()
}

fn schemas() -> Vec<Value> {
    let schema = "urn:ietf:params:scim:schemas:core:2.0:Schema";
    let mut user_attrs = vec![
        attr("userName", "string", false, true, vec![]),
        attr("name", "complex", false, true, strings(&NAME_SUBS)),
        attr("displayName", "string", false, true, vec![]),
    ];
    user_attrs.extend(
        USER_STRINGS
            .iter()
            .filter(|n| !matches!(**n, "userName" | "displayName" | "externalId"))
            .map(|n| attr(n, "string", false, false, vec![])),
    );
    user_attrs.push(attr("active", "boolean", false, false, vec![]));
    for (name, subs) in MULTI {
        user_attrs.push(attr(name, "complex", true, false, strings(subs)));
    }
    let mut enterprise = strings(&ENTERPRISE_STRINGS);
    enterprise.push(attr(
        "manager",
        "complex",
        false,
        false,
        strings(&["value"]),
    ));
    let meta = |id: &str| json!({"resourceType": "Schema", "location": format!("/Schemas/{id}")});
    vec![
        json!({"schemas": [schema], "id": USER_SCHEMA, "name": "User", "description": "User Account",
               "attributes": user_attrs, "meta": meta(USER_SCHEMA)}),
        json!({"schemas": [schema], "id": GROUP_SCHEMA, "name": "Group", "description": "Group",
               "attributes": [
                   attr("displayName", "string", false, true, vec![]),
                   attr("members", "complex", true, false, strings(&["value"])),
               ],
               "meta": meta(GROUP_SCHEMA)}),
        json!({"schemas": [schema], "id": ENTERPRISE, "name": "EnterpriseUser",
               "description": "Enterprise User", "attributes": enterprise, "meta": meta(ENTERPRISE)}),
    ]
}

// ---------------------------------------------------------------------------------------
// The server

/// An Identity Center SCIM double serving in a background task on loopback; dropping it
/// stops the server. Its methods read and change the state directly (no HTTP, no counting).
pub struct AwsDouble {
    url: String,
    shared: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AwsDouble {
    /// Serves an empty Identity Store on a free loopback port.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start() -> std::io::Result<AwsDouble> {
        AwsDouble::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves an empty Identity Store on `addr` (the `aws_double` example: a double to try
    /// `profile = "aws-identity-center"` against by hand).
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<AwsDouble> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}{BASE_PATH}", listener.local_addr()?);
        let prefix: u64 = rand::random();
        let shared: Shared = Arc::new(Mutex::new(Inner {
            store: Store {
                id_prefix: format!("{:010x}", prefix & 0xff_ffff_ffff),
                ..Store::default()
            },
            ..Inner::default()
        }));
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(AwsDouble {
            url,
            shared,
            stop: Some(stop),
        })
    }

    /// The SCIM base URL, `http://127.0.0.1:PORT/scim/v2`.
    pub fn base_url(&self) -> String {
        self.url.clone()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        lock(&self.shared)
    }

    /// Answers `429` (without `Retry-After`) to every `n`-th authenticated request from now
    /// on; `0` turns it off.
    pub fn throttle_every(&self, n: u32) {
        let mut inner = self.inner();
        inner.throttle.every = n;
        inner.throttle.seen = 0;
    }

    /// Answers `429` (without `Retry-After`) to the next `k` authenticated requests; `0`
    /// turns it off.
    pub fn throttle_next(&self, k: u32) {
        self.inner().throttle.next = k;
    }

    /// Authenticated requests received (those answered `429` included).
    pub fn requests(&self) -> u64 {
        self.inner().counts.requests
    }

    /// Successful writes: `POST`, `PUT`, `PATCH` and `DELETE` answered `2xx`.
    pub fn writes(&self) -> u64 {
        self.inner().counts.writes
    }

    /// Authenticated requests with this method (`"GET"`, `"PATCH"`, …; case-insensitive).
    pub fn requests_by(&self, method: &str) -> u64 {
        self.inner()
            .counts
            .by_method
            .get(&method.to_ascii_uppercase())
            .copied()
            .unwrap_or(0)
    }

    /// Every request received, unauthenticated ones included: (method, path and query).
    pub fn log(&self) -> Vec<(String, String)> {
        self.inner().counts.log.clone()
    }

    /// Resets [`AwsDouble::requests`], [`AwsDouble::writes`], [`AwsDouble::requests_by`]
    /// and [`AwsDouble::log`] (not the throttling).
    pub fn reset_counts(&self) {
        self.inner().counts = Counts::default();
    }

    /// Every user as stored (and served), in creation order.
    pub fn users(&self) -> Vec<Value> {
        self.inner()
            .store
            .users
            .values()
            .map(|u| Value::Object(u.clone()))
            .collect()
    }

    /// The user with this `userName` (compared case-insensitively).
    pub fn user_by_name(&self, user_name: &str) -> Option<Value> {
        self.inner()
            .store
            .user_by_name(user_name)
            .map(|u| Value::Object(u.clone()))
    }

    /// Every group as served (`members` always `[]`), in creation order; see
    /// [`AwsDouble::groups_with_members`] for the memberships.
    pub fn groups(&self) -> Vec<Value> {
        self.inner()
            .store
            .groups
            .values()
            .map(render_group)
            .collect()
    }

    /// Every group with its real `members` (`[{"value": user id}]`), which the API never
    /// shows.
    pub fn groups_with_members(&self) -> Vec<Value> {
        self.inner()
            .store
            .groups
            .values()
            .map(|g| {
                let mut v = render_group(g);
                v["members"] = g.members.iter().map(|m| json!({ "value": m })).collect();
                v
            })
            .collect()
    }

    /// The id of the group with this `displayName` (compared case-insensitively).
    pub fn group_id(&self, display_name: &str) -> Option<String> {
        self.inner()
            .store
            .group_by_name(display_name)
            .map(|g| str_of(&g.resource, "id").to_owned())
    }

    /// The user ids of a group's members (empty for an unknown group).
    pub fn members(&self, group_id: &str) -> BTreeSet<String> {
        self.inner()
            .store
            .group(group_id)
            .map(|g| g.members.clone())
            .unwrap_or_default()
    }

    /// The `userName`s of the members of the group with this `displayName`.
    pub fn member_names(&self, display_name: &str) -> BTreeSet<String> {
        let inner = self.inner();
        let store = &inner.store;
        store
            .group_by_name(display_name)
            .map(|g| {
                g.members
                    .iter()
                    .filter_map(|m| store.user(m))
                    .map(|u| str_of(u, "userName").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Makes a user a member of a group, as in the console; `false` if either is unknown.
    pub fn add_member_directly(&self, group_id: &str, user_id: &str) -> bool {
        let mut inner = self.inner();
        let store = &mut inner.store;
        if store.user(user_id).is_none() {
            return false;
        }
        match store.group_mut(group_id) {
            Some(g) => {
                g.members.insert(user_id.to_owned());
                true
            }
            None => false,
        }
    }

    /// Removes a user from a group, as in the console; `false` if it was not a member.
    pub fn remove_member_directly(&self, group_id: &str, user_id: &str) -> bool {
        self.inner()
            .store
            .group_mut(group_id)
            .is_some_and(|g| g.members.remove(user_id))
    }

    /// Sets a top-level attribute of a user as is (no validation; `Value::Null` removes
    /// it), as an edit in the console would; `false` if the user is unknown.
    pub fn set_user_attr_directly(&self, user_id: &str, attr: &str, value: Value) -> bool {
        self.inner()
            .store
            .edit_user(user_id, |user| {
                let key = key_ci(user, attr);
                if value.is_null() {
                    user.remove(&key);
                } else {
                    user.insert(key, value);
                }
                if let Some(meta) = user.get_mut("meta") {
                    meta["lastModified"] = json!(now());
                }
            })
            .is_some()
    }

    /// Deletes a user and its memberships, as in the console; `false` if unknown.
    pub fn delete_user_directly(&self, user_id: &str) -> bool {
        self.inner().store.delete_user(user_id)
    }

    /// Creates a user as in the console and answers its id: unsupported attributes are
    /// dropped, but nothing is required or checked (not even `userName`'s uniqueness).
    pub fn create_user_directly(&self, user: Value) -> String {
        let attrs = normalize_user(&user, false).unwrap_or_default();
        let user = self.inner().store.insert_user(attrs);
        str_of(&user, "id").to_owned()
    }

    /// Creates a group without members as in the console and answers its id (the
    /// `displayName`'s uniqueness is not checked).
    pub fn create_group_directly(&self, display_name: &str) -> String {
        let group = self
            .inner()
            .store
            .insert_group(display_name, None, BTreeSet::new());
        group["id"].as_str().unwrap_or_default().to_owned()
    }
}

impl Drop for AwsDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A client of the double: answers (status, headers, body or `Null`).
    struct Client {
        http: reqwest::Client,
        base: String,
    }

    impl Client {
        fn new(double: &AwsDouble) -> Self {
            Client {
                http: reqwest::Client::new(),
                base: double.base_url(),
            }
        }

        async fn call(
            &self,
            method: &str,
            path: &str,
            body: Option<Value>,
        ) -> Result<(u16, reqwest::header::HeaderMap, Value), Box<dyn std::error::Error>> {
            let method = reqwest::Method::from_bytes(method.as_bytes())?;
            let mut req = self
                .http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(AWS_TOKEN);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)?
            };
            Ok((status, headers, body))
        }
    }

    /// Percent-encodes a query value (enough for filters and cursors).
    fn enc(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                ' ' => "%20".to_owned(),
                '"' => "%22".to_owned(),
                '+' => "%2B".to_owned(),
                '/' => "%2F".to_owned(),
                '=' => "%3D".to_owned(),
                '&' => "%26".to_owned(),
                c => c.to_string(),
            })
            .collect()
    }

    fn user(n: usize) -> Value {
        json!({
            "schemas": [USER_SCHEMA],
            "userName": format!("user{n:03}@example.com"),
            "displayName": format!("User {n}"),
            "name": {"givenName": "User", "familyName": format!("N{n}")},
            "emails": [{"value": format!("user{n:03}@example.com"), "type": "work", "primary": true}],
        })
    }

    fn assert_aws_error(body: &Value, status: &str) {
        assert_eq!(body["schemas"], json!([ERROR_SCHEMA]), "{body}");
        assert_eq!(body["status"], json!(status), "{body}");
        assert!(body.get("scimType").is_none(), "{body}");
        assert!(body["detail"].is_string(), "{body}");
    }

    #[tokio::test]
    async fn cursor_paging_reaches_every_user_and_total_results_counts_the_page() -> TestResult {
        let double = AwsDouble::start().await?;
        let c = Client::new(&double);
        for n in 0..250 {
            let (status, _, body) = c.call("POST", "/Users", Some(user(n))).await?;
            assert_eq!(status, 201, "{body}");
        }
        assert_eq!(double.writes(), 250);

        let mut seen = BTreeSet::new();
        let mut pages = 0;
        let mut cursor = String::new();
        loop {
            let (status, _, body) = c
                .call(
                    "GET",
                    &format!("/Users?count=100&cursor={}", enc(&cursor)),
                    None,
                )
                .await?;
            assert_eq!(status, 200, "{body}");
            pages += 1;
            assert!(body.get("totalResults").is_none() && body.get("startIndex").is_none());
            let resources = body["Resources"].as_array().cloned().unwrap_or_default();
            assert_eq!(body["itemsPerPage"], json!(resources.len()));
            for r in &resources {
                seen.insert(r["id"].as_str().unwrap_or_default().to_owned());
            }
            match body["nextCursor"].as_str() {
                Some(next) => {
                    assert!(next.chars().all(cursor_char), "{next}");
                    cursor = next.to_owned();
                }
                None => {
                    assert_eq!(resources.len(), 50);
                    break;
                }
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen.len(), 250);

        // Without a cursor: the first page only, totalResults its size, startIndex ignored.
        let (status, _, body) = c.call("GET", "/Users?startIndex=101", None).await?;
        assert_eq!(status, 200);
        assert_eq!(body["totalResults"], json!(100));
        assert_eq!(body["startIndex"], json!(1));
        assert_eq!(body["Resources"].as_array().map(Vec::len), Some(100));
        assert_eq!(
            body["Resources"][0]["userName"],
            json!("user000@example.com")
        );
        assert!(body.get("nextCursor").is_none());

        let (status, _, body) = c.call("GET", "/Users?count=101", None).await?;
        assert_eq!(status, 400);
        assert_aws_error(&body, "400");
        let (status, _, body) = c.call("GET", "/Users?cursor=bm9wZQ%3D%3D", None).await?;
        assert_eq!(status, 400);
        assert_aws_error(&body, "400");
        Ok(())
    }

    #[tokio::test]
    async fn memberships_show_only_through_filters() -> TestResult {
        let double = AwsDouble::start().await?;
        let c = Client::new(&double);
        let (_, _, u) = c.call("POST", "/Users", Some(user(1))).await?;
        let (_, _, other) = c.call("POST", "/Users", Some(user(2))).await?;
        let (uid, oid) = (
            u["id"].as_str().unwrap_or_default(),
            other["id"].as_str().unwrap_or_default(),
        );
        let (status, _, g) = c
            .call(
                "POST",
                "/Groups",
                Some(json!({"displayName": "Engineers", "externalId": "eng"})),
            )
            .await?;
        assert_eq!(status, 201, "{g}");
        assert_eq!(g["members"], json!([]));
        let gid = g["id"].as_str().unwrap_or_default();

        let add = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Add", "path": "members", "value": [{"value": uid}]}],
        });
        let (status, _, body) = c
            .call("PATCH", &format!("/Groups/{gid}"), Some(add.clone()))
            .await?;
        assert_eq!(status, 204, "{body}");
        assert_eq!(body, Value::Null);
        let (status, _, _) = c
            .call("PATCH", &format!("/Groups/{gid}"), Some(add))
            .await?;
        assert_eq!(status, 204, "adding a member twice is a no-op");

        let (status, _, body) = c.call("GET", &format!("/Groups/{gid}"), None).await?;
        assert_eq!(status, 200);
        assert_eq!(body["members"], json!([]));
        assert_eq!(body["externalId"], json!("eng"));

        for filter in [
            format!("id eq \"{gid}\" and members eq \"{uid}\""),
            format!("members eq \"{uid}\" and id eq \"{gid}\""),
        ] {
            let (status, _, body) = c
                .call("GET", &format!("/Groups?filter={}", enc(&filter)), None)
                .await?;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["totalResults"], json!(1));
            assert_eq!(body["Resources"][0]["id"], json!(gid));
            assert_eq!(body["Resources"][0]["members"], json!([]));
        }
        let filter = format!("id eq \"{gid}\" and members eq \"{oid}\"");
        let (_, _, body) = c
            .call("GET", &format!("/Groups?filter={}", enc(&filter)), None)
            .await?;
        assert_eq!(body["totalResults"], json!(0));
        let filter = format!("members eq \"{uid}\"");
        let (_, _, body) = c
            .call("GET", &format!("/Groups?filter={}", enc(&filter)), None)
            .await?;
        assert_eq!(body["Resources"][0]["id"], json!(gid));
        let filter = format!("groups.value eq \"{gid}\"");
        let (_, _, body) = c
            .call("GET", &format!("/Users?filter={}", enc(&filter)), None)
            .await?;
        assert_eq!(body["totalResults"], json!(1));
        assert_eq!(body["Resources"][0]["id"], json!(uid));

        assert_eq!(double.members(gid), BTreeSet::from([uid.to_owned()]));
        assert_eq!(
            double.member_names("engineers"),
            BTreeSet::from(["user001@example.com".to_owned()])
        );

        // Remove by filter, a non-member's removal is a no-op, removing all is refused.
        let remove = json!({"Operations": [
            {"op": "remove", "path": format!("members[value eq \"{uid}\"]")},
            {"op": "remove", "path": "members", "value": [{"value": oid}]},
        ]});
        let (status, _, _) = c
            .call("PATCH", &format!("/Groups/{gid}"), Some(remove))
            .await?;
        assert_eq!(status, 204);
        assert!(double.members(gid).is_empty());
        let all = json!({"Operations": [{"op": "remove", "path": "members"}]});
        let (status, _, body) = c
            .call("PATCH", &format!("/Groups/{gid}"), Some(all))
            .await?;
        assert_eq!(status, 400);
        assert_aws_error(&body, "400");
        let replace = json!({"Operations": [{"op": "replace", "path": "members", "value": [{"value": uid}]}]});
        let (status, _, _) = c
            .call("PATCH", &format!("/Groups/{gid}"), Some(replace))
            .await?;
        assert_eq!(status, 400);

        // Deleting a user drops its memberships.
        assert!(double.add_member_directly(gid, uid));
        let (status, _, _) = c.call("DELETE", &format!("/Users/{uid}"), None).await?;
        assert_eq!(status, 204);
        assert!(double.members(gid).is_empty());
        let (status, _, body) = c.call("GET", &format!("/Users/{uid}"), None).await?;
        assert_eq!(status, 404);
        assert_aws_error(&body, "404");
        Ok(())
    }

    #[tokio::test]
    async fn more_than_100_membership_changes_are_refused() -> TestResult {
        let double = AwsDouble::start().await?;
        let c = Client::new(&double);
        let ids: Vec<String> = (0..101)
            .map(|n| double.create_user_directly(user(n)))
            .collect();
        let gid = double.create_group_directly("Big");
        let values: Vec<Value> = ids.iter().map(|id| json!({ "value": id })).collect();

        let one_op = json!({"Operations": [{"op": "add", "path": "members", "value": values}]});
        let (status, headers, body) = c
            .call("PATCH", &format!("/Groups/{gid}"), Some(one_op))
            .await?;
        assert_eq!(status, 400);
        assert!(headers.get("retry-after").is_none());
        assert_aws_error(&body, "400");

        let split = json!({"Operations": [
            {"op": "add", "path": "members", "value": values.get(..60)},
            {"op": "add", "path": "members", "value": values.get(60..)},
        ]});
        let (status, _, body) = c
            .call("PATCH", &format!("/Groups/{gid}"), Some(split))
            .await?;
        assert_eq!(status, 400);
        assert_aws_error(&body, "400");
        assert!(
            double.members(&gid).is_empty(),
            "a refused PATCH changes nothing"
        );

        let hundred =
            json!({"Operations": [{"op": "add", "path": "members", "value": values.get(..100)}]});
        let (status, _, _) = c
            .call("PATCH", &format!("/Groups/{gid}"), Some(hundred))
            .await?;
        assert_eq!(status, 204);
        assert_eq!(double.members(&gid).len(), 100);

        let unknown = json!({"Operations": [{"op": "add", "path": "members", "value": [{"value": "nobody"}]}]});
        let (status, _, _) = c
            .call("PATCH", &format!("/Groups/{gid}"), Some(unknown))
            .await?;
        assert_eq!(status, 400);
        Ok(())
    }

    #[tokio::test]
    async fn unsupported_filters_are_refused() -> TestResult {
        let double = AwsDouble::start().await?;
        let c = Client::new(&double);
        for (path, filter) in [
            ("/Users", "userName co \"a\""),
            ("/Users", "userName eq \"a\" or userName eq \"b\""),
            ("/Users", "emails.value eq \"a@example.com\""),
            ("/Users", "displayName eq \"a\""),
            ("/Groups", "displayName sw \"a\""),
            ("/Groups", "id eq \"a\""),
        ] {
            let (status, _, body) = c
                .call("GET", &format!("{path}?filter={}", enc(filter)), None)
                .await?;
            assert_eq!(status, 400, "{filter}: {body}");
            assert_aws_error(&body, "400");
        }
        double.create_user_directly(user(7));
        let filter = "USERNAME EQ \"User007@Example.com\"";
        let (status, _, body) = c
            .call("GET", &format!("/Users?filter={}", enc(filter)), None)
            .await?;
        assert_eq!(status, 200);
        assert_eq!(body["totalResults"], json!(1));
        Ok(())
    }

    #[tokio::test]
    async fn throttling_answers_429_without_retry_after() -> TestResult {
        let double = AwsDouble::start().await?;
        let c = Client::new(&double);
        double.throttle_next(2);
        for _ in 0..2 {
            let (status, headers, body) = c.call("GET", "/Users", None).await?;
            assert_eq!(status, 429);
            assert!(headers.get("retry-after").is_none());
            assert_aws_error(&body, "429");
        }
        let (status, _, _) = c.call("GET", "/Users", None).await?;
        assert_eq!(status, 200);
        assert_eq!(double.requests(), 3);
        assert_eq!(double.requests_by("get"), 3);

        double.throttle_every(3);
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(c.call("GET", "/Groups", None).await?.0);
        }
        assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);
        double.throttle_every(0);

        // Unauthenticated requests are logged but neither counted nor throttled.
        let resp = reqwest::get(format!("{}/Users", double.base_url())).await?;
        assert_eq!(resp.status().as_u16(), 401);
        assert_eq!(double.requests(), 9);
        assert_eq!(double.log().len(), 10);
        double.reset_counts();
        assert_eq!((double.requests(), double.log().len()), (0, 0));
        Ok(())
    }

    #[tokio::test]
    async fn groups_cannot_be_put() -> TestResult {
        let double = AwsDouble::start().await?;
        let c = Client::new(&double);
        let gid = double.create_group_directly("Ops");
        let (status, _, body) = c
            .call(
                "PUT",
                &format!("/Groups/{gid}"),
                Some(json!({"displayName": "Ops", "members": []})),
            )
            .await?;
        assert_eq!(status, 400);
        assert_aws_error(&body, "400");
        assert_eq!(double.writes(), 0);
        Ok(())
    }

    #[tokio::test]
    async fn users_keep_only_what_identity_center_stores() -> TestResult {
        let double = AwsDouble::start().await?;
        let c = Client::new(&double);
        let mut body = user(1);
        body["nickName"] = json!("one");
        body["x509Certificates"] = json!([{"value": "abc"}]);
        body[ENTERPRISE] = json!({"department": "R&D", "employeeNumber": "42", "badge": "x",
                                  "manager": {"value": "m1", "displayName": "Boss"}});
        let (status, _, created) = c.call("POST", "/Users", Some(body)).await?;
        assert_eq!(status, 201, "{created}");
        assert!(created.get("x509Certificates").is_none());
        assert_eq!(created["active"], json!(true));
        assert_eq!(created[ENTERPRISE]["manager"], json!({"value": "m1"}));
        assert!(created[ENTERPRISE].get("badge").is_none());
        assert!(created["meta"]["created"].is_string());
        let id = created["id"].as_str().unwrap_or_default();

        // Required attributes, one email, unique userName.
        let mut missing = user(2);
        missing["name"] = json!({"familyName": "N2"});
        let (status, _, body) = c.call("POST", "/Users", Some(missing)).await?;
        assert_eq!((status, body["status"].clone()), (400, json!("400")));
        let mut two_emails = user(3);
        two_emails["emails"] = json!([{"value": "a@x"}, {"value": "b@x"}]);
        let (status, _, _) = c.call("POST", "/Users", Some(two_emails)).await?;
        assert_eq!(status, 400);
        let mut dup = user(4);
        dup["userName"] = json!("USER001@example.com");
        let (status, _, body) = c.call("POST", "/Users", Some(dup)).await?;
        assert_eq!(status, 409);
        assert_aws_error(&body, "409");

        // PATCH paths.
        let patch = json!({"Operations": [
            {"op": "Replace", "path": "title", "value": "Engineer"},
            {"op": "replace", "path": "name.givenName", "value": "Uno"},
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "uno@example.com"},
            {"op": "add", "path": format!("{ENTERPRISE}:department"), "value": "Platform"},
            {"op": "replace", "value": {"displayName": "Uno N1", "nickName": "u"}},
            {"op": "remove", "path": format!("{ENTERPRISE}:manager")},
        ]});
        let (status, _, patched) = c
            .call("PATCH", &format!("/Users/{id}"), Some(patch))
            .await?;
        assert_eq!(status, 200, "{patched}");
        assert_eq!(patched["title"], json!("Engineer"));
        assert_eq!(patched["name"]["givenName"], json!("Uno"));
        assert_eq!(
            patched["emails"],
            json!([{"value": "uno@example.com", "type": "work", "primary": true}])
        );
        assert_eq!(patched[ENTERPRISE]["department"], json!("Platform"));
        assert!(patched[ENTERPRISE].get("manager").is_none());
        assert_eq!(patched["displayName"], json!("Uno N1"));
        assert_eq!(double.user_by_name("user001@EXAMPLE.com"), Some(patched));

        for path in ["userName", "active"] {
            let remove = json!({"Operations": [{"op": "remove", "path": path}]});
            let (status, _, _) = c
                .call("PATCH", &format!("/Users/{id}"), Some(remove))
                .await?;
            assert_eq!(status, 400, "{path}");
        }
        let no_path = json!({"Operations": [{"op": "remove"}]});
        let (status, _, _) = c
            .call("PATCH", &format!("/Users/{id}"), Some(no_path))
            .await?;
        assert_eq!(status, 400);

        // Out of band changes are visible through the API.
        assert!(double.set_user_attr_directly(id, "title", json!("Manager")));
        let (_, _, read) = c.call("GET", &format!("/Users/{id}"), None).await?;
        assert_eq!(read["title"], json!("Manager"));

        let (status, _, spc) = c.call("GET", "/ServiceProviderConfig", None).await?;
        assert_eq!(status, 200);
        assert_eq!(spc["bulk"]["supported"], json!(false));
        assert_eq!(spc["filter"]["maxResults"], json!(100));
        let (_, _, types) = c.call("GET", "/ResourceTypes", None).await?;
        assert_eq!(types["totalResults"], json!(2));
        let (_, _, schemas) = c.call("GET", "/Schemas", None).await?;
        assert_eq!(schemas["totalResults"], json!(3));
        Ok(())
    }
}
