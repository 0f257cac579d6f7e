-- wrk: POST /Users with a new user each request, shaped like the users scim-sync creates
-- (core and enterprise schemas, name, one work email, title, department).
-- benches/scale/loopback.sh runs it; wrk is Debian's package.
local counter = 0
thread_id = 0

function setup(thread)
  thread:set("thread_id", counter)
  counter = counter + 1
end

function init(args)
  n = 0
end

local body = [[{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],]] ..
  [["userName":"%s","externalId":"%s","active":true,"displayName":"Load User %s",]] ..
  [["name":{"givenName":"Load","familyName":"User %s"},"emails":[{"type":"work","primary":true,"value":"%s"}],]] ..
  [["title":"Engineer","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Operations","employeeNumber":"%s"}}]]

function request()
  n = n + 1
  local id = thread_id .. "-" .. n
  local upn = "wrk." .. id .. "@contoso.example"
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/scim+json",
    ["Authorization"] = "Bearer scale",
  }, string.format(body, upn, id, id, id, upn, id))
end
