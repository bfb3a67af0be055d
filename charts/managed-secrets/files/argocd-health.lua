-- Argo CD health check for managedsecrets.io/ManagedSecret.
-- Healthy: Ready=True for the current generation. Progressing: the operator has not yet reported
-- on this generation. Degraded: Ready=False (with its reason), or Stale=True (the Secret keeps its
-- last value but AWS has not confirmed it for longer than the refresh interval).
local hs = {}
local generation = obj.metadata and obj.metadata.generation
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to sync"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to sync generation " .. tostring(generation)
  return hs
end
local ready, stale
for _, c in ipairs(status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Stale" then stale = c end
end
if ready == nil or (generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.status == "True" and (stale == nil or stale.status ~= "True") then
  hs.status = "Healthy"
  hs.message = ready.message or "Synced"
  return hs
end
local c = ready
if ready.status == "True" then c = stale end
hs.status = "Degraded"
hs.message = (c.reason or "NotReady") .. ": " .. (c.message or "")
return hs
