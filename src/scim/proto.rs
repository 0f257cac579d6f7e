//! SCIM 2.0 wire shapes (RFC 7643, RFC 7644): schema URNs, the User resource built from
//! attribute paths and read back into them, PATCH operations, filters, list responses and
//! error bodies.
//!
//! Everything here is pure: no IO. The mapping vocabulary is [`Attrs`], a map from attribute
//! *paths* to JSON values. Four path shapes are understood:
//!
//! | shape | example |
//! |---|---|
//! | `simple` | `userName`, `active` |
//! | `parent.sub` | `name.givenName` |
//! | `multi[attr eq "X"].sub` | `emails[type eq "work"].value` |
//! | `urn:…:Schema:attr` or `urn:…:Schema:attr.sub` | `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department` |
//!
//! A key that fits none of them is treated as a simple top-level attribute.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::model::{AttrKey, Attrs, ScimId};

/// Core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension URN.
pub const ENTERPRISE_USER_SCHEMA: &str = crate::model::attr_path::ENTERPRISE;
/// PATCH request message URN.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// List response message URN.
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Error message URN.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// One parsed attribute path.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct AttrPath {
    /// Extension schema URN (`urn:…:User`) when the path lives in an extension object.
    pub(super) ext: Option<String>,
    /// Top-level attribute name (inside the extension object when `ext` is set).
    pub(super) attr: String,
    kind: PathKind,
}

#[derive(Clone, Debug, PartialEq)]
enum PathKind {
    Simple,
    Sub(String),
    Multi {
        filter_attr: String,
        filter_value: Value,
        sub: String,
    },
}

/// Distinct paths a thread keeps parsed: a cycle reads a handful of mapped paths for every
/// user, so each is parsed once, not once a user and request; paths beyond these (none in a
/// sane mapping) are parsed each time.
const PARSED_PATHS: usize = 256;

thread_local! {
    static PARSED: RefCell<HashMap<Box<str>, Rc<AttrPath>>> = RefCell::new(HashMap::new());
}

impl AttrPath {
    /// Parses a mapping path; falls back to a simple attribute named by the whole key.
    pub(super) fn parse(path: &str) -> Rc<Self> {
        PARSED.with_borrow_mut(|parsed| {
            if let Some(p) = parsed.get(path) {
                return p.clone();
            }
            let p = Rc::new(parse_path(path).unwrap_or_else(|| AttrPath {
                ext: None,
                attr: path.to_owned(),
                kind: PathKind::Simple,
            }));
            if parsed.len() < PARSED_PATHS {
                parsed.insert(path.into(), p.clone());
            }
            p
        })
    }

    /// The PATCH path of the whole (multi-valued) attribute: `emails` or `urn:…:User:emails`.
    fn attribute_path(&self) -> String {
        match &self.ext {
            Some(urn) => format!("{urn}:{}", self.attr),
            None => self.attr.clone(),
        }
    }

    /// The sub-attribute the path names (`givenName` for `name.givenName`, `value` for
    /// `emails[type eq "work"].value`), if any.
    pub(super) fn sub(&self) -> Option<&str> {
        match &self.kind {
            PathKind::Simple => None,
            PathKind::Sub(sub) | PathKind::Multi { sub, .. } => Some(sub),
        }
    }

    /// The last attribute name of the path (`givenName` for `name.givenName`).
    fn leaf(&self) -> &str {
        match &self.kind {
            PathKind::Simple => &self.attr,
            PathKind::Sub(sub) | PathKind::Multi { sub, .. } => sub,
        }
    }
}

fn parse_path(path: &str) -> Option<AttrPath> {
    let path = path.trim();
    let (ext, rest) = if path.len() > 4 && path[..4].eq_ignore_ascii_case("urn:") {
        // The extension URN ends at the last ':' before any value filter.
        let head_end = path.find('[').unwrap_or(path.len());
        let colon = path[..head_end].rfind(':')?;
        (Some(path[..colon].to_owned()), &path[colon + 1..])
    } else {
        (None, path)
    };
    if rest.is_empty() {
        return None;
    }
    let (attr, kind) = match rest.find('[') {
        Some(open) => {
            let attr = &rest[..open];
            let close = open + closing_bracket(&rest[open..])?;
            let filter = &rest[open + 1..close];
            let sub = rest[close + 1..].strip_prefix('.')?;
            let (filter_attr, filter_value) = parse_eq_filter(filter)?;
            if sub.is_empty() || sub.contains(['.', '[']) {
                return None;
            }
            (
                attr,
                PathKind::Multi {
                    filter_attr,
                    filter_value,
                    sub: sub.to_owned(),
                },
            )
        }
        None => match rest.split_once('.') {
            Some((attr, sub)) if !sub.is_empty() && !sub.contains('.') => {
                (attr, PathKind::Sub(sub.to_owned()))
            }
            Some(_) => return None,
            None => (rest, PathKind::Simple),
        },
    };
    if attr.is_empty() || attr.contains([':', ' ', '"']) {
        return None;
    }
    Some(AttrPath {
        ext,
        attr: attr.to_owned(),
        kind,
    })
}

/// Index of the `]` closing the `[` at the start of `s`, skipping quoted strings.
fn closing_bracket(s: &str) -> Option<usize> {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match (in_str, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_str = false,
            (false, _, '"') => in_str = true,
            (false, _, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

/// Parses `attr eq <json value>` (operator case-insensitive).
fn parse_eq_filter(filter: &str) -> Option<(String, Value)> {
    let filter = filter.trim();
    let (attr, rest) = filter.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (op, value) = rest.split_once(char::is_whitespace)?;
    if !op.eq_ignore_ascii_case("eq") || attr.is_empty() {
        return None;
    }
    let value: Value = serde_json::from_str(value.trim()).ok()?;
    Some((attr.to_owned(), value))
}

/// Looks `key` up in a JSON object, exactly first, then ignoring ASCII case
/// (SCIM attribute names are case-insensitive).
pub(crate) fn get_ci<'v>(value: &'v Value, key: &str) -> Option<&'v Value> {
    let obj = value.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn values_match(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
        _ => a == b,
    }
}

/// Builds the full RFC 7643 User resource for `attrs`.
///
/// `schemas` holds the core User URN plus every extension URN used by a key. Multi-valued
/// attributes built from value-filtered paths get `"primary": true` on their first element
/// (unless the mapping sets `primary` itself). Keys whose value is JSON null are skipped.
pub fn user_resource(attrs: &Attrs) -> Value {
    let mut root = Map::new();
    let mut schemas = vec![USER_SCHEMA.to_owned()];
    let mut multis: BTreeSet<(Option<String>, String)> = BTreeSet::new();
    for (key, value) in attrs {
        if value.is_null() {
            continue;
        }
        let path = AttrPath::parse(key);
        let target = match &path.ext {
            None => Some(&mut root),
            Some(urn) => {
                if !schemas.iter().any(|s| s == urn) {
                    schemas.push(urn.clone());
                }
                object_entry(&mut root, urn)
            }
        };
        if matches!(path.kind, PathKind::Multi { .. }) {
            multis.insert((path.ext.clone(), path.attr.clone()));
        }
        if let Some(target) = target {
            set_path(target, &path, value.clone());
        }
    }
    for (ext, attr) in &multis {
        let obj = match ext {
            None => Some(&mut root),
            Some(urn) => root.get_mut(urn).and_then(Value::as_object_mut),
        };
        let first = obj
            .and_then(|o| o.get_mut(attr))
            .and_then(Value::as_array_mut)
            .and_then(|a| a.first_mut())
            .and_then(Value::as_object_mut);
        if let Some(first) = first {
            first.entry("primary").or_insert(Value::Bool(true));
        }
    }
    root.insert("schemas".to_owned(), json!(schemas));
    Value::Object(root)
}

/// The object at `obj[key]`, replacing anything else that sits there (always `Some`).
fn object_entry<'m>(
    obj: &'m mut Map<String, Value>,
    key: &str,
) -> Option<&'m mut Map<String, Value>> {
    let slot = obj
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

fn set_path(obj: &mut Map<String, Value>, path: &AttrPath, value: Value) {
    match &path.kind {
        PathKind::Simple => {
            obj.insert(path.attr.clone(), value);
        }
        PathKind::Sub(sub) => {
            if let Some(parent) = object_entry(obj, &path.attr) {
                parent.insert(sub.clone(), value);
            }
        }
        PathKind::Multi {
            filter_attr,
            filter_value,
            sub,
        } => {
            let slot = obj
                .entry(path.attr.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if !slot.is_array() {
                *slot = Value::Array(Vec::new());
            }
            if let Value::Array(items) = slot {
                let pos = items
                    .iter()
                    .position(|e| e.get(filter_attr.as_str()) == Some(filter_value));
                let pos = match pos {
                    Some(p) => p,
                    None => {
                        items.push(json!({ filter_attr.as_str(): filter_value }));
                        items.len() - 1
                    }
                };
                if let Some(Value::Object(elem)) = items.get_mut(pos) {
                    elem.insert(sub.clone(), value);
                }
            }
        }
    }
}

/// Reads the value at each of `paths` from a resource the app returned.
///
/// Tolerates what real apps send: attribute names in another case, `active`/`primary` as
/// `"True"`/`"False"` strings, multi-valued elements whose `type` differs in case or is
/// missing on a single element. Missing and null values give no key.
/// The keys of the result are `paths` themselves: pass the store's shared [`AttrKey`]s to
/// keep one copy of each path however many users are read.
pub fn flatten_user<K>(resource: &Value, paths: impl IntoIterator<Item = K>) -> Attrs
where
    K: AsRef<str> + Into<AttrKey>,
{
    let mut out = Attrs::new();
    for key in paths {
        let path = AttrPath::parse(key.as_ref());
        if let Some(v) = read_path(resource, &path)
            && !v.is_null()
        {
            out.insert(key.into(), normalize(&path, v.clone()));
        }
    }
    out
}

fn read_path<'v>(resource: &'v Value, path: &AttrPath) -> Option<&'v Value> {
    let obj = match &path.ext {
        None => resource,
        Some(urn) => get_ci(resource, urn)?,
    };
    let top = get_ci(obj, &path.attr)?;
    match &path.kind {
        PathKind::Simple => Some(top),
        PathKind::Sub(sub) => get_ci(top, sub),
        PathKind::Multi {
            filter_attr,
            filter_value,
            sub,
        } => {
            let items = top.as_array()?;
            let matched = items
                .iter()
                .find(|e| get_ci(e, filter_attr).is_some_and(|v| values_match(v, filter_value)));
            let elem = matched.or_else(|| {
                // Some apps drop `type`: accept a lone untyped element, or the untyped primary.
                let untyped: Vec<&Value> = items
                    .iter()
                    .filter(|e| get_ci(e, filter_attr).is_none_or(Value::is_null))
                    .collect();
                match untyped.as_slice() {
                    [only] if items.len() == 1 => Some(*only),
                    _ => untyped
                        .into_iter()
                        .find(|e| get_ci(e, "primary").is_some_and(is_true)),
                }
            })?;
            get_ci(elem, sub)
        }
    }
}

fn is_true(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn normalize(path: &AttrPath, value: Value) -> Value {
    let leaf = path.leaf();
    if (leaf.eq_ignore_ascii_case("active") || leaf.eq_ignore_ascii_case("primary"))
        && let Value::String(s) = &value
    {
        if s.eq_ignore_ascii_case("true") {
            return Value::Bool(true);
        }
        if s.eq_ignore_ascii_case("false") {
            return Value::Bool(false);
        }
    }
    value
}

/// The PATCH operations that bring a user from its current state to `desired`, for the
/// attribute paths listed in `changed`.
///
/// A changed path present in `desired` is replaced; one absent (or null) is removed. A
/// value-filtered path (`emails[type eq "work"].value`) replaces the whole multi-valued
/// attribute with the array rebuilt from `desired` (strict apps reject a replace whose
/// filter matches nothing), or removes the attribute when no desired path builds it any
/// more. Each multi-valued attribute appears once.
pub fn user_patch_ops(desired: &Attrs, changed: &[String]) -> Vec<Value> {
    let built = user_resource(desired);
    let mut ops = Vec::new();
    let mut seen_multi: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for key in changed {
        if !seen.insert(key.as_str()) {
            continue;
        }
        let path = AttrPath::parse(key);
        if matches!(path.kind, PathKind::Multi { .. }) {
            let whole = path.attribute_path();
            if !seen_multi.insert(whole.clone()) {
                continue;
            }
            let container = match &path.ext {
                None => Some(&built),
                Some(urn) => built.get(urn.as_str()),
            };
            match container.and_then(|c| c.get(path.attr.as_str())) {
                Some(items) => ops.push(json!({"op": "replace", "path": whole, "value": items})),
                None => ops.push(json!({"op": "remove", "path": whole})),
            }
            continue;
        }
        match desired.get(key.as_str()).filter(|v| !v.is_null()) {
            Some(v) => ops.push(json!({"op": "replace", "path": key, "value": v})),
            None => ops.push(json!({"op": "remove", "path": key})),
        }
    }
    ops
}

/// A PatchOp request body around `ops`.
pub fn patch_body(ops: Vec<Value>) -> Value {
    json!({ "schemas": [PATCH_OP_SCHEMA], "Operations": ops })
}

/// The Group resource POSTed on creation: no members (they are always added by PATCH,
/// because some apps drop members sent in a POST).
pub fn group_resource(display_name: &str, external_id: &str) -> Value {
    json!({
        "schemas": [GROUP_SCHEMA],
        "displayName": display_name,
        "externalId": external_id,
    })
}

/// The `members` PATCH value for `ids`: `[{"value": id}, …]`.
pub fn member_values(ids: &[ScimId]) -> Value {
    Value::Array(
        ids.iter()
            .map(|id| json!({ "value": id.as_str() }))
            .collect(),
    )
}

/// The value-filter path removing one member: `members[value eq "<id>"]`, the id written
/// as a JSON string so `"` and `\` are escaped.
pub fn member_filter_path(id: &ScimId) -> String {
    format!("members[value eq {}]", json_string(id.as_str()))
}

/// The ids in a group's `members` attribute (empty when the app omits it).
pub fn member_ids(group: &Value) -> Vec<ScimId> {
    get_ci(group, "members")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|m| get_ci(m, "value"))
                .filter_map(|v| match v {
                    Value::String(s) => Some(ScimId::new(s.clone())),
                    Value::Number(n) => Some(ScimId::new(n.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `value` as a JSON string literal (RFC 7644 §3.4.2.2 compValue).
pub fn json_string(value: &str) -> String {
    Value::String(value.to_owned()).to_string()
}

/// The equality filter for `attr` (a mapping path) and `value`.
///
/// `userName eq "o\"brien"`; a value-filtered path `emails[type eq "work"].value` becomes
/// `emails[type eq "work" and value eq "…"]`, the form RFC 7644 allows.
pub fn eq_filter(attr: &str, value: &str) -> String {
    let path = AttrPath::parse(attr);
    if let PathKind::Multi {
        filter_attr,
        filter_value,
        sub,
    } = &path.kind
    {
        return format!(
            "{}[{filter_attr} eq {filter_value} and {sub} eq {}]",
            path.attribute_path(),
            json_string(value)
        );
    }
    format!("{attr} eq {}", json_string(value))
}

/// The value at mapping path `attr` in `resource`, as text (numbers and booleans printed).
pub fn text_at(resource: &Value, attr: &str) -> Option<String> {
    let path = AttrPath::parse(attr);
    match normalize(&path, read_path(resource, &path)?.clone()) {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether `attr` compares case-insensitively (`caseExact: false` in RFC 7643):
/// `userName`, `displayName` and email addresses.
pub fn case_insensitive(attr: &str) -> bool {
    let path = AttrPath::parse(attr);
    path.ext.is_none()
        && (path.attr.eq_ignore_ascii_case("userName")
            || path.attr.eq_ignore_ascii_case("displayName")
            || path.attr.eq_ignore_ascii_case("emails"))
}

/// One page of a list response (RFC 7644 §3.4.2).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListPage {
    /// `totalResults` (number or numeric string), when the app sent it.
    pub total_results: Option<u64>,
    /// `Resources` (empty when the app left it out).
    pub resources: Vec<Value>,
    /// `nextCursor`, for apps that page with cursors (AWS IAM Identity Center).
    pub next_cursor: Option<String>,
}

impl ListPage {
    /// Reads a list response leniently: `Resources` in any case, possibly missing.
    pub fn from_value(body: &Value) -> Self {
        let total_results = get_ci(body, "totalResults").and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        let resources = get_ci(body, "Resources")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let next_cursor = get_ci(body, "nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        ListPage {
            total_results,
            resources,
            next_cursor,
        }
    }
}

/// A SCIM error body (RFC 7644 §3.12). `status` may be a string (as the RFC says) or a number.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ScimErrorBody {
    /// Should hold [`ERROR_SCHEMA`].
    #[serde(default)]
    pub schemas: Vec<String>,
    /// The HTTP status, as the body states it.
    #[serde(default, deserialize_with = "status_any")]
    pub status: Option<u16>,
    /// Error keyword: `uniqueness`, `invalidPath`, `noTarget`, …
    #[serde(default, rename = "scimType", alias = "scimtype", alias = "ScimType")]
    pub scim_type: Option<String>,
    /// Human-readable detail.
    #[serde(default, alias = "Detail")]
    pub detail: Option<String>,
}

fn status_any<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// `scimType` and `detail` from an error response body, whatever its shape.
///
/// A SCIM error body gives both. A non-SCIM JSON body gives a `detail`, `message`,
/// `error_description` or `error` text. A short plain-text body is kept as the detail; HTML
/// pages are dropped. Details are cut to 300 characters.
pub fn parse_error_body(body: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return (None, None);
    }
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        let parsed: ScimErrorBody = serde_json::from_value(value.clone()).unwrap_or_default();
        let scim_type = parsed.scim_type.filter(|s| !s.is_empty());
        let detail = parsed.detail.filter(|s| !s.is_empty()).or_else(|| {
            ["message", "error_description", "error", "title"]
                .iter()
                .find_map(|k| get_ci(&value, k).and_then(Value::as_str))
                .map(str::to_owned)
        });
        return (scim_type, detail.map(|d| shorten(&d)));
    }
    if text.starts_with('<') {
        return (None, None);
    }
    (None, Some(shorten(text)))
}

fn shorten(s: &str) -> String {
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= 300 {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(300).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, Value)]) -> Attrs {
        pairs
            .iter()
            .map(|(k, v)| (crate::model::AttrKey::from(*k), v.clone()))
            .collect()
    }

    const DEPT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department";
    const EMPNO: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber";
    const WORK: &str = r#"emails[type eq "work"].value"#;

    fn default_attrs() -> Attrs {
        attrs(&[
            ("externalId", json!("u-alice")),
            ("userName", json!("alice@contoso.example")),
            ("active", json!(true)),
            ("displayName", json!("Alice Smith")),
            ("name.givenName", json!("Alice")),
            ("name.familyName", json!("Smith")),
            (WORK, json!("alice@contoso.example")),
            ("title", json!("Engineer")),
            (EMPNO, json!("1001")),
            (DEPT, json!("R&D")),
        ])
    }

    #[test]
    fn parses_every_path_shape() {
        assert_eq!(
            parse_path("userName"),
            Some(AttrPath {
                ext: None,
                attr: "userName".into(),
                kind: PathKind::Simple
            })
        );
        assert_eq!(
            parse_path("name.givenName").map(|p| p.kind),
            Some(PathKind::Sub("givenName".into()))
        );
        let p = parse_path(WORK);
        assert_eq!(
            p.map(|p| (p.attr, p.kind)),
            Some((
                "emails".into(),
                PathKind::Multi {
                    filter_attr: "type".into(),
                    filter_value: json!("work"),
                    sub: "value".into()
                }
            ))
        );
        let p = parse_path(DEPT);
        assert_eq!(
            p.map(|p| (p.ext, p.attr)),
            Some((Some(ENTERPRISE_USER_SCHEMA.into()), "department".into()))
        );
        let p =
            parse_path("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value");
        assert_eq!(p.map(|p| p.kind), Some(PathKind::Sub("value".into())));
        let p = parse_path(r#"addresses[type eq "a]b"].locality"#);
        assert!(
            matches!(p.map(|p| p.kind), Some(PathKind::Multi { filter_value, .. }) if filter_value == json!("a]b"))
        );
        assert_eq!(parse_path("a.b.c"), None);
        assert_eq!(parse_path(r#"emails[type eq "work"]"#), None);
    }

    #[test]
    fn builds_the_full_user_resource() {
        let r = user_resource(&default_attrs());
        assert_eq!(
            r,
            json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
                "externalId": "u-alice",
                "userName": "alice@contoso.example",
                "active": true,
                "displayName": "Alice Smith",
                "name": {"givenName": "Alice", "familyName": "Smith"},
                "emails": [{"type": "work", "value": "alice@contoso.example", "primary": true}],
                "title": "Engineer",
                ENTERPRISE_USER_SCHEMA: {"employeeNumber": "1001", "department": "R&D"},
            })
        );
    }

    #[test]
    fn only_the_first_element_is_primary_and_nulls_are_skipped() {
        let r = user_resource(&attrs(&[
            ("userName", json!("a")),
            (r#"emails[type eq "home"].value"#, json!("h@x")),
            (WORK, json!("w@x")),
            ("title", Value::Null),
        ]));
        assert_eq!(
            r["emails"],
            json!([{"type": "home", "value": "h@x", "primary": true}, {"type": "work", "value": "w@x"}])
        );
        assert!(r.get("title").is_none());
        assert_eq!(r["schemas"], json!([USER_SCHEMA]));
    }

    #[test]
    fn flatten_is_the_inverse_of_user_resource() {
        let a = default_attrs();
        let r = user_resource(&a);
        assert_eq!(flatten_user(&r, a.keys().map(|k| &**k)), a);
    }

    #[test]
    fn flatten_tolerates_real_servers() {
        let r = json!({
            "id": "1",
            "UserName": "alice",
            "active": "False",
            "name": {"givenname": "Alice"},
            "emails": [{"type": "Work", "value": "a@x"}],
            ENTERPRISE_USER_SCHEMA: {"department": "R&D"},
            "title": null,
        });
        let got = flatten_user(
            &r,
            [
                "userName",
                "active",
                "name.givenName",
                "name.familyName",
                WORK,
                DEPT,
                EMPNO,
                "title",
            ],
        );
        assert_eq!(
            got,
            attrs(&[
                ("userName", json!("alice")),
                ("active", json!(false)),
                ("name.givenName", json!("Alice")),
                (WORK, json!("a@x")),
                (DEPT, json!("R&D")),
            ])
        );
        let untyped = json!({"emails": [{"value": "a@x"}]});
        assert_eq!(
            flatten_user(&untyped, [WORK]).get(WORK),
            Some(&json!("a@x"))
        );
    }

    #[test]
    fn patch_ops_replace_rebuild_and_remove() {
        let mut desired = default_attrs();
        desired.remove("title");
        let changed: Vec<String> = ["displayName", WORK, "title", DEPT, WORK]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(
            user_patch_ops(&desired, &changed),
            vec![
                json!({"op": "replace", "path": "displayName", "value": "Alice Smith"}),
                json!({"op": "replace", "path": "emails", "value": [{"type": "work", "value": "alice@contoso.example", "primary": true}]}),
                json!({"op": "remove", "path": "title"}),
                json!({"op": "replace", "path": DEPT, "value": "R&D"}),
            ]
        );
        desired.remove(WORK);
        assert_eq!(
            user_patch_ops(&desired, &[WORK.to_owned()]),
            vec![json!({"op": "remove", "path": "emails"})]
        );
    }

    #[test]
    fn filters_are_json_escaped() {
        assert_eq!(
            eq_filter("userName", r#"o"b\r"#),
            r#"userName eq "o\"b\\r""#
        );
        assert_eq!(
            eq_filter(WORK, "a@x"),
            r#"emails[type eq "work" and value eq "a@x"]"#
        );
        assert_eq!(
            member_filter_path(&ScimId::new(r#"x"y"#)),
            r#"members[value eq "x\"y"]"#
        );
    }

    #[test]
    fn error_bodies_parse_with_string_or_number_status() {
        let b = br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"taken"}"#;
        assert_eq!(
            parse_error_body(b),
            (Some("uniqueness".into()), Some("taken".into()))
        );
        let parsed: Result<ScimErrorBody, _> = serde_json::from_slice(b);
        assert_eq!(parsed.ok().and_then(|p| p.status), Some(409));
        let n = br#"{"status":400,"detail":"bad"}"#;
        let parsed: Result<ScimErrorBody, _> = serde_json::from_slice(n);
        assert_eq!(parsed.ok().and_then(|p| p.status), Some(400));
        assert_eq!(parse_error_body(n), (None, Some("bad".into())));
        assert_eq!(parse_error_body(b"<html>oops</html>"), (None, None));
        assert_eq!(
            parse_error_body(b"Service down"),
            (None, Some("Service down".into()))
        );
        assert_eq!(
            parse_error_body(br#"{"message":"nope"}"#),
            (None, Some("nope".into()))
        );
    }

    #[test]
    fn list_pages_tolerate_missing_resources() {
        let p = ListPage::from_value(&json!({"totalResults": "3"}));
        assert_eq!(p.total_results, Some(3));
        assert!(p.resources.is_empty());
    }
}
