-- Argo CD health of a kubetune resource (PreferenceDataset, FineTuneJob, EvalRun), read from the
-- status the operator writes: its phase, its conditions and observedGeneration. The same script
-- serves the three kinds (`kubetune crds` writes argocd-cm-patch.yaml from it; docs/operator.md).
--   Healthy      Succeeded (an EvalRun whose gates failed too: it finished; the message says so)
--   Degraded     Failed, or Stalled: waiting for an input that failed
--   Suspended    spec.suspend, or queued in Kueue
--   Progressing  Pending, Waiting, Running, not yet reconciled, or a spec change not yet observed
local health = {}
local status = obj.status
if status == nil or status.phase == nil then
  health.status = "Progressing"
  health.message = "Waiting for the kubetune operator to reconcile it"
  return health
end

local conditions = {}
if status.conditions ~= nil then
  for _, condition in ipairs(status.conditions) do
    conditions[condition.type] = condition
  end
end
local function holds(type)
  return conditions[type] ~= nil and conditions[type].status == "True"
end
local message = status.message or status.phase

if status.phase == "Succeeded" then
  health.status = "Healthy"
  local gates = conditions["GatesPassed"]
  if gates ~= nil and gates.status == "False" then
    health.message = "Finished; gates " .. (status.gatesPassed or "") .. " passed, so nothing was promoted: " ..
      (gates.message or "")
  elseif holds("Promoted") then
    health.message = message .. "; " .. (conditions["Promoted"].message or "promoted")
  else
    health.message = message
  end
  return health
end

if status.phase == "Failed" then
  health.status = "Degraded"
  local failed = conditions["Failed"]
  if failed ~= nil and failed.reason ~= nil then
    health.message = failed.reason .. ": " .. message
  else
    health.message = message
  end
  return health
end

-- Still at work: a status older than the spec says nothing yet about the spec.
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  health.status = "Progressing"
  health.message = "The operator has not yet reconciled generation " .. generation
  return health
end

if holds("Stalled") then
  health.status = "Degraded"
  health.message = message
  return health
end

if status.phase == "Suspended" then
  health.status = "Suspended"
  health.message = message
  return health
end

if status.phase == "Pending" or status.phase == "Waiting" or status.phase == "Running" then
  health.status = "Progressing"
  health.message = message
  return health
end

health.status = "Unknown"
health.message = "Unknown phase " .. status.phase
return health
