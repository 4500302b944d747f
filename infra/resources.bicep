// kqlwatch: everything the detector needs, in one resource group.
//
// azd deploys this through main.bicep (which creates the resource group). Without azd, deploy it
// directly into a resource group you created:
//   az deployment group create -g <rg> -f infra/resources.bicep -p sentinelWorkspaceResourceId=... ...
// (see docs/deploy.md).
//
// One user-assigned managed identity does everything: host storage, the deployment package, the
// state table, the Log Analytics query, Application Insights ingestion and the Key Vault reference.
// No account keys, connection strings with secrets or publishing passwords are created or stored.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------------
// Parameters: everything a user sets
// ---------------------------------------------------------------------------------------------

@description('azd environment name; only used for the azd-env-name tag. Leave empty outside azd.')
param environmentName string = ''

@description('Region for all resources. Defaults to the resource group region; Flex Consumption must be offered there (az functionapp list-flexconsumption-locations).')
param location string = resourceGroup().location

@description('Short prefix for resource names: lowercase letters, digits and hyphens.')
@minLength(2)
@maxLength(20)
param namePrefix string = 'kqlwatch'

@description('Resource id of the existing Sentinel (Log Analytics) workspace to query: /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.OperationalInsights/workspaces/<name>. It may be in another resource group or subscription of the same tenant.')
@minLength(1)
param sentinelWorkspaceResourceId string

@description('Grant the app Log Analytics Reader on the Sentinel workspace. Needs the right to create deployments and role assignments in the workspace\'s resource group (e.g. Owner); set false when the workspace owner grants the role by hand (docs/deploy.md).')
param assignWorkspaceReader bool = true

@description('Log Analytics query endpoint. Public cloud: https://api.loganalytics.io; Azure Government: https://api.loganalytics.us.')
param logsEndpoint string = 'https://api.loganalytics.io'

@description('Where rules without kqlwatch.source run: loganalytics (the workspace) or defender (Defender XDR advanced hunting on Microsoft Graph; the identity then needs the Graph app role ThreatHunting.Read.All, see docs/deploy.md).')
@allowed([
  'loganalytics'
  'defender'
])
param source string = 'loganalytics'

@description('Microsoft Graph endpoint for Defender XDR advanced hunting. Public cloud: https://graph.microsoft.com; US Government L4: https://graph.microsoft.us.')
param graphEndpoint string = 'https://graph.microsoft.com'

@description('Your accepted (own) mail domains, comma separated, e.g. contoso.com,contoso.co.uk. Becomes KQLWATCH_PARAM_SenderDomains.')
@minLength(1)
param acceptedDomains string

@description('DMARC/SPF results that raise an alert, comma separated (e.g. temperror,permerror). Becomes KQLWATCH_PARAM_TriggerResults.')
@minLength(1)
param triggerResults string = 'temperror'

@description('NCRONTAB schedule with six fields (second minute hour day month day-of-week), UTC.')
@minLength(11)
param schedule string = '0 */5 * * * *'

@description('Teams Workflows webhook URL ("When a Teams webhook request is received"). Stored only in Key Vault; several URLs may be given comma separated.')
@secure()
@minLength(1)
param teamsWebhookUrl string

@description('Optional separate Teams Workflows webhook for kqlwatch\'s own notices (rule failing or recovered, expired exclusions, dropped alerts). Empty: they go to the main webhook. Stored only in Key Vault.')
@secure()
param opsWebhookUrl string = ''

@description('Most cards one rule posts to one webhook in one run; the rest of a burst is summed up in one card.')
@minValue(2)
@maxValue(1000)
param maxCardsPerRun int = 20

@description('Name of the Table Storage table that holds the dedupe state (letters and digits, starting with a letter).')
@minLength(3)
@maxLength(63)
param stateTableName string = 'kqlwatch'

@description('Folder of rule files, relative to the deployed app root.')
param rulesDir string = 'rules'

@description('How far back a run catches up after an outage (5m, 1h, 24h, 14d or ISO-8601 such as PT24H).')
param maxCatchup string = '24h'

@description('How long an undelivered alert is retried before it is dropped (same format as maxCatchup).')
param deliveryMaxAge string = '24h'

@description('How late a row may reach the workspace and still alert: ingestion-time rules reach back this far on TimeGenerated (same format as maxCatchup).')
param maxLateness string = '2d'

@description('How often an ingestion-time rule sweeps the whole maxLateness span; between sweeps each run reads a short span (same format as maxCatchup).')
param lateSweep string = '1h'

@description('Memory per Flex Consumption instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound on Flex Consumption instances. A timer runs on one instance at a time; this only caps runaway scale.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Storage redundancy for the app\'s own storage account (host state, package, dedupe table).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@description('Days a deleted Key Vault (and its secret) stays recoverable. Purge protection is always on.')
@minValue(7)
@maxValue(90)
param keyVaultSoftDeleteRetentionDays int = 90

@description('Retention of the app\'s own telemetry workspace, in days.')
@minValue(30)
@maxValue(730)
param telemetryRetentionDays int = 30

@description('Also grant the deploying user Key Vault Secrets Officer (to rotate the webhook) and Storage Table Data Reader (to inspect dedupe state). Off by default.')
param grantDeployerAccess bool = false

@description('Object id of the deploying user or group; used only when grantDeployerAccess is true (azd fills it from AZURE_PRINCIPAL_ID).')
param deployerPrincipalId string = ''

@description('Kind of principal in deployerPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param deployerPrincipalType string = 'User'

@description('Extra tags for every resource.')
param tags object = {}

// ---------------------------------------------------------------------------------------------
// Names and constants
// ---------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, namePrefix))
var prefix = toLower(namePrefix)
var compactPrefix = replace(prefix, '-', '')
var allTags = union(tags, empty(environmentName) ? {} : { 'azd-env-name': environmentName })

var identityName = 'id-${prefix}-${resourceToken}'
var storageAccountName = 'st${take(compactPrefix, 9)}${resourceToken}'
var keyVaultName = 'kv${take(compactPrefix, 7)}${resourceToken}'
var telemetryWorkspaceName = 'log-${prefix}-${resourceToken}'
var appInsightsName = 'appi-${prefix}-${resourceToken}'
var planName = 'plan-${prefix}-${resourceToken}'
var functionAppName = 'func-${prefix}-${resourceToken}'
var deploymentContainerName = 'app-package'
var webhookSecretName = 'teams-webhook-url'
var pythonVersion = '3.11'

// /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.OperationalInsights/workspaces/<name>
var sentinelWorkspaceParts = split(sentinelWorkspaceResourceId, '/')

// Identity-based endpoints, built from the account name so they are known before deployment.
var blobServiceUri = 'https://${storageAccountName}.blob.${environment().suffixes.storage}'
var tableServiceUri = 'https://${storageAccountName}.table.${environment().suffixes.storage}'
var queueServiceUri = 'https://${storageAccountName}.queue.${environment().suffixes.storage}'

// Issue 14: the fan-out queue (function_app.py QUEUE) and its poison queue, which the host would create itself
// after a message's 5th failed delivery if it had the right to (it does not: Message Sender cannot create queues).
var runsQueueName = 'kqlwatch-runs'
var poisonQueueName = 'kqlwatch-runs-poison'

// Built-in role definition ids (platform-facts.md, Roles; queue roles: production-behaviour.md).
var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageTableDataContributorRoleId = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'
// Issue 14: the queue trigger reads (Reader) and completes / hides messages (Message Processor); the dispatch output
// and the host's move to the poison queue add messages (Message Sender). Not Queue Data Contributor: no queue
// management, no queue deletion.
var storageQueueDataReaderRoleId = '19e7f393-937e-4f77-808e-94535e297925'
var storageQueueDataMessageProcessorRoleId = '8a0f0c08-91a1-4084-bc3d-661d67233fed'
var storageQueueDataMessageSenderRoleId = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
// Only with grantDeployerAccess:
var keyVaultSecretsOfficerRoleId = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var storageTableDataReaderRoleId = '76199698-9eea-4c19-bc75-cec21354c6b6'

var grantDeployer = grantDeployerAccess && !empty(deployerPrincipalId)

// ---------------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: identityName
  location: location
  tags: allTags
}

// ---------------------------------------------------------------------------------------------
// Storage: host state, deployment package, dedupe table. Entra ID only.
// ---------------------------------------------------------------------------------------------

resource storage 'Microsoft.Storage/storageAccounts@2025-06-01' = {
  name: storageAccountName
  location: location
  tags: allTags
  kind: 'StorageV2'
  sku: {
    name: storageSku
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-06-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-06-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2025-06-01' = {
  parent: storage
  name: 'default'
}

resource stateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2025-06-01' = {
  parent: tableService
  name: stateTableName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2025-06-01' = {
  parent: storage
  name: 'default'
}

resource runsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-06-01' = {
  parent: queueService
  name: runsQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2025-06-01' = {
  parent: queueService
  name: poisonQueueName
}

// ---------------------------------------------------------------------------------------------
// The app's own telemetry: Application Insights on a workspace, Entra-only ingestion
// ---------------------------------------------------------------------------------------------

resource telemetryWorkspace 'Microsoft.OperationalInsights/workspaces@2025-02-01' = {
  name: telemetryWorkspaceName
  location: location
  tags: allTags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: telemetryRetentionDays
    features: {
      disableLocalAuth: true
      enableLogAccessUsingOnlyResourcePermissions: true
    }
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: allTags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: telemetryWorkspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

// ---------------------------------------------------------------------------------------------
// Key Vault: the Teams webhook URL is the only secret
// ---------------------------------------------------------------------------------------------

resource vault 'Microsoft.KeyVault/vaults@2025-05-01' = {
  name: keyVaultName
  location: location
  tags: allTags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: keyVaultSoftDeleteRetentionDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource webhookSecret 'Microsoft.KeyVault/vaults/secrets@2025-05-01' = {
  parent: vault
  name: webhookSecretName
  properties: {
    value: teamsWebhookUrl
    contentType: 'text/plain'
  }
}

// Always present (a placeholder when no ops webhook is given) so the app setting's reference always resolves.
resource opsWebhookSecret 'Microsoft.KeyVault/vaults/secrets@2025-05-01' = {
  parent: vault
  name: 'ops-webhook-url'
  properties: {
    value: empty(opsWebhookUrl) ? 'none' : opsWebhookUrl
    contentType: 'text/plain'
  }
}

// ---------------------------------------------------------------------------------------------
// Role assignments: least privilege, each named guid(scope, principal, role)
// ---------------------------------------------------------------------------------------------

// Host storage (timer lease, secrets), and the deployment package container.
resource appBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageBlobDataOwnerRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'kqlwatch: Functions host storage and deployment package'
  }
}

// Dedupe state.
resource appTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageTableDataContributorRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributorRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'kqlwatch: dedupe state table'
  }
}

// Issue 14: the run queues (trigger: Reader + Message Processor; output and poison moves: Message Sender).
resource appQueueDataReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageQueueDataReaderRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataReaderRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'kqlwatch: run queue trigger (read)'
  }
}

resource appQueueMessageProcessor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageQueueDataMessageProcessorRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageProcessorRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'kqlwatch: run queue trigger (process)'
  }
}

resource appQueueMessageSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, storageQueueDataMessageSenderRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataMessageSenderRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'kqlwatch: dispatch output and poison moves'
  }
}

// Entra ID telemetry ingestion (local auth is disabled on the component).
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, monitoringMetricsPublisherRoleId)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'kqlwatch: Application Insights ingestion'
  }
}

// Key Vault reference for KQLWATCH_TEAMS_WEBHOOK_URL.
resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, keyVaultSecretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'kqlwatch: read the Teams webhook URL'
  }
}

// The Sentinel workspace, wherever it lives (reading its GUID needs Reader on it).
resource sentinelWorkspace 'Microsoft.OperationalInsights/workspaces@2025-02-01' existing = {
  name: last(sentinelWorkspaceParts)
  scope: resourceGroup(sentinelWorkspaceParts[2], sentinelWorkspaceParts[4])
}

// Log Analytics Reader on the Sentinel workspace only, deployed in the workspace's resource group.
// assignWorkspaceReader false: the workspace owner grants it by hand (docs/deploy.md).
module sentinelAccess 'modules/workspace-reader.bicep' = if (assignWorkspaceReader) {
  name: 'kqlwatch-workspace-reader-${resourceToken}'
  scope: resourceGroup(sentinelWorkspaceParts[2], sentinelWorkspaceParts[4])
  params: {
    workspaceName: last(sentinelWorkspaceParts)
    principalId: identity.properties.principalId
  }
}

// Optional, for the person running the detector.
resource deployerSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantDeployer) {
  name: guid(vault.id, deployerPrincipalId, keyVaultSecretsOfficerRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficerRoleId)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'kqlwatch: rotate the Teams webhook URL'
  }
}

resource deployerTableDataReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantDeployer) {
  name: guid(storage.id, deployerPrincipalId, storageTableDataReaderRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataReaderRoleId)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'kqlwatch: inspect dedupe state'
  }
}

// ---------------------------------------------------------------------------------------------
// Function App on Flex Consumption
// ---------------------------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2025-03-01' = {
  name: planName
  location: location
  tags: allTags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2025-03-01' = {
  name: functionAppName
  location: location
  tags: union(allTags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        // Functions host storage through the identity (no AzureWebJobsStorage connection string).
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identity.properties.clientId
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: blobServiceUri
        }
        // Telemetry, Entra ID ingestion.
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identity.properties.clientId};Authorization=AAD'
        }
        // Issue 14: the run queues' connection (function_app.py CONNECTION), through the identity.
        {
          name: 'KQLWATCH_QUEUE_CONNECTION__queueServiceUri'
          value: queueServiceUri
        }
        {
          name: 'KQLWATCH_QUEUE_CONNECTION__credential'
          value: 'managedidentity'
        }
        {
          name: 'KQLWATCH_QUEUE_CONNECTION__clientId'
          value: identity.properties.clientId
        }
        // DefaultAzureCredential in the code picks the user-assigned identity.
        {
          name: 'AZURE_CLIENT_ID'
          value: identity.properties.clientId
        }
        // kqlwatch settings (shared/settings.py). KQLWATCH_ACCESS_TOKEN is local-only and never set here.
        {
          name: 'KQLWATCH_WORKSPACE_ID'
          value: sentinelWorkspace.properties.customerId
        }
        {
          name: 'KQLWATCH_WORKSPACE_RESOURCE_ID'
          value: sentinelWorkspaceResourceId
        }
        {
          name: 'KQLWATCH_LOGS_ENDPOINT'
          value: logsEndpoint
        }
        {
          name: 'KQLWATCH_SOURCE'
          value: source
        }
        {
          name: 'KQLWATCH_GRAPH_ENDPOINT'
          value: graphEndpoint
        }
        {
          name: 'KQLWATCH_STATE_CONNECTION'
          value: tableServiceUri
        }
        {
          name: 'KQLWATCH_STATE_TABLE'
          value: stateTable.name
        }
        {
          name: 'KQLWATCH_TEAMS_WEBHOOK_URL'
          value: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${webhookSecret.name}/)'
        }
        {
          name: 'KQLWATCH_OPS_WEBHOOK_URL'
          value: empty(opsWebhookUrl) ? '' : '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${opsWebhookSecret.name}/)'
        }
        {
          name: 'KQLWATCH_RULES_DIR'
          value: rulesDir
        }
        {
          name: 'KQLWATCH_SCHEDULE'
          value: schedule
        }
        {
          name: 'KQLWATCH_MAX_CATCHUP'
          value: maxCatchup
        }
        {
          name: 'KQLWATCH_DELIVERY_MAX_AGE'
          value: deliveryMaxAge
        }
        {
          name: 'KQLWATCH_MAX_LATENESS'
          value: maxLateness
        }
        {
          name: 'KQLWATCH_LATE_SWEEP'
          value: lateSweep
        }
        {
          name: 'KQLWATCH_MAX_CARDS_PER_RUN'
          value: string(maxCardsPerRun)
        }
        // Rules at once in one process (`kqlwatch run --once`); on Functions, host.json's batchSize bounds a worker.
        {
          name: 'KQLWATCH_CONCURRENCY'
          value: '5'
        }
        // Parameters of the seed rule (rules/*.yaml `let` bindings).
        {
          name: 'KQLWATCH_PARAM_SenderDomains'
          value: acceptedDomains
        }
        {
          name: 'KQLWATCH_PARAM_TriggerResults'
          value: triggerResults
        }
      ]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobServiceUri}/${deploymentContainer.name}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
  dependsOn: [
    // The host needs its roles before the first start.
    appBlobDataOwner
    appTableDataContributor
    appQueueDataReader
    appQueueMessageProcessor
    appQueueMessageSender
    runsQueue
    poisonQueue
    appMetricsPublisher
    appSecretsUser
    sentinelAccess
  ]
}

// No publishing passwords: deployments (azd, az, Core Tools) authenticate with Entra ID.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2025-03-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs: names and endpoints only, nothing secret
// ---------------------------------------------------------------------------------------------

output functionAppName string = site.name
output functionAppResourceId string = site.id
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
output identityResourceId string = identity.id
output stateTableEndpoint string = tableServiceUri
output stateTableName string = stateTable.name
output runQueueEndpoint string = queueServiceUri
output storageAccountName string = storage.name
output keyVaultName string = vault.name
output applicationInsightsName string = appInsights.name
output sentinelWorkspaceId string = sentinelWorkspace.properties.customerId
