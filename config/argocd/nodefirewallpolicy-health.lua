-- Argo CD health check for firewall.nodefw.io/NodeFirewallPolicy.
--
-- Follows kstatus, the conditions the controller writes:
--   no status or no conditions                  -> Progressing
--   status.observedGeneration < generation      -> Progressing
--   Reconciling=True                            -> Progressing
--   Stalled=True                                -> Degraded
--   Ready=True                                  -> Healthy
--   Ready=False, reason Failed/Reverted/Halted  -> Degraded
--   Ready=False otherwise, Unknown, or no Ready -> Progressing
-- Uses only the base and table libraries, which Argo CD always opens.

local degradedReasons = { Failed = true, Reverted = true, Halted = true }

local function findCondition(conditions, conditionType)
  for _, c in ipairs(conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

hs = {}

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to report the policy's status"
  return hs
end

local generation = obj.metadata.generation
local observed = status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. generation .. " (observed " .. observed .. ")"
  return hs
end

local reconciling = findCondition(status.conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

local stalled = findCondition(status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local ready = findCondition(status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

local nodes = ""
if status.matchedNodes ~= nil then
  nodes = "Applied on " .. (status.appliedNodes or 0) .. " of " .. status.matchedNodes .. " nodes"
  if status.failedNodes ~= nil and status.failedNodes > 0 then
    nodes = nodes .. ", failed on " .. status.failedNodes
  end
end

if ready.status == "True" then
  hs.status = "Healthy"
  if nodes ~= "" then
    hs.message = nodes
  else
    hs.message = describe(ready, "Ready")
  end
  return hs
end

if ready.status == "False" and ready.reason ~= nil and degradedReasons[ready.reason] then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = describe(ready, "Not ready")
return hs
