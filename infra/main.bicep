// kqlwatch entry point for `azd up` (and `az deployment sub create`): creates the resource group and
// deploys resources.bicep into it. Parameters come from main.parameters.json, which azd fills from
// its environment (azd env set NAME VALUE); see docs/deploy.md.

targetScope = 'subscription'

@description('azd environment name; names the resource group (rg-<name>) and tags every resource.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Region for the resource group and all resources; Flex Consumption must be offered there (az functionapp list-flexconsumption-locations).')
@minLength(1)
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create or reuse. Defaults to rg-<environmentName>.')
param resourceGroupName string = ''

@description('Short prefix for resource names: lowercase letters, digits and hyphens.')
@minLength(2)
@maxLength(20)
param namePrefix string = 'kqlwatch'

@description('Resource id of the existing Sentinel (Log Analytics) workspace to query. It may be in another resource group or subscription of the same tenant.')
@minLength(1)
param sentinelWorkspaceResourceId string

@description('Grant the app Log Analytics Reader on the Sentinel workspace (needs the right to create deployments and role assignments in its resource group, e.g. Owner). Set false when the workspace owner grants it by hand.')
param assignWorkspaceReader bool = true

@description('Log Analytics query endpoint. Public cloud: https://api.loganalytics.io.')
param logsEndpoint string = 'https://api.loganalytics.io'

@description('Your accepted (own) mail domains, comma separated. Becomes KQLWATCH_PARAM_SenderDomains.')
@minLength(1)
param acceptedDomains string

@description('DMARC/SPF results that raise an alert, comma separated (e.g. temperror,permerror). Becomes KQLWATCH_PARAM_TriggerResults.')
@minLength(1)
param triggerResults string = 'temperror'

@description('NCRONTAB schedule with six fields (second minute hour day month day-of-week), UTC.')
@minLength(11)
param schedule string = '0 */5 * * * *'

@description('Teams Workflows webhook URL. Stored only in Key Vault.')
@secure()
@minLength(1)
param teamsWebhookUrl string

@description('Optional separate Teams Workflows webhook for kqlwatch\'s own notices. Empty: the main webhook. Stored only in Key Vault.')
@secure()
param opsWebhookUrl string = ''

@description('Also grant the deploying user Key Vault Secrets Officer and Storage Table Data Reader. Off by default.')
param grantDeployerAccess bool = false

@description('Object id of the deploying user (azd sets AZURE_PRINCIPAL_ID); used only when grantDeployerAccess is true.')
param principalId string = ''

@description('Kind of principal in principalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

var tags = {
  'azd-env-name': environmentName
  application: 'kqlwatch'
}

resource rg 'Microsoft.Resources/resourceGroups@2025-04-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: tags
}

module resources 'resources.bicep' = {
  name: 'kqlwatch-resources'
  scope: rg
  params: {
    environmentName: environmentName
    location: location
    namePrefix: namePrefix
    sentinelWorkspaceResourceId: sentinelWorkspaceResourceId
    assignWorkspaceReader: assignWorkspaceReader
    logsEndpoint: logsEndpoint
    acceptedDomains: acceptedDomains
    triggerResults: triggerResults
    schedule: schedule
    teamsWebhookUrl: teamsWebhookUrl
    opsWebhookUrl: opsWebhookUrl
    grantDeployerAccess: grantDeployerAccess
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    tags: {
      application: 'kqlwatch'
    }
  }
}

// azd stores these in the environment (.azure/<env>/.env); none of them is a secret.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = resources.outputs.functionAppName
output AZURE_FUNCTION_APP_IDENTITY_PRINCIPAL_ID string = resources.outputs.identityPrincipalId
output AZURE_FUNCTION_APP_IDENTITY_CLIENT_ID string = resources.outputs.identityClientId
output STATE_TABLE_ENDPOINT string = resources.outputs.stateTableEndpoint
output STATE_TABLE_NAME string = resources.outputs.stateTableName
output RUN_QUEUE_ENDPOINT string = resources.outputs.runQueueEndpoint
output AZURE_KEY_VAULT_NAME string = resources.outputs.keyVaultName
output AZURE_APPLICATION_INSIGHTS_NAME string = resources.outputs.applicationInsightsName
output SENTINEL_WORKSPACE_ID string = resources.outputs.sentinelWorkspaceId
