-- Argo CD health check for flowexport.io/FlowExport: install it in argocd-cm as
-- resource.customizations.health.flowexport.io_FlowExport (see README.md beside it).
-- It reads what the operator writes (docs/conditions.md, "Flux and Argo CD"):
-- Stalled=True: a terminal failure, Degraded; Ready=False reason Suspended: Suspended;
-- Ready=True: Healthy; Reconciling=True or Ready Unknown: Progressing; other Ready=False: Degraded.
local hs = {}
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    conditions[condition.type] = condition
  end
end
local ready = conditions["Ready"]
local stalled = conditions["Stalled"]
local reconciling = conditions["Reconciling"]

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.message
  return hs
end
if ready ~= nil and ready.status == "False" and ready.reason == "Suspended" then
  hs.status = "Suspended"
  hs.message = ready.message
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = reconciling.message
  return hs
end
if ready == nil or ready.status ~= "False" then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  if ready ~= nil then
    hs.message = ready.message
  end
  return hs
end
hs.status = "Degraded"
hs.message = ready.message
return hs
