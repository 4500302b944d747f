// Grants the app's identity read access to the existing Sentinel (Log Analytics) workspace - and
// nothing else. Deployed by resources.bicep with `scope: resourceGroup(<sub>, <rg>)` taken from the
// workspace's resource id, so the workspace may live in another resource group or subscription
// of the same tenant. The deploying user needs, on that resource group, the right to create
// deployments and role assignments (e.g. Owner). Without it, deploy with assignWorkspaceReader
// false and have the workspace owner grant the role by hand (docs/deploy.md).

@description('Name of the existing Log Analytics workspace that holds the Sentinel data.')
param workspaceName string

@description('Object (principal) id of the managed identity that queries the workspace.')
param principalId string

// Log Analytics Reader: read and query, nothing else (platform-facts.md, Roles).
var logAnalyticsReaderRoleId = '73c42c96-874c-492b-b04d-ab87d138a893'

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-02-01' existing = {
  name: workspaceName
}

resource workspaceReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, logAnalyticsReaderRoleId)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsReaderRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'kqlwatch: run the detection queries'
  }
}
