//! SCIM PATCH (RFC 7644 §3.5.2) for the sandbox: parsing a `PatchOp` request and applying
//! its operations to a resource's attributes.
//!
//! Operations are applied to a copy of the attribute object by the store, so a request
//! that fails half-way changes nothing. Group membership is not an attribute here: the
//! store keeps members in an indexed set, and [`group_steps`] turns member operations into
//! [`MemberOp`]s for it. `op` names are case-insensitive (Entra sends `Add`/`Replace`).

use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{AttrPath, ValueFilter, parse_path};
use super::schema::{
    AttrDef, ENTERPRISE_ATTRS, ENTERPRISE_USER_SCHEMA, Kind, PATCH_OP_SCHEMA, canonicalize_value,
    find, get_ci, is_enterprise, key_ci,
};

/// The three PATCH operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Add,
    Replace,
    Remove,
}

/// One parsed entry of `Operations`.
#[derive(Debug, Clone)]
pub(crate) struct Operation {
    pub(crate) op: OpKind,
    pub(crate) path: Option<AttrPath>,
    pub(crate) value: Option<Value>,
}

/// A change to a group's member set, with member ids as sent by the client.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MemberOp {
    /// Add these ids (already present ones are a no-op).
    Add(Vec<String>),
    /// Make the set exactly these ids.
    Replace(Vec<String>),
    /// Remove these ids (absent ones are a no-op).
    Remove(Vec<String>),
    /// Remove every member.
    RemoveAll,
}

/// One step of a group PATCH: an attribute operation or a membership change.
#[derive(Debug, Clone)]
pub(crate) enum GroupStep {
    Attr(Operation),
    Members(MemberOp),
}

/// Parses a PatchOp request body.
pub(crate) fn parse_request(body: &Value) -> Result<Vec<Operation>, ScimError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("PATCH body must be a JSON object"))?;
    let has_schema = get_ci(obj, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|u| u.as_str() == Some(PATCH_OP_SCHEMA)));
    if !has_schema {
        return Err(ScimError::invalid_syntax(format!(
            "schemas must contain {PATCH_OP_SCHEMA}"
        )));
    }
    let ops = get_ci(obj, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("Operations must be an array"))?;
    ops.iter().map(parse_operation).collect()
}

fn parse_operation(raw: &Value) -> Result<Operation, ScimError> {
    let obj = raw
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("each operation must be an object"))?;
    let op_name = get_ci(obj, "op")
        .and_then(Value::as_str)
        .ok_or_else(|| ScimError::invalid_syntax("operation without 'op'"))?;
    let op = match op_name.to_ascii_lowercase().as_str() {
        "add" => OpKind::Add,
        "replace" => OpKind::Replace,
        "remove" => OpKind::Remove,
        _ => {
            return Err(ScimError::invalid_syntax(format!(
                "unknown op '{op_name}' (expected add, replace or remove)"
            )));
        }
    };
    let path = match get_ci(obj, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(parse_path(p).map_err(ScimError::invalid_path)?),
        Some(_) => return Err(ScimError::invalid_path("path must be a string")),
    };
    let value = get_ci(obj, "value").cloned();
    match (op, &path, &value) {
        (OpKind::Remove, None, _) => Err(ScimError::no_target("remove requires a path")),
        (OpKind::Add | OpKind::Replace, _, None) => Err(ScimError::invalid_syntax(format!(
            "{op_name} requires a value"
        ))),
        _ => Ok(Operation { op, path, value }),
    }
}

/// Drops a core-schema URN qualifier (`urn:…:core:2.0:User:userName` → `userName`).
fn unqualify(kind: Kind, path: &AttrPath) -> AttrPath {
    match &path.urn {
        Some(urn) if urn.eq_ignore_ascii_case(kind.core_schema()) => AttrPath {
            urn: None,
            ..path.clone()
        },
        _ => path.clone(),
    }
}

/// Splits group operations into attribute operations and membership changes.
pub(crate) fn group_steps(ops: Vec<Operation>) -> Result<Vec<GroupStep>, ScimError> {
    let mut steps = Vec::with_capacity(ops.len());
    for op in ops {
        let path = op.path.as_ref().map(|p| unqualify(Kind::Group, p));
        match path {
            Some(p) if p.urn.is_none() && p.attr.eq_ignore_ascii_case("members") => {
                steps.push(GroupStep::Members(member_op(op.op, &p, op.value.as_ref())?));
            }
            Some(_) => steps.push(GroupStep::Attr(op)),
            None => {
                // Path-less add/replace: an object of attributes, possibly with `members`.
                let Some(Value::Object(obj)) = op.value else {
                    return Err(ScimError::invalid_value(
                        "an operation without path needs an object value",
                    ));
                };
                let mut rest = Map::new();
                for (k, v) in obj {
                    if k.eq_ignore_ascii_case("members") {
                        let p = AttrPath::simple("members");
                        steps.push(GroupStep::Members(member_op(op.op, &p, Some(&v))?));
                    } else {
                        rest.insert(k, v);
                    }
                }
                if !rest.is_empty() {
                    steps.push(GroupStep::Attr(Operation {
                        op: op.op,
                        path: None,
                        value: Some(Value::Object(rest)),
                    }));
                }
            }
        }
    }
    Ok(steps)
}

fn member_op(op: OpKind, path: &AttrPath, value: Option<&Value>) -> Result<MemberOp, ScimError> {
    if path.sub.is_some() {
        return Err(ScimError::invalid_path(
            "sub-attributes of members cannot be modified",
        ));
    }
    if let Some(vf) = &path.value_filter {
        if op != OpKind::Remove {
            return Err(ScimError::invalid_path(
                "use path 'members' with a value list to add or replace members",
            ));
        }
        if !vf.attr.eq_ignore_ascii_case("value") {
            return Err(ScimError::invalid_path(format!(
                "members can only be selected by value, not '{}'",
                vf.attr
            )));
        }
        let id = vf
            .value
            .as_str()
            .ok_or_else(|| ScimError::invalid_path("member value must be a string"))?;
        return Ok(MemberOp::Remove(vec![id.to_owned()]));
    }
    match (op, value) {
        (OpKind::Remove, None | Some(Value::Null)) => Ok(MemberOp::RemoveAll),
        (OpKind::Remove, Some(v)) => Ok(MemberOp::Remove(member_ids(v)?)),
        (OpKind::Add, Some(v)) => Ok(MemberOp::Add(member_ids(v)?)),
        (OpKind::Replace, Some(v)) => Ok(MemberOp::Replace(member_ids(v)?)),
        (_, None) => Err(ScimError::invalid_syntax(
            "members operation requires a value",
        )),
    }
}

/// Reads `[{"value": id}, …]` (or one such object) into ids.
pub(crate) fn member_ids(value: &Value) -> Result<Vec<String>, ScimError> {
    let one = |v: &Value| -> Result<String, ScimError> {
        v.as_object()
            .and_then(|o| get_ci(o, "value"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                ScimError::invalid_value("each member must be an object with a string 'value'")
            })
    };
    match value {
        Value::Array(items) => items.iter().map(one).collect(),
        Value::Object(_) => Ok(vec![one(value)?]),
        _ => Err(ScimError::invalid_value(
            "members must be an array of {\"value\": id} objects",
        )),
    }
}

/// Where a path points after validation against the schema.
struct Resolved {
    /// `Some(urn)` when the attribute lives in an extension object.
    container: Option<String>,
    /// Canonical attribute name (or as written, for attributes of unknown extensions).
    name: String,
    def: Option<&'static AttrDef>,
    /// Canonical sub-attribute.
    sub: Option<String>,
    /// Canonical value-filter attribute and value.
    filter: Option<(String, Value)>,
}

/// Applies one operation to a resource's attributes (without `id`, `meta`, `schemas`).
pub(crate) fn apply(
    attrs: &mut Map<String, Value>,
    kind: Kind,
    op: OpKind,
    path: Option<&AttrPath>,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let Some(path) = path else {
        let Some(Value::Object(obj)) = value else {
            return Err(ScimError::invalid_value(
                "an operation without path needs an object value",
            ));
        };
        for (key, v) in obj {
            if key.eq_ignore_ascii_case("schemas") {
                continue;
            }
            if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
                if key.eq_ignore_ascii_case(kind.core_schema()) {
                    apply(attrs, kind, op, None, Some(v))?;
                } else if v.is_object() {
                    // A whole extension object: merge its attributes.
                    let urn = extension_key(attrs, key);
                    apply_whole_extension(attrs, kind, op, &urn, v)?;
                } else {
                    let p = parse_path(key).map_err(ScimError::invalid_path)?;
                    apply(attrs, kind, op, Some(&p), Some(v))?;
                }
            } else {
                apply(
                    attrs,
                    kind,
                    op,
                    Some(&AttrPath::simple(key.clone())),
                    Some(v),
                )?;
            }
        }
        return Ok(());
    };
    let path = unqualify(kind, path);
    // A path naming a whole extension (`urn:…:enterprise:2.0:User`).
    if let Some(urn) = &path.urn
        && path.value_filter.is_none()
        && path.sub.is_none()
    {
        let full = format!("{urn}:{}", path.attr);
        if (kind == Kind::User && is_enterprise(&full)) || key_ci(attrs, &full).is_some() {
            let urn = extension_key(attrs, &full);
            return match (op, value) {
                (OpKind::Remove, _) => {
                    attrs.remove(&urn);
                    Ok(())
                }
                (_, Some(v)) => apply_whole_extension(attrs, kind, op, &urn, v),
                (_, None) => Err(ScimError::invalid_syntax("missing value")),
            };
        }
    }
    let r = resolve(kind, &path, attrs)?;
    let container = match &r.container {
        None => attrs,
        Some(urn) => {
            if op == OpKind::Remove && !attrs.contains_key(urn) {
                return Ok(());
            }
            let slot = attrs
                .entry(urn.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            match slot.as_object_mut() {
                Some(obj) => obj,
                None => return Err(ScimError::invalid_value("extension must be an object")),
            }
        }
    };
    apply_attr(container, &r, op, value)
}

/// The key under which an extension is (or will be) stored: the existing spelling if
/// present, the canonical URN for the enterprise extension, else as written.
fn extension_key(attrs: &Map<String, Value>, urn: &str) -> String {
    if is_enterprise(urn) {
        return ENTERPRISE_USER_SCHEMA.to_owned();
    }
    key_ci(attrs, urn).unwrap_or_else(|| urn.to_owned())
}

fn apply_whole_extension(
    attrs: &mut Map<String, Value>,
    kind: Kind,
    op: OpKind,
    urn: &str,
    value: &Value,
) -> Result<(), ScimError> {
    let Value::Object(obj) = value else {
        return Err(ScimError::invalid_value(format!(
            "value for {urn} must be an object"
        )));
    };
    if kind == Kind::Group && is_enterprise(urn) {
        return Err(ScimError::invalid_path(
            "the enterprise extension applies to users only",
        ));
    }
    // Make sure the extension exists so that attributes of custom extensions resolve.
    attrs
        .entry(urn.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    for (k, v) in obj {
        let p = AttrPath {
            urn: Some(urn.to_owned()),
            attr: k.clone(),
            value_filter: None,
            sub: None,
        };
        apply(attrs, kind, op, Some(&p), Some(v))?;
    }
    Ok(())
}

fn resolve(kind: Kind, path: &AttrPath, attrs: &Map<String, Value>) -> Result<Resolved, ScimError> {
    let (container, def) = match &path.urn {
        None => {
            let def = find(kind.attrs(), &path.attr).ok_or_else(|| {
                ScimError::invalid_path(format!(
                    "unknown {} attribute '{}'",
                    kind.name(),
                    path.attr
                ))
            })?;
            (None, Some(def))
        }
        Some(urn) if kind == Kind::User && is_enterprise(urn) => {
            let def = find(ENTERPRISE_ATTRS, &path.attr).ok_or_else(|| {
                ScimError::invalid_path(format!("unknown enterprise attribute '{}'", path.attr))
            })?;
            (Some(ENTERPRISE_USER_SCHEMA.to_owned()), Some(def))
        }
        Some(urn) => match key_ci(attrs, urn) {
            // An extension the resource already carries: any attribute is accepted.
            Some(key) => (Some(key), None),
            None => {
                return Err(ScimError::invalid_path(format!(
                    "unknown schema extension '{urn}'"
                )));
            }
        },
    };
    if let Some(d) = def
        && d.read_only
    {
        return Err(ScimError::mutability(format!(
            "attribute '{}' is readOnly",
            d.name
        )));
    }
    let canon_sub = |name: &str| -> Result<String, ScimError> {
        match def {
            None => Ok(name.to_owned()),
            Some(d) => d.sub(name).map(str::to_owned).ok_or_else(|| {
                ScimError::invalid_path(format!("unknown sub-attribute '{name}' of '{}'", d.name))
            }),
        }
    };
    let sub = path.sub.as_deref().map(canon_sub).transpose()?;
    let filter = match &path.value_filter {
        None => None,
        Some(ValueFilter { attr, value }) => {
            if def.is_some_and(|d| !d.multi) {
                return Err(ScimError::invalid_path(format!(
                    "'{}' is not multi-valued; it cannot take a value filter",
                    path.attr
                )));
            }
            Some((canon_sub(attr)?, value.clone()))
        }
    };
    let name = match def {
        Some(d) => d.name.to_owned(),
        None => path.attr.clone(),
    };
    Ok(Resolved {
        container,
        name,
        def,
        sub,
        filter,
    })
}

/// Whether a multi-valued element matches `[attr eq value]` (strings case-insensitively).
fn element_matches(elem: &Value, attr: &str, want: &Value) -> bool {
    let Some(have) = elem.as_object().and_then(|o| get_ci(o, attr)) else {
        return want.is_null();
    };
    match (have, want) {
        (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b) || a == b,
        (a, b) => a == b,
    }
}

fn as_items(value: &Value, def: Option<&AttrDef>) -> Vec<Value> {
    let canon = |v: Value| match def {
        Some(d) => canonicalize_value(v, d),
        None => v,
    };
    match value {
        Value::Array(items) => items.iter().cloned().map(canon).collect(),
        Value::Null => Vec::new(),
        other => vec![canon(other.clone())],
    }
}

fn apply_attr(
    container: &mut Map<String, Value>,
    r: &Resolved,
    op: OpKind,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let multi = r.def.is_some_and(|d| d.multi);
    let complex = r.def.is_some_and(|d| !d.subs.is_empty());
    let value = value.unwrap_or(&Value::Null);
    let name = key_ci(container, &r.name).unwrap_or_else(|| r.name.clone());
    match (&r.filter, &r.sub) {
        (None, None) => match op {
            OpKind::Remove => {
                container.remove(&name);
            }
            OpKind::Add if multi => {
                let items = as_items(value, r.def);
                let slot = container
                    .entry(name)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                if let Value::Array(arr) = slot {
                    for item in items {
                        if !arr.contains(&item) {
                            arr.push(item);
                        }
                    }
                }
            }
            OpKind::Replace if multi => {
                container.insert(name, Value::Array(as_items(value, r.def)));
            }
            OpKind::Add | OpKind::Replace => {
                let new = match r.def {
                    Some(d) => canonicalize_value(value.clone(), d),
                    None => value.clone(),
                };
                match (container.get_mut(&name), new) {
                    // Complex single-valued: the given sub-attributes replace, others stay.
                    (Some(Value::Object(existing)), Value::Object(new)) if complex => {
                        existing.extend(new);
                    }
                    (_, new) => {
                        container.insert(name, new);
                    }
                }
            }
        },
        (None, Some(sub)) => {
            if multi {
                match container.get_mut(&name) {
                    Some(Value::Array(arr)) => {
                        for elem in arr.iter_mut().filter_map(Value::as_object_mut) {
                            set_or_remove(elem, sub, op, value);
                        }
                    }
                    _ if op == OpKind::Remove => {}
                    _ => {
                        return Err(ScimError::no_target(format!(
                            "'{}' has no values to modify",
                            r.name
                        )));
                    }
                }
            } else if op == OpKind::Remove {
                if let Some(Value::Object(obj)) = container.get_mut(&name) {
                    obj.remove(sub);
                }
            } else {
                let slot = container
                    .entry(name)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(obj) = slot {
                    set_or_remove(obj, sub, op, value);
                }
            }
        }
        (Some((fattr, fvalue)), sub) => {
            if op == OpKind::Remove && !container.contains_key(&name) {
                return Ok(());
            }
            let slot = container
                .entry(name.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(arr) = slot else {
                return Err(ScimError::invalid_value(format!(
                    "'{}' is not an array",
                    r.name
                )));
            };
            let hits: Vec<usize> = arr
                .iter()
                .enumerate()
                .filter(|(_, e)| element_matches(e, fattr, fvalue))
                .map(|(i, _)| i)
                .collect();
            match (op, sub) {
                (OpKind::Remove, None) => {
                    let mut i = 0;
                    arr.retain(|_| {
                        let keep = !hits.contains(&i);
                        i += 1;
                        keep
                    });
                }
                (OpKind::Remove, Some(sub)) => {
                    for &i in &hits {
                        if let Some(Value::Object(e)) = arr.get_mut(i) {
                            e.remove(sub);
                        }
                    }
                }
                (_, Some(sub)) if hits.is_empty() => {
                    // No element matches: add one (what Entra expects of
                    // `emails[type eq "work"].value`).
                    let any_primary = arr.iter().any(|e| {
                        e.as_object()
                            .and_then(|o| get_ci(o, "primary"))
                            .is_some_and(|p| p == &Value::Bool(true))
                    });
                    let mut elem = Map::new();
                    elem.insert(fattr.clone(), fvalue.clone());
                    elem.insert(sub.clone(), value.clone());
                    if !any_primary && r.def.is_some_and(|d| d.sub("primary").is_some()) {
                        elem.insert("primary".to_owned(), Value::Bool(true));
                    }
                    arr.push(Value::Object(elem));
                }
                (_, Some(sub)) => {
                    for &i in &hits {
                        if let Some(Value::Object(e)) = arr.get_mut(i) {
                            set_or_remove(e, sub, op, value);
                        }
                    }
                }
                (_, None) => {
                    let Value::Object(new) = (match r.def {
                        Some(d) => canonicalize_value(value.clone(), d),
                        None => value.clone(),
                    }) else {
                        return Err(ScimError::invalid_value(
                            "a filtered value path needs an object value",
                        ));
                    };
                    if hits.is_empty() {
                        if op == OpKind::Replace {
                            return Err(ScimError::no_target(format!(
                                "no value of '{}' matches the filter",
                                r.name
                            )));
                        }
                        let mut elem = new;
                        elem.entry(fattr.clone()).or_insert_with(|| fvalue.clone());
                        arr.push(Value::Object(elem));
                    } else {
                        for &i in &hits {
                            if let Some(Value::Object(e)) = arr.get_mut(i) {
                                if op == OpKind::Replace {
                                    *e = new.clone();
                                } else {
                                    e.extend(new.clone());
                                }
                            }
                        }
                    }
                }
            }
            if arr.is_empty() {
                container.remove(&name);
            }
        }
    }
    Ok(())
}

fn set_or_remove(obj: &mut Map<String, Value>, sub: &str, op: OpKind, value: &Value) {
    let key = key_ci(obj, sub).unwrap_or_else(|| sub.to_owned());
    if op == OpKind::Remove {
        obj.remove(&key);
    } else {
        obj.insert(key, value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(attrs: Value, ops: Value) -> Result<Value, ScimError> {
        let Value::Object(mut attrs) = attrs else {
            panic!("attrs must be an object")
        };
        let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": ops});
        for op in parse_request(&body)? {
            apply(
                &mut attrs,
                Kind::User,
                op.op,
                op.path.as_ref(),
                op.value.as_ref(),
            )?;
        }
        Ok(Value::Object(attrs))
    }

    #[test]
    fn replace_work_email_adds_element_when_missing() {
        let out = run(
            json!({"userName": "a"}),
            json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "a@x"}]),
        )
        .unwrap();
        assert_eq!(
            out["emails"],
            json!([{"type": "work", "value": "a@x", "primary": true}])
        );
        let out = run(
            out,
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@x"}]),
        )
        .unwrap();
        assert_eq!(
            out["emails"],
            json!([{"type": "work", "value": "b@x", "primary": true}])
        );
    }

    #[test]
    fn sub_attribute_and_enterprise_paths() {
        let out = run(
            json!({"userName": "a", "name": {"familyName": "F"}}),
            json!([
                {"op": "add", "path": "name.givenName", "value": "G"},
                {"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "R&D"},
            ]),
        )
        .unwrap();
        assert_eq!(out["name"], json!({"familyName": "F", "givenName": "G"}));
        assert_eq!(out[ENTERPRISE_USER_SCHEMA]["department"], json!("R&D"));
    }

    #[test]
    fn pathless_replace_merges_and_handles_extension_objects() {
        let out = run(
            json!({"userName": "a", "title": "t", "name": {"familyName": "F"}}),
            json!([{"op": "replace", "value": {
                "displayName": "D",
                "name": {"givenName": "G"},
                ENTERPRISE_USER_SCHEMA: {"employeeNumber": "7"},
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Ops"
            }}]),
        )
        .unwrap();
        assert_eq!(out["title"], json!("t"));
        assert_eq!(out["displayName"], json!("D"));
        assert_eq!(out["name"], json!({"familyName": "F", "givenName": "G"}));
        assert_eq!(
            out[ENTERPRISE_USER_SCHEMA],
            json!({"employeeNumber": "7", "department": "Ops"})
        );
    }

    #[test]
    fn errors_for_bad_paths() {
        let unknown = run(
            json!({"userName": "a"}),
            json!([{"op": "replace", "path": "shoeSize", "value": 1}]),
        );
        assert_eq!(unknown.unwrap_err().scim_type, Some("invalidPath"));
        let read_only = run(
            json!({"userName": "a"}),
            json!([{"op": "replace", "path": "id", "value": "x"}]),
        );
        assert_eq!(read_only.unwrap_err().scim_type, Some("mutability"));
        let no_path = run(json!({"userName": "a"}), json!([{"op": "remove"}]));
        assert_eq!(no_path.unwrap_err().scim_type, Some("noTarget"));
        let bad_op = run(
            json!({"userName": "a"}),
            json!([{"op": "move", "path": "title"}]),
        );
        assert_eq!(bad_op.unwrap_err().scim_type, Some("invalidSyntax"));
    }

    #[test]
    fn remove_filtered_element_and_whole_attribute() {
        let out = run(
            json!({"userName": "a", "title": "t", "emails": [
                {"type": "work", "value": "w@x"}, {"type": "home", "value": "h@x"}]}),
            json!([
                {"op": "remove", "path": "emails[type eq \"WORK\"]"},
                {"op": "remove", "path": "title"},
            ]),
        )
        .unwrap();
        assert_eq!(out["emails"], json!([{"type": "home", "value": "h@x"}]));
        assert!(out.get("title").is_none());
    }

    #[test]
    fn member_operations_in_both_removal_forms() {
        let body = json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [
            {"op": "Add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]},
            {"op": "remove", "path": "members[value eq \"u1\"]"},
            {"op": "Remove", "path": "members", "value": [{"value": "u2"}]},
            {"op": "remove", "path": "members"},
            {"op": "replace", "value": {"displayName": "G", "members": [{"value": "u3"}]}},
        ]});
        let steps = group_steps(parse_request(&body).unwrap()).unwrap();
        let members: Vec<MemberOp> = steps
            .iter()
            .filter_map(|s| match s {
                GroupStep::Members(m) => Some(m.clone()),
                GroupStep::Attr(_) => None,
            })
            .collect();
        assert_eq!(
            members,
            vec![
                MemberOp::Add(vec!["u1".into(), "u2".into()]),
                MemberOp::Remove(vec!["u1".into()]),
                MemberOp::Remove(vec!["u2".into()]),
                MemberOp::RemoveAll,
                MemberOp::Replace(vec!["u3".into()]),
            ]
        );
        assert_eq!(steps.len(), 6);
    }
}
