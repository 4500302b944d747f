#!/usr/bin/env bash
# Issue 15: grant kqlwatch's managed identity the Microsoft Graph application permission ThreatHunting.Read.All,
# which Defender XDR advanced hunting (POST /v1.0/security/runHuntingQuery) needs. It is an app-role assignment
# on Microsoft Graph's service principal, not an Azure role: Bicep cannot grant it here (see docs/deploy.md).
#
# Usage: scripts/grant-threathunting.sh <identityPrincipalId>     (azd: AZURE_FUNCTION_APP_IDENTITY_PRINCIPAL_ID)
# Needs: az login as a Privileged Role Administrator (or Global Administrator) of the tenant.
set -euo pipefail

principal="${1:?usage: $0 <identityPrincipalId>, the object id of the managed identity}"
graph_app_id="00000003-0000-0000-c000-000000000000"  # Microsoft Graph's appId, the same in every tenant
permission="ThreatHunting.Read.All"
# The Graph endpoint of the signed-in cloud (https://graph.microsoft.com in the public cloud).
graph="$(az cloud show --query endpoints.microsoftGraphResourceId -o tsv)"
graph="${graph%/}"

graph_sp="$(az ad sp show --id "$graph_app_id" --query id -o tsv)"
# Looked up by name rather than typed in: dd98c7f5-2d42-42d3-a0e4-633161547251 in the public cloud.
role_id="$(az ad sp show --id "$graph_app_id" \
  --query "appRoles[?value=='$permission' && contains(allowedMemberTypes, 'Application')].id | [0]" -o tsv)"
if [ -z "$role_id" ]; then
  echo "Microsoft Graph has no application role $permission in this cloud" >&2
  exit 1
fi
echo "granting $permission (app role $role_id of Microsoft Graph, service principal $graph_sp) to $principal"

existing="$(az rest --method GET \
  --uri "$graph/v1.0/servicePrincipals/$principal/appRoleAssignments" \
  --query "value[?appRoleId=='$role_id' && resourceId=='$graph_sp'].id | [0]" -o tsv)"
if [ -n "$existing" ]; then
  echo "already granted (assignment $existing)"
  exit 0
fi
az rest --method POST \
  --uri "$graph/v1.0/servicePrincipals/$principal/appRoleAssignments" \
  --headers "Content-Type=application/json" \
  --body "{\"principalId\": \"$principal\", \"resourceId\": \"$graph_sp\", \"appRoleId\": \"$role_id\"}" \
  --query "{id: id, appRoleId: appRoleId, resource: resourceDisplayName}" -o json
echo "granted; the identity's cached Graph token may lack it for a while (managed identity tokens are cached for hours): runs say ThreatHunting.Read.All missing until then"
